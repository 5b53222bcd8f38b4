"""Access needs are declared per route, never read from the URL text (issue 10 item 4, issue 11 finding 1).

The old ``--auth`` middleware authorised with regexes over the raw path: a POST whose path contained
``/query/``, ``roots_binary``, ``lineage_graph``, ``/leaves``, ``is_latest_roots``… counted as a read, and
the datastack was the first path segment equal to any datastack name. So a datastack, layer or table
*named* like a route word turned writes into reads (a viewer, or a user without a role on a public
datastack, wrote voxels, rows and proofreading edits), and an editor of a datastack named ``ocp``,
``v1``, ``api`` or ``segmentation`` could write into every other datastack through those routes.

Here every datastack, layer and annotation table is named after a route word, on real data (EM of
Gerhard et al. 2013, the gala FIB-SEM ground-truth segmentation and points on its neurons). Every
write route is tried by every role below editor — no token, a user without a role on the (public)
datastack, a viewer, an editor of the datastacks named like path segments — and must answer 401/403 and
change nothing (voxels, rows and table versions, reserved ids, the edit log, layers, versions); editors
and lake admins succeed. Query-style POSTs stay reads. The in-process app (``create_app(lake,
auth=True)``) keeps this fast; one check runs against a real ``neurolake serve --auth`` process.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import warnings
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
WORDS = ("query", "roots", "roots_binary", "lineage_graph", "leaves", "is_latest_roots", "root_timestamps",
         "past_id_mapping", "sql", "reserve", "segmentation", "versions", "connectome", "rows", "delete", "merge",
         "split", "undo", "redo", "rollback", "operations", "watershed", "live", "materialize", "api", "v1",
         "ocp", "ca", "cutout", "collection", "datastacks", "tables", "table", "precomputed", "annotations",
         "info", "features", "data", "docs")
# datastacks named like path segments of other datastacks' routes; "squatter" is an editor of these only
SQUAT = ("api", "v1", "ocp", "ca", "segmentation", "materialize", "datastacks", "collection", "cutout", "tables",
         "table", "precomputed")
PROOF = ("query", "leaves", "lineage_graph")  # proofreadable, supervoxel layer "roots_binary"
PROPS = {"body_id": "uint64", "type": "str", "roi": "str"}
DENIED = ("anon", "nobody", "vi", "squatter")
WRITTEN = ("query", "roots", "leaves", "rows", "delete", "api", "ocp", "tables")  # editors write here (commits are slow)


def em_layer(ds: str) -> str:
    return WORDS[(WORDS.index(ds) + 1) % len(WORDS)]


def table_of(ds: str) -> str:
    return WORDS[(WORDS.index(ds) + 2) % len(WORDS)]


@functools.cache
def _real_volumes():
    import h5py
    import tifffile

    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))[:4]
    em = np.stack([tifffile.imread(f)[:64, :64] for f in files])  # (z, y, x) uint8
    with h5py.File(DATA / "gala_fibsem" / "train-gt.lzf.h5") as f:
        seg = f["stack"][:8, :64, :64].astype(np.uint32)  # (z, y, x) neuron labels
    return em, seg


@functools.cache
def _all_sites() -> pd.DataFrame:
    """Point annotations on the real gala neurons: the first voxel of each neuron in each of the first 4
    sections (x, y, z voxels inside the 64 x 64 x 4 volumes), body_id = the neuron's label."""
    _, seg = _real_volumes()
    rows = []
    for z in range(4):
        labels, first = np.unique(seg[z], return_index=True)
        for label, i in zip(labels, first, strict=True):
            if label:
                y, x = np.unravel_index(i, seg[z].shape)
                rows.append({"pt_position_x": int(x), "pt_position_y": int(y), "pt_position_z": z,
                             "body_id": int(label), "type": "gala_neuron", "roi": f"section{z}"})
    return pd.DataFrame(rows)


def _sites(n: int, skip: int = 0) -> pd.DataFrame:
    return _all_sites().iloc[skip:skip + n].reset_index(drop=True)


