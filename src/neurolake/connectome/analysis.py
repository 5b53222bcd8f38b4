"""Graph statistics, communities, distributions, ordered adjacency and edge-list files of a connectome.

The analysis behind the graph explorer (``/ui/graph``, :mod:`neurolake.web.graph`), usable on its own::

    from neurolake.connectome import Connectome
    from neurolake.connectome.analysis import graph_stats, communities, adjacency, read_edge_list
    c = lake["celegans"].connectome(version=1, cell_type_table="neurons")
    graph_stats(c, min_synapses=2)            # nodes, edges, density, reciprocity, clustering, components
    communities(c, method="leiden", resolution=1.0, seed=0)   # same seed → same partition
    adjacency(c, order_by="community")        # matrix + node order for a heatmap
    read_edge_list(open("edges.csv", "rb").read(), "edges.csv")   # an uploaded CSV or GraphML

Every function takes ``min_synapses``: only connections (ordered pairs pre → post) with at least that many
synapses count as edges. Node ids are the connectome's (root ids, or names of an uploaded edge list);
weights are synapse counts (``n_synapses``). Graph algorithms run on igraph (C core) and leidenalg
(V. A. Traag, L. Waltman, N. J. van Eck, "From Louvain to Leiden: guaranteeing well-connected
communities", Sci Rep 9:5233, 2019; Louvain: V. D. Blondel et al., J Stat Mech 2008:P10008).
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
from typing import Any

import numpy as np
import pandas as pd

from neurolake.connectome.graph import Connectome
from neurolake.errors import CorruptData, InvalidArgument, TooLarge

METHODS = ("leiden", "louvain")
ORDERS = ("community", "cell_type", "degree")
MAX_ADJACENCY_NODES = 2000
MAX_LAYOUT_NODES = 300
MAX_UPLOAD_ROWS = 1_000_000
PRE_NAMES = ("pre", "source", "from", "pre_pt_root_id")
POST_NAMES = ("post", "target", "to", "post_pt_root_id")
WEIGHT_NAMES = ("n_synapses", "weight", "synapses", "count")

_RNG_LOCK = threading.Lock()  # igraph's RNG is process-global: seeded calls take turns


# -- helpers ----------------------------------------------------------------------------------------
def _edges(c: Connectome, min_synapses: int) -> pd.DataFrame:
    if int(min_synapses) < 1:
        raise InvalidArgument(f"min_synapses {min_synapses!r} must be an integer ≥ 1", field="min_synapses",
                              value=min_synapses)
    return c._filtered(int(min_synapses))


def _index(c: Connectome, e: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in ``c.nodes.index``) of the edges' pre and post nodes."""
    idx = c.nodes.index
    return idx.get_indexer(e["pre"]), idx.get_indexer(e["post"])


def _directed(c: Connectome, min_synapses: int):
    import igraph as ig

    e = _edges(c, min_synapses)
    a, b = _index(c, e)
    g = ig.Graph(n=len(c.nodes), edges=np.column_stack([a, b]).tolist(), directed=True)
    g.es["weight"] = e["n_synapses"].astype(float).tolist()
    return g


def _undirected_weighted(c: Connectome, min_synapses: int):
    """The undirected simple graph: one edge per connected unordered pair (self loops dropped), weight = the
    synapses of both directions summed."""
    import igraph as ig

    e = _edges(c, min_synapses)
    a, b = _index(c, e)
    keep = a != b
    lo, hi, w = np.minimum(a, b)[keep], np.maximum(a, b)[keep], e["n_synapses"].to_numpy()[keep]
    und = pd.DataFrame({"a": lo, "b": hi, "w": w.astype(float)}).groupby(["a", "b"], sort=True)["w"].sum()
    g = ig.Graph(n=len(c.nodes), edges=list(und.index), directed=False)
    g.es["weight"] = und.to_list()
    return g


@contextlib.contextmanager
def _seeded(seed: int):
    """igraph's (process-global) RNG seeded with ``seed`` for the block, then back to Python's ``random``."""
    import igraph as ig

    with _RNG_LOCK:
        ig.set_random_number_generator(random.Random(int(seed)))
        try:
            yield
        finally:
            ig.set_random_number_generator(random)


