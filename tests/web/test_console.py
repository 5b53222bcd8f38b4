"""The SQL console on a real lake: the MICrONS pinky100 ``synapses`` (1981 rows) and ``somas`` tables
(../shared/data/connectome_microns_pinky100_pyc, as tests/query/conftest.py builds them), frozen as
materialization version 1."""

from __future__ import annotations

import io
import json
import re
import shutil
from html import unescape
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from neurolake.provenance.runs import get_run, list_runs
from neurolake.query.manifest import result_sha256
from tests.query.conftest import pinky_somas, pinky_synapses

SQL = "SELECT id, pre_pt_root_id, post_pt_root_id FROM pinky100.synapses ORDER BY id"


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory) -> Path:
    from neurolake import init_lake
    from neurolake.annotations import create_table

    path = tmp_path_factory.mktemp("console") / "lake"
    lake = init_lake(path)
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100", public=False)
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"]).append(pinky_synapses())
    create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1),
                 properties={"manual_id": "int"}).append(pinky_somas())
    lake["pinky100"].versions.create()
    lake.create_datastack("other", (8, 8, 8), public=False)
    lake.close()
    return path


@pytest.fixture(scope="module")
def client(lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(lake_path)) as c:
        c.get("/ui/query")  # the CSRF cookie
        yield c


def csrf(c) -> str:
    return c.cookies.get("neurolake_csrf")


def table_rows(html: str) -> list[list[str]]:
    body = html[html.index('id="query-rows"'):]
    body = body[body.index("<tbody>"):body.index("</tbody>")]
    return [[unescape(x) for x in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def run_id_of(html: str) -> str:
    return re.search(r'id="query-run-link" href="/ui/runs/([0-9a-f-]+)"', html).group(1)


def error_of(html: str) -> str:
    return unescape(re.search(r'id="query-error"[^>]*>(.*?)</p>', html, re.S).group(1))


def test_exploratory_run_pages_and_manifest(client):
    lake = client.app.state.lake
    syn = pinky_synapses()
    r = client.get("/ui/query", params={"sql": SQL, "run": 1})
    assert r.status_code == 200, r.text[:2000]
    rid = run_id_of(r.text)
    run = get_run(lake, rid)
    assert run["rows"] == len(syn) == 1981 and run["mode"] == "exploratory"
    rows = table_rows(r.text)
    assert len(rows) == 100 and rows[0][0] == "1" and rows[99][0] == "100"
    assert [int(rows[0][2]), int(rows[0][3])] == [int(syn.pre_pt_root_id[0]), int(syn.post_pt_root_id[0])]
    assert "Rows 1–100 of 1981 (page 1 of 20)" in r.text
    # the manifest: sha256, the input with its pin, the runtime class, a link to the run page
    assert re.search(r'id="query-sha256">([0-9a-f]{64})<', r.text).group(1) == run["result_sha256"]
    inputs = re.search(r'<ul id="query-inputs">(.*?)</ul>', r.text, re.S).group(1)
    assert "pinky100.synapses" in inputs and "delta_version=" in inputs and "latest" in inputs
    assert re.search(r"predicted <b>(interactive|short|batch|long)</b>", r.text)
    assert re.search(r"measured <b>(interactive|short|batch|long)</b>", r.text)
    # page 2 = rows 101-200, read from the kept result: no new run
    nxt = unescape(re.search(r'id="query-next" href="([^"]+)"', r.text).group(1))
    before = len(list_runs(lake, limit=1000))
    r2 = client.get(nxt)
    assert r2.status_code == 200 and "Rows 101–200 of 1981 (page 2 of 20)" in r2.text
    rows2 = table_rows(r2.text)
    assert [x[0] for x in rows2] == [str(i) for i in range(101, 201)]
    assert [int(x[2]) for x in rows2] == syn.pre_pt_root_id[100:200].tolist()
    assert run_id_of(r2.text) == rid and len(list_runs(lake, limit=1000)) == before
    last = client.get("/ui/query", params={"sql": SQL, "run": 1, "id": rid, "page": 20})
    assert "Rows 1901–1981 of 1981" in last.text and 'id="query-next"' not in last.text
    bad = client.get("/ui/query", params={"sql": SQL, "run": 1, "id": rid, "page": 21})
    assert bad.status_code == 400 and "outside 1…20" in error_of(bad.text)
    # the shareable link holds the SQL and reruns it
    share = unescape(re.search(r'id="query-share" href="([^"]+)"', r.text).group(1))
    again = client.get(share)
    assert again.status_code == 200 and run_id_of(again.text) != rid
    assert get_run(lake, run_id_of(again.text))["result_sha256"] == run["result_sha256"]


def test_downloads_carry_the_manifest(client):
    lake = client.app.state.lake
    r = client.get("/ui/query", params={"sql": SQL, "run": 1})
    rid = run_id_of(r.text)
    sha = get_run(lake, rid)["result_sha256"]
    d = client.get("/ui/query/download", params={"run": rid, "format": "parquet"})
    assert d.status_code == 200 and d.headers["content-disposition"] == f'attachment; filename="{rid}.parquet"'
    f = pq.ParquetFile(io.BytesIO(d.content))
    manifest = json.loads(f.schema_arrow.metadata[b"openlineage"])
    facet = manifest["run"]["facets"]["neurolake"]
    assert manifest["run"]["runId"] == rid and facet["result_sha256"] == sha
    table = f.read()
    assert result_sha256(table) == sha and table.num_rows == 1981
    c = client.get("/ui/query/download", params={"run": rid, "format": "csv"})
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(c.content)), table.to_pandas(), check_dtype=False)
    link = re.search(r"<([^>]+)>; rel=\"describedby\"", c.headers["link"]).group(1)
    m = client.get(link)
    assert m.status_code == 200 and m.json()["run"]["runId"] == rid
    assert m.json()["run"]["facets"]["neurolake"]["result_sha256"] == sha
    assert f"{rid}.csv.manifest.json" in m.headers["content-disposition"]
    # the page links all three
    for fmt in ("parquet", "csv", "manifest"):
        assert f"/ui/query/download?run={rid}&amp;format={fmt}" in r.text


