"""MEA recordings: Axion AxIS spike lists, Axion plate logs, retinal-wave HDF5 spike times, and MEA features.

Readers
-------
- :func:`open_spike_list` — Axion BioSystems AxIS *spike list* export (CSV, plain or ``.gz``). One row per
  detected spike in the columns ``Time (s)``, ``Electrode`` (``<well>_<col><row>``, e.g. ``D3_31``) and
  ``Amplitude(mV)``; the AxIS settings block sits *beside* the spikes in columns 1–2 of the first ~45 rows
  (``Sampling Frequency,12500 Hz``; sub-settings indented with spaces). Streamed with ``pyarrow.csv.open_csv``,
  so a spike list of any length is read in constant memory. Layout as in meaRtools'
  ``exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz`` (igm-team/meaRtools) and its reader
  ``.spk_list_2_list`` (``meaRtools/R/spikelist_functions.R``). Axion ``.raw``/``.spk`` binaries are not read:
  :class:`~neurolake.errors.Unsupported` ("export a spike list from AxIS").
- :func:`read_plate_log` — the meaRtools experiment log (``*_expLog.csv``: Project, Experiment Date, Plate SN,
  DIV, Well, Treatment, Size, Dose, Units), CR-only / CRLF / LF line endings, padded header names, gz.
- :func:`read_spike_times_h5` — HDF5 spike-time files of the retinal-wave repository (sje30/waverepo; Eglen et
  al. 2014, GigaScience 3:3): ``spikes`` + ``sCount``, ``epos`` (2, N) µm, ``names``, ``array``, ``meta/*``,
  ``summary/*``.

Features (one well at a time, for the ETL; see EPHYS.md for the table columns)
--------------------------------------------------------------------------
:func:`features_for_well` → (electrode rows, well row, network-burst rows); :func:`features` loops over wells.
Active electrode: firing rate ≥ ``active_min_spikes_per_min`` (default 5 spikes/min, the criterion quoted by
meaRtools' GUI, ``Java_IGMDash-master/src/IGM_MEA_main.java``: "active electrodes (electrodes recording
activity about 5 spikes/minute)"; note that the R package's own default, ``elec_min_rate`` in
``meaRtools/data/parameters.r`` and ``spikes.R``, is 1/60 Hz = 1 spike/min — set
``FeatureParams(active_min_spikes_per_min=1)`` to match it). Bursts: max-interval method
(:mod:`neurolake.ephys.bursts`). Network bursts: co-bursting active electrodes (:func:`bursts.network_bursts`).

Units: time in s, amplitude in mV, positions in µm, rates in Hz (``_hz``) or per minute (``_per_min``).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from neurolake.errors import CorruptData, InvalidArgument, NotFound, Unsupported

from .bursts import MaxIntervalParams, NetworkBurstParams, max_interval_bursts, network_bursts

ELECTRODE_RE = r"^[A-H]\d+_\d\d$"
_WELL_RE = re.compile(r"^([A-H])(\d+)$")
SPIKE_SCHEMA = pa.schema([("well", pa.string()), ("electrode", pa.string()), ("time_s", pa.float64()),
                          ("amplitude_mv", pa.float64())])
PLATE_LOG_SCHEMA = pa.schema([("plate", pa.string()), ("well", pa.string()), ("treatment", pa.string()),
                              ("dose", pa.float64()), ("dose_unit", pa.string()), ("div", pa.int64()),
                              ("project", pa.string()), ("experiment_date", pa.string()), ("size", pa.string())])
# Axion CytoView MEA 48 (Maestro 48-well): 4 x 4 electrodes per well at 350 um centre-to-centre.
AXION_PITCH_UM = {"48": 350.0}
_SETTINGS_SCAN_ROWS = 2000       # settings are read from the first rows (they end after ~45 rows in AxIS 2.x)
_MAX_EXTRA_ROWS = 10_000         # non-spike rows kept for inspection (footers such as "Well Information")
_MIN_COVERAGE = 0.5              # spikes ending before this fraction of the settings' section => truncated list


def _open_text(path: Path):
    """Text stream with untranslated newlines (csv handles CR, LF, CRLF); gzip when the name ends in .gz."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _match_header(cells: list[str]) -> tuple[int, int, int | None, float] | None:
    """(time col, electrode col, amplitude col or None, amplitude scale to mV) if ``cells`` is a spike header."""
    time_i = elec_i = amp_i = None
    scale = 1.0
    for i, c in enumerate(cells):
        h = re.sub(r"\s+", "", c).lower()
        if time_i is None and h in ("time(s)", "time(sec)", "time_s", "time[s]"):
            time_i = i
        elif elec_i is None and h in ("electrode", "channel"):
            elec_i = i
        elif amp_i is None and (m := re.fullmatch(r"amplitude[(\[](mv|v|uv|µv)[)\]]", h)):
            amp_i = i
            scale = {"mv": 1.0, "v": 1000.0, "uv": 1e-3, "µv": 1e-3}[m.group(1)]
    if time_i is None or elec_i is None:
        return None
    return time_i, elec_i, amp_i, scale


