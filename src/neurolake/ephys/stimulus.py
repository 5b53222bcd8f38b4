"""What a sweep's command waveform is: :func:`classify` → :class:`~neurolake.ephys.model.Stimulus`.

Works on the command alone (``Sweep.command``, (sample,) float64, pA in current clamp / mV in voltage
clamp), so it gives the same answer for ABF and NWB files, whatever the protocol is called.

Rules, in order (the ``rule`` string of the result says which fired, with the measured numbers):

1. no command waveform → ``unknown`` ("no command waveform"); non-finite samples → ``unknown``.
2. holding = the command's first sample (ABF: the pre-epoch holding period pyabf puts first; NWB: the first
   stored sample). All samples within :data:`FLAT_TOL` of it → ``hold``.
3. pulses = maximal runs of samples away from holding (by more than 1e-6 of the largest excursion).
   A first pulse that is a square of ≤ :data:`TEST_PULSE_MAX_MS` starting within
   :data:`TEST_PULSE_MAX_START_S` of the sweep start and followed by another pulse is a test pulse (the
   Allen Institute convention; IPFX ``epochs.get_test_epoch`` / ``TEST_PULSE_MAX_TIME``) and is skipped.
   The stimulus is the first remaining pulse; further pulses are named in the rule, not classified
   (e.g. the "dual" step protocols whose second half repeats the step after a −50 pA pre-pulse).
4. that pulse constant → a step: ``long_square`` (≥ 500 ms), ``short_square`` (< 10 ms), ``square``
   otherwise (Allen Cell Types naming). Amplitude = step level − holding.
5. that pulse linear from holding to its extreme (least-squares residual ≤ 1 % of the excursion), optionally
   followed by a plateau at the extreme → ``ramp``; amplitude = the extreme − holding.
6. anything else → ``noise``.

Tolerances are for generated waveforms (pyabf's epoch tables, NWB stimulus series); a measured (noisy)
command signal would be classified ``noise``.
"""

from __future__ import annotations

import numpy as np

from neurolake.ephys.model import (
    HOLD,
    LONG_SQUARE,
    NOISE,
    RAMP,
    SHORT_SQUARE,
    SQUARE,
    UNKNOWN,
    Stimulus,
    Sweep,
)

FLAT_TOL = 1e-3              # command unit (pA / mV): peak-to-peak below this is "flat"
LONG_SQUARE_MIN_MS = 500.0
SHORT_SQUARE_MAX_MS = 10.0
TEST_PULSE_MAX_MS = 20.0
TEST_PULSE_MAX_START_S = 0.4
RAMP_MAX_RESIDUAL = 0.01     # fraction of the ramp's excursion


def pulses(command: np.ndarray, holding: float | None = None) -> list[tuple[int, int]]:
    """Sample spans ``[start, stop)`` where ``command`` ((sample,) float64) leaves ``holding`` (default: its
    first sample) by more than 1e-6 of its largest excursion (at least 1e-9). Empty list when flat."""
    c = np.asarray(command, dtype=np.float64)
    if c.size == 0:
        return []
    h = float(c[0]) if holding is None else float(holding)
    dev = np.abs(c - h)
    scale = float(dev.max())
    if scale <= FLAT_TOL:
        return []
    active = dev > max(1e-6 * scale, 1e-9)
    edges = np.flatnonzero(np.diff(active.astype(np.int8))) + 1
    bounds = np.r_[0, edges, c.size]
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(len(bounds) - 1) if active[bounds[i]]]


def _fmt(x: float) -> str:
    return f"{x:+.6g}"