def _users(lake) -> dict[str, str]:
    acc = lake.access
    tok = {}
    for user, admin in (("adm", True), ("ed", False), ("vi", False), ("nobody", False), ("squatter", False)):
        acc.add_user(user, admin=admin)
        tok[user] = acc.create_token(user, "t")["token"]
    for ds in WORDS:
        acc.grant("ed", ds, "editor")
        acc.grant("vi", ds, "viewer")
    for ds in SQUAT:
        acc.grant("squatter", ds, "editor")
    return tok


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from fastapi.testclient import TestClient

    from neurolake import init_lake
    from neurolake.annotations import create_table
    from neurolake.materialize import materialize
    from neurolake.proofreading import create_segmentation
    from neurolake.server.app import create_app

    work = tmp_path_factory.mktemp("route_access")
    em, seg = _real_volumes()
    np.save(work / "em.npy", em)
    np.save(work / "seg.npy", seg)
    lake = init_lake(work / "lake")
    for ds in WORDS:
        lake.create_datastack(ds, (4, 4, 50), public=True)
        lake.ingest(str(work / "em.npy"), ds, em_layer(ds), voxel_size=(4, 4, 50), scheduler="sync")
        t = create_table(lake, ds, table_of(ds), "point", properties=PROPS, owner="adm",
                         read_permission="PUBLIC", write_permission="PUBLIC")  # the datastack role decides
        t.append(_sites(5), author="adm")
    for ds in (*PROOF, "merge"):
        lake.ingest(str(work / "seg.npy"), ds, "roots_binary", voxel_size=(4, 4, 50), layer_type="segmentation",
                    scheduler="sync")
    for ds in PROOF:
        create_segmentation(lake, ds, layer="roots_binary", agglomeration="each")
        materialize(lake, ds)
    tok = _users(lake)
    svs = [int(v) for v in np.unique(seg) if v]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(create_app(lake, auth=True), raise_server_exceptions=True)
    yield {"lake": lake, "c": client, "tok": tok, "svs": svs, "em": em}
    client.close()
    lake.close()


def _h(w, who: str) -> dict:
    return {} if who == "anon" else {"Authorization": f"Bearer {w['tok'][who]}"}


def _denied_roles(ds: str) -> tuple[str, ...]:
    return tuple(r for r in DENIED if not (r == "squatter" and ds in SQUAT))


def _assert_denied(r: httpx.Response, who: str, what: str) -> None:
    want = 401 if who == "anon" else 403
    assert r.status_code == want, f"{who}: {what} -> {r.status_code} {r.text[:300]}"
    body = r.json()
    if "status" in body and "code" in body:  # BossDB error body
        assert body["status"] == want
    elif want == 403:
        assert body["detail"]["required"] in ("editor", "admin") and body["detail"]["user"] == who


def _voxels(lake, ds: str) -> np.ndarray:
    return lake.layer(ds, em_layer(ds)).cutout(x=(0, 16), y=(0, 16), z=(0, 2))


def test_voxel_writes_need_editor(world):
    """OCP and BossDB cutout uploads into datastacks and layers named after route words."""
    import blosc

    from neurolake.volumes.formats import encode

    c, lake = world["c"], world["lake"]
    for ds in WORDS:
        la = em_layer(ds)
        ocp = f"/ocp/ca/{ds}/{la}/npz/0/0,16/0,16/0,2/"
        boss = f"/v1/cutout/{ds}/{ds}/{la}/0/0:16/0:16/0:2/"
        before = _voxels(lake, ds)
        np.testing.assert_array_equal(before, world["em"][0:2, 0:16, 0:16])
        for who in _denied_roles(ds):
            r = c.post(ocp, content=encode(np.full((2, 16, 16), 1, np.uint8), "npz"), headers=_h(world, who))
            _assert_denied(r, who, f"POST {ocp}")
            r = c.post(boss, content=blosc.compress(bytes([2]) * 512, typesize=1), headers=_h(world, who))
            _assert_denied(r, who, f"POST {boss}")
            np.testing.assert_array_equal(_voxels(lake, ds), before, err_msg=f"{who} changed voxels of {ds}/{la}")
        r = c.post(ocp, content=encode(np.full((2, 16, 16), 7, np.uint8), "npz"), headers=_h(world, "ed"))
        assert r.status_code == 201, r.text
        assert (_voxels(lake, ds) == 7).all()
        r = c.post(boss, content=blosc.compress(bytes([9]) * 512, typesize=1), headers=_h(world, "adm"))
        assert r.status_code == 201, r.text
        assert (_voxels(lake, ds) == 9).all()
        # readers still read (viewer, and a user without a role: the datastack is public)
        for who in ("vi", "nobody"):
            assert c.get(ocp, headers=_h(world, who)).status_code == 200