def parse_axis_duration(text: str) -> float | None:
    """Seconds of an AxIS duration such as ``18m2s``, ``1h2m3.5s``, ``0s``, ``300 s``; None if not one."""
    t = text.strip().replace(" ", "")
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?", t)
    if not t or not m or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def _parse_axis_time(text: str) -> dt.datetime | None:
    from neurolake.base.time import parse_wall_clock

    return parse_wall_clock(text, ("%m/%d/%y %H:%M", "%m/%d/%Y %H:%M", "%m/%d/%y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
                                   "%m/%d/%Y %I:%M:%S %p", "%m/%d/%y %I:%M:%S %p", "%m/%d/%Y %I:%M %p",
                                   "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"))


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    m = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", text)
    return float(m.group(1)) if m else None


def plate_from_name(path: str | Path) -> tuple[str, int | None]:
    """(plate, DIV) from an AxIS/meaRtools file name ``<project>_<date>_<plate>_DIV<n>_spike_list.csv[.gz]``.

    With that 4-part pattern the plate is the third part (``plate1``) and DIV the number; otherwise the plate
    is the name without ``_spike_list``/extensions and DIV is taken from a ``DIV<n>`` token if any.
    """
    name = Path(path).name
    for suf in (".gz", ".csv", ".txt"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    stem = re.sub(r"_spike_list$", "", name, flags=re.I)
    parts = stem.split("_")
    div = None
    for p in parts:
        if m := re.fullmatch(r"DIV(\d+)", p, re.I):
            div = int(m.group(1))
    if len(parts) == 4 and re.fullmatch(r"DIV\d+", parts[3], re.I):
        return parts[2], div
    return stem, div


class SpikeList:
    """An opened Axion AxIS spike-list CSV; spikes are streamed by :meth:`batches`.

    Attributes: ``path``; ``settings`` (dict: stripped setting name → value as text, from columns 1–2 of the
    first rows; a name repeated in another section is stored as ``"<section>/<name>"``); ``sections``
    (section → {name: value}, sections being the un-indented rows with an empty value such as
    ``Spike Detector Settings``); ``plate`` and ``plate_source`` (``"settings:<key>"`` or ``"file_name"``);
    ``div`` (from the file name, or None); ``recorded_at`` (naive local time of the acquisition computer from
    ``Original File Time`` / ``Experiment Start Time``, None if absent); ``columns`` (the header);
    ``amplitude_unit`` (as exported; values are converted to mV). After a full pass of :meth:`batches`:
    ``n_spikes``, ``last_spike_s``, ``n_rows_skipped`` (rows whose electrode is not ``^[A-H]\\d+_\\d\\d$``) and
    ``extra_rows`` (those non-spike rows that carry text, e.g. a trailing ``Well Information`` block, as lists
    of cells; at most 10,000).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise NotFound(f"spike list {str(self.path)!r} does not exist", path=str(self.path))
        low = self.path.name.lower()
        if low.endswith((".raw", ".spk", ".raw.gz", ".spk.gz")):
            raise Unsupported(
                f"Axion binary file {self.path.name!r} is not supported: export a spike list (CSV) from AxIS "
                "(File > Export > Spike List) and ingest that", path=str(self.path), format="axion_raw",
                allowed="AxIS spike list CSV (.csv, .csv.gz)")
        self.settings: dict[str, str] = {}
        self.sections: dict[str, dict[str, str]] = {}
        self.extra_rows: list[list[str]] = []
        self.n_spikes: int | None = None
        self.last_spike_s: float | None = None
        self.n_rows_skipped: int | None = None
        self._scan_head()
        self.plate, self.plate_source, self.div = self._plate()
        self.recorded_at = None
        for key in ("Original File Time", "Experiment Start Time"):
            if key in self.settings and (t := _parse_axis_time(self.settings[key])):
                self.recorded_at = t
                break

    # -- header and settings ------------------------------------------------------------------------------
    def _scan_head(self) -> None:
        try:
            with _open_text(self.path) as fh:
                reader = csv.reader(fh)
                header = None
                for row in reader:
                    if header is None:
                        if not any(c.strip() for c in row):
                            continue
                        found = _match_header(row)
                        if found is None:
                            raise CorruptData(
                                f"{self.path.name}: first line is not an AxIS spike-list header (needs 'Time (s)' "
                                f"and 'Electrode' columns), got {row[:6]!r}", path=str(self.path),
                                field="header", value=row[:6])
                        header = row
                        self.columns = row
                        self.time_col, self.electrode_col, self.amplitude_col, self.amplitude_scale = found
                        self.skip_rows = reader.line_num
                        if self.time_col >= 2:
                            self._add_setting(row[0], row[1])
                        continue
                    if reader.line_num > self.skip_rows + _SETTINGS_SCAN_ROWS:
                        break
                    if self.time_col >= 2 and len(row) >= 2:
                        self._add_setting(row[0], row[1])
                if header is None:
                    raise CorruptData(f"{self.path.name}: empty file, no spike-list header", path=str(self.path))
        except (OSError, EOFError, UnicodeError, csv.Error) as e:
            raise CorruptData(f"{self.path.name}: cannot read spike list: {e}", path=str(self.path)) from e
        amp = self.columns[self.amplitude_col] if self.amplitude_col is not None else None
        self.amplitude_unit = re.sub(r".*[(\[](.*)[)\]].*", r"\1", amp).strip() if amp else None

    _section: str = ""

    def _add_setting(self, raw_key: str, value: str) -> None:
        if not raw_key.strip():
            return
        key, value = raw_key.strip(), value.strip()
        indented = raw_key[:1].isspace()
        if not indented and not value:
            self._section = key
            self.sections.setdefault(key, {})
            if key not in self.settings:
                self.settings[key] = ""
            return
        section = self._section if indented else ""
        if not indented:
            self._section = ""
        self.sections.setdefault(section, {})[key] = value
        name = key if key not in self.settings else f"{section or 'top'}/{key}"
        self.settings[name] = value

    @property
    def pitch_um(self) -> float | None:
        """Electrode pitch (µm) for this file's ``Plate Type`` (:func:`pitch_for_plate_type`), None if unknown."""
        return pitch_for_plate_type(self.settings.get("Plate Type"))

    def _plate(self) -> tuple[str, str, int | None]:
        name_plate, div = plate_from_name(self.path)
        for key in ("Plate Serial Number", "Plate SN", "Plate Barcode", "Barcode", "Plate ID", "Plate Id"):
            if self.settings.get(key):
                return self.settings[key], f"settings:{key}", div
        return name_plate, "file_name", div

    # -- derived settings ---------------------------------------------------------------------------------
    @property
    def sampling_rate_hz(self) -> float | None:
        """``Sampling Frequency`` in Hz (``12500 Hz`` → 12500.0; kHz converted), None if absent."""
        v = self.settings.get("Sampling Frequency")
        x = _number(v)
        if x is None:
            return None
        return x * 1000 if re.search(r"khz", v, re.I) else x

    @property
    def settings_duration_s(self) -> float | None:
        """Duration of the analysed section from ``Actual File Section Run`` (else ``Requested File Section``),
        e.g. ``0s to 18m2s`` → 1082.0; None if absent or unparsable."""
        for key in ("Actual File Section Run", "Requested File Section"):
            v = self.settings.get(key)
            if v and (m := re.fullmatch(r"\s*(.+?)\s+to\s+(.+?)\s*", v)):
                a, b = parse_axis_duration(m.group(1)), parse_axis_duration(m.group(2))
                if a is not None and b is not None and b > a:
                    return b - a
        return None

    @property
    def duration_s(self) -> float:
        """Recording duration in s, with :attr:`duration_source` saying where it came from.

        The settings' section length (:attr:`settings_duration_s`) when the spikes cover it (the last spike
        lies within the section and after half of it); otherwise the last spike time (``last_spike``: no
        section in the settings; ``last_spike_truncated``: the spikes end before half of the section, i.e. the
        list was cut; ``last_spike_beyond_section``: spikes after the section's end). Needs the last spike time:
        if :meth:`batches` has not run to the end, the time column is scanned once (streamed).
        """
        return self._duration()[0]

    @property
    def duration_source(self) -> str:
        """``settings``, ``last_spike``, ``last_spike_truncated`` or ``last_spike_beyond_section``."""
        return self._duration()[1]

    def _duration(self) -> tuple[float, str]:
        if self.last_spike_s is None:
            for _ in self.batches(rows=4_000_000, columns=("time_s",)):
                pass
        last = float(self.last_spike_s or 0.0)
        sd = self.settings_duration_s
        if sd is None:
            return last, "last_spike"
        if not self.n_spikes:
            return sd, "settings"
        if last > sd * (1 + 1e-9):
            return last, "last_spike_beyond_section"
        if last < _MIN_COVERAGE * sd:
            return last, "last_spike_truncated"
        return sd, "settings"

    # -- spikes -------------------------------------------------------------------------------------------
    def batches(self, rows: int = 1_000_000, columns: tuple[str, ...] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the spikes as record batches of ``rows`` rows (the last one shorter).

        Columns (schema :data:`SPIKE_SCHEMA`): ``well`` (str, ``D3``), ``electrode`` (str, ``D3_31``),
        ``time_s`` (float64, s from the file start as exported), ``amplitude_mv`` (float64; null when the export
        has no amplitude column). ``columns`` selects a subset. Rows whose electrode does not match
        ``^[A-H]\\d+_\\d\\d$`` (settings-only rows, blank spike cells, footers) and rows with another number of
        fields than the header are skipped. Raises CorruptData when a spike row's time or amplitude is not a
        number, or the file cannot be decompressed/parsed. Memory: one CSV block plus one output batch.
        """
        if not isinstance(rows, int) or rows < 1:
            raise InvalidArgument(f"rows={rows!r} must be a positive integer", field="rows", value=repr(rows))
        want = list(columns) if columns else list(SPIKE_SCHEMA.names)
        bad = [c for c in want if c not in SPIKE_SCHEMA.names]
        if bad:
            raise InvalidArgument(f"unknown spike column(s) {bad}", field="columns", value=bad,
                                  allowed=SPIKE_SCHEMA.names)
        names = [f"c{i}" for i in range(len(self.columns))]
        tc, ec, ac = names[self.time_col], names[self.electrode_col], (
            names[self.amplitude_col] if self.amplitude_col is not None else None)
        keycol = names[0] if self.time_col >= 1 else None
        include = [c for c in (keycol, tc, ec, ac) if c is not None]
        extra_rows: list[list[str]] = []

        def invalid(row) -> str:
            if len(extra_rows) < _MAX_EXTRA_ROWS and row.text.strip(", \r\n"):
                extra_rows.extend(csv.reader([row.text]))
            return "skip"

        schema = pa.schema([SPIKE_SCHEMA.field(c) for c in want])
        try:
            reader = pacsv.open_csv(
                str(self.path),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=self.skip_rows,
                                               block_size=4 << 20),
                parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
                convert_options=pacsv.ConvertOptions(
                    include_columns=include, column_types={c: pa.string() for c in include},
                    strings_can_be_null=True, null_values=[""]))
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptData(f"{self.path.name}: cannot parse spike list: {e}", path=str(self.path)) from e
        n_spikes = skipped = 0
        last = -math.inf
        buf: list[pa.RecordBatch] = []
        nbuf = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError, EOFError) as e:
                raise CorruptData(f"{self.path.name}: cannot parse spike list after {n_spikes} spikes: {e}",
                                  path=str(self.path)) from e
            elec = batch.column(ec)
            mask = pc.fill_null(pc.match_substring_regex(elec, ELECTRODE_RE), False)
            nkeep = pc.sum(mask).as_py() or 0
            if nkeep < batch.num_rows:
                skipped += batch.num_rows - nkeep
                if len(extra_rows) < _MAX_EXTRA_ROWS:
                    rest = batch.filter(pc.invert(mask))
                    for r in rest.to_pylist()[: _MAX_EXTRA_ROWS - len(extra_rows)]:
                        cells = [r[c] or "" for c in include]
                        if any(cells):
                            extra_rows.append(cells)
            if nkeep == 0:
                continue
            kept = batch.filter(mask) if nkeep < batch.num_rows else batch
            e = kept.column(ec)
            try:
                t = pc.cast(kept.column(tc), pa.float64())
                if t.null_count:
                    raise pa.ArrowInvalid("empty time for a spike row")
                if ac is not None and "amplitude_mv" in want:
                    a = pc.cast(kept.column(ac), pa.float64())
                    if self.amplitude_scale != 1.0:
                        a = pc.multiply(a, self.amplitude_scale)
                else:
                    a = pa.nulls(kept.num_rows, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise CorruptData(f"{self.path.name}: a spike row has a non-numeric time or amplitude "
                                  f"near spike {n_spikes}: {err}", path=str(self.path), field="Time (s)") from err
            n_spikes += kept.num_rows
            mx = pc.max(t).as_py()
            if mx is not None and mx > last:
                last = mx
            cols = {"time_s": t, "amplitude_mv": a, "electrode": e}
            if "well" in want:
                cols["well"] = pc.utf8_slice_codeunits(e, 0, -3)   # electrode matched ^[A-H]\d+_\d\d$
            out = pa.RecordBatch.from_arrays([cols[c] for c in want], schema=schema)
            buf.append(out)
            nbuf += out.num_rows
            while nbuf >= rows:
                tbl = pa.Table.from_batches(buf, schema=schema).combine_chunks()
                yield tbl.slice(0, rows).to_batches()[0] if rows < tbl.num_rows else tbl.to_batches()[0]
                rest_t = tbl.slice(rows)
                buf = rest_t.to_batches() if rest_t.num_rows else []
                nbuf = rest_t.num_rows
        if nbuf:
            tbl = pa.Table.from_batches(buf, schema=schema).combine_chunks()
            yield from tbl.to_batches()
        self.n_spikes = n_spikes
        self.n_rows_skipped = skipped
        self.last_spike_s = last if n_spikes else 0.0
        self.extra_rows = extra_rows

    def read(self) -> pa.Table:
        """All spikes as one table (:data:`SPIKE_SCHEMA`). For small files; stream with :meth:`batches`."""
        return pa.Table.from_batches(list(self.batches()), schema=SPIKE_SCHEMA)


def open_spike_list(path: str | Path) -> SpikeList:
    """Open an Axion AxIS spike-list CSV (``.csv`` or ``.csv.gz``): reads the header and settings now,
    streams spikes later (:meth:`SpikeList.batches`).

    Raises NotFound (no such file), Unsupported (Axion ``.raw``/``.spk``), CorruptData (no spike-list header,
    unreadable or non-gzip data).
    """
    return SpikeList(path)


# -- plate log ------------------------------------------------------------------------------------------------
_LOG_COLUMNS = {"platesn": "plate", "plate": "plate", "plateserialnumber": "plate", "well": "well",
                "treatment": "treatment", "dose": "dose", "units": "dose_unit", "unit": "dose_unit",
                "doseunits": "dose_unit", "div": "div", "project": "project", "experimentdate": "experiment_date",
                "size": "size"}


def read_plate_log(path: str | Path) -> pa.Table:
    """The plate log (meaRtools ``expLog``) as a table with :data:`PLATE_LOG_SCHEMA`: plate, well, treatment,
    dose (float), dose_unit, div (int), project, experiment_date (text as recorded, e.g. ``1012016``), size.

    Accepts CR-only (classic Mac), CRLF and LF line endings, header names with padding (``Dose ``), gzip.
    Empty cells are null. Raises NotFound, CorruptData (no ``Well`` column, a well name not like ``A1``, a
    non-numeric dose or DIV).
    """
    p = Path(path)
    if not p.exists():
        raise NotFound(f"plate log {str(p)!r} does not exist", path=str(p))
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix.lower() == ".gz" else p.read_bytes()
    except (OSError, EOFError) as e:
        raise CorruptData(f"{p.name}: cannot read plate log: {e}", path=str(p)) from e
    text = raw.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise CorruptData(f"{p.name}: empty plate log", path=str(p))
    header = [re.sub(r"\s+", "", h).lower() for h in rows[0]]
    idx = {}
    for i, h in enumerate(header):
        if h in _LOG_COLUMNS and _LOG_COLUMNS[h] not in idx:
            idx[_LOG_COLUMNS[h]] = i
    if "well" not in idx:
        raise CorruptData(f"{p.name}: plate log has no 'Well' column (header {rows[0]!r})", path=str(p),
                          field="Well", allowed=list(_LOG_COLUMNS))
    out: dict[str, list] = {n: [] for n in PLATE_LOG_SCHEMA.names}
    for ln, r in enumerate(rows[1:], start=2):
        def cell(name: str, r: list[str] = r) -> str | None:
            i = idx.get(name)
            v = r[i].strip() if i is not None and i < len(r) else ""
            return v or None
        well = cell("well")
        if well is None:
            continue
        if not _WELL_RE.match(well):
            raise CorruptData(f"{p.name} row {ln}: well {well!r} is not a well name like 'A1'", path=str(p),
                              field="Well", value=well)
        for name in ("dose", "div"):
            v = cell(name)
            if v is not None and _number(v) is None:
                raise CorruptData(f"{p.name} row {ln}: {name} {v!r} is not a number", path=str(p), field=name,
                                  value=v)
        dose, div = cell("dose"), cell("div")
        out["plate"].append(cell("plate"))
        out["well"].append(well)
        out["treatment"].append(cell("treatment"))
        out["dose"].append(_number(dose) if dose else None)
        out["dose_unit"].append(cell("dose_unit"))
        out["div"].append(int(_number(div)) if div else None)
        out["project"].append(cell("project"))
        out["experiment_date"].append(cell("experiment_date"))
        out["size"].append(cell("size"))
    return pa.table(out, schema=PLATE_LOG_SCHEMA)


# -- retinal-wave HDF5 ----------------------------------------------------------------------------------------
@dataclass
class SpikeTimes:
    """Spike times of one MEA recording from an HDF5 file of the retinal-wave repository layout.

    One recording is one well: ``plate`` = the file stem, ``well`` = ``"A1"`` (a single-well array; the array
    type is in ``array``). ``spikes``: table (well, electrode, time_s, amplitude_mv = null), electrode = the
    spike train's channel name (``ch_13a``; ``ch<j>`` when the file has no names), times in s, sorted per
    electrode. ``electrodes``: table (electrode, x_um, y_um, n_spikes) in file order, positions from ``epos``
    in µm. ``meta``: age_days (postnatal day), age ("P11"), condition (``ctl``/``dr`` …), genotype, species,
    study (``meta/key``). ``duration_s`` from ``summary/duration`` (``duration_source = "summary/duration"``,
    the repository rounds it up to whole seconds), else the last spike (``"last_spike"``).
    """

    path: Path
    plate: str
    well: str
    array: str | None
    spikes: pa.Table
    electrodes: pa.Table
    meta: dict[str, Any]
    duration_s: float
    duration_source: str
    total_spikes: int | None = None
    flags: list[str] = field(default_factory=list)


def _h5_text(v) -> str | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.size == 0:
        return None
    x = a.reshape(-1)[0]
    return x.decode("utf-8", "replace").strip() if isinstance(x, bytes) else str(x).strip()


def read_spike_times_h5(path: str | Path) -> SpikeTimes:
    """Read a retinal-wave repository HDF5 file (layout: Eglen et al. 2014, sje30/waverepo; see SOURCE.md).

    ``spikes`` (S,) s concatenated per train, ``sCount`` (N,) spikes per train, ``epos`` (2, N) µm as h5py
    reads it ((N, 2) also accepted), ``names`` (N,) optional, ``array``, ``meta/age|cond|genotype|species|key``,
    ``summary/duration|totalspikes``. Raises NotFound, CorruptData (not HDF5, missing ``spikes``/``sCount``,
    ``sum(sCount) != len(spikes)``, ``epos``/``names`` not of length N).
    """
    import h5py

    p = Path(path)
    if not p.exists():
        raise NotFound(f"HDF5 file {str(p)!r} does not exist", path=str(p))
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise CorruptData(f"{p.name}: not a readable HDF5 file: {e}", path=str(p)) from e
    with f:
        for key in ("spikes", "sCount"):
            if key not in f:
                raise CorruptData(f"{p.name}: no '{key}' dataset (retinal-wave layout needs spikes and sCount)",
                                  path=str(p), field=key)
        spikes = np.asarray(f["spikes"][()], dtype=np.float64).reshape(-1)
        count = np.asarray(f["sCount"][()], dtype=np.int64).reshape(-1)
        n = count.size
        if count.sum() != spikes.size or (count < 0).any():
            raise CorruptData(f"{p.name}: sum(sCount)={int(count.sum())} != len(spikes)={spikes.size}",
                              path=str(p), field="sCount")
        names = ([_h5_text([x]) for x in np.asarray(f["names"][()]).reshape(-1)] if "names" in f
                 else [f"ch{j}" for j in range(n)])
        if len(names) != n:
            raise CorruptData(f"{p.name}: {len(names)} names for {n} spike trains", path=str(p), field="names")
        x = y = np.full(n, np.nan)
        if "epos" in f:
            ep = np.asarray(f["epos"][()], dtype=np.float64)
            if ep.shape == (2, n):
                x, y = ep[0], ep[1]
            elif ep.shape == (n, 2):
                x, y = ep[:, 0], ep[:, 1]
            else:
                raise CorruptData(f"{p.name}: epos has shape {ep.shape}, expected (2, {n})", path=str(p),
                                  field="epos")
        array = _h5_text(f["array"][()]) if "array" in f else None
        meta: dict[str, Any] = {}
        for key in ("age", "cond", "genotype", "species", "key"):
            if f"meta/{key}" in f:
                meta[key] = f[f"meta/{key}"][()]
        age = None
        if "age" in meta:
            a = np.asarray(meta["age"]).reshape(-1)
            age = int(a[0]) if a.size else None
        md = {"age_days": age, "age": f"P{age}" if age is not None else None,
              "condition": _h5_text(meta.get("cond")), "genotype": _h5_text(meta.get("genotype")),
              "species": _h5_text(meta.get("species")), "study": _h5_text(meta.get("key")), "array": array}
        duration = source = None
        if "summary/duration" in f:
            d = np.asarray(f["summary/duration"][()]).reshape(-1)
            if d.size and np.isfinite(d[0]) and d[0] > 0:
                duration, source = float(d[0]), "summary/duration"
        total = int(np.asarray(f["summary/totalspikes"][()]).reshape(-1)[0]) if "summary/totalspikes" in f else None
    flags = []
    if total is not None and total != spikes.size:
        flags.append(f"summary_totalspikes_mismatch:{total}!={spikes.size}")
    electrode = np.repeat(np.asarray(names, dtype=object), count)
    # sort per train (stable by electrode order, then time) without reordering the trains
    train = np.repeat(np.arange(n), count)
    order = np.lexsort((spikes, train))
    spikes, electrode = spikes[order], electrode[order]
    if duration is None:
        duration, source = (float(spikes.max()) if spikes.size else 0.0), "last_spike"
    elif spikes.size and spikes.max() > duration:
        flags.append("spikes_after_summary_duration")
    well = "A1"
    tbl = pa.table({"well": pa.array(np.full(spikes.size, well, dtype=object), pa.string()),
                    "electrode": pa.array(electrode, pa.string()), "time_s": pa.array(spikes, pa.float64()),
                    "amplitude_mv": pa.nulls(spikes.size, pa.float64())}, schema=SPIKE_SCHEMA)
    el = pa.table({"electrode": pa.array(names, pa.string()), "x_um": pa.array(x, pa.float64()),
                   "y_um": pa.array(y, pa.float64()), "n_spikes": pa.array(count, pa.int64())})
    return SpikeTimes(path=p, plate=p.stem, well=well, array=array, spikes=tbl, electrodes=el, meta=md,
                      duration_s=duration, duration_source=source, total_spikes=total, flags=flags)


# -- features -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureParams:
    """Parameters of the MEA features (recorded as JSON in ``mea_wells.burst_params``).

    ``active_min_spikes_per_min``: an electrode is active when its rate ≥ this (spikes/min; default 5).
    ``bursts``: max-interval parameters; ``network``: network-burst parameters.
    """

    active_min_spikes_per_min: float = 5.0
    bursts: MaxIntervalParams = field(default_factory=MaxIntervalParams)
    network: NetworkBurstParams = field(default_factory=NetworkBurstParams)

    def __post_init__(self) -> None:
        v = self.active_min_spikes_per_min
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InvalidArgument(f"active_min_spikes_per_min={v!r} must be a number >= 0 (spikes per minute)",
                                  field="active_min_spikes_per_min", value=repr(v), allowed=">= 0")

    def to_json(self) -> str:
        return json.dumps({"active_min_spikes_per_min": self.active_min_spikes_per_min,
                           "bursts": self.bursts.as_dict(), "network_bursts": self.network.as_dict()},
                          sort_keys=True)


def axion_electrode_position_um(electrode: str, pitch_um: float | None) -> tuple[float | None, float | None]:
    """(x_um, y_um) of an Axion electrode within its well: ``D3_31`` = column 3, row 1 (sjemea
    ``axion.elec.name.to.xy``: 4th character column, 5th row), origin at column 1/row 1, ``pitch_um`` apart
    (350 µm on the 48-well plate). (None, None) when the pitch is unknown."""
    m = re.fullmatch(r"[A-H]\d+_(\d)(\d)", electrode)
    if not m or pitch_um is None:
        return None, None
    return (int(m.group(1)) - 1) * pitch_um, (int(m.group(2)) - 1) * pitch_um


def pitch_for_plate_type(plate_type: str | None) -> float | None:
    """Electrode pitch in µm for an AxIS ``Plate Type`` (``Maestro 48-Well (Transparent)`` → 350), else None."""
    if not plate_type:
        return None
    m = re.search(r"(\d+)\s*-?\s*well", plate_type, re.I)
    return AXION_PITCH_UM.get(m.group(1)) if m else None


def _group_codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """(codes, names): int64 code per row into ``names`` (the distinct values sorted), via dictionary encoding
    (fast on millions of rows). Raises InvalidArgument on null values."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise InvalidArgument("spike table has null electrode/well names", field="electrode",
                              value=f"{arr.null_count} nulls")
    enc = pc.dictionary_encode(arr.cast(pa.string()))
    dict_names = enc.dictionary.to_pylist()
    perm = sorted(range(len(dict_names)), key=dict_names.__getitem__)
    rank = np.empty(len(perm), dtype=np.int64)
    rank[perm] = np.arange(len(perm))
    codes = rank[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if len(arr) else np.zeros(0, np.int64)
    return codes, [dict_names[i] for i in perm]


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def features_for_well(spikes: pa.Table, duration_s: float, params: FeatureParams | None = None,
                      plate_log_row: dict | None = None, *, well: str | None = None,
                      positions: dict[str, tuple[float | None, float | None]] | None = None,
                      pitch_um: float | None = None) -> tuple[list[dict], dict, list[dict]]:
    """Features of one well.

    ``spikes``: the well's spikes, a table with ``electrode`` (str) and ``time_s`` (float64, s) (other
    columns ignored); ``duration_s``: the recording duration in s (> 0); ``plate_log_row``: the well's plate
    log row (dict with treatment, dose, dose_unit, div) or None; ``well``: the well name (default: from the
    electrode names, or ``spikes['well']``); ``positions``: electrode → (x_um, y_um); without it, Axion
    positions within the well from ``pitch_um`` (:attr:`SpikeList.pitch_um`; None → null positions).

    Returns ``(electrode_rows, well_row, network_burst_rows)`` as dicts with the ``mea_electrodes``,
    ``mea_wells`` and ``mea_network_bursts`` columns minus file_sha256 and plate (the caller adds them):

    - electrode: well, electrode, x_um, y_um, n_spikes, firing_rate_hz (= n_spikes / duration_s), active,
      isi_mean_s, isi_median_s, isi_cv (sample SD / mean of the ISIs; None with < 2 ISIs), n_bursts,
      burst_rate_per_min, burst_duration_mean_s, spikes_per_burst_mean, pct_spikes_in_bursts (burst values
      None when the electrode has no burst, except n_bursts, burst_rate_per_min, pct_spikes_in_bursts = 0);
    - well: well, treatment, dose, dose_unit, div, n_electrodes (electrodes with ≥ 1 spike in the list),
      n_active_electrodes, n_spikes, firing_rate_hz (mean over active electrodes; None without any),
      well_firing_rate_hz (all the well's spikes / duration_s), n_bursts (sum over active electrodes),
      burst_rate_per_min (mean over active electrodes), pct_spikes_in_bursts (burst spikes / spikes of the
      active electrodes × 100), n_network_bursts, network_burst_rate_per_min, duration_s, burst_params (JSON);
    - network burst: well, start_s, end_s, n_spikes (all the well's spikes in [start_s, end_s]),
      n_electrodes (active electrodes with a burst overlapping it).

    Raises InvalidArgument for a non-positive duration or a table without electrode/time_s.
    """
    p = params or FeatureParams()
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise InvalidArgument(f"duration_s={duration_s!r} must be a positive number of seconds",
                              field="duration_s", value=repr(duration_s), allowed="> 0")
    for c in ("electrode", "time_s"):
        if c not in spikes.column_names:
            raise InvalidArgument(f"spike table lacks column {c!r}", field="spikes", value=spikes.column_names,
                                  allowed=["electrode", "time_s"])
    codes, names = _group_codes(spikes.column("electrode"))
    times = spikes.column("time_s").to_numpy(zero_copy_only=False).astype(np.float64)
    if well is None:
        if "well" in spikes.column_names and spikes.num_rows:
            well = spikes.column("well")[0].as_py()
        elif spikes.num_rows:
            well = re.sub(r"_\d\d$", "", str(names[codes[0]]))
    well = None if well is None else str(well)
    order = np.lexsort((times, codes))
    times = times[order]
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(names)))]
    active_hz = p.active_min_spikes_per_min / 60.0
    rows: list[dict] = []
    active_bursts: list[np.ndarray] = []
    act_spikes = act_burst_spikes = act_bursts = 0
    act_rates: list[float] = []
    act_burst_rates: list[float] = []
    for k, name in enumerate(names):
        t = times[bounds[k]: bounds[k + 1]]
        n = t.size
        rate = n / duration_s
        active = bool(rate >= active_hz)
        isi = np.diff(t)
        b = max_interval_bursts(t, p.bursts)
        nb = len(b)
        lens = b[:, 1] - b[:, 0] + 1 if nb else np.zeros(0)
        durs = t[b[:, 1]] - t[b[:, 0]] if nb else np.zeros(0)
        if positions is not None:
            x, y = positions.get(str(name), (None, None))
        else:
            x, y = axion_electrode_position_um(str(name), pitch_um)
        rows.append({
            "well": well, "electrode": str(name), "x_um": x, "y_um": y, "n_spikes": int(n),
            "firing_rate_hz": rate, "active": active,
            "isi_mean_s": _mean(isi), "isi_median_s": float(np.median(isi)) if isi.size else None,
            "isi_cv": (float(np.std(isi, ddof=1) / np.mean(isi)) if isi.size >= 2 and np.mean(isi) > 0
                       else None),
            "n_bursts": int(nb), "burst_rate_per_min": nb / duration_s * 60.0,
            "burst_duration_mean_s": _mean(durs), "spikes_per_burst_mean": _mean(lens),
            "pct_spikes_in_bursts": 100.0 * float(lens.sum()) / n if n else 0.0,
        })
        if active:
            act_spikes += n
            act_burst_spikes += int(lens.sum())
            act_bursts += nb
            act_rates.append(rate)
            act_burst_rates.append(nb / duration_s * 60.0)
            active_bursts.append(np.stack([t[b[:, 0]], t[b[:, 1]]], axis=1) if nb else np.zeros((0, 2)))
    nbi, nbe = network_bursts(active_bursts, len(act_rates), p.network)
    all_t = np.sort(times)
    nb_rows = []
    for (s, e), ne in zip(nbi, nbe, strict=True):
        cnt = int(np.searchsorted(all_t, e, "right") - np.searchsorted(all_t, s, "left"))
        nb_rows.append({"well": well, "start_s": float(s), "end_s": float(e), "n_spikes": cnt,
                        "n_electrodes": int(ne)})
    log = plate_log_row or {}
    well_row = {
        "well": well, "treatment": log.get("treatment"), "dose": log.get("dose"),
        "dose_unit": log.get("dose_unit"), "div": log.get("div"),
        "n_electrodes": int(len(names)), "n_active_electrodes": len(act_rates), "n_spikes": int(times.size),
        "firing_rate_hz": _mean(act_rates), "well_firing_rate_hz": times.size / duration_s,
        "n_bursts": int(act_bursts), "burst_rate_per_min": _mean(act_burst_rates),
        "pct_spikes_in_bursts": 100.0 * act_burst_spikes / act_spikes if act_spikes else None,
        "n_network_bursts": len(nb_rows), "network_burst_rate_per_min": len(nb_rows) / duration_s * 60.0,
        "duration_s": float(duration_s), "burst_params": p.to_json(),
    }
    return rows, well_row, nb_rows


