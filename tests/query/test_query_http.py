"""SQL over HTTP (issue 12, point 8): ``POST /api/v1/query`` (JSON and Arrow IPC), ``/query/explain``,
``GET /api/v1/runs[/{id}]``, ``POST /api/v1/runs/{id}/reproduce``; under ``serve --auth`` a real server
process refuses every forbidden SQL, tables the user may not read, other users' runs, and counts queries
against quotas.

Real data: the MICrONS pinky100 synapse and soma tables and the navis hemibrain DA1 synapse sites
(``query_lake_path`` in conftest.py), copied per module because the tests write runs (and versions).
"""

from __future__ import annotations

import io
import json
import shutil
import warnings

import httpx
import pandas as pd
import pyarrow as pa
import pytest

ARROW = "application/vnd.apache.arrow.stream"
CLASSES = {"interactive", "short", "batch", "long"}
TOP = ("SELECT pre, post, n_synapses FROM pinky100.v1.connectome "
       "ORDER BY n_synapses DESC, pre, post LIMIT 5")


# -------------------------------------------------------------------------------------------------
# the routes, in-process (no --auth: the local user has every right)
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(query_lake_path, tmp_path_factory):
    from fastapi.testclient import TestClient

    from neurolake import open_lake
    from neurolake.server.app import create_app

    path = tmp_path_factory.mktemp("query_http") / "lake"
    shutil.copytree(query_lake_path, path)
    lake = open_lake(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(create_app(lake), raise_server_exceptions=True)
    yield lake, client
    client.close()
    lake.close()


def _arrow(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(body)).read_all()


def test_query_json_rows_equal_the_source_and_the_python_api(local, pinky_tables):
    lake, c = local
    r = c.post("/api/v1/query", json={"sql": "SELECT pre_pt_root_id, post_pt_root_id FROM pinky100.synapses"})
    assert r.status_code == 200, r.text
    a = r.json()
    src = pinky_tables["synapses"].sort_values(["pre_pt_root_id", "post_pt_root_id"]).reset_index(drop=True)
    assert a["rows"] == len(src) == 1981 and len(a["data"]) == 1981
    assert a["columns"] == [{"name": "pre_pt_root_id", "type": "uint64"}, {"name": "post_pt_root_id", "type": "uint64"}]
    # ids are JSON integers (uint64, exact); rows totally ordered (ORDER BY ALL added)
    assert pd.DataFrame(a["data"]).equals(src.astype("int64"))
    assert a["partial"] is False and a["mode"] == "exploratory"
    assert a["runtime_class"]["measured"] in CLASSES
    # the same result as the Python API, hash included; the manifest is the stored run's
    res = lake.sql("SELECT pre_pt_root_id, post_pt_root_id FROM pinky100.synapses")
    assert res.sha256 == a["sha256"]
    stored = c.get(f"/api/v1/runs/{a['run_id']}").json()
    assert stored["manifest"] == a["manifest"] and stored["result_sha256"] == a["sha256"]
    assert a["manifest"]["run"]["runId"] == a["run_id"] and a["manifest"]["eventType"] == "COMPLETE"
    facet = a["manifest"]["run"]["facets"]["neurolake"]
    assert [i["name"] for i in facet["inputs"]] == ["pinky100.synapses"]
    assert facet["inputs"][0]["pin"]["delta_version"] == lake["pinky100"].table("synapses").version


def test_query_arrow_stream_carries_the_manifest(local):
    lake, c = local
    j = c.post("/api/v1/query", json={"sql": TOP, "mode": "production"}).json()
    for kw in ({"json": {"sql": TOP, "mode": "production", "format": "arrow"}},
               {"json": {"sql": TOP, "mode": "production"}, "headers": {"Accept": ARROW}}):
        r = c.post("/api/v1/query", **kw)
        assert r.status_code == 200 and r.headers["content-type"] == ARROW, r.text
        t = _arrow(r.content)
        assert t.to_pylist() == j["data"] and t.schema.field("pre").type == pa.uint64()
        rid = r.headers["x-neurolake-run-id"]
        assert r.headers["x-neurolake-sha256"] == j["sha256"] and r.headers["x-neurolake-partial"] == "false"
        assert r.headers["link"] == f'</api/v1/runs/{rid}>; rel="describedby"'
        manifest = json.loads(t.schema.metadata[b"openlineage"])
        assert manifest == c.get(f"/api/v1/runs/{rid}").json()["manifest"]
    # format=json wins over the Accept header
    r = c.post("/api/v1/query", json={"sql": TOP, "format": "json"}, headers={"Accept": ARROW})
    assert r.headers["content-type"].startswith("application/json")
    # the top pairs are the connectome's strongest edges (Python API)
    edges = lake["pinky100"].connectome(version=1).edges
    top = edges.sort_values(["n_synapses", "pre", "post"], ascending=[False, True, True]).head(5)
    assert [(d["pre"], d["post"], d["n_synapses"]) for d in j["data"]] == \
        list(zip(top.pre.astype(int), top.post.astype(int), top.n_synapses.astype(int), strict=True))


def test_parameters_pins_and_sample(local, pinky_tables):
    lake, c = local
    root = int(pinky_tables["synapses"].pre_pt_root_id.value_counts().index[0])
    want = int((pinky_tables["synapses"].pre_pt_root_id == root).sum())
    q = "SELECT count(*) AS n FROM pinky100.synapses WHERE pre_pt_root_id = "
    assert c.post("/api/v1/query", json={"sql": q + "?", "params": [root]}).json()["data"] == [{"n": want}]
    assert c.post("/api/v1/query", json={"sql": q + "$r", "params": {"r": root}}).json()["data"] == [{"n": want}]
    v = lake["pinky100"].table("synapses").version
    a = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM pinky100.synapses", "mode": "production",
                                      "pins": {"pinky100.synapses": v}}).json()
    assert a["data"] == [{"n": 1981}] and a["manifest"]["run"]["facets"]["neurolake"]["inputs"][0]["pinned_by"] == "argument"
    s = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM pinky100.synapses", "sample": 0.2}).json()
    assert 0 < s["data"][0]["n"] < 1981 and s["manifest"]["run"]["facets"]["neurolake"]["sample"]["fraction"] == 0.2
    d = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM synapses", "datastack": "pinky100"}).json()
    assert d["data"] == [{"n": 1981}]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"sql": "SELECT * FROM pinky100.synapses LIMIT 3", "mode": "production"}, 400, "not pinned"),
    ({"sql": "SELECT * FROM pinky100.v1.synapses LIMIT 3", "mode": "production"}, 400, "LIMIT without ORDER BY"),
    ({"sql": "SELECT now(), count(*) FROM pinky100.v1.synapses", "mode": "production"}, 400, "now"),
    ({"sql": "SELECT 1", "mode": "fast"}, 400, "mode"),
    ({"sql": "SELECT 1", "format": "csv"}, 400, "format"),
    ({"sql": "SELECT 1", "bogus": 1}, 400, "bogus"),
    ({"sql": "SELECT * FROM pinky100.nosuch"}, 404, "unknown table 'nosuch'"),
    ({"sql": "SELECT * FROM pinky100.v9.synapses"}, 404, "9"),
    ({"sql": 'SELECT * FROM pinky100."synapses@99"'}, 404, "Delta version 99"),
    ({"sql": "SELECT FROM WHERE"}, 400, "parse"),
    ({"sql": "SELECT nosuch_column FROM pinky100.synapses"}, 400, "nosuch_column"),
    ({"sql": "SELECT 1; SELECT 2"}, 400, "one SQL statement"),
    ({"sql": "SELECT count(*) FROM pinky100.synapses", "sample": 2}, 400, "sample"),
    ({"sql": "SELECT count(*) FROM pinky100.v1.synapses", "mode": "production", "timeout_s": 5}, 400, "timeout_s"),
])
def test_refusals_name_what_is_wrong(local, body, status, words):
    _, c = local
    r = c.post("/api/v1/query", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"], r.json()


ENDLESS = ("SELECT a.id FROM pinky100.synapses a, pinky100.synapses b, pinky100.synapses c "
           "WHERE a.id + b.id + c.id < 0")  # 7.8e9 combinations, no row: runs until stopped


def test_a_time_bound_gives_a_partial_result(local):
    _, c = local
    for fmt in ("json", "arrow"):
        r = c.post("/api/v1/query", json={"sql": ENDLESS, "timeout_s": 0.5, "format": fmt})
        assert r.status_code == 200, r.text
        if fmt == "json":
            a = r.json()
            rid, partial, rows = a["run_id"], a["partial"], a["rows"]
        else:
            rid, partial, rows = r.headers["x-neurolake-run-id"], r.headers["x-neurolake-partial"] == "true", \
                _arrow(r.content).num_rows
        assert partial is True and rows == 0
        assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "partial"
    r = c.post(f"/api/v1/runs/{rid}/reproduce")
    assert r.status_code == 400 and "partial" in r.json()["message"]


def test_json_answers_are_capped(local):
    _, c = local
    c.app.state.max_query_rows = 100
    try:
        r = c.post("/api/v1/query", json={"sql": "SELECT * FROM pinky100.v1.connectome"})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        d = r.json()["detail"]
        assert d["limit"] == 100 and d["rows"] > 100 and 'format="arrow"' in r.json()["message"]
        assert c.get(f"/api/v1/runs/{d['run_id']}").status_code == 200  # the run is recorded
        r = c.post("/api/v1/query", json={"sql": "SELECT * FROM pinky100.v1.connectome", "format": "arrow"})
        assert r.status_code == 200 and _arrow(r.content).num_rows == d["rows"]
    finally:
        c.app.state.max_query_rows = None
    limit = c.app.state.max_cutout_bytes
    c.app.state.max_cutout_bytes = 10_000  # the server's largest answer
    try:
        r = c.post("/api/v1/query", json={"sql": "SELECT * FROM pinky100.v1.connectome", "format": "arrow"})
        assert r.status_code == 413 and r.json()["detail"]["limit"] == 10_000 and r.json()["detail"]["size"] > 10_000
    finally:
        c.app.state.max_cutout_bytes = limit


def test_explain(local):
    _, c = local
    r = c.post("/api/v1/query/explain", json={"sql": "SELECT count(*) FROM pinky100.v1.synapses WHERE id < 100"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["runtime_class"] in CLASSES and e["estimated_bytes"] > 0 and "READ_PARQUET" in e["plan_text"]
    assert [i["name"] for i in e["inputs"]] == ["pinky100.v1.synapses"] and e["inputs"][0]["pin"]["version"] == 1
    assert [(x["table"], x["column"]) for x in e["layout"]] == [("pinky100.v1.synapses", "id")]
    assert e["layout"][0]["served_by"] in ("sort", "partition", "statistics", "none") and e["ordered_by"] == "all"
    r = c.post("/api/v1/query/explain", json={"sql": "SELECT * FROM pinky100.synapses", "mode": "production"})
    assert r.status_code == 400 and "not pinned" in r.json()["message"]
    assert c.post("/api/v1/query/explain", json={"sql": "COPY (SELECT 1) TO '/tmp/x.csv'"}).status_code == 403


def test_explain_a_root_id_filter(local, pinky_tables):
    """Root ids are uint64 beyond 2**53: planning statistics must not cast them to float64."""
    _, c = local
    root = int(pinky_tables["synapses"].pre_pt_root_id.iloc[0])
    r = c.post("/api/v1/query/explain", json={"sql": f"SELECT * FROM pinky100.v1.synapses WHERE pre_pt_root_id = {root}"})
    assert r.status_code == 200, r.text
    assert r.json()["runtime_class"] in CLASSES


def test_runs_list_show_and_reproduce(local):
    lake, c = local
    a = c.post("/api/v1/query", json={"sql": TOP, "mode": "production"}).json()
    rid = a["run_id"]
    runs = c.get("/api/v1/runs", params={"mode": "production", "datastack": "pinky100"}).json()
    assert rid in [r["run_id"] for r in runs] and all(r["mode"] == "production" for r in runs)
    assert runs[0]["created"] >= runs[-1]["created"]
    assert len(c.get("/api/v1/runs", params={"limit": 1}).json()) == 1
    assert c.get("/api/v1/runs", params={"datastack": "hemibrain"}).json() == []
    one = c.get(f"/api/v1/runs/{rid[:8]}").json()  # a unique prefix
    assert one["run_id"] == rid and one["protecting"] is True and one["sql"] == TOP
    assert one["inputs"][0]["name"] == "pinky100.v1.connectome"
    r = c.post(f"/api/v1/runs/{rid}/reproduce")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "identical" and rep["message"] == f"identical (sha256 {a['sha256']})"
    # unknown and malformed ids
    r = c.get("/api/v1/runs/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404 and "unknown query run" in r.json()["message"]
    assert c.get("/api/v1/runs/abc").status_code == 400
    assert c.post("/api/v1/runs/lake.json/reproduce").status_code == 400  # never a server file
    assert c.get("/api/v1/runs", params={"mode": "fast"}).status_code == 400
    assert c.get("/api/v1/runs", params={"limit": 0}).status_code == 400


def test_reproduce_reports_an_expired_version(local):
    lake, c = local
    ds = lake["pinky100"]
    v2 = ds.versions.create()
    q = f"SELECT count(*) AS n FROM pinky100.v{v2['version']}.synapses"
    a = c.post("/api/v1/query", json={"sql": q}).json()
    assert a["data"] == [{"n": 1981}]
    ds.versions.create()
    ds.versions.expire(v2["version"])
    r = c.post(f"/api/v1/runs/{a['run_id']}/reproduce")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "input_gone", rep
    gone = rep["inputs_gone"][0]
    assert gone["input"] == f"pinky100.v{v2['version']}.synapses" and gone["pin"]["version"] == v2["version"]
    assert f"pinky100.v{v2['version']}.synapses" in rep["message"] and "expired" in rep["message"]


def test_every_query_route_declares_access(local):
    from neurolake.server.access import Need, app_routes

    _, c = local
    mine = {(m, r.path): r.access_need for r in app_routes(c.app)
            if r.path.startswith(("/api/v1/query", "/api/v1/runs")) for m in r.methods}
    assert set(mine) == {("POST", "/api/v1/query"), ("POST", "/api/v1/query/explain"), ("GET", "/api/v1/runs"),
                         ("GET", "/api/v1/runs/{run_id}"), ("POST", "/api/v1/runs/{run_id}/reproduce")}
    assert all(isinstance(n, Need) and n.role == "self" for n in mine.values())
    doc = c.get("/openapi.json").json()["paths"]["/api/v1/query"]["post"]["responses"]["200"]["content"]
    assert set(doc) == {"application/json", ARROW}


# -------------------------------------------------------------------------------------------------
# a real `neurolake serve --auth` process
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def authed(query_lake_path, tmp_path_factory, serve_lake):
    from neurolake import open_lake

    path = tmp_path_factory.mktemp("query_auth") / "lake"
    shutil.copytree(query_lake_path, path)
    lake = open_lake(path)
    acc = lake.access
    tok = {}
    for user, admin, quota in (("ada", False, None), ("bob", False, None), ("adm", True, None),
                               ("quo", False, 30_000)):
        acc.add_user(user, admin=admin, quota_bytes=quota)
        tok[user] = acc.create_token(user)["token"]
    for user in ("ada", "bob", "quo"):
        acc.grant(user, "pinky100", "viewer")
    version_dir = path / lake["pinky100"].versions.get(1)["path"]
    lake.close()
    base = serve_lake(path, "--auth")
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client, tok, path, version_dir


def _as(tok, who):
    return {"Authorization": f"Bearer {tok[who]}"}


def test_no_token_is_401(authed):
    c, _, _, _ = authed
    for method, url in (("POST", "/api/v1/query"), ("POST", "/api/v1/query/explain"), ("GET", "/api/v1/runs"),
                        ("GET", "/api/v1/runs/00000000"), ("POST", "/api/v1/runs/00000000/reproduce")):
        r = c.request(method, url, json={"sql": "SELECT count(*) FROM pinky100.synapses"})
        assert r.status_code == 401, (url, r.text)
    r = c.post("/api/v1/query", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer nl_not_a_token"})
    assert r.status_code == 401


def forbidden(lake_path, version_dir) -> list[tuple[str, int, str]]:
    """(sql, status, words in the message) a viewer of pinky100 must be refused."""
    tables = lake_path / "datastacks" / "pinky100" / "tables" / "synapses"
    catalog = lake_path / "catalog.sqlite"
    return [
        ("SELECT * FROM read_csv('/etc/passwd')", 403, "outside the lake"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", 403, "COPY"),
        ("ATTACH 'x.db'", 403, "ATTACH"),
        ("INSTALL httpfs", 403, "only SELECT"),
        ("LOAD httpfs", 403, "only SELECT"),
        ("SELECT * FROM read_text('/etc/hostname')", 403, "outside the lake"),
        ("SELECT * FROM glob('/*')", 403, "outside the lake"),
        ("SET enable_external_access=true", 403, "SET"),
        ("PRAGMA enable_profiling", 403, "PRAGMA"),
        ("CALL pragma_version()", 403, "only SELECT"),
        ("CREATE TABLE t AS SELECT 1", 403, "only SELECT"),
        ("SELECT * FROM read_parquet('https://example.org/x.parquet')", 403, "outside the lake"),
        ("SELECT * FROM hemibrain.da1_sites", 403, "hemibrain"),
        ("SELECT * FROM pinky100.somas", 403, "PRIVATE"),
        ("SELECT * FROM pinky100.v1.somas", 403, "PRIVATE"),
        # the lake's catalog database, next to and below the query's own tables
        (f"SELECT * FROM read_text('{catalog}')", 403, "outside the lake"),
        (f"SELECT * FROM read_blob('{catalog}')", 403, "outside the lake"),
        (f"SELECT count(*) FROM pinky100.synapses, read_text('{catalog}')", 403, "outside the lake"),
        (f"SELECT count(*) FROM pinky100.synapses, read_parquet('{catalog}')", 403, "outside the lake"),
        (f"SELECT count(*) FROM pinky100.synapses, read_text('{tables}/../../../../{catalog.name}')", 403,
         "outside the lake"),
        (f"SELECT count(*) FROM pinky100.v1.synapses, read_text('{version_dir}/../../../../{catalog.name}')", 403,
         "outside the lake"),
    ]


def test_forbidden_sql_is_refused_over_http(authed):
    c, tok, path, version_dir = authed
    for sql, status, words in forbidden(path, version_dir):
        r = c.post("/api/v1/query", json={"sql": sql}, headers=_as(tok, "bob"))
        assert r.status_code == status, (sql, r.status_code, r.text)
        body = r.json()
        assert body["error"] == "permission_denied" and words in body["message"], (sql, body)
        assert str(path) not in r.text  # the lake's folder is never named to a non-admin
        # explain refuses too (files outside the lake are found while planning: 400 naming the permission error)
        r = c.post("/api/v1/query/explain", json={"sql": sql}, headers=_as(tok, "bob"))
        assert r.status_code == 403 or (r.status_code == 400 and "Permission Error" in r.json()["message"]), \
            (sql, r.status_code, r.text)
        assert str(path) not in r.text
    # nothing was written
    assert not (path / "x.db").exists()


def test_tables_are_read_with_the_users_rights(authed, pinky_tables):
    c, tok, path, _ = authed
    q = {"sql": "SELECT count(*) AS n FROM pinky100.somas"}
    r = c.post("/api/v1/query", json=q, headers=_as(tok, "ada"))  # the owner of the PRIVATE table
    assert r.status_code == 200 and r.json()["data"] == [{"n": len(pinky_tables["somas"])}], r.text
    assert r.json()["manifest"]["run"]["facets"]["neurolake"]["user"] == "ada"
    r = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM pinky100.synapses"}, headers=_as(tok, "bob"))
    assert r.status_code == 200 and r.json()["data"] == [{"n": 1981}]
    # the lake's folder is not named to a non-admin, in the answer or the stored run; admins see it
    rid = r.json()["run_id"]
    for text in (r.text, c.get(f"/api/v1/runs/{rid}", headers=_as(tok, "bob")).text,
                 c.post("/api/v1/query/explain", json={"sql": "SELECT 1 FROM pinky100.synapses"},
                        headers=_as(tok, "bob")).text):
        assert str(path) not in text and "<lake>/datastacks/pinky100/tables/synapses" in text
    assert str(path) in c.get(f"/api/v1/runs/{rid}", headers=_as(tok, "adm")).text
    r = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM hemibrain.da1_sites"}, headers=_as(tok, "adm"))
    assert r.status_code == 200 and r.json()["data"][0]["n"] > 0


def test_a_table_does_not_open_its_neighbours(authed):
    """The engine allows the inputs' own files, not their folders: a version's folder holds every table of
    the version (a PRIVATE one here) and an annotation table's folder its older Delta files and log."""
    c, tok, path, version_dir = authed
    tables = path / "datastacks" / "pinky100" / "tables"
    for sql in (f"SELECT count(*) AS n FROM pinky100.v1.synapses, read_parquet('{version_dir}/somas.parquet')",
                f"SELECT count(*) AS n FROM pinky100.v1.synapses, read_parquet('{version_dir}/*.parquet')",
                f"SELECT count(*) AS n FROM pinky100.v1.synapses, glob('{version_dir}/*')",
                f"SELECT count(*) AS n FROM pinky100.synapses, read_parquet('{tables}/somas/*.parquet')",
                f"SELECT count(*) AS n FROM pinky100.synapses, read_text('{tables}/synapses/_delta_log/*.json')"):
        r = c.post("/api/v1/query", json={"sql": sql}, headers=_as(tok, "bob"))
        assert r.status_code == 403 and r.json()["error"] == "permission_denied", (sql, r.text)
        assert str(path) not in r.text


def test_runs_are_private_to_their_user(authed):
    c, tok, _, _ = authed
    top = {"sql": TOP, "mode": "production"}
    ada = c.post("/api/v1/query", json=top, headers=_as(tok, "ada")).json()["run_id"]
    bob = c.post("/api/v1/query", json=top, headers=_as(tok, "bob")).json()["run_id"]
    mine = c.get("/api/v1/runs", headers=_as(tok, "bob")).json()
    assert bob in [r["run_id"] for r in mine] and {r["user"] for r in mine} == {"bob"}
    r = c.get("/api/v1/runs", params={"user": "ada"}, headers=_as(tok, "bob"))
    assert r.status_code == 403 and r.json()["error"] == "permission_denied"
    for method, url in (("GET", f"/api/v1/runs/{ada}"), ("GET", f"/api/v1/runs/{ada[:8]}"),
                        ("POST", f"/api/v1/runs/{ada}/reproduce")):
        r = c.request(method, url, headers=_as(tok, "bob"))
        assert r.status_code == 404 and r.json()["error"] == "not_found", (url, r.text)  # as if it did not exist
        known = r.json()["message"].split("known:", 1)[1]
        assert bob in known and ada not in known  # the known runs listed are bob's own
    assert c.get(f"/api/v1/runs/{bob}", headers=_as(tok, "bob")).json()["user"] == "bob"
    rep = c.post(f"/api/v1/runs/{bob}/reproduce", headers=_as(tok, "bob")).json()
    assert rep["status"] == "identical"
    # a lake admin sees every run
    users = {r["user"] for r in c.get("/api/v1/runs", headers=_as(tok, "adm")).json()}
    assert {"ada", "bob"} <= users
    assert c.get(f"/api/v1/runs/{ada}", params={}, headers=_as(tok, "adm")).json()["user"] == "ada"
    assert c.get("/api/v1/runs", params={"user": "ada"}, headers=_as(tok, "adm")).json()[0]["user"] == "ada"


def test_reproduce_rechecks_the_users_rights(authed):
    """ada's run on her PRIVATE table, reproduced by a lake admin: allowed; the table's rights are checked
    as the reproducing user (a run id alone grants nothing)."""
    c, tok, _, _ = authed
    rid = c.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM pinky100.somas"},
                 headers=_as(tok, "ada")).json()["run_id"]
    assert c.post(f"/api/v1/runs/{rid}/reproduce", headers=_as(tok, "adm")).json()["status"] == "identical"
    assert c.post(f"/api/v1/runs/{rid}/reproduce", headers=_as(tok, "ada")).json()["status"] == "identical"


def _usage_reaches(c, h, nbytes: int, wait_s: float = 10.0) -> int | None:
    """The user's bytes once they reach ``nbytes`` (the server counts a response after sending it), or None
    when the quota is exhausted (429)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        r = c.get("/api/v1/usage", headers=h)
        if r.status_code == 429:
            return None
        used = r.json()["bytes"]
        if used >= nbytes or time.monotonic() > deadline:
            return used
        time.sleep(0.05)


def test_queries_count_against_the_quota(authed):
    c, tok, _, _ = authed
    h = _as(tok, "quo")
    before = c.get("/api/v1/usage", headers=h).json()["bytes"]
    r = c.post("/api/v1/query", json={"sql": "SELECT pre_pt_root_id, post_pt_root_id FROM pinky100.synapses "
                                             "ORDER BY id LIMIT 20"}, headers=h)
    assert r.status_code == 200 and r.json()["rows"] == 20
    assert _usage_reaches(c, h, before + len(r.content)) >= before + len(r.content)  # the result's bytes
    r = c.post("/api/v1/query", json={"sql": "SELECT * FROM pinky100.synapses"}, headers=h)  # crosses 30 kB
    assert r.status_code == 200 and len(r.content) > 30_000
    assert _usage_reaches(c, h, 10**12) is None  # the usage route itself answers 429 now (waits for the count)
    r = c.post("/api/v1/query", json={"sql": "SELECT count(*) FROM pinky100.synapses"}, headers=h)
    assert r.status_code == 429 and r.json()["error"] == "quota_exceeded", r.text
    assert int(r.headers["retry-after"]) >= 1
    # other users are not affected
    assert c.post("/api/v1/query", json={"sql": "SELECT 1 AS one"}, headers=_as(tok, "bob")).status_code == 200
