"""The ephys ETL on every shipped recording: loads, idempotence, replacement, errors, a killed batch, SQL."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyabf
import pytest

from neurolake import open_lake
from neurolake.ephys import etl, tables
from neurolake.errors import InvalidArgument, NotFound, Unsupported
from tests.faults.killing import run_killed

DATA = Path(__file__).resolve().parents[2] / "data" / "ephys"
ABF = sorted((DATA / "abf").glob("*.abf"))
DS = "lab"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A lake with every shipped recording ingested once (and the report)."""
    lake = open_lake(tmp_path_factory.mktemp("ephys") / "lake", create=True)
    report = etl.ingest(lake, DS, DATA, lab="shared", conditions={"origin": "public"})
    yield lake, report
    lake.close()


def test_every_shipped_file_loads(loaded):
    lake, report = loaded
    assert report.errors == [], report.errors
    names = sorted(Path(e["path"]).name for e in report.loaded)
    expected = sorted([p.name for p in ABF] + ["99111002.nwb"]
                      + [p.name for p in (DATA / "mea_axion").glob("*.csv.gz")]
                      + [p.name for p in (DATA / "mea_retinal_waves").glob("*.h5")])
    assert names == expected
    files = lake[DS].ephys.table("files").df()
    assert len(files) == len(expected) and files["file_sha256"].is_unique
    assert set(files["lab"]) == {"shared"}
    # SOURCE.md files are not recordings: ignored, not errors
    assert all(p.endswith(("SOURCE.md", ".txt")) for p in report.ignored)


def test_sweeps_equal_pyabf(loaded):
    lake, _ = loaded
    ep = lake[DS].ephys
    sweeps = ep.table("sweeps").df()
    for path in ABF:
        abf = pyabf.ABF(str(path))
        row = ep.file(path.name)
        mine = sweeps[sweeps.file_sha256 == row["file_sha256"]]
        assert len(mine) == abf.sweepCount * abf.channelCount, path.name
        assert set(mine["n_samples"]) == {abf.sweepPointCount}
        assert set(mine["sampling_rate_hz"]) == {float(abf.sampleRate)}
    # the stored trace is the reader's data (units converted by the reader; mV stays mV)
    path = DATA / "abf" / "17o05028_ic_steps.abf"
    abf = pyabf.ABF(str(path))
    abf.setSweep(5, channel=0)
    tr = ep.trace(path.name, 5).df()
    np.testing.assert_allclose(tr["response"].to_numpy(), abf.sweepY, rtol=0, atol=1e-9)
    np.testing.assert_allclose(tr["command"].to_numpy(), abf.sweepC, rtol=0, atol=1e-9)
    np.testing.assert_allclose(tr["time_s"].to_numpy(), abf.sweepX, rtol=0, atol=1e-9)
    dec = ep.trace(path.name, 5, max_points=1000).df()
    assert len(dec) <= 1000 and dec["response"].max() == tr["response"].max()  # spikes survive decimation


def test_current_clamp_steps_have_cell_features(loaded):
    lake, _ = loaded
    ep = lake[DS].ephys
    sha = ep.file("17o05028_ic_steps.abf")["file_sha256"]
    cf = ep.table("cell_features", file_sha256=sha).df().set_index("feature")
    assert cf.loc["rheobase_pa", "status"] == "ok"
    assert -50 <= cf.loc["rheobase_pa", "value"] <= 150
    assert set(cf["library"]) == {"efel"} and cf["library_version"].notna().all()
    sp = ep.table("spikes", file_sha256=sha).df()
    assert len(sp) > 0 and (sp["peak_mv"] > sp["threshold_mv"]).all()
    # every feature value has a status
    sf = ep.table("sweep_features").df()
    assert sf["status"].str.match(r"^(ok|not_applicable|qc_excluded|failed:.+)$").all()


