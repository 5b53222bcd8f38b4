"""Patch-clamp features with eFEL: spikes, sweep features and cell features, every value with a status.

:func:`analyze` runs eFEL (BlueBrain/OBI eFEL, ``efel.get_feature_values``) once per current-clamp sweep on the
stimulus window the reader/classifier found, and turns its output into the row dicts of the ``spikes``,
``sweep_features`` and ``cell_features`` tables (docs/ephys.md, /tmp/nl/EPHYS.md). :func:`efel_direct` runs
the same eFEL call on the same sweeps without any bookkeeping (the benchmark's baseline).

Units (DESIGN.md): mV, pA, ms for durations, s for times from the sweep start, Hz, MOhm. eFEL itself works in
ms and mV; its rates are mV/ms (= V/s) and its input resistance is mV/nA = MOhm.

Statuses (issue 18): ``ok``; ``not_applicable`` (the feature is not defined for this sweep: voltage clamp, no
spikes for an AP feature, a depolarising step for input resistance …); ``failed:<reason>`` (eFEL returned
None or raised although the feature applies; the reason is eFEL's error message); ``qc_excluded``
(:class:`~neurolake.ephys.model.SweepQC` ``passed`` is False: a current-clamp sweep is still measured — its
spikes are kept and each value that would be ``ok`` is stored with status ``qc_excluded`` — but the sweep never
reaches a cell feature; other statuses stay as they are).

Spike detection window: eFEL's ``strict_stiminterval=True`` (our default) restricts spikes to
``[stim_start, stim_end]``; without it eFEL counts spikes anywhere in the trace (eFEL issue #166). The window
is the stimulus step/ramp (``Stimulus.start_s``/``end_s``); for ``short_square`` it is extended by
``short_square_post_ms`` after the step (the spike follows a 3 ms pulse); for ``hold`` (gap-free) and stimuli
without a window it is the whole sweep (then only spike count and spike shape apply: no baseline, latency or
rate). With the strict window eFEL gets the sweep only up to stim_end + ``trace_margin_ms`` (see
:func:`_trace`: eFEL 5.7 otherwise measures the last spike's half width on a later spike). eFEL interpolates
to ``interp_step``; by default that is the sweep's own sampling interval, so nothing is resampled.

Sweep features (one row per sweep, channel and feature; eFEL feature in brackets, eFEL docs
"eFeature descriptions", docs/source/eFeatures.rst):

- ``spike_count`` [spike_count, peaks inside the window]
- ``mean_frequency_hz`` [mean_frequency = 1000·n / (t_last_peak − stim_start)]
- ``first_spike_latency_ms`` [time_to_first_spike = t_first_peak − stim_start]
- ``adaptation_index`` [adaptation_index2: mean of (ISI[i+1] − ISI[i]) / (ISI[i+1] + ISI[i]) from the 2nd ISI;
  needs ≥ 4 spikes]
- ``isi_cv`` [ISI_CV: std(ISI, ddof=1) / mean(ISI), first ISI ignored (eFEL ``ignore_first_ISI``); ≥ 4 spikes]
- ``v_rest_mv`` [voltage_base: mean V over [0.9·stim_start, stim_start]]
- ``ap_threshold_mv``, ``ap_amplitude_mv``, ``ap_width_ms``, ``ahp_depth_mv``: means over the sweep's spikes of
  [AP_begin_voltage] (onset where dV/dt > DerivativeThreshold), [AP_amplitude = V_peak − V_AP_begin],
  [AP_duration_half_width], [AHP_depth = min_AHP_values − voltage_base]
- ``steady_state_voltage_mv`` [steady_state_voltage_stimend: mean V over the last 10 % of the step]
- ``voltage_deflection_mv`` [voltage_deflection_vb_ssse = steady_state_voltage_stimend − voltage_base]
- on hyperpolarising (amplitude < 0 pA), spikeless long/square steps only: ``input_resistance_mohm``
  [ohmic_input_resistance_vb_ssse = voltage_deflection_vb_ssse / I (nA)], ``tau_ms`` [time_constant:
  exponential fit to the voltage decay after stim_start], ``sag_ratio`` [sag_ratio1 = (V_ss − V_min) /
  (V_base − V_min)].

Cell features (per channel; conventions of the Allen Cell Types Database electrophysiology technical white
paper as implemented in its code,
IPFX ``LongSquareAnalysis`` / ``ShortSquareAnalysis`` / ``RampAnalysis``), from QC-passed current-clamp sweeps
only:

- ``rheobase_pa``: the smallest long_square amplitude > 0 pA whose sweep has ≥ 1 spike.
- ``fi_slope_hz_per_pa``: least-squares slope of the average rate (spike_count / step duration, Allen's
  ``avg_rate``) vs amplitude over the spiking long squares; needs ≥ 2 distinct amplitudes, else
  ``failed:fewer than two suprathreshold sweeps`` — the other features stay (IPFX drops the cell, ipfx#394).
- ``max_firing_rate_hz``: the largest average rate over the long squares.
- ``first_spike_latency_ms``, ``ap_threshold_mv``, ``ap_width_ms``, ``ap_amplitude_mv``: the rheobase sweep's
  latency and its first spike (Allen convention).
- ``adaptation_index``: from the "hero" sweep (IPFX: first spiking long square with amplitude in
  (rheobase + 39, rheobase + 61) pA, else the one closest to rheobase + 39 pA).
- ``input_resistance_mohm``: slope of voltage_deflection_vb_ssse (mV) vs amplitude (pA) over spikeless
  hyperpolarising long squares, × 1000 (mV/pA → MOhm); ≥ 2 distinct amplitudes. (IPFX fits the peak
  deflection; we fit the steady-state deflection, as issue 18 specifies — a known difference.)
- ``tau_ms``: mean of the sweeps' tau over the same sweeps (IPFX: mean over subthreshold hyperpolarising sweeps).
- ``sag_ratio``: of the hyperpolarising sweep whose minimum voltage is closest to ``sag_target_mv``
  (IPFX SAG_TARGET = −100 mV).
- ``v_rest_mv``: mean voltage_base over the long squares (IPFX ``v_baseline``); without long squares, over
  every current-clamp sweep with a baseline (``stimulus_class`` says which classes).
- ``threshold_i_short_square_pa``: smallest short_square amplitude with a spike.
- ``threshold_i_ramp_pa``: injected current (command − holding) at the first spike's onset, mean over the
  spiking ramps (IPFX ``threshold_i_ramp``).

A cell feature whose stimulus class has no sweep is ``not_applicable`` with ``stimulus_class`` naming the
class and ``n_sweeps`` 0; when the class's sweeps all failed QC it is ``qc_excluded``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurolake.ephys.model import (
    CURRENT_CLAMP,
    HOLD,
    LONG_SQUARE,
    NOT_APPLICABLE,
    OK,
    QC_EXCLUDED,
    RAMP,
    SHORT_SQUARE,
    SQUARE,
    Recording,
    Stimulus,
    Sweep,
    SweepQC,
    failed,
)
from neurolake.errors import InvalidArgument

LIBRARY = "efel"

#: eFEL settings we pass (``efel.set_setting``); any other eFEL setting may be given to :func:`analyze`.
#: ``interp_step`` None = the sweep's own sampling interval (no resampling), resolved per sweep.
EFEL_DEFAULTS: dict[str, Any] = {
    "Threshold": -20.0,            # mV, peak detection crossing (eFEL default)
    "DerivativeThreshold": 10.0,   # mV/ms, AP onset (eFEL default)
    "strict_stiminterval": True,   # spikes only inside [stim_start, stim_end] (eFEL issue #166)
    "interp_step": None,           # ms; None → 1000 / sampling_rate_hz
}
#: neurolake's own conventions (cell features, windows); recorded with the eFEL settings.
OWN_DEFAULTS: dict[str, Any] = {
    "short_square_post_ms": 20.0,  # window after a short square's end in which its spike is looked for
    "trace_margin_ms": 50.0,       # with strict_stiminterval, eFEL gets the sweep up to stim_end + this
    "hero_min_offset_pa": 39.0,    # IPFX LongSquareAnalysis.HERO_MIN_AMP_OFFSET
    "hero_max_offset_pa": 61.0,    # IPFX LongSquareAnalysis.HERO_MAX_AMP_OFFSET
    "sag_target_mv": -100.0,       # IPFX LongSquareAnalysis.SAG_TARGET
}

#: eFEL features requested per sweep (the same list :func:`efel_direct` uses).
EFEL_FEATURES: tuple[str, ...] = (
    # per spike
    "peak_time", "peak_voltage", "AP_begin_time", "AP_begin_voltage", "min_AHP_indices", "min_AHP_values",
    "AP_amplitude", "AP_duration_half_width", "AP_peak_upstroke", "AP_peak_downstroke", "AHP_depth",
    # per sweep
    "spike_count", "mean_frequency", "time_to_first_spike", "adaptation_index2", "ISI_CV", "voltage_base",
    "steady_state_voltage_stimend", "voltage_deflection_vb_ssse", "minimum_voltage",
    "ohmic_input_resistance_vb_ssse", "time_constant", "sag_ratio1",
)

#: sweep feature name → (eFEL feature, how to reduce its array, minimum spikes or None if not spike based)
SWEEP_FEATURES: dict[str, tuple[str, str, int | None]] = {
    "spike_count": ("spike_count", "first", None),
    "mean_frequency_hz": ("mean_frequency", "first", 1),
    "first_spike_latency_ms": ("time_to_first_spike", "first", 1),
    "adaptation_index": ("adaptation_index2", "first", 4),
    "isi_cv": ("ISI_CV", "first", 4),
    "v_rest_mv": ("voltage_base", "first", None),
    "ap_threshold_mv": ("AP_begin_voltage", "mean", 1),
    "ap_amplitude_mv": ("AP_amplitude", "mean", 1),
    "ap_width_ms": ("AP_duration_half_width", "mean", 1),
    "ahp_depth_mv": ("AHP_depth", "mean", 1),
    "steady_state_voltage_mv": ("steady_state_voltage_stimend", "first", None),
    "voltage_deflection_mv": ("voltage_deflection_vb_ssse", "first", None),
    "input_resistance_mohm": ("ohmic_input_resistance_vb_ssse", "first", None),
    "tau_ms": ("time_constant", "first", None),
    "sag_ratio": ("sag_ratio1", "first", None),
}
_STEP_ONLY = {"steady_state_voltage_mv", "voltage_deflection_mv"}
_HYPERPOLARISING_ONLY = {"input_resistance_mohm", "tau_ms", "sag_ratio"}
_NEEDS_WINDOW_START = {"first_spike_latency_ms", "mean_frequency_hz", "v_rest_mv", "adaptation_index", "ahp_depth_mv"}

CELL_FEATURES: tuple[str, ...] = (
    "rheobase_pa", "fi_slope_hz_per_pa", "max_firing_rate_hz", "first_spike_latency_ms", "ap_threshold_mv",
    "ap_width_ms", "ap_amplitude_mv", "adaptation_index", "input_resistance_mohm", "tau_ms", "sag_ratio",
    "v_rest_mv", "threshold_i_short_square_pa", "threshold_i_ramp_pa",
)


@dataclass
class Analysis:
    """What :func:`analyze` returns: row dicts for the ``spikes``, ``sweep_features`` and ``cell_features``
    tables (columns in /tmp/nl/EPHYS.md and :mod:`neurolake.ephys.tables`, without file_sha256/cell, which the
    ETL adds), and ``library`` = {"name": "efel", "version": ..., "settings": {...}} (settings as passed,
    ``interp_step`` None meaning each sweep's sampling interval; each row's ``settings`` JSON has it resolved)."""

    spikes: list[dict[str, Any]] = field(default_factory=list)
    sweep_features: list[dict[str, Any]] = field(default_factory=list)
    cell_features: list[dict[str, Any]] = field(default_factory=list)
    library: dict[str, Any] = field(default_factory=dict)


@dataclass
class _SweepResult:
    sweep: Sweep
    stimulus: Stimulus
    status: str                           # OK (analysed) | QC_EXCLUDED | NOT_APPLICABLE (not current clamp)
    values: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    spikes: list[dict[str, Any]] = field(default_factory=list)
    window_ms: tuple[float, float] | None = None
    minimum_voltage: float | None = None


def efel_version() -> str:
    import efel

    return str(getattr(efel, "__version__", "unknown"))


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The settings :func:`analyze` uses: :data:`EFEL_DEFAULTS` and :data:`OWN_DEFAULTS` updated with
    ``settings``. Keys must be eFEL settings (``efel.Settings`` fields) or our own keys.

    Raises InvalidArgument for an unknown key or a value of the wrong type.
    """
    import efel

    merged = {**EFEL_DEFAULTS, **OWN_DEFAULTS}
    if not settings:
        return merged
    if not isinstance(settings, dict):
        raise InvalidArgument(f"settings must be a dict, got {type(settings).__name__}", field="settings")
    efel_fields = {f.name: f.type for f in dataclasses.fields(efel.Settings)}
    for key, value in settings.items():
        if key in OWN_DEFAULTS:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidArgument(f"setting {key!r} must be a finite number, got {value!r}", field=key,
                                      value=repr(value))
            if key != "sag_target_mv" and value < 0:
                raise InvalidArgument(f"setting {key!r} must be ≥ 0, got {value!r}", field=key, value=value)
        elif key in efel_fields:
            if key == "interp_step" and value is None:
                pass
            else:
                try:
                    efel.Settings().set_setting(key, value)
                except (ValueError, TypeError, FileNotFoundError) as exc:
                    raise InvalidArgument(f"eFEL setting {key!r}: {exc}", field=key, value=repr(value)) from None
        else:
            raise InvalidArgument(
                f"unknown feature setting {key!r}; allowed: eFEL settings "
                f"({', '.join(sorted(efel_fields))}) or {', '.join(sorted(OWN_DEFAULTS))}",
                field="settings", value=key)
        merged[key] = value
    return merged


