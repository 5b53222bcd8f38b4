"""eFEL features with statuses (issue 18, point 3) on the real ABF/NWB recordings in data/ephys.

Recordings come from the real readers (abf.read, nwb.read) and stimulus.classify; QC outcomes are set
explicitly here (except in the test with qc.check_sweep) so each test controls which sweeps pass.

Parity: spike times and key sweep features equal eFEL called here directly (own trace construction from
pyabf/pynwb, settings set here) within 1 %; rheobase of 17o05028 (protocol steps of 10 pA); QC-failed sweeps
never reach cell features; a missing stimulus type keeps every other feature; voltage clamp → not_applicable.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import efel
import numpy as np
import pyabf
import pytest

from neurolake.ephys import abf, features, nwb, qc, stimulus
from neurolake.ephys.model import (
    LONG_SQUARE,
    NOT_APPLICABLE,
    OK,
    QC_EXCLUDED,
    RAMP,
    SHORT_SQUARE,
    SweepQC,
)
from neurolake.errors import InvalidArgument

DATA = Path(__file__).resolve().parents[2] / "data" / "ephys"
ABF = DATA / "abf"
NWB = DATA / "nwb" / "99111002.nwb"


# ------------------------------------------------------------------------------------------------ helpers

def _passed() -> SweepQC:
    return SweepQC(True, [], {}, "test", {})


def _failed_qc() -> SweepQC:
    return SweepQC(False, ["test: marked failed"], {}, "test", {})


def _load(path: Path):
    rec = nwb.read(path) if path.suffix == ".nwb" else abf.read(path)
    stims = [stimulus.classify(s) for s in rec.sweeps]
    return rec, stims, [_passed() for _ in rec.sweeps]


def _by(rows, **keys):
    return [r for r in rows if all(r[k] == v for k, v in keys.items())]


def _sf(analysis, sweep, feature, channel=0):
    (row,) = _by(analysis.sweep_features, sweep=sweep, feature=feature, channel=channel)
    return row


def _cf(analysis, feature, channel=0):
    (row,) = _by(analysis.cell_features, feature=feature, channel=channel)
    return row


def _efel_here(T_ms, V, start_ms, end_ms, feats, strict=True, interp=None):
    """eFEL called directly, with settings set here (not through neurolake)."""
    efel.reset()
    efel.set_setting("Threshold", -20.0)
    efel.set_setting("DerivativeThreshold", 10.0)
    efel.set_setting("strict_stiminterval", strict)
    efel.set_setting("interp_step", interp if interp is not None else float(T_ms[1] - T_ms[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = efel.get_feature_values([{"T": T_ms, "V": V, "stim_start": [start_ms], "stim_end": [end_ms]}],
                                      feats)[0]
    efel.reset()
    return out


def _pyabf_sweeps(path: Path):
    """(sweep, T_ms, V_mV) straight from pyabf, channel 0."""
    a = pyabf.ABF(str(path))
    for s in range(a.sweepCount):
        a.setSweep(s, channel=0)
        yield s, a.sweepX * 1000.0, a.sweepY.astype(np.float64)


KEY = {"spike_count": "spike_count", "mean_frequency_hz": "mean_frequency", "ap_amplitude_mv": "AP_amplitude",
       "ap_width_ms": "AP_duration_half_width", "v_rest_mv": "voltage_base"}


def _assert_parity(analysis, stims, raw):
    """raw: iterable of (sweep, T_ms, V); compares spike times and KEY features, 1 % relative tolerance."""
    n_compared = 0
    for sweep, T, V in raw:
        st = stims[sweep]
        start, end = st.start_s * 1000.0, st.end_s * 1000.0
        keep = T <= end + 50.0   # neurolake hands eFEL the sweep up to stim_end + trace_margin_ms (50 ms)
        ref = _efel_here(T[keep], V[keep], start, end, ["peak_time", *KEY.values()])
        peaks = [r["peak_time_s"] for r in _by(analysis.spikes, sweep=sweep, channel=0)]
        ref_peaks = [] if ref["peak_time"] is None else list(ref["peak_time"] / 1000.0)
        np.testing.assert_allclose(peaks, ref_peaks, rtol=1e-2, atol=1e-9)
        for ours, theirs in KEY.items():
            row = _sf(analysis, sweep, ours)
            arr = ref[theirs]
            if arr is None or len(arr) == 0:
                assert row["status"] != OK, (sweep, ours, row)
                continue
            assert row["status"] == OK, (sweep, ours, row)
            assert row["value"] == pytest.approx(float(np.mean(arr)), rel=1e-2, abs=1e-9), (sweep, ours)
            n_compared += 1
    return n_compared


# ------------------------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("name", ["17o05028_ic_steps.abf", "2019_07_24_0055_fsi.abf", "File_axon_5.abf"])
def test_spikes_and_key_features_equal_efel_direct_abf(name):
    rec, stims, qcs = _load(ABF / name)
    an = features.analyze(rec, stims, qcs)
    raw = [(s, T, V) for s, T, V in _pyabf_sweeps(ABF / name) if stims[s].start_s is not None]
    assert _assert_parity(an, stims, raw) >= 2 * len(raw)
    assert len(an.spikes) >= 7   # these step files spike (File_axon_5: 7 spikes in 3 sweeps)


def test_spikes_and_key_features_equal_efel_direct_nwb():
    import pynwb

    rec, stims, qcs = _load(NWB)
    an = features.analyze(rec, stims, qcs)
    raw = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pynwb.NWBHDF5IO(str(NWB), "r", load_namespaces=True) as io:
            f = io.read()
            for i in range(len(rec.sweeps)):
                ts = f.acquisition[f"ic__Step__{i + 1}"]
                V = np.asarray(ts.data[:], dtype=np.float64) * ts.conversion * 1000.0   # V → mV
                T = np.arange(V.size) * 1000.0 / ts.rate
                if stims[i].start_s is not None:
                    raw.append((i, T, V))
    assert len(raw) >= 10
    assert _assert_parity(an, stims, raw) >= 10


def test_efel_direct_helper_matches_analyze():
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    direct = features.efel_direct(rec.sweeps, stims)
    an = features.analyze(rec, stims, qcs)
    assert len(direct) == len(rec.sweeps)
    for s, d in enumerate(direct):
        n = 0 if d["peak_time"] is None else len(d["peak_time"])
        assert _sf(an, s, "spike_count")["value"] == n
        assert len(_by(an.spikes, sweep=s)) == n


def test_spike_rows_are_physical():
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    an = features.analyze(rec, stims, qcs)
    for sp in an.spikes:
        assert sp["threshold_time_s"] < sp["peak_time_s"]
        assert sp["threshold_mv"] < sp["peak_mv"]
        if sp["trough_time_s"] is not None:
            assert sp["trough_time_s"] > sp["peak_time_s"] and sp["trough_mv"] < sp["peak_mv"]
        assert 0.2 < sp["width_ms"] < 5
        assert sp["upstroke_mv_per_ms"] > 0
        if sp["downstroke_mv_per_ms"] is None:   # eFEL drops the last spike's AHP when V falls until stim end
            assert sp["trough_time_s"] is None
        else:
            assert sp["downstroke_mv_per_ms"] < 0
    # spike numbers are 0.. n-1 per sweep, in time order
    for s in {sp["sweep"] for sp in an.spikes}:
        rows = _by(an.spikes, sweep=s)
        assert [r["spike"] for r in rows] == list(range(len(rows)))
        assert all(np.diff([r["peak_time_s"] for r in rows]) > 0)


def test_last_spike_width_not_taken_from_a_later_spike():
    """eFEL 5.7 on the whole 17o05028 sweep searches the last in-window spike's AP end up to the trace end, so
    its half width lands on a spike of the sweep's second step (> 1 s); ours stays physical."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    an = features.analyze(rec, stims, qcs)
    s = next(i for i, st in enumerate(stims) if st.stimulus_class == LONG_SQUARE and st.amplitude == 40)
    _, T, V = next(x for x in _pyabf_sweeps(ABF / "17o05028_ic_steps.abf") if x[0] == s)
    whole = _efel_here(T, V, stims[s].start_s * 1000, stims[s].end_s * 1000, ["AP_duration_half_width"])
    assert whole["AP_duration_half_width"][-1] > 100.0          # the eFEL artefact on the whole trace
    ours = [r["width_ms"] for r in _by(an.spikes, sweep=s)]
    assert len(ours) == len(whole["AP_duration_half_width"]) and max(ours) < 5.0
    np.testing.assert_allclose(ours[:-1], whole["AP_duration_half_width"][:-1], rtol=1e-6)