def _py(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


# -- statistics -------------------------------------------------------------------------------------
def graph_stats(c: Connectome, min_synapses: int = 1) -> dict[str, Any]:
    """Whole-graph statistics of ``c`` counting connections with ≥ ``min_synapses`` synapses as edges.

    Returns a dict:

    - ``nodes``: every node of the connectome (N; with a cell-type table this includes typed cells without
      a connection); ``nodes_connected``: nodes with at least one edge at this threshold;
    - ``edges``: connected ordered pairs (E, self loops included), ``synapses``: their summed synapse count,
      ``self_loops``: pairs pre == post;
    - ``density``: directed density without self loops, (E − loops) / (N (N − 1)) (0 when N < 2);
    - ``reciprocity``: igraph's default reciprocity (``Graph.reciprocity(ignore_loops=True,
      mode="default")``): the fraction of non-loop directed edges a → b whose reverse b → a is also an edge;
    - ``clustering_global``: transitivity of the undirected simple graph (3 × triangles / connected
      triples; igraph ``transitivity_undirected``); ``clustering_avg_local``: the mean over nodes of the
      local clustering coefficient of that graph, nodes of degree < 2 counting as 0 (igraph
      ``transitivity_avglocal_undirected(mode="zero")``; Watts & Strogatz, Nature 393:440, 1998);
    - ``weak_components`` / ``largest_weak``: count and node count of the largest weakly connected
      component; ``strong_components`` / ``largest_strong``: the same for strongly connected components
      (isolated nodes are components of one node);
    - ``min_synapses``.

    Raises InvalidArgument for ``min_synapses`` < 1.
    """
    e = _edges(c, min_synapses)
    n = int(len(c.nodes))
    loops = int((e["pre"] == e["post"]).sum())
    n_edges = int(len(e))
    g = _directed(c, min_synapses)
    u = _undirected_weighted(c, min_synapses)
    weak = g.connected_components(mode="weak")
    strong = g.connected_components(mode="strong")
    connected = int(len(pd.unique(np.concatenate([e["pre"].to_numpy(), e["post"].to_numpy()])))) if n_edges else 0
    recip = g.reciprocity(ignore_loops=True, mode="default") if n_edges - loops > 0 else 0.0
    glob = u.transitivity_undirected(mode="zero") if u.ecount() else 0.0
    local = u.transitivity_avglocal_undirected(mode="zero") if u.ecount() else 0.0
    return {
        "nodes": n, "nodes_connected": connected, "edges": n_edges, "synapses": int(e["n_synapses"].sum()),
        "self_loops": loops,
        "density": (n_edges - loops) / (n * (n - 1)) if n > 1 else 0.0,
        "reciprocity": float(recip),
        "clustering_global": float(glob), "clustering_avg_local": float(local),
        "weak_components": len(weak), "largest_weak": max(weak.sizes()) if n else 0,
        "strong_components": len(strong), "largest_strong": max(strong.sizes()) if n else 0,
        "min_synapses": int(min_synapses),
    }


def communities(c: Connectome, method: str = "leiden", resolution: float = 1.0, seed: int = 0,
                min_synapses: int = 1) -> dict[str, Any]:
    """Communities of the undirected weighted graph (weight = synapses of both directions summed, self loops
    dropped; edges with ≥ ``min_synapses`` synapses).

    ``method``: ``"leiden"`` — ``leidenalg.find_partition`` with ``RBConfigurationVertexPartition`` (the
    Reichardt–Bornholdt configuration model, i.e. modularity with a resolution parameter γ), iterated until
    no improvement (``n_iterations=-1``) from RNG ``seed``; ``"louvain"`` — igraph's
    ``community_multilevel(weights, resolution)`` with igraph's RNG seeded by ``seed``. The same graph,
    method, resolution and seed give the same partition.

    Returns ``{"method", "resolution", "seed", "min_synapses", "membership": Series (node id → community,
    0 = the largest community, then by size, ties by first node), "n_communities", "sizes": list,
    "modularity": weighted Newman modularity at γ = ``resolution`` (igraph ``Graph.modularity``)}``.
    Isolated nodes form communities of one. Raises InvalidArgument (unknown method, resolution ≤ 0).
    """
    if method not in METHODS:
        raise InvalidArgument(f"community method {method!r} must be one of {', '.join(METHODS)}", field="method",
                              value=method, allowed=list(METHODS))
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        raise InvalidArgument(f"resolution {resolution!r} must be a number > 0", field="resolution") from None
    if not resolution > 0 or not np.isfinite(resolution):
        raise InvalidArgument(f"resolution {resolution!r} must be a finite number > 0", field="resolution",
                              value=resolution)
    seed = int(seed)
    g = _undirected_weighted(c, min_synapses)
    weights = g.es["weight"] if g.ecount() else None
    if g.vcount() == 0:
        raw: list[int] = []
    elif method == "leiden":
        import leidenalg

        part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=weights,
                                        resolution_parameter=resolution, seed=seed, n_iterations=-1)
        raw = list(part.membership)
    else:
        with _seeded(seed):
            raw = list(g.community_multilevel(weights=weights, resolution=resolution).membership)
    membership = _canonical(np.asarray(raw, dtype=np.int64))
    sizes = np.bincount(membership).tolist() if len(membership) else []
    q = g.modularity(membership.tolist(), weights=weights, resolution=resolution) if g.ecount() else 0.0
    return {"method": method, "resolution": resolution, "seed": seed, "min_synapses": int(min_synapses),
            "membership": pd.Series(membership, index=c.nodes.index, name="community"),
            "n_communities": len(sizes), "sizes": sizes, "modularity": float(q)}


