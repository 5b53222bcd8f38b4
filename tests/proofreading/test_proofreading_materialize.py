"""Materialization versions on the gala segmentation: frozen, not changed by later edits, expirable."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from neurolake.annotations import get_table
from neurolake.connectome import Connectome
from neurolake.errors import InvalidArgument, NotFound
from neurolake.materialize import (
    VersionExpired,
    expire,
    get_version,
    live_query,
    materialize,
    query_version,
    versions,
)
from neurolake.proofreading import segmentation


def _voxel_labels(lake, df, point):
    pts = np.stack([df[f"{point}_position_{a}"].to_numpy() for a in "zyx"], axis=1).astype(np.int64)
    return lake.layer("gala", "segmentation").read_points(pts).astype(np.uint64)


def test_version_binds_annotations_to_roots_at_its_time(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    v = get_version(lake, "gala", 1)
    assert v["valid"] and v["status"] == "AVAILABLE" and set(v["tables"]) == {"synapses", "cell_types"}
    df = query_version(lake, "gala", 1, "synapses").df()
    assert len(df) == v["tables"]["synapses"]["rows"] == get_table(lake, "gala", "synapses").count()
    # supervoxels under the points are the labels of the real volume, roots are their roots at T
    for p in ("pre_pt", "post_pt"):
        labels = _voxel_labels(lake, df, p)
        assert (df[f"{p}_supervoxel_id"].to_numpy(dtype=np.uint64) == labels).all()
        assert (df[f"{p}_root_id"].to_numpy(dtype=np.uint64)
                == seg.roots(labels, timestamp=v["timestamp"])).all()
    assert (df["pre_pt_root_id"] != df["post_pt_root_id"]).all()  # contacts between two neurons


def test_later_edits_do_not_change_a_version(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    v1 = query_version(lake, "gala", 1, "synapses").df()
    # merge the two neurons of the first synapse, split another pair after a merge
    a, b = int(v1["pre_pt_supervoxel_id"].iloc[0]), int(v1["post_pt_supervoxel_id"].iloc[0])
    m = seg.merge(a, b, author="editor")
    (merged,) = m["new_roots"]
    time.sleep(0.01)
    v2 = materialize(lake, "gala")
    assert v2["version"] == 2 and [x["version"] for x in versions(lake, "gala")] == [1, 2]
    again = query_version(lake, "gala", 1, "synapses").df()
    assert again.equals(v1)  # version 1 is frozen
    d2 = query_version(lake, "gala", 2, "synapses").df()
    row = d2[d2["id"] == v1["id"].iloc[0]].iloc[0]
    assert int(row["pre_pt_root_id"]) == int(row["post_pt_root_id"]) == merged
    # roots of version 1 are expired now, but their supervoxels are unchanged
    assert not seg.is_latest([int(v1["pre_pt_root_id"].iloc[0])])[0]
    # a live query at version 1's time gives version 1's answer; now gives version 2's
    t1 = get_version(lake, "gala", 1)["timestamp"]
    live1 = live_query(lake, "gala", "synapses", t1).df()
    assert live1["pre_pt_root_id"].tolist() == v1["pre_pt_root_id"].tolist()
    live_now = live_query(lake, "gala", "synapses").df()
    assert live_now["pre_pt_root_id"].tolist() == d2["pre_pt_root_id"].tolist()
    # a new annotation after version 2 is in neither version
    get_table(lake, "gala", "synapses").append(v1.iloc[:1][["pre_pt_position_x", "pre_pt_position_y",
                                                             "pre_pt_position_z", "post_pt_position_x",
                                                             "post_pt_position_y", "post_pt_position_z",
                                                             "ctr_pt_position_x", "ctr_pt_position_y",
                                                             "ctr_pt_position_z", "size"]])
    assert len(query_version(lake, "gala", 2, "synapses").df()) == len(d2)
    assert len(live_query(lake, "gala", "synapses").df()) == len(d2) + 1
    # the connectome of each version: merging two partners makes one node with an autapse
    c1 = Connectome.from_version(lake, "gala", 1, "synapses", cell_type_table="cell_types")
    c2 = Connectome.from_version(lake, "gala", 2, "synapses", cell_type_table="cell_types")
    assert c1.n_synapses == c2.n_synapses == len(v1)
    assert len(c2.nodes) == len(c1.nodes) - 1
    assert ((c2.edges["pre"] == merged) & (c2.edges["post"] == merged)).any()
    assert set(c1.nodes["cell_type"].dropna()) == {"large", "small"}
    mat = c1.connectivity_matrix("cell_type")
    assert int(mat.to_numpy().sum()) == len(v1)


def test_filters_and_errors(gala_copy):
    lake = gala_copy
    df = query_version(lake, "gala", 1, "synapses").df()
    r = int(df["pre_pt_root_id"].iloc[0])
    sub = query_version(lake, "gala", 1, "synapses", filter_in={"pre_pt_root_id": [r]}).df()
    assert len(sub) == int((df["pre_pt_root_id"] == r).sum()) > 0
    eq = query_version(lake, "gala", 1, "synapses", filter_equal={"pre_pt_root_id": r}, columns=["id", "size"]).df()
    assert list(eq.columns) == ["id", "size"] and len(eq) == len(sub)
    box = [[0, 0, 0], [100, 100, 25]]
    sp = query_version(lake, "gala", 1, "synapses", filter_spatial={"ctr_pt": box}).df()
    inside = ((df["ctr_pt_position_x"] < 100) & (df["ctr_pt_position_z"] < 25))
    assert len(sp) == int(inside.sum())
    assert len(query_version(lake, "gala", 1, "synapses", limit=5, offset=2).df()) == 5
    with pytest.raises(InvalidArgument, match="not in table"):
        query_version(lake, "gala", 1, "synapses", filter_in={"nope": [1]}).df()
    with pytest.raises(NotFound, match="versions: \\[1\\]"):
        query_version(lake, "gala", 7, "synapses").df()
    with pytest.raises(NotFound, match="not in version"):
        query_version(lake, "gala", 1, "nope").df()
    with pytest.raises(InvalidArgument, match="newest valid version"):
        expire(lake, "gala", 1)
    with pytest.raises(InvalidArgument, match="in the future"):
        materialize(lake, "gala", timestamp=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    with pytest.raises(InvalidArgument, match="before this segmentation"):
        materialize(lake, "gala", timestamp="2000-01-01T00:00:00Z")
    # expire: a query of an expired version is refused (410), files are gone, the newest stays
    materialize(lake, "gala")
    path = lake.root / get_version(lake, "gala", 1)["path"]
    out = expire(lake, "gala", 1)
    assert out["valid"] is False and out["status"] == "EXPIRED" and not path.exists()
    with pytest.raises(VersionExpired) as e:
        query_version(lake, "gala", 1, "synapses").df()
    assert e.value.http_status == 410
    with pytest.raises(VersionExpired):
        expire(lake, "gala", 1)
    assert [v["version"] for v in versions(lake, "gala")] == [2]
    assert [v["version"] for v in versions(lake, "gala", expired=True)] == [1, 2]
    with pytest.raises(VersionExpired):
        Connectome.from_version(lake, "gala", 1, "synapses")


def test_expires_on_and_cli(gala_copy):
    lake = gala_copy
    env = {**os.environ, "NEUROLAKE_LAKE": str(lake.root)}
    run = [sys.executable, "-m", "neurolake.cli"]
    p = subprocess.run(run + ["materialize", "-d", "gala", "--expires-in-days", "0"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(run + ["materialize", "-d", "gala"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    # version 2 expired on the spot (expires_on passed); version 1 (no expiry) and 3 stay
    assert [v["version"] for v in versions(lake, "gala")] == [1, 3]
    p = subprocess.run(run + ["versions", "expire", "-d", "gala", "3"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2 and "newest valid version" in p.stderr
    out = lake.root.parent / "syn.parquet"
    p = subprocess.run(run + ["versions", "query", "-d", "gala", "3", "-t", "synapses", "-o", str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0 and out.exists(), p.stderr
    import pandas as pd

    assert len(pd.read_parquet(out)) == get_table(lake, "gala", "synapses").count()


def test_versions_on_postgres(gala_builder, tmp_path, new_pg_database):
    from neurolake import open_lake

    built = gala_builder(tmp_path / "pg", database_url=new_pg_database())
    lake = open_lake(built["path"])
    try:
        assert lake.catalog.url.startswith("postgresql")
        seg = segmentation(lake, "gala")
        v1 = query_version(lake, "gala", 1, "synapses").df()
        a, b = int(v1["pre_pt_supervoxel_id"].iloc[0]), int(v1["post_pt_supervoxel_id"].iloc[0])
        (merged,) = seg.merge(a, b, author="pg")["new_roots"]
        time.sleep(0.01)
        assert materialize(lake, "gala")["version"] == 2
        assert query_version(lake, "gala", 1, "synapses").df().equals(v1)
        d2 = query_version(lake, "gala", 2, "synapses", filter_in={"pre_pt_root_id": [merged]}).df()
        assert len(d2) >= 1
        expire(lake, "gala", 1)
        with pytest.raises(VersionExpired):
            query_version(lake, "gala", 1, "synapses").df()
        assert [v["version"] for v in versions(lake, "gala")] == [2]
    finally:
        lake.close()


def test_version_query_takes_a_box_as_ranges(gala_copy):
    """Through the client: a version query filtered by x/y/z ranges equals the CAVE-style filter_spatial."""
    ds = gala_copy["gala"]
    df = ds.versions.query("synapses", 1).df()
    xs = df["ctr_pt_position_x"].sort_values().to_numpy()
    x0, x1 = float(xs[len(xs) // 4]), float(xs[3 * len(xs) // 4])
    got = ds.versions.query("synapses", 1, x=(x0, x1)).df()
    ref = ds.versions.query("synapses", 1, filter_spatial={"ctr_pt": [[x0, -1e18, -1e18], [x1, 1e18, 1e18]]}).df()
    assert 0 < len(got) < len(df) and got["id"].tolist() == ref["id"].tolist()
    assert got.attrs["version"] == 1 and got.attrs["datastack"] == "gala"