def test_annotation_writes_need_editor(world):
    """Create table, insert, update and delete rows in tables and datastacks named after route words."""
    from neurolake.annotations import get_table, list_tables

    c, lake = world["c"], world["lake"]
    row = _sites(1, skip=10).astype(object).to_dict("records")
    for ds in WORDS:
        name = table_of(ds)
        api = f"/api/v1/datastacks/{ds}/tables"
        new = {"name": WORDS[(WORDS.index(ds) + 3) % len(WORDS)], "schema_type": "point", "properties": PROPS,
               "write_permission": "PUBLIC"}
        tables_before = sorted(list_tables(lake, ds))
        version = get_table(lake, ds, name).version
        rows_before = get_table(lake, ds, name).query().df().sort_values("id").reset_index(drop=True)
        for who in _denied_roles(ds):
            h = _h(world, who)
            _assert_denied(c.post(api, json=new, headers=h), who, f"create table in {ds}")
            _assert_denied(c.post(f"{api}/{name}/rows", json={"rows": row}, headers=h), who, f"insert {ds}/{name}")
            _assert_denied(c.patch(f"{api}/{name}/rows", json=[{"id": 1, "roi": "X"}], headers=h), who,
                           f"update {ds}/{name}")
            _assert_denied(c.post(f"{api}/{name}/rows/delete", json={"ids": [2]}, headers=h), who,
                           f"delete rows of {ds}/{name}")
        assert sorted(list_tables(lake, ds)) == tables_before
        t = get_table(lake, ds, name)
        assert t.version == version, f"denied writes committed to {ds}/{name}"
        after = t.query().df().sort_values("id").reset_index(drop=True)
        assert after[["id", "roi"]].equals(rows_before[["id", "roi"]])
        # the query-style POST stays a read, for a viewer and for a user without a role
        for who in ("vi", "nobody"):
            r = c.post(f"{api}/{name}/query", json={"ids": [1, 2]}, headers=_h(world, who))
            assert r.status_code == 200 and r.json()["count"] == 2, r.text
        if ds not in WRITTEN:
            continue
        # editors and admins write
        ed, adm = _h(world, "ed"), _h(world, "adm")
        assert c.post(api, json=new, headers=ed).status_code == 201
        assert c.post(f"{api}/{name}/rows", json={"rows": row}, headers=ed).status_code == 201
        assert c.patch(f"{api}/{name}/rows", json=[{"id": 1, "roi": "X"}], headers=adm).status_code == 200
        assert c.post(f"{api}/{name}/rows/delete", json={"ids": [2]}, headers=ed).status_code == 200
        assert get_table(lake, ds, name).count() == len(rows_before)  # +1 inserted, -1 deleted
        assert set(list_tables(lake, ds)) == {*tables_before, new["name"]}


def test_reserve_is_a_write(world):
    """BossDB's GET /v1/reserve hands out ids: editors only, whatever the datastack is called."""
    c, lake = world["c"], world["lake"]
    for ds in (*PROOF, "merge"):
        state = Path(lake.root) / "datastacks" / ds / "serving" / "reserved_ids.json"
        url = f"/v1/reserve/{ds}/{ds}/roots_binary/5"
        for who in _denied_roles(ds):
            _assert_denied(c.get(url, headers=_h(world, who)), who, f"GET {url}")
        assert not state.exists()
        first = c.get(url, headers=_h(world, "ed")).json()["start_id"]
        saved = state.read_bytes()
        for who in _denied_roles(ds):
            _assert_denied(c.get(url, headers=_h(world, who)), who, f"GET {url}")
        assert state.read_bytes() == saved
        assert c.get(url, headers=_h(world, "adm")).json()["start_id"] == first + 5


def _ops(lake, ds: str) -> list:
    return [(o["operation_id"], o["kind"]) for o in lake.datastack(ds).segmentation.operations()]


