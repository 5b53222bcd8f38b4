"""Annotation tables over HTTP against a real ``neurolake serve`` process: the rows API (JSON and
Arrow) and the precomputed annotations read by two independent real readers — neuroglancer's
``AnnotationReader`` and cloud-volume's precomputed annotation source."""

from __future__ import annotations

import datetime as dt
import time

import cloudvolume
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from annotations_data import navis_sites, pinky_somas
from neuroglancer.read_precomputed_annotations import AnnotationReader

from neurolake.annotations import get_table

ARROW = "application/vnd.apache.arrow.stream"


def _ipc(tab: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tab.schema) as w:
        w.write_table(tab)
    return sink.getvalue().to_pybytes()


def _readers(base: str, ds: str, table: str):
    url = f"{base}/precomputed/{ds}/annotations/{table}"
    return AnnotationReader(url), cloudvolume.from_cloudpath("precomputed://" + url)


def _enum_text(spec: dict, values) -> list[str]:
    labels = dict(zip(spec["enum_values"], spec["enum_labels"], strict=True))
    return [labels[int(v)] for v in values]


def test_precomputed_by_id_matches_table_in_both_readers(ann_server, ann_lake):
    ng, cv = _readers(ann_server, "hemibrain", "da1_sites")
    info = ng.metadata
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "POINT"
    sizes = [np.dtype(p["type"]).itemsize for p in info["properties"]]
    assert sizes == sorted(sizes, reverse=True)  # presorted: 4-byte, 2-byte, 1-byte
    assert info["dimensions"]["x"] == [8e-9, "m"]
    table = get_table(ann_lake, "hemibrain", "da1_sites").query().df().set_index("id")
    props = {p["id"]: p for p in info["properties"]}
    ids = [1, 2, 700, 3137, 9089]
    cv_by_id = cv.get_by_id(ids)
    for i in ids:
        row = table.loc[i]
        want = np.array([row.pt_position_x, row.pt_position_y, row.pt_position_z], dtype=np.float32)
        a = ng.by_id[i]
        np.testing.assert_array_equal(np.asarray(a.point, dtype=np.float32), want)
        np.testing.assert_array_equal(cv_by_id[i].geometry[0], want)
        assert list(a.segments[0]) == [row.pt_root_id]  # relationship "segment" = body id
        ng_props = dict(zip([p.id for p in ng.properties], a.props, strict=True))
        for name in ("confidence", "connector_id", "node_id"):
            assert float(ng_props[name]) == pytest.approx(float(cv_by_id[i].properties[name][0]))
            assert float(cv_by_id[i].properties[name][0]) == pytest.approx(float(row[name]), rel=1e-6)
        for name in ("type", "roi"):
            ng_v, cv_v = int(ng_props[name]), int(cv_by_id[i].properties[name][0])
            assert ng_v == cv_v
            assert _enum_text(props[name], [cv_v]) == [row[name] if isinstance(row[name], str) else ""]
    assert ng.by_id.get(999_999).result() is None


