"""Annotation tables in Python: real tables round-trip, history, queries, binding, refused bad input."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from annotations_data import PINKY, SITE_PROPS, navis_sites, pinky_somas, schlegel_cell_types

from neurolake.annotations import create_table, get_table, list_tables
from neurolake.errors import AlreadyExists, InvalidArgument, NotFound, OutOfBounds


@pytest.fixture(scope="module")
def ann_lake(ann_lake_both):
    """Every test here runs on the local annotation lake, then on the same lake on S3 (conftest.py)."""
    return ann_lake_both


def _same(stored: pd.DataFrame, given: pd.DataFrame, cols) -> None:
    for c in cols:
        a, b = stored[c], given[c]
        if pd.api.types.is_numeric_dtype(b):
            np.testing.assert_array_equal(a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64), err_msg=c)
        else:
            assert a.fillna("<NA>").astype(str).tolist() == b.fillna("<NA>").astype(str).tolist(), c


def test_real_tables_round_trip(ann_lake):
    sites = navis_sites()
    t = get_table(ann_lake, "hemibrain", "da1_sites")
    got = t.query().df()
    assert len(got) == len(sites) == 3136 + 3010 + 2943
    assert got["id"].dtype == "UInt64" and got["id"].tolist() == list(range(1, len(sites) + 1))
    _same(got, sites, list(sites.columns))
    assert (got["type"] == "pre").sum() == 701 + 646 + 623

    ct = schlegel_cell_types()
    got = get_table(ann_lake, "hemibrain", "cell_types").query().df()
    _same(got, ct, list(ct.columns))
    assert got["pt_root_id"].is_unique  # hemibrain body ids are unique in the source

    somas = pinky_somas()
    got = get_table(ann_lake, "pinky100", "somas").query().df()
    assert len(got) == 363
    _same(got, somas, list(somas.columns))
    assert got["pt_root_id"].max() == somas["pt_root_id"].max()  # 18-digit root ids stay exact

    syn = get_table(ann_lake, "pinky100", "synapses").query().pl()
    assert syn.height == 1981
    src = pd.read_csv(PINKY / "synapses.csv")
    assert syn["pre_pt_root_id"].to_list() == src["pre"].tolist()
    assert syn["post_pt_root_id"].to_list() == src["post"].tolist()
    assert list_tables(ann_lake, "pinky100") == ["somas", "synapses"]


def test_bbox_filters_ids_and_units(ann_lake):
    t = get_table(ann_lake, "hemibrain", "da1_sites")
    df = navis_sites()
    lo = np.array([df.pt_position_x.quantile(0.2), df.pt_position_y.quantile(0.2), df.pt_position_z.quantile(0.2)])
    hi = np.array([df.pt_position_x.quantile(0.8), df.pt_position_y.quantile(0.8), df.pt_position_z.quantile(0.8)])
    inside = ((df[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy() >= lo)
              & (df[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy() < hi)).all(axis=1)
    want = np.flatnonzero(inside) + 1  # ids were given in file order
    got_nm = t.query(bbox=[lo * 8, hi * 8], units="nm").df()
    got_vx = t.query(bbox=[lo, hi], units="voxels").df()
    assert got_nm["id"].tolist() == want.tolist() == got_vx["id"].tolist()
    assert 0 < len(want) < len(df)
    lh = t.query(bbox=[lo * 8, hi * 8], filters={"roi": "AL(R)", "type": ["pre"]}).arrow()
    assert set(lh.column("roi").to_pylist()) == {"AL(R)"} and set(lh.column("type").to_pylist()) == {"pre"}
    assert lh.num_rows == int((inside & (df.roi == "AL(R)") & (df.type == "pre")).sum())
    nm = t.query(ids=[5, 1], positions="nm").df()
    assert nm["id"].tolist() == [1, 5]
    assert nm["pt_position_x"].tolist() == [df.pt_position_x[0] * 8.0, df.pt_position_x[4] * 8.0]
    assert t.query(filters={"body_id": 754534424}, columns=["body_id"]).df()["body_id"].nunique() == 1
    with pytest.raises(InvalidArgument, match="nosuch"):
        t.query(filters={"nosuch": 1}).df()
    with pytest.raises(InvalidArgument, match="bbox"):
        t.query(bbox=[[0, 0, 0], [0, 10, 10]]).df()


def test_history_update_delete_and_past_state(ann_lake):
    t = create_table(ann_lake, "hemibrain", "history_types", "cell_type")
    ct = schlegel_cell_types().head(100)
    ids = t.append(ct.drop(columns=["cell_class"]))
    t1 = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    new = t.update(pd.DataFrame({"id": ids[:3], "cell_type": ["A", "B", "C"]}))
    t2 = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    assert t.delete(ids[3:5]) == 2
    now = t.query().df()
    assert len(now) == 100 - 3 + 3 - 2
    assert set(now["id"]).isdisjoint(set(ids[:5].tolist()))
    upd = now.set_index("id").loc[new]
    assert upd["cell_type"].tolist() == ["A", "B", "C"]
    assert upd["pt_root_id"].tolist() == ct["pt_root_id"][:3].tolist()  # other columns carried over
    past = t.query(timestamp=t1).df()
    assert past["id"].tolist() == ids.tolist()
    _same(past, ct.drop(columns=["cell_class"]), ["pt_position_x", "pt_root_id", "cell_type"])
    mid = t.query(timestamp=t2).df()
    assert len(mid) == 100 and set(mid["id"]) == set(ids[3:].tolist()) | set(new.tolist())
    everything = t.query(include_deleted=True).df()
    assert len(everything) == 103
    old = everything.set_index("id").loc[ids[:3]]
    assert old["superceded_id"].tolist() == new.tolist() and old["deleted"].notna().all()
    assert [h["neurolake_action"] for h in t.history()[:3]] == ["delete", "update", "append"]
    with pytest.raises(NotFound, match=str(ids[0])):
        t.update(pd.DataFrame({"id": [ids[0]], "cell_type": ["again"]}))  # already superseded
    with pytest.raises(NotFound):
        t.delete([ids[3]])


def test_buffered_writer_commits_per_flush(ann_lake):
    t = create_table(ann_lake, "hemibrain", "buffered_sites", "point", properties=SITE_PROPS)
    sites = navis_sites()
    v0 = t.version
    with t.writer(flush_rows=4000) as w:
        for start in range(0, len(sites), 1000):
            w.add(sites.iloc[start:start + 1000])
        assert w.flushes == 2 and w.buffered == len(sites) - 8000
    assert t.version == v0 + 3 and w.flushes == 3
    assert sorted(w.ids.tolist()) == t.query(columns=["id"]).df()["id"].tolist()
    with pytest.raises(RuntimeError), t.writer(flush_rows=10_000) as w2:
        w2.add(sites.iloc[:10])
        raise RuntimeError("crash before flush")
    assert t.version == v0 + 3 and t.count() == len(sites)  # the unflushed buffer is lost, nothing else


def test_supervoxel_binding_matches_cutout(ann_lake):
    labels = ann_lake.layer("gerhard2013", "labels")
    vol = labels[:, :, :]
    t = create_table(ann_lake, "gerhard2013", "bound_points", "point", segmentation_layer="labels")
    rng = np.random.default_rng(4)
    xyz = np.stack([rng.uniform(0, 1024, 500), rng.uniform(0, 1024, 500), rng.uniform(0, 20, 500)], axis=1)
    t.append(pd.DataFrame({"pt_position_x": xyz[:, 0], "pt_position_y": xyz[:, 1], "pt_position_z": xyz[:, 2]}))
    got = t.query().df()
    want = vol[xyz[:, 2].astype(int), xyz[:, 1].astype(int), xyz[:, 0].astype(int)]
    assert got["pt_supervoxel_id"].to_numpy(dtype=np.uint64).tolist() == want.tolist()
    assert len(set(want.tolist())) > 3
    # bbox in voxels of a coarser mip of the layer: mip 1 halves x and y
    box = t.query(bbox=[[0, 0, 0], [256, 256, 20]], units="voxels", mip=1).df()
    assert box["id"].tolist() == (np.flatnonzero((xyz[:, 0] < 512) & (xyz[:, 1] < 512)) + 1).tolist()


def _unchanged(t, before) -> None:
    assert t.version == before[0]
    pd.testing.assert_frame_equal(t.query(include_deleted=True).df(), before[1])


def _state(t):
    return t.version, t.query(include_deleted=True).df()


@pytest.mark.parametrize("case", ["missing", "mistyped", "nan", "outside", "dup_batch", "dup_existing",
                                  "unknown", "bad_id", "bad_metadata"])
def test_bad_batches_are_refused_whole(ann_lake, case):
    t = get_table(ann_lake, "gerhard2013", "synapses")
    before = _state(t)
    good = {"ctr_pt_position_x": [10.0, 20.0, 30.0], "ctr_pt_position_y": [10.0, 20.0, 30.0],
            "ctr_pt_position_z": [1.0, 2.0, 3.0], "size": [1.0, 2.0, 3.0]}
    df = pd.DataFrame(good)
    err, match = InvalidArgument, None
    if case == "missing":
        df = df.drop(columns=["ctr_pt_position_z"])
        match = "ctr_pt_position_z"
    elif case == "mistyped":
        df["size"] = ["1", "big", "3"]
        match = r"'size'.*rows \[1\]"
    elif case == "nan":
        df.loc[2, "ctr_pt_position_x"] = np.nan
        match = r"ctr_pt.*rows \[2\]"
    elif case == "outside":
        df.loc[1, "ctr_pt_position_x"] = 5000.0  # the volume is 1024 voxels wide
        err, match = OutOfBounds, r"ctr_pt.*rows \[1\]"
    elif case == "dup_batch":
        df["id"] = [900, 901, 900]
        err, match = AlreadyExists, r"900.*rows \[0, 2\]"
    elif case == "dup_existing":
        df["id"] = [1000, 1, 1001]  # id 1 is a detected synapse
        err, match = AlreadyExists, r"\[1\].*rows \[1\]"
    elif case == "unknown":
        df["colour"] = "red"
        match = "colour"
    elif case == "bad_id":
        df["id"] = [1.5, 2, 3]
        match = r"'id'.*rows \[0\]"
    elif case == "bad_metadata":
        df["metadata"] = ['{"a": 1}', "not json", None]
        match = r"metadata.*rows \[1\]"
    with pytest.raises(err, match=match):
        t.append(df)
    _unchanged(t, before)


def test_typed_errors_name_things(ann_lake):
    with pytest.raises(InvalidArgument, match="schema 'synapses' is unknown"):
        create_table(ann_lake, "hemibrain", "x", "synapses")
    with pytest.raises(AlreadyExists):
        create_table(ann_lake, "hemibrain", "da1_sites", "point")
    with pytest.raises(NotFound, match="da1_sites"):
        get_table(ann_lake, "hemibrain", "nope")
    with pytest.raises(InvalidArgument, match="segmentation"):
        create_table(ann_lake, "gerhard2013", "img_bound", "point", segmentation_layer="image")
    with pytest.raises(InvalidArgument, match="property 'cell_type'"):
        create_table(ann_lake, "hemibrain", "dup_prop", "cell_type", properties={"cell_type": "str"})


def test_arrow_input_and_caveclient_style_positions(ann_lake):
    t = create_table(ann_lake, "hemibrain", "somas_list", "nucleus")
    somas = schlegel_cell_types().head(50)
    pos = somas[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy().tolist()
    t.append(pd.DataFrame({"pt_position": pos, "volume": np.arange(50, dtype=float)}))
    t.append(pa.table({"pt_position_x": [1.0], "pt_position_y": [2.0], "pt_position_z": [3.0]}))
    got = t.query().df()
    assert got["pt_position_x"].tolist()[:50] == somas["pt_position_x"].astype(float).tolist()
    assert got["volume"].tolist()[:50] == list(range(50)) and got["id"].tolist() == list(range(1, 52))


def test_postgres_catalog(new_pg_database, tmp_path, monkeypatch):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "pg", database_url=new_pg_database())
    try:
        lake.create_datastack("hemibrain", (8, 8, 8))
        t = create_table(lake, "hemibrain", "sites", "point", properties=SITE_PROPS)
        ids = t.append(navis_sites().head(500))
        assert ids.tolist() == list(range(1, 501))
        assert t.update(pd.DataFrame({"id": [1], "roi": ["X"]})).tolist() == [501]
        with pytest.raises(AlreadyExists):
            t.append(navis_sites().head(2).assign(id=[2, 3]))
        assert get_table(lake, "hemibrain", "sites").count() == 500
        assert "postgresql" in lake.catalog.url
    finally:
        lake.close()


def test_large_append_is_one_commit_and_bbox_uses_row_groups(ann_lake):
    """300k rows (the navis sites tiled 34 times, shifted) go through the pipelined stream as one
    commit; bbox answers from the row-group index equal a pandas filter, also after edits."""
    t = create_table(ann_lake, "hemibrain", "tiled_sites", "point", properties=SITE_PROPS)
    base = navis_sites()
    parts = []
    for k in range(34):
        p = base.copy()
        p["pt_position_x"] = p["pt_position_x"] + 2000 * (k % 6)
        p["pt_position_z"] = p["pt_position_z"] + 3000 * (k // 6)
        parts.append(p)
    big = pd.concat(parts, ignore_index=True)
    v0 = t.version
    ids = t.append(big)
    assert t.version == v0 + 1 and ids.tolist() == list(range(1, len(big) + 1))
    assert t.row_group_index().num_row_groups > 50
    pts = big[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy()
    rng = np.random.default_rng(1)
    for _ in range(5):
        lo = pts[rng.integers(len(pts))] - rng.uniform(200, 2000, 3)
        hi = lo + rng.uniform(500, 4000, 3)
        want = np.flatnonzero(((pts >= lo) & (pts < hi)).all(axis=1)) + 1
        got = t.query(bbox=[lo, hi], units="voxels", columns=["roi"]).df()
        assert list(got.columns) == ["roi"] and len(got) == len(want)
        assert t.query(bbox=[lo, hi], units="voxels").df()["id"].tolist() == want.tolist()
    t1 = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    t.delete(want[:3].tolist())
    assert t.query(bbox=[lo, hi], units="voxels").df()["id"].tolist() == want[3:].tolist()
    assert t.query(bbox=[lo, hi], units="voxels", timestamp=t1).df()["id"].tolist() == want.tolist()
    # a synapse table without positions: no row group can match a box
    assert len(get_table(ann_lake, "pinky100", "synapses").query(bbox=[[0, 0, 0], [1e9, 1e9, 1e9]]).df()) == 0


def test_boxes_as_ranges_and_positions_at_a_desired_resolution(ann_lake):
    """The same box as bbox=[[…], […]] or as x=/y=/z= ranges; positions in voxels, nm or any resolution."""
    t = get_table(ann_lake, "hemibrain", "da1_sites")
    lo, hi = [10000, 10000, 8000], [20000, 22000, 20000]
    by_bbox = t.query(bbox=[lo, hi], units="voxels").df()
    by_ranges = t.query(x=(lo[0], hi[0]), y=(lo[1], hi[1]), z=(lo[2], hi[2]), units="voxels").df()
    assert 0 < len(by_bbox) < t.count() and by_bbox["id"].tolist() == by_ranges["id"].tolist()
    only_x = t.query(x=(lo[0], hi[0]), units="voxels").df()  # y and z unbounded
    assert set(by_bbox["id"]) <= set(only_x["id"]) and len(only_x) > len(by_bbox)
    assert ((only_x["pt_position_x"] >= lo[0]) & (only_x["pt_position_x"] < hi[0])).all()
    vox = t.query(ids=[1, 2]).df()
    nm = t.query(ids=[1, 2], positions="nm").df()
    coarse = t.query(ids=[1, 2], desired_resolution=(16, 16, 16)).df()  # hemibrain voxels are 8 nm
    assert nm["pt_position_x"].tolist() == [v * 8.0 for v in vox["pt_position_x"]]
    assert coarse["pt_position_y"].tolist() == [v / 2.0 for v in vox["pt_position_y"]]
    assert coarse.attrs["positions"] == [16, 16, 16] and nm.attrs["table"] == "da1_sites"
    with pytest.raises(InvalidArgument, match="either bbox or x/y/z"):
        t.query(bbox=[lo, hi], x=(0, 1))
    with pytest.raises(InvalidArgument, match="x must be a range"):
        t.query(x=5)
    with pytest.raises(InvalidArgument, match="desired_resolution"):
        t.query(desired_resolution=(0, 8, 8))
