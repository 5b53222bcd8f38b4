"""Axon Binary Format (ABF1 and ABF2) patch-clamp files → :class:`~neurolake.ephys.model.Recording`.

Reads with `pyabf <https://github.com/swharden/pyABF>`_ (``pyabf.ABF``; the format is Axon's, documented in
the "Axon ABF File Support Pack" and re-implemented by pyabf). One :class:`~neurolake.ephys.model.Sweep` per
(sweep, ADC channel), in (sweep, channel) order.

Units: the response (``sweepY``) is converted from the ADC channel's unit to mV (a voltage unit) or pA (a
current unit); the command (``sweepC``, the waveform pyabf builds from the epoch table of the DAC with the
channel's index, as pyabf pairs them) from the DAC unit to pA or mV.

Clamp mode comes from the units and is never guessed: ADC voltage (mV, µV) + DAC current (pA, nA, fA, µA) is
current clamp; ADC current + DAC voltage (mV, µV) is voltage clamp. Anything else — a bare ``V``/``A`` unit
(an unscaled amplifier output, e.g. ``OUT 1 (V)``), both units of the same kind, an unknown unit, or a
channel without a DAC — gives ``clamp_mode="unknown"`` and the sweep flag
``"clamp_mode_ambiguous: ADC <unit>, DAC <unit>"``. This is where neuroconv's ABF interface falls back
silently (issue 18).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.ephys.model import CURRENT_CLAMP, UNKNOWN, VOLTAGE_CLAMP, Recording, Sweep
from neurolake.errors import CorruptData, NotFound

# unit → factor to mV (voltage) / pA (current). Bare "V" and "A" are left out on purpose: in ABF headers
# they mark unscaled analog channels (no amplifier telegraph), which do not identify a clamp mode.
VOLTAGE_TO_MV = {"mV": 1.0, "uV": 1e-3, "µV": 1e-3, "μV": 1e-3}
CURRENT_TO_PA = {"pA": 1.0, "nA": 1e3, "fA": 1e-3, "uA": 1e6, "µA": 1e6, "μA": 1e6}

_MAGIC = {b"ABF ": "abf1", b"ABF2": "abf2"}
_OPERATION_MODES = {1: "event_driven_variable_length", 2: "oscilloscope_loss_free", 3: "gap_free",
                    4: "oscilloscope_high_speed", 5: "episodic_stimulation"}


def unit_kind(unit: str | None) -> tuple[str | None, float]:
    """(``"voltage"`` | ``"current"`` | None, factor to mV / pA) of an ABF channel unit (stripped)."""
    u = (unit or "").strip()
    if u in VOLTAGE_TO_MV:
        return "voltage", VOLTAGE_TO_MV[u]
    if u in CURRENT_TO_PA:
        return "current", CURRENT_TO_PA[u]
    return None, 1.0


def clamp_mode_from_units(adc_unit: str | None, dac_unit: str | None) -> tuple[str, str | None]:
    """Clamp mode from an ADC and its DAC unit → (mode, flag or None).

    ADC voltage + DAC current → current clamp; ADC current + DAC voltage → voltage clamp; otherwise
    ``("unknown", "clamp_mode_ambiguous: ADC <adc>, DAC <dac>")`` (``no DAC`` when ``dac_unit`` is None).
    """
    adc_kind, _ = unit_kind(adc_unit)
    dac_kind, _ = unit_kind(dac_unit)
    if adc_kind == "voltage" and dac_kind == "current":
        return CURRENT_CLAMP, None
    if adc_kind == "current" and dac_kind == "voltage":
        return VOLTAGE_CLAMP, None
    dac_txt = "no DAC" if dac_unit is None else f"DAC {dac_unit.strip() or '?'}"
    return UNKNOWN, f"clamp_mode_ambiguous: ADC {(adc_unit or '').strip() or '?'}, {dac_txt}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def read(path: str | os.PathLike) -> Recording:
    """Read one ABF1/ABF2 file.

    Returns a :class:`Recording` with ``format`` ``"abf1"``/``"abf2"``, ``format_version`` the header's
    version string (e.g. ``"2.6.0.0"``), ``recorded_at`` the header's date and time (naive, local time of the
    acquisition computer), ``protocol`` the protocol file's stem, ``cell`` the file stem, and one sweep per
    (sweep, ADC channel) in (sweep, channel) order. Each sweep's ``response`` and ``command`` are (sample,)
    float64: pyabf's ``sweepY`` (float32) and ``sweepC`` times the unit factor (1 for mV/pA). ``start_s`` is
    the sweep start from the file start (pyabf's ``absoluteTime`` sweep time).

    ``metadata`` (JSON-able): ``sampling_rate_hz``, ``acquisition_mode``, ``sweep_interval_s``,
    ``sweep_length_s``, ``channels`` (per ADC: index, adc_name, adc_unit, dac_name, dac_unit, clamp_mode),
    ``adc_units``, ``dac_units``, ``dac_names``, ``holding_command`` (per DAC, DAC unit), ``tags``
    (comment, time_s, sweep), ``file_comment``, ``protocol_path``, ``abf_id``.

    Raises :class:`~neurolake.errors.NotFound` (no such file) and :class:`~neurolake.errors.CorruptData` (not an
    ABF file, truncated data section, or a header pyabf cannot decode).
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"ABF file not found: {str(p)!r}", path=str(p))
    size = p.stat().st_size
    with open(p, "rb") as fh:
        magic = fh.read(4)
    fmt = _MAGIC.get(magic)
    if fmt is None:
        raise CorruptData(f"not an ABF file: {p.name!r} starts with {magic!r}, expected b'ABF ' (ABF1) or "
                          f"b'ABF2' (ABF2)", path=str(p), field="signature", value=repr(magic))

    import pyabf

    if fmt == "abf2":
        _check_abf2_sections(p, size)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        try:
            abf = pyabf.ABF(str(p), loadData=False)
        except Exception as e:  # pyabf raises struct/Unicode/Value/Index errors on damaged headers
            raise CorruptData(f"ABF header of {p.name!r} cannot be decoded: {type(e).__name__}: {e}",
                              path=str(p)) from e
        itemsize = 2 if abf._nDataFormat == 0 else 4
        need = int(abf.dataByteStart) + int(abf.dataPointCount) * itemsize
        if abf.dataPointCount <= 0 or need > size:
            raise CorruptData(
                f"truncated ABF file {p.name!r}: the header announces {abf.dataPointCount} samples "
                f"({need} bytes up to the end of the data section) but the file has {size} bytes",
                path=str(p), expected_bytes=need, actual_bytes=size)
        try:
            sweeps, rec_flags, channels = _sweeps(abf)
        except CorruptData:
            raise
        except Exception as e:
            raise CorruptData(f"ABF data of {p.name!r} cannot be decoded: {type(e).__name__}: {e}",
                              path=str(p)) from e
        caught = [str(w.message).splitlines()[0] for w in wlist]
    for msg in caught:
        rec_flags.append("pyabf_warning: " + msg[:200])

    major = abf.abfVersion["major"]
    op_mode = int(abf._headerV1.nOperationMode if major == 1 else abf._protocolSection.nOperationMode)
    recorded_at = getattr(abf, "abfDateTime", None)
    if not hasattr(recorded_at, "isoformat"):
        recorded_at = None
        rec_flags.append("recorded_at_invalid")
    protocol = "" if abf.protocol in (None, "None") else str(abf.protocol)
    metadata: dict[str, Any] = {
        "abf_id": abf.abfID,
        "sampling_rate_hz": float(abf.dataRate),
        "acquisition_mode": _OPERATION_MODES.get(op_mode, f"unknown({op_mode})"),
        "sweep_interval_s": _jsonable(abf.sweepIntervalSec),
        "sweep_length_s": _jsonable(abf.sweepLengthSec),
        "channels": channels,
        "adc_names": list(abf.adcNames),
        "adc_units": list(abf.adcUnits),
        "dac_names": list(abf.dacNames),
        "dac_units": list(abf.dacUnits),
        "holding_command": _jsonable(list(abf.holdingCommand[: len(abf.dacUnits)])),
        "tags": [{"comment": str(c), "time_s": _jsonable(t), "sweep": _jsonable(s)}
                 for c, t, s in zip(abf.tagComments, abf.tagTimesSec, abf.tagSweeps, strict=False)],
        "file_comment": str(getattr(abf, "abfFileComment", "") or ""),
        "protocol_path": "" if abf.protocolPath in (None, "None") else str(abf.protocolPath),
    }
    return Recording(path=str(p), format=fmt, format_version=str(abf.abfVersionString),
                     recorded_at=recorded_at, protocol=protocol, cell=p.stem, sweeps=sweeps,
                     metadata=metadata, flags=rec_flags)


