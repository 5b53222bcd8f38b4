"""Every parameter is validated at the edge: each 5xx the fuzzer found (issue 11, finding 5) is now a 4xx whose
message names the field (tests/serving/test_fuzz.py finds them; one regression case per distinct fix here).

Found and fixed: ids, versions, operation ids and limits beyond int64/uint64 reaching SQLite ("Python int
too large to convert to SQLite INTEGER") or numpy ("out of bounds for uint64"); negative root ids; negative
offsets and zero/negative limits; non-numeric keys of a supervoxel mapping; JSON bodies that are null, a
number or an array where an object is read; rows of a CAVE edit that are objects; lenient integers in URLs
(``١,٢`` Arabic-Indic digits, ``1_0``, ``' 0, 10'``, which Python's ``int()`` accepts); and a version expiring
while it is read (410 VersionExpired or the rows, never a 500).

On the real gala crop (image, segmentation, annotation tables, versions 1 and 2), in-process
(``create_app``); one case runs against a real ``neurolake serve`` process.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from proofread_lake import build

BIG = 2**70
DS = "/api/v1/datastacks/gala"
CAVE = "/segmentation/api/v1/table/gala"


@pytest.fixture(scope="module")
def edge_lake(gala_lake_path):
    lake, tokens, roots = build(gala_lake_path)
    yield lake, tokens, roots
    lake.close()


@pytest.fixture(scope="module")
def client(edge_lake):
    from neurolake.server.app import create_app

    with TestClient(create_app(edge_lake[0], max_cutout_bytes=2_000_000)) as c:
        yield c


# (method, path, JSON body or None (no body), expected status, the field the message names)
CASES = [
    # limits and offsets: negative, zero, beyond int64, lenient digits
    ("GET", DS + "/versions/1/tables/synapses?limit=-1", None, 400, "limit"),
    ("GET", DS + "/versions/1/tables/synapses?limit=0", None, 400, "limit"),
    ("GET", DS + "/versions/1/tables/synapses?offset=-5", None, 400, "offset"),
    ("GET", DS + f"/versions/1/tables/synapses?offset={2**63}", None, 400, "offset"),
    ("GET", DS + "/versions/1/tables/synapses?limit=1_0", None, 400, "limit"),
    ("GET", DS + "/versions/1/tables/synapses?limit=%2010", None, 400, "limit"),
    ("GET", DS + "/versions/1/tables/synapses?limit=%D9%A1", None, 400, "limit"),  # ١
    ("GET", DS + "/live/synapses?limit=0", None, 400, "limit"),
    ("GET", DS + "/live/synapses?offset=-5", None, 400, "offset"),
    ("GET", DS + "/tables/synapses/history?limit=0", None, 400, "limit"),
    ("GET", DS + "/tables/synapses/rows?limit=-1", None, 400, "limit"),
    ("GET", DS + "/tables/synapses/rows?mip=-1", None, 400, "mip"),
    ("POST", DS + "/tables/synapses/query", {"limit": 0}, 400, "limit"),
    ("POST", DS + "/tables/synapses/query", {"offset": -5}, 400, "offset"),
    ("GET", f"/api/v1/audit?limit={2**64}", None, 400, "limit"),
    ("GET", "/api/v1/features?limit=0", None, 400, "limit"),
    ("GET", "/api/v1/features?offset=-1", None, 400, "offset"),
    # versions, operation ids, root ids beyond int64 / uint64, negative ids
    ("GET", DS + f"/versions/{2**63}", None, 400, "version"),
    ("DELETE", DS + f"/versions/{2**64}", None, 400, "version"),
    ("GET", f"/materialize/api/v3/datastack/gala/version/{2**63}", None, 400, "version"),
    ("GET", f"/materialize/api/v2/datastack/gala/version/{2**63}/tables", None, 400, "version"),
    ("POST", f"/materialize/api/v3/datastack/gala/version/{BIG}/table/synapses/query", {}, 400, "version"),
    ("GET", DS + f"/connectome?version={2**63}", None, 400, "version"),
    ("GET", DS + f"/connectome/path?source={BIG}&target=1", None, 400, "source"),
    ("GET", DS + f"/segmentation/operations/{2**64}", None, 400, "operation_id"),
    ("POST", DS + f"/segmentation/operations/{BIG}/undo", {}, 400, "operation_id"),
    ("GET", DS + f"/segmentation/roots/{BIG}", None, 400, "root_id"),
    ("GET", DS + "/segmentation/roots/-1/leaves", None, 400, "root_id"),
    ("GET", DS + f"/segmentation/operations?root_id={BIG}", None, 400, "root_id"),
    ("GET", f"{CAVE}/node/{BIG}/root", None, 400, "node_id"),
    ("POST", f"{CAVE}/is_latest_roots", {"node_ids": [BIG]}, 400, "root_ids"),
    ("POST", f"{CAVE}/root_timestamps", {"node_ids": [{"a": 1}]}, 400, "root_id"),
    ("POST", f"{CAVE}/root_timestamps", {"node_ids": "1,2"}, 400, "node_ids"),
    ("POST", DS + "/segmentation/merge", {"supervoxels": [1, BIG]}, 400, "supervoxels"),
    # mapping keys that are not ids
    ("POST", DS + "/segmentation", {"mapping": {"1a": 3}, "overwrite": True}, 400, "mapping"),
    ("POST", DS + "/segmentation", {"mapping": {"": 3}, "overwrite": True}, 400, "mapping"),
    # a segmentation without supervoxels (no layer): refused, it left an empty graph that 500'd every read
    ("POST", DS + "/segmentation", {"overwrite": True}, 400, "layer"),
    # bodies that are null / not objects / rows that are objects
    ("POST", "/materialize/api/v3/datastack/gala/query", "null", 400, "body"),
    ("POST", "/materialize/api/v3/datastack/gala/query", [1], 400, "body"),
    ("POST", "/materialize/api/v3/datastack/gala/version/1/table/synapses/query", [["x"]], 400, "body"),
    ("POST", "/materialize/api/v3/datastack/gala/version/1/table/synapses/query", {"offset": "x"}, 400, "offset"),
    ("POST", "/materialize/api/v3/datastack/gala/version/1/table/synapses/query", {"limit": 0}, 400, "limit"),
    ("POST", "/materialize/api/v3/datastack/gala/version/1/table/synapses/query",
     {"filter_in_dict": {"synapses": [1]}}, 400, "filter_in_dict"),
    ("POST", f"{CAVE}/merge", [{}, {}], 400, "body"),
    ("POST", f"{CAVE}/split", {"sources": [[BIG, 0, 0, 0]], "sinks": [[1, 0, 0, 0]]}, 400, "sources"),
    ("POST", DS + "/segmentation/merge", "null", 400, "body"),
    ("POST", DS + "/tables/synapses/rows/delete", "null", 400, "body"),
    ("POST", DS + "/tables/synapses/rows/delete", {"ids": [2**63 + 5]}, 400, "ids"),
    ("GET", DS + f"/tables/synapses/rows?ids={2**63}", None, 400, "ids"),
    # lenient integers in URL ranges and lists: ASCII digits only
    ("GET", "/ocp/ca/gala/image/npz/0/%D9%A1,%D9%A2/0,10/0,2/", None, 400, "x"),  # ١,٢
    ("GET", "/ocp/ca/gala/image/npz/0/1_0,20/0,10/0,2/", None, 400, "x"),
    ("GET", "/ocp/ca/gala/image/npz/0/%200,%2010/0,10/0,2/", None, 400, "x"),  # ' 0, 10'
    ("GET", "/ocp/ca/gala/image/xy/0/0,10/0,10/%D9%A1/", None, 400, "z"),
    ("GET", "/ocp/ca/gala/image/npz/%D9%A1/0,10/0,10/0,2/", None, 400, "mip"),
    ("GET", DS + "/segmentation/cutout/1_0,20/0,8/0,2", None, 400, "x"),
    ("GET", DS + "/segmentation/roots?supervoxels=%D9%A1,%D9%A2", None, 400, "supervoxels"),
    ("GET", DS + "/tables/synapses/rows?ids=1_0", None, 400, "ids"),
    ("GET", DS + "/tables/synapses/rows?ids=1,%202", None, 400, "ids"),  # '1, 2'
    ("GET", DS + "/tables/synapses/rows?bbox=0,0,0,1e999,1,1", None, 400, "bbox"),
    ("GET", DS + "/tables/synapses/rows?bbox=%D9%A1,0,0,1,1,1", None, 400, "bbox"),
    ("GET", "/catmaid/gala/image/xy/%D9%A1/0_0_0.png", None, 400, "tile"),
    ("GET", "/catmaid/gala/image/xy/0/%D9%A1_0_0.png", None, 400, "tile"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES,
                         ids=[f"{c[0]} {c[1][:70]} {json.dumps(c[2])[:30] if c[2] is not None else ''}" for c in CASES])
def test_edge_is_4xx_naming_the_field(client, method, path, body, status, field):
    kw = {}
    if body is not None:
        kw = {"content": body if isinstance(body, str) else json.dumps(body),
              "headers": {"content-type": "application/json"}}
    r = client.request(method, path, **kw)
    assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()
    assert err["error"] in ("invalid_argument", "out_of_bounds"), err
    assert field in err["message"], err


BOSS = [
    ("/v1/cutout/gala/gala/image/0/1_0:20/0:8/0:2/", "x"),
    ("/v1/cutout/gala/gala/image/0/%D9%A1:%D9%A2/0:8/0:2/", "x"),
    ("/v1/cutout/gala/gala/image/0/0:8/%200:8/0:2/", "y"),
    ("/v1/cutout/gala/gala/image/%D9%A1/0:8/0:8/0:2/", "resolution"),
    ("/v1/cutout/gala/gala/segmentation/0/0:8/0:8/0:2/?filter=1_0", "filter"),
    (f"/v1/boundingbox/gala/gala/segmentation/0/{2**64}/", "id"),
    ("/v1/reserve/gala/gala/segmentation/1_0", "count"),
]


@pytest.mark.parametrize(("path", "field"), BOSS, ids=[b[0] for b in BOSS])
def test_boss_edge_is_400_in_boss_body(client, path, field):
    r = client.get(path)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    err = r.json()
    assert err["status"] == 400 and err["code"] == 1001 and field in err["message"], err


def test_valid_values_still_work(client, edge_lake):
    """The strict parsing keeps every well-formed request: ASCII ranges, negative-free ids, limit >= 1."""
    roots = edge_lake[2]["roots"]
    assert client.get("/ocp/ca/gala/image/npz/0/0,10/0,10/0,2/").status_code == 200
    assert client.get("/v1/cutout/gala/gala/image/0/0:8/0:8/0:2/", headers={"Accept": "application/blosc"}
                      ).status_code == 200
    rows = client.get(DS + "/versions/1/tables/synapses?limit=1&offset=2").json()
    assert len(rows) == 1
    assert client.get(DS + f"/segmentation/roots/{roots[0]}").json()["root_id"] == roots[0]
    r = client.post(f"{CAVE}/root_timestamps", json={"node_ids": roots[:2]})
    assert r.status_code == 200 and len(r.json()["timestamp"]) == 2
    r = client.post("/materialize/api/v3/datastack/gala/version/1/table/synapses/query", json={"limit": 2})
    assert r.status_code == 200


def test_openapi_declares_errors_and_bounds(client):
    """Every route declares its error statuses with the error body (BossDB routes their own), and the
    bounds of its whole-number parameters."""
    doc = client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"400", "401", "403", "404", "409", "410", "413", "422", "429"} <= codes, (method, path)
            ref = op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/BossError" if path.startswith("/v1/") else "/ErrorBody"), (path, ref)
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "message", "detail"}
    params = {p["name"]: p["schema"] for p in
              doc["paths"]["/api/v1/datastacks/{datastack}/versions/{version}/tables/{table}"]["get"]["parameters"]}
    assert params["version"]["maximum"] == 2**63 - 1 and params["version"]["minimum"] == 0
    assert params["offset"]["minimum"] == 0
    assert params["limit"]["anyOf"][0]["minimum"] == 1
    assert params["root_id"]["anyOf"][0]["maximum"] == 2**64 - 1


def test_live_server_refuses_big_version(serve_lake, gala_lake_path, edge_lake):
    """A real ``neurolake serve`` process (SQLite catalog): a version beyond int64 is a 400, not a 500."""
    base = serve_lake(gala_lake_path)
    r = httpx.get(f"{base}{DS}/versions/{2**63}")
    assert r.status_code == 400 and "version" in r.json()["message"]
    r = httpx.get(f"{base}{DS}/versions/1/tables/synapses", params={"limit": "١"})
    assert r.status_code == 400 and "limit" in r.json()["message"]


def _expirable_version(lake) -> int:
    """A version that may be expired: the newest one, after a newer one is made (one more real row)."""
    import pandas as pd

    from neurolake.annotations import get_table
    from neurolake.materialize import materialize, versions

    old = versions(lake, "gala")[-1]["version"]
    get_table(lake, "gala", "synapses").append(pd.DataFrame({
        "pre_pt_position": [[5, 5, 1]], "post_pt_position": [[7, 5, 1]], "ctr_pt_position": [[6, 5, 1]],
        "size": [7.0]}), author="edge")
    assert materialize(lake, "gala")["version"] > old
    return old


def test_version_expired_between_lookup_and_read_is_410(edge_lake, monkeypatch):
    """``expire`` runs in another thread after ``query_version`` found the version's file and before it
    reads it: VersionExpired (410), not the I/O error of the vanished file."""
    import importlib

    mv = importlib.import_module("neurolake.materialize.versions")  # the package exports a function `versions`
    lake = edge_lake[0]
    target = _expirable_version(lake)
    original = mv._table_file

    def lookup_then_expire(*a, **kw):
        found = original(*a, **kw)
        t = threading.Thread(target=mv.expire, args=(lake, "gala", target))
        t.start()
        t.join()
        assert not found[1].exists()  # the file the reader was about to open is gone
        return found

    monkeypatch.setattr(mv, "_table_file", lookup_then_expire)
    with pytest.raises(mv.VersionExpired) as exc:
        mv.query_version(lake, "gala", target, "synapses")
    assert exc.value.http_status == 410 and exc.value.detail["version"] == target


def test_version_expiring_while_read_is_410_or_rows(edge_lake):
    """Readers query a version in a loop while ``expire`` deletes it in another thread: every read gives the
    rows or VersionExpired (HTTP 410), never another error; the HTTP route then answers 410."""
    from neurolake.materialize.versions import VersionExpired, expire, query_version
    from neurolake.server.app import create_app

    lake = edge_lake[0]
    target = _expirable_version(lake)
    want = query_version(lake, "gala", target, "synapses").arrow().num_rows
    outcomes, errors = [], []

    def reader():
        for _ in range(2000):
            try:
                outcomes.append(query_version(lake, "gala", target, "synapses").arrow().num_rows)
            except VersionExpired:
                outcomes.append("expired")
                return
            except Exception as exc:  # noqa: BLE001 - anything else is the bug
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    while len(outcomes) < 3 and any(t.is_alive() for t in threads):
        threading.Event().wait(0.005)
    expire(lake, "gala", target)
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert outcomes.count("expired") == 3 and all(o == want for o in outcomes if o != "expired")
    with TestClient(create_app(lake)) as c:
        r = c.get(f"{DS}/versions/{target}/tables/synapses")
        assert r.status_code == 410 and r.json()["error"] == "version_expired"


def test_empty_segmentation_reads_give_zero_roots(fresh_lake):
    """A proofreadable segmentation with no supervoxels (explicitly empty) answers lookups (root 0 for
    background and, with ``unknown="zero"``, for unknown ids) and materializes instead of an IndexError."""
    import numpy as np

    from neurolake.errors import NotFound
    from neurolake.materialize import materialize
    from neurolake.proofreading import create_segmentation

    fresh_lake.create_datastack("empty", (8, 8, 8))
    seg = create_segmentation(fresh_lake, "empty", supervoxels=np.zeros(0, np.uint64))
    assert seg.roots([0]).tolist() == [0]
    assert seg.roots([0, 5], unknown="zero").tolist() == [0, 0]
    with pytest.raises(NotFound):
        seg.roots([5])
    assert materialize(fresh_lake, "empty")["version"] == 1