def test_mea_well_rates_equal_pandas(loaded):
    lake, _ = loaded
    ep = lake[DS].ephys
    path = DATA / "mea_axion" / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
    sha = ep.file(path.name)["file_sha256"]
    raw = pd.read_csv(path, usecols=[2, 3, 4], header=0, names=["t", "electrode", "amp"], dtype=str)
    raw = raw[raw["electrode"].fillna("").str.match(r"^[A-H]\d+_\d\d$")]
    raw["well"] = raw["electrode"].str.split("_").str[0]
    counts = raw.groupby("well").size()
    wells = ep.table("mea_wells", file_sha256=sha).df().set_index("well")
    assert len(wells) == 48  # every well of the 48-well plate log; wells without spikes have 0
    counts = counts.reindex(wells.index, fill_value=0)
    assert wells["n_spikes"].sort_index().tolist() == counts.sort_index().tolist()
    assert (counts > 0).sum() == 20
    spikes = ep.table("mea_spikes", file_sha256=sha).df()
    assert len(spikes) == len(raw) == 100_957
    duration = wells["duration_s"].iloc[0]
    np.testing.assert_allclose(wells["well_firing_rate_hz"].sort_index().to_numpy(),
                               (counts / duration).sort_index().to_numpy(), rtol=1e-12)
    # the plate log maps wells to treatments
    assert {"treatX", "treatY", "untreated"} <= set(wells["treatment"].dropna())


def test_sql_reaches_the_tables(loaded):
    lake, _ = loaded
    res = lake.sql(f"SELECT treatment, div, avg(firing_rate_hz) AS rate FROM {DS}.ephys.mea_wells "
                   "WHERE treatment IS NOT NULL GROUP BY ALL ORDER BY ALL")
    df = res.df()
    wells = lake[DS].ephys.table("mea_wells").df()
    wells = wells[wells["treatment"].notna()]
    want = wells.groupby(["treatment", "div"], dropna=False)["firing_rate_hz"].mean().reset_index()
    assert df["treatment"].tolist() == want["treatment"].tolist()
    np.testing.assert_allclose(df["rate"].to_numpy(), want["firing_rate_hz"].to_numpy())
    inp = res.manifest["run"]["facets"]["neurolake"]["inputs"][0]
    assert inp["kind"] == "ephys" and inp["pin"]["delta_version"] == tables.version(lake, DS, "mea_wells")
    assert lake.reproduce(res.run_id)["status"] == "identical"
    with pytest.raises(NotFound, match="mea_wells"):
        lake.sql(f"SELECT * FROM {DS}.ephys.mea_well")


def test_reingest_adds_nothing(loaded):
    lake, _ = loaded
    before = {t: tables.version(lake, DS, t) for t in tables.TABLES}
    again = lake[DS].ephys.ingest(DATA)
    assert again.loaded == [] and again.replaced == [] and again.errors == []
    assert len(again.skipped) == len(lake[DS].ephys.table("files").arrow())
    assert {t: tables.version(lake, DS, t) for t in tables.TABLES} == before


