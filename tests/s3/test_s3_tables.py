"""Annotation tables, materialization, SQL with provenance and proofreading on a lake on S3 (a moto server
process) with a PostgreSQL catalog: every answer equals the same operations' answer on a local lake."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from neurolake import init_lake, open_lake
from neurolake.annotations import create_table, get_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "annotations"))
from annotations_data import SITE_PROPS, navis_sites, schlegel_cell_types  # noqa: E402

from tests.proofreading.conftest import build_gala_lake  # noqa: E402
from tests.query.conftest import pinky_somas, pinky_synapses  # noqa: E402


def _frame(df: pd.DataFrame, by: str = "id") -> pd.DataFrame:
    """Rows in id order without the commit-time columns (they differ between two lakes by construction)."""
    df = df.drop(columns=[c for c in ("created", "deleted") if c in df.columns])
    return df.sort_values(by).reset_index(drop=True)


def _fill(lake) -> dict:
    """The same writes on either lake: hemibrain sites + cell types, pinky100 synapses + somas, a delete,
    an update and version 1 of pinky100. Returns what the checks need."""
    lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain")
    sites = create_table(lake, "hemibrain", "da1_sites", "point", properties=SITE_PROPS)
    sites.append(navis_sites())
    ct = create_table(lake, "hemibrain", "cell_types", "cell_type", properties={"cell_class": "str"})
    ct.append(schlegel_cell_types())
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100")
    syn = create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"])
    syn.append(pinky_synapses())
    somas = create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1),
                         properties={"manual_id": "int"})
    somas.append(pinky_somas()[["pt_position_x", "pt_position_y", "pt_position_z", "pt_root_id", "manual_id"]])
    v_before = sites.version
    sites.delete(range(1, 41))  # soft-delete the first 40 sites: Delta version +1
    ct.update([{"id": 1, "cell_type": "renamed"}])
    time.sleep(0.01)
    v1 = lake["pinky100"].versions.create()
    return {"sites_before": v_before, "v1": v1["version"]}


@pytest.fixture(scope="module")
def lakes(_s3_lake_factory, tmp_path_factory):
    url, db = _s3_lake_factory()
    remote = init_lake(url, database_url=db)
    local = init_lake(tmp_path_factory.mktemp("s3tables-local") / "lake")
    out = {"remote": remote, "local": local, "url": url, "fill": {}}
    for k in ("remote", "local"):
        out["fill"][k] = _fill(out[k])
    yield out
    remote.close()
    local.close()


def test_tables_time_travel_and_versions_equal_a_local_lake(lakes):
    remote, local, url = lakes["remote"], lakes["local"], lakes["url"]
    assert remote.remote and str(get_table(remote, "hemibrain", "da1_sites").path).startswith(url + "/")
    assert lakes["fill"]["remote"] == lakes["fill"]["local"]
    for ds, name in (("hemibrain", "da1_sites"), ("hemibrain", "cell_types"), ("pinky100", "synapses"),
                     ("pinky100", "somas")):
        r, lo = get_table(remote, ds, name), get_table(local, ds, name)
        assert r.version == lo.version
        pd.testing.assert_frame_equal(_frame(r.query().df()), _frame(lo.query().df()))
    # a spatial query (row-group index from the Parquet footers of the S3 objects)
    r, lo = get_table(remote, "hemibrain", "da1_sites"), get_table(local, "hemibrain", "da1_sites")
    allrows = lo.query().df()
    hi = [float(allrows[f"pt_position_{a}"].median()) * 8 for a in "xyz"]
    box_l = lo.query(bbox=[[0, 0, 0], hi]).df()
    assert 0 < len(box_l) < len(allrows)
    pd.testing.assert_frame_equal(_frame(r.query(bbox=[[0, 0, 0], hi]).df()), _frame(box_l))
    # the table's Delta objects live under the lake's prefix
    from neurolake.storage.config import storage_config

    bucket, prefix = url[5:].split("/", 1)
    keys = [o["Key"] for o in storage_config().boto3_client().list_objects_v2(
        Bucket=bucket, Prefix=f"{prefix}/datastacks/hemibrain/tables/da1_sites/")["Contents"]]
    assert any("/_delta_log/" in k for k in keys) and any(k.endswith(".parquet") for k in keys)
    # time travel: the sites before the delete (SQL pin and Python Delta version)
    v = lakes["fill"]["remote"]["sites_before"]
    sql = f'SELECT id, pt_root_id, connector_id FROM hemibrain."da1_sites@{v}" ORDER BY id'
    old_r, old_l = remote.sql(sql).df(), local.sql(sql).df()
    pd.testing.assert_frame_equal(old_r, old_l)
    assert len(old_r) == len(navis_sites()) and len(remote.sql(sql.replace(f"@{v}", "")).df()) == len(old_r) - 40
    # materialization version 1, its tables and its connectome
    ds_r, ds_l = remote["pinky100"], local["pinky100"]
    assert [x["version"] for x in ds_r.versions.list()] == [1]
    for name in ("synapses", "somas"):
        pd.testing.assert_frame_equal(_frame(ds_r.versions.query(name, 1).df()),
                                      _frame(ds_l.versions.query(name, 1).df()))
    vpath = ds_r.versions.get(1)["path"]
    assert not vpath.startswith("/") and (remote.root / vpath / "synapses.parquet").exists()
    c_r, c_l = ds_r.connectome(version=1), ds_l.connectome(version=1)
    key = ["pre", "post"]
    pd.testing.assert_frame_equal(c_r.edges.sort_values(key).reset_index(drop=True),
                                  c_l.edges.sort_values(key).reset_index(drop=True))
    assert c_r.n_synapses == len(pinky_synapses())
    node = int(c_l.edges["pre"].iloc[0])
    pd.testing.assert_frame_equal(c_r.downstream(node).df(), c_l.downstream(node).df())


def test_sql_manifest_and_reproduce_on_s3(lakes):
    remote, local, url = lakes["remote"], lakes["local"], lakes["url"]
    sql = ("SELECT s.pre_pt_root_id, count(*) AS n, any_value(m.manual_id) AS manual_id "
           "FROM pinky100.v1.synapses AS s LEFT JOIN pinky100.somas AS m ON m.pt_root_id = s.pre_pt_root_id "
           "GROUP BY 1 ORDER BY n DESC, 1")
    r = remote.sql(sql, save=True)
    lo = local.sql(sql)
    pd.testing.assert_frame_equal(r.df(), lo.df())
    assert r.sha256 == lo.sha256
    # the manifest names the inputs by their s3:// objects, under the lake's prefix
    inputs = {i["name"]: i for i in r.run["inputs"]}
    assert set(inputs) == {"pinky100.v1.synapses", "pinky100.somas"}
    for i in inputs.values():
        assert i["location"].startswith(url + "/") and i["files"]
        assert all(f.startswith(url + "/") for f in i["files"]), i["files"]
    assert r.run["lake"] == url
    assert r.run["result_file"].startswith(url + "/runs/")
    # the saved result and its manifest are objects of the lake
    from neurolake.storage.config import storage_config

    res_path = storage_config().path(r.run["result_file"])
    assert res_path.exists() and (res_path.parent / (res_path.name + ".manifest.json")).exists()
    # reproduce: by run id, and from the saved result object
    again = remote.reproduce(r.run_id)
    assert again["status"] == "identical", again
    assert remote.reproduce(r.run["result_file"])["status"] == "identical"
    # annotation tables across datastacks and a pinned Delta version, production mode
    v = get_table(remote, "hemibrain", "cell_types").version
    sql2 = (f'SELECT cell_type, count(*) AS n FROM hemibrain."cell_types@{v}" GROUP BY 1 ORDER BY n DESC, 1 '
            "LIMIT 20")
    p_r, p_l = remote.sql(sql2, mode="production"), local.sql(sql2, mode="production")
    pd.testing.assert_frame_equal(p_r.df(), p_l.df())
    assert remote.reproduce(p_r.run_id)["status"] == "identical"
    # a result written to a local path the user names
    out = Path(lakes["local"].root).parent / "out" / "r.parquet"
    p_r.to_parquet(out)
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == len(p_r.df()) and out.with_name("r.parquet.manifest.json").exists()
    # ... or an s3:// object the user names; a run is reproduced from it
    dst = p_r.to_parquet(f"{url}/exports/top.parquet")
    assert str(dst) == f"{url}/exports/top.parquet" and remote.reproduce(str(dst))["status"] == "identical"


def test_sql_refuses_objects_outside_the_inputs(lakes):
    from neurolake.errors import PermissionDenied

    remote, url = lakes["remote"], lakes["url"]
    vpath = remote["pinky100"].versions.get(1)["path"]
    for sql in (f"SELECT count(*) FROM pinky100.v1.synapses, read_parquet('{url}/{vpath}/somas.parquet')",
                f"SELECT count(*) FROM pinky100.synapses, read_parquet('{url}/datastacks/hemibrain/tables/"
                "cell_types/*.parquet')",
                "SELECT count(*) FROM pinky100.synapses, read_parquet('s3://other-bucket/x.parquet')"):
        with pytest.raises(PermissionDenied, match="outside the lake"):
            remote.sql(sql)


def test_views_and_joins_on_s3(lakes):
    from neurolake.materialize.joins import define_view, join_version, list_views, query_view

    outs = {}
    for k in ("remote", "local"):
        lk = lakes[k]
        define_view(lk, "pinky100", "syn_soma", [["synapses", "pre_pt_root_id"], ["somas", "pt_root_id"]])
        assert list_views(lk, "pinky100") == ["syn_soma"]
        outs[k] = (query_view(lk, "pinky100", 1, "syn_soma").df(),
                   join_version(lk, "pinky100", 1, [["synapses", "pre_pt_root_id"], ["somas", "pt_root_id"]]).df())
    for a, b in zip(outs["remote"], outs["local"], strict=True):
        assert len(a) > 0
        cols = sorted(c for c in a.columns if not c.startswith(("created", "deleted")))
        pd.testing.assert_frame_equal(a[cols].sort_values(cols).reset_index(drop=True),
                                      b[cols].sort_values(cols).reset_index(drop=True))


def test_proofreading_merge_undo_and_materialize_on_s3(new_s3_lake, tmp_path):
    from neurolake.materialize import materialize, query_version
    from neurolake.proofreading import segmentation

    url, db = new_s3_lake()
    made = {"remote": build_gala_lake(url, database_url=db), "local": build_gala_lake(tmp_path / "lake")}
    out = {}
    for k, info in made.items():
        lake = open_lake(url if k == "remote" else info["path"])
        seg = segmentation(lake, "gala")
        syn = query_version(lake, "gala", 1, "synapses").df()
        row = syn[(syn.pre_pt_root_id != syn.post_pt_root_id)].sort_values("id").iloc[0]
        a, b = int(row.pre_pt_supervoxel_id), int(row.post_pt_supervoxel_id)
        ra, rb = seg.roots([a, b])
        merged = seg.merge(a, b, author="test")
        time.sleep(0.01)
        v2 = materialize(lake, "gala")
        undo = seg.undo(merged["operation_id"], author="test")
        time.sleep(0.01)
        v3 = materialize(lake, "gala")
        edits = lake.sql("SELECT operation_id, kind, n_edges, undone_by FROM gala.edits ORDER BY 1").df()
        out[k] = {"v1": query_version(lake, "gala", 1, "synapses").df(),
                  "v2": query_version(lake, "gala", v2["version"], "synapses").df(),
                  "v3": query_version(lake, "gala", v3["version"], "synapses").df(),
                  "roots": (int(ra), int(rb)), "merged": [int(x) for x in merged["new_roots"]],
                  "undo_roots": [int(x) for x in undo["new_roots"]], "edits": edits,
                  "versions": [v["version"] for v in lake["gala"].versions.list()]}
        if k == "remote":
            assert lake.remote and str(seg._row().base_path).startswith("datastacks/gala/proofreading/")
        lake.close()
    r, lo = out["remote"], out["local"]
    assert r["versions"] == lo["versions"] == [1, 2, 3]
    for key in ("v1", "v2", "v3"):
        pd.testing.assert_frame_equal(_frame(r[key]), _frame(lo[key]))
    pd.testing.assert_frame_equal(r["edits"], lo["edits"])
    assert r["roots"] == lo["roots"] and r["merged"] == lo["merged"] and r["undo_roots"] == lo["undo_roots"]
    # the merge joined the two roots in version 2; the undo split them again in version 3
    row_v2 = r["v2"].sort_values("id").reset_index(drop=True)
    assert (row_v2.pre_pt_root_id == row_v2.post_pt_root_id).sum() > (r["v1"].pre_pt_root_id ==
                                                                        r["v1"].post_pt_root_id).sum()
    assert (r["v3"].pre_pt_root_id == r["v3"].post_pt_root_id).sum() == (r["v1"].pre_pt_root_id ==
                                                                          r["v1"].post_pt_root_id).sum()


def test_caveclient_reads_an_s3_lake_through_a_server(lakes, serve_lake, tmp_path, monkeypatch):
    from caveclient import CAVEclient

    monkeypatch.setenv("HOME", str(tmp_path))  # caveclient writes under ~
    local, url = lakes["local"], lakes["url"]
    base = serve_lake(url)
    client = CAVEclient("pinky100", server_address=base)
    assert client.materialize.get_versions() == [1]
    assert sorted(client.materialize.get_tables()) == ["somas", "synapses"]
    df = client.materialize.query_table("synapses")
    ours = local["pinky100"].versions.query("synapses", 1).df()
    assert len(df) == len(ours) == len(pinky_synapses())
    assert sorted(df["pre_pt_root_id"].astype("uint64").tolist()) == sorted(
        ours["pre_pt_root_id"].astype("uint64").tolist())
    r = int(ours["pre_pt_root_id"].iloc[0])
    sub = client.materialize.query_table("synapses", filter_in_dict={"pre_pt_root_id": [r]})
    assert len(sub) == int((ours["pre_pt_root_id"] == r).sum()) > 0
    somas = client.materialize.query_table("somas", filter_greater_dict={"manual_id": 100})
    want = local["pinky100"].versions.query("somas", 1).df()
    assert len(somas) == int((want["manual_id"] > 100).sum()) > 0
    assert sorted(somas["manual_id"].tolist()) == sorted(want.loc[want["manual_id"] > 100, "manual_id"].tolist())
    # the query API of the same server answers SQL over the S3 lake, with a manifest
    import httpx

    sql = "SELECT count(*) AS n FROM pinky100.v1.synapses"
    got = httpx.post(f"{base}/api/v1/query", json={"sql": sql}, timeout=60)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["rows"] == 1 and body["data"][0]["n"] == len(pinky_synapses())


WRITER = """
import sys
import numpy as np
import pandas as pd
from neurolake import open_lake
from neurolake.annotations import get_table

