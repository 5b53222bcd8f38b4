"""Per-sweep quality control: :func:`check_sweep` → :class:`~neurolake.ephys.model.SweepQC`.

Criteria (thresholds in :data:`THRESHOLDS`, versioned by :data:`THRESHOLDS_VERSION`; both are stored with
every sweep row):

Current clamp (response in mV) — the Allen Cell Types sweep criteria, "Ephys QC Criteria v1.1"
(AllenInstitute/ipfx ``ipfx/defaults/qc_criteria.json``; measured as in ``ipfx/qc_features.py``
``current_clamp_sweep_qc_features`` and evaluated as in ``ipfx/qc_feature_evaluator.py``
``qc_current_clamp_sweep``; epochs from ``ipfx/epochs.py``: ``NOISE_EPOCH = 0.0015`` s,
``PRESTIM_STABILITY_EPOCH = POSTSTIM_STABILITY_EPOCH = 0.5`` s):

- ``pre_noise_rms_mv`` < 0.07: RMS (standard deviation) over 1.5 ms at the start of the pre-stimulus window;
- ``slow_noise_rms_mv`` < 0.5: RMS over the pre-stimulus window (up to 500 ms right before the stimulus);
- ``post_noise_rms_mv`` < 0.07: RMS over the last 1.5 ms of the sweep;
- ``vm_delta_mv`` < 1.0: |mean Vm of the pre-stimulus window − mean Vm of the post-stimulus window (up to the
  last 500 ms of the sweep after the last command change)| — the baseline-stability criterion.
  Ramps skip the two post-stimulus criteria, as IPFX does ("they do not have enough time to recover").

Voltage clamp (response in pA) — no published standard; neurolake's own, same windows:
``baseline_rms_pa`` (RMS of the pre-stimulus window) < 20 pA and ``baseline_delta_pa`` (|pre − post mean|)
< 50 pA.

Windows: the pre-stimulus window ends at the classified stimulus' start (after any earlier pulse, e.g. a
skipped test pulse); a ``hold`` sweep (no stimulus) uses the first and last 500 ms of the sweep. Where IPFX
silently shortens a window that does not fit, neurolake uses what is there when it is at least
``baseline_min_ms`` (50 ms; ``noise_window_ms`` for the two 1.5-ms noise criteria) long and records the length used (``pre_baseline_ms``, ``post_baseline_ms``);
a shorter window makes its criteria **not evaluated**: measure ``None`` and a reason
``"not evaluated: <measure>: <why>"``. ``passed`` is True when no evaluated criterion failed and at least
one was evaluated; a sweep whose clamp mode or stimulus is unknown is not evaluated and does not pass.
"""

from __future__ import annotations

import numpy as np

from neurolake.ephys.model import (
    CURRENT_CLAMP,
    HOLD,
    RAMP,
    UNKNOWN,
    VOLTAGE_CLAMP,
    Stimulus,
    Sweep,
    SweepQC,
)
from neurolake.ephys.stimulus import pulses

THRESHOLDS_VERSION = "2026-12-01.1"
THRESHOLDS: dict[str, float] = {
    # Allen Cell Types "Ephys QC Criteria v1.1" (ipfx/defaults/qc_criteria.json)
    "pre_noise_rms_mv_max": 0.07,
    "post_noise_rms_mv_max": 0.07,
    "slow_noise_rms_mv_max": 0.5,
    "vm_delta_mv_max": 1.0,
    # epochs (ipfx/epochs.py)
    "noise_window_ms": 1.5,
    "stability_window_ms": 500.0,
    # neurolake
    "baseline_min_ms": 50.0,
    "vc_baseline_rms_pa_max": 20.0,
    "vc_baseline_delta_pa_max": 50.0,
}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x - x.mean()))))


