"""The web UI in a real headless Chromium (Playwright, the system's /usr/bin/chromium) against real
``neurolake serve`` processes on the demo lake (tests/web/conftest.py): every page loads with no console
error and no failed request, its Plotly plots hold their traces, the graph explorer shows the C. elegans
connectome's real counts, an uploaded CSV gets its summary, a shared URL reopens the same view, under
``--auth`` a viewer sees no edit control and a forged write gets 403, /docs and /redoc work offline.
Each page's screenshot is written to docs/ui/<page>.png (shown in docs/ui.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.browser

DATA = Path(__file__).resolve().parents[2] / "data"
PLOT_TIMEOUT = 20_000  # ms


def celegans_edges() -> pd.DataFrame:
    """The C. elegans chemical connections of the source file (Varshney et al. 2011, NeuronConnect): the
    presynaptic rows (S, Sp), names upper-cased, synapses (``Nbr``) summed per (pre, post)."""
    w = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str, "Type": str})
    s = w[w["Type"].isin(["S", "Sp"])]
    df = pd.DataFrame({"pre": s["Neuron 1"].str.upper(), "post": s["Neuron 2"].str.upper(),
                       "n_synapses": s["Nbr"].astype(int)})
    return df.groupby(["pre", "post"], as_index=False)["n_synapses"].sum()


def celegans_source() -> dict[str, int]:
    """Counts of the C. elegans chemical connectome computed from the source file: nodes are the neurons
    on either side of a connection, edges the distinct (pre, post) pairs."""
    e = celegans_edges()
    return {"nodes": len(set(e["pre"]) | set(e["post"])), "edges": len(e), "synapses": int(e["n_synapses"].sum())}


def numbers(text: str) -> set[int]:
    """Integers written in ``text`` (thousands separators allowed)."""
    return {int(m.replace(",", "")) for m in re.findall(r"\d[\d,]*", text)}


def wait_plots(w, selector: str = ".js-plotly-plot") -> list[int]:
    """Wait until every Plotly element under ``selector`` has been drawn; return their trace counts."""
    w.page.wait_for_selector(selector, state="attached", timeout=PLOT_TIMEOUT)
    w.page.wait_for_function(
        f"Array.from(document.querySelectorAll({selector!r})).every(e => e.data && e._fullLayout)",
        timeout=PLOT_TIMEOUT)
    return w.page.evaluate(f"Array.from(document.querySelectorAll({selector!r})).map(e => e.data.length)")


def assert_plots_apart(w) -> None:
    """No drawn Plotly figure (its outer SVG) overlaps another one: each stays inside its own box."""
    boxes = w.page.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => {
        const r = e.querySelector('.main-svg').getBoundingClientRect();
        return [(e.parentElement.closest('[id]') || e).id, r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; })""")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            dx = min(a[3], b[3]) - max(a[1], b[1])
            dy = min(a[4], b[4]) - max(a[2], b[2])
            assert dx <= 1 or dy <= 1, f"plots {a[0]!r} and {b[0]!r} overlap by {dx:.0f} x {dy:.0f} px: {a}, {b}"


def ui_links(w) -> list[str]:
    """Same-origin links of the page under /ui (no fragment, no downloads)."""
    hrefs = w.page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    base = "{0.scheme}://{0.netloc}".format(urlsplit(w.page.url))
    out = []
    for h in hrefs:
        h = h.split("#")[0]
        if h.startswith(base + "/ui") and "/ui/static/" not in h and "download" not in h and h not in out:
            out.append(h)
    return out