def test_precomputed_relationship_and_box_agree(ann_server, ann_lake):
    ng, cv = _readers(ann_server, "hemibrain", "da1_sites")
    sites = navis_sites()
    body = 754534424
    want = set((np.flatnonzero(sites.body_id == body) + 1).tolist())
    ng_rel = {int(a.id) for a in ng.relationships["segment"][body]}
    cv_rel = set(cv.get_by_relationship("segment", body).ids.tolist())
    assert ng_rel == cv_rel == want
    # a box with half-voxel bounds, so inclusive/exclusive conventions cannot differ
    pts = sites[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy()
    lo = np.percentile(pts, 30, axis=0).round() + 0.5
    hi = np.percentile(pts, 70, axis=0).round() + 0.5
    want = set((np.flatnonzero(((pts >= lo) & (pts < hi)).all(axis=1)) + 1).tolist())
    ng_box = {int(a.id) for a in ng.get_within_spatial_bounds(lower_bound=lo, upper_bound=hi)}
    cv_box = set(cv.get_by_bbox(cloudvolume.Bbox(lo, hi)).ids.tolist())
    table_box = set(get_table(ann_lake, "hemibrain", "da1_sites").query(bbox=[lo, hi], units="voxels").df()["id"])
    assert ng_box == cv_box == want == table_box and 0 < len(want) < len(sites)
    # everything, each annotation exactly once
    every = [int(a.id) for a in ng.get_within_spatial_bounds()]
    assert sorted(every) == list(range(1, len(sites) + 1))
    assert len(ng.metadata["spatial"]) == 1 and np.prod(ng.metadata["spatial"][0]["grid_shape"]) > 1


def test_precomputed_uint64_root_ids_and_synapses(ann_server, ann_lake):
    ng, cv = _readers(ann_server, "pinky100", "somas")
    somas = pinky_somas()
    root = int(somas.pt_root_id.iloc[7])  # 18 digits: above 2**53, exact only as uint64
    assert root > 2**53
    assert [int(a.id) for a in ng.relationships["segment"][root]] == [8]
    got = cv.get_by_relationship("segment", root)
    assert got.ids.tolist() == [8]
    np.testing.assert_array_equal(got.geometry[0], somas[["pt_position_x", "pt_position_y",
                                                          "pt_position_z"]].iloc[7].to_numpy(np.float32))
    # the detected Gerhard synapses: 50 points at ctr_pt, same in both readers and the table
    ng, cv = _readers(ann_server, "gerhard2013", "synapses")
    table = get_table(ann_lake, "gerhard2013", "synapses").query().df()
    every = cv.get_by_bbox(cloudvolume.Bbox((0, 0, 0), (1024, 1024, 20)))
    assert sorted(every.ids.tolist()) == table["id"].tolist() == sorted(int(a.id) for a in
                                                                        ng.get_within_spatial_bounds())
    order = np.argsort(every.ids)
    np.testing.assert_array_equal(every.geometry[order],
                                  table[["ctr_pt_position_x", "ctr_pt_position_y",
                                         "ctr_pt_position_z"]].to_numpy(np.float32))
    np.testing.assert_array_equal(every.properties["size"][order], table["size"].to_numpy(np.float32))


def test_precomputed_http_hygiene(ann_server):
    base = f"{ann_server}/precomputed/hemibrain/annotations/da1_sites"
    full = httpx.get(f"{base}/by_id/5")
    assert full.status_code == 200 and full.headers["access-control-allow-origin"] == "*"
    head = httpx.head(f"{base}/by_id/5")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(full.content)
    part = httpx.get(f"{base}/by_id/5", headers={"Range": "bytes=0-11"})
    assert part.status_code == 206 and part.content == full.content[:12]
    assert httpx.get(f"{base}/by_id/123456789").status_code == 404
    assert httpx.get(f"{base}/spatial0/99_99_99").status_code == 404
    assert httpx.get(f"{ann_server}/precomputed/hemibrain/annotations/nope/info").status_code == 404


def test_rows_api_json_and_arrow(ann_server):
    api = f"{ann_server}/api/v1/datastacks/hemibrain/tables"
    r = httpx.post(api, json={"name": "http_sites", "schema_type": "point",
                              "properties": {"body_id": "uint64", "type": "str", "roi": "str"}})
    assert r.status_code == 201, r.text
    sites = navis_sites()[["pt_position_x", "pt_position_y", "pt_position_z", "body_id", "type", "roi",
                           "confidence"]]
    rows = sites.head(1000).astype(object).where(sites.head(1000).notna(), None).to_dict("records")
    r = httpx.post(f"{api}/http_sites/rows", json={"rows": rows})
    assert r.status_code == 201, r.text
    assert r.json()["ids"] == list(range(1, 1001))
    r = httpx.post(f"{api}/http_sites/rows", content=_ipc(pa.Table.from_pandas(sites.iloc[1000:3000],
                                                                               preserve_index=False)),
                   headers={"Content-Type": ARROW})
    assert r.status_code == 201 and r.json()["count"] == 2000
    t1 = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.01)
    got = httpx.get(f"{api}/http_sites/rows", params={"format": "arrow"})
    assert got.headers["content-type"] == ARROW
    tab = pa.ipc.open_stream(got.content).read_all()
    assert tab.num_rows == 3000 and tab.schema.field("id").type == pa.uint64()
    np.testing.assert_array_equal(tab.column("pt_position_x").to_numpy(), sites.pt_position_x[:3000].to_numpy())
    assert tab.column("roi").to_pylist() == sites.roi[:3000].where(sites.roi[:3000].notna(), None).tolist()
    # GET with a filter and a bbox (nm)
    lo = sites[["pt_position_x", "pt_position_y", "pt_position_z"]][:3000].min().to_numpy() * 8
    hi = sites[["pt_position_x", "pt_position_y", "pt_position_z"]][:3000].median().to_numpy() * 8
    js = httpx.get(f"{api}/http_sites/rows", params={"bbox": ",".join(map(str, [*lo, *hi])), "type": "post"}).json()
    s3 = sites[:3000]
    p = s3[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy() * 8
    want = np.flatnonzero(((p >= lo) & (p < hi)).all(axis=1) & (s3.type == "post").to_numpy()) + 1
    assert [r["id"] for r in js["rows"]] == want.tolist() and js["count"] > 0
    # update, delete, history, past state
    r = httpx.patch(f"{api}/http_sites/rows", json=[{"id": 1, "roi": "EDITED"}])
    assert r.status_code == 200 and r.json()["ids"] == [3001]
    r = httpx.post(f"{api}/http_sites/rows/delete", json={"ids": [2, 3]})
    assert r.json()["count"] == 2
    q = httpx.post(f"{api}/http_sites/query", json={"ids": [1, 2, 3, 3001]}).json()
    assert [(r["id"], r["roi"]) for r in q["rows"]] == [(3001, "EDITED")]
    q = httpx.post(f"{api}/http_sites/query", json={"ids": [1, 2, 3, 3001], "timestamp": t1}).json()
    assert [r["id"] for r in q["rows"]] == [1, 2, 3]
    hist = httpx.get(f"{api}/http_sites/history").json()
    assert [h["neurolake_action"] for h in hist[:4]] == ["delete", "update", "append", "append"]
    meta = httpx.get(f"{api}/http_sites").json()
    assert meta["voxel_size_nm"][0] == 8.0 and meta["schema_type"] == "point"


@pytest.mark.parametrize("case", ["missing", "mistyped", "nan", "dup", "truncated_arrow", "bad_json"])
def test_rows_api_refuses_bad_batches(ann_server, ann_lake, case):
    url = f"{ann_server}/api/v1/datastacks/gerhard2013/tables/synapses/rows"
    t = get_table(ann_lake, "gerhard2013", "synapses")
    version = t.version
    rows = [{"ctr_pt_position_x": 10.0 * i, "ctr_pt_position_y": 5.0, "ctr_pt_position_z": 1.0, "size": 3.0}
            for i in range(1, 6)]
    kw: dict = {}
    status, needle = 400, None
    if case == "missing":
        for r in rows:
            del r["ctr_pt_position_y"]
        needle = "ctr_pt_position_y"
    elif case == "mistyped":
        rows[3]["size"] = "large"
        needle = "rows [3]"
    elif case == "nan":
        rows[4]["ctr_pt_position_z"] = None
        needle = "rows [4]"
    elif case == "dup":
        for i, r in enumerate(rows):
            r["id"] = 7000 + i % 2
        status, needle = 409, "7000"
    elif case == "truncated_arrow":
        body = _ipc(pa.Table.from_pandas(pd.DataFrame(rows)))
        kw = {"content": body[: len(body) // 2], "headers": {"Content-Type": ARROW}}
        status, needle = 422, "Arrow"
    elif case == "bad_json":
        kw = {"content": b'[{"ctr_pt_position_x": 1', "headers": {"Content-Type": "application/json"}}
        status, needle = 422, "JSON"
    r = httpx.post(url, **(kw or {"json": rows}))
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]
    assert t.version == version and t.count() == 50


def test_precomputed_refuses_tables_over_the_memory_limit(ann_lake, monkeypatch):
    from neurolake.annotations import precomputed as pre
    from neurolake.errors import TooLarge

    monkeypatch.setattr(pre, "MAX_ROWS", 100)
    ann_lake.state("annotations.precomputed", dict).clear()  # no index built before the limit was lowered
    with pytest.raises(TooLarge, match="da1_sites"):
        pre.precomputed(get_table(ann_lake, "hemibrain", "da1_sites"))
    assert pre.precomputed(get_table(ann_lake, "gerhard2013", "synapses")).count == 50