# ------------------------------------------------------------------------------------------------ window

def test_spikes_outside_the_stimulus_window_are_not_counted():
    """eFEL issue #166: paste a real spike into the pre-stimulus baseline; it must not be counted."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    sweep, stim = rec.sweeps[10], stims[10]
    base = features.analyze(rec, stims, qcs)
    n_in = _sf(base, 10, "spike_count")["value"]
    first = _by(base.spikes, sweep=10)[0]
    fs = sweep.sampling_rate_hz
    i0 = int(first["threshold_time_s"] * fs) - 20
    wave = sweep.response[i0:i0 + 200].copy()
    j0 = int(0.050 * fs)   # 50 ms, well before the step at 146.9 ms
    sweep.response = sweep.response.copy()
    sweep.response[j0:j0 + 200] = wave - wave[0] + sweep.response[j0]
    after = features.analyze(rec, stims, qcs)
    assert _sf(after, 10, "spike_count")["value"] == n_in
    assert all(stim.start_s <= r["peak_time_s"] <= stim.end_s for r in _by(after.spikes, sweep=10))
    loose = features.analyze(rec, stims, qcs, settings={"strict_stiminterval": False})
    assert _sf(loose, 10, "spike_count")["value"] > n_in   # the pasted spike (and any after the step) counted
    assert any(r["peak_time_s"] < stim.start_s for r in _by(loose.spikes, sweep=10))


# ------------------------------------------------------------------------------------------------ cell features

def test_rheobase_17o05028_matches_its_protocol():
    """Protocol "steps dual -50 to 150 step 10": first steps −50 … +100 pA by 10 pA."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    an = features.analyze(rec, stims, qcs)
    amps = sorted({s.amplitude for s in stims if s.stimulus_class == LONG_SQUARE})
    assert amps[0] == -50 and amps[-1] == 100 and set(amps) <= set(np.arange(-50.0, 101.0, 10.0))
    rheo = _cf(an, "rheobase_pa")
    assert rheo["status"] == OK and rheo["stimulus_class"] == LONG_SQUARE
    # independently: the smallest positive step whose window contains a 0 mV crossing
    expected = None
    for s, st in zip(rec.sweeps, stims, strict=True):
        if st.stimulus_class != LONG_SQUARE or st.amplitude <= 0:
            continue
        t = s.time_s()
        v = s.response[(t >= st.start_s) & (t <= st.end_s)]
        if np.any((v[:-1] < 0) & (v[1:] >= 0)) and (expected is None or st.amplitude < expected):
            expected = st.amplitude
    assert rheo["value"] == expected == 10.0
    fi = _cf(an, "fi_slope_hz_per_pa")
    assert fi["status"] == OK and fi["value"] > 0 and fi["n_sweeps"] == 10
    for name in ("input_resistance_mohm", "tau_ms", "sag_ratio", "v_rest_mv", "first_spike_latency_ms",
                 "ap_width_ms", "ap_threshold_mv", "max_firing_rate_hz", "adaptation_index"):
        assert _cf(an, name)["status"] == OK, _cf(an, name)
    assert 100 < _cf(an, "input_resistance_mohm")["value"] < 5000
    assert -90 < _cf(an, "v_rest_mv")["value"] < -20