# ---------------------------------------------------------------------------------------------------------
# home and browse (W1)
# ---------------------------------------------------------------------------------------------------------
def test_home_links_every_explorer(ui_server, open_page):
    w = open_page(ui_server + "/ui")
    w.assert_clean()
    hrefs = w.page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
    for explorer in ("/ui/image", "/ui/graph", "/ui/vectors", "/ui/query", "/ui/features", "/ui/runs", "/docs"):
        assert any(h.split("?")[0].startswith(explorer) for h in hrefs), f"home does not link to {explorer}"
    for ds in ("gerhard2013", "gala_fibsem", "pinky100", "celegans"):
        assert any(h.startswith(f"/ui/datastacks/{ds}") for h in hrefs), f"home does not link to datastack {ds}"
    w.screenshot("home")
    # the root answers the browser with the home page (JSON clients keep their answer)
    w.go(ui_server + "/")
    w.assert_clean()
    assert w.page.locator("#datastack-cards").count() == 1, "/ does not show the home page to a browser"
    assert httpx.get(ui_server + "/").json()["datastacks"]


def test_browse_datastack_pages(ui_server, open_page):
    """The datastack page and every /ui page it links to load clean; layers show their thumbnails,
    the page links to its API URL and Neuroglancer."""
    w = open_page(ui_server + "/ui/datastacks/gerhard2013")
    w.assert_clean()
    text = w.page.inner_text("main")
    for word in ("image", "labels", "synapses", "4.6"):
        assert word in text, f"{word!r} missing on the datastack page"
    hrefs = w.page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
    assert any(h.startswith("/api/v1/datastacks/gerhard2013") for h in hrefs)
    assert any(h.startswith("/viewer/gerhard2013") for h in hrefs)
    imgs = w.page.locator("img")
    assert imgs.count() > 0, "no layer thumbnail"
    for i in range(imgs.count()):  # lazy images: bring each into view, then it must be drawn
        imgs.nth(i).scroll_into_view_if_needed()
    w.page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=PLOT_TIMEOUT)
    drawn = w.page.evaluate("Array.from(document.images).map(i => [i.src, i.naturalWidth > 0])")
    assert all(ok for _, ok in drawn), f"thumbnails not drawn: {drawn}"
    w.page.evaluate("window.scrollTo(0, 0)")
    w.settle()
    w.screenshot("datastack")
    links = [u for u in ui_links(w) if "/ui/datastacks/gerhard2013/" in u]
    assert links, "the datastack page links to no sub-page (tables, versions, edit log)"
    shots = {"/tables/": "table", "/versions": "versions", "/edits": "editlog"}
    for u in links[:12]:
        w.go(u)
        w.assert_clean()
        for key, name in list(shots.items()):
            if key in urlsplit(u).path:
                w.screenshot(name)
                del shots[key]
    assert not shots, f"the datastack page links to no {sorted(shots.values())} page"


def test_browse_connectome_datastack(ui_server, open_page):
    w = open_page(ui_server + "/ui/datastacks/celegans")
    w.assert_clean()
    text = w.page.inner_text("main")
    for word in ("neurons", "chemical", "wiring"):
        assert word in text
    assert "6,394" in text or "6394" in text, "the chemical table's row count is missing"


def test_features_search_and_page(ui_server, open_page):
    """The feature table the fixture registered (tests/web/conftest.py) is found by tag, column and text."""
    from conftest import FEATURE

    w = open_page(ui_server + "/ui/features")
    w.assert_clean()
    assert FEATURE in w.page.inner_text("main")
    for q in ("tag=degree", "column=in_degree", "q=varshney", "datastack=celegans"):
        w.go(ui_server + "/ui/features?" + q)
        w.assert_clean()
        assert FEATURE in w.page.inner_text("main"), q
    w.go(ui_server + "/ui/features?tag=no-such-tag")
    assert FEATURE not in w.page.inner_text("main")
    w.go(ui_server + "/ui/features?tag=degree")
    w.screenshot("features")
    link = [u for u in ui_links(w) if urlsplit(u).path == f"/ui/features/celegans/{FEATURE}"]
    assert link, ui_links(w)
    w.go(link[0])
    w.assert_clean()
    text = w.page.inner_text("main")
    for word in ("in_degree", "out_synapses", "published", "Varshney", "parquet"):
        assert word in text, word
    hrefs = w.page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
    assert any(h.startswith("/api/v1/") and FEATURE in h for h in hrefs), "no link to the API URL"
    w.screenshot("feature")


