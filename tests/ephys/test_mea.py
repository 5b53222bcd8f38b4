"""MEA readers and features on the real files in data/ephys/mea_axion and data/ephys/mea_retinal_waves.

The Axion spike list is meaRtools' example (igm-team/meaRtools; 100,957 spikes, 269 electrodes, 20 wells); the
variants of its formatting are written to tmp_path from its real rows. The HDF5 files are from sje30/waverepo.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from neurolake.ephys.bursts import MaxIntervalParams, NetworkBurstParams, max_interval_bursts, network_bursts
from neurolake.ephys.mea import (
    SPIKE_SCHEMA,
    FeatureParams,
    axion_electrode_position_um,
    features,
    features_for_well,
    open_spike_list,
    parse_axis_duration,
    plate_from_name,
    read_plate_log,
    read_spike_times_h5,
)
from neurolake.errors import CorruptData, InvalidArgument, NotFound, Unsupported

ROOT = Path(__file__).resolve().parents[2]
AXION = ROOT / "data/ephys/mea_axion"
SPIKES = AXION / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
LOG = AXION / "exampleRecording_1012016_plate1_expLog.csv.gz"
WAVES = sorted((ROOT / "data/ephys/mea_retinal_waves").glob("*.h5"))
ELECTRODE_RE = r"^[A-H]\d+_\d\d$"


# -- helpers ---------------------------------------------------------------------------------------------------
def _rows() -> list[list[str]]:
    with gzip.open(SPIKES, "rt", newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def real_rows():
    return _rows()


@pytest.fixture(scope="module")
def pandas_spikes() -> pd.DataFrame:
    """The spike list as pandas reads it: columns 3-5, electrode pattern filter (SOURCE.md's verification)."""
    df = pd.read_csv(SPIKES, usecols=[2, 3, 4])
    df.columns = ["time_s", "electrode", "amplitude_mv"]
    df = df[df["electrode"].astype(str).str.match(ELECTRODE_RE)].reset_index(drop=True)
    df["well"] = df["electrode"].str.split("_").str[0]
    return df


@pytest.fixture(scope="module")
def spike_table():
    return open_spike_list(SPIKES).read()


def _write(path: Path, rows: list[list[str]], newline: str = "\r\n") -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _ref_mi(spikes, p: MaxIntervalParams) -> np.ndarray:
    """Line-by-line port of mi.find.bursts (sjemea R/maxinterval.R), the reference for max_interval_bursts."""
    n = len(spikes)
    bursts, last_end, inb, k = [], np.nan, False, 1
    b = 0
    while k < n:
        isi = spikes[k] - spikes[k - 1]
        if inb:
            if isi > p.end_isi_s:
                end = k - 1
                inb = False
                bursts.append([b, end, spikes[b] - last_end])
                last_end = spikes[end]
        elif isi < p.beg_isi_s:
            b, inb = k - 1, True
        k += 1
    if inb:
        bursts.append([b, n - 1, spikes[b] - last_end])
    if not bursts:
        return np.zeros((0, 2), dtype=np.int64)
    merge = [i for i, x in enumerate(bursts) if x[2] < p.min_ibi_s]
    for i in reversed(merge):
        bursts[i - 1][1] = bursts[i][1]
    bursts = [x for i, x in enumerate(bursts) if i not in set(merge)]
    out = [(b, e) for b, e, _ in bursts
           if not ((spikes[e] - spikes[b]) < p.min_duration_s or (e - b + 1) < p.min_spikes)]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


# -- Axion spike list: the real file -----------------------------------------------------------------------
def test_real_spike_list_counts_and_settings():
    sl = open_spike_list(SPIKES)
    assert sl.settings["Sampling Frequency"] == "12500 Hz"
    assert sl.sampling_rate_hz == 12500.0
    assert sl.settings["Voltage Scale"] == "6.5E-08 V/sample"
    assert sl.settings["Plate Type"] == "Maestro 48-Well (Transparent)"
    assert sl.settings["AxIS Version"] == "2.0.3.3"
    assert sl.settings["Method"] == "Adaptive Threshold Crossing"
    assert sl.settings["Threshold"] == "7"
    assert sl.settings["Recording Offset from File Start"] == "0s"
    assert sl.settings["File Source"] == "OptoWT_20150802_A32_DIV18exci(000).raw"
    assert sl.sections["Spike Detector Settings"]["Pre-Spike Duration"] == "0.84 ms"
    assert sl.sections["Digital Filter Settings"]["Low Pass Cutoff Freq."] == "200 Hz"
    assert all(k == k.strip() for k in sl.settings)
    assert (sl.plate, sl.plate_source, sl.div) == ("plate1", "file_name", 3)
    assert sl.recorded_at == dt.datetime(2015, 8, 17, 16, 12)
    assert sl.pitch_um == 350.0
    tbl = sl.read()
    assert tbl.schema == SPIKE_SCHEMA
    assert tbl.num_rows == 100_957 == sl.n_spikes
    assert len(set(tbl["electrode"].to_pylist())) == 269
    assert len(set(tbl["well"].to_pylist())) == 20
    assert sl.n_rows_skipped == 0


def test_real_spike_list_equals_pandas(spike_table, pandas_spikes):
    df = pandas_spikes
    assert spike_table["electrode"].to_pylist() == df["electrode"].tolist()
    assert spike_table["well"].to_pylist() == df["well"].tolist()
    np.testing.assert_array_equal(spike_table["time_s"].to_numpy(), df["time_s"].to_numpy())
    np.testing.assert_array_equal(spike_table["amplitude_mv"].to_numpy(), df["amplitude_mv"].to_numpy())


def test_batches_have_the_requested_size():
    sl = open_spike_list(SPIKES)
    sizes = [b.num_rows for b in sl.batches(rows=30_000)]
    assert sizes == [30_000, 30_000, 30_000, 10_957]
    only = next(sl.batches(rows=5, columns=("time_s",)))
    assert only.schema.names == ["time_s"] and only.num_rows == 5
    with pytest.raises(InvalidArgument):
        next(sl.batches(rows=0))
    with pytest.raises(InvalidArgument):
        next(sl.batches(columns=("voltage",)))


def test_duration_of_a_truncated_list_is_the_last_spike():
    sl = open_spike_list(SPIKES)
    assert sl.settings_duration_s == 18 * 60 + 2           # "0s to 18m2s"
    assert sl.duration_s == pytest.approx(57.67824)        # spikes end at 57.7 s of the 1082 s section
    assert sl.duration_source == "last_spike_truncated"


def test_duration_parsing():
    assert parse_axis_duration("18m2s") == 1082
    assert parse_axis_duration("1h2m3.5s") == 3723.5
    assert parse_axis_duration("0s") == 0
    assert parse_axis_duration("abc") is None
    assert plate_from_name("x/exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz") == ("plate1", 3)
    assert plate_from_name("MyPlate_spike_list.csv") == ("MyPlate", None)


# -- Axion spike list: other formattings, written from the real rows ----------------------------------------
def _expected(rows, n):
    spikes = [r[2:5] for r in rows[1: n + 1]]
    return [r[1] for r in spikes], [float(r[0]) for r in spikes], [float(r[2]) for r in spikes]


def test_variant_plain_lf_no_leading_columns_other_header(tmp_path, real_rows):
    rows = [["Time(s)", "Electrode", "Amplitude (mV)"]] + [r[2:5] for r in real_rows[1:2001]]
    sl = open_spike_list(_write(tmp_path / "p_spike_list.csv", rows, "\n"))
    tbl = sl.read()
    el, t, a = _expected(real_rows, 2000)
    assert tbl["electrode"].to_pylist() == el
    assert tbl["time_s"].to_pylist() == t and tbl["amplitude_mv"].to_pylist() == a
    assert sl.settings == {} and sl.plate == "p" and sl.duration_source == "last_spike"
    assert sl.duration_s == t[-1]


def test_variant_no_amplitude_column(tmp_path, real_rows):
    rows = [r[:4] for r in real_rows[:1001]]
    tbl = open_spike_list(_write(tmp_path / "noamp.csv", rows)).read()
    assert tbl.num_rows == 1000
    assert tbl["amplitude_mv"].null_count == 1000
    assert tbl["time_s"].to_pylist() == _expected(real_rows, 1000)[1]


def test_variant_extra_columns_blank_lines_footer_and_settings_beyond_spikes(tmp_path, real_rows):
    # 3 leading columns, only 10 spikes (so most settings rows have empty spike cells), blank lines,
    # and a trailing AxIS "Well Information" block wider than the header.
    rows = [["Investigator", "", "", "Time (s)", "Electrode", "Amplitude(mV)"]]
    for i, r in enumerate(real_rows[1:46]):
        spike = r[2:5] if i < 10 else ["", "", ""]
        rows.append([r[0], r[1], ""] + spike)
        if i == 5:
            rows.append([])
    rows += [[], ["Well Information"] + [""] * 5, ["Well", "A1", "A2", "A3", "A4", "A5", "A6", "A7"],
             ["Treatment", "x", "", "", "", "", "", ""], ["Concentration", "1", "", "", "", "", "", ""]]
    sl = open_spike_list(_write(tmp_path / "wide.csv.gz", rows))
    assert sl.settings["Sampling Frequency"] == "12500 Hz" and sl.settings["Threshold"] == "7"
    tbl = sl.read()
    el, t, a = _expected(real_rows, 10)
    assert tbl["electrode"].to_pylist() == el and tbl["time_s"].to_pylist() == t
    assert tbl["amplitude_mv"].to_pylist() == a
    footer = [r[0] for r in sl.extra_rows]
    assert "Well Information" in footer and "Well" in footer and "Treatment" in footer


def test_variant_amplitude_in_microvolts_and_crlf_gz(tmp_path, real_rows):
    rows = [["Time (s)", "Electrode", "Amplitude(uV)"]] + [
        [r[2], r[3], str(float(r[4]) * 1000)] for r in real_rows[1:101]]
    tbl = open_spike_list(_write(tmp_path / "uv.csv.gz", rows, "\r\n")).read()
    np.testing.assert_allclose(tbl["amplitude_mv"].to_numpy(), _expected(real_rows, 100)[2], rtol=1e-12)


def test_spike_list_errors(tmp_path, real_rows):
    with pytest.raises(NotFound):
        open_spike_list(tmp_path / "missing.csv")
    raw = tmp_path / "plate.raw"
    raw.write_bytes(b"AxionBio" + bytes(100))
    with pytest.raises(Unsupported, match="export a spike list"):
        open_spike_list(raw)
    with pytest.raises(CorruptData, match="header"):
        open_spike_list(_write(tmp_path / "h.csv", [["a", "b"], ["1", "2"]]))
    with pytest.raises(CorruptData, match="empty"):
        open_spike_list(_write(tmp_path / "e.csv", []))
    bad = [real_rows[0], real_rows[1], ["", "", "zero", "A1_11", "0.1"]]
    with pytest.raises(CorruptData, match="non-numeric"):
        open_spike_list(_write(tmp_path / "b.csv", bad)).read()
    trunc = tmp_path / "t.csv.gz"
    trunc.write_bytes(SPIKES.read_bytes()[:300_000])
    with pytest.raises(CorruptData):
        open_spike_list(trunc).read()


# -- plate log ---------------------------------------------------------------------------------------------
def test_plate_log_real_file_cr_only():
    raw = gzip.decompress(LOG.read_bytes())
    assert b"\r" in raw and b"\n" not in raw and b"Dose ," in raw        # the quirks are really there
    log = read_plate_log(LOG)
    assert log.num_rows == 48
    assert log.schema.names == ["plate", "well", "treatment", "dose", "dose_unit", "div", "project",
                                "experiment_date", "size"]
    counts = pd.Series(log["treatment"].to_pylist()).value_counts(dropna=False).to_dict()
    assert counts["treatX"] == counts["treatY"] == counts["untreated"] == 8
    assert log["treatment"].null_count == 24
    assert set(log["div"].to_pylist()) == {3} and set(log["plate"].to_pylist()) == {"plate1"}
    assert log["well"].to_pylist()[:2] == ["A1", "A2"] and log["experiment_date"][0].as_py() == "1012016"


def test_plate_log_values_and_errors(tmp_path):
    p = tmp_path / "log.csv"
    p.write_bytes(b"Project ,Experiment Date,Plate SN,DIV,Well,Treatment,Size,Dose ,Units \r\n"
                  b"pr,2016,P7,14,B3,drugA,,10,uM\r\npr,2016,P7,14,B4,,,,\r\n")
    log = read_plate_log(p)
    assert log.to_pylist()[0] == {"plate": "P7", "well": "B3", "treatment": "drugA", "dose": 10.0,
                                  "dose_unit": "uM", "div": 14, "project": "pr", "experiment_date": "2016",
                                  "size": None}
    assert log.to_pylist()[1]["dose"] is None
    with pytest.raises(NotFound):
        read_plate_log(tmp_path / "none.csv")
    p.write_bytes(b"Plate,Treatment\rP,x\r")
    with pytest.raises(CorruptData, match="Well"):
        read_plate_log(p)
    p.write_bytes(b"Well,Dose\rA1,lots\r")
    with pytest.raises(CorruptData, match="dose"):
        read_plate_log(p)
    p.write_bytes(b"Well,Dose\rZ9,1\r")
    with pytest.raises(CorruptData, match="well"):
        read_plate_log(p)


# -- retinal-wave HDF5 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", WAVES, ids=lambda p: p.stem)
def test_spike_times_h5_counts_positions_meta(path):
    st = read_spike_times_h5(path)
    with h5py.File(path, "r") as f:
        total = int(f["summary/totalspikes"][()].reshape(-1)[0])
        scount = f["sCount"][()]
        epos = f["epos"][()]
        age = int(f["meta/age"][()].reshape(-1)[0])
        duration = float(f["summary/duration"][()].reshape(-1)[0])
        names = [n.decode() for n in f["names"][()]]
    assert st.spikes.num_rows == total == st.total_spikes
    per = st.spikes.group_by("electrode").aggregate([("time_s", "count")]).to_pandas()
    per = per.set_index("electrode")["time_s_count"]
    assert [int(per[n]) for n in names] == scount.tolist()
    assert st.electrodes["n_spikes"].to_pylist() == scount.tolist()
    np.testing.assert_array_equal(st.electrodes["x_um"].to_numpy(), epos[0])
    np.testing.assert_array_equal(st.electrodes["y_um"].to_numpy(), epos[1])
    assert st.meta["age_days"] == age and st.meta["age"] == f"P{age}"
    assert st.duration_s == duration and st.duration_source == "summary/duration"
    assert set(st.spikes["well"].to_pylist()) == {"A1"} and st.plate == path.stem
    assert st.spikes.schema == SPIKE_SCHEMA
    t = st.spikes.to_pandas()
    assert t.groupby("electrode", sort=False)["time_s"].apply(lambda s: s.is_monotonic_increasing).all()


def test_spike_times_h5_meta_values_and_errors(tmp_path):
    st = read_spike_times_h5(next(p for p in WAVES if "P15_DR" in p.name))
    assert (st.meta["condition"], st.meta["age"], st.array) == ("dr", "P15", "MCS_8x8_100um")
    with pytest.raises(NotFound):
        read_spike_times_h5(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CorruptData):
        read_spike_times_h5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nocount.h5", "w") as f:
        f["spikes"] = np.arange(3.0)
    with pytest.raises(CorruptData, match="sCount"):
        read_spike_times_h5(tmp_path / "nocount.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["spikes"] = np.arange(3.0)
        f["sCount"] = np.array([2, 2], dtype=np.int32)
    with pytest.raises(CorruptData, match="sum"):
        read_spike_times_h5(tmp_path / "bad.h5")


# -- max-interval bursts -----------------------------------------------------------------------------------
def test_max_interval_hand_made_trains():
    p = MaxIntervalParams()
    t = np.array([0.0, 0.05, 0.1, 0.15, 2.0, 2.05, 2.1, 5.0])
    assert max_interval_bursts(t, p).tolist() == [[0, 3], [4, 6]]
    # two spikes only: rejected by min_spikes=3; an interval equal to beg_isi does not start a burst
    assert max_interval_bursts(np.array([0.0, 0.05, 1.0]), p).shape == (0, 2)
    # (binary-exact times and parameters for the ties)
    tie = MaxIntervalParams(beg_isi_s=0.125, end_isi_s=0.25)
    assert max_interval_bursts(np.array([0.0, 0.125, 0.25, 0.375]), tie).shape == (0, 2)
    # an interval equal to end_isi does not end it: one burst of 5 spikes
    assert max_interval_bursts(np.array([0.0, 0.0625, 0.3125, 0.375, 0.4375]), tie).tolist() == [[0, 4]]
    # merging: phase-1 bursts 0.2 s apart merge when min_ibi is 0.5
    q = MaxIntervalParams(beg_isi_s=0.06, end_isi_s=0.1, min_ibi_s=0.5, min_duration_s=0.0, min_spikes=3)
    t = np.array([0.0, 0.05, 0.1, 0.3, 0.35, 0.4, 3.0, 3.05, 3.1])
    assert max_interval_bursts(t, q).tolist() == [[0, 5], [6, 8]]
    # min duration rejects a short burst
    r = MaxIntervalParams(min_duration_s=0.5)
    assert max_interval_bursts(np.array([0.0, 0.1, 0.2, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]), r).tolist() == [[3, 9]]
    assert max_interval_bursts(np.array([]), p).shape == (0, 2)


def test_max_interval_equals_reference_port_on_random_trains():
    rng = np.random.default_rng(7)
    for _ in range(400):
        t = np.cumsum(rng.exponential(rng.choice([0.03, 0.15, 0.6]), rng.integers(0, 80)))
        beg, end = sorted(rng.uniform(0, 0.5, 2))
        p = MaxIntervalParams(beg, end, rng.uniform(0, 0.6), rng.uniform(0, 0.2), int(rng.integers(2, 6)))
        np.testing.assert_array_equal(max_interval_bursts(t, p), _ref_mi(t, p))


def test_max_interval_equals_reference_port_on_real_electrodes(spike_table):
    df = spike_table.select(["electrode", "time_s"]).to_pandas()
    p = MaxIntervalParams()
    n = 0
    for _, g in df.groupby("electrode"):
        t = np.sort(g["time_s"].to_numpy())
        got = max_interval_bursts(t, p)
        np.testing.assert_array_equal(got, _ref_mi(t, p))
        n += len(got)
    assert n > 1000


def test_max_interval_errors():
    with pytest.raises(InvalidArgument, match="beg_isi_s"):
        MaxIntervalParams(beg_isi_s=0.5, end_isi_s=0.3)
    with pytest.raises(InvalidArgument, match="min_spikes"):
        MaxIntervalParams(min_spikes=1)
    with pytest.raises(InvalidArgument, match="min_ibi_s"):
        MaxIntervalParams(min_ibi_s=-1)
    with pytest.raises(InvalidArgument, match="sorted"):
        max_interval_bursts(np.array([1.0, 0.5, 0.6]))


def test_network_bursts_hand_made():
    a = np.array([[1.0, 2.0], [10.0, 11.0]])
    b = np.array([[1.5, 2.5]])
    c = np.array([[1.8, 3.0], [10.5, 10.6]])
    d = np.zeros((0, 2))
    iv, ne = network_bursts([a, b, c, d], 4, NetworkBurstParams(min_fraction=0.5, min_electrodes=2))
    assert iv.tolist() == [[1.5, 2.5], [10.5, 10.6]] and ne.tolist() == [3, 2]
    iv, ne = network_bursts([a, b, c, d], 4, NetworkBurstParams(min_fraction=0.75, min_electrodes=2))
    assert iv.tolist() == [[1.8, 2.0]] and ne.tolist() == [3]
    assert len(network_bursts([a], 1)[0]) == 0                       # fewer active electrodes than min_electrodes
    iv, _ = network_bursts([a, b, c, d], 4, NetworkBurstParams(min_fraction=0.5, merge_gap_s=10))
    assert iv.tolist() == [[1.5, 10.6]]
    with pytest.raises(InvalidArgument):
        NetworkBurstParams(min_fraction=0)


# -- features ----------------------------------------------------------------------------------------------
def test_well_firing_rates_equal_pandas(spike_table, pandas_spikes):
    sl = open_spike_list(SPIKES)
    duration = sl.duration_s
    e_rows, w_rows, nb_rows = features(spike_table, duration, read_plate_log(LOG), plate="plate1",
                                       pitch_um=sl.pitch_um)
    df = pandas_spikes
    per_well = df.groupby("well").size() / duration
    got = {r["well"]: r["well_firing_rate_hz"] for r in w_rows if r["n_spikes"]}
    assert set(got) == set(per_well.index) and len(got) == 20
    for w, rate in per_well.items():
        assert got[w] == pytest.approx(rate, rel=1e-12)
    per_el = df.groupby("electrode").size()
    assert {r["electrode"]: r["n_spikes"] for r in e_rows} == per_el.to_dict()
    rate_el = per_el / duration
    active = rate_el[rate_el * 60 >= 5]
    for r in w_rows:
        if r["n_spikes"]:
            act = active[active.index.str.startswith(r["well"] + "_")]
            assert r["n_active_electrodes"] == len(act)
            assert r["firing_rate_hz"] == pytest.approx(act.mean(), rel=1e-12)
            assert r["n_electrodes"] == int(per_el.index.str.startswith(r["well"] + "_").sum())
    # the plate log joins: 48 wells, silent ones with zero spikes
    assert len(w_rows) == 48
    b2 = next(r for r in w_rows if r["well"] == "B2")
    assert (b2["treatment"], b2["div"]) == ("treatX", 3)
    a1 = next(r for r in w_rows if r["well"] == "A1")
    assert a1["n_spikes"] == 0 and a1["well_firing_rate_hz"] == 0 and a1["firing_rate_hz"] is None
    params = json.loads(b2["burst_params"])
    assert params["bursts"]["beg_isi_s"] == 0.17 and params["active_min_spikes_per_min"] == 5.0
    assert nb_rows and all(r["end_s"] >= r["start_s"] and r["n_electrodes"] >= 2 for r in nb_rows)
    assert sum(r["well"] == "B2" for r in nb_rows) == b2["n_network_bursts"]


def test_electrode_features_values(spike_table):
    sl = open_spike_list(SPIKES)
    well = spike_table.filter(pa.compute.equal(spike_table["well"], "D3"))
    e_rows, w_row, _ = features_for_well(well, sl.duration_s, pitch_um=350.0)
    r = next(x for x in e_rows if x["electrode"] == "D3_31")
    t = np.sort(well.filter(pa.compute.equal(well["electrode"], "D3_31"))["time_s"].to_numpy())
    isi = np.diff(t)
    assert r["n_spikes"] == t.size and r["firing_rate_hz"] == pytest.approx(t.size / sl.duration_s)
    assert r["isi_mean_s"] == pytest.approx(isi.mean()) and r["isi_median_s"] == pytest.approx(np.median(isi))
    assert r["isi_cv"] == pytest.approx(isi.std(ddof=1) / isi.mean())
    b = _ref_mi(t, MaxIntervalParams())
    assert r["n_bursts"] == len(b) > 0
    lens = b[:, 1] - b[:, 0] + 1
    assert r["spikes_per_burst_mean"] == pytest.approx(lens.mean())
    assert r["pct_spikes_in_bursts"] == pytest.approx(100 * lens.sum() / t.size)
    assert r["burst_duration_mean_s"] == pytest.approx((t[b[:, 1]] - t[b[:, 0]]).mean())
    assert r["burst_rate_per_min"] == pytest.approx(len(b) / sl.duration_s * 60)
    assert (r["x_um"], r["y_um"]) == (700.0, 0.0) == axion_electrode_position_um("D3_31", 350.0)
    # a stricter activity threshold leaves fewer active electrodes
    strict = features_for_well(well, sl.duration_s, FeatureParams(active_min_spikes_per_min=600))[1]
    assert strict["n_active_electrodes"] < w_row["n_active_electrodes"]


def test_features_on_retinal_waves_and_errors():
    st = read_spike_times_h5(WAVES[0])
    pos = {r["electrode"]: (r["x_um"], r["y_um"]) for r in st.electrodes.to_pylist()}
    e_rows, w_rows, _ = features(st.spikes, st.duration_s, positions=pos)
    assert len(w_rows) == 1 and w_rows[0]["n_spikes"] == st.total_spikes
    assert w_rows[0]["well_firing_rate_hz"] == pytest.approx(st.total_spikes / st.duration_s)
    assert all(r["x_um"] is not None for r in e_rows)
    with pytest.raises(InvalidArgument, match="duration_s"):
        features_for_well(st.spikes, 0.0)
    with pytest.raises(InvalidArgument, match="time_s"):
        features_for_well(st.spikes.select(["electrode"]), 10.0)
    with pytest.raises(InvalidArgument):
        FeatureParams(active_min_spikes_per_min=-1)


def test_spike_list_without_spikes_uses_the_settings_duration(tmp_path, real_rows):
    rows = [real_rows[0]] + [r[:2] + ["", "", ""] for r in real_rows[1:46]]
    sl = open_spike_list(_write(tmp_path / "silent.csv", rows))
    assert sl.read().num_rows == 0 and sl.n_rows_skipped == 45
    assert (sl.duration_s, sl.duration_source) == (1082.0, "settings")


def test_features_without_well_column_match(spike_table):
    a = features(spike_table, 60.0)[1]
    b = features(spike_table.drop_columns(["well"]), 60.0)[1]
    assert a == b and len(a) == 20


def test_per_table_wrappers_agree(spike_table):
    from neurolake.ephys.mea import electrode_features, well_features, well_network_bursts
    d2 = spike_table.filter(pa.compute.equal(spike_table["well"], "D2"))
    e, w, n = features_for_well(d2, 57.67824)
    assert electrode_features(d2, 57.67824) == e
    assert well_features(d2, 57.67824) == w
    assert well_network_bursts(d2, 57.67824) == n
