"""The ephys ETL: a folder of patch-clamp files and MEA exports into the datastack's ephys tables.

``ingest(lake, datastack, folder)`` (``neurolake ephys ingest FOLDER``) finds every supported file, reads it with
its reader, classifies stimuli, runs QC and the feature extraction, and appends the rows
(:mod:`neurolake.ephys.tables`). What it guarantees:

- **Idempotent**: a file is identified by the SHA-256 of its bytes; a file already loaded (same path, same
  hash) is skipped, the same bytes under another path are skipped as a duplicate, and a file whose bytes
  changed replaces its rows (old rows deleted, new ones appended: a new Delta version of each table; the older
  version stays readable by time travel).
- **Non-stopping**: a corrupt, truncated or unsupported file (Axion ``.raw``/``.spk``) becomes a row of the
  ``errors`` table with the reason, and the batch goes on. The same failure of the same bytes is recorded once.
- **No half-loaded file**: per batch, the rows of every table are written first and the ``files`` rows last;
  a file is loaded when its ``files`` row exists. Rows of a killed batch are invisible to readers and deleted
  by the next ingest.
- **Bounded memory for MEA spike lists**: spikes are streamed from the CSV into ``mea_spikes`` batch by batch
  and spilled per well to a temporary folder; well features are computed one well at a time.

Formats (by extension, then content): ``.abf`` (ABF1/ABF2, pyabf), ``.nwb`` (NWB icephys 2.x, pynwb),
``*spike_list*.csv[.gz]`` / other Axion spike-list CSVs, ``*expLog*.csv[.gz]`` (Axion plate log),
``.h5``/``.hdf5`` in the retinal-wave repository layout. ``.raw``/``.spk`` (Axion binaries) are recorded as
``unsupported`` errors: export a spike list from AxIS instead.

Sources on object storage (``s3://bucket/prefix`` or one object): :mod:`neurolake.ephys.sources` lists them and
downloads one object at a time to a temporary spill folder for its reader; the ``files`` rows keep the
``s3://`` URL as the path, and the SHA-256 is that of the object's bytes, so the guarantees above hold as for
local files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from neurolake.ephys import sources, tables, traces
from neurolake.errors import InvalidArgument, NeurolakeError, NotFound, Unsupported

PATCH_CLAMP = ("abf", "nwb")
MEA = ("axion_spike_list", "spike_times_h5")
PLATE_LOG = "axion_plate_log"
BATCH_FILES = 16          # patch-clamp files whose rows are committed together
BATCH_BYTES = 256 << 20   # … or fewer, when their traces pass this many bytes
MEA_BATCH_ROWS = 262_144  # spikes per streamed batch of a spike list (memory: ~100 bytes a row in flight)

Progress = Callable[[int, int, str], None]


@dataclass
class IngestReport:
    """What one ingest did. ``loaded``/``replaced``: dicts (path, file_sha256, format, rows per table);
    ``skipped``: (path, reason); ``errors``: (path, error_code, message); ``orphans_removed``: files whose
    half-written rows of an earlier, killed ingest were deleted; ``versions``: Delta version per table."""

    datastack: str
    loaded: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    orphans_removed: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("datastack", "loaded", "replaced", "skipped", "errors", "ignored",
                                              "orphans_removed", "versions")}


# -------------------------------------------------------------------------------------------------
# formats
# -------------------------------------------------------------------------------------------------
def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(n)
        except OSError:
            return raw
    return raw


def detect_format(path: str | Path) -> str | None:
    """The format of ``path``: "abf", "nwb", "axion_spike_list", "axion_plate_log", "spike_times_h5", or None for
    a file the ETL does not look at (README, images …). Raises Unsupported for Axion ``.raw``/``.spk`` binaries
    (export a spike list from AxIS)."""
    p = Path(path)
    name = p.name.lower()
    suffixes = [s.lower() for s in p.suffixes]
    if name.endswith((".raw", ".spk")):
        raise Unsupported(f"{p.name}: Axion .raw/.spk binaries are not readable (no open reader exists): "
                          "export a spike list (CSV) from AxIS and ingest that", field="path", value=str(p))
    if name.endswith(".abf"):
        return "abf"
    if name.endswith(".nwb"):
        return "nwb"
    if name.endswith((".h5", ".hdf5")):
        return "spike_times_h5"
    if ".csv" in suffixes and (name.endswith(".csv") or name.endswith(".csv.gz")):
        if "explog" in name:
            return PLATE_LOG
        head = _head(p).decode("utf-8", "replace")
        if re.search(r"Electrode", head) and re.search(r"Time\s*\(s\)", head):
            return "axion_spike_list"
        if re.search(r"\bWell\b", head) and re.search(r"Treatment", head):
            return PLATE_LOG
        return None
    return None


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)  # naive recorder time stored as if UTC (docs/ephys.md)


def _code() -> tuple[str, str | None]:
    from neurolake.provenance import code_version

    c = code_version()
    return c["neurolake"], c.get("git_commit")


# -------------------------------------------------------------------------------------------------
# patch clamp
# -------------------------------------------------------------------------------------------------
def read_recording(path: str | Path, fmt: str | None = None):
    """Read a patch-clamp file (ABF or NWB) as a :class:`~neurolake.ephys.model.Recording`."""
    fmt = fmt or detect_format(path)
    if fmt == "abf":
        from neurolake.ephys import abf

        return abf.read(path)
    if fmt == "nwb":
        from neurolake.ephys import nwb

        return nwb.read(path)
    raise InvalidArgument(f"{Path(path).name} is not a patch-clamp file (ABF or NWB)", field="path", value=str(path))


def _cell(rec, channel: int, n_channels: int) -> str:
    return rec.cell if n_channels == 1 else f"{rec.cell}/ch{channel}"


def analyze_patch_clamp(path: Path, sha: str, fmt: str, qc_thresholds: dict[str, float] | None = None,
                        feature_settings: dict[str, Any] | None = None
                        ) -> tuple[Any, dict[str, list[dict]], dict[str, Any]]:
    """Read, classify, QC (``qc_thresholds`` override :data:`neurolake.ephys.qc.THRESHOLDS`) and extract features
    (``feature_settings``: eFEL settings, :func:`neurolake.ephys.features.resolve_settings`) of one patch-clamp
    file: ``(recording, rows per table, file row fields)``."""
    from neurolake.ephys import features, qc, stimulus

    rec = read_recording(path, fmt)
    stims = [stimulus.classify(s) for s in rec.sweeps]
    qcs = [qc.check_sweep(s, st, qc_thresholds) for s, st in zip(rec.sweeps, stims, strict=True)]
    an = features.analyze(rec, stims, qcs, feature_settings)
    channels = sorted({s.channel for s in rec.sweeps})
    cells = {c: _cell(rec, c, len(channels)) for c in channels}
    sweeps = []
    for s, st, q in zip(rec.sweeps, stims, qcs, strict=True):
        unit = s.command_unit
        sweeps.append({
            "file_sha256": sha, "cell": cells[s.channel], "sweep": s.number, "channel": s.channel,
            "clamp_mode": s.clamp_mode, "stimulus_class": st.stimulus_class,
            "stimulus_amplitude_pa": st.amplitude if unit == "pA" else None,
            "stimulus_amplitude_mv": st.amplitude if unit == "mV" else None,
            "holding_pa": st.holding if unit == "pA" else None, "holding_mv": st.holding if unit == "mV" else None,
            "stimulus_start_s": st.start_s, "stimulus_end_s": st.end_s, "stimulus_rule": st.rule,
            "sampling_rate_hz": s.sampling_rate_hz, "n_samples": s.n_samples, "duration_s": s.duration_s,
            "start_s": s.start_s, "response_unit": s.response_unit, "command_unit": s.command_unit,
            "label": s.label, "qc_passed": bool(q.passed), "qc_reasons": list(q.reasons),
            "qc_measures": json.dumps(q.measures, default=_json_default),
            "qc_thresholds_version": q.thresholds_version, "qc_thresholds": json.dumps(q.thresholds),
            "flags": list(s.flags)})
    lib = an.library
    common = {"library": lib.get("name"), "library_version": lib.get("version"),
              "settings": json.dumps(lib.get("settings", {}), sort_keys=True, default=_json_default)}
    spikes = [{**r, "file_sha256": sha, "cell": cells.get(r["channel"], rec.cell)} for r in an.spikes]
    sweep_features = [{**common, **r, "file_sha256": sha, "cell": cells.get(r["channel"], rec.cell)}
                      for r in an.sweep_features]
    cell_features = [{**common, **r, "file_sha256": sha, "cell": cells.get(r["channel"], rec.cell)}
                     for r in an.cell_features]
    rows = {"sweeps": sweeps, "spikes": spikes, "sweep_features": sweep_features, "cell_features": cell_features}
    info = {"format_version": rec.format_version, "format": rec.format, "recorded_at": _utc(rec.recorded_at),
            "protocol": rec.protocol, "cell": rec.cell, "n_sweeps": len({s.number for s in rec.sweeps}),
            "n_channels": len(channels), "n_spikes": len(spikes), "flags": list(rec.flags),
            "metadata": json.dumps(rec.metadata, default=_json_default, sort_keys=True)}
    return rec, rows, info


def _analyze_task(path: str, sha: str, fmt: str, qc_thresholds: dict[str, float] | None,
                  feature_settings: dict[str, Any] | None) -> tuple:
    """One Dask task of :func:`ingest`: :func:`analyze_patch_clamp` of one file (pure: a re-run gives the same
    rows). An ``s3://`` object is downloaded by the task itself (to its own spill folder, removed after; the
    worker needs the AWS environment of the client) and must still have the bytes ``sha``. A failure comes
    back as ``("error", code, message)`` (exception objects may not survive pickling)."""
    try:
        if sources.remote(path):
            with sources.Spool() as spool:
                local = spool.local(sources.RemoteFile(path), sha)
                return ("ok", *analyze_patch_clamp(local, sha, fmt, qc_thresholds, feature_settings))
        return ("ok", *analyze_patch_clamp(Path(path), sha, fmt, qc_thresholds, feature_settings))
    except Exception as exc:  # noqa: BLE001 - recorded in the errors table by the client, as in-process
        return ("error", *_code_message(exc))


def _code_message(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, NeurolakeError | _TaskFailed):
        return exc.code, exc.message
    return type(exc).__name__, f"{type(exc).__name__}: {exc}"


class _TaskFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (dt.datetime, dt.date)):
        return o.isoformat()
    return str(o)


# -------------------------------------------------------------------------------------------------
# MEA
# -------------------------------------------------------------------------------------------------
def _plate_key(name: str) -> str:
    """The prefix that ties a spike list to its plate log: the file name before ``_expLog`` / ``_DIV…`` /
    ``_spike_list`` (meaRtools' naming: ``<experiment>_<date>_plate<N>_DIV<d>_spike_list.csv``)."""
    base = name.lower()
    for cut in ("_explog", "_div", "_spike_list", "_spikelist"):
        i = base.find(cut)
        if i > 0:
            base = base[:i]
    return base


def _div_from_name(name: str) -> int | None:
    m = re.search(r"DIV[_ ]?(\d+)", name, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _log_for(plate_logs: dict[str, pa.Table], name: str, plate: str) -> dict[str, dict]:
    """Plate-log rows by well for a spike list: the log with the same name prefix (its rows of ``plate`` when it
    lists several plates), else any log that lists ``plate``; {} without one."""
    log = plate_logs.get(_plate_key(name))
    if log is not None:
        rows = log.to_pylist()
        mine = [r for r in rows if r.get("plate") == plate]
        return {str(r["well"]): r for r in (mine or rows)}
    for log in plate_logs.values():
        mine = [r for r in log.to_pylist() if r.get("plate") == plate]
        if mine:
            return {str(r["well"]): r for r in mine}
    return {}


def load_mea(lake, datastack: str, path: Path, sha: str, fmt: str, plate_logs: dict[str, pa.Table],
             params: Any = None) -> dict[str, Any]:
    """Stream one MEA file into ``mea_spikes`` and write its electrode, well and network-burst rows (one commit
    per table). Returns the file row fields; the ``files`` row is written by the caller after this returns.
    Memory: one batch of spikes plus one well's spikes (spilled per well to Arrow IPC files in a temporary
    folder while streaming)."""
    from neurolake.ephys import mea

    positions: dict[str, tuple] = {}
    pitch = None
    if fmt == "axion_spike_list":
        src = mea.open_spike_list(path)
        plate = str(src.plate)
        batches = src.batches(rows=MEA_BATCH_ROWS)
        pitch = src.pitch_um
        log_rows = _log_for(plate_logs, path.name, plate)
        recorded_at, meta = src.recorded_at, {"settings": dict(src.settings), "plate_source": src.plate_source}
    else:
        src = mea.read_spike_times_h5(path)
        plate = str(src.plate)
        batches = iter(src.spikes.to_batches())
        positions = {r["electrode"]: (r["x_um"], r["y_um"]) for r in src.electrodes.to_pylist()}
        log_rows, recorded_at = {}, None
        meta = {**dict(src.meta), "array": src.array, "duration_source": src.duration_source, "flags": src.flags}
    spill = tempfile.TemporaryDirectory(prefix="neurolake-mea-")
    writers: dict[str, Any] = {}
    counter = {"n": 0}

    def stream():
        import pyarrow.compute as pc

        for b in batches:
            n = b.num_rows
            if n == 0:
                continue
            counter["n"] += n
            t = pa.Table.from_batches([b])
            t = t.append_column("file_sha256", pa.repeat(pa.scalar(sha), n)) \
                 .append_column("plate", pa.repeat(pa.scalar(plate), n))
            out = tables.to_arrow("mea_spikes", t)
            for well in pc.unique(out["well"]).to_pylist():  # spill per well for the per-well features
                part = out.filter(pc.equal(out["well"], well)).select(["electrode", "time_s", "amplitude_mv"])
                w = writers.get(well)
                if w is None:
                    w = writers[well] = pa.ipc.new_file(str(Path(spill.name) / f"{len(writers)}.arrow"),
                                                        part.schema)
                w.write_table(part)
            yield from out.to_batches()

    try:
        reader = pa.RecordBatchReader.from_batches(tables.SCHEMAS["mea_spikes"], stream())
        tables.append(lake, datastack, "mea_spikes", reader, note=f"ingest {path.name}")
        spilled = {}
        for well, w in writers.items():
            w.close()
            spilled[well] = Path(spill.name) / f"{list(writers).index(well)}.arrow"
        duration = float(src.duration_s)  # after the full pass: the last spike is known
        meta["duration_source"] = src.duration_source
        meta["duration_s"] = duration
        electrodes, well_rows, bursts = [], [], []
        empty = pa.table({"electrode": pa.array([], pa.string()), "time_s": pa.array([], pa.float64())})
        for well in sorted(set(spilled) | set(log_rows)):
            if well in spilled:
                with pa.memory_map(str(spilled[well])) as fh:
                    part = pa.ipc.open_file(fh).read_all()
            else:  # a well of the plate log without a spike: a row with zero spikes
                part = empty
            e_rows, w_row, nb_rows = mea.features_for_well(part, duration, params, log_rows.get(well), well=well,
                                                           positions=positions or None, pitch_um=pitch)
            if w_row.get("div") is None:
                w_row["div"] = getattr(src, "div", None) or _div_from_name(path.name)
            electrodes += [{**r, "file_sha256": sha, "plate": plate} for r in e_rows]
            well_rows.append({**w_row, "file_sha256": sha, "plate": plate})
            bursts += [{**r, "file_sha256": sha, "plate": plate} for r in nb_rows]
        for table, rows in (("mea_electrodes", electrodes), ("mea_wells", well_rows),
                            ("mea_network_bursts", bursts)):
            tables.append(lake, datastack, table, tables.to_arrow(table, rows), note=f"ingest {path.name}")
    finally:
        for w in writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already closed
                pass
        spill.cleanup()
    return {"format": fmt, "format_version": (meta.get("settings") or {}).get("AxIS Version"),
            "recorded_at": _utc(recorded_at), "protocol": None, "cell": plate, "n_sweeps": None,
            "n_channels": len({r["electrode"] for r in electrodes}), "n_spikes": counter["n"], "flags": [],
            "metadata": json.dumps(meta, default=_json_default, sort_keys=True)}


# -------------------------------------------------------------------------------------------------
# the batch
# -------------------------------------------------------------------------------------------------
File = Path | sources.RemoteFile  # a local file or an object of an s3:// source


def _files_of(source: str | Path | Iterable[str | Path]) -> list[File]:
    if not isinstance(source, (str, Path)):
        out: list[File] = []
        for f in source:  # a list: files, objects or s3:// prefixes (listed)
            out += sources.list_source(str(f)) if sources.remote(f) else [Path(f).expanduser().resolve()]
        return out
    if sources.remote(source):  # NotFound for a missing bucket/key or an empty prefix
        return list(sources.list_source(str(source)))
    p = Path(source).expanduser()
    if not p.exists():
        raise NotFound(f"no file or folder {str(p)!r}", field="folder", value=str(p))
    if p.is_file():
        return [p.resolve()]
    return sorted(f.resolve() for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))


def ingest(lake, datastack: str, source: str | Path | Iterable[str | Path], *, lab: str | None = None,
           conditions: dict[str, str] | None = None, progress: Progress | None = None,
           mea_params: Any = None, qc_thresholds: dict[str, float] | None = None,
           feature_settings: dict[str, Any] | None = None, scheduler: str | None = None) -> IngestReport:
    """Load every supported file of ``source`` (a folder, searched recursively, a file, an ``s3://bucket/prefix``
    (every object under it) or ``s3://bucket/key`` (one object), or a list of these) into the ephys tables of
    ``datastack`` (created when missing, not public: grant roles to share it). ``lab`` and ``conditions`` (tags like
    ``{"drug": "TTX"}``) are stored with each file's row. ``progress(done, total, path)`` is called per file.
    ``qc_thresholds`` overrides QC limits (the rows record them, version ``…+custom``); ``feature_settings`` the
    eFEL settings; ``mea_params`` the MEA burst/activity parameters (:class:`neurolake.ephys.mea.FeatureParams`).
    A file already loaded is not re-analysed with new settings: delete its rows first (or change the file).

    ``scheduler`` (:mod:`neurolake.jobs`): None reads and analyses every file here, in this process; given, the
    patch-clamp analyses (reading, stimulus classification, QC, eFEL features: the heavy part) run as Dask tasks,
    one per file, a few files ahead of the loop, which still writes every row and trace in file order — the same
    tables as in-process. MEA files are streamed here either way. The run is recorded as a job of kind
    ``ephys`` (:mod:`neurolake.jobs.records`).

    Objects of an ``s3://`` source (endpoint and credentials: :func:`neurolake.storage.config.storage_config`)
    are downloaded one at a time to a temporary spill folder, read there and removed; their rows' ``path`` is
    the ``s3://`` URL and their SHA-256 that of the object's bytes, so a re-run skips them as it skips local
    files (it downloads each object to hash it). On Dask, the client hashes each patch-clamp object (streamed)
    and the task downloads it again to read it (workers need the same AWS environment). An object of an
    unsupported format (Axion ``.raw``) is recorded as an error without its SHA-256 (not downloaded).

    Returns an :class:`IngestReport`. Raises NotFound when ``source`` does not exist (a missing folder, bucket or
    key, an empty prefix), PermissionDenied when the S3 store refuses the credentials (before anything is
    written); every per-file failure is recorded in the ``errors`` table and the report instead of raised.
    """
    from neurolake.provenance import current_user

    if qc_thresholds:
        from neurolake.ephys.qc import THRESHOLDS

        bad = sorted(set(qc_thresholds) - set(THRESHOLDS))
        if bad:
            raise InvalidArgument(f"unknown QC limit {bad[0]!r}; limits: {', '.join(THRESHOLDS)}",
                                  field="qc_thresholds", value=bad[0], allowed=list(THRESHOLDS))
    files = _files_of(source)
    if datastack not in lake.datastacks():
        lake.create_datastack(datastack, (1, 1, 1), description="electrophysiology recordings", exist_ok=True,
                             public=False)  # lab data: readable by the roles granted on it
    report = IngestReport(datastack=datastack)
    version, commit = _code()
    user = current_user()
    cond = json.dumps(conditions or {}, sort_keys=True)
    from neurolake.jobs import dask_client
    from neurolake.jobs.records import job

    with (job(lake, "ephys", datastack=datastack, target=str(source) if isinstance(source, str | Path) else None,
              scheduler=scheduler or "in-process") as jrec,
          (dask_client(scheduler) if scheduler is not None else contextlib.nullcontext()) as client,
          tables.write_lock(lake, datastack), ThreadPoolExecutor(1, thread_name_prefix="traces") as writer,
          sources.Spool() as spool):
        report.orphans_removed = tables.remove_orphans(lake, datastack)
        loaded = tables.loaded_shas(lake, datastack)
        store = tables.root(lake, datastack) / "traces"
        for name in traces.stored_names(lake, datastack):  # traces of a killed batch
            if name.startswith(".") and name.endswith(".tmp"):
                shutil.rmtree(store / name, ignore_errors=True)
            elif name.endswith(".zarr") and name[:-5] not in loaded:
                traces.delete(lake, datastack, name[:-5])
        known = tables.read(lake, datastack, "files", columns=["file_sha256", "path"]).to_pylist()
        by_path = {r["path"]: r["file_sha256"] for r in known}
        by_sha = {r["file_sha256"]: r["path"] for r in known}
        seen_errors = {(r["path"], r["file_sha256"], r["message"]) for r in
                       tables.read(lake, datastack, "errors", columns=["path", "file_sha256", "message"]).to_pylist()}
        # classify everything first: plate logs before the spike lists that need them
        todo: list[tuple[File, str | None, str | None]] = []
        new_errors: list[dict] = []

        def sha_of(path: File, keep: bool = True) -> str:  # an object: downloaded (keep) or streamed to hash it
            if isinstance(path, sources.RemoteFile):
                return spool.fetch(path) if keep else spool.sha256(path)
            return sha256_of(path)

        def local(path: File, sha: str) -> Path:  # what the readers open
            return spool.local(path, sha) if isinstance(path, sources.RemoteFile) else path

        def fail(path: File, sha: str | None, fmt: str | None, exc: Exception) -> None:
            code, msg = _code_message(exc)
            report.errors.append({"path": str(path), "error_code": code, "message": msg})
            if (str(path), sha, msg) not in seen_errors:
                seen_errors.add((str(path), sha, msg))
                new_errors.append({"path": str(path), "file_sha256": sha, "format": fmt, "error_code": code,
                                   "message": msg, "at": _now()})

        for f in files:
            try:
                if isinstance(f, sources.RemoteFile):  # by name, and by its first bytes for a CSV
                    fmt = detect_format(spool.head(f) if ".csv" in f.name.lower() else Path(f.name))
                else:
                    fmt = detect_format(f)
            except Unsupported as exc:
                fail(f, None if isinstance(f, sources.RemoteFile) else sha256_of(f), f.suffix.lstrip(".").lower(),
                     exc)
                continue
            except (OSError, NeurolakeError) as exc:
                fail(f, None, None, exc)
                continue
            if fmt is None:
                report.ignored.append(str(f))
                continue
            todo.append((f, fmt, None))
        todo.sort(key=lambda t: (t[1] != PLATE_LOG, str(t[0])))
        plate_logs: dict[str, pa.Table] = {}
        pending: dict[str, list[dict]] = {t: [] for t in ("sweeps", "spikes", "sweep_features", "cell_features")}
        pending_files: list[dict] = []
        pending_traces: list[Future] = []  # of traces.PendingWrite: written by a thread while we go on
        pending_replace: list[str] = []
        pending_bytes = 0

        def flush() -> None:
            nonlocal pending_bytes
            for w in pending_traces:  # the traces are in place before any row names their file
                w.result().commit()
            pending_traces.clear()
            if pending_replace:  # a changed file: its old rows go in the same batch as the new ones
                for t in (*tables.KEYED, "files"):  # files last: earlier versions keep their meaning
                    tables.delete_files(lake, datastack, t, pending_replace, note="replace changed file")
                for old_sha in pending_replace:
                    traces.delete(lake, datastack, old_sha)
                pending_replace.clear()
            for t, rows in pending.items():
                if rows:
                    tables.append(lake, datastack, t, tables.to_arrow(t, rows))
                    rows.clear()
            if pending_files:  # last: the marker that the batch's files are loaded
                tables.append(lake, datastack, "files", tables.to_arrow("files", pending_files))
                pending_files.clear()
            pending_bytes = 0

        total = len(todo)
        # on Dask: the patch-clamp files this loop will analyse (as far as known now), submitted a few ahead
        shas: dict[File, str] = {}
        futures: dict[File, Any] = {}
        ahead: list[tuple[File, str, str]] = []
        if client is not None:
            seen = dict(by_sha)
            for path, fmt, _ in todo:
                if fmt not in PATCH_CLAMP:
                    continue
                try:
                    sha = shas[path] = sha_of(path, keep=False)
                except (OSError, NeurolakeError):
                    continue
                if by_path.get(str(path)) == sha or (sha in seen and seen[sha] != str(path)):
                    continue
                seen[sha] = str(path)
                ahead.append((path, sha, fmt))
            ahead.reverse()
        window = 2 * max(1, len(client.scheduler_info().get("workers", {})) if client is not None else 1)

        def top_up() -> None:
            while ahead and len(futures) < window:
                path, sha, fmt = ahead.pop()
                futures[path] = (sha, client.submit(_analyze_task, str(path), sha, fmt, qc_thresholds,
                                                    feature_settings, pure=False))
                jrec.add(1)

        for i, (path, fmt, _) in enumerate(todo):
            spool.release()  # the object read for the previous file, if any
            if progress:
                progress(i, total, str(path))
            jrec.phase("files", i, total)
            top_up()
            try:
                sha = shas.pop(path, None) or sha_of(path)
            except (OSError, NeurolakeError) as exc:
                fail(path, None, fmt, exc)
                continue
            old = by_path.get(str(path))
            if old == sha:
                report.skipped.append({"path": str(path), "file_sha256": sha, "reason": "unchanged"})
                continue
            if sha in by_sha and by_sha[sha] != str(path):
                report.skipped.append({"path": str(path), "file_sha256": sha,
                                       "reason": f"same bytes as {by_sha[sha]}"})
                continue
            base = {"file_sha256": sha, "path": str(path), "name": path.name,
                    "bytes": path.size if isinstance(path, sources.RemoteFile) else path.stat().st_size,
                    "lab": lab, "conditions": cond, "ingested_at": _now(), "ingested_by": user,
                    "neurolake_version": version, "git_commit": commit}
            entry = {"path": str(path), "file_sha256": sha, "format": fmt}
            try:
                if fmt == PLATE_LOG:
                    from neurolake.ephys import mea

                    log = mea.read_plate_log(local(path, sha))
                    plate_logs[_plate_key(path.name)] = log
                    info = {"format": fmt, "n_sweeps": None, "n_channels": None, "n_spikes": None,
                            "metadata": json.dumps({"wells": log.num_rows}), "flags": []}
                elif fmt in PATCH_CLAMP:
                    sub = futures.pop(path, None)
                    if sub is not None and sub[0] == sha:  # analysed on Dask
                        res = sub[1].result()
                        jrec.done()
                        if res[0] == "error":  # the task's error, recorded as in-process
                            raise _TaskFailed(res[1], res[2])
                        rec, rows, info = res[1:]
                    else:  # not foreseen (e.g. a duplicate of a file that failed): here
                        rec, rows, info = analyze_patch_clamp(local(path, sha), sha, fmt, qc_thresholds,
                                                              feature_settings)
                    pending_traces.append(writer.submit(traces.write, lake, datastack, sha, rec))
                    pending_bytes += sum(s.n_samples for s in rec.sweeps) * 16
                    for t, r in rows.items():
                        pending[t].extend(r)
                    entry["rows"] = {t: len(r) for t, r in rows.items()}
                else:  # MEA: streamed and committed per file (large), files row after
                    flush()
                    if old is not None:
                        pending_replace.append(old)
                        flush()
                    info = load_mea(lake, datastack, local(path, sha), sha, fmt, plate_logs, mea_params)
                    entry["rows"] = {"mea_spikes": info["n_spikes"]}
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
                fail(path, sha, fmt, exc)
                continue
            if old is not None and fmt not in MEA:
                pending_replace.append(old)
            pending_files.append({**base, **info, "format": info.get("format") or fmt})
            (report.replaced if old is not None else report.loaded).append(entry)
            by_path[str(path)], by_sha[sha] = sha, str(path)
            if fmt in MEA or len(pending_files) >= BATCH_FILES or pending_bytes >= BATCH_BYTES:
                flush()
        flush()
        for _sha, fut in futures.values():  # foreseen, then skipped (a duplicate found meanwhile)
            fut.cancel()
            jrec.done()
        jrec.phase("files", total, total)
        if new_errors:
            tables.append(lake, datastack, "errors", tables.to_arrow("errors", new_errors))
        if progress:
            progress(total, total, "")
        report.versions = {t: tables.version(lake, datastack, t) for t in tables.TABLES}
    return report
