"""NWB 2.x intracellular (icephys) files → :class:`~neurolake.ephys.model.Recording`.

Reads with `pynwb <https://pynwb.readthedocs.io>`_, ``NWBHDF5IO(path, "r", load_namespaces=True)`` so files
carrying cached extension namespaces (e.g. ``ndx-lnmc-icephys-hierarchy``) open with their own spec. Format:
NWB 2 core schema, icephys module (``CurrentClampSeries``, ``VoltageClampSeries``, ``IZeroClampSeries`` in
``/acquisition``; their ``*StimulusSeries`` in ``/stimulus/presentation``; the ``intracellular_recordings``
table since NWB 2.4).

Pairing a response with its stimulus: (1) the ``intracellular_recordings`` table row, (2) equal
``sweep_number``, (3) the name (equal, or equal but for one ``_``-separated token, e.g. ``ic__Step__1`` ↔
``ics__Step__1``, ``data_00000_AD0`` ↔ ``data_00000_DA0``), (4) the same ``starting_time``, rate and length.
A response without a stimulus gets ``command=None`` and the flag ``no_stimulus_series``.

Units: stored values × ``conversion`` + ``offset`` are SI (volts, amperes); the reader scales them to mV and
pA. Clamp mode follows the neurodata type (CurrentClampSeries / IZeroClampSeries → current clamp,
VoltageClampSeries → voltage clamp), checked against the ``unit`` attribute; a type whose unit contradicts it
(a CurrentClampSeries in amperes) gives ``unknown`` with a ``clamp_mode_ambiguous`` flag. An
IZeroClampSeries has no stimulus by definition: its command is 0 pA (flag ``izero_clamp``).

Sweep order: (``sweep_number`` when every series has one, ``starting_time``, name in natural order); sweeps are
renumbered 0..n-1 per electrode; the file's own sweep numbers and series names are in
``metadata["series"]``. ``channel`` is the electrode's index among the file's intracellular electrodes.

When pynwb refuses a file (e.g. a pre-release schema it cannot map), the series are read with h5py directly
(same pairing rules 2-4, no icephys tables) and the recording is flagged ``read_with_h5py: <pynwb error>``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.base.time import parse_timestamp
from neurolake.ephys.model import CURRENT_CLAMP, UNKNOWN, VOLTAGE_CLAMP, Recording, Sweep
from neurolake.errors import CorruptData, NotFound

# SI unit spellings found in NWB files → (kind, factor to mV / pA)
_UNITS = {
    "volts": ("voltage", 1e3), "volt": ("voltage", 1e3), "v": ("voltage", 1e3),
    "millivolts": ("voltage", 1.0), "mv": ("voltage", 1.0),
    "amperes": ("current", 1e12), "ampere": ("current", 1e12), "amps": ("current", 1e12),
    "a": ("current", 1e12), "picoamperes": ("current", 1.0), "pa": ("current", 1.0),
    "nanoamperes": ("current", 1e3), "na": ("current", 1e3),
}
_RESPONSE_TYPES = {"CurrentClampSeries": CURRENT_CLAMP, "IZeroClampSeries": CURRENT_CLAMP,
                   "VoltageClampSeries": VOLTAGE_CLAMP}
_EXPECTED_KIND = {CURRENT_CLAMP: "voltage", VOLTAGE_CLAMP: "current"}   # response unit kind per mode
_MISSING = {"", "na", "n/a", "none", "unknown", "null"}


@dataclass
class _Series:
    """One time series as read, before pairing (both read paths fill these)."""

    name: str
    neurodata_type: str         # the core type it is (or derives from)
    data: Any                   # lazily sliceable, raw stored values
    conversion: float
    offset: float
    unit: str
    rate: float | None
    starting_time: float
    timestamps: Any | None
    sweep_number: int | None
    electrode: str | None
    description: str
    obj: Any = None             # the pynwb object (pynwb path only)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _scale(unit: str) -> tuple[str | None, float]:
    return _UNITS.get((unit or "").strip().lower(), (None, 1.0))


def _values(s: _Series, start: int = 0, count: int | None = None) -> np.ndarray:
    """(sample,) float64 in mV / pA: stored × conversion + offset, then × the unit's factor."""
    raw = s.data[start:] if count is None else s.data[start:start + count]
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 1:
        raise CorruptData(f"series {s.name!r} has data of shape {x.shape}; icephys series are 1-D (sample,)",
                          series=s.name)
    x = x * s.conversion
    if s.offset:
        x = x + s.offset
    _, factor = _scale(s.unit)
    return x * factor