url, k = sys.argv[1], int(sys.argv[2])
lake = open_lake(url)
t = get_table(lake, "conc", "points")
print("ready", flush=True)
for i in range(4):
    n = 25
    t.append(pd.DataFrame({"pt_position_x": np.full(n, k), "pt_position_y": np.arange(n) + 100 * i,
                           "pt_position_z": np.full(n, i)}))
lake.close()
"""


def test_concurrent_appends_from_two_processes_all_land(lakes):
    """delta-rs on S3 has no safe concurrent commit: the lake's writers hold the catalog lock of the table."""
    import subprocess

    remote, url = lakes["remote"], lakes["url"]
    remote.create_datastack("conc", (8, 8, 8))
    t = create_table(remote, "conc", "points", "point")
    v0 = t.version
    # while this process holds the table's lock, neither writer commits
    held = remote.locks.hold(f"delta:{t.path}")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(k)], stdout=subprocess.PIPE, text=True)
             for k in (1, 2)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        time.sleep(2)
        assert t.version == v0 and all(p.poll() is None for p in procs)
    finally:
        held.release()
    assert [p.wait(300) for p in procs] == [0, 0]
    assert t.version == v0 + 8
    df = t.query().df()
    assert len(df) == 200 and df["id"].is_unique
    assert sorted(df.groupby("pt_position_x").size().tolist()) == [100, 100]
    assert [h["operation"] for h in t.history()][:8] == ["WRITE"] * 8