def test_proofreading_writes_need_editor(world):
    """Merge, split, undo, redo and rollback (neurolake and CAVE routes) on proofreadable datastacks named
    query, leaves and lineage_graph: only editors and admins change the edit log."""
    c, lake = world["c"], world["lake"]
    s = world["svs"]
    for ds in PROOF:
        api = f"/api/v1/datastacks/{ds}/segmentation"
        pcg = f"/segmentation/api/v1/table/{ds}"
        t0 = dt.datetime.now(dt.UTC).isoformat()
        steps = [  # (route, body, who succeeds) in an order where each write is valid when it runs
            ("merge", f"{api}/merge", {"supervoxels": [s[0], s[1]]}, "ed"),
            ("split", f"{api}/split", {"sources": [s[0]], "sinks": [s[1]]}, "adm"),
            ("undo", None, {}, "ed"),
            ("redo", None, {}, "adm"),
            ("cave merge", f"{pcg}/merge", [[s[2], 0, 0, 0], [s[3], 0, 0, 0]], "ed"),
            ("cave split", f"{pcg}/split", {"sources": [[s[2], 0, 0, 0]], "sinks": [[s[3], 0, 0, 0]]}, "adm"),
            ("rollback", f"{api}/rollback", {"user": "adm", "since": t0}, "ed"),
        ]
        split_id = None
        for what, url, body, winner in steps:
            if what in ("undo", "redo"):
                url = f"{api}/operations/{split_id}/{what}"
            log = _ops(lake, ds)
            for who in _denied_roles(ds):
                _assert_denied(c.post(url, json=body, headers=_h(world, who)), who, f"{what} on {ds}")
                assert _ops(lake, ds) == log, f"{who}'s denied {what} changed the edit log of {ds}"
            r = c.post(url, json=body, headers=_h(world, winner))
            assert r.status_code == 200, (what, r.text)
            assert len(_ops(lake, ds)) == len(log) + 1
            if what == "split":
                split_id = r.json()["operation_id"]
        # the query-style chunkedgraph POSTs stay reads
        roots = c.post(f"{pcg}/roots_binary", content=np.array(s[:2], "<u8").tobytes(), headers=_h(world, "nobody"))
        assert roots.status_code == 200 and len(roots.content) == 16
        root_ids = np.frombuffer(roots.content, "<u8").tolist()
        for route, body in (("is_latest_roots", {"node_ids": root_ids}), ("root_timestamps", {"node_ids": root_ids}),
                            ("past_id_mapping", {"root_ids": root_ids}), ("lineage_graph_multiple",
                                                                           {"root_ids": root_ids})):
            for who in ("vi", "nobody"):
                r = c.post(f"{pcg}/{route}", json=body, headers=_h(world, who))
                assert r.status_code == 200, (route, who, r.text)
            assert c.post(f"{pcg}/{route}", json=body).status_code == 401
        r = c.post(f"/materialize/api/v3/datastack/{ds}/version/1/table/{table_of(ds)}/query", json={},
                   headers=_h(world, "nobody"))
        assert r.status_code == 200, r.text


def test_segmentation_watershed_versions_need_editor(world):
    """Make a datastack proofreadable, run a watershed, materialize and expire versions."""
    from neurolake.materialize import versions
    from neurolake.proofreading import has_segmentation

    c, lake = world["c"], world["lake"]
    # POST /segmentation on the datastack named "merge" (supervoxel layer "roots_binary")
    url = "/api/v1/datastacks/merge/segmentation"
    body = {"layer": "roots_binary", "agglomeration": "each"}
    for who in _denied_roles("merge"):
        _assert_denied(c.post(url, json=body, headers=_h(world, who)), who, f"POST {url}")
    assert not has_segmentation(lake, "merge")
    assert c.post(url, json=body, headers=_h(world, "ed")).status_code == 201
    assert has_segmentation(lake, "merge")
    # watershed of the EM of the datastack named "leaves" into a layer named "split"
    url = "/api/v1/datastacks/leaves/segment/watershed"
    body = {"boundary_layer": em_layer("leaves"), "output": "split", "min_distance": 4}
    layers = sorted(la.name for la in lake.layers("leaves"))
    for who in _denied_roles("leaves"):
        _assert_denied(c.post(url, json=body, headers=_h(world, who)), who, f"POST {url}")
    assert sorted(la.name for la in lake.layers("leaves")) == layers
    r = c.post(url, json=body, headers=_h(world, "ed"))
    assert r.status_code == 201, r.text
    assert "split" in {la.name for la in lake.layers("leaves")}
    # materialization versions of the datastack named "query"
    url = "/api/v1/datastacks/query/versions"
    before = versions(lake, "query")
    for who in _denied_roles("query"):
        _assert_denied(c.post(url, json={}, headers=_h(world, who)), who, f"POST {url}")
        _assert_denied(c.delete(f"{url}/1", headers=_h(world, who)), who, f"DELETE {url}/1")
    assert versions(lake, "query") == before
    assert c.post(url, json={}, headers=_h(world, "ed")).status_code == 201
    assert c.delete(f"{url}/1", headers=_h(world, "adm")).status_code == 200
    assert [v["version"] for v in versions(lake, "query")] == [2]