def _fi_expected(an, stims, skip=()):
    amps, rates = [], []
    for s, st in enumerate(stims):
        if s in skip or st.stimulus_class != LONG_SQUARE or st.amplitude <= 0:
            continue
        n = _sf(an, s, "spike_count")["value"]
        if n and n >= 1:
            amps.append(st.amplitude)
            rates.append(n / (st.end_s - st.start_s))
    return amps, np.polyfit(amps, rates, 1)[0]


def test_qc_failed_sweep_never_reaches_cell_features():
    """ipfx#516: a failed sweep must not poison its stimulus type's features."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    good = features.analyze(rec, stims, qcs)
    rheo_sweep = next(s for s, st in enumerate(stims) if st.stimulus_class == LONG_SQUARE and st.amplitude == 10)
    qcs[rheo_sweep] = _failed_qc()
    an = features.analyze(rec, stims, qcs)
    rows = _by(an.sweep_features, sweep=rheo_sweep)
    # measured and kept for the record (its spikes too), but no value of it is "ok" …
    assert rows and QC_EXCLUDED in {r["status"] for r in rows} and OK not in {r["status"] for r in rows}
    before = {r["feature"]: r for r in _by(good.sweep_features, sweep=rheo_sweep)}
    for r in rows:
        if r["status"] == QC_EXCLUDED:
            assert before[r["feature"]]["status"] == OK and r["value"] == before[r["feature"]]["value"]
    assert len(_by(an.spikes, sweep=rheo_sweep)) == len(_by(good.spikes, sweep=rheo_sweep)) > 0
    # … and it never reaches a cell feature
    assert _cf(an, "rheobase_pa")["value"] == 20.0
    amps, slope = _fi_expected(an, stims, skip={rheo_sweep})
    assert 10.0 not in amps
    fi = _cf(an, "fi_slope_hz_per_pa")
    assert fi["status"] == OK and fi["value"] == pytest.approx(slope) and fi["n_sweeps"] == len(amps)
    assert fi["value"] != pytest.approx(_cf(good, "fi_slope_hz_per_pa")["value"])


def test_with_real_qc_only_passing_sweeps_reach_cell_features():
    rec = abf.read(ABF / "17o05028_ic_steps.abf")
    stims = [stimulus.classify(s) for s in rec.sweeps]
    qcs = [qc.check_sweep(s, st) for s, st in zip(rec.sweeps, stims, strict=True)]
    an = features.analyze(rec, stims, qcs)
    passed = {i for i, q in enumerate(qcs) if q.passed}
    for i in range(len(rec.sweeps)):
        statuses = {r["status"] for r in _by(an.sweep_features, sweep=i)}
        assert (QC_EXCLUDED in statuses and OK not in statuses) == (i not in passed)
    spiking = [stims[i].amplitude for i in passed
               if stims[i].stimulus_class == LONG_SQUARE and stims[i].amplitude > 0
               and _sf(an, i, "spike_count")["value"] >= 1]
    rheo = _cf(an, "rheobase_pa")
    if spiking:
        assert rheo["status"] == OK and rheo["value"] == min(spiking)
    else:
        assert rheo["status"] != OK and rheo["value"] is None
    assert {r["sweep"] for r in an.spikes} - passed  # failed sweeps keep their spikes …


def test_fewer_than_two_suprathreshold_sweeps_keeps_the_cell():
    """ipfx#394: f–I slope fails with a reason, every other feature stays."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    for s, st in enumerate(stims):
        if st.stimulus_class == LONG_SQUARE and st.amplitude > 10:
            qcs[s] = _failed_qc()
    an = features.analyze(rec, stims, qcs)
    fi = _cf(an, "fi_slope_hz_per_pa")
    assert fi["status"] == "failed:fewer than two suprathreshold sweeps" and fi["value"] is None
    assert _cf(an, "rheobase_pa")["value"] == 10.0
    for name in ("input_resistance_mohm", "tau_ms", "v_rest_mv", "ap_width_ms", "max_firing_rate_hz"):
        assert _cf(an, name)["status"] == OK