def test_vectors_feature_table(ui_server, open_page):
    """The vector explorer on the registered feature table: the summary equals pandas' on the source."""
    from conftest import celegans_degree_frame

    src = celegans_degree_frame()
    w = open_page(ui_server + "/ui/vectors?table=features.celegans_degree&color=out_degree")
    traces = wait_plots(w)
    w.assert_clean()
    assert traces and all(n > 0 for n in traces)
    for col in ("in_degree", "out_synapses"):
        row = w.page.locator(f'#vector-summary tr[data-column="{col}"]')
        assert int(row.locator("td").nth(2).inner_text().replace(",", "")) == len(src)
        assert float(row.locator("td").nth(7).get_attribute("data-value")) == pytest.approx(src[col].mean())


def test_runs_page_and_manifest(ui_server, open_page):
    demo_run = next(r for r in httpx.get(ui_server + "/api/v1/runs").json()
                    if "synapses_per_um3" in r["sql"] and r["mode"] == "production")
    run_id = demo_run["run_id"]
    w = open_page(ui_server + "/ui/runs")
    w.assert_clean()
    w.screenshot("runs")
    run_links = [u for u in ui_links(w) if urlsplit(u).path == f"/ui/runs/{run_id}"]
    assert run_links, f"the runs page does not link to the demo's run {run_id}"
    w.go(run_links[0])
    w.assert_clean()
    text = w.page.inner_text("main")
    assert run_id in text and "gerhard2013" in text and "sha256" in text.lower()
    w.screenshot("run")


# ---------------------------------------------------------------------------------------------------------
# graph explorer (W2)
# ---------------------------------------------------------------------------------------------------------
def graph_url(base: str) -> str:
    return base + "/ui/graph?ds=celegans&version=1"


def graph_state(w) -> dict[str, str]:
    """The numbers the graph page shows: its statistics and communities (``data-key`` cells)."""
    return w.page.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll(
        '#graph-stats [data-key], #graph-communities [data-key]')).map(e => [e.dataset.key, e.innerText.trim()]))""")


def test_graph_explorer_celegans(ui_server, open_page):
    src = celegans_source()
    w = open_page(graph_url(ui_server))
    traces = wait_plots(w)
    w.assert_clean()
    assert traces and all(n > 0 for n in traces), f"plots without traces: {traces}"
    st = graph_state(w)
    assert int(st["nodes_connected"].replace(",", "")) == src["nodes"], st
    assert int(st["edges"].replace(",", "")) == src["edges"], st
    assert int(st["synapses"].replace(",", "")) == src["synapses"], st
    assert int(st["n_communities"]) > 1 and st["seed"] and st["resolution"], st
    assert w.page.locator("#graph-adjacency .js-plotly-plot").count() == 1
    w.screenshot("graph")
    w.screenshot("graph-plots", at="#graph-degrees")
    w.screenshot("graph-communities", at="#graph-communities-title")
    assert_plots_apart(w)


def test_graph_partners_of_a_neuron(ui_server, open_page):
    """AVAL's ranked upstream/downstream partners above a threshold, as pandas ranks them from the source."""
    e = celegans_edges()
    w = open_page(graph_url(ui_server) + "&node=AVAL&partners_min=5")
    wait_plots(w)
    w.assert_clean()
    for side, mine, theirs in (("upstream", "post", "pre"), ("downstream", "pre", "post")):
        want = e[(e[mine] == "AVAL") & (e["n_synapses"] >= 5)]
        rows = w.page.locator(f"#graph-{side} tbody tr")
        assert rows.count() == min(len(want), 50), side
        got = [(r[1].split()[0], int(r[3])) for r in
               (rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count()))]
        assert sorted(got) == sorted(zip(want[theirs], want["n_synapses"], strict=True)), side
        assert [n for _, n in got] == sorted((n for _, n in got), reverse=True), f"{side} not ranked"
    w.screenshot("graph-partners", at="#graph-partners")