def _canonical(m: np.ndarray) -> np.ndarray:
    """Renumber communities: largest first, ties by the position of their first node."""
    if not len(m):
        return m
    labels, first, counts = np.unique(m, return_index=True, return_counts=True)
    order = sorted(range(len(labels)), key=lambda i: (-counts[i], first[i]))
    new = np.empty(len(labels), dtype=np.int64)
    new[order] = np.arange(len(labels))
    return new[np.searchsorted(labels, m)]


def degree_distributions(c: Connectome, min_synapses: int = 1) -> dict[str, pd.DataFrame]:
    """Per node and as counts. ``{"per_node": DataFrame indexed by node (in_degree, out_degree = distinct
    partners; in_synapses, out_synapses), "in" / "out" / "total": DataFrame(degree, count) — the number of
    nodes with each degree}``. Self loops count once in both degrees."""
    _edges(c, min_synapses)
    d = c._degrees(int(min_synapses))
    out = {"per_node": d}
    for name, vals in (("in", d["in_degree"]), ("out", d["out_degree"]),
                       ("total", d["in_degree"] + d["out_degree"])):
        vc = vals.value_counts().sort_index()
        out[name] = pd.DataFrame({"degree": vc.index.to_numpy(dtype=np.int64), "count": vc.to_numpy()})
    return out


def weight_distribution(c: Connectome, min_synapses: int = 1) -> pd.DataFrame:
    """Connections per synapse count: DataFrame(``n_synapses``, ``connections``), ascending."""
    vc = _edges(c, min_synapses)["n_synapses"].value_counts().sort_index()
    return pd.DataFrame({"n_synapses": vc.index.to_numpy(dtype=np.int64), "connections": vc.to_numpy()})