def classify(sweep: Sweep) -> Stimulus:
    """Classify ``sweep``'s command waveform (rules in the module docstring).

    Returns a :class:`Stimulus`: amplitude and holding in the command's unit (``sweep.command_unit``: pA or
    mV), ``start_s``/``end_s`` of the classified pulse from the sweep start (end = first sample back at
    holding, or the sweep end). Never raises for a well-formed :class:`Sweep`.
    """
    c = sweep.command
    if c is None:
        return Stimulus(UNKNOWN, None, None, None, None, "no command waveform")
    c = np.asarray(c, dtype=np.float64)
    if c.size == 0 or not np.all(np.isfinite(c)):
        return Stimulus(UNKNOWN, None, None, None, None, "command waveform is empty or has non-finite samples")
    unit = sweep.command_unit or ""
    rate = float(sweep.sampling_rate_hz)
    holding = float(c[0])
    ptp = float(c.max() - c.min())
    spans = pulses(c, holding)
    if not spans:
        return Stimulus(HOLD, 0.0, holding, None, None,
                        f"command flat at {holding:.6g} {unit} (peak-to-peak {ptp:.3g} ≤ {FLAT_TOL:g} {unit})")
    notes: list[str] = []
    if len(spans) > 1:
        i0, i1 = spans[0]
        seg = c[i0:i1]
        dur_ms = (i1 - i0) / rate * 1e3
        if float(seg.max() - seg.min()) <= FLAT_TOL and dur_ms <= TEST_PULSE_MAX_MS and i0 / rate <= TEST_PULSE_MAX_START_S:
            notes.append(f"test pulse of {dur_ms:.1f} ms at {i0 / rate:.6g} s skipped")
            spans = spans[1:]
    if len(spans) > 1:
        later = ", ".join(f"{a / rate:.6g}–{b / rate:.6g} s" for a, b in spans[1:4])
        more = "" if len(spans) <= 4 else f" and {len(spans) - 4} more"
        notes.append(f"first of {len(spans)} pulses; later pulses at {later}{more} not classified")
    i0, i1 = spans[0]
    start_s, end_s = i0 / rate, i1 / rate
    if i1 == c.size:
        notes.append("no return to holding before the sweep ends")
    seg = c[i0:i1]
    dur_ms = (i1 - i0) / rate * 1e3
    suffix = ("; " + "; ".join(notes)) if notes else ""
    where = f"{start_s:.6g}–{end_s:.6g} s"
    if float(seg.max() - seg.min()) <= FLAT_TOL:
        amp = float(seg[0]) - holding
        if dur_ms >= LONG_SQUARE_MIN_MS - 1e-9:
            cls, cmp_ = LONG_SQUARE, f"≥ {LONG_SQUARE_MIN_MS:g} ms"
        elif dur_ms < SHORT_SQUARE_MAX_MS:
            cls, cmp_ = SHORT_SQUARE, f"< {SHORT_SQUARE_MAX_MS:g} ms"
        else:
            cls, cmp_ = SQUARE, f"between {SHORT_SQUARE_MAX_MS:g} and {LONG_SQUARE_MIN_MS:g} ms"
        rule = (f"one step of {dur_ms:.1f} ms {cmp_}, {_fmt(amp)} {unit} from holding {holding:.6g} {unit} "
                f"at {where}{suffix}")
        return Stimulus(cls, amp, holding, start_s, end_s, rule)
    ramp = _ramp(seg, holding, rate)
    if ramp is not None:
        amp, ramp_ms, plateau_ms, resid = ramp
        plateau = f", then {plateau_ms:.1f} ms plateau" if plateau_ms > 0 else ""
        rule = (f"linear ramp of {ramp_ms:.1f} ms to {_fmt(amp)} {unit} from holding {holding:.6g} {unit} "
                f"({_fmt(amp / ramp_ms * 1e3)} {unit}/s, max residual {resid:.2g} {unit}){plateau} at {where}{suffix}")
        return Stimulus(RAMP, amp, holding, start_s, end_s, rule)
    n_levels = int(np.count_nonzero(np.abs(np.diff(seg)) > FLAT_TOL)) + 1
    rule = (f"pulse of {dur_ms:.1f} ms at {where} is neither one step nor one linear ramp "
            f"({n_levels} level changes, range {float(seg.min()) - holding:+.4g}…{float(seg.max()) - holding:+.4g} "
            f"{unit} from holding){suffix}")
    return Stimulus(NOISE, None, holding, start_s, end_s, rule)


def _ramp(seg: np.ndarray, holding: float, rate: float) -> tuple[float, float, float, float] | None:
    """(amplitude, ramp ms, plateau ms, max residual) when ``seg`` is a linear ramp away from holding,
    optionally ending in a plateau at its extreme; else None."""
    dev = seg - holding
    k = int(np.argmax(np.abs(dev)))
    extreme = float(dev[k])
    k_first = int(np.flatnonzero(np.abs(dev - extreme) <= FLAT_TOL)[0])   # first sample at the extreme
    ramp = dev[: k_first + 1]
    if ramp.size < 4 or np.any(np.abs(dev[k_first:] - extreme) > FLAT_TOL):
        return None
    steps = np.diff(ramp)
    if not (np.all(steps * np.sign(extreme) >= -FLAT_TOL)):
        return None
    x = np.arange(ramp.size, dtype=np.float64)
    slope, icpt = np.polyfit(x, ramp, 1)
    resid = float(np.max(np.abs(ramp - (slope * x + icpt))))
    if resid > RAMP_MAX_RESIDUAL * abs(extreme):
        return None
    ramp_ms = ramp.size / rate * 1e3
    plateau_ms = (seg.size - ramp.size) / rate * 1e3
    if plateau_ms > ramp_ms:        # a slow-rising step, not a ramp
        return None
    return extreme, ramp_ms, plateau_ms, resid