def test_graph_uploaded_edge_list(ui_server, open_page, tmp_path):
    """An edge list CSV (the source's connections) uploaded to the graph explorer gets the same counts."""
    e = celegans_edges()
    path = tmp_path / "celegans_chemical.csv"
    e.to_csv(path, index=False)
    src = celegans_source()
    w = open_page(ui_server + "/ui/graph")
    w.assert_clean()
    w.page.evaluate("document.getElementById('graph-upload-box').open = true")
    w.page.set_input_files("#graph-upload input[type=file]", str(path))
    with w.page.expect_navigation():
        w.page.click("#graph-upload button[type=submit]")
    assert "upload=" in w.page.url
    wait_plots(w)
    w.assert_clean()
    st = graph_state(w)
    assert int(st["nodes"].replace(",", "")) == src["nodes"], st
    assert int(st["edges"].replace(",", "")) == src["edges"], st
    assert int(st["synapses"].replace(",", "")) == src["synapses"], st


def test_graph_shared_url_reopens_same_view(ui_server, open_page):
    w = open_page(graph_url(ui_server) + "&seed=7&resolution=0.5&min_synapses=3")
    wait_plots(w)
    url = w.page.url
    q = parse_qs(urlsplit(url).query)
    assert q.get("ds") == ["celegans"] and q.get("seed") == ["7"]
    first = graph_state(w)
    assert first["seed"] == "7" and float(first["resolution"]) == 0.5
    w2 = open_page(url)  # a colleague's browser: a new context
    wait_plots(w2)
    w2.assert_clean()
    assert graph_state(w2) == first
    assert w2.page.inner_text("#graph-community-table") == w.page.inner_text("#graph-community-table")


# ---------------------------------------------------------------------------------------------------------
# vector explorer and query console (W3)
# ---------------------------------------------------------------------------------------------------------
HEMI_COLS = ["bodyId", "type", "cell_class", "side", "pre", "post", "size"]


def hemibrain_subset(tmp_path) -> tuple[Path, pd.DataFrame]:
    m = pd.read_csv(DATA / "hemibrain_meta" / "Supplemental_file5_hemibrain_meta.csv", low_memory=False)
    cols = [c for c in HEMI_COLS if c in m.columns]
    sub = m[cols].head(2000)
    path = tmp_path / "hemibrain_subset.csv"
    sub.to_csv(path, index=False)
    return path, sub


def test_vectors_uploaded_csv_summary(ui_server, open_page, tmp_path):
    path, sub = hemibrain_subset(tmp_path)
    w = open_page(ui_server + "/ui/vectors")
    w.assert_clean()
    w.page.set_input_files("#vector-upload-form input[type=file]", str(path))
    with w.page.expect_navigation():
        w.page.click("#vector-upload-form button[type=submit]")
    assert "upload=" in w.page.url
    traces = wait_plots(w)
    w.assert_clean()
    assert traces and all(n > 0 for n in traces)
    for col in ("pre", "post"):
        row = w.page.locator(f'#vector-summary tr[data-column="{col}"]')
        cells = row.locator("td").all_inner_texts()
        assert int(cells[2].replace(",", "")) == int(sub[col].notna().sum()), cells
        assert float(row.locator("td").nth(7).get_attribute("data-value")) == pytest.approx(sub[col].mean())
    w.screenshot("vectors")
    w.screenshot("vectors-plots", at="#vector-histograms")
    assert_plots_apart(w)
    # the upload's URL is shareable while the server runs
    w2 = open_page(w.page.url)
    wait_plots(w2)
    w2.assert_clean()
    assert w2.page.inner_text("#vector-summary") == w.page.inner_text("#vector-summary")


def test_vectors_table_shared_url(ui_server, open_page):
    w = open_page(ui_server + "/ui/vectors?table=pinky100.v1.somas&color=manual_id")
    wait_plots(w)
    w.assert_clean()
    url = w.page.locator("#vector-share").get_attribute("href")
    w2 = open_page(ui_server + url)
    wait_plots(w2)
    assert w2.page.inner_text("#vector-summary") == w.page.inner_text("#vector-summary")
    assert "363" in w.page.inner_text("main")