def test_missing_stimulus_types_keep_every_other_feature():
    # File_axon_5: long squares only → short-square and ramp features not applicable, the rest computed
    rec, stims, qcs = _load(ABF / "File_axon_5.abf")
    an = features.analyze(rec, stims, qcs)
    for name, cls in (("threshold_i_short_square_pa", SHORT_SQUARE), ("threshold_i_ramp_pa", RAMP)):
        row = _cf(an, name)
        assert (row["status"], row["stimulus_class"], row["n_sweeps"], row["value"]) == (NOT_APPLICABLE, cls, 0, None)
    for name in ("rheobase_pa", "fi_slope_hz_per_pa", "input_resistance_mohm", "v_rest_mv", "ap_width_ms"):
        assert _cf(an, name)["status"] == OK, _cf(an, name)
    assert _cf(an, "rheobase_pa")["value"] in {s.amplitude for s in stims if s.stimulus_class == LONG_SQUARE}
    # 17o05027: ramps only → long-square features not applicable, ramp threshold and resting potential computed
    rec, stims, qcs = _load(ABF / "17o05027_ic_ramp.abf")
    assert RAMP in {s.stimulus_class for s in stims} and LONG_SQUARE not in {s.stimulus_class for s in stims}
    an = features.analyze(rec, stims, qcs)
    for name in ("rheobase_pa", "fi_slope_hz_per_pa", "input_resistance_mohm", "tau_ms", "sag_ratio"):
        row = _cf(an, name)
        assert (row["status"], row["stimulus_class"], row["n_sweeps"]) == (NOT_APPLICABLE, LONG_SQUARE, 0)
    ramp = _cf(an, "threshold_i_ramp_pa")
    assert ramp["status"] == OK and ramp["stimulus_class"] == RAMP
    ramp_stim = next(s for s in stims if s.stimulus_class == RAMP)
    assert 0 < ramp["value"] <= ramp_stim.amplitude
    assert _cf(an, "v_rest_mv")["status"] == OK and "ramp" in _cf(an, "v_rest_mv")["stimulus_class"]
    assert {r["feature"] for r in an.cell_features} == set(features.CELL_FEATURES)


