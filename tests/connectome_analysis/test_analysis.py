"""neurolake.connectome.analysis on real connectomes: C. elegans (Varshney et al. 2011, data/celegans) and
MICrONS pinky100 (data/pinky100). Expected numbers are computed here with pandas / networkx straight from
the source files, independently of igraph."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from neurolake.connectome import Connectome
from neurolake.connectome.analysis import (
    adjacency,
    communities,
    degree_distributions,
    graph_stats,
    layout,
    read_edge_list,
    weight_distribution,
)
from neurolake.errors import CorruptData, InvalidArgument, TooLarge

DATA = Path(__file__).resolve().parents[2] / "data"


def celegans_chemical() -> pd.DataFrame:
    """Chemical connections of NeuronConnect.csv (S/Sp rows, names upper-cased): pre, post, n_synapses."""
    w = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str})
    s = w[w["Type"].isin(["S", "Sp"])]
    e = pd.DataFrame({"pre": s["Neuron 1"].str.upper(), "post": s["Neuron 2"].str.upper(), "n_synapses": s["Nbr"]})
    return e.groupby(["pre", "post"], as_index=False)["n_synapses"].sum()


@pytest.fixture(scope="module")
def worm() -> Connectome:
    return Connectome.from_edges(celegans_chemical())


@pytest.fixture(scope="module")
def pinky() -> Connectome:
    s = pd.read_csv(DATA / "pinky100" / "synapses.csv").astype(np.uint64)
    return Connectome.from_synapses(s, pre="pre", post="post", size=None)


def _nx(edges: pd.DataFrame) -> nx.DiGraph:
    g = nx.DiGraph()
    for a, b, n in edges[["pre", "post", "n_synapses"]].itertuples(index=False):
        g.add_edge(a, b, weight=n)
    return g


@pytest.mark.parametrize("min_synapses", [1, 3])
def test_stats_match_pandas_and_networkx(worm, min_synapses):
    e = celegans_chemical()
    e = e[e["n_synapses"] >= min_synapses]
    st = graph_stats(worm, min_synapses)
    n = len(set(celegans_chemical()["pre"]) | set(celegans_chemical()["post"]))
    assert st["nodes"] == n == 279
    assert st["nodes_connected"] == len(set(e["pre"]) | set(e["post"]))
    assert st["edges"] == len(e) and st["synapses"] == int(e["n_synapses"].sum())
    if min_synapses == 1:
        assert (st["edges"], st["synapses"]) == (2194, 6394)  # examples/04: 2194 connections, 6394 synapses
    loops = int((e["pre"] == e["post"]).sum())
    assert st["self_loops"] == loops
    assert st["density"] == pytest.approx((len(e) - loops) / (n * (n - 1)))
    nl = e[e["pre"] != e["post"]]
    pairs = set(zip(nl["pre"], nl["post"], strict=True))
    assert st["reciprocity"] == pytest.approx(sum((b, a) in pairs for a, b in pairs) / len(pairs))
    g = _nx(e)
    g.add_nodes_from(worm.nodes.index)
    u = nx.Graph(g.to_undirected())
    u.remove_edges_from(nx.selfloop_edges(u))
    assert st["clustering_global"] == pytest.approx(nx.transitivity(u))
    assert st["clustering_avg_local"] == pytest.approx(nx.average_clustering(u))  # degree < 2 count as 0
    weak = list(nx.weakly_connected_components(g))
    strong = list(nx.strongly_connected_components(g))
    assert (st["weak_components"], st["largest_weak"]) == (len(weak), max(map(len, weak)))
    assert (st["strong_components"], st["largest_strong"]) == (len(strong), max(map(len, strong)))


def test_stats_of_pinky100(pinky):
    s = pd.read_csv(DATA / "pinky100" / "synapses.csv")
    st = graph_stats(pinky)
    assert st["nodes"] == len(set(s["pre"]) | set(s["post"])) == 335
    assert st["edges"] == len(s.drop_duplicates()) == 1752 and st["synapses"] == len(s) == 1981


def test_min_synapses_must_be_positive(worm):
    with pytest.raises(InvalidArgument, match="min_synapses"):
        graph_stats(worm, 0)


def test_leiden_is_reproducible_and_its_modularity_is_newmans(worm):
    a = communities(worm, "leiden", resolution=1.0, seed=0)
    b = communities(worm, "leiden", resolution=1.0, seed=0)
    assert a["membership"].equals(b["membership"]) and a["n_communities"] == b["n_communities"] > 1
    assert (a["seed"], a["resolution"], a["method"]) == (0, 1.0, "leiden")
    assert list(a["membership"].index) == list(worm.nodes.index)
    assert sum(a["sizes"]) == len(worm.nodes) and a["sizes"] == sorted(a["sizes"], reverse=True)
    # modularity of the undirected graph, weight = synapses both ways (networkx, independent of igraph)
    e = celegans_chemical()
    e = e[e["pre"] != e["post"]]
    u = nx.Graph()
    u.add_nodes_from(worm.nodes.index)
    for x, y, n in e.itertuples(index=False):
        w = u.get_edge_data(x, y, {"weight": 0})["weight"]
        u.add_edge(x, y, weight=w + n)
    groups = [set(a["membership"].index[a["membership"] == k]) for k in range(a["n_communities"])]
    assert a["modularity"] == pytest.approx(nx.community.modularity(u, groups, weight="weight"))
    hi = communities(worm, "leiden", resolution=2.0, seed=0)
    assert hi["n_communities"] > a["n_communities"] and hi["resolution"] == 2.0
    assert hi["modularity"] == pytest.approx(nx.community.modularity(
        u, [set(hi["membership"].index[hi["membership"] == k]) for k in range(hi["n_communities"])],
        weight="weight", resolution=2.0))


def test_louvain_is_reproducible_for_a_seed(worm):
    a = communities(worm, "louvain", seed=5)
    b = communities(worm, "louvain", seed=5)
    assert a["membership"].equals(b["membership"]) and a["method"] == "louvain" and a["modularity"] > 0.3


def test_community_arguments_are_checked(worm):
    with pytest.raises(InvalidArgument, match="method"):
        communities(worm, "spectral")
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(InvalidArgument, match="resolution"):
            communities(worm, resolution=bad)


def test_distributions(worm):
    e = celegans_chemical()
    d = degree_distributions(worm)
    for side, col in (("in", "post"), ("out", "pre")):
        assert d[side]["count"].sum() == len(worm.nodes)
        expect = e.groupby(col).size().reindex(worm.nodes.index, fill_value=0).value_counts().sort_index()
        assert d[side]["count"].tolist() == expect.tolist() and d[side]["degree"].tolist() == expect.index.tolist()
    w = weight_distribution(worm)
    assert w["connections"].sum() == len(e) and (w["n_synapses"] * w["connections"]).sum() == e["n_synapses"].sum()
    assert w["n_synapses"].is_monotonic_increasing


@pytest.mark.parametrize("order", ["community", "cell_type", "degree"])
def test_adjacency_orders(worm, order):
    from importlib import import_module

    c = worm.with_nodes(pd.DataFrame({"cell_type": [n[:3] for n in worm.nodes.index]}, index=worm.nodes.index))
    adj = adjacency(c, order, seed=0)
    m, nodes = adj["matrix"], adj["order"]
    e = celegans_chemical()
    assert sorted(nodes) == sorted(set(e["pre"]) | set(e["post"])) and m.shape == (len(nodes), len(nodes))
    assert m.sum() == e["n_synapses"].sum()
    i, j = nodes.index("AVAL"), nodes.index("AVAR")
    assert m[i, j] == e[(e["pre"] == "AVAL") & (e["post"] == "AVAR")]["n_synapses"].sum()
    # groups are contiguous blocks covering every row
    assert sum(stop - start for _, start, stop in adj["boundaries"]) == len(nodes)
    assert len({g for g, _, _ in adj["boundaries"]}) == len(adj["boundaries"])
    if order == "cell_type":
        assert [g for g, _, _ in adj["boundaries"]] == sorted({n[:3] for n in nodes})
    if order == "community":
        mem = communities(c, seed=0)["membership"]
        assert [mem[n] for n in nodes] == sorted(mem[n] for n in nodes)
    assert import_module("neurolake.connectome.analysis").ORDERS


def test_adjacency_refusals(worm, pinky):
    with pytest.raises(TooLarge, match="at most 100 nodes"):
        adjacency(worm, "degree", max_nodes=100)
    with pytest.raises(InvalidArgument, match="cell_type"):
        adjacency(pinky, "cell_type")
    with pytest.raises(InvalidArgument, match="order"):
        adjacency(worm, "alphabet")


def test_layout_is_deterministic_and_capped(worm, pinky):
    a, b = layout(worm, seed=1), layout(worm, seed=1)
    assert np.array_equal(a["x"], b["x"]) and len(a["nodes"]) == 279 and len(a["edges"]) == 2194
    assert not np.array_equal(a["x"], layout(worm, seed=2)["x"])
    with pytest.raises(TooLarge, match="at most 300 nodes"):
        layout(pinky, max_nodes=300) if len(pinky.nodes) > 300 else layout(worm, max_nodes=100)


# -- uploads ---------------------------------------------------------------------------------------------
def test_csv_upload_gives_the_same_graph(worm):
    e = celegans_chemical()
    data = e.rename(columns={"pre": "Source", "post": "Target", "n_synapses": "weight"}).to_csv(index=False).encode()
    c = read_edge_list(data, "worm.csv")
    assert graph_stats(c) == graph_stats(worm)
    assert c.meta["format"] == "csv" and c.meta["rows"] == len(e)
    # one row per synapse, tab-separated, no weight column
    rows = e.loc[e.index.repeat(e["n_synapses"]), ["pre", "post"]]
    c2 = read_edge_list(rows.to_csv(index=False, sep="\t").encode(), "worm.tsv")
    assert graph_stats(c2) == graph_stats(worm)


def test_integer_ids_stay_integers(pinky):
    s = pd.read_csv(DATA / "pinky100" / "synapses.csv")
    c = read_edge_list((DATA / "pinky100" / "synapses.csv").read_bytes(), "synapses.csv")
    assert c.edges["pre"].dtype.kind == "i" and set(c.nodes.index) == set(s["pre"]) | set(s["post"])
    assert graph_stats(c) == graph_stats(pinky)


def test_graphml_round_trip(worm, tmp_path):
    c = worm.with_nodes(pd.DataFrame({"cell_type": [n[:3] for n in worm.nodes.index]}, index=worm.nodes.index))
    p = c.to_graphml(tmp_path / "worm.graphml")
    back = read_edge_list(p.read_bytes(), "worm.graphml")
    assert back.meta["format"] == "graphml"
    pd.testing.assert_frame_equal(back.edges[["pre", "post", "n_synapses"]],
                                  c.edges[["pre", "post", "n_synapses"]].astype({"n_synapses": "int64"}),
                                  check_dtype=False)
    assert back.nodes.loc["AVAL", "cell_type"] == "AVA" and graph_stats(back) == graph_stats(c)
    # an undirected GraphML graph: each edge both ways
    und = tmp_path / "und.graphml"
    und.write_text('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                   '<key id="w" for="edge" attr.name="weight" attr.type="double"/>'
                   '<graph edgedefault="undirected"><node id="a"/><node id="b"/><node id="c"/>'
                   '<edge source="a" target="b"><data key="w">3</data></edge></graph></graphml>')
    u = read_edge_list(und.read_bytes(), "und.graphml")
    assert sorted(map(tuple, u.edges[["pre", "post", "n_synapses"]].values.tolist())) == [("a", "b", 3), ("b", "a", 3)]
    assert len(u.nodes) == 3  # the isolated node is kept


def test_bad_uploads_are_refused_clearly(worm):
    with pytest.raises(InvalidArgument, match="empty"):
        read_edge_list(b"", "x.csv")
    with pytest.raises(InvalidArgument, match="empty"):
        read_edge_list(b"  \n", "x.csv")
    with pytest.raises(InvalidArgument, match=r"columns are \['Neuron 1', 'Neuron 2', 'Type', 'Nbr'\]"):
        read_edge_list((DATA / "celegans" / "NeuronConnect.csv").read_bytes(), "NeuronConnect.csv")
    with pytest.raises(CorruptData, match="not a readable CSV"):
        read_edge_list(b"pre,post\n1,2\n3,4,5,6\n", "x.csv")
    with pytest.raises(CorruptData, match="not UTF-8"):
        read_edge_list(b"pre,post\n\xff\xfe,1\n", "x.csv")
    with pytest.raises(InvalidArgument, match="no rows"):
        read_edge_list(b"pre,post\n", "x.csv")
    with pytest.raises(InvalidArgument, match=r"line 3: weight '-2'"):
        read_edge_list(b"pre,post,weight\na,b,1\nb,a,-2\n", "x.csv")
    with pytest.raises(InvalidArgument, match=r"line 2: weight '1.5'"):
        read_edge_list(b"pre,post,weight\na,b,1.5\n", "x.csv")
    with pytest.raises(CorruptData, match="line 3: the source or target is empty"):
        read_edge_list(b"pre,post\na,b\n,c\n", "x.csv")
    with pytest.raises(TooLarge, match="more than 10 rows"):
        read_edge_list(b"pre,post\n" + b"a,b\n" * 11, "x.csv", max_rows=10)
    with pytest.raises(CorruptData, match="not a readable GraphML"):
        read_edge_list(b"<graphml><graph><node id='a'></graph>", "x.graphml")
    with pytest.raises(CorruptData, match="not a readable GraphML"):
        read_edge_list(b"<html><body>not a graph</body></html>", "page.xml")
    with pytest.raises(InvalidArgument, match="no nodes"):
        read_edge_list(b'<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                       b'<graph edgedefault="directed"></graph></graphml>', "empty.graphml")