def test_query_console(ui_server, open_page):
    sql = "SELECT cell_type, count(*) AS n FROM celegans.v1.neurons GROUP BY cell_type ORDER BY n DESC, cell_type"
    w = open_page(ui_server + "/ui/query")
    w.assert_clean()
    w.page.fill("#query-form textarea[name=sql]", sql)
    with w.page.expect_navigation():
        w.page.click("#query-run")
    w.settle()
    w.assert_clean()
    classes = celegans_neuron_classes()
    rows = w.page.locator("#query-rows tbody tr")
    first = rows.nth(0).locator("td").all_inner_texts()
    top = classes.iloc[0]
    assert first[-2:] == [top["cell_type"], str(top["n"])], (first, top)
    assert re.fullmatch(r"[0-9a-f]{64}", w.page.inner_text("#query-sha256").strip())
    assert "celegans" in w.page.inner_text("#query-inputs")
    w.screenshot("query")
    # the shared URL reopens the same result
    share = w.page.locator("#query-share").get_attribute("href")
    assert "sql=" in share, share
    w2 = open_page(ui_server + share)
    if w2.page.locator("#query-rows").count() == 0:  # the link opens the form: run it
        with w2.page.expect_navigation():
            w2.page.click("#query-run")
        w2.settle()
    w2.assert_clean()
    assert w2.page.inner_text("#query-rows") == w.page.inner_text("#query-rows")
    assert w2.page.inner_text("#query-sha256") == w.page.inner_text("#query-sha256")


def celegans_neuron_classes() -> pd.DataFrame:
    """Neurons per class computed from the source (names upper-cased, class by the demo's naming rule)."""
    from neurolake.connectome.demo import celegans_neurons

    n = celegans_neurons()
    col = "cell_class" if "cell_class" in n.columns else "cell_type"
    return (n.groupby(col).size().rename("n").reset_index().rename(columns={col: "cell_type"})
            .sort_values(["n", "cell_type"], ascending=[False, True]).reset_index(drop=True))


# ---------------------------------------------------------------------------------------------------------
# image explorer (W4)
# ---------------------------------------------------------------------------------------------------------
def tiles_drawn(w) -> int:
    """Wait until the 2-D view's tiles are drawn; return how many."""
    w.page.wait_for_function("""(() => { const t = document.querySelectorAll('#image-view img');
        return t.length > 0 && Array.from(t).every(i => i.complete && i.naturalWidth > 0); })()""",
                             timeout=PLOT_TIMEOUT)
    w.settle()
    return w.page.locator("#image-view img").count()


def test_image_explorer_pans_and_updates_url(ui_server, open_page):
    w = open_page(ui_server + "/ui/image/gerhard2013")
    tiles_drawn(w)
    w.assert_clean()
    href = lambda p: p.evaluate("location.href")  # noqa: E731 (replaceState: Playwright's page.url lags)
    before = parse_qs(urlsplit(href(w.page)).query)
    box = w.page.locator("#image-view").bounding_box()
    cx, cy = round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)
    w.page.mouse.move(cx, cy)
    w.page.mouse.down()
    w.page.mouse.move(cx - 150, cy - 100, steps=5)  # whole-pixel steps
    w.page.mouse.up()
    w.page.wait_for_function(f"location.href !== {href(w.page)!r}", timeout=5000)
    tiles_drawn(w)
    after = parse_qs(urlsplit(href(w.page)).query)
    # dragging the content left/up by (150, 100) screen pixels moves the view centre right/down
    scale = 2 ** int(before["mip"][0])
    assert int(after["x"][0]) - int(before["x"][0]) == 150 * scale, (before, after)
    assert int(after["y"][0]) - int(before["y"][0]) == 100 * scale, (before, after)
    assert after["z"] == before["z"] and after["mip"] == before["mip"]
    w.assert_clean()
    ng = w.page.locator("#ng-link").get_attribute("href")
    assert ng.startswith("/viewer/gerhard2013") and f"{after['x'][0]},{after['y'][0]}," in ng, ng
    w.screenshot("image", jpeg=True)
    # the URL after panning reopens the same position
    url = href(w.page)
    w2 = open_page(url)
    tiles_drawn(w2)
    w2.assert_clean()
    assert parse_qs(urlsplit(href(w2.page)).query) == after
    assert w2.page.inner_text("#image-pos") == w.page.inner_text("#image-pos")