def adjacency(c: Connectome, order_by: str = "community", min_synapses: int = 1,
              membership: pd.Series | None = None, max_nodes: int = MAX_ADJACENCY_NODES,
              include_isolated: bool = False, **community_args: Any) -> dict[str, Any]:
    """The weighted adjacency matrix (synapses pre row → post column) in an order for a heatmap.

    ``order_by``: ``"community"`` (``membership`` — a Series node → community as from :func:`communities`,
    computed with ``community_args`` when None), ``"cell_type"`` (node attribute ``cell_type``; nodes
    without one last, as ``"unknown"``) or ``"degree"`` (one group); within a group nodes go by total
    degree, highest first, then id. Nodes without an edge at this threshold are left out unless
    ``include_isolated``.

    Returns ``{"matrix": (n, n) float64 array, "order": list of node ids, "groups": list of each node's
    group label, "boundaries": list of (label, start, stop) row ranges, "order_by", "min_synapses"}``.
    Raises InvalidArgument (unknown order, no ``cell_type`` attribute), TooLarge (more than ``max_nodes``
    nodes: raise ``min_synapses`` or download the edges instead).
    """
    if order_by not in ORDERS:
        raise InvalidArgument(f"order {order_by!r} must be one of {', '.join(ORDERS)}", field="order",
                              value=order_by, allowed=list(ORDERS))
    e = _edges(c, min_synapses)
    deg = c._degrees(int(min_synapses))
    total = deg["in_degree"] + deg["out_degree"]
    nodes = c.nodes.index if include_isolated else c.nodes.index[total.to_numpy() > 0]
    if len(nodes) > max_nodes:
        raise TooLarge(f"the adjacency heatmap is drawn for at most {max_nodes} nodes; this graph has "
                       f"{len(nodes)} nodes with an edge of ≥ {min_synapses} synapses — raise min_synapses or "
                       "download the edges", limit=max_nodes, size=int(len(nodes)))
    if order_by == "community":
        if membership is None:
            membership = communities(c, min_synapses=min_synapses, **community_args)["membership"]
        groups = membership.reindex(nodes).to_numpy()
        labels = [f"community {int(x)}" for x in groups]
        key = groups.astype(np.int64)
    elif order_by == "cell_type":
        if "cell_type" not in c.nodes.columns:
            raise InvalidArgument("the connectome has no node attribute 'cell_type' (load it with a cell-type "
                                  f"table); attributes: {list(c.nodes.columns)}", field="order", value=order_by)
        ct = c.nodes["cell_type"].reindex(nodes)
        labels = [str(x) if not pd.isna(x) else "unknown" for x in ct]
        known = sorted({lab for lab, x in zip(labels, ct, strict=True) if not pd.isna(x)})
        rank = {lab: i for i, lab in enumerate(known)}
        key = np.array([rank.get(lab, len(known)) if not pd.isna(x) else len(known)
                        for lab, x in zip(labels, ct, strict=True)], dtype=np.int64)
    else:
        labels = ["all"] * len(nodes)
        key = np.zeros(len(nodes), dtype=np.int64)
    tdeg = total.reindex(nodes).to_numpy()
    frame = pd.DataFrame({"key": key, "deg": -tdeg, "pos": np.arange(len(nodes))})
    try:
        frame["id"] = np.asarray(nodes)
        frame = frame.sort_values(["key", "deg", "id"], kind="stable")
    except TypeError:  # mixed id types: position breaks ties
        frame = frame.sort_values(["key", "deg", "pos"], kind="stable")
    perm = frame["pos"].to_numpy()
    order = nodes[perm]
    labels = [labels[i] for i in perm]
    where = pd.Index(order)
    m = np.zeros((len(order), len(order)), dtype=np.float64)
    a, b = where.get_indexer(e["pre"]), where.get_indexer(e["post"])
    ok = (a >= 0) & (b >= 0)
    np.add.at(m, (a[ok], b[ok]), e["n_synapses"].to_numpy(dtype=np.float64)[ok])
    bounds, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            bounds.append((labels[start], start, i))
            start = i
    return {"matrix": m, "order": [_py(x) for x in order], "groups": labels, "boundaries": bounds,
            "order_by": order_by, "min_synapses": int(min_synapses)}


def layout(c: Connectome, min_synapses: int = 1, seed: int = 0, max_nodes: int = MAX_LAYOUT_NODES,
           include_isolated: bool = False) -> dict[str, Any]:
    """Node positions for a drawing of a small graph: igraph's Fruchterman–Reingold layout (weights = synapse
    counts) of the undirected graph, started from positions drawn with numpy's generator at ``seed`` and
    igraph's RNG seeded with ``seed`` (so the same seed gives the same drawing). Returns ``{"nodes": list of ids, "x": array, "y": array,
    "edges": DataFrame(pre, post, n_synapses)}``; coordinates are unitless. Raises TooLarge beyond
    ``max_nodes`` nodes."""
    e = _edges(c, min_synapses)
    deg = c._degrees(int(min_synapses))
    keep = (deg["in_degree"] + deg["out_degree"]).to_numpy() > 0
    nodes = c.nodes.index if include_isolated else c.nodes.index[keep]
    if len(nodes) > max_nodes:
        raise TooLarge(f"the network is drawn for at most {max_nodes} nodes; this graph has {len(nodes)} nodes "
                       f"with an edge of ≥ {min_synapses} synapses — raise min_synapses", limit=max_nodes,
                       size=int(len(nodes)))
    import igraph as ig

    where = pd.Index(nodes)
    a, b = where.get_indexer(e["pre"]), where.get_indexer(e["post"])
    g = ig.Graph(n=len(nodes), edges=np.column_stack([a, b]).tolist(), directed=False)
    g.es["weight"] = e["n_synapses"].astype(float).tolist()
    rng = np.random.default_rng(int(seed))
    start = rng.uniform(-1, 1, size=(len(nodes), 2)).tolist()
    if len(nodes):
        with _seeded(seed):
            pos = np.asarray(g.layout_fruchterman_reingold(weights="weight" if g.ecount() else None, seed=start,
                                                            niter=300).coords, dtype=np.float64)
    else:
        pos = np.zeros((0, 2))
    return {"nodes": [_py(x) for x in nodes], "x": pos[:, 0], "y": pos[:, 1],
            "edges": e[["pre", "post", "n_synapses"]].reset_index(drop=True)}


