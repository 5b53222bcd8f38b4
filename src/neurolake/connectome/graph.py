"""The connectome as a directed, weighted graph: pre root → post root, with node attributes.

Built from a synapse table (one row per synapse, e.g. a materialization version's synapse table) or
from an edge list (one row per connection with a weight). Edge attributes: ``n_synapses`` (count) and
``size_sum`` (summed synapse size, when sizes are known). Node attributes come from cell-type tables
(``cell_type`` etc.). Graph algorithms run on igraph (C core) — triad census (the 16 directed
3-node motif classes of Holland & Leinhardt, MAN labels), shortest paths — with networkx and
igraph objects and Parquet / GraphML files as exports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurolake.base.results import Result
from neurolake.errors import InvalidArgument, NotFound

TRIADS = ("003", "012", "102", "021D", "021U", "021C", "111D", "111U", "030T", "030C", "201", "120D", "120U",
          "120C", "210", "300")


class Connectome:
    """A directed weighted graph of neurons (root ids or names).

    ``edges``: DataFrame with columns ``pre``, ``post``, ``n_synapses``, ``size_sum`` (one row per
    connected ordered pair); ``nodes``: DataFrame indexed by node id with attribute columns (at least
    every node that appears in an edge).
    """

    def __init__(self, edges: pd.DataFrame, nodes: pd.DataFrame | None = None, meta: dict | None = None) -> None:
        missing = {"pre", "post", "n_synapses"} - set(edges.columns)
        if missing:
            raise InvalidArgument(f"edges lack columns {sorted(missing)}", field="edges")
        e = edges.copy()
        if "size_sum" not in e.columns:
            e["size_sum"] = np.nan
        self.edges = e.reset_index(drop=True)
        ids = pd.Index(pd.unique(np.concatenate([e["pre"].to_numpy(), e["post"].to_numpy()])))
        if nodes is None:
            nodes = pd.DataFrame(index=ids)
        else:
            nodes = nodes.copy()
            extra = ids.difference(nodes.index)
            if len(extra):
                nodes = pd.concat([nodes, pd.DataFrame(index=extra)])
        nodes.index.name = "node"
        self.nodes = nodes
        self.meta = dict(meta or {})
        self._ig = None

    def __repr__(self) -> str:
        return f"<Connectome nodes={len(self.nodes)} edges={len(self.edges)} synapses={self.n_synapses}>"

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_synapses(cls, synapses: pd.DataFrame, pre: str = "pre_pt_root_id", post: str = "post_pt_root_id",
                      size: str | None = "size", drop_zero: bool = True, nodes: pd.DataFrame | None = None,
                      meta: dict | None = None) -> Connectome:
        """Aggregate one-row-per-synapse ``synapses`` into edges (count and summed ``size``).

        Rows with id 0 (background / unbound) on either side are dropped when ``drop_zero``.
        Raises InvalidArgument when columns are missing.
        """
        for c in (pre, post):
            if c not in synapses.columns:
                raise InvalidArgument(f"synapse table has no column {c!r}; columns: {list(synapses.columns)}",
                                      field="pre" if c == pre else "post", value=c)
        df = pd.DataFrame({"pre": synapses[pre].to_numpy(), "post": synapses[post].to_numpy()})
        df["size"] = synapses[size].to_numpy(dtype=np.float64) if size and size in synapses.columns else np.nan
        if drop_zero and df["pre"].dtype.kind in "iu":
            df = df[(df["pre"] != 0) & (df["post"] != 0)]
        g = df.groupby(["pre", "post"], sort=True).agg(n_synapses=("size", "size"), size_sum=("size", "sum"))
        if not (size and size in synapses.columns):
            g["size_sum"] = np.nan
        return cls(g.reset_index(), nodes=nodes, meta=meta)

    @classmethod
    def from_edges(cls, edges: pd.DataFrame, pre: str = "pre", post: str = "post", weight: str = "n_synapses",
                   nodes: pd.DataFrame | None = None, meta: dict | None = None) -> Connectome:
        """An edge list (one row per connection, ``weight`` = synapse count); duplicate pairs are summed."""
        for c in (pre, post, weight):
            if c not in edges.columns:
                raise InvalidArgument(f"edge list has no column {c!r}; columns: {list(edges.columns)}", field=c)
        df = pd.DataFrame({"pre": edges[pre].to_numpy(), "post": edges[post].to_numpy(),
                           "n_synapses": edges[weight].to_numpy()})
        g = df.groupby(["pre", "post"], sort=True)["n_synapses"].sum().reset_index()
        return cls(g, nodes=nodes, meta=meta)

    @classmethod
    def from_version(cls, lake, datastack: str, version: int | None, synapse_table: str,
                     cell_type_table: str | None = None, cell_type_column: str = "cell_type",
                     size: str | None = "size") -> Connectome:
        """The connectome of materialization ``version`` (None = newest valid) from ``synapse_table``
        (columns ``pre_pt_root_id``, ``post_pt_root_id``, ``size``), with node attribute ``cell_type``
        from ``cell_type_table`` (column ``pt_root_id``). Raises NotFound, VersionExpired."""
        from neurolake.materialize import get_version, query_version

        v = get_version(lake, datastack, version, allow_expired=False)
        syn = query_version(lake, datastack, v["version"], synapse_table,
                            columns=["pre_pt_root_id", "post_pt_root_id"] + ([size] if size else [])).df()
        nodes = None
        if cell_type_table:
            ct = query_version(lake, datastack, v["version"], cell_type_table).df()
            nodes = _cell_type_nodes(ct, cell_type_column)
        meta = {"datastack": datastack, "version": v["version"], "timestamp": v["timestamp"],
                "synapse_table": synapse_table, "cell_type_table": cell_type_table}
        syn = syn.astype({"pre_pt_root_id": "uint64", "post_pt_root_id": "uint64"})
        return cls.from_synapses(syn, size=size, nodes=nodes, meta=meta)

    @classmethod
    def from_live(cls, lake, datastack: str, synapse_table: str, timestamp: Any = None,
                  cell_type_table: str | None = None, cell_type_column: str = "cell_type") -> Connectome:
        """The connectome at ``timestamp`` (None = now) without a materialized version (live query)."""
        from neurolake.materialize import live_query

        syn = live_query(lake, datastack, synapse_table, timestamp).df()
        nodes = None
        if cell_type_table:
            nodes = _cell_type_nodes(live_query(lake, datastack, cell_type_table, timestamp).df(), cell_type_column)
        syn = syn.astype({"pre_pt_root_id": "uint64", "post_pt_root_id": "uint64"})
        return cls.from_synapses(syn, nodes=nodes, meta={"datastack": datastack, "timestamp": str(timestamp),
                                                         "synapse_table": synapse_table})

    def with_nodes(self, nodes: pd.DataFrame, on: str | None = None) -> Connectome:
        """A copy with node attributes from ``nodes`` (indexed by node id, or with id column ``on``)."""
        n = nodes.set_index(on) if on else nodes
        merged = self.nodes.drop(columns=[c for c in n.columns if c in self.nodes.columns]).join(n, how="outer")
        return Connectome(self.edges, merged, self.meta)

    # -- basic properties -------------------------------------------------------------------------
    @property
    def n_synapses(self) -> int:
        return int(self.edges["n_synapses"].sum())

    def _check_node(self, node: Any) -> Any:
        try:
            present = node in self.nodes.index
        except (OverflowError, TypeError):  # e.g. an int beyond uint64 against a uint64 index
            raise InvalidArgument(f"node {str(node)[:80]!r} is not a valid id", field="root_id",
                                  value=str(node)[:100]) from None
        if not present:
            try:
                alt = type(self.nodes.index[0])(node) if len(self.nodes.index) else node
            except (TypeError, ValueError):
                alt = node
            if alt in self.nodes.index:
                return alt
            raise NotFound(f"node {node!r} is not in the connectome", field="root_id", value=str(node))
        return node

    def _filtered(self, min_synapses: int = 1, min_size: float | None = None) -> pd.DataFrame:
        e = self.edges
        m = e["n_synapses"] >= min_synapses
        if min_size is not None:
            m &= e["size_sum"] >= min_size
        return e[m]

    # -- queries ----------------------------------------------------------------------------------
    def _result(self, df: pd.DataFrame, what: str, **params: Any) -> Result:
        meta = {k: self.meta.get(k) for k in ("datastack", "version", "timestamp", "synapse_table")}
        return Result(df, {**meta, "table": f"connectome.{what}", "filters": params or None})

    def upstream(self, node: Any, min_synapses: int = 1, min_size: float | None = None) -> Result:
        """Presynaptic partners of ``node``: columns ``pre``, ``n_synapses``, ``size_sum`` (+ node
        attributes), strongest first, as a :class:`~neurolake.base.results.Result`. Raises NotFound."""
        node = self._check_node(node)
        e = self._filtered(min_synapses, min_size)
        out = e[e["post"] == node][["pre", "n_synapses", "size_sum"]]
        out = out.join(self.nodes, on="pre")
        out = out.sort_values(["n_synapses", "pre"], ascending=[False, True]).reset_index(drop=True)
        return self._result(out, "upstream", node=_py(node), min_synapses=min_synapses, min_size=min_size)

    def downstream(self, node: Any, min_synapses: int = 1, min_size: float | None = None) -> Result:
        """Postsynaptic partners of ``node`` (columns ``post``, ``n_synapses``, ``size_sum``), strongest first,
        as a :class:`~neurolake.base.results.Result`. Raises NotFound."""
        node = self._check_node(node)
        e = self._filtered(min_synapses, min_size)
        out = e[e["pre"] == node][["post", "n_synapses", "size_sum"]]
        out = out.join(self.nodes, on="post")
        out = out.sort_values(["n_synapses", "post"], ascending=[False, True]).reset_index(drop=True)
        return self._result(out, "downstream", node=_py(node), min_synapses=min_synapses, min_size=min_size)

    def connectivity_matrix(self, group_by: str | None = "cell_type", weight: str = "n_synapses",
                            min_synapses: int = 1, missing: str = "unknown") -> pd.DataFrame:
        """Summed ``weight`` from row group (pre) to column group (post); ``group_by`` a node attribute
        (None = per node). Nodes without the attribute fall into group ``missing``. A matrix (a pandas
        DataFrame indexed by pre group, one column per post group), not a table, so not a Result."""
        if weight not in ("n_synapses", "size_sum", "connections"):
            raise InvalidArgument(f"weight {weight!r} must be n_synapses, size_sum or connections", field="weight")
        e = self._filtered(min_synapses).copy()
        if weight == "connections":
            e["connections"] = 1
        if group_by is None:
            gp, gq = e["pre"], e["post"]
        else:
            if group_by not in self.nodes.columns:
                raise InvalidArgument(f"node attribute {group_by!r} does not exist; attributes: "
                                      f"{list(self.nodes.columns)}", field="group_by", value=group_by)
            attr = self.nodes[group_by].astype(object).where(self.nodes[group_by].notna(), missing)
            gp, gq = e["pre"].map(attr), e["post"].map(attr)
        m = pd.DataFrame({"pre": gp.to_numpy(), "post": gq.to_numpy(), "w": e[weight].to_numpy()})
        return m.pivot_table(index="pre", columns="post", values="w", aggfunc="sum", fill_value=0)

    def reciprocal_pairs(self, min_synapses: int = 1) -> Result:
        """Pairs (a, b), a < b, connected both ways: columns ``a``, ``b``, ``n_ab``, ``n_ba`` (a Result)."""
        return self._result(self._reciprocal(min_synapses), "reciprocal_pairs", min_synapses=min_synapses)

    def _reciprocal(self, min_synapses: int) -> pd.DataFrame:
        e = self._filtered(min_synapses)[["pre", "post", "n_synapses"]]
        e = e[e["pre"] != e["post"]]
        m = e.merge(e, left_on=["pre", "post"], right_on=["post", "pre"], suffixes=("_ab", "_ba"))
        m = m[m["pre_ab"] < m["post_ab"]]
        return pd.DataFrame({"a": m["pre_ab"].to_numpy(), "b": m["post_ab"].to_numpy(),
                             "n_ab": m["n_synapses_ab"].to_numpy(), "n_ba": m["n_synapses_ba"].to_numpy()})

    def degrees(self, min_synapses: int = 1) -> Result:
        """Per node (column ``node``): ``in_degree``, ``out_degree`` (partners), ``in_synapses``,
        ``out_synapses`` (a Result)."""
        return self._result(self._degrees(min_synapses).reset_index(), "degrees", min_synapses=min_synapses)

    def _degrees(self, min_synapses: int) -> pd.DataFrame:
        e = self._filtered(min_synapses)
        e = e[e["pre"] != e["post"]] if False else e
        d = pd.DataFrame(index=self.nodes.index)
        d["in_degree"] = e.groupby("post").size().reindex(d.index, fill_value=0)
        d["out_degree"] = e.groupby("pre").size().reindex(d.index, fill_value=0)
        d["in_synapses"] = e.groupby("post")["n_synapses"].sum().reindex(d.index, fill_value=0)
        d["out_synapses"] = e.groupby("pre")["n_synapses"].sum().reindex(d.index, fill_value=0)
        return d

    def degree_distribution(self, direction: str = "out", min_synapses: int = 1) -> Result:
        """Counts of nodes per degree: columns ``degree``, ``count``; ``direction`` in | out | total (a Result)."""
        if direction not in ("in", "out", "total"):
            raise InvalidArgument(f"direction {direction!r} must be in, out or total", field="direction")
        d = self._degrees(min_synapses)
        vals = d["in_degree"] + d["out_degree"] if direction == "total" else d[f"{direction}_degree"]
        c = vals.value_counts().sort_index()
        return self._result(pd.DataFrame({"degree": c.index.to_numpy(), "count": c.to_numpy()}),
                            "degree_distribution", direction=direction, min_synapses=min_synapses)

    def motifs(self, min_synapses: int = 1) -> dict[str, int]:
        """Counts of the 16 directed 3-node motif classes (triad census, MAN labels ``"003"`` … ``"300"``),
        computed by igraph on the graph of edges with at least ``min_synapses`` synapses (self-loops ignored)."""
        g = self.to_igraph(min_synapses=min_synapses)
        g = g.simplify(multiple=True, loops=True)
        tc = g.triad_census()
        return {name: int(tc[i]) for i, name in enumerate(TRIADS)}

    def shortest_path(self, source: Any, target: Any, weighted: bool = False, min_synapses: int = 1) -> list:
        """Node ids along a shortest directed path from ``source`` to ``target`` (fewest hops, or with
        ``weighted`` the smallest sum of 1 / n_synapses). Empty list when unreachable. Raises NotFound."""
        source, target = self._check_node(source), self._check_node(target)
        g = self.to_igraph(min_synapses=min_synapses)
        names = g.vs["name"]
        pos = {n: i for i, n in enumerate(names)}
        w = [1.0 / x for x in g.es["n_synapses"]] if weighted else None
        paths = g.get_shortest_paths(pos[source], to=pos[target], weights=w, mode="out", output="vpath")
        p = paths[0] if paths else []
        return [names[i] for i in p]

    def summary(self) -> dict[str, Any]:
        return {"nodes": int(len(self.nodes)), "edges": int(len(self.edges)), "synapses": self.n_synapses,
                "reciprocal_pairs": int(len(self._reciprocal(1))), **self.meta}

    # -- exports ----------------------------------------------------------------------------------
    def to_networkx(self, min_synapses: int = 1):
        """A ``networkx.DiGraph`` with node attributes and edge attributes ``n_synapses``, ``size_sum``."""
        import networkx as nx

        g = nx.DiGraph()
        for node, attrs in self.nodes.iterrows():
            g.add_node(_py(node), **{k: _py(v) for k, v in attrs.items() if not _isna(v)})
        e = self._filtered(min_synapses)
        for a, b, n, s in zip(e["pre"], e["post"], e["n_synapses"], e["size_sum"], strict=True):
            attrs = {"n_synapses": int(n)}
            if not _isna(s):
                attrs["size_sum"] = float(s)
            g.add_edge(_py(a), _py(b), **attrs)
        return g

    def to_igraph(self, min_synapses: int = 1):
        """An ``igraph.Graph`` (directed) with vertex attribute ``name`` (node id) and node attributes."""
        import igraph as ig

        names = list(self.nodes.index)
        pos = {n: i for i, n in enumerate(names)}
        e = self._filtered(min_synapses)
        g = ig.Graph(n=len(names), edges=list(zip(e["pre"].map(pos), e["post"].map(pos), strict=True)), directed=True)
        g.vs["name"] = [_py(n) for n in names]
        for c in self.nodes.columns:
            g.vs[c] = [_py(v) for v in self.nodes[c]]
        g.es["n_synapses"] = [int(x) for x in e["n_synapses"]]
        g.es["size_sum"] = [float(x) for x in e["size_sum"]]
        return g

    def to_parquet(self, path: str | Path) -> Path:
        """The edge list as Parquet (columns pre, post, n_synapses, size_sum); node ids keep their dtype."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        tab = pa.Table.from_pandas(self.edges, preserve_index=False)
        meta = {k.encode(): str(v).encode() for k, v in self.meta.items()}
        pq.write_table(tab.replace_schema_metadata({**(tab.schema.metadata or {}), **meta}), path)
        return path

    def to_graphml(self, path: str | Path) -> Path:
        """GraphML (via networkx); uint64 node ids are written as strings."""
        import networkx as nx

        g = self.to_networkx()
        g = nx.relabel_nodes(g, {n: str(n) for n in g.nodes})
        for _, d in g.nodes(data=True):
            for k, v in list(d.items()):
                if not isinstance(v, str | int | float | bool):
                    d[k] = str(v)
        nx.write_graphml(g, str(path))
        return Path(path)


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _py(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _cell_type_nodes(ct: pd.DataFrame, column: str) -> pd.DataFrame:
    root = "pt_root_id" if "pt_root_id" in ct.columns else None
    if root is None or column not in ct.columns:
        raise InvalidArgument(f"cell type table needs columns pt_root_id and {column!r}; has {list(ct.columns)}",
                              field="cell_type_table")
    d = ct[[root, column]].copy()
    d = d[d[root].astype("uint64") != 0]
    d[root] = d[root].astype("uint64")
    # one type per root: the most frequent label (ties: alphabetical)
    d = (d.groupby([root, column]).size().reset_index(name="n")
         .sort_values([root, "n", column], ascending=[True, False, True]).drop_duplicates(root))
    return d.set_index(root)[[column]]
