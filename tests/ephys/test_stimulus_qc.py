"""Stimulus classification and sweep QC on the shipped recordings (data/ephys/abf, data/ephys/nwb)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from neurolake.ephys import abf, nwb, qc, stimulus
from neurolake.ephys.model import (
    CURRENT_CLAMP,
    HOLD,
    LONG_SQUARE,
    NOISE,
    RAMP,
    SHORT_SQUARE,
    SQUARE,
    UNKNOWN,
    VOLTAGE_CLAMP,
    Sweep,
)

EPHYS = Path(__file__).resolve().parents[2] / "data" / "ephys"
ABF_DIR = EPHYS / "abf"


@pytest.fixture(scope="module")
def rec():
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = nwb.read(EPHYS / "nwb" / name) if name.endswith(".nwb") else abf.read(ABF_DIR / name)
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------- stimulus

def test_ic_steps_are_long_squares_of_minus_50_by_10_pa(rec):
    # SOURCE.md: "0112 steps dual -50 to 150 step 10"; the file holds 16 sweeps, so -50 ... +100 pA
    stims = [stimulus.classify(s) for s in rec("17o05028_ic_steps.abf").sweeps]
    assert [s.stimulus_class for s in stims] == [LONG_SQUARE] * 16
    steps = [s for i, s in enumerate(stims) if i != 5]
    assert [s.amplitude for s in steps] == [-50.0 + 10 * i for i in range(16) if i != 5]
    assert {s.holding for s in stims} == {0.0}
    assert {(s.start_s, s.end_s) for s in steps} == {(0.14685, 0.64685)}
    # sweep 5 steps by 0 pA, so its first pulse is the protocol's second-half -50 pA pre-pulse: the rule
    # says so (per-sweep classification cannot know the rest of the series)
    assert (stims[5].amplitude, stims[5].start_s, stims[5].end_s) == (-50.0, 1.14685, 1.64685)
    assert "-50 pA from holding 0 pA at 1.14685–1.64685 s" in stims[5].rule
    assert "one step of 500.0 ms ≥ 500 ms, +100 pA from holding 0 pA" in stims[15].rule
    assert "first of 2 pulses" in stims[15].rule          # the dual protocol's second half is named


def test_ramp_file(rec):
    s0, s1 = (stimulus.classify(s) for s in rec("17o05027_ic_ramp.abf").sweeps)
    assert s0.stimulus_class == HOLD and "command flat at 0 pA" in s0.rule
    assert s1.stimulus_class == RAMP
    assert s1.amplitude == pytest.approx(10.0)
    assert s1.start_s == pytest.approx(0.01565) and s1.end_s == pytest.approx(1.0)
    assert "linear ramp of 964.9 ms to +10 pA" in s1.rule and "+10.36" in s1.rule


def test_nwb_steps_minus_2_to_plus_1_na(rec):
    stims = [stimulus.classify(s) for s in rec("99111002.nwb").sweeps]
    expected = [-2000.0 + 200.0 * i for i in range(16)]
    for i, (st, amp) in enumerate(zip(stims, expected, strict=True)):
        if i == 10:       # the 0 nA step: the command is flat (float32 rounding only)
            assert st.stimulus_class == HOLD
            continue
        assert st.stimulus_class == SQUARE                  # 400 ms: between 10 and 500 ms
        assert st.amplitude == pytest.approx(amp, abs=1e-3)
        assert (st.start_s, st.end_s) == pytest.approx((0.0312, 0.4312))
    assert "one step of 400.0 ms between 10 and 500 ms" in stims[0].rule


def test_gap_free_is_hold_and_voltage_clamp_steps(rec):
    r = rec("2020_07_29_0062.abf")
    st = stimulus.classify(r.sweeps[0])
    assert (st.stimulus_class, st.amplitude, st.holding, st.start_s) == (HOLD, 0.0, 0.0, None)
    vc = rec("17o05024_vc_steps.abf").sweeps
    st = stimulus.classify(vc[0])
    assert (st.stimulus_class, st.amplitude, st.holding) == (LONG_SQUARE, -40.0, -70.0)
    assert "mV" in st.rule
    # the "Cm ramp" protocol is a down-and-up triangle: not one step, not one ramp
    tri = stimulus.classify(rec("171116sh_0014.abf").sweeps[0])
    assert tri.stimulus_class == NOISE and "neither one step nor one linear ramp" in tri.rule


def _synthetic(command: np.ndarray, rate: float = 20000.0) -> Sweep:
    return Sweep(number=0, channel=0, clamp_mode=CURRENT_CLAMP, sampling_rate_hz=rate,
                 response=np.zeros_like(command), response_unit="mV", command=command, command_unit="pA")


def test_rules_on_constructed_waveforms():
    n = 20000
    c = np.zeros(n)
    c[1000:1100] = 200.0                                       # 5 ms
    st = stimulus.classify(_synthetic(c))
    assert st.stimulus_class == SHORT_SQUARE and st.amplitude == 200.0 and "5.0 ms < 10 ms" in st.rule
    # a 10 ms test pulse at 0.05 s, then a 600 ms step: the test pulse is skipped (Allen convention)
    c = np.zeros(n)
    c[1000:1200] = -50.0
    c[4000:16000] = 80.0
    st = stimulus.classify(_synthetic(c))
    assert st.stimulus_class == LONG_SQUARE and st.amplitude == 80.0 and st.start_s == 0.2
    assert "test pulse of 10.0 ms at 0.05 s skipped" in st.rule
    c = np.random.default_rng(0).normal(0, 10, n)
    c[0] = 0.0
    assert stimulus.classify(_synthetic(c)).stimulus_class == NOISE
    st = stimulus.classify(dataclasses.replace(_synthetic(c), command=None, command_unit=None))
    assert (st.stimulus_class, st.rule) == (UNKNOWN, "no command waveform")
    c[5] = np.nan
    assert stimulus.classify(_synthetic(c)).stimulus_class == UNKNOWN


# ------------------------------------------------------------------------------------------------ QC

def test_thresholds_are_versioned_and_allen_values():
    assert qc.THRESHOLDS_VERSION == "2026-12-01.1"
    t = qc.THRESHOLDS
    assert (t["pre_noise_rms_mv_max"], t["post_noise_rms_mv_max"], t["slow_noise_rms_mv_max"],
            t["vm_delta_mv_max"]) == (0.07, 0.07, 0.5, 1.0)
    assert (t["noise_window_ms"], t["stability_window_ms"]) == (1.5, 500.0)
    json.dumps(t)


@pytest.fixture(scope="module")
def clean(rec):
    """File_axon_5 sweep 1: a real current-clamp sweep that passes every Allen criterion."""
    s = rec("File_axon_5.abf").sweeps[1]
    return s, stimulus.classify(s)


def test_clean_sweep_passes(clean):
    s, st = clean
    q = qc.check_sweep(s, st)
    assert q.passed and q.reasons == []
    assert q.thresholds_version == qc.THRESHOLDS_VERSION and q.thresholds == qc.THRESHOLDS
    m = q.measures
    assert m["pre_baseline_ms"] == pytest.approx(215.6) and m["post_baseline_ms"] == pytest.approx(284.4)
    assert m["pre_noise_rms_mv"] < 0.07 and m["slow_noise_rms_mv"] < 0.5 and m["vm_delta_mv"] < 1.0
    # the measures are what they say: recompute two by hand from the response
    pre = s.response[int(0.2156 * 20000) - 4312: int(0.2156 * 20000)]
    assert m["pre_vm_mv"] == pytest.approx(pre.mean())
    assert m["slow_noise_rms_mv"] == pytest.approx(pre.std())


def test_injected_noise_fails_noise_criteria(clean):
    s, st = clean
    y = s.response.copy()
    y[:4312] += np.random.default_rng(1).normal(0.0, 0.3, 4312)     # 0.3 mV RMS before the stimulus
    q = qc.check_sweep(dataclasses.replace(s, response=y), st)
    assert not q.passed
    assert any(r.startswith("pre_noise_rms_mv ") and r.endswith("> 0.07") for r in q.reasons)
    assert any(r.startswith("slow_noise_rms_mv ") and r.endswith("> 0.5") for r in q.reasons)
    assert not any(r.startswith("vm_delta_mv") for r in q.reasons)


def test_injected_baseline_drift_fails_stability(clean):
    s, st = clean
    before = qc.check_sweep(s, st).measures
    y = s.response.copy()
    end = int(0.7156 * 20000)
    drift = np.linspace(0.0, 6.0, y.size - end)                       # drifts 6 mV after the step
    y[end:] += drift
    q = qc.check_sweep(dataclasses.replace(s, response=y), st)
    assert not q.passed
    assert q.measures["vm_delta_mv"] == pytest.approx(abs(before["pre_vm_mv"] - before["post_vm_mv"]
                                                          - drift.mean()))
    assert q.measures["vm_delta_mv"] > 2.0
    assert q.reasons == [f"vm_delta_mv {q.measures['vm_delta_mv']:.4g} > 1"]


def test_voltage_clamp_baseline(rec):
    s = rec("17o05024_vc_steps.abf").sweeps[0]
    st = stimulus.classify(s)
    q = qc.check_sweep(s, st)
    assert s.clamp_mode == VOLTAGE_CLAMP and q.passed
    assert q.measures["baseline_rms_pa"] < 20 and q.measures["baseline_delta_pa"] < 50
    y = s.response.copy()
    y[-8907:] += 120.0                                                 # leak jumps by 120 pA at the end
    q = qc.check_sweep(dataclasses.replace(s, response=y), st)
    assert not q.passed and any(r.startswith("baseline_delta_pa ") for r in q.reasons)


def test_short_baseline_is_not_evaluated_not_passed(rec):
    s = rec("99111002.nwb").sweeps[0]          # the step starts 31.2 ms into the sweep
    q = qc.check_sweep(s, stimulus.classify(s))
    assert q.measures["slow_noise_rms_mv"] is None and q.measures["vm_delta_mv"] is None
    assert "not evaluated: slow_noise_rms_mv: pre-stimulus baseline 31.2 ms < 50 ms" in q.reasons
    assert q.measures["pre_noise_rms_mv"] is not None                 # 1.5 ms fit into 31.2 ms
    # a memtest with 1.55 ms before its pulse: nothing can be evaluated, so it does not pass
    m = rec("2018_11_16_sh_0006.abf").sweeps[0]
    q = qc.check_sweep(m, stimulus.classify(m))
    assert not q.passed and q.reasons[-1] == "no QC criterion could be evaluated"
    assert q.measures["baseline_rms_pa"] is None


def test_ramp_skips_post_criteria_and_unknown_mode_is_not_evaluated(rec):
    s = rec("17o05027_ic_ramp.abf").sweeps[1]
    q = qc.check_sweep(s, stimulus.classify(s))
    assert q.measures["vm_delta_mv"] is None and q.measures["post_noise_rms_mv"] is None
    assert any("ramp sweeps do not recover" in r for r in q.reasons)
    u = rec("2020_03_02_0000.abf").sweeps[1]
    assert u.clamp_mode == UNKNOWN
    q = qc.check_sweep(u, stimulus.classify(u))
    assert not q.passed and q.reasons[0].startswith("not evaluated: clamp mode 'unknown'")
    s = rec("File_axon_5.abf").sweeps[1]
    q = qc.check_sweep(dataclasses.replace(s, command=None, command_unit=None),
                       stimulus.classify(dataclasses.replace(s, command=None)))
    assert not q.passed and q.reasons[0].startswith("not evaluated: stimulus unknown (no command waveform)")