def _check_abf2_sections(p: Path, size: int) -> None:
    """Raise CorruptData when an ABF2 section (its map: 18 entries of 16 bytes from byte 76, read with
    pyabf's ``abf2.section.Section``; blocks of 512 bytes) ends beyond the end of the file."""
    from pyabf.abf2.section import Section

    names = ("protocol", "adc", "dac", "epoch", "adc_per_dac", "epoch_per_dac", "user_list", "stats_region",
             "math", "strings", "data", "tag", "scope", "delta", "voice_tag", "synch_array", "annotation",
             "stats")
    if size < 76 + 16 * len(names):
        raise CorruptData(f"truncated ABF file {p.name!r}: {size} bytes, shorter than the ABF2 header "
                          f"({76 + 16 * len(names)} bytes)", path=str(p), actual_bytes=size)
    with open(p, "rb") as fb:
        for i, name in enumerate(names):
            sec = Section(fb, 76 + 16 * i)
            if sec._blockStart == 0 or sec._entryCount <= 0:
                continue
            end = sec._byteStart + sec._entrySize * sec._entryCount
            if end > size:
                raise CorruptData(
                    f"truncated ABF file {p.name!r}: the header's {name} section ends at byte {end} but the "
                    f"file has {size} bytes", path=str(p), section=name, expected_bytes=end, actual_bytes=size)


