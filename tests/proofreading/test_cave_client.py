"""Unmodified caveclient 8.2.1 against a real ``neurolake serve`` process (throw-away HOME, loopback)."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import httpx
import numpy as np
import pytest

from neurolake import open_lake
from neurolake.materialize import query_version
from neurolake.proofreading import segmentation


@pytest.fixture(scope="module")
def served(gala_annotated, serve_lake, tmp_path_factory):
    dst = tmp_path_factory.mktemp("cave") / "lake"
    shutil.copytree(gala_annotated["path"], dst)
    base = serve_lake(dst)
    return base, dst


@pytest.fixture(scope="module")
def client(served):
    from caveclient import CAVEclient

    base, _ = served
    return CAVEclient("gala", server_address=base)


def test_info_and_materialization_through_caveclient(client, served):
    base, path = served
    assert client.info.segmentation_source().endswith("/segmentation/table/gala")
    assert client.chunkedgraph.table_name == "gala"
    assert client.materialize.get_versions() == [1]
    assert sorted(client.materialize.get_tables()) == ["cell_types", "synapses"]
    meta = client.materialize.get_version_metadata(1)
    assert meta["version"] == 1 and meta["valid"]
    tmeta = client.materialize.get_table_metadata("synapses")
    assert tmeta["voxel_resolution"] == [8.0, 8.0, 8.0] and tmeta["reference_table"] is None
    lake = open_lake(path)
    ours = query_version(lake, "gala", 1, "synapses").df()
    df = client.materialize.query_table("synapses")
    assert len(df) == len(ours)
    assert df["pre_pt_root_id"].astype("uint64").tolist() == ours["pre_pt_root_id"].astype("uint64").tolist()
    assert "pre_pt_position" in df.columns  # caveclient joined our _x/_y/_z columns
    assert list(df["pre_pt_position"].iloc[0]) == [ours["pre_pt_position_x"].iloc[0], ours["pre_pt_position_y"].iloc[0],
                                                   ours["pre_pt_position_z"].iloc[0]]
    r = int(ours["pre_pt_root_id"].iloc[0])
    sub = client.materialize.query_table("synapses", filter_in_dict={"pre_pt_root_id": [r]})
    assert len(sub) == int((ours["pre_pt_root_id"] == r).sum()) > 0
    sub = client.materialize.query_table("synapses", filter_equal_dict={"pre_pt_root_id": r},
                                         select_columns=["id", "pre_pt_root_id", "size"], limit=3)
    assert len(sub) <= 3 and set(sub["pre_pt_root_id"].astype("uint64")) == {r}
    big = client.materialize.query_table("synapses", filter_greater_equal_dict={"size": 100.0},
                                         filter_less_dict={"size": 150.0}, filter_out_dict={"pre_pt_root_id": [r]})
    sel = ours[(ours["size"] >= 100) & (ours["size"] < 150) & (ours["pre_pt_root_id"] != r)]
    assert len(big) == len(sel) > 0
    sp = client.materialize.query_table("synapses", filter_spatial_dict={"ctr_pt_position": [[0, 0, 0], [100, 100, 25]]})
    assert len(sp) == int(((ours["ctr_pt_position_x"] < 100) & (ours["ctr_pt_position_z"] < 25)).sum())
    ct = client.materialize.query_table("cell_types", filter_in_dict={"cell_type": ["large"]})
    assert len(ct) and set(ct["cell_type"]) == {"large"}
    lake.close()


def test_chunkedgraph_through_caveclient(client, served):
    base, path = served
    lake = open_lake(path)
    syn = query_version(lake, "gala", 1, "synapses").df()
    a, b = int(syn["pre_pt_supervoxel_id"].iloc[0]), int(syn["post_pt_supervoxel_id"].iloc[0])
    seg = segmentation(lake, "gala")
    ra, rb = seg.roots([a, b])
    roots = client.chunkedgraph.get_roots([a, b, 0, 987654321])
    assert roots.tolist() == [ra, rb, 0, 0]
    assert client.chunkedgraph.get_root_id(a) == ra
    assert client.chunkedgraph.get_leaves(ra).tolist() == [a]
    t_before = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    # an edit through neurolake's own HTTP API, based on the roots seen: then a stale edit gets 409
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge",
                   json={"supervoxels": [a, b], "roots": [int(ra), int(rb)], "author": "ann"}, timeout=30)
    assert r.status_code == 200, r.text
    merged = r.json()["new_roots"][0]
    stale = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge",
                       json={"supervoxels": [a, b], "roots": [int(ra), int(rb)], "author": "bob"}, timeout=30)
    assert stale.status_code == 409
    body = stale.json()
    assert body["error"] == "conflict" and body["detail"]["current_roots"] == {str(a): merged, str(b): merged}
    assert client.chunkedgraph.get_roots([a, b]).tolist() == [merged, merged]
    assert client.chunkedgraph.get_roots([a, b], timestamp=t_before).tolist() == [ra, rb]
    assert sorted(client.chunkedgraph.get_leaves(merged).tolist()) == sorted([a, b])
    g = client.chunkedgraph.get_lineage_graph(merged, as_nx_graph=True)
    assert set(g.predecessors(merged)) == {int(ra), int(rb)}
    assert client.chunkedgraph.is_latest_roots([ra, merged]).tolist() == [False, True]
    assert client.chunkedgraph.get_latest_roots(ra).tolist() == [merged]
    # caveclient's live query: version 1 re-bound to the roots at a later time, filtered on the new root
    now = dt.datetime.now(dt.UTC)
    live = client.materialize.live_query("synapses", now, filter_in_dict={"pre_pt_root_id": [merged]})
    expect = syn[syn["pre_pt_supervoxel_id"].isin([a, b])]
    assert len(live) == len(expect) > 0 and set(live["pre_pt_root_id"].astype("uint64")) == {merged}
    ids = client.chunkedgraph.get_past_ids([merged], timestamp_past=t_before)
    assert sorted(ids["past_id_map"][merged]) == sorted([int(ra), int(rb)])
    assert ids["future_id_map"][int(ra)] == [merged]
    # a split through caveclient's own execute_split: sources/sinks as points in nm (supervoxels looked up)
    nm = np.array([8.0, 8.0, 8.0])
    pa = (np.array([syn[f"pre_pt_position_{c}"].iloc[0] for c in "xyz"]) * nm).tolist()
    pb = (np.array([syn[f"post_pt_position_{c}"].iloc[0] for c in "xyz"]) * nm).tolist()
    op_id, new_roots = client.chunkedgraph.execute_split([pa], [pb], merged)
    assert len(new_roots) == 2 and op_id == 2
    assert len(set(client.chunkedgraph.get_roots([a, b]).tolist())) == 2
    ops = httpx.get(f"{base}/api/v1/datastacks/gala/segmentation/operations", timeout=30).json()
    assert [o["kind"] for o in ops] == ["merge", "split"] and ops[0]["author"] == "ann"
    # bad input over HTTP: clear 4xx, never 500
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge", json={"supervoxels": [a, a]}, timeout=30)
    assert r.status_code == 400 and "itself" in r.json()["message"]
    r = httpx.get(f"{base}/segmentation/api/v1/table/gala/node/12345/leaves", timeout=30)
    assert r.status_code == 404
    r = httpx.get(f"{base}/segmentation/api/v1/table/nope/node/1/root", timeout=30)
    assert r.status_code == 404
    lake.close()


def test_ocp_cutout_as_root_ids(served):
    base, path = served
    lake = open_lake(path)
    seg = segmentation(lake, "gala")
    svs = lake.layer("gala", "segmentation").cutout(x=(0, 64), y=(0, 32), z=(0, 4))
    r = httpx.get(f"{base}/ocp/ca/gala/segmentation/npz/0/0,64/0,32/0,4/?roots=true", timeout=30)
    assert r.status_code == 200, r.text
    import io

    arr = np.load(io.BytesIO(r.content))
    arr = arr[arr.files[0]] if hasattr(arr, "files") else arr
    assert arr.dtype == np.uint64 and arr.shape == svs.shape
    expect = seg.remap_to_roots(svs)
    assert (arr == expect).all() and ((arr == 0) == (svs == 0)).all()
    # BossDB cutouts too (blosc, C-order z, y, x), and only on the supervoxel layer
    from neurolake.volumes.formats import decode

    r = httpx.get(f"{base}/v1/cutout/gala/gala/segmentation/0/0:64/0:32/0:4/", params={"roots": "true"}, timeout=30)
    assert r.status_code == 200, r.text
    assert (decode(r.content, "blosc", np.uint64, svs.shape) == expect).all()
    # precomputed volume of root ids, read by cloud-volume (now, and at a time before any edit)
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"precomputed://{base}/precomputed-roots/gala/segmentation", progress=False, cache=False)
    assert cv.dtype == np.uint64
    got = np.asarray(cv[0:64, 0:32, 0:4])[..., 0].transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    assert (got == expect).all()
    t0 = segmentation(lake, "gala").state().created.timestamp() + 1e-3
    cv0 = CloudVolume(f"precomputed://{base}/precomputed-roots/gala/segmentation@{t0}", progress=False,
                      cache=False)
    got0 = np.asarray(cv0[0:64, 0:32, 0:4])[..., 0].transpose(2, 1, 0)
    assert (got0 == seg.remap_to_roots(svs, t0)).all()
    r = httpx.get(f"{base}/precomputed-roots/gala/nope/info", timeout=30)
    assert r.status_code == 404
    past = httpx.get(f"{base}/ocp/ca/gala/segmentation/npz/0/0,64/0,32/0,4/",
                     params={"roots": "true", "timestamp": "2000-01-01T00:00:00Z"}, timeout=30)
    assert past.status_code == 400 and "before this segmentation" in past.json()["message"]
    lake.close()


def test_neurolake_http_versions_and_connectome(served):
    base, path = served
    api = f"{base}/api/v1/datastacks/gala"
    vs = httpx.get(f"{api}/versions", timeout=30).json()
    assert [v["version"] for v in vs] == [1]
    r = httpx.get(f"{api}/connectome", params={"version": 1, "synapse_table": "synapses"}, timeout=60)
    assert r.status_code == 200, r.text
    summ = r.json()
    lake = open_lake(path)
    syn = query_version(lake, "gala", 1, "synapses").df()
    assert summ["synapses"] == len(syn) and summ["version"] == 1
    root = int(syn["pre_pt_root_id"].value_counts().index[0])
    p = httpx.get(f"{api}/connectome/partners/{root}", params={"version": 1}, timeout=60).json()
    assert sum(x["n_synapses"] for x in p["downstream"]) == int((syn["pre_pt_root_id"] == root).sum())
    m = httpx.get(f"{api}/connectome/matrix", params={"version": 1, "cell_type_table": "cell_types"},
                  timeout=60).json()
    assert int(np.sum(m["values"])) == len(syn) and set(m["rows"]) <= {"large", "small"}
    mot = httpx.get(f"{api}/connectome/motifs", params={"version": 1}, timeout=60).json()
    assert len(mot) == 16
    pq = httpx.get(f"{api}/connectome/edges.parquet", params={"version": 1}, timeout=60)
    import io

    import pandas as pd

    edges = pd.read_parquet(io.BytesIO(pq.content))
    assert edges["n_synapses"].sum() == len(syn)
    rows = httpx.get(f"{api}/versions/1/tables/synapses", params={"root_id": root}, timeout=60).json()
    assert len(rows) == int(((syn["pre_pt_root_id"] == root) | (syn["post_pt_root_id"] == root)).sum())
    r = httpx.get(f"{api}/versions/9/tables/synapses", timeout=30)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.delete(f"{api}/versions/1", timeout=30)
    assert r.status_code == 400 and "newest valid" in r.json()["message"]
    lake.close()


def test_http_watershed_and_create(served):
    base, path = served
    api = f"{base}/api/v1/datastacks/gala"
    # the gala ground truth's background lines as the boundary map: fragments of the real neurons
    r = httpx.post(f"{api}/segment/watershed", json={"boundary_layer": "segmentation", "output": "fragments",
                                                     "boundary_values": [0], "min_distance": 4}, timeout=300)
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "segmentation" and r.json()["name"] == "fragments"
    r = httpx.post(f"{api}/segment/watershed", json={"boundary_layer": "nope"}, timeout=60)
    assert r.status_code == 404
    # the datastack already has a proofreadable segmentation: 409 unless overwrite
    r = httpx.post(f"{api}/segmentation", json={"layer": "fragments"}, timeout=60)
    assert r.status_code == 409 and r.json()["error"] == "already_exists"


def test_auth_server_attributes_edits_and_checks_roles(gala_annotated, serve_lake, tmp_path):
    """With ``--auth``: caveclient with a viewer token reads roots; its edits are refused (403); an
    editor's edit is attributed to the editor whatever the body claims."""
    from caveclient import CAVEclient

    dst = tmp_path / "lake"
    shutil.copytree(gala_annotated["path"], dst)
    lake = open_lake(dst)
    acc = lake.access
    acc.add_user("vera")
    acc.grant("vera", "gala", "viewer")
    acc.add_user("ed")
    acc.grant("ed", "gala", "editor")
    viewer = acc.create_token("vera")["token"]
    editor = acc.create_token("ed")["token"]
    syn = query_version(lake, "gala", 1, "synapses").df()
    a, b = int(syn["pre_pt_supervoxel_id"].iloc[0]), int(syn["post_pt_supervoxel_id"].iloc[0])
    lake.close()
    base = serve_lake(dst, "--auth")
    assert httpx.post(f"{base}/segmentation/api/v1/table/gala/roots_binary",
                      content=np.array([a], "<u8").tobytes(), timeout=30).status_code == 401
    client = CAVEclient("gala", server_address=base, auth_token=viewer)
    ra, rb = client.chunkedgraph.get_roots([a, b])
    assert client.chunkedgraph.is_latest_roots([ra]).tolist() == [True]
    assert client.materialize.get_versions() == [1]
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge", json={"supervoxels": [a, b]},
                   headers={"Authorization": f"Bearer {viewer}"}, timeout=30)
    assert r.status_code == 403
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge",
                   json={"supervoxels": [a, b], "author": "someone-else"},
                   headers={"Authorization": f"Bearer {editor}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["author"] == "ed"
    assert client.chunkedgraph.is_latest_roots([ra]).tolist() == [False]


def test_neurolake_http_edit_cycle(gala_annotated, serve_lake, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(gala_annotated["path"], dst)
    lake = open_lake(dst)
    syn = query_version(lake, "gala", 1, "synapses").df()
    lake.close()
    base = serve_lake(dst)
    api = f"{base}/api/v1/datastacks/gala/segmentation"
    a, b = int(syn["pre_pt_supervoxel_id"].iloc[0]), int(syn["post_pt_supervoxel_id"].iloc[0])
    roots = httpx.get(f"{api}/roots", params={"supervoxels": f"{a},{b}"}, timeout=30).json()["root_ids"]
    t0 = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.02)
    m = httpx.post(f"{api}/merge", json={"supervoxels": [a, b], "roots": roots},
                   headers={"X-Neurolake-User": "hdr-user"}, timeout=30).json()
    assert m["author"] == "hdr-user" and m["old_roots"] == sorted(roots)
    (root,) = m["new_roots"]
    assert sorted(httpx.get(f"{api}/roots/{root}/leaves", timeout=30).json()["leaf_ids"]) == sorted([a, b])
    s = httpx.post(f"{api}/split", json={"sources": [a], "sinks": [b], "roots": [root], "author": "ann"},
                   timeout=30).json()
    assert len(s["new_roots"]) == 2
    u = httpx.post(f"{api}/operations/{s['operation_id']}/undo", json={"author": "ann"}, timeout=30)
    assert u.status_code == 200 and u.json()["kind"] == "undo"
    r = httpx.post(f"{api}/operations/{s['operation_id']}/redo", timeout=30)
    assert r.status_code == 200 and r.json()["kind"] == "redo"
    again = httpx.post(f"{api}/operations/{s['operation_id']}/redo", timeout=30)
    assert again.status_code == 400 and "not undone" in again.json()["message"]
    latest = httpx.get(f"{api}/roots/{roots[0]}/latest", timeout=30).json()
    assert latest["is_latest"] is False and len(latest["latest_roots"]) >= 1
    lin = httpx.get(f"{api}/roots/{root}/lineage", timeout=30).json()
    assert {"source": roots[0], "target": root} in lin["links"]
    info = httpx.get(f"{api}/roots/{root}", timeout=30).json()
    assert info["created_by"] == m["operation_id"] and info["expired_by"] == s["operation_id"]
    past = httpx.get(f"{api}/roots", params={"supervoxels": f"{a},{b}", "timestamp": t0}, timeout=30).json()
    assert past["root_ids"] == roots
    rb = httpx.post(f"{api}/rollback", json={"user": "ann", "since": t0, "author": "admin"}, timeout=30)
    assert rb.status_code == 200 and rb.json()["kind"] == "rollback"
    # after rolling back ann's split, undo and redo... the merge by hdr-user remains: a and b together
    now = httpx.get(f"{api}/roots", params={"supervoxels": f"{a},{b}"}, timeout=30).json()["root_ids"]
    assert now[0] == now[1]
    log = httpx.get(f"{api}/operations", timeout=30).json()
    assert [o["kind"] for o in log] == ["merge", "split", "undo", "redo", "rollback"]
    assert httpx.get(f"{api}/operations/99", timeout=30).status_code == 404
    bad = httpx.post(f"{api}/merge", json={"supervoxels": [a]}, timeout=30)
    assert bad.status_code == 400
    bad = httpx.post(f"{api}/merge", json={"supervoxels": "x"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_argument"
    cut = httpx.get(f"{api}/cutout/0:64/0:32/0:4", timeout=30)
    assert cut.status_code == 200 and cut.headers["X-Neurolake-Axes"] == "z,y,x"