def read(path: str | os.PathLike) -> Recording:
    """Read one NWB 2.x icephys file.

    Returns a :class:`Recording` (``format="nwb"``, ``format_version`` the root ``nwb_version`` attribute,
    ``recorded_at`` the session start in UTC, ``protocol`` the file's ``protocol`` or else its distinct
    ``stimulus_description`` values joined by ``"; "``, ``cell`` the subject id when the file gives one, else
    the file stem). Each sweep's ``response`` / ``command`` is (sample,) float64 in mV / pA (current clamp) or
    pA / mV (voltage clamp); ``label`` the series' ``stimulus_description``; ``start_s`` its
    ``starting_time`` (or first timestamp), s. ``metadata``: identifier, session description, institution,
    lab, experimenters, subject, electrodes, cached namespaces, and ``series`` (per sweep: response and
    stimulus names, the file's sweep number, conversions, offsets, units).

    Raises :class:`~neurolake.errors.NotFound` (no file), :class:`~neurolake.errors.CorruptData` (not HDF5,
    truncated, undecodable, or no icephys series).
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"NWB file not found: {str(p)!r}", path=str(p))
    import h5py

    try:
        with h5py.File(p, "r") as f:
            version = f.attrs.get("nwb_version", "")
            namespaces = sorted(f["specifications"].keys()) if "specifications" in f else []
    except Exception as e:  # OSError for non-HDF5 / truncated files
        raise CorruptData(f"not a readable HDF5/NWB file: {p.name!r}: {e}", path=str(p)) from e
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    version = str(version)

    import pynwb

    flags: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pynwb.NWBHDF5IO(str(p), "r", load_namespaces=True) as io:
                nwb = io.read()
                series, meta, pairs = _collect_pynwb(nwb)
                return _build(p, version, namespaces, series, meta, pairs, flags)
    except (CorruptData, NotFound):
        raise
    except Exception as e:  # pynwb refused: fall back to the HDF5 layout
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    flags.append(f"read_with_h5py: pynwb could not read the file ({reason})")
    return _read_h5py(p, version, namespaces, flags)


def _meta_common(session_start, identifier, description, institution, lab, experimenters, protocol,
                 subject: dict[str, Any], electrodes: list[str]) -> dict[str, Any]:
    return {"identifier": identifier, "session_description": description, "institution": institution,
            "lab": lab, "experimenters": list(experimenters or []), "protocol": protocol,
            "subject": subject, "electrodes": electrodes,
            "session_start_time": session_start.isoformat() if session_start is not None else None}


def _collect_pynwb(nwb) -> tuple[list[_Series], dict[str, Any], dict[str, tuple[_Series, int, int]]]:
    from pynwb.icephys import (
        CurrentClampSeries,
        CurrentClampStimulusSeries,
        IZeroClampSeries,
        VoltageClampSeries,
        VoltageClampStimulusSeries,
    )

    def core_type(obj) -> str | None:
        for cls in (IZeroClampSeries, CurrentClampSeries, VoltageClampSeries, CurrentClampStimulusSeries,
                    VoltageClampStimulusSeries):
            if isinstance(obj, cls):
                return cls.__name__
        return None

    def wrap(obj) -> _Series:
        return _Series(name=obj.name, neurodata_type=core_type(obj) or type(obj).__name__, data=obj.data,
                       conversion=float(obj.conversion), offset=float(getattr(obj, "offset", 0.0) or 0.0),
                       unit=str(obj.unit), rate=float(obj.rate) if obj.rate is not None else None,
                       starting_time=float(obj.starting_time or 0.0), timestamps=obj.timestamps,
                       sweep_number=None if obj.sweep_number is None else int(obj.sweep_number),
                       electrode=obj.electrode.name if getattr(obj, "electrode", None) is not None else None,
                       description=str(obj.stimulus_description or ""), obj=obj)

    responses = [wrap(o) for o in nwb.acquisition.values() if core_type(o) in _RESPONSE_TYPES]
    stimuli = [wrap(o) for o in nwb.stimulus.values() if core_type(o) is not None
               and core_type(o) not in _RESPONSE_TYPES]
    # pairing from the intracellular_recordings table (NWB >= 2.4)
    pairs: dict[str, tuple[_Series, int, int]] = {}
    ir = getattr(nwb, "intracellular_recordings", None)
    if ir is not None and len(ir) > 0:
        by_obj = {id(s.obj): s for s in stimuli}
        for i in range(len(ir)):
            resp = ir["responses"]["response"][i]
            stim = ir["stimuli"]["stimulus"][i]
            if resp is None or stim is None or getattr(stim, "timeseries", None) is None:
                continue
            if int(stim.idx_start) < 0:
                continue
            s = by_obj.get(id(stim.timeseries))
            if s is not None:
                pairs[resp.timeseries.name] = (s, int(stim.idx_start), int(stim.count))
    subject = {}
    if nwb.subject is not None:
        for k in ("subject_id", "species", "strain", "sex", "age", "genotype", "description", "weight"):
            v = getattr(nwb.subject, k, None)
            if v is not None:
                subject[k] = str(v)
    meta = _meta_common(nwb.session_start_time, nwb.identifier, nwb.session_description, nwb.institution,
                        nwb.lab, nwb.experimenter, nwb.protocol, subject, sorted(nwb.icephys_electrodes))
    return responses + stimuli, meta, pairs


def _pair_rest(resp: _Series, stimuli: list[_Series]) -> tuple[_Series | None, str]:
    """Rules 2-4 of the module docstring → (stimulus or None, rule name)."""
    if resp.sweep_number is not None:
        cand = [s for s in stimuli if s.sweep_number == resp.sweep_number
                and (s.electrode is None or resp.electrode is None or s.electrode == resp.electrode)]
        if len(cand) == 1:
            return cand[0], "sweep_number"
    same = [s for s in stimuli if s.name == resp.name]
    if len(same) == 1:
        return same[0], "name"
    rt = resp.name.split("_")
    cand = []
    for s in stimuli:
        st = s.name.split("_")
        if len(st) == len(rt) and sum(a != b for a, b in zip(st, rt, strict=True)) == 1:
            cand.append(s)
    if len(cand) == 1:
        return cand[0], "name"
    n = len(resp.data)
    cand = [s for s in stimuli if s.rate == resp.rate and s.starting_time == resp.starting_time
            and len(s.data) == n]
    if len(cand) == 1:
        return cand[0], "timing"
    return None, ""


def _build(p: Path, version: str, namespaces: list[str], series: list[_Series], meta: dict[str, Any],
           pairs: dict[str, tuple[_Series, int, int]], flags: list[str]) -> Recording:
    responses = [s for s in series if s.neurodata_type in _RESPONSE_TYPES]
    stimuli = [s for s in series if s.neurodata_type not in _RESPONSE_TYPES]
    if not responses:
        raise CorruptData(f"no intracellular series in {p.name!r}: /acquisition holds no CurrentClampSeries, "
                          f"VoltageClampSeries or IZeroClampSeries", path=str(p))
    all_numbered = all(s.sweep_number is not None for s in responses)
    responses.sort(key=lambda s: ((s.sweep_number if all_numbered else 0), s.starting_time, _natural(s.name)))
    electrodes = meta.get("electrodes") or sorted({s.electrode for s in responses if s.electrode})
    counters: dict[int, int] = {}
    sweeps: list[Sweep] = []
    series_meta: list[dict[str, Any]] = []
    for r in responses:
        channel = electrodes.index(r.electrode) if r.electrode in electrodes else 0
        number = counters.get(channel, 0)
        counters[channel] = number + 1
        sflags: list[str] = []
        mode = _RESPONSE_TYPES[r.neurodata_type]
        kind, _ = _scale(r.unit)
        if kind != _EXPECTED_KIND[mode]:
            sflags.append(f"clamp_mode_ambiguous: {r.neurodata_type} with unit {r.unit!r}")
            mode = UNKNOWN
        response = _values(r)
        if r.rate is not None:
            rate, start = r.rate, r.starting_time
        else:
            ts = np.asarray(r.timestamps[:], dtype=np.float64)
            dts = np.diff(ts)
            if ts.size < 2 or not np.all(dts > 0):
                raise CorruptData(f"series {r.name!r} has neither a rate nor increasing timestamps", series=r.name)
            rate, start = 1.0 / float(np.median(dts)), float(ts[0])
            if float(dts.max() - dts.min()) > 1e-6 * float(np.median(dts)):
                sflags.append("irregular_timestamps")
        stim, rule, cmd, cmd_unit = None, "", None, None
        if r.neurodata_type == "IZeroClampSeries":
            cmd, cmd_unit = np.zeros_like(response), "pA"
            sflags.append("izero_clamp: command is 0 pA by definition")
        else:
            if r.name in pairs:
                stim, i0, cnt = pairs[r.name]
                rule = "intracellular_recordings"
                cmd = _values(stim, i0, cnt)
            else:
                stim, rule = _pair_rest(r, stimuli)
                cmd = _values(stim) if stim is not None else None
            if stim is None:
                sflags.append("no_stimulus_series")
            else:
                skind, _ = _scale(stim.unit)
                want = "current" if mode == CURRENT_CLAMP else "voltage" if mode == VOLTAGE_CLAMP else skind
                if skind is None or skind != want:
                    sflags.append(f"stimulus_unit_unexpected: {stim.name} in {stim.unit!r}")
                    cmd = None
                elif cmd.shape != response.shape:
                    sflags.append(f"stimulus_length_mismatch: {stim.name} has {cmd.shape[0]} samples, "
                                  f"response {response.shape[0]}")
                    cmd = None
                else:
                    cmd_unit = "pA" if skind == "current" else "mV"
        resp_unit = {"voltage": "mV", "current": "pA"}.get(kind, r.unit)
        sweeps.append(Sweep(number=number, channel=channel, clamp_mode=mode, sampling_rate_hz=float(rate),
                            response=response, response_unit=resp_unit, command=cmd, command_unit=cmd_unit,
                            start_s=float(start), label=r.description, flags=sflags))
        series_meta.append({"sweep": number, "channel": channel, "response": r.name,
                            "neurodata_type": r.neurodata_type, "nwb_sweep_number": r.sweep_number,
                            "electrode": r.electrode, "conversion": r.conversion, "offset": r.offset,
                            "unit": r.unit, "stimulus": stim.name if stim is not None else None,
                            "stimulus_conversion": stim.conversion if stim is not None else None,
                            "stimulus_offset": stim.offset if stim is not None else None,
                            "stimulus_unit": stim.unit if stim is not None else None, "paired_by": rule or None})
    sweeps.sort(key=lambda s: (s.number, s.channel))
    subject_id = str(meta.get("subject", {}).get("subject_id", "") or "")
    cell = subject_id if subject_id.strip().lower() not in _MISSING else p.stem
    protocol = str(meta.get("protocol") or "")
    if not protocol:
        protocol = "; ".join(dict.fromkeys(s.label for s in sweeps if s.label))
    start = meta.get("session_start_time")
    recorded_at = None
    if start:
        recorded_at = parse_timestamp(start, "session_start_time")  # ISO 8601; naive = UTC
    meta = dict(meta, nwb_version=version, namespaces=namespaces, series=series_meta,
                sampling_rate_hz=sorted({s.sampling_rate_hz for s in sweeps}))
    return Recording(path=str(p), format="nwb", format_version=version, recorded_at=recorded_at,
                     protocol=protocol, cell=cell, sweeps=sweeps, metadata=_clean(meta), flags=flags)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return x


# ---------------------------------------------------------------------------------------------------------
# h5py fallback (pynwb refused the file)

def _attr(obj, name: str, default=None):
    v = obj.attrs.get(name, default)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _h5_series(group, name: str, types: set[str]) -> _Series | None:
    t = str(_attr(group, "neurodata_type", ""))
    kind = next((c for c in types if t == c or t.endswith(c)), None)
    if kind is None or "data" not in group:
        return None
    d = group["data"]
    rate, start, ts = None, 0.0, None
    if "starting_time" in group:
        rate = float(_attr(group["starting_time"], "rate"))
        start = float(group["starting_time"][()])
    elif "timestamps" in group:
        ts = group["timestamps"]
    sweep_number = int(group["sweep_number"][()]) if "sweep_number" in group else None
    electrode = None
    link = group.get("electrode", getlink=True)
    if link is not None and hasattr(link, "path"):     # SoftLink to /general/intracellular_ephys/<name>
        electrode = str(link.path).rsplit("/", 1)[-1]
    return _Series(name=name, neurodata_type=kind, data=d, conversion=float(_attr(d, "conversion", 1.0)),
                   offset=float(_attr(d, "offset", 0.0)), unit=str(_attr(d, "unit", "")), rate=rate,
                   starting_time=start, timestamps=ts, sweep_number=sweep_number, electrode=electrode,
                   description=str(_attr(group, "stimulus_description", "")))


def _read_h5py(p: Path, version: str, namespaces: list[str], flags: list[str]) -> Recording:
    """Read the icephys series of an NWB file with h5py only (fallback when pynwb refuses it)."""
    import h5py

    resp_types = set(_RESPONSE_TYPES)
    stim_types = {"CurrentClampStimulusSeries", "VoltageClampStimulusSeries"}
    try:
        with h5py.File(p, "r") as f:
            series: list[_Series] = []
            for name, g in (f["acquisition"].items() if "acquisition" in f else []):
                s = _h5_series(g, name, resp_types)
                if s is not None:
                    s.data = np.asarray(s.data[()])
                    if s.timestamps is not None:
                        s.timestamps = np.asarray(s.timestamps[()])
                    series.append(s)
            pres = f["stimulus/presentation"] if "stimulus/presentation" in f else {}
            for name, g in pres.items():
                s = _h5_series(g, name, stim_types)
                if s is not None:
                    s.data = np.asarray(s.data[()])
                    series.append(s)

            def text(key: str):
                if key not in f:
                    return None
                v = f[key][()]
                if isinstance(v, np.ndarray):
                    v = [x.decode() if isinstance(x, bytes) else str(x) for x in v.ravel()]
                    return v
                return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

            subject = {}
            if "general/subject" in f:
                for k, v in f["general/subject"].items():
                    if isinstance(v, h5py.Dataset):
                        val = v[()]
                        subject[k] = val.decode("utf-8", "replace") if isinstance(val, bytes) else str(val)
            start = text("session_start_time")
            session_start = parse_timestamp(start, "session_start_time") if isinstance(start, str) else None
            electrodes = sorted(f["general/intracellular_ephys"].keys() - {
                "intracellular_recordings", "simultaneous_recordings", "sequential_recordings", "repetitions",
                "experimental_conditions", "filtering", "sweep_table"}) if "general/intracellular_ephys" in f else []
            meta = _meta_common(session_start, text("identifier"), text("session_description"),
                                text("general/institution"), text("general/lab"),
                                text("general/experimenter"), text("general/protocol"), subject, electrodes)
            return _build(p, version, namespaces, series, meta, {}, flags)
    except (CorruptData, NotFound):
        raise
    except Exception as e:
        raise CorruptData(f"NWB file {p.name!r} cannot be read by pynwb nor as plain HDF5: "
                          f"{type(e).__name__}: {e}", path=str(p)) from e