def _sweeps(abf) -> tuple[list[Sweep], list[str], list[dict[str, Any]]]:
    rate = float(abf.dataRate)
    rec_flags: list[str] = []
    channels: list[dict[str, Any]] = []
    per_channel = []
    for c in abf.channelList:
        adc_unit = abf.adcUnits[c]
        has_dac = c < len(abf.dacUnits)
        dac_unit = abf.dacUnits[c] if has_dac else None
        mode, flag = clamp_mode_from_units(adc_unit, dac_unit)
        r_kind, r_factor = unit_kind(adc_unit)
        c_kind, c_factor = unit_kind(dac_unit)
        r_unit = {"voltage": "mV", "current": "pA"}.get(r_kind, (adc_unit or "?").strip())
        c_unit = {"voltage": "mV", "current": "pA"}.get(c_kind, (dac_unit or "").strip() or None)
        per_channel.append((has_dac, mode, flag, r_factor, r_unit, c_factor, c_unit))
        channels.append({"index": int(c), "adc_name": abf.adcNames[c], "adc_unit": adc_unit,
                         "dac_name": abf.dacNames[c] if has_dac else None, "dac_unit": dac_unit,
                         "clamp_mode": mode})
    protocol = "" if abf.protocol in (None, "None") else str(abf.protocol)
    with open(abf.abfFilePath, "rb") as fb:
        abf._loadAndScaleData(fb)
    # pyabf's setSweep/sweepC rebuild the DAC epoch table of every sweep on each call (quadratic in the
    # sweep count). For fixed-length sweeps take pyabf's own arrays directly: ``abf.data`` rows sliced as
    # setSweep does, and the epoch table's waveforms built once per channel, as Stimulus.stimulusWaveform
    # does for epoch-table (nWaveformSource 1) waveforms. Anything else goes through setSweep/sweepC.
    synch = getattr(abf, "_synchArraySection", None)
    fixed = not (abf.sweepCount > 1 and synch is not None and len(set(synch.lLength)) > 1)
    major = abf.abfVersion["major"]
    tables: dict[int, Any] = {}
    if fixed:
        import pyabf.waveform

        for c in abf.channelList:
            if not per_channel[c][0] or c >= len(abf.holdingCommand):
                continue
            hdr = abf._headerV1 if major == 1 else abf._dacSection
            if hdr.nWaveformEnable[c] != 0 and hdr.nWaveformSource[c] == 1:
                tables[c] = pyabf.waveform.EpochTable(abf, c)
    n = abf.sweepPointCount
    out: list[Sweep] = []
    for s in abf.sweepList:
        for c in abf.channelList:
            has_dac, mode, flag, r_factor, r_unit, c_factor, c_unit = per_channel[c]
            if fixed:
                y = np.asarray(abf.data[c, n * s: n * s + n], dtype=np.float64)
                start_s = s * float(abf.sweepIntervalSec)
            else:
                abf.setSweep(s, c, absoluteTime=True)
                y = np.asarray(abf.sweepY, dtype=np.float64)
                start_s = float(abf.sweepX[0])
            if r_factor != 1.0:
                y = y * r_factor
            flags = [flag] if flag else []
            cmd = None
            if has_dac:
                try:
                    if c in tables:
                        cmd = np.asarray(tables[c].epochWaveformsBySweep[s].getWaveform(), dtype=np.float64)[:n]
                    elif fixed:     # what pyabf's sweepC returns, without setSweep's epoch-table rebuild
                        cmd = np.asarray(abf.stimulusByChannel[c].stimulusWaveform(s), dtype=np.float64)[:n]
                    else:
                        cmd = np.asarray(abf.sweepC, dtype=np.float64)
                except Exception as e:  # e.g. a stimulus file pyabf cannot locate or parse
                    cmd = np.full(0, np.nan)
                    abf.stimulusByChannel[c].text = f"pyabf: {type(e).__name__}: {e}"
                if cmd.shape != y.shape or not np.all(np.isfinite(cmd)):
                    flags.append("command_unavailable: " + (str(abf.stimulusByChannel[c].text)
                                                            or "pyabf gave no finite waveform"))
                    cmd = None
                elif c_factor != 1.0:
                    cmd = cmd * c_factor
            out.append(Sweep(number=int(s), channel=int(c), clamp_mode=mode, sampling_rate_hz=rate,
                             response=y, response_unit=r_unit, command=cmd,
                             command_unit=c_unit if cmd is not None else None,
                             start_s=start_s, label=protocol, flags=flags))
    return out, rec_flags, channels