# -- uploaded edge lists -----------------------------------------------------------------------------
def read_edge_list(data: bytes, filename: str, max_rows: int = MAX_UPLOAD_ROWS) -> Connectome:
    """A connectome from an uploaded file: CSV (by content or a ``.csv``/``.tsv``/``.txt`` name) or GraphML
    (``.graphml``/``.xml`` or content starting with ``<``).

    CSV: a header row with a source column (``pre``, ``source``, ``from`` or ``pre_pt_root_id``; any
    case), a target column (``post``, ``target``, ``to``, ``post_pt_root_id``) and optionally a weight
    column (``n_synapses``, ``weight``, ``synapses``, ``count``: a non-negative integer synapse count;
    without one each row is one synapse). Rows of the same pair are summed; comma, tab or semicolon
    separated. Node ids are integers when every id is one, else strings.

    GraphML (parsed by networkx with Python's expat): node ids from the GraphML ``id``, edge weight from the
    ``n_synapses``/``weight``/``synapses``/``count`` attribute (default 1), node attributes kept (e.g.
    ``cell_type``); undirected graphs are read as one edge each way; parallel edges are summed.

    ``meta`` of the result: ``{"source": "upload", "filename", "format", "rows"}``. Raises InvalidArgument
    (empty file, no usable columns — the message names the columns found —, bad weights), CorruptData
    (a file that cannot be parsed), TooLarge (more than ``max_rows`` rows or edges).
    """
    name = (filename or "upload").strip() or "upload"
    if not data or not data.strip():
        raise InvalidArgument(f"the uploaded file {name!r} is empty", field="file", value=name)
    low = name.lower()
    head = data.lstrip()[:1]
    if low.endswith((".graphml", ".xml")) or (head == b"<" and not low.endswith((".csv", ".tsv", ".txt"))):
        return _read_graphml(data, name, max_rows)
    return _read_csv(data, name, max_rows)


def _ids(values: pd.Series) -> pd.Series:
    s = values.astype(str).str.strip()
    if len(s) and s.str.fullmatch(r"\d{1,19}").all():
        as_int = pd.to_numeric(s, errors="coerce")
        if as_int.notna().all() and as_int.max() < 2 ** 63:
            return as_int.astype(np.int64)
    return s