def test_download_when_the_result_is_no_longer_in_memory(client):
    from neurolake.web.console import results

    lake = client.app.state.lake
    # a run saved by the Python client: its result file is served
    saved = lake.sql("SELECT * FROM pinky100.v1.somas", save=True)
    # a console run whose kept result is dropped: re-run at its pins, checked against the recorded hash
    r = client.get("/ui/query", params={"sql": "SELECT pt_root_id, manual_id FROM pinky100.somas", "run": 1})
    rid = run_id_of(r.text)
    results(lake).items.clear()
    for run_id, sha in ((saved.run_id, saved.sha256), (rid, get_run(lake, rid)["result_sha256"])):
        d = client.get("/ui/query/download", params={"run": run_id, "format": "parquet"})
        assert d.status_code == 200
        t = pq.read_table(io.BytesIO(d.content))
        assert result_sha256(t.replace_schema_metadata(None)) == sha
        assert json.loads(t.schema.metadata[b"openlineage"])["run"]["runId"] == run_id
    # paging a dropped result without run=1 shows the form only
    p = client.get("/ui/query", params={"sql": "SELECT 1", "id": rid, "page": 2})
    assert p.status_code == 200 and 'id="query-rows"' not in p.text


def test_reproduce_shows_identical_and_needs_csrf(client):
    r = client.get("/ui/query", params={"sql": SQL, "run": 1})
    rid = run_id_of(r.text)
    ok = client.post("/ui/query/reproduce", data={"run_id": rid, "csrf": csrf(client)})
    assert ok.status_code == 200
    assert re.search(r'id="query-reproduce-status">identical<', ok.text)
    sha = get_run(client.app.state.lake, rid)["result_sha256"]
    assert f"identical (sha256 {sha})" in ok.text
    no = client.post("/ui/query/reproduce", data={"run_id": rid})
    assert no.status_code == 403 and "CSRF" in error_of(no.text)
    gone = client.post("/ui/query/reproduce", data={"run_id": "00000000-0000-0000-0000-000000000000",
                                                     "csrf": csrf(client)})
    assert gone.status_code == 404