@contextmanager
def _efel_settings(settings: dict[str, Any]) -> Iterator[None]:
    """Apply the eFEL part of ``settings`` to eFEL's global settings; restore the previous ones after."""
    import efel

    current = efel.get_settings()
    saved = dataclasses.asdict(current) if dataclasses.is_dataclass(current) else dict(vars(current))
    try:
        for key, value in settings.items():
            if key in OWN_DEFAULTS or (key == "interp_step" and value is None):
                continue
            efel.set_setting(key, value)
        yield
    finally:
        for key, value in saved.items():
            setattr(current, key, value)
        for key in set(vars(current)) - set(saved):
            delattr(current, key)


def _window_ms(sweep: Sweep, stimulus: Stimulus, settings: dict[str, Any]) -> tuple[float, float, bool]:
    """(stim_start_ms, stim_end_ms, has_stimulus): the eFEL window for this sweep (see module docstring)."""
    duration_ms = sweep.n_samples * 1000.0 / sweep.sampling_rate_hz
    if stimulus.stimulus_class == HOLD or stimulus.start_s is None or stimulus.end_s is None:
        return 0.0, duration_ms, False
    start = stimulus.start_s * 1000.0
    end = stimulus.end_s * 1000.0
    if stimulus.stimulus_class == SHORT_SQUARE:
        end += float(settings["short_square_post_ms"])
    end = min(end, duration_ms)
    if not end > start:
        return 0.0, duration_ms, False
    return start, end, True