def electrode_features(spikes: pa.Table, duration_s: float, params: FeatureParams | None = None,
                       **kw: Any) -> list[dict]:
    """The ``mea_electrodes`` rows of one well (:func:`features_for_well`, first element)."""
    return features_for_well(spikes, duration_s, params, **kw)[0]


def well_features(spikes: pa.Table, duration_s: float, params: FeatureParams | None = None,
                  plate_log_row: dict | None = None, **kw: Any) -> dict:
    """The ``mea_wells`` row of one well (:func:`features_for_well`, second element)."""
    return features_for_well(spikes, duration_s, params, plate_log_row, **kw)[1]


def well_network_bursts(spikes: pa.Table, duration_s: float, params: FeatureParams | None = None,
                        **kw: Any) -> list[dict]:
    """The ``mea_network_bursts`` rows of one well (:func:`features_for_well`, third element)."""
    return features_for_well(spikes, duration_s, params, **kw)[2]


def _log_rows(plate_log: pa.Table | None, plate: str | None) -> dict[str, dict]:
    if plate_log is None:
        return {}
    rows = plate_log.to_pylist()
    plates = {r.get("plate") for r in rows}
    if plate is not None and plate in plates:
        rows = [r for r in rows if r.get("plate") == plate]
    elif len(plates - {None}) > 1:
        raise InvalidArgument(f"plate log covers plates {sorted(p for p in plates if p)}; name the plate "
                              f"(plate={plate!r} is not among them)", field="plate", value=plate,
                              allowed=sorted(p for p in plates if p))
    return {r["well"]: r for r in rows}


