"""The graph explorer (/ui/graph) served in-process on a lake holding the real C. elegans connectome
(Varshney et al. 2011, data/celegans) and MICrONS pinky100 synapses (data/pinky100), loaded with the
examples' builders (examples/_data.py). Expected numbers are computed with pandas from the source files."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import time
from html import unescape
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


def _examples_data():
    spec = importlib.util.spec_from_file_location("_nl_examples_data_graph", ROOT / "examples" / "_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def chemical() -> pd.DataFrame:
    """C. elegans chemical connections from NeuronConnect.csv: pre, post (upper-case names), n_synapses."""
    w = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str})
    s = w[w["Type"].isin(["S", "Sp"])]
    e = pd.DataFrame({"pre": s["Neuron 1"].str.upper(), "post": s["Neuron 2"].str.upper(), "n_synapses": s["Nbr"]})
    return e.groupby(["pre", "post"], as_index=False)["n_synapses"].sum()


def all_neurons() -> set[str]:
    w = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str})
    return (set(w["Neuron 1"].str.upper()) | set(w["Neuron 2"].str.upper())) - {"NMJ"}


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory) -> Path:
    from neurolake import init_lake

    d = _examples_data()
    path = tmp_path_factory.mktemp("graph") / "lake"
    lake = init_lake(path)
    d.ensure_celegans(lake)
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100 (private here)", public=False)
    d.ensure_pinky(lake)
    lake.create_datastack("empty", (4, 4, 40), description="no tables, no version")
    lake.create_datastack("nosyn", (4, 4, 40), description="a version without a synapse table")
    lake["nosyn"].create_table("cells", "cell_type", optional_points=["pt"]).append(pd.DataFrame(
        {"pt_root_id": [1, 2], "cell_type": ["a", "b"], "classification_system": "test"}))
    lake["nosyn"].versions.create()
    lake.close()
    return path


@pytest.fixture(scope="module")
def client(lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(lake_path)) as c:
        yield c


def stats_of(html: str) -> dict[str, str]:
    table = re.search(r'<table class="kv" id="graph-stats">(.*?)</table>', html, re.S).group(1)
    return {k: v.strip() for k, v in re.findall(r'data-key="(\w+)">([^<]*)<', table)}


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_start_page_lists_datastacks_and_the_upload_form(client):
    r = client.get("/ui/graph")
    assert r.status_code == 200
    for ds in ("celegans", "pinky100", "empty"):
        assert f'href="/ui/graph?ds={ds}"' in r.text
    assert 'id="graph-upload"' in r.text and 'enctype="multipart/form-data"' in r.text


def test_celegans_page_shows_the_source_numbers(client, capsys):
    e = chemical()
    t = time.perf_counter()
    r = client.get("/ui/graph", params={"ds": "celegans"})
    first = time.perf_counter() - t
    assert r.status_code == 200, r.text[:500]
    st = stats_of(r.text)
    assert int(st["nodes"]) == len(all_neurons()) == 280  # every neuron of the cell-type table
    assert int(st["nodes_connected"]) == len(set(e["pre"]) | set(e["post"])) == 279
    assert int(st["edges"]) == len(e) == 2194 and int(st["synapses"]) == e["n_synapses"].sum() == 6394
    # the plots: degrees, weights, adjacency, network — Plotly divs with their traces
    for pid in ("graph-degrees", "graph-weights", "graph-adjacency", "graph-network"):
        block = re.search(rf'<div id="{pid}">(.*?)</script>', r.text, re.S).group(1)
        assert 'class="plotly-graph-div"' in block and "Plotly.newPlot" in block
    com = re.search(r'<div id="graph-communities">(.*?)</div>', r.text, re.S).group(1)
    assert 'data-key="method">leiden<' in com and 'data-key="seed">0<' in com and 'data-key="resolution">1.0<' in com
    # the version is pinned in the links (shareable), downloads carry the same query
    assert "version=1" in unescape(re.search(r'id="graph-dl-csv" href="([^"]+)"', r.text).group(1))
    assert 'href="/viewer/celegans"' in r.text and "/api/v1/datastacks/celegans/connectome?version=1" in unescape(r.text)
    t = time.perf_counter()
    client.get("/ui/graph", params={"ds": "celegans", "version": 1, "seed": 3})
    warm = time.perf_counter() - t
    with capsys.disabled():
        print(f"\n[graph explorer] C. elegans page: first {first:.2f} s, warm {warm:.2f} s, {len(r.text)} bytes")


def test_same_url_same_view_and_seed_changes_are_shown(client):
    q = {"ds": "celegans", "version": 1, "method": "leiden", "resolution": 1.5, "seed": 7, "min_synapses": 2}
    a, b = client.get("/ui/graph", params=q), client.get("/ui/graph", params=q)
    table = r'<table id="graph-community-table">(.*?)</table>'
    assert re.search(table, a.text, re.S).group(1) == re.search(table, b.text, re.S).group(1)
    assert 'data-key="seed">7<' in a.text and 'data-key="resolution">1.5<' in a.text
    e = chemical()
    e = e[e["n_synapses"] >= 2]
    assert int(stats_of(a.text)["edges"]) == len(e) and int(stats_of(a.text)["synapses"]) == e["n_synapses"].sum()
    lv = client.get("/ui/graph", params={**q, "method": "louvain"})
    assert 'data-key="method">louvain<' in lv.text
    ct = client.get("/ui/graph", params={**q, "order": "cell_type"})
    assert "ordered by cell type" in ct.text


def test_partners_ranked_with_the_users_threshold(client):
    r = client.get("/ui/graph", params={"ds": "celegans", "node": "AVAL", "partners_min": 5})
    assert r.status_code == 200
    e = chemical()
    for side, col, other in (("upstream", "post", "pre"), ("downstream", "pre", "post")):
        want = e[(e[col] == "AVAL") & (e["n_synapses"] >= 5)].sort_values(["n_synapses", other],
                                                                           ascending=[False, True])
        rows = re.findall(r'<tr><td class="num">\d+</td><td><a href="[^"]*">([^<]+)</a>.*?<td class="num">(\d+)</td></tr>',
                          re.search(rf'<table id="graph-{side}">(.*?)</table>', r.text, re.S).group(1))
        assert [n for _, n in rows] == [str(x) for x in want["n_synapses"]][:50]
        assert {a for a, _ in rows} == set(want[other][:50]) or len(want) > 50
    # by numeric id too, and an unknown neuron is a message, not an error page
    by_id = client.get("/ui/graph", params={"ds": "celegans", "node": "AVAL", "partners_min": 5})
    assert "Neuron <strong>AVAL</strong>" in by_id.text
    nope = client.get("/ui/graph", params={"ds": "celegans", "node": "NOTANEURON"})
    assert nope.status_code == 200 and 'id="graph-partners-message"' in nope.text and "not in the connectome" in nope.text


def test_pinky100_page(client):
    s = pd.read_csv(DATA / "pinky100" / "synapses.csv")
    r = client.get("/ui/graph", params={"ds": "pinky100", "order": "cell_type"})
    assert r.status_code == 200
    st = stats_of(r.text)
    assert int(st["nodes"]) == len(set(s["pre"]) | set(s["post"])) and int(st["edges"]) == len(s.drop_duplicates())
    assert int(st["synapses"]) == len(s)
    assert 'id="graph-adjacency-message"' in r.text and "no node attribute &#39;cell_type&#39;" in r.text
    assert 'id="graph-network-message"' in r.text and "at most 300 nodes" in r.text  # 335 nodes
    node = int(s["post"].value_counts().index[0])
    p = client.get("/ui/graph", params={"ds": "pinky100", "node": str(node)})
    rows = re.findall(r'<td class="num">(\d+)</td></tr>', re.search(r'<table id="graph-upstream">(.*?)</table>',
                                                                   p.text, re.S).group(1))
    assert sum(map(int, rows)) == int((s["post"] == node).sum())


def test_missing_version_table_or_datastack_are_messages(client):
    r = client.get("/ui/graph", params={"ds": "empty"})
    assert r.status_code == 200 and 'id="graph-message"' in r.text and "no materialization version" in r.text
    r = client.get("/ui/graph", params={"ds": "nosyn"})
    assert r.status_code == 200 and "has no synapse table" in r.text
    r = client.get("/ui/graph", params={"ds": "nope"})
    assert r.status_code == 404 and 'id="graph-error"' in r.text
    r = client.get("/ui/graph", params={"ds": "celegans", "version": 9})
    assert r.status_code == 404 and 'id="graph-error"' in r.text
    r = client.get("/ui/graph", params={"ds": "celegans", "syn": "neurons"})
    assert r.status_code == 404 and "synapse tables: chemical" in r.text
    r = client.get("/ui/graph", params={"ds": "celegans", "method": "spectral"})
    assert r.status_code == 400 and "must be one of leiden, louvain" in r.text
    r = client.get("/ui/graph", params={"ds": "celegans", "min_synapses": 0})
    assert r.status_code == 400 and "min_synapses" in r.text


def test_downloads_round_trip(client):
    from neurolake.connectome.analysis import graph_stats, read_edge_list

    e = chemical()
    q = {"ds": "celegans", "version": 1, "min_synapses": 2, "seed": 4}
    r = client.get("/ui/graph/download", params={**q, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="celegans_v1_min2.csv"' in r.headers["content-disposition"]
    got = pd.read_csv(io.StringIO(r.text))
    names = dict(zip(_examples_data().celegans_neurons()["neuron_id"].astype(int),
                     _examples_data().celegans_neurons()["name"], strict=True))
    got = pd.DataFrame({"pre": got["pre"].map(names), "post": got["post"].map(names), "n_synapses": got["n_synapses"]})
    want = e[e["n_synapses"] >= 2]
    pd.testing.assert_frame_equal(got.sort_values(["pre", "post"]).reset_index(drop=True),
                                  want.sort_values(["pre", "post"]).reset_index(drop=True), check_dtype=False)
    r = client.get("/ui/graph/download", params={**q, "format": "parquet"})
    t = pq.read_table(io.BytesIO(r.content))
    assert t.num_rows == len(want)
    meta = json.loads(t.schema.metadata[b"neurolake"])
    assert (meta["datastack"], meta["version"], meta["min_synapses"]) == ("celegans", 1, 2)
    assert meta["communities"]["seed"] == 4 and meta["synapse_table"] == "chemical"
    assert t.schema.metadata[b"version"] == b"1"
    r = client.get("/ui/graph/download", params={**q, "format": "graphml"})
    g = read_edge_list(r.content, "x.graphml")
    assert len(g.edges) == len(want) and int(g.edges["n_synapses"].sum()) == want["n_synapses"].sum()
    assert "community" in g.nodes.columns and "cell_type" in g.nodes.columns
    assert graph_stats(g, 2)["edges"] == len(want)
    r = client.get("/ui/graph/download", params={**q, "format": "xlsx"})
    assert r.status_code == 400 and "csv, parquet, graphml" in unescape(r.text)  # an HTML error page
    assert client.get("/ui/graph/download", params={"format": "csv"}).status_code == 400
    assert client.get("/ui/graph/download", params={"ds": "empty", "format": "csv"}).status_code == 404


def test_upload_gives_the_same_stats_as_the_datastack(client):
    e = chemical()
    page = client.get("/ui/graph")
    csv = e.rename(columns={"n_synapses": "weight"}).to_csv(index=False).encode()
    r = client.post("/ui/graph/upload", data={"csrf": csrf_of(page.text)},
                    files={"file": ("celegans_chemical.csv", csv, "text/csv")}, follow_redirects=False)
    assert r.status_code == 303
    url = r.headers["location"]
    assert re.fullmatch(r"/ui/graph\?upload=[0-9a-f]{16}&.*", url)
    up = client.get(url)
    assert up.status_code == 200 and "celegans_chemical.csv" in up.text and "until it restarts" in up.text
    ds = client.get("/ui/graph", params={"ds": "celegans", "ct": "none"})  # without the one unconnected neuron
    assert stats_of(up.text) == stats_of(ds.text)
    assert int(stats_of(up.text)["edges"]) == len(e)
    # same view again from the shared URL, with other choices kept in the query string
    again = client.get(url + "&node=AVAL&min_synapses=3")
    assert "Neuron <strong>AVAL</strong>" in again.text and 'name="upload"' in again.text
    dl = client.get(url.replace("/ui/graph?", "/ui/graph/download?") + "&format=csv")
    back = pd.read_csv(io.StringIO(dl.text))
    assert len(back) == len(e) and back["n_synapses"].sum() == e["n_synapses"].sum()
    assert 'filename="upload_' in dl.headers["content-disposition"]
    # a GraphML upload of the datastack's own GraphML download
    gml = client.get("/ui/graph/download", params={"ds": "celegans", "version": 1, "format": "graphml"}).content
    r = client.post("/ui/graph/upload", data={"csrf": csrf_of(page.text)},
                    files={"file": ("celegans.graphml", gml, "application/graphml+xml")})
    assert r.status_code == 200 and stats_of(r.text) == stats_of(client.get("/ui/graph?ds=celegans").text)


def test_upload_refusals(client):
    page = client.get("/ui/graph")
    tok = csrf_of(page.text)
    r = client.post("/ui/graph/upload", files={"file": ("a.csv", b"pre,post\n1,2\n", "text/csv")})
    assert r.status_code == 403 and "CSRF" in unescape(r.text)
    r = client.post("/ui/graph/upload", data={"csrf": "forged"}, files={"file": ("a.csv", b"pre,post\n1,2\n")})
    assert r.status_code == 403
    cases = [(b"", 400, "is empty"), ((DATA / "celegans" / "NeuronConnect.csv").read_bytes(), 400, "Neuron 1"),
             (b"pre,post\n1,2\n3,4,5,6\n", 422, "not a readable CSV"),
             (b"<graphml><graph><node id='a'></graph>", 422, "not a readable GraphML")]
    for body, status, text in cases:
        name = "x.graphml" if body.startswith(b"<") else "x.csv"
        r = client.post("/ui/graph/upload", data={"csrf": tok}, files={"file": (name, body)})
        assert r.status_code == status and 'id="graph-error"' in r.text and text in unescape(r.text), (name, r.text[:300])
    r = client.get("/ui/graph", params={"upload": "0123456789abcdef"})
    assert r.status_code == 404 and "upload the file again" in r.text
    r = client.get("/ui/graph", params={"upload": "xyz"})
    assert r.status_code == 400


def test_under_auth_only_readable_datastacks(lake_path, tmp_path):
    from neurolake import open_lake
    from neurolake.server.app import create_app

    path = tmp_path / "lake"
    shutil.copytree(lake_path, path)
    lake = open_lake(path)
    lake.access.add_user("vera")
    lake.access.grant("vera", "celegans", "viewer")
    tok = lake.access.create_token("vera")["token"]
    lake.close()
    with TestClient(create_app(path, auth=True)) as c:
        r = c.get("/ui/graph", params={"ds": "celegans"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")  # no token: log in
        h = {"Authorization": f"Bearer {tok}"}
        r = c.get("/ui/graph", params={"ds": "celegans"}, headers=h)
        assert r.status_code == 200 and int(stats_of(r.text)["edges"]) == 2194
        r = c.get("/ui/graph", params={"ds": "pinky100"}, headers=h)  # private, no role
        assert r.status_code == 403 and 'id="graph-error"' in r.text and "may not read" in r.text
        assert "graph-stats" not in r.text
        assert c.get("/ui/graph/download", params={"ds": "pinky100", "format": "csv"}, headers=h).status_code == 403
        start = c.get("/ui/graph", headers=h).text
        assert "ds=celegans" in start and "ds=pinky100" not in start
        # a datastack that does not exist gets the same answer as a private one
        assert c.get("/ui/graph", params={"ds": "nope"}, headers=h).status_code == 403
        assert c.get("/ui/graph/download", params={"ds": "celegans", "format": "csv"}, headers=h).status_code == 200
        # uploads need a token and the CSRF token
        body = {"file": ("p.csv", (DATA / "pinky100" / "synapses.csv").read_bytes(), "text/csv")}
        r = c.post("/ui/graph/upload", data={"csrf": csrf_of(start)}, files=body, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")  # no token: log in
        r = c.post("/ui/graph/upload", data={"csrf": csrf_of(start)}, files=body, headers=h)
        assert r.status_code == 200 and int(stats_of(r.text)["synapses"]) == 1981