def test_all_qc_failed_class_is_qc_excluded_not_missing():
    rec, stims, qcs = _load(ABF / "File_axon_5.abf")
    qcs = [_failed_qc() for _ in qcs]
    an = features.analyze(rec, stims, qcs)
    assert _cf(an, "rheobase_pa")["status"] == QC_EXCLUDED
    assert _cf(an, "threshold_i_short_square_pa")["status"] == NOT_APPLICABLE
    statuses = {r["status"] for r in an.sweep_features}
    assert QC_EXCLUDED in statuses and OK not in statuses
    assert an.spikes  # measured and kept, but no cell feature uses them


def test_voltage_clamp_file_is_not_applicable():
    rec, stims, qcs = _load(ABF / "17o05024_vc_steps.abf")
    assert {s.clamp_mode for s in rec.sweeps} == {"voltage_clamp"}
    an = features.analyze(rec, stims, qcs)
    assert an.sweep_features and {r["status"] for r in an.sweep_features} == {NOT_APPLICABLE}
    assert not an.spikes
    assert {r["status"] for r in an.cell_features} == {NOT_APPLICABLE}
    assert len(an.sweep_features) == len(rec.sweeps) * len(features.SWEEP_FEATURES)


def test_mixed_clamp_channels_analyse_only_current_clamp():
    rec, stims, qcs = _load(ABF / "2020_03_02_0000.abf")
    an = features.analyze(rec, stims, qcs)
    ch1 = _by(an.sweep_features, channel=1)
    assert ch1 and {r["status"] for r in ch1} == {NOT_APPLICABLE}
    assert OK in {r["status"] for r in _by(an.sweep_features, channel=0)}
    assert {r["channel"] for r in an.cell_features} == {0, 1}


# ------------------------------------------------------------------------------------------------ statuses