def _read_csv(data: bytes, name: str, max_rows: int) -> Connectome:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorruptData(f"{name!r} is not UTF-8 text ({e}); upload a CSV or GraphML file", field="file",
                          value=name) from None
    first = text.splitlines()[0] if text.splitlines() else ""
    sep = max((",", "\t", ";"), key=first.count)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, nrows=max_rows + 1, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise CorruptData(f"{name!r} is not a readable CSV: {str(e).strip()[:300]}", field="file",
                          value=name) from None
    if len(df) > max_rows:
        raise TooLarge(f"{name!r} has more than {max_rows} rows; uploads are limited to {max_rows} edges",
                       limit=max_rows)
    cols = {str(col).strip().lower(): col for col in df.columns}
    pre = next((cols[k] for k in PRE_NAMES if k in cols), None)
    post = next((cols[k] for k in POST_NAMES if k in cols), None)
    if pre is None or post is None:
        raise InvalidArgument(f"{name!r} needs a source column ({'/'.join(PRE_NAMES)}) and a target column "
                              f"({'/'.join(POST_NAMES)}); its columns are {[str(x) for x in df.columns]}",
                              field="file", columns=[str(x) for x in df.columns])
    weight = next((cols[k] for k in WEIGHT_NAMES if k in cols), None)
    df = df[[pre, post] + ([weight] if weight else [])]
    if df.empty:
        raise InvalidArgument(f"{name!r} has a header but no rows", field="file", value=name)
    if df[[pre, post]].isna().any().any():
        bad = int(df[[pre, post]].isna().any(axis=1).to_numpy().argmax()) + 2
        raise CorruptData(f"{name!r} line {bad}: the source or target is empty", field="file", line=bad)
    if weight:
        w = pd.to_numeric(df[weight].str.strip(), errors="coerce")
        badw = w.isna() | (w < 0) | (w != np.floor(w))
        if badw.any():
            i = int(badw.to_numpy().argmax())
            raise InvalidArgument(f"{name!r} line {i + 2}: weight {df[weight].iloc[i]!r} in column {weight!r} must "
                                  "be a non-negative integer (a synapse count)", field=str(weight),
                                  value=df[weight].iloc[i], line=i + 2)
        w = w.astype(np.int64)
    else:
        w = pd.Series(1, index=df.index, dtype=np.int64)
    both = _ids(pd.concat([df[pre], df[post]], ignore_index=True))
    edges = pd.DataFrame({"pre": both.iloc[:len(df)].to_numpy(), "post": both.iloc[len(df):].to_numpy(),
                          "n_synapses": w.to_numpy()})
    edges = edges[edges["n_synapses"] > 0]
    meta = {"source": "upload", "filename": name, "format": "csv", "rows": int(len(df)),
            "columns": f"{pre},{post}" + (f",{weight}" if weight else "")}
    return Connectome.from_edges(edges, meta=meta)


def _read_graphml(data: bytes, name: str, max_rows: int) -> Connectome:
    # Parsed by networkx (Python's expat, which refuses entity-expansion bombs), not igraph: igraph's C
    # GraphML reader aborted the whole process on a malformed upload after earlier parse errors.
    import xml.etree.ElementTree as ET

    import networkx as nx

    try:
        g = nx.read_graphml(io.BytesIO(data))
    except (ET.ParseError, nx.NetworkXError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CorruptData(f"{name!r} is not a readable GraphML file: {str(e).strip()[:300] or type(e).__name__}",
                          field="file", value=name) from None
    if g.number_of_edges() > max_rows or g.number_of_nodes() > max_rows:
        raise TooLarge(f"{name!r} has {g.number_of_nodes()} nodes and {g.number_of_edges()} edges; uploads are "
                       f"limited to {max_rows}", limit=max_rows)
    if g.number_of_nodes() == 0:
        raise InvalidArgument(f"GraphML file {name!r} has no nodes", field="file", value=name)
    raw = list(g.nodes)
    ids = _ids(pd.Series([str(x) for x in raw]))
    if ids.duplicated().any():
        raise CorruptData(f"{name!r}: node id {ids[ids.duplicated()].iloc[0]!r} appears twice", field="file")
    idof = dict(zip(raw, ids.tolist(), strict=True))
    rows = []
    for a, b, d in g.edges(data=True):
        wname = next((k for k in WEIGHT_NAMES if k in d), None)
        w = 1 if wname is None else d[wname]
        try:
            wf = float(w)
        except (TypeError, ValueError):
            wf = float("nan")
        if not (wf >= 0 and wf == np.floor(wf)):
            raise InvalidArgument(f"{name!r}: edge {a!r} → {b!r} has {wname} {w!r}; weights must be non-negative "
                                  "integer synapse counts", field=str(wname), value=str(w))
        rows.append((idof[a], idof[b], int(wf)))
        if not g.is_directed() and a != b:
            rows.append((idof[b], idof[a], int(wf)))
    edges = pd.DataFrame(rows, columns=["pre", "post", "n_synapses"])
    if edges.empty:
        edges = pd.DataFrame({"pre": ids.iloc[:0].to_numpy(), "post": ids.iloc[:0].to_numpy(),
                              "n_synapses": np.zeros(0, dtype=np.int64)})
    edges = edges[edges["n_synapses"] > 0]
    attrs = pd.DataFrame([dict(d) for _, d in g.nodes(data=True)], index=pd.Index(ids.to_numpy(), name="node"))
    meta = {"source": "upload", "filename": name, "format": "graphml", "rows": int(g.number_of_edges()),
            "directed": bool(g.is_directed())}
    return Connectome.from_edges(edges, nodes=attrs, meta=meta)