def _windows(sweep: Sweep, stimulus: Stimulus, th: dict[str, float]) -> tuple[int, int, int, int]:
    """(pre_start, pre_stop, post_start, post_stop) sample indices."""
    n = sweep.n_samples
    rate = sweep.sampling_rate_hz
    stab = int(round(th["stability_window_ms"] * 1e-3 * rate))
    if stimulus.stimulus_class == HOLD or stimulus.start_s is None:
        w = min(stab, n // 2)       # no stimulus: first and last 500 ms (halves of a shorter sweep)
        return 0, w, n - w, n
    stim_start = int(round(stimulus.start_s * rate))
    spans = pulses(sweep.command, stimulus.holding) if sweep.command is not None else []
    prev_end = max((b for a, b in spans if b <= stim_start), default=0)
    last_end = max((b for a, b in spans), default=int(round((stimulus.end_s or 0) * rate)))
    pre_start = max(prev_end, stim_start - stab)
    post_start = max(last_end, n - stab)
    return pre_start, stim_start, post_start, n


def check_sweep(sweep: Sweep, stimulus: Stimulus, thresholds: dict[str, float] | None = None) -> SweepQC:
    """QC one sweep against the criteria of the module docstring.

    ``sweep.response``: (sample,) mV (current clamp) or pA (voltage clamp); ``stimulus`` from
    :func:`neurolake.ephys.stimulus.classify` on the same sweep. ``thresholds`` overrides :data:`THRESHOLDS`
    (then record your own version). Returns a :class:`SweepQC` whose ``measures`` carry units in their names
    (``_mv``, ``_pa``, ``_ms``), ``None`` for criteria that could not be evaluated. Never raises for a
    well-formed sweep.
    """
    th = dict(THRESHOLDS, **(thresholds or {}))
    measures: dict[str, float | None] = {}
    reasons: list[str] = []
    version = THRESHOLDS_VERSION if thresholds is None else THRESHOLDS_VERSION + "+custom"
    if sweep.clamp_mode not in (CURRENT_CLAMP, VOLTAGE_CLAMP) or sweep.clamp_mode == UNKNOWN:
        return SweepQC(False, [f"not evaluated: clamp mode {sweep.clamp_mode!r} (units do not say whether the "
                               "response is a potential or a current)"], measures, version, th)
    if stimulus.stimulus_class == UNKNOWN:
        return SweepQC(False, [f"not evaluated: stimulus unknown ({stimulus.rule})"], measures, version, th)
    y = np.asarray(sweep.response, dtype=np.float64)
    rate = sweep.sampling_rate_hz
    ms = 1e3 / rate
    min_n = int(round(th["baseline_min_ms"] * 1e-3 * rate))
    noise_n = max(int(round(th["noise_window_ms"] * 1e-3 * rate)), 2)
    a0, a1, b0, b1 = _windows(sweep, stimulus, th)
    pre, post = y[a0:a1], y[b0:b1]
    measures["pre_baseline_ms"] = (a1 - a0) * ms
    measures["post_baseline_ms"] = (b1 - b0) * ms
    pre_ok, post_ok = pre.size >= min_n, post.size >= min_n              # stability criteria
    pre_noise_ok, post_noise_ok = pre.size >= noise_n, post.size >= noise_n   # 1.5 ms noise criteria
    pre_why = f"pre-stimulus baseline {(a1 - a0) * ms:.1f} ms < {th['baseline_min_ms']:g} ms"
    post_why = f"post-stimulus baseline {(b1 - b0) * ms:.1f} ms < {th['baseline_min_ms']:g} ms"
    pre_noise_why = f"pre-stimulus baseline {(a1 - a0) * ms:.2f} ms < {th['noise_window_ms']:g} ms"
    post_noise_why = f"post-stimulus baseline {(b1 - b0) * ms:.2f} ms < {th['noise_window_ms']:g} ms"
    evaluated = 0

    def judge(name: str, value: float | None, limit_key: str, why: str) -> None:
        nonlocal evaluated
        measures[name] = value
        if value is None:
            reasons.append(f"not evaluated: {name}: {why}")
            return
        evaluated += 1
        if not np.isfinite(value) or value > th[limit_key]:
            reasons.append(f"{name} {value:.4g} > {th[limit_key]:g}")

    if sweep.clamp_mode == CURRENT_CLAMP:
        is_ramp = stimulus.stimulus_class == RAMP
        pre_vm = float(pre.mean()) if pre_ok else None
        measures["pre_vm_mv"] = pre_vm
        judge("pre_noise_rms_mv", _rms(pre[:noise_n]) if pre_noise_ok else None, "pre_noise_rms_mv_max",
              pre_noise_why)
        judge("slow_noise_rms_mv", _rms(pre) if pre_ok else None, "slow_noise_rms_mv_max", pre_why)
        if is_ramp:
            measures["post_vm_mv"] = None
            for name in ("post_noise_rms_mv", "vm_delta_mv"):
                measures[name] = None
                reasons.append(f"not evaluated: {name}: ramp sweeps do not recover before the sweep ends (IPFX)")
        else:
            post_vm = float(post.mean()) if post_ok else None
            measures["post_vm_mv"] = post_vm
            judge("post_noise_rms_mv", _rms(post[-noise_n:]) if post_noise_ok else None, "post_noise_rms_mv_max",
                  post_noise_why)
            delta = abs(pre_vm - post_vm) if (pre_vm is not None and post_vm is not None) else None
            judge("vm_delta_mv", delta, "vm_delta_mv_max", pre_why if not pre_ok else post_why)
    else:
        pre_i = float(pre.mean()) if pre_ok else None
        post_i = float(post.mean()) if post_ok else None
        measures["pre_baseline_pa"] = pre_i
        measures["post_baseline_pa"] = post_i
        judge("baseline_rms_pa", _rms(pre) if pre_ok else None, "vc_baseline_rms_pa_max", pre_why)
        delta = abs(pre_i - post_i) if (pre_i is not None and post_i is not None) else None
        judge("baseline_delta_pa", delta, "vc_baseline_delta_pa_max", pre_why if not pre_ok else post_why)
    failed = [r for r in reasons if not r.startswith("not evaluated")]
    if evaluated == 0:
        reasons.append("no QC criterion could be evaluated")
    passed = evaluated > 0 and not failed
    return SweepQC(passed, reasons, measures, version, th)