def _trace(sweep: Sweep, stimulus: Stimulus, settings: dict[str, Any]) -> dict[str, Any]:
    """The eFEL trace dict: T (ms), V (mV), stim_start/stim_end (ms) and, for steps with a nonzero
    amplitude, stimulus_current (nA).

    With ``strict_stiminterval`` the trace ends ``trace_margin_ms`` after stim_end: eFEL 5.7 searches the last
    spike's AP end (hence AP_duration_half_width) from its peak to the end of the trace, so a later spike
    (e.g. a second step in the same sweep, 17o05028) gave widths > 1 s; none of our features needs samples after
    stim_end, and eFEL has less to interpolate."""
    start, end, _ = _window_ms(sweep, stimulus, settings)
    n = sweep.n_samples
    if settings.get("strict_stiminterval"):
        n = min(n, int(math.ceil((end + float(settings["trace_margin_ms"])) * sweep.sampling_rate_hz / 1000.0)) + 1)
    trace: dict[str, Any] = {
        "T": np.arange(n, dtype=np.float64) * (1000.0 / sweep.sampling_rate_hz),
        "V": np.asarray(sweep.response[:n], dtype=np.float64),
        "stim_start": [start],
        "stim_end": [end],
    }
    amp = stimulus.amplitude
    if stimulus.stimulus_class in (LONG_SQUARE, SQUARE) and amp is not None and amp != 0:
        trace["stimulus_current"] = [amp / 1000.0]   # pA → nA: mV / nA = MOhm
    return trace


