"""Plotly figures of the ephys tables (neurolake.ephys.plots), built from frames shaped like the Delta tables
and filled from the real recordings: a current-clamp step file read with pyabf and analysed with eFEL, and
the Axion spike list + plate log of data/ephys/mea_axion. The figures must carry the data unchanged."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurolake.ephys import plots
from neurolake.errors import InvalidArgument

DATA = Path(__file__).resolve().parents[2] / "data" / "ephys"
ABF = DATA / "abf" / "17o05028_ic_steps.abf"
SPIKE_LIST = DATA / "mea_axion" / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXP_LOG = DATA / "mea_axion" / "exampleRecording_1012016_plate1_expLog.csv.gz"


# -- fixtures: real data in the tables' shapes -----------------------------------------------------
@pytest.fixture(scope="module")
def ic_steps():
    """(sweeps, spikes, sweep_features, traces{sweep: DataFrame}) of 17o05028_ic_steps.abf: pyabf + eFEL."""
    import efel
    import pyabf

    abf = pyabf.ABF(str(ABF))
    sweeps, spikes, feats, traces = [], [], [], {}
    for s in range(abf.sweepCount):
        abf.setSweep(s)
        t, v, c = abf.sweepX.astype(float), abf.sweepY.astype(float), abf.sweepC.astype(float)
        nz = np.flatnonzero(c != c[0])
        start, end = t[nz[0]], t[nz[-1] + 1]
        traces[s] = pd.DataFrame({"time_s": t, "response": v, "command": c})
        sweeps.append({"file_sha256": "f" * 64, "cell": "17o05028", "sweep": s, "channel": 0,
                       "clamp_mode": "current_clamp", "stimulus_class": "long_square",
                       "stimulus_amplitude_pa": float(c[nz[0]] - c[0]), "response_unit": "mV",
                       "command_unit": "pA"})
        r = efel.get_feature_values([{"T": t * 1000, "V": v, "stim_start": [start * 1000],
                                      "stim_end": [end * 1000]}],
                                    ["peak_time", "peak_voltage", "AP_begin_time", "AP_begin_voltage",
                                     "mean_frequency", "spike_count"])[0]
        pt, pv = r["peak_time"], r["peak_voltage"]
        same = r["AP_begin_time"] is not None and len(r["AP_begin_time"]) == len(pt)
        for i in range(len(pt)):
            spikes.append({"file_sha256": "f" * 64, "cell": "17o05028", "sweep": s, "channel": 0, "spike": i,
                           "peak_time_s": pt[i] / 1000, "peak_mv": pv[i],
                           "threshold_time_s": r["AP_begin_time"][i] / 1000 if same else np.nan,
                           "threshold_mv": r["AP_begin_voltage"][i] if same else np.nan})
        mf = r["mean_frequency"]
        for name, val in (("mean_frequency_hz", None if mf is None else float(mf[0])),
                          ("spike_count", float(r["spike_count"][0]))):
            feats.append({"file_sha256": "f" * 64, "cell": "17o05028", "sweep": s, "channel": 0, "feature": name,
                          "value": val, "status": "ok" if val is not None else "not_applicable"})
    return pd.DataFrame(sweeps), pd.DataFrame(spikes), pd.DataFrame(feats), traces


@pytest.fixture(scope="module")
def mea():
    """(mea_spikes, mea_wells) from the Axion spike list and its plate log, read with pandas."""
    raw = pd.read_csv(SPIKE_LIST, usecols=[2, 3, 4], header=0, names=["time_s", "electrode", "amplitude_mv"])
    sp = raw[raw["electrode"].astype(str).str.match(r"^[A-H]\d_\d\d$")].copy()
    sp["time_s"] = sp["time_s"].astype(float)
    sp["well"] = sp["electrode"].str.split("_").str[0]
    sp.insert(0, "plate", "plate1")
    log = pd.read_csv(io.StringIO(gzip.open(EXP_LOG).read().decode().replace("\r", "\n")))
    log.columns = [c.strip() for c in log.columns]
    duration = sp["time_s"].max()
    n = sp.groupby("well").size()
    wells = pd.DataFrame({"plate": "plate1", "well": log["Well"].str.strip(), "div": log["DIV"].astype(int),
                          "treatment": log["Treatment"]})
    wells["n_spikes"] = wells["well"].map(n).fillna(0).astype(int)
    wells["well_firing_rate_hz"] = wells["n_spikes"] / duration
    return sp, wells


# -- sweeps -----------------------------------------------------------------------------------------
def test_sweep_figure_carries_trace_spikes_and_stimulus(ic_steps):
    sweeps, spikes, _, traces = ic_steps
    row = sweeps.iloc[10]
    fig = plots.sweep_figure(traces[10], spikes, row)  # spikes of every sweep: only sweep 10's are drawn
    names = [t.name for t in fig.data]
    assert names[0] == "response" and "spike peaks" in names and names[-1] == "stimulus"
    resp, stim = fig.data[0], fig.data[-1]
    np.testing.assert_array_equal(resp.x, traces[10]["time_s"].to_numpy())
    np.testing.assert_array_equal(resp.y, traces[10]["response"].to_numpy())
    np.testing.assert_array_equal(stim.y, traces[10]["command"].to_numpy())
    peaks = fig.data[names.index("spike peaks")]
    mine = spikes[spikes["sweep"] == 10]
    assert len(peaks.x) == len(mine) == 29 and len(spikes) > len(mine)
    np.testing.assert_array_equal(peaks.y, mine["peak_mv"].to_numpy())
    # each peak marker sits on the recorded trace at its time (within one sample)
    t, v = traces[10]["time_s"].to_numpy(), traces[10]["response"].to_numpy()
    idx = np.searchsorted(t, np.asarray(peaks.x))
    assert np.all(np.abs(v[np.minimum(idx, len(v) - 1)] - np.asarray(peaks.y)) < 5.0)
    # stimulus below the response, one shared time axis, units in the axis titles
    assert resp.yaxis == "y" and stim.yaxis == "y2" and stim.xaxis == "x2"
    assert fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"
    assert fig.layout.yaxis.title.text == "response (mV)" and fig.layout.yaxis2.title.text == "stimulus (pA)"
    assert fig.layout.xaxis2.title.text == "time (s)"
    assert "50 pA" in fig.layout.title.text and "QC" not in fig.layout.title.text
    failed = plots.sweep_figure(traces[10], None, {**row.to_dict(), "qc_passed": np.False_,
                                                   "qc_reasons": np.array(["baseline_drift"])})
    assert failed.layout.title.text.endswith("QC failed (baseline_drift)")


def test_sweep_figure_without_command_or_spikes_has_one_panel(ic_steps):
    _, _, _, traces = ic_steps
    row = pd.Series({"clamp_mode": "voltage_clamp", "sweep": np.int64(3), "stimulus_class": "hold",
                     "stimulus_amplitude_pa": pd.NA, "response_unit": None, "qc_reasons": ["noise"]})
    fig = plots.sweep_figure(traces[3][["time_s", "response"]].assign(command=np.nan), None, row)
    assert [t.name for t in fig.data] == ["response"]
    assert fig.layout.title.text == "sweep 3 · hold"
    assert fig.layout.yaxis.title.text == "response (pA)"  # voltage clamp: current response


def test_sweep_figure_missing_column_is_invalid(ic_steps):
    with pytest.raises(InvalidArgument, match="time_s"):
        plots.sweep_figure(pd.DataFrame({"t": [0.0], "response": [1.0]}))


# -- f-I curve and ISIs -------------------------------------------------------------------------------
def test_fi_curve_plots_frequency_against_amplitude(ic_steps):
    sweeps, _, feats, _ = ic_steps
    fig = plots.fi_curve(feats, sweeps)
    assert len(fig.data) == 1 and fig.data[0].name == "17o05028"
    ok = feats[(feats["feature"] == "mean_frequency_hz") & (feats["status"] == "ok")].merge(sweeps, on=["sweep"])
    ok = ok.sort_values(["stimulus_amplitude_pa", "sweep"])
    np.testing.assert_array_equal(fig.data[0].x, ok["stimulus_amplitude_pa"].to_numpy())
    np.testing.assert_array_equal(fig.data[0].y, ok["value"].to_numpy())
    assert fig.layout.xaxis.title.text == "stimulus amplitude (pA)"
    assert fig.data[0].y[-1] == pytest.approx(21.01)  # eFEL mean_frequency at +100 pA


def test_fi_curve_zero_spikes_is_zero_hz_and_excluded_sweeps_are_left_out(ic_steps):
    sweeps, _, feats, _ = ic_steps
    f = feats.copy()
    # sweep 6: no spikes (mean frequency not applicable) → 0 Hz; sweep 7 QC-excluded → not drawn
    f.loc[(f["sweep"] == 6) & (f["feature"] == "spike_count"), "value"] = 0.0
    f.loc[(f["sweep"] == 6) & (f["feature"] == "mean_frequency_hz"), ["value", "status"]] = [None, "not_applicable"]
    f.loc[f["sweep"] == 7, "status"] = "qc_excluded"
    fig = plots.fi_curve(f, sweeps)
    x, y = np.asarray(fig.data[0].x), np.asarray(fig.data[0].y)
    assert y[list(x).index(10.0)] == 0.0
    assert 20.0 not in list(x) and len(x) == len(sweeps) - 1


def test_fi_curve_errors(ic_steps):
    sweeps, _, feats, _ = ic_steps
    with pytest.raises(InvalidArgument, match="sweeps"):
        plots.fi_curve(feats)
    with pytest.raises(InvalidArgument, match="no sweep"):
        plots.fi_curve(feats, sweeps.assign(stimulus_class="ramp"))


def test_isi_histogram_patch_clamp(ic_steps):
    _, spikes, _, _ = ic_steps
    fig = plots.isi_histogram(spikes)
    assert len(fig.data) == 1 and fig.data[0].type == "histogram"
    expect = np.concatenate([np.diff(g.sort_values("peak_time_s")["peak_time_s"].to_numpy()) * 1000
                             for _, g in spikes.groupby("sweep")])
    np.testing.assert_allclose(fig.data[0].x, expect)
    assert len(fig.data[0].x) == len(spikes) - spikes["sweep"].nunique()
    assert fig.layout.xaxis.title.text == "inter-spike interval (ms)"


def test_isi_histogram_mea_per_electrode(mea):
    sp, _ = mea
    d3 = sp[sp["well"] == "D3"]
    fig = plots.isi_histogram(d3)
    expect = d3.sort_values(["electrode", "time_s"]).groupby("electrode")["time_s"].diff().dropna() * 1000
    assert fig.data[0].name == "D3"
    np.testing.assert_allclose(np.sort(fig.data[0].x), np.sort(expect.to_numpy()))
    with pytest.raises(InvalidArgument, match="bin_ms"):
        plots.isi_histogram(d3, bin_ms=0)
    with pytest.raises(InvalidArgument, match="two spikes"):
        plots.isi_histogram(d3.drop_duplicates("electrode"))


# -- MEA -------------------------------------------------------------------------------------------
def test_mea_raster_one_marker_per_spike(mea):
    sp, _ = mea
    fig = plots.mea_raster(sp, "D3")
    d3 = sp[sp["well"] == "D3"]
    tr = fig.data[0]
    assert len(tr.x) == len(d3) > 1000
    np.testing.assert_array_equal(tr.x, d3["time_s"].to_numpy())
    assert list(tr.y) == d3["electrode"].tolist()
    assert list(fig.layout.yaxis.categoryarray) == sorted(d3["electrode"].unique())
    assert fig.layout.xaxis.title.text == "time (s)" and fig.layout.yaxis.title.text == "electrode"


def test_mea_raster_selection_errors(mea):
    sp, _ = mea
    with pytest.raises(InvalidArgument, match="choose a well"):
        plots.mea_raster(sp)
    with pytest.raises(InvalidArgument, match="Z9"):
        plots.mea_raster(sp, "Z9")
    two = pd.concat([sp.head(10), sp.head(10).assign(plate="plate2")])
    with pytest.raises(InvalidArgument, match="2 plates"):
        plots.mea_raster(two, "D3")
    with pytest.raises(InvalidArgument, match="no spike"):
        plots.mea_raster(sp, "D3", t_start_s=1000.0)


def test_well_heatmap_plate_layout_and_div_panels(mea):
    _, wells = mea
    later = wells.assign(div=wells["div"] + 7, well_firing_rate_hz=wells["well_firing_rate_hz"] * 2)
    fig = plots.well_heatmap(pd.concat([wells, later]), value="well_firing_rate_hz")
    assert [t.name for t in fig.data] == ["DIV 3", "DIV 10"]
    h3, h10 = fig.data
    assert np.asarray(h3.z).shape == (6, 8)  # a 48-well Maestro plate: rows A-F x columns 1-8
    assert list(h3.y) == list("ABCDEF") and list(h3.x) == [str(i) for i in range(1, 9)]
    d3 = wells.loc[wells["well"] == "D3", "well_firing_rate_hz"].item()
    assert d3 > 0
    assert h3.z[3][2] == pytest.approx(d3) and h10.z[3][2] == pytest.approx(2 * d3)  # D3 = row 3, column 2
    z = np.asarray(h3.z, dtype=float)
    assert np.nansum(z) == pytest.approx(wells["well_firing_rate_hz"].sum())
    assert fig.layout.yaxis.autorange == "reversed"  # row A at the top


def test_well_heatmap_averages_repeats_and_leaves_missing_wells_empty(mea):
    _, wells = mea
    part = wells[wells["well"].isin(["A1", "D3"])]
    twice = pd.concat([part, part.assign(well_firing_rate_hz=part["well_firing_rate_hz"] + 1.0)])
    fig = plots.well_heatmap(twice.drop(columns="div"), value="well_firing_rate_hz", shape=(6, 8))
    z = np.asarray(fig.data[0].z, dtype=float)
    assert fig.data[0].name == "DIV ?"
    d3 = part.loc[part["well"] == "D3", "well_firing_rate_hz"].item()
    assert z[3, 2] == pytest.approx(d3 + 0.5) and np.isnan(z[5, 7])
    assert np.count_nonzero(~np.isnan(z)) == 2


def test_plate_shape_and_well_errors(mea):
    _, wells = mea
    assert plots.plate_shape(["A1", "F8"]) == (6, 8)
    assert plots.plate_shape(["H12"]) == (8, 12)
    assert plots.plate_shape(["B3"]) == (2, 3)
    assert plots.parse_well("d03") == (3, 2)
    with pytest.raises(InvalidArgument, match="well"):
        plots.parse_well("D3_31")
    with pytest.raises(InvalidArgument, match="numeric columns"):
        plots.well_heatmap(wells, value="treatment")
    with pytest.raises(InvalidArgument, match="outside"):
        plots.well_heatmap(wells, value="n_spikes", shape=(4, 6))
    with pytest.raises(InvalidArgument, match="choose one"):
        plots.well_heatmap(pd.concat([wells, wells.assign(plate="p2")]), value="n_spikes")


# -- HTML ------------------------------------------------------------------------------------------
def test_html_is_self_contained(ic_steps, mea):
    sweeps, spikes, _, traces = ic_steps
    _, wells = mea
    for fig in (plots.sweep_figure(traces[10], spikes, sweeps.iloc[10]),
                plots.well_heatmap(wells, value="n_spikes")):
        html = plots.to_html(fig, title="sweep <10>")
        assert html.lower().startswith("<!doctype html>") and "Plotly.newPlot" in html
        assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)  # plotly.js inlined, nothing fetched
        assert not re.search(r"<link[^>]*https?://", html, re.I)
        assert "cdn.plot.ly/plotly" not in html.split("</script>", 1)[1]  # no loader of a CDN copy
        assert "<title>sweep &lt;10&gt;</title>" in html
    div = plots.to_html(plots.mea_raster(mea[0], "D3"), full_html=False)
    assert div.startswith("<div") and not re.search(r"<script[^>]*\bsrc\s*=", div, re.I)