def test_sweep_feature_statuses():
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    an = features.analyze(rec, stims, qcs)
    hyper = next(s for s, st in enumerate(stims) if st.stimulus_class == LONG_SQUARE and st.amplitude == -40)
    depol = next(s for s, st in enumerate(stims) if st.stimulus_class == LONG_SQUARE and st.amplitude == 100)
    assert _sf(an, hyper, "spike_count")["value"] == 0
    for name in ("ap_width_ms", "ap_amplitude_mv", "mean_frequency_hz", "first_spike_latency_ms", "isi_cv"):
        assert _sf(an, hyper, name)["status"] == NOT_APPLICABLE   # no spikes
    for name in ("input_resistance_mohm", "tau_ms", "sag_ratio", "v_rest_mv", "steady_state_voltage_mv"):
        assert _sf(an, hyper, name)["status"] == OK
    ri = _sf(an, hyper, "input_resistance_mohm")["value"]
    dv = _sf(an, hyper, "voltage_deflection_mv")["value"]
    assert ri == pytest.approx(dv / (-40 / 1000.0))   # mV / nA = MOhm
    for name in ("input_resistance_mohm", "tau_ms", "sag_ratio"):
        assert _sf(an, depol, name)["status"] == NOT_APPLICABLE   # depolarising, spiking
    assert _sf(an, depol, "isi_cv")["status"] == OK


def test_failed_status_carries_efel_reason():
    """A flat response to a hyperpolarising step: eFEL cannot fit tau → failed:<eFEL's message>."""
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    s = next(i for i, st in enumerate(stims) if st.stimulus_class == LONG_SQUARE and st.amplitude == -40)
    rec.sweeps[s].response = np.full(rec.sweeps[s].n_samples, -60.0)
    an = features.analyze(rec, stims, qcs)
    row = _sf(an, s, "tau_ms")
    assert row["status"].startswith("failed:") and len(row["status"]) > len("failed:") and row["value"] is None
    assert _sf(an, s, "v_rest_mv")["value"] == pytest.approx(-60.0)


def test_library_version_and_settings_recorded_per_value():
    rec, stims, qcs = _load(ABF / "File_axon_5.abf")
    an = features.analyze(rec, stims, qcs, settings={"Threshold": -10.0})
    assert an.library["name"] == "efel" and an.library["version"] == efel.__version__
    assert an.library["settings"]["Threshold"] == -10.0
    for row in an.sweep_features + an.cell_features:
        assert row["library"] == "efel" and row["library_version"] == efel.__version__
        s = json.loads(row["settings"])
        assert s["Threshold"] == -10.0 and s["strict_stiminterval"] is True
    cc_row = _by(an.sweep_features, sweep=8, feature="spike_count")[0]
    assert json.loads(cc_row["settings"])["interp_step"] == pytest.approx(1000.0 / 20000)


def test_efel_global_settings_restored():
    efel.reset()
    efel.set_setting("Threshold", -33.0)
    rec, stims, qcs = _load(ABF / "File_axon_5.abf")
    features.analyze(rec, stims, qcs, settings={"Threshold": 0.0})
    assert efel.get_settings().Threshold == -33.0
    assert efel.get_settings().strict_stiminterval is False
    efel.reset()


def test_bad_arguments():
    rec, stims, qcs = _load(ABF / "File_axon_5.abf")
    with pytest.raises(InvalidArgument, match="Thresold"):
        features.analyze(rec, stims, qcs, settings={"Thresold": 1.0})
    with pytest.raises(InvalidArgument, match="Threshold"):
        features.analyze(rec, stims, qcs, settings={"Threshold": "high"})
    with pytest.raises(InvalidArgument, match="short_square_post_ms"):
        features.analyze(rec, stims, qcs, settings={"short_square_post_ms": float("nan")})
    with pytest.raises(InvalidArgument, match="trace_margin_ms"):
        features.analyze(rec, stims, qcs, settings={"trace_margin_ms": -5})
    with pytest.raises(InvalidArgument, match="one stimulus and one QC per sweep"):
        features.analyze(rec, stims[:-1], qcs)
    with pytest.raises(InvalidArgument, match="one stimulus per sweep"):
        features.efel_direct(rec.sweeps, stims[:-1])


# ------------------------------------------------------------------------------------------------ overhead

def test_analyze_overhead_over_efel_direct_is_small():
    rec, stims, qcs = _load(ABF / "17o05028_ic_steps.abf")
    features.analyze(rec, stims, qcs)   # warm up

    def best(f):
        out = []
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
        return min(out)

    direct = best(lambda: features.efel_direct(rec.sweeps, stims))
    ours = best(lambda: features.analyze(rec, stims, qcs))
    assert ours <= 1.3 * direct + 0.02, (ours, direct)