def test_feature_tables_inside_the_s3_lake(lakes):
    """A Parquet feature table stored under the lake's own prefix, registered and joined with an annotation
    table by SQL, answers as the same table inside a local lake."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neurolake.storage.config import storage_config

    meta = schlegel_cell_types()
    feats = pa.table({"body_id": meta["pt_root_id"].astype("int64"), "cell_class": meta["cell_class"].astype(str)})
    got = {}
    for k in ("remote", "local"):
        lk = lakes[k]
        loc = f"{lk.root}/features/lab/classes.parquet"
        if k == "remote":
            fs, where = storage_config().pyarrow_fs(loc)
            pq.write_table(feats, where, filesystem=fs)
        else:
            Path(loc).parent.mkdir(parents=True)
            pq.write_table(feats, loc)
        entry = lk.features.register(name="classes", datastack="hemibrain", location=loc)
        assert entry["location"] == loc
        res = lk.sql("SELECT f.cell_class, count(*) AS n FROM hemibrain.cell_types AS c JOIN features.classes AS f "
                     "ON f.body_id = c.pt_root_id GROUP BY 1 ORDER BY n DESC, 1")
        got[k] = res
    pd.testing.assert_frame_equal(got["remote"].df(), got["local"].df())
    rows = get_table(lakes["local"], "hemibrain", "cell_types").query().df()
    joined = rows.astype({"pt_root_id": "int64"}).merge(feats.to_pandas(), left_on="pt_root_id", right_on="body_id")
    assert int(got["remote"].df()["n"].sum()) == len(joined) > 0
    files = {i["name"]: i["files"] for i in got["remote"].run["inputs"]}
    assert all(f.startswith(lakes["url"] + "/") for fs_ in files.values() for f in fs_)