def test_unknown_datastack_and_no_token(world):
    c = world["c"]
    # a lake admin gets the 404 of an unknown datastack; others the 403 a private datastack gets
    # (issue 11 finding 7: tests/registry/test_leaks.py)
    r = c.get("/api/v1/datastacks/nosuch", headers=_h(world, "adm"))
    assert r.status_code == 404 and "unknown datastack 'nosuch'" in r.json()["message"]
    r = c.get("/api/v1/datastacks/query")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = c.get("/v1/collection/query", headers={"Authorization": "Token nl_not_a_token"})
    assert r.status_code == 401 and r.json()["status"] == 401  # BossDB's error body
    assert c.get("/openapi.json").status_code == 200  # public: the API description


def test_every_route_declares_an_access_need(world):
    from fastapi import FastAPI

    from neurolake.server.access import Need, app_routes, check_app_routes
    from neurolake.server.routing import APIRouter

    routes = app_routes(world["c"].app)
    assert len(routes) > 100
    missing = [getattr(r, "path", r) for r in routes if not isinstance(getattr(r, "access_need", None), Need)]
    assert missing == []
    writes = {(m, r.path) for r in routes if r.access_need.role == "editor" for m in r.methods}
    assert ("GET", "/v1/reserve/{c}/{e}/{ch}/{n}") in writes
    reads = {(m, r.path) for r in routes if r.access_need.role == "viewer" for m in r.methods}
    assert ("POST", "/api/v1/datastacks/{datastack}/tables/{table}/query") in reads
    assert ("POST", "/segmentation/api/v1/table/{table_id}/roots_binary") in reads
    # a route without a declared need makes the app refuse to start
    router = APIRouter()

    @router.post("/api/v1/new_thing/{datastack}")
    def new_thing(datastack: str) -> dict:
        return {}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(RuntimeError, match="new_thing"):
        check_app_routes(app)
    with pytest.raises(ValueError, match="path parameter 'ds'"):
        router.post("/api/v1/other/{datastack}", access=Need.write("ds"))(new_thing)
    with pytest.raises(ValueError):
        Need.public("")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory, serve_lake):
    from neurolake import init_lake
    from neurolake.annotations import create_table

    work = tmp_path_factory.mktemp("route_access_real")
    em, _ = _real_volumes()
    np.save(work / "em.npy", em)
    lake = init_lake(work / "lake")
    lake.create_datastack("query", (4, 4, 50), public=True)
    lake.ingest(str(work / "em.npy"), "query", "roots_binary", voxel_size=(4, 4, 50), scheduler="sync")
    create_table(lake, "query", "is_latest_roots", "point", properties=PROPS, owner="adm",
                 read_permission="PUBLIC", write_permission="PUBLIC").append(_sites(5), author="adm")
    tok = {}
    for user, role in (("vi", "viewer"), ("ed", "editor"), ("nobody", None)):
        lake.access.add_user(user)
        if role:
            lake.access.grant(user, "query", role)
        tok[user] = lake.access.create_token(user)["token"]
    lake.close()
    return serve_lake(work / "lake", "--auth"), tok, em


def _npz(body: bytes) -> np.ndarray:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(body)) as zf, zf.open("cutout.npy") as f:
        return np.lib.format.read_array(f)


def test_real_server_route_words_do_not_make_reads(real_server):
    from neurolake.volumes.formats import encode

    base, tok, em = real_server
    cut = f"{base}/ocp/ca/query/roots_binary/npz/0/0,32/0,32/0,2/"
    rows = f"{base}/api/v1/datastacks/query/tables/is_latest_roots/rows"
    body = encode(np.full((2, 32, 32), 5, np.uint8), "npz")
    row = json.dumps({"rows": _sites(1, skip=20).astype(object).to_dict("records")})
    with httpx.Client(timeout=30) as c:
        for who in ("vi", "nobody"):
            h = {"Authorization": f"Bearer {tok[who]}"}
            r = c.post(cut, content=body, headers=h)
            assert r.status_code == 403 and r.json()["detail"]["required"] == "editor", r.text
            r = c.post(rows, content=row, headers={**h, "content-type": "application/json"})
            assert r.status_code == 403, r.text
            np.testing.assert_array_equal(_npz(c.get(cut, headers=h).content), em[0:2, 0:32, 0:32])
            assert c.get(rows, headers=h).json()["count"] == 5
        assert c.post(cut, content=body).status_code == 401
        ed = {"Authorization": f"Bearer {tok['ed']}"}
        assert c.post(cut, content=body, headers=ed).status_code == 201
        assert (_npz(c.get(cut, headers=ed).content) == 5).all()
        assert c.post(rows, content=row, headers={**ed, "content-type": "application/json"}).status_code == 201
        assert c.get(rows, headers=ed).json()["count"] == 6