# ---------------------------------------------------------------------------------------------------------
# /docs and /redoc offline (W1)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "selector"), [("/docs", ".swagger-ui .info"), ("/redoc", ".api-content")])
def test_api_docs_offline(ui_server, open_page, path, selector):
    blocked: list[str] = []
    w = open_page()

    def only_loopback(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    w.context.route("**/*", only_loopback)
    w.page.goto(ui_server + path)
    w.page.wait_for_selector(selector, timeout=PLOT_TIMEOUT)
    w.settle()
    assert not blocked, f"{path} asked the internet for {blocked}"
    w.assert_clean()
    w.screenshot(path.strip("/"))


# ---------------------------------------------------------------------------------------------------------
# --auth: login, roles, CSRF (W1 and every page)
# ---------------------------------------------------------------------------------------------------------
def test_auth_login_with_token(ui_auth_server, open_page):
    base, tok = ui_auth_server
    w = open_page(base + "/ui/login")
    w.assert_clean()
    w.screenshot("login")
    w.page.fill("input[name=token]", tok["viewer"])
    with w.page.expect_navigation():
        w.page.locator("form:has(input[name=token]) [type=submit]").first.click()
    w.assert_clean()
    assert "viewer" in w.page.inner_text("header")
    assert any(c["name"] == "neurolake_token" for c in w.context.cookies())


def test_auth_anonymous_sees_no_datastack(ui_auth_server, open_page):
    base, _ = ui_auth_server
    for path in ("/ui", "/ui/datastacks/celegans", "/ui/graph?ds=celegans&version=1"):
        w = open_page(base + path)
        w.assert_clean()
        assert urlsplit(w.page.url).path == "/ui/login", f"{path} without a token: {w.page.url}"
        text = w.page.inner_text("main")
        assert "celegans" not in text and "private_ds" not in text


EDITOR_WORDS = re.compile(r"\b(delete|merge|split|undo|redo|rollback|create|edit|append|register|grant)\b", re.I)


def test_auth_viewer_sees_only_readable_and_no_edit_controls(ui_auth_server, open_page):
    base, tok = ui_auth_server
    w = open_page(base + "/ui", token=tok["viewer"])
    w.assert_clean()
    home = w.page.inner_text("main")
    assert "celegans" in home and "private_ds" not in home
    pages = ["/ui", "/ui/datastacks/celegans", "/ui/datastacks/gerhard2013", "/ui/datastacks/gerhard2013/edits",
             "/ui/datastacks/celegans/versions", "/ui/features", "/ui/runs", "/ui/graph?ds=celegans&version=1",
             "/ui/vectors", "/ui/query", "/ui/image", "/ui/image/gerhard2013"]
    for p in pages:
        w.go(base + p)
        w.assert_clean()
        forms = w.page.evaluate("""Array.from(document.forms)
            .filter(f => (f.getAttribute('method') || 'get').toLowerCase() === 'post')
            .map(f => [f.getAttribute('action') || '', f.innerText])""")
        # POST forms that change nothing in the lake: log out, upload a file to explore (kept in memory), run
        # or reproduce a query (reads; checked against the user's roles)
        edit = [f for f in forms
                if not re.search(r"/ui/(login|logout|vectors/upload|graph/upload|query|query/reproduce)$", f[0])]
        assert not edit, f"{p}: a viewer sees edit forms {edit}"
        buttons = w.page.evaluate("Array.from(document.querySelectorAll('button')).map(b => b.innerText)")
        assert not [b for b in buttons if EDITOR_WORDS.search(b)], f"{p}: edit buttons {buttons}"
    # the private datastack does not exist for the viewer
    r = w.page.goto(base + "/ui/datastacks/private_ds")
    assert r.status in (403, 404)
    w.bad.clear()


def test_auth_forged_writes_get_403(ui_auth_server, open_page):
    base, tok = ui_auth_server
    w = open_page(base + "/ui", token=tok["viewer"])
    # a viewer's write through the JSON API (the browser presents the viewer's cookie)
    body = '{"name": "forged", "schema_type": "point", "description": "a forged write"}'
    r = w.page.request.post(base + "/api/v1/datastacks/celegans/tables", data=body,
                            headers={"content-type": "application/json"})
    assert r.status == 403, r.text()
    # an editor's form without (or with a wrong) CSRF token
    e = open_page(base + "/ui/vectors", token=tok["editor"])
    for form in ({}, {"csrf": "forged"}):
        r = e.page.request.post(base + "/ui/vectors/upload", multipart={
            **form, "file": {"name": "x.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"}})
        assert r.status == 403, (form, r.status)
    # the 403s are the role and the CSRF check, not a broken route: the editor's API write goes through
    r = httpx.post(base + "/api/v1/datastacks/celegans/tables", headers={
        "Authorization": f"Bearer {tok['editor']}", "content-type": "application/json"}, content=body)
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------------------------------------------------
# the watcher itself, and error pages
# ---------------------------------------------------------------------------------------------------------
def test_watcher_catches_errors_and_error_pages_are_html(ui_server, open_page):
    """The checks above would see a problem: an answer >= 400, a console error and an uncaught exception
    each fail ``assert_clean``; an unknown datastack is an HTML error page (404) naming it."""
    w = open_page(ui_server + "/ui/datastacks/no_such_stack")
    assert w.bad and w.bad[0][0] == 404
    assert "no_such_stack" in w.page.inner_text("main")
    assert w.page.evaluate("document.contentType") == "text/html"
    with pytest.raises(AssertionError, match="answers >= 400"):
        w.assert_clean()
    w.assert_clean(allow=("/ui/datastacks/no_such_stack",))
    w.page.evaluate("console.error('boom')")
    with pytest.raises(AssertionError, match="boom"):
        w.assert_clean(allow=("/ui/datastacks/no_such_stack",))
    w2 = open_page(ui_server + "/ui")
    w2.page.evaluate("setTimeout(() => { throw new Error('uncaught') }, 0)")
    w2.page.wait_for_timeout(200)
    with pytest.raises(AssertionError, match="uncaught"):
        w2.assert_clean()


# ---------------------------------------------------------------------------------------------------------
# electrophysiology (issue 18)
# ---------------------------------------------------------------------------------------------------------
def test_ephys_pages_draw_their_plots(ui_server, open_page):
    """The ephys index (f–I curves, the plate heatmap) and a current-clamp file's sweep with its spike markers
    are drawn by plotly.js in Chromium, offline, with no console error."""
    w = open_page(ui_server + "/ui/ephys/ephys")
    traces = wait_plots(w)
    w.assert_clean()
    assert len(traces) == 2 and all(n > 0 for n in traces), traces
    w.screenshot("ephys")
    w.go(ui_server + "/ui/ephys/ephys/files/17o05028_ic_steps.abf?sweep=10")
    traces = wait_plots(w, "#sweep-plot .js-plotly-plot")
    w.assert_clean()
    names = w.page.evaluate("document.querySelector('#sweep-plot .js-plotly-plot').data.map(t => t.name)")
    peaks = w.page.evaluate("""(() => { const d = document.querySelector('#sweep-plot .js-plotly-plot')._fullData;
        const t = d.find(t => (t.name || '').toLowerCase().includes('peak')); return t ? t._length : 0; })()""")
    assert traces[0] >= 2 and peaks > 0, (names, peaks)
    w.screenshot("ephys-sweep")
    assert_plots_apart(w)