def _small_batch(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("17o05028_ic_steps.abf", "File_axon_5.abf", "171116sh_0011.abf"):
        shutil.copy(DATA / "abf" / name, folder / name)
    return folder


def test_bad_files_are_recorded_and_the_batch_goes_on(tmp_path):
    folder = _small_batch(tmp_path / "in")
    whole = (DATA / "abf" / "2019_07_24_0055_fsi.abf").read_bytes()
    (folder / "truncated.abf").write_bytes(whole[: len(whole) // 3])
    (folder / "plate.raw").write_bytes(b"AxionBio" + b"\0" * 100)
    (folder / "garbage.nwb").write_bytes(b"not hdf5 at all")
    lake = open_lake(tmp_path / "lake", create=True)
    report = etl.ingest(lake, DS, folder)
    assert sorted(Path(e["path"]).name for e in report.loaded) == ["171116sh_0011.abf", "17o05028_ic_steps.abf",
                                                                    "File_axon_5.abf"]
    errs = lake[DS].ephys.table("errors").df().set_index("path")
    codes = {Path(p).name: c for p, c in errs["error_code"].items()}
    assert codes == {"truncated.abf": "corrupt_data", "plate.raw": "unsupported", "garbage.nwb": "corrupt_data"}
    assert "spike list" in errs.loc[str(folder / "plate.raw"), "message"]
    # the same failures again are not recorded twice
    etl.ingest(lake, DS, folder)
    assert len(lake[DS].ephys.table("errors").arrow()) == 3
    with pytest.raises(Unsupported):
        etl.detect_format(folder / "plate.raw")
    lake.close()


def test_changed_file_replaces_its_rows(tmp_path):
    folder = _small_batch(tmp_path / "in")
    lake = open_lake(tmp_path / "lake", create=True)
    etl.ingest(lake, DS, folder)
    ep = lake[DS].ephys
    old_sha = ep.file("File_axon_5.abf")["file_sha256"]
    v_before = tables.version(lake, DS, "sweeps")
    shutil.copy(DATA / "abf" / "2019_07_24_0055_fsi.abf", folder / "File_axon_5.abf")  # new bytes, same path
    report = etl.ingest(lake, DS, folder)
    assert [Path(e["path"]).name for e in report.replaced] == ["File_axon_5.abf"] and report.loaded == []
    new = ep.file("File_axon_5.abf")
    assert new["file_sha256"] != old_sha and new["n_sweeps"] == 17
    sweeps = ep.table("sweeps").df()
    assert old_sha not in set(sweeps["file_sha256"]) and (sweeps["file_sha256"] == new["file_sha256"]).sum() == 17
    # the old rows stay readable at the earlier version
    old = ep.table("sweeps", version=v_before).df()
    assert (old["file_sha256"] == old_sha).sum() == 9
    with pytest.raises(NotFound):
        ep.trace(old_sha, 0)
    lake.close()


def test_killed_mid_batch_leaves_no_half_loaded_file(tmp_path):
    folder = _small_batch(tmp_path / "in")
    lake_path = tmp_path / "lake"
    open_lake(lake_path, create=True).close()
    script = """
import sys
from neurolake import open_lake
from neurolake.ephys import etl, tables
real = tables.append
def append(lake, ds, table, data, **kw):
    if table == "files":
        die()
    return real(lake, ds, table, data, **kw)
tables.append = append
etl.ingest(open_lake(sys.argv[1]), "lab", sys.argv[2])
"""
    run_killed(script, lake_path, folder)
    lake = open_lake(lake_path)
    assert tables.version(lake, DS, "sweeps") is not None  # rows were written …
    assert not tables.exists(lake, DS, "files")  # … but no file is loaded
    ep = lake[DS].ephys
    assert len(ep.table("sweeps").arrow()) == 0  # readers see no half-loaded file
    raw = tables.read(lake, DS, "sweeps", loaded_only=False)
    assert raw.num_rows > 0
    report = ep.ingest(folder)
    assert report.orphans_removed.get("sweeps") == 3
    clean = open_lake(tmp_path / "clean", create=True)
    etl.ingest(clean, DS, folder)
    for t in ("sweeps", "spikes", "sweep_features", "cell_features"):
        a = tables.read(lake, DS, t, loaded_only=False).to_pandas().drop(columns=[], errors="ignore")
        b = tables.read(clean, DS, t, loaded_only=False).to_pandas()
        key = [c for c in a.columns if c not in ("settings",)]
        a = a.sort_values(key[:6]).reset_index(drop=True)
        b = b.sort_values(key[:6]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    lake.close()
    clean.close()


def test_missing_source_and_bad_names(tmp_path):
    lake = open_lake(tmp_path / "lake", create=True)
    with pytest.raises(NotFound, match="no file or folder"):
        etl.ingest(lake, DS, tmp_path / "nope")
    etl.ingest(lake, DS, DATA / "abf" / "File_axon_5.abf")
    ep = lake[DS].ephys
    with pytest.raises(NotFound, match="ephys table"):
        ep.table("sweep")
    with pytest.raises(InvalidArgument, match="no column"):
        ep.table("sweeps", columns=["voltage"])
    with pytest.raises(NotFound):
        ep.file("missing.abf")
    with pytest.raises(NotFound):
        ep.trace("File_axon_5.abf", 99)
    with pytest.raises(InvalidArgument, match="plot kind"):
        ep.plot("spectrogram")
    lake.close()


def test_plate_log_gz_cr_only(tmp_path):
    """The plate log is CR-only inside gzip: detected as a plate log by name and by content."""
    path = DATA / "mea_axion" / "exampleRecording_1012016_plate1_expLog.csv.gz"
    assert etl.detect_format(path) == "axion_plate_log"
    renamed = tmp_path / "layout.csv"
    renamed.write_bytes(gzip.decompress(path.read_bytes()))
    assert etl.detect_format(renamed) == "axion_plate_log"