def features(spike_table: pa.Table, duration_s: float, plate_log: pa.Table | None = None,
             params: FeatureParams | None = None, *, plate: str | None = None,
             positions: dict[str, tuple[float | None, float | None]] | None = None,
             pitch_um: float | None = None, include_silent_wells: bool = True) -> tuple[list[dict], list[dict], list[dict]]:
    """:func:`features_for_well` over every well of ``spike_table`` (columns electrode, time_s and optionally
    well; without it the well is the electrode name up to ``_``).

    With a ``plate_log`` (:func:`read_plate_log`; rows of ``plate`` when it lists several plates), each well
    row gets the well's treatment, dose, dose_unit and DIV, and (``include_silent_wells``) the log's wells
    without any spike get a row with zero spikes. Returns (electrode rows, well rows, network burst rows).
    """
    log = _log_rows(plate_log, plate)
    if "well" not in spike_table.column_names:
        spike_table = spike_table.append_column(
            "well", pc.replace_substring_regex(spike_table.column("electrode"), r"_\d\d$", ""))
    codes, names = _group_codes(spike_table.column("well"))
    order = np.argsort(codes, kind="stable")
    tbl = spike_table.take(pa.array(order))
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(names)))]
    e_rows: list[dict] = []
    w_rows: list[dict] = []
    n_rows: list[dict] = []
    for k, w in enumerate(names):
        er, wr, nr = features_for_well(tbl.slice(bounds[k], bounds[k + 1] - bounds[k]), duration_s, params,
                                       log.get(str(w)), well=str(w), positions=positions,
                                       pitch_um=pitch_um)
        e_rows += er
        w_rows.append(wr)
        n_rows += nr
    if include_silent_wells:
        empty = pa.table({"electrode": pa.array([], pa.string()), "time_s": pa.array([], pa.float64())})
        for w in sorted(set(log) - set(names)):
            w_rows.append(features_for_well(empty, duration_s, params, log[w], well=w)[1])
    w_rows.sort(key=lambda r: (r["well"][0], int(r["well"][1:]) if r["well"][1:].isdigit() else 0))
    return e_rows, w_rows, n_rows
