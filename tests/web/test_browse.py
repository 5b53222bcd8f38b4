"""The home and browse pages, login under --auth, and the offline /docs and /redoc (issue 13).

Real data: the demo lake (gerhard2013 + gala_fibsem, public) copied, plus the MICrONS pinky100 synapses and
somas (``../shared/data/connectome_microns_pinky100_pyc``) in a private datastack frozen as version 1, a
real merge in gala_fibsem's segmentation, two registered feature tables (one derived from the other) and
recorded query runs. Numbers on the pages are compared with the source files and the core API.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from neurolake import open_lake

PINKY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "connectome_microns_pinky100_pyc"


def _synapses() -> pd.DataFrame:
    syn = pd.read_csv(PINKY / "synapses.csv")
    return pd.DataFrame({"pre_pt_root_id": syn.pre, "post_pt_root_id": syn.post})


def _somas() -> pd.DataFrame:
    soma = pd.read_csv(PINKY / "soma.csv")
    xyz = soma["loc"].str.strip("[]").str.split(expand=True).astype("int64")
    return pd.DataFrame({"pt_position_x": xyz[0], "pt_position_y": xyz[1], "pt_position_z": xyz[2],
                         "pt_root_id": soma.segment_id, "manual_id": soma.manual_id})


@pytest.fixture(scope="module")
def lake_path(demo_lake_path, tmp_path_factory):
    """The demo lake plus pinky100 tables, a version, a merge, feature tables, a run and users."""
    import numpy as np

    from neurolake.annotations import create_table
    from neurolake.proofreading import create_segmentation
    from neurolake.proofreading.rag import region_adjacency

    work = tmp_path_factory.mktemp("web_browse")
    path = work / "lake"
    shutil.copytree(demo_lake_path, path)
    lake = open_lake(path)
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100", public=False)
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"],
                 description="pinky100 synapses").append(_synapses())
    create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1), properties={"manual_id": "int"},
                 owner="ada", read_permission="PRIVATE").append(_somas(), author="ada")
    lake["pinky100"].versions.create()
    ds = lake["gala_fibsem"]
    seg = ds.segmentation if ds.has_segmentation() else create_segmentation(
        lake, "gala_fibsem", layer="segmentation", agglomeration="each")
    rag = region_adjacency(lake.layer("gala_fibsem", "segmentation"))
    i = int(np.argmax(rag.area))
    merge = seg.merge(int(rag.sv_a[i]), int(rag.sv_b[i]), author="ann")
    first = {int(rag.sv_a[i]), int(rag.sv_b[i])}
    j = next(int(k) for k in np.argsort(rag.area)[::-1] if not {int(rag.sv_a[k]), int(rag.sv_b[k])} & first)
    seg.merge(int(rag.sv_a[j]), int(rag.sv_b[j]), author="bob")
    # feature tables: soma positions (Parquet written from the source CSV) and a count derived from it
    soma = _somas()
    soma.to_parquet(work / "soma_positions.parquet")
    soma.groupby("manual_id").size().rename("n").reset_index().to_parquet(work / "soma_counts.parquet")
    lake.features.register(name="soma_positions", datastack="pinky100", location=str(work / "soma_positions.parquet"),
                           description="nucleus centres of pinky100", tags=["soma", "microns"])
    lake.features.register(name="soma_counts", datastack="pinky100", location=str(work / "soma_counts.parquet"),
                           description="somas per manual id", tags=["soma"], derived_from=["soma_positions"])
    run = lake.sql("SELECT count(*) AS n FROM pinky100.synapses")
    acc = lake.access
    tokens = {}
    for user, role in (("vi", "viewer"), ("out", None)):
        acc.add_user(user)
        if role:
            acc.grant(user, "pinky100", role)
        tokens[user] = acc.create_token(user)["token"]
    lake.close()
    return {"path": path, "merge": merge, "run_id": run.run_id, "tokens": tokens}


@pytest.fixture(scope="module")
def client(lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(lake_path["path"])) as c:
        yield c


@pytest.fixture(scope="module")
def auth_app(lake_path):
    from neurolake.server.app import create_app

    return create_app(lake_path["path"], auth=True)


def _text(html: str, elem_id: str) -> str:
    """The HTML of the element with ``id`` (to its matching closing tag)."""
    m = re.search(rf'<(\w+)[^>]*\bid="{elem_id}"[^>]*>', html)
    assert m, f"no element #{elem_id}"
    tag, depth = m.group(1), 1
    for t in re.finditer(rf"<(/?){tag}\b[^>]*>", html[m.end():]):
        depth += -1 if t.group(1) else 1
        if depth == 0:
            return html[m.start():m.end() + t.start()]
    raise AssertionError(f"#{elem_id} is not closed")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


# -------------------------------------------------------------------------------------------------
# pages without --auth
# -------------------------------------------------------------------------------------------------
def test_home_lists_explorers_datastacks_and_runs(client, lake_path):
    r = client.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for href in ("/ui/image", "/ui/graph", "/ui/vectors", "/ui/query", "/ui/features", "/ui/runs", "/docs"):
        assert f'href="{href}"' in _text(html, "explorers")
    assert 'id="ephys-note"' not in html  # the ephys pages exist now (tests/web/test_ephys_pages.py)
    cards = _text(html, "datastack-cards")
    for name in ("gala_fibsem", "gerhard2013", "pinky100"):
        assert f'href="/ui/datastacks/{name}"' in cards
    pinky = cards[cards.index('data-datastack="pinky100"'):]
    assert "MICrONS pinky100" in pinky and "4 × 4 × 40 nm" in pinky
    assert "<b>0</b> layers" in pinky and "<b>2</b> tables" in pinky and "<b>1</b> version" in pinky
    gala = cards[cards.index('data-datastack="gala_fibsem"'):]
    assert "<b>2</b> layers" in gala and "proofreadable" in gala
    assert lake_path["run_id"][:8] in _text(html, "recent-runs")


def test_datastack_page_layers_tables_versions_segmentation(client, lake_path):
    html = client.get("/ui/datastacks/gala_fibsem").text
    layers = _text(html, "layers")
    assert 'data-layer="image"' in layers and 'data-layer="segmentation"' in layers
    # size per mip and voxel size from the layer's own metadata
    lake = open_lake(lake_path["path"])
    try:
        info = lake.layer("gala_fibsem", "segmentation").info()
        ops = lake["gala_fibsem"].segmentation.operations()
    finally:
        lake.close()
    for m in info["mips"]:
        assert " × ".join(f"{v:,}" for v in m["size_xyz"]) in layers
    assert "200 × 100 × 50" in layers and "32 × 32 × 32 nm" in layers and "<code>uint32</code>" in layers
    assert 'href="/ui/image/gala_fibsem?layer=segmentation"' in layers and 'href="/viewer/gala_fibsem"' in layers
    # the thumbnails are real PNG planes of the tile route
    thumbs = re.findall(r'<img class="thumb"[^>]*src="([^"]+)"', layers)
    assert len(thumbs) == 2
    for url in thumbs:
        t = client.get(url)
        assert t.status_code == 200 and t.headers["content-type"] == "image/png" and t.content[:4] == b"\x89PNG"
    seg = _text(html, "segmentation")
    assert f"<td>{len(ops)}" in seg and 'href="/ui/datastacks/gala_fibsem/edits"' in seg

    html = client.get("/ui/datastacks/pinky100").text
    tables = _text(html, "tables")
    syn = tables[tables.index('data-table="synapses"'):]
    assert '<td class="num">1,981</td>' in syn.split("</tr>")[0]
    somas = tables[tables.index('data-table="somas"'):]
    assert '<td class="num">363</td>' in somas.split("</tr>")[0]
    versions = _text(html, "versions")
    assert 'data-version="1"' in versions and "2,344" in versions and "synapses</a>: 1,981" in versions
    assert "never" in versions and "valid" in versions
    assert "No proofreadable segmentation" in html
    assert 'href="/api/v1/datastacks/pinky100"' in html


def test_table_page_schema_history_rows_and_paging(client):
    html = client.get("/ui/datastacks/pinky100/tables/synapses").text
    assert "1,981" in _text(html, "row-count")
    schema = _text(html, "schema")
    assert "<code>pre_pt_root_id</code>" in schema and "<code>uint64</code>" in schema
    history = _text(html, "history")
    assert "WRITE" in history and "append" in history and "1981" in history and "CREATE TABLE" in history
    rows = _text(html, "rows")
    assert rows.count("<tr>") == 51  # header + 50 rows
    first = _synapses().iloc[0]
    assert str(first.pre_pt_root_id) in rows and str(first.post_pt_root_id) in rows
    assert 'href="/api/v1/datastacks/pinky100/tables/synapses/rows?limit=50&amp;offset=0"' in html
    assert 'href="/ui/vectors?table=pinky100.synapses"' in html
    assert 'id="next"' in html and 'id="prev"' not in html
    # the last page: 1981 - 1950 = 31 rows; the version's frozen rows
    last = client.get("/ui/datastacks/pinky100/tables/synapses", params={"offset": 1950, "limit": 50}).text
    assert _text(last, "rows").count("<tr>") == 32 and 'id="next"' not in last and 'id="prev"' in last
    v1 = client.get("/ui/datastacks/pinky100/tables/somas", params={"version": 1, "limit": 5}).text
    assert "363" in _text(v1, "row-count") and "materialization version 1" in v1
    assert _text(v1, "rows").count("<tr>") == 6


def test_versions_and_edits_pages(client, lake_path):
    html = client.get("/ui/datastacks/pinky100/versions").text
    assert 'data-version="1"' in _text(html, "versions") and "2,344" in html
    merge = lake_path["merge"]
    html = client.get("/ui/datastacks/gala_fibsem/edits").text
    edits = _text(html, "edits")
    row = edits[edits.index(f'data-operation="{merge["operation_id"]}"'):].split("</tr>")[0]
    assert "ann" in row and "merge" in row
    for root in merge["old_roots"] + merge["new_roots"]:
        assert str(root) in row
    # filters: author, time range (the URL carries them)
    assert 'data-operation' not in client.get("/ui/datastacks/gala_fibsem/edits", params={"author": "eve"}).text
    html = client.get("/ui/datastacks/gala_fibsem/edits", params={"author": "bob"}).text
    assert _text(html, "edits").count("data-operation=") == 1 and f'data-operation="{merge["operation_id"]}"' not in html
    html = client.get("/ui/datastacks/gala_fibsem/edits", params={"author": "ann", "since": merge["timestamp"]}).text
    assert f'data-operation="{merge["operation_id"]}"' in html and 'value="ann"' in html
    html = client.get("/ui/datastacks/gala_fibsem/edits", params={"since": "2100-01-01T00:00:00Z"}).text
    assert "data-operation" not in html and "<b>0</b> operations" in html
    html = client.get("/ui/datastacks/gala_fibsem/edits", params={"limit": 1}).text
    assert _text(html, "edits").count("data-operation=") == 1 and 'id="all-edits"' in html
    assert "<b>2</b> operations" in html
    bad = client.get("/ui/datastacks/gala_fibsem/edits", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")
    assert "since" in _text(bad.text, "error")


def test_features_search_and_feature_page(client):
    html = client.get("/ui/features").text
    assert 'data-feature="soma_positions"' in html and 'data-feature="soma_counts"' in html
    html = client.get("/ui/features", params={"tag": "microns"}).text
    assert 'data-feature="soma_positions"' in html and 'data-feature="soma_counts"' not in html
    html = client.get("/ui/features", params={"column": "pt_root_id"}).text
    assert 'data-feature="soma_positions"' in html and 'data-feature="soma_counts"' not in html
    html = client.get("/ui/features", params={"q": "somas per", "datastack": "pinky100"}).text
    assert 'data-feature="soma_counts"' in html and 'data-feature="soma_positions"' not in html
    assert 'data-feature' not in client.get("/ui/features", params={"datastack": "gala_fibsem"}).text
    html = client.get("/ui/features/pinky100/soma_counts").text
    lineage = _text(html, "lineage")
    assert 'href="/ui/features/pinky100/soma_positions"' in lineage
    assert "draft" in _text(html, "feature-status") and "parquet" in _text(html, "feature-meta")
    assert "<code>n</code>" in _text(html, "feature-schema")
    parent = client.get("/ui/features/pinky100/soma_positions").text
    assert 'href="/ui/features/pinky100/soma_counts"' in _text(parent, "lineage")  # derived from this
    assert "363" in _text(parent, "feature-meta")
    assert client.get("/ui/features/pinky100/nope").status_code == 404


def test_runs_and_run_page(client, lake_path):
    rid = lake_path["run_id"]
    html = client.get("/ui/runs").text
    assert f'data-run="{rid}"' in _text(html, "runs")
    assert 'data-run' not in client.get("/ui/runs", params={"mode": "production", "datastack": "nope"}).text
    html = client.get(f"/ui/runs/{rid}").text
    assert "SELECT count(*) AS n FROM pinky100.synapses" in _text(html, "run-sql")
    inputs = _text(html, "run-inputs")
    assert "pinky100.synapses" in inputs and "delta_version 1" in inputs and "latest" in inputs
    runtime = _text(html, "runtime")
    assert "predicted class" in runtime and "measured class" in runtime and "interactive" in runtime
    lake = open_lake(lake_path["path"])
    try:
        from neurolake.provenance.runs import get_run

        sha = get_run(lake, rid)["result_sha256"]
    finally:
        lake.close()
    assert sha in _text(html, "result-sha")
    assert 'href="/ui/query?sql=SELECT+count%28%2A%29+AS+n+FROM+pinky100.synapses"' in html
    assert f'href="/api/v1/runs/{rid}"' in html and "&#34;eventType&#34;: &#34;COMPLETE&#34;" in html
    assert client.get(f"/ui/runs/{rid[:8]}").status_code == 200  # a unique prefix
    r = client.get("/ui/runs/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert client.get("/ui/runs/not-a-run").status_code == 400
    assert client.get("/ui/runs", params={"mode": "fast"}).status_code == 400


def test_unknown_objects_and_bad_parameters_are_clean_html_errors(client):
    for url, status in (("/ui/datastacks/nope", 404), ("/ui/datastacks/pinky100/tables/nope", 404),
                        ("/ui/datastacks/pinky100/edits", 404),  # no segmentation
                        ("/ui/datastacks/pinky100/tables/synapses?version=9", 404),
                        ("/ui/datastacks/pinky100/tables/synapses?offset=-1", 400),
                        ("/ui/datastacks/pinky100/tables/synapses?limit=100000", 400),
                        ("/ui/static/nope.css", 404)):
        r = client.get(url)
        assert r.status_code == status, url
        assert r.headers["content-type"].startswith("text/html") and 'id="error"' in r.text, url
    assert "nope" in _text(client.get("/ui/datastacks/nope").text, "error")
    # API routes keep their JSON errors
    r = client.get("/api/v1/datastacks/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_root_is_html_for_browsers_and_json_for_clients(client):
    r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and 'id="explorers"' in r.text
    r = client.get("/")
    assert r.json()["datastacks"] == ["gala_fibsem", "gerhard2013", "pinky100"] and r.json()["docs"] == "/docs"
    assert client.get("/", headers={"Accept": "application/json"}).json()["docs"] == "/docs"


def test_docs_and_redoc_use_only_local_assets(client):
    for url in ("/docs", "/redoc"):
        html = client.get(url).text
        srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert srcs and not any(re.match(r"(https?:)?//", s) for s in srcs), (url, srcs)
        assert "fonts.googleapis" not in html and "cdn." not in html
        for s in srcs:
            r = client.get(s)
            assert r.status_code == 200 and len(r.content) > 1000, s
        assert "/openapi.json" in html
    assert client.get("/ui/static/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    # nothing the assets would fetch from outside: Swagger UI's validator badge, ReDoc's sidebar logo
    assert '"validatorUrl": null' in client.get("/docs").text
    redoc = client.get("/ui/static/redoc.standalone.js").text
    assert "cdn.redoc.ly" not in redoc and "Redoc" in redoc
    assert client.get("/openapi.json").json()["info"]["title"] == "neurolake"


def test_css_is_responsive(client):
    css = client.get("/ui/static/neurolake.css").text
    assert "@media (max-width: 640px)" in css and "overflow-x: auto" in css
    html = client.get("/ui/datastacks/pinky100/tables/synapses").text  # a page with its own `version`
    assert '<meta name="viewport"' in html and 'class="scroll"' in html
    from neurolake import __version__

    assert f"neurolake {__version__} ·" in html


# -------------------------------------------------------------------------------------------------
# --auth
# -------------------------------------------------------------------------------------------------
def _login(c: TestClient, token: str) -> None:
    form = c.get("/ui/login").text
    r = c.post("/ui/login", data={"token": token, "csrf": _csrf(form), "next": "/ui"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui"


def test_no_token_sees_the_login_page_api_keeps_json(auth_app):
    with TestClient(auth_app) as c:
        r = c.get("/ui/datastacks/pinky100?x=1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fdatastacks%2Fpinky100%3Fx%3D1"
        r = c.get("/ui")
        assert r.status_code == 200 and 'id="login-form"' in r.text and str(r.url).endswith("/ui/login?next=%2Fui")
        r = c.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        r = c.get("/")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = c.get("/api/v1/datastacks")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        # a refused (e.g. revoked) token in the cookie: the login page says so
        c.cookies.set("neurolake_token", "nl_wrong")
        r = c.get("/ui")
        assert str(r.url).endswith("/ui/login?next=%2Fui") and "refused" in _text(r.text, "login-error")
        c.cookies.clear()
        # the public pages: login form, docs, static assets
        for url in ("/ui/login", "/docs", "/redoc", "/ui/static/neurolake.css", "/ui/static/redoc.standalone.js"):
            assert c.get(url).status_code == 200, url


def test_login_form_csrf_cookie_and_logout(auth_app, lake_path):
    tok = lake_path["tokens"]
    with TestClient(auth_app) as c:
        form = c.get("/ui/login", params={"next": "/ui/runs"}).text
        csrf = _csrf(form)
        assert 'name="next" value="/ui/runs"' in form
        # no / a wrong CSRF field: 403, no cookie
        r = c.post("/ui/login", data={"token": tok["vi"]}, follow_redirects=False)
        assert r.status_code == 403 and "neurolake_token" not in r.headers.get("set-cookie", "")
        r = c.post("/ui/login", data={"token": tok["vi"], "csrf": "forged"}, follow_redirects=False)
        assert r.status_code == 403 and "csrf" in r.text.lower()
        # a wrong token: the form again, 401
        r = c.post("/ui/login", data={"token": "nl_wrong", "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 401 and 'id="login-error"' in r.text and "neurolake_token" not in c.cookies
        # another site as next: home instead
        r = c.post("/ui/login", data={"token": tok["vi"], "csrf": csrf, "next": "//evil.example/x"},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui"
        cookie = r.headers["set-cookie"]
        assert f"neurolake_token={tok['vi']}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        html = c.get("/ui").text
        assert '<span class="muted">vi</span>' in _text(html, "user")
        # log out: POST with the CSRF field
        assert c.post("/ui/logout", data={}, follow_redirects=False).status_code == 403
        r = c.post("/ui/logout", data={"csrf": _csrf(html)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        assert "neurolake_token" not in c.cookies
        assert c.get("/ui", follow_redirects=False).status_code == 303


def test_viewer_sees_only_what_roles_allow(auth_app, lake_path):
    tok = lake_path["tokens"]
    with TestClient(auth_app) as out, TestClient(auth_app) as vi:
        _login(out, tok["out"])
        _login(vi, tok["vi"])
        # "out" has no role: the public demo datastacks only; pinky100 is a 403 page
        cards = _text(out.get("/ui").text, "datastack-cards")
        assert "gala_fibsem" in cards and "gerhard2013" in cards and "pinky100" not in cards
        r = out.get("/ui/datastacks/pinky100")
        assert r.status_code == 403 and 'id="error"' in r.text and "pinky100" in r.text
        assert out.get("/ui/datastacks/pinky100/tables/synapses").status_code == 403
        assert out.get("/ui/features/pinky100/soma_counts").status_code == 403
        assert "data-feature" not in out.get("/ui/features").text
        assert out.get("/ui/datastacks/no_such_ds").status_code == 403  # same answer as a private one
        # "vi" views pinky100, but not the PRIVATE somas table of ada
        assert "pinky100" in _text(vi.get("/ui").text, "datastack-cards")
        html = vi.get("/ui/datastacks/pinky100").text
        assert 'data-table="synapses"' in html and 'data-table="somas"' not in html
        assert "somas" not in _text(html, "versions")
        assert vi.get("/ui/datastacks/pinky100/tables/somas").status_code == 403
        assert "1,981" in _text(vi.get("/ui/datastacks/pinky100/tables/synapses").text, "row-count")
        assert 'data-feature="soma_counts"' in vi.get("/ui/features").text
        # runs are private: vi's own query shows, the local user's run does not
        r = vi.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM pinky100.synapses"})
        assert r.status_code == 200, r.text
        mine = r.json()["run_id"]
        html = vi.get("/ui/runs").text
        assert f'data-run="{mine}"' in html and lake_path["run_id"] not in html
        assert vi.get(f"/ui/runs/{lake_path['run_id']}").status_code == 404
        run = vi.get(f"/ui/runs/{mine}").text
        assert "&lt;lake&gt;" in run or "<lake>" not in run  # the lake's folder is not shown to non-admins
        assert str(lake_path["path"]) not in run
        assert vi.get("/ui/runs", params={"user": "local"}).status_code == 403