def _interp_ms(sweep: Sweep, settings: dict[str, Any]) -> float:
    step = settings.get("interp_step")
    return float(step) if step is not None else 1000.0 / sweep.sampling_rate_hz


def efel_direct(sweeps: Sequence[Sweep], stimuli: Sequence[Stimulus],
                settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """eFEL called directly on the current-clamp sweeps: one ``efel.get_feature_values`` per sweep with
    :data:`EFEL_FEATURES`, the same traces and settings as :func:`analyze`, no status/row bookkeeping.

    Returns one eFEL result dict (feature → numpy array or None) per current-clamp sweep, in input order.
    The benchmark's baseline. Raises InvalidArgument when the lengths differ or a setting is bad.
    """
    import efel

    if len(sweeps) != len(stimuli):
        raise InvalidArgument(f"need one stimulus per sweep: {len(sweeps)} sweeps, {len(stimuli)} stimuli",
                              field="stimuli", value=[len(sweeps), len(stimuli)])
    resolved = resolve_settings(settings)
    out: list[dict[str, Any]] = []
    with _efel_settings(resolved), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sweep, stim in zip(sweeps, stimuli, strict=True):
            if sweep.clamp_mode != CURRENT_CLAMP:
                continue
            efel.set_setting("interp_step", _interp_ms(sweep, resolved))
            out.append(efel.get_feature_values([_trace(sweep, stim, resolved)], list(EFEL_FEATURES))[0])
    return out


def _run_efel(trace: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """eFEL on one trace: (values, reasons) — reasons[feature] is eFEL's error message when it gave None."""
    import efel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = efel.get_feature_values([trace], list(EFEL_FEATURES), raise_warnings=True)[0]
        except Exception as exc:   # eFEL raises plain Exception for bad windows etc.
            reason = f"efel raised {type(exc).__name__}: {exc}"
            return {f: None for f in EFEL_FEATURES}, {f: reason for f in EFEL_FEATURES}
    reasons: dict[str, str] = {}
    for w in caught:
        text = str(w.message)
        if text.startswith("Error while calculating "):
            name, _, msg = text[len("Error while calculating "):].partition(",")
            reasons[name.strip()] = msg.strip() or "efel returned no value"
    return values, reasons


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _spikes(sweep: Sweep, values: dict[str, Any], interp_ms: float) -> list[dict[str, Any]]:
    peak_t = values.get("peak_time")
    if peak_t is None or len(peak_t) == 0:
        return []
    n = len(peak_t)

    def per_spike(name: str) -> list[Any]:
        arr = values.get(name)
        arr = [] if arr is None else list(arr)
        return (arr + [None] * n)[:n]   # eFEL drops trailing entries (e.g. the last AHP at stim_end)

    peak_v = per_spike("peak_voltage")
    begin_t = per_spike("AP_begin_time")
    begin_v = per_spike("AP_begin_voltage")
    ahp_i = per_spike("min_AHP_indices")
    ahp_v = per_spike("min_AHP_values")
    width = per_spike("AP_duration_half_width")
    up = per_spike("AP_peak_upstroke")
    down = per_spike("AP_peak_downstroke")
    begin_ok = values.get("AP_begin_time") is not None and len(values["AP_begin_time"]) == n
    rows = []
    for i in range(n):
        bt = _f(begin_t[i]) if begin_ok else None
        rows.append({
            "sweep": sweep.number, "channel": sweep.channel, "spike": i,
            "threshold_time_s": None if bt is None else bt / 1000.0,
            "threshold_mv": _f(begin_v[i]) if begin_ok else None,
            "peak_time_s": float(peak_t[i]) / 1000.0,
            "peak_mv": _f(peak_v[i]),
            "trough_time_s": None if ahp_i[i] is None else float(ahp_i[i]) * interp_ms / 1000.0,
            "trough_mv": _f(ahp_v[i]),
            "width_ms": _f(width[i]),
            "upstroke_mv_per_ms": _f(up[i]),
            "downstroke_mv_per_ms": _f(down[i]),
        })
    return rows


def _sweep_values(sweep: Sweep, stim: Stimulus, values: dict[str, Any], reasons: dict[str, str],
                  has_window: bool) -> dict[str, tuple[float | None, str]]:
    sc = values.get("spike_count")
    n_spikes = int(sc[0]) if sc is not None and len(sc) else None
    step = stim.stimulus_class in (LONG_SQUARE, SQUARE) and has_window
    hyper = step and stim.amplitude is not None and stim.amplitude < 0 and n_spikes == 0
    out: dict[str, tuple[float | None, str]] = {}
    for name, (efel_name, how, min_spikes) in SWEEP_FEATURES.items():
        if ((name in _STEP_ONLY and not step) or (name in _HYPERPOLARISING_ONLY and not hyper)
                or (name in _NEEDS_WINDOW_START and not has_window)):
            out[name] = (None, NOT_APPLICABLE)
            continue
        if min_spikes is not None and n_spikes is not None and n_spikes < min_spikes:
            out[name] = (None, NOT_APPLICABLE)
            continue
        arr = values.get(efel_name)
        if arr is None or len(arr) == 0:
            out[name] = (None, failed(reasons.get(efel_name, "efel returned no value")))
            continue
        v = float(arr[0]) if how == "first" else float(np.mean(arr))
        if not math.isfinite(v):
            out[name] = (None, failed(f"efel {efel_name} is {v}"))
        else:
            out[name] = (v, OK)
    return out


def analyze(recording: Recording, stimuli: Sequence[Stimulus], qcs: Sequence[SweepQC],
            settings: dict[str, Any] | None = None) -> Analysis:
    """Spikes, sweep features and cell features of one recording (see the module docstring for every
    feature, its unit, formula and source).

    ``stimuli`` and ``qcs``: one per ``recording.sweeps`` entry, same order. ``settings``: eFEL settings
    (``efel.Settings`` field names, e.g. ``Threshold`` mV, ``DerivativeThreshold`` mV/ms,
    ``strict_stiminterval``, ``interp_step`` ms) and our own keys (:data:`OWN_DEFAULTS`); eFEL's global
    settings are restored afterwards.

    Returns an :class:`Analysis`. Raises InvalidArgument when ``stimuli``/``qcs`` do not match the sweeps or a
    setting is unknown or of the wrong type. eFEL keeps its settings in process-global state: do not call
    this from several threads at once (processes are fine).
    """
    sweeps = list(recording.sweeps)
    if len(stimuli) != len(sweeps) or len(qcs) != len(sweeps):
        raise InvalidArgument(
            f"need one stimulus and one QC per sweep: {len(sweeps)} sweeps, {len(stimuli)} stimuli, "
            f"{len(qcs)} qcs", field="stimuli/qcs", value=[len(sweeps), len(stimuli), len(qcs)])
    resolved = resolve_settings(settings)
    import efel

    version = efel_version()
    settings_json: dict[float, str] = {}

    def sjson(interp: float | None) -> str:
        key = -1.0 if interp is None else interp
        if key not in settings_json:
            s = dict(resolved)
            if interp is not None:
                s["interp_step"] = interp
            settings_json[key] = json.dumps(s, sort_keys=True)
        return settings_json[key]

    analysis = Analysis(library={"name": LIBRARY, "version": version, "settings": dict(resolved)})
    results: list[_SweepResult] = []
    with _efel_settings(resolved):
        for sweep, stim, qc in zip(sweeps, stimuli, qcs, strict=True):
            if not qc.passed and sweep.clamp_mode != CURRENT_CLAMP:
                res = _SweepResult(sweep, stim, QC_EXCLUDED,
                                   {n: (None, QC_EXCLUDED) for n in SWEEP_FEATURES})
                interp = None
            elif sweep.clamp_mode != CURRENT_CLAMP:
                res = _SweepResult(sweep, stim, NOT_APPLICABLE,
                                   {n: (None, NOT_APPLICABLE) for n in SWEEP_FEATURES})
                interp = None
            else:
                interp = _interp_ms(sweep, resolved)
                efel.set_setting("interp_step", interp)
                trace = _trace(sweep, stim, resolved)
                start, end, has_window = _window_ms(sweep, stim, resolved)
                values, reasons = _run_efel(trace)
                res = _SweepResult(sweep, stim, OK, _sweep_values(sweep, stim, values, reasons, has_window),
                                   _spikes(sweep, values, interp), (start, end) if has_window else None,
                                   _f(values["minimum_voltage"][0]) if values.get("minimum_voltage") is not None
                                   and len(values["minimum_voltage"]) else None)
                if not qc.passed:  # measured and kept (spikes too), but never used for cell features
                    res.status = QC_EXCLUDED
                    res.values = {n: (v, QC_EXCLUDED if st == OK else st) for n, (v, st) in res.values.items()}
                analysis.spikes.extend(res.spikes)
            results.append(res)
            s = sjson(interp)
            for name, (value, status) in res.values.items():
                analysis.sweep_features.append({
                    "sweep": sweep.number, "channel": sweep.channel, "feature": name, "value": value,
                    "status": status, "library": LIBRARY, "library_version": version, "settings": s})
    cell_settings = sjson(None)
    for channel in sorted({r.sweep.channel for r in results}):
        for row in _cell_features([r for r in results if r.sweep.channel == channel], resolved):
            row.update({"channel": channel, "library": LIBRARY, "library_version": version,
                        "settings": cell_settings})
            analysis.cell_features.append(row)
    return analysis


# ---------------------------------------------------------------------------------------------- cell features

def _row(feature: str, value: float | None, status: str, stimulus_class: str, n_sweeps: int) -> dict[str, Any]:
    value = None if value is None else float(value)
    if status == OK and (value is None or not math.isfinite(value)):
        value, status = None, failed("non-finite result")
    return {"feature": feature, "value": value if status == OK else None, "status": status,
            "stimulus_class": stimulus_class, "n_sweeps": n_sweeps}


def _val(r: _SweepResult, name: str) -> float | None:
    v, st = r.values.get(name, (None, NOT_APPLICABLE))
    return v if st == OK else None


def _rate_hz(r: _SweepResult) -> float | None:
    """Allen ``avg_rate``: spikes in the step / step duration (s)."""
    n = _val(r, "spike_count")
    if n is None or r.window_ms is None:
        return None
    return n / ((r.window_ms[1] - r.window_ms[0]) / 1000.0)


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def _cell_features(results: list[_SweepResult], s: dict[str, Any]) -> list[dict[str, Any]]:
    """Cell rows for one channel (see module docstring)."""
    cc = [r for r in results if r.sweep.clamp_mode == CURRENT_CLAMP]
    rows: list[dict[str, Any]] = []

    def absent(names: Sequence[str], cls: str) -> bool:
        """Rows for features whose stimulus class has no usable sweep; True if that was the case."""
        present = [r for r in cc if r.stimulus.stimulus_class == cls]
        if any(r.status == OK for r in present):
            return False
        status = QC_EXCLUDED if present else NOT_APPLICABLE
        rows.extend(_row(n, None, status, cls, 0) for n in names)
        return True

    # --- long squares
    ls_names = ("rheobase_pa", "fi_slope_hz_per_pa", "max_firing_rate_hz", "first_spike_latency_ms",
                "ap_threshold_mv", "ap_width_ms", "ap_amplitude_mv", "adaptation_index",
                "input_resistance_mohm", "tau_ms", "sag_ratio")
    if not absent(ls_names, LONG_SQUARE):
        ls = [r for r in cc if r.stimulus.stimulus_class == LONG_SQUARE and r.status == OK
              and r.stimulus.amplitude is not None]
        spiking = sorted((r for r in ls if (_val(r, "spike_count") or 0) >= 1 and r.stimulus.amplitude > 0),
                         key=lambda r: r.stimulus.amplitude)
        rates = [(r.stimulus.amplitude, _rate_hz(r)) for r in ls]
        rates = [(a, f) for a, f in rates if f is not None]
        if rates:
            rows.append(_row("max_firing_rate_hz", max(f for _, f in rates), OK, LONG_SQUARE, len(rates)))
        else:
            rows.append(_row("max_firing_rate_hz", None, failed("no long_square spike count"), LONG_SQUARE, 0))
        spike_rows = ("rheobase_pa", "first_spike_latency_ms", "ap_threshold_mv", "ap_width_ms", "ap_amplitude_mv",
                      "adaptation_index", "fi_slope_hz_per_pa")
        if not spiking:
            top = max((r.stimulus.amplitude for r in ls), default=None)
            reason = failed("no long_square sweep has a stimulus amplitude" if top is None else
                            f"no long_square sweep > 0 pA evoked a spike ({len(ls)} sweeps, up to {top:g} pA)")
            rows.extend(_row(n, None, reason, LONG_SQUARE, len(ls)) for n in spike_rows)
        else:
            rheo = spiking[0]
            rows.append(_row("rheobase_pa", rheo.stimulus.amplitude, OK, LONG_SQUARE, len(ls)))
            amps = [r.stimulus.amplitude for r in spiking]
            if len(set(amps)) >= 2:
                fr = [(r.stimulus.amplitude, _rate_hz(r)) for r in spiking]
                rows.append(_row("fi_slope_hz_per_pa", _slope([a for a, _ in fr], [f for _, f in fr]), OK,
                                 LONG_SQUARE, len(fr)))
            else:
                rows.append(_row("fi_slope_hz_per_pa", None, failed("fewer than two suprathreshold sweeps"),
                                 LONG_SQUARE, len(spiking)))
            lat = rheo.values["first_spike_latency_ms"]
            rows.append(_row("first_spike_latency_ms", lat[0], lat[1], LONG_SQUARE, 1))
            first = rheo.spikes[0] if rheo.spikes else {}
            for name, key in (("ap_threshold_mv", "threshold_mv"), ("ap_width_ms", "width_ms")):
                v = first.get(key)
                rows.append(_row(name, v, OK if v is not None else failed(f"efel gave no {key} for the first "
                                                                           "spike of the rheobase sweep"),
                                 LONG_SQUARE, 1))
            amp = (first["peak_mv"] - first["threshold_mv"]
                   if first.get("peak_mv") is not None and first.get("threshold_mv") is not None else None)
            rows.append(_row("ap_amplitude_mv", amp, OK if amp is not None else
                             failed("no threshold/peak for the first spike of the rheobase sweep"), LONG_SQUARE, 1))
            lo, hi = rheo.stimulus.amplitude + s["hero_min_offset_pa"], rheo.stimulus.amplitude + s["hero_max_offset_pa"]
            in_range = [r for r in spiking if lo < r.stimulus.amplitude < hi]
            hero = in_range[0] if in_range else min(spiking, key=lambda r: abs(r.stimulus.amplitude - lo))
            ad = hero.values["adaptation_index"]
            rows.append(_row("adaptation_index", ad[0], ad[1], LONG_SQUARE, 1))
        # subthreshold, hyperpolarising
        sub = [r for r in ls if r.stimulus.amplitude < 0 and _val(r, "spike_count") == 0]
        defl = [(r.stimulus.amplitude, _val(r, "voltage_deflection_mv")) for r in sub]
        defl = [(a, d) for a, d in defl if d is not None]
        if len({a for a, _ in defl}) >= 2:
            rows.append(_row("input_resistance_mohm", 1000.0 * _slope([a for a, _ in defl], [d for _, d in defl]),
                             OK, LONG_SQUARE, len(defl)))
        else:
            rows.append(_row("input_resistance_mohm", None,
                             failed("fewer than two subthreshold hyperpolarising long_square sweeps")
                             if sub or ls else NOT_APPLICABLE, LONG_SQUARE, len(defl)))
        taus = [t for t in (_val(r, "tau_ms") for r in sub) if t is not None]
        if taus:
            rows.append(_row("tau_ms", float(np.mean(taus)), OK, LONG_SQUARE, len(taus)))
        else:
            rows.append(_row("tau_ms", None, failed("no hyperpolarising long_square sweep with a tau fit"
                                                     if sub else "no subthreshold hyperpolarising long_square sweep"),
                             LONG_SQUARE, 0))
        sags = [(r, _val(r, "sag_ratio")) for r in sub]
        sags = [(r, v) for r, v in sags if v is not None and r.minimum_voltage is not None]
        if sags:
            r, v = min(sags, key=lambda rv: abs(rv[0].minimum_voltage - s["sag_target_mv"]))
            rows.append(_row("sag_ratio", v, OK, LONG_SQUARE, 1))
        else:
            rows.append(_row("sag_ratio", None, failed("no hyperpolarising long_square sweep with a sag ratio"
                                                        if sub else "no subthreshold hyperpolarising long_square sweep"),
                             LONG_SQUARE, 0))

    # --- resting potential: long squares, else any current-clamp sweep with a baseline
    ok_cc = [r for r in cc if r.status == OK]
    base = [r for r in ok_cc if r.stimulus.stimulus_class == LONG_SQUARE] or ok_cc
    vr = [(r.stimulus.stimulus_class, _val(r, "v_rest_mv")) for r in base]
    vr = [(c, v) for c, v in vr if v is not None]
    if vr:
        rows.append(_row("v_rest_mv", float(np.mean([v for _, v in vr])), OK,
                         ",".join(sorted({c for c, _ in vr})), len(vr)))
    elif not cc:
        rows.append(_row("v_rest_mv", None, NOT_APPLICABLE, CURRENT_CLAMP, 0))
    elif not ok_cc:
        rows.append(_row("v_rest_mv", None, QC_EXCLUDED, CURRENT_CLAMP, 0))
    else:
        classes = ",".join(sorted({r.stimulus.stimulus_class for r in base}))
        if all(r.values["v_rest_mv"][1] == NOT_APPLICABLE for r in base):   # gap-free / no stimulus window
            rows.append(_row("v_rest_mv", None, NOT_APPLICABLE, classes, 0))
        else:
            rows.append(_row("v_rest_mv", None, failed("no current-clamp sweep with a pre-stimulus baseline"),
                             classes, 0))

    # --- short squares
    if not absent(("threshold_i_short_square_pa",), SHORT_SQUARE):
        ss = [r for r in cc if r.stimulus.stimulus_class == SHORT_SQUARE and r.status == OK
              and r.stimulus.amplitude is not None]
        amps = [r.stimulus.amplitude for r in ss if (_val(r, "spike_count") or 0) >= 1]
        if amps:
            rows.append(_row("threshold_i_short_square_pa", min(amps), OK, SHORT_SQUARE, len(ss)))
        else:
            rows.append(_row("threshold_i_short_square_pa", None,
                             failed(f"no spiking short_square sweep ({len(ss)} sweeps)"), SHORT_SQUARE, len(ss)))

    # --- ramps
    if not absent(("threshold_i_ramp_pa",), RAMP):
        ramps = [r for r in cc if r.stimulus.stimulus_class == RAMP and r.status == OK]
        cur = []
        for r in ramps:
            if not r.spikes or r.spikes[0]["threshold_time_s"] is None or r.sweep.command is None:
                continue
            i = min(int(round(r.spikes[0]["threshold_time_s"] * r.sweep.sampling_rate_hz)), r.sweep.n_samples - 1)
            cur.append(float(r.sweep.command[i]) - float(r.stimulus.holding or 0.0))
        if cur:
            rows.append(_row("threshold_i_ramp_pa", float(np.mean(cur)), OK, RAMP, len(cur)))
        else:
            rows.append(_row("threshold_i_ramp_pa", None,
                             failed(f"no spiking ramp sweep with a command waveform ({len(ramps)} sweeps)"),
                             RAMP, 0))
    order = {n: i for i, n in enumerate(CELL_FEATURES)}
    rows.sort(key=lambda r: order.get(r["feature"], len(order)))
    return rows