def test_production_runs_only_by_post_with_csrf(client):
    lake = client.app.state.lake
    sql = "SELECT count(*) AS n FROM pinky100.v1.synapses"
    before = len(list_runs(lake, limit=1000))
    g = client.get("/ui/query", params={"sql": sql, "mode": "production", "run": 1})
    assert g.status_code == 200 and 'id="query-note"' in g.text and 'id="query-rows"' not in g.text
    assert len(list_runs(lake, limit=1000)) == before
    no = client.post("/ui/query", data={"sql": sql, "mode": "production"})
    assert no.status_code == 403 and "CSRF" in error_of(no.text)
    assert len(list_runs(lake, limit=1000)) == before
    ok = client.post("/ui/query", data={"sql": sql, "mode": "production", "csrf": csrf(client)})
    assert ok.status_code == 200
    run = get_run(lake, run_id_of(ok.text))
    assert run["mode"] == "production" and table_rows(ok.text) == [["1", "1981"]]
    assert "v1" in re.search(r'<ul id="query-inputs">(.*?)</ul>', ok.text, re.S).group(1)
    unpinned = client.post("/ui/query", data={"sql": "SELECT count(*) FROM pinky100.synapses",
                                              "mode": "production", "csrf": csrf(client)})
    assert unpinned.status_code == 400 and "pinned" in error_of(unpinned.text)


@pytest.mark.parametrize(("sql", "status", "message"), [
    ("SELECT * FROM read_csv('/etc/passwd')", 403, "/etc/passwd"),
    ("SELECT * FROM pinky100.nope", 404, "unknown table 'nope'"),
    ("SELEC 1", 400, "does not parse"),
    ("DELETE FROM pinky100.synapses", 403, "SELECT"),
    ("", 200, None),
])
def test_engine_errors_are_pages_with_the_message(client, sql, status, message):
    r = client.get("/ui/query", params={"sql": sql, "run": 1})
    assert r.status_code == status
    if message:
        assert message in error_of(r.text)
        assert unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", r.text, re.S).group(1)) == sql


def test_download_and_mode_errors(client):
    assert client.get("/ui/query/download", params={"run": "x", "format": "xlsx"}).status_code == 400
    assert client.get("/ui/query/download", params={"format": "csv"}).status_code == 400
    r = client.get("/ui/query/download", params={"run": "00000000-0000-0000-0000-000000000000"})
    assert r.status_code == 404 and "query run" in error_of(r.text)
    assert client.get("/ui/query", params={"sql": "SELECT 1", "mode": "fast", "run": 1}).status_code == 400


def test_under_auth_the_engine_checks_the_principal(lake_path, tmp_path):
    from neurolake import open_lake
    from neurolake.server.app import create_app

    path = tmp_path / "lake"
    shutil.copytree(lake_path, path)
    lake = open_lake(path)
    lake.access.add_user("olga")
    lake.access.grant("olga", "other", "viewer")
    lake.access.add_user("pia")
    lake.access.grant("pia", "pinky100", "viewer")
    toks = {u: lake.access.create_token(u)["token"] for u in ("olga", "pia")}
    lake.close()
    with TestClient(create_app(path, auth=True)) as c:
        olga, pia = ({"Authorization": f"Bearer {toks[u]}"} for u in ("olga", "pia"))
        r = c.get("/ui/query", params={"sql": SQL, "run": 1}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")  # no token: log in
        r = c.get("/ui/query", params={"sql": SQL, "run": 1}, headers=olga)
        assert r.status_code == 403 and "pinky100" in error_of(r.text)
        r = c.get("/ui/query", params={"sql": SQL, "run": 1}, headers=pia)
        assert r.status_code == 200
        rid = run_id_of(r.text)
        assert get_run(c.app.state.lake, rid)["user"] == "pia"
        # olga may not download pia's result (kept for pia only) nor its manifest
        assert c.get("/ui/query/download", params={"run": rid, "format": "csv"}, headers=olga).status_code == 403
        assert c.get("/ui/query/download", params={"run": rid, "format": "manifest"},
                     headers=olga).status_code == 403
        assert c.get("/ui/query/download", params={"run": rid, "format": "csv"}, headers=pia).status_code == 200
