"""In-memory index of one supervoxel graph: the region adjacency graph, active edges, roots, history.

The model (a simplified PyChunkedGraph, Dorkenwald et al. 2022, without the chunk hierarchy):

- supervoxels are the nodes of a region adjacency graph (RAG); every edge has an affinity in [0, 1];
- an edge is *active* when the agglomeration joins its two supervoxels; a **root** is a connected
  component of the active edges. Root ids are immutable: every edit expires the roots it touched and
  creates new ones;
- a merge activates one edge (a new, "user" edge when the two supervoxels are not adjacent); a split
  deactivates the edges of a minimum s-t cut inside the root; undo / redo / rollback set edges back.

The state is rebuilt from the immutable base files plus the operation log in the catalog
(deterministically: new roots are the components of the touched roots, ordered by their smallest
supervoxel), so every process that opens the lake sees the same roots. Supervoxels are addressed by
their index in the sorted id array internally; the public API speaks uint64 ids.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

from neurolake.errors import CorruptData, InvalidArgument, NotFound

CAPACITY_SCALE = 1_000_000  # affinities (floats in [0, 1]) become integer capacities for max-flow


@dataclass
class RootInfo:
    """One root id: when it was created / expired (operation sequence numbers and times)."""

    root: int
    created_seq: int
    created_ts: dt.datetime
    members: np.ndarray | None = None  # sorted supervoxel indices; None = look up in the base table
    expired_seq: int | None = None
    expired_ts: dt.datetime | None = None
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)


@dataclass
class Plan:
    """What an edit will do, computed before anything is written."""

    edges: list[tuple[int, int, float, bool]]  # (sv index a, sv index b, affinity, active)
    old_roots: list[int]
    components: list[np.ndarray]  # sorted sv indices of each new root, ordered by smallest index


class GraphState:
    """Supervoxels, RAG edges with affinities and active flags, current roots and their history."""

    def __init__(self, sv_ids: np.ndarray, base_root: np.ndarray, edge_a: np.ndarray, edge_b: np.ndarray,
                 affinity: np.ndarray, active: np.ndarray, created: dt.datetime,
                 bbox: np.ndarray | None = None) -> None:
        self.sv_ids = np.ascontiguousarray(sv_ids, dtype=np.uint64)
        n = self.n = len(self.sv_ids)
        self.first = int(self.sv_ids[0]) if n else 0
        self.dense = bool(n) and int(self.sv_ids[-1]) - self.first + 1 == n
        self._hash_index = None
        self.base_root = np.ascontiguousarray(base_root, dtype=np.uint64)
        self.cur_root = self.base_root.copy()
        self.bbox = bbox  # (N, 6) x0, x1, y0, y1, z0, z1 voxels at mip 0 (half-open) or None
        ia = np.searchsorted(self.sv_ids, np.asarray(edge_a, dtype=np.uint64)).astype(np.int64)
        ib = np.searchsorted(self.sv_ids, np.asarray(edge_b, dtype=np.uint64)).astype(np.int64)
        u, v = np.minimum(ia, ib), np.maximum(ia, ib)
        key = u * n + v
        order = np.argsort(key, kind="stable")
        self.eu, self.ev, self.ekey = u[order], v[order], key[order]
        self.aff = np.asarray(affinity, dtype=np.float32)[order]
        self.active = np.asarray(active, dtype=bool)[order].copy()
        m = len(self.eu)
        # CSR adjacency: for each supervoxel the ids of its incident edges
        ends = np.concatenate([self.eu, self.ev])
        eids = np.concatenate([np.arange(m), np.arange(m)])
        o = np.argsort(ends, kind="stable")
        self.adj_e = eids[o]
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(ends, minlength=n), out=self.indptr[1:])
        # user edges between supervoxels that are not adjacent in the RAG: (u, v) -> [affinity, active]
        self.extra: dict[tuple[int, int], list] = {}
        self._extra_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # base roots: membership by sorting once
        self.base_order = np.argsort(self.base_root, kind="stable")
        self.base_sorted = self.base_root[self.base_order]
        self.created = created
        self.roots: dict[int, RootInfo] = {}  # roots that took part in an operation
        self.seq = 0
        self.op_ts: list[dt.datetime] = [created]  # op_ts[s] = time of operation s (0 = creation)
        self._hist: list[tuple[int, np.ndarray, int]] = []  # (seq, sv indices, new root)
        self._hist_index: tuple | None = None
        self.lock = threading.RLock()  # readers hold it so they never see an operation half applied

    # -- ids ----------------------------------------------------------------------------------------
    def index(self, sv_ids, field_name: str = "supervoxel_ids", missing: str = "error") -> np.ndarray:
        """Indices of supervoxel ids; ``missing="error"`` raises NotFound, ``"mask"`` returns -1 for unknown."""
        ids = np.asarray(sv_ids, dtype=np.uint64).ravel()
        if self.dense and self.n:
            # ids are one contiguous range (e.g. watershed labels 1..N): the index is an offset
            pos = ids.astype(np.int64) - self.first
            ok = (pos >= 0) & (pos < self.n)
        elif self.n == 0:
            pos = np.zeros(len(ids), dtype=np.int64)
            ok = np.zeros(len(ids), dtype=bool)
        elif len(ids) >= 4096:
            # many ids: a hash table over the sorted ids (pandas' khash index, built once), several
            # times faster than a binary search per id on large graphs
            if self._hash_index is None:
                import pandas as pd

                self._hash_index = pd.Index(self.sv_ids)
            pos = self._hash_index.get_indexer(ids).astype(np.int64)
            ok = pos >= 0
            pos = np.where(ok, pos, 0)
        else:
            pos = np.searchsorted(self.sv_ids, ids)
            np.minimum(pos, self.n - 1, out=pos)
            ok = self.sv_ids[pos] == ids
        if not ok.all():
            if missing == "error":
                bad = ids[~ok]
                raise NotFound(f"supervoxel id(s) {bad[:10].tolist()} do not exist in this segmentation",
                               field=field_name, unknown=[int(b) for b in bad[:100]])
            pos = np.where(ok, pos, -1)
        return pos.astype(np.int64, copy=False)

    def is_base_root(self, root: int) -> bool:
        i = np.searchsorted(self.base_sorted, np.uint64(root))
        return bool(i < self.n and self.base_sorted[i] == np.uint64(root))

    def root_info(self, root: int) -> RootInfo:
        """Creation/expiry of ``root``. Raises NotFound for an id that never was a root, InvalidArgument for
        one outside uint64."""
        root = int(root)
        if not 0 <= root < 2**64:
            raise InvalidArgument(f"root id {root} is not a uint64 id (0 .. 2**64 - 1)", field="root_id",
                                  value=str(root)[:100])
        info = self.roots.get(root)
        if info is not None:
            return info
        if self.is_base_root(root):
            return RootInfo(root=root, created_seq=0, created_ts=self.created)
        raise NotFound(f"root id {root} does not exist in this segmentation", field="root_id", value=str(root))

    def members(self, root: int) -> np.ndarray:
        """Sorted supervoxel indices of ``root`` (any root, current or expired)."""
        info = self.root_info(root)
        if info.members is not None:
            return info.members
        lo = np.searchsorted(self.base_sorted, np.uint64(root), side="left")
        hi = np.searchsorted(self.base_sorted, np.uint64(root), side="right")
        return self.base_order[lo:hi]  # sorted: the argsort is stable

    def is_current(self, root: int) -> bool:
        return self.root_info(root).expired_seq is None

    # -- time ---------------------------------------------------------------------------------------
    def seq_at(self, timestamp: dt.datetime | None) -> int:
        """The newest operation sequence number at ``timestamp`` (None = now)."""
        if timestamp is None:
            return self.seq
        if timestamp < self.created:
            raise InvalidArgument(f"timestamp {timestamp.isoformat()} is before this segmentation was created "
                                  f"({self.created.isoformat()})", field="timestamp", value=timestamp.isoformat(),
                                  allowed=f">= {self.created.isoformat()}")
        return bisect.bisect_right(self.op_ts, timestamp) - 1

    def roots_of_indices(self, idx: np.ndarray, seq: int | None = None) -> np.ndarray:
        """Root id of each supervoxel index (-1 → 0) after operation ``seq`` (None = latest)."""
        if self.n == 0:  # a graph without supervoxels: every index is -1 (unknown)
            return np.zeros(len(idx), dtype=np.uint64)
        valid = idx >= 0
        safe = np.where(valid, idx, 0)
        if seq is None or seq >= self.seq:
            out = self.cur_root[safe]
        else:
            out = self.base_root[safe].copy()
            keys, roots, stride = self._history()
            if len(keys):
                q = safe.astype(np.int64) * stride + seq
                p = np.searchsorted(keys, q, side="right") - 1
                hit = p >= 0
                pp = np.where(hit, p, 0)
                hit &= (keys[pp] // stride) == safe
                out = np.where(hit, roots[pp], out)
        if not valid.all():
            out = np.where(valid, out, np.uint64(0))
        return out

    def _history(self):
        if self._hist_index is None or self._hist_index[0] != self.seq:
            stride = self.seq + 1
            if self._hist:
                sv = np.concatenate([h[1] for h in self._hist]).astype(np.int64)
                sq = np.concatenate([np.full(len(h[1]), h[0], dtype=np.int64) for h in self._hist])
                rt = np.concatenate([np.full(len(h[1]), h[2], dtype=np.uint64) for h in self._hist])
                keys = sv * stride + sq
                o = np.argsort(keys, kind="stable")
                self._hist_index = (self.seq, keys[o], rt[o], stride)
            else:
                self._hist_index = (self.seq, np.zeros(0, np.int64), np.zeros(0, np.uint64), stride)
        return self._hist_index[1:]

    # -- edges --------------------------------------------------------------------------------------
    def edge_id(self, u: int, v: int) -> int:
        """Index of the RAG edge between supervoxel indices u, v, or -1."""
        a, b = min(u, v), max(u, v)
        k = a * self.n + b
        i = int(np.searchsorted(self.ekey, k))
        return i if i < len(self.ekey) and self.ekey[i] == k else -1

    def edge_state(self, u: int, v: int) -> tuple[float, bool] | None:
        e = self.edge_id(u, v)
        if e >= 0:
            return float(self.aff[e]), bool(self.active[e])
        x = self.extra.get((min(u, v), max(u, v)))
        return (float(x[0]), bool(x[1])) if x is not None else None

    def _set_edge(self, u: int, v: int, affinity: float, active: bool) -> None:
        e = self.edge_id(u, v)
        if e >= 0:
            self.active[e] = active
        else:
            self.extra[(min(u, v), max(u, v))] = [float(affinity), bool(active)]
            self._extra_arrays = None

    def _extra(self):
        if self._extra_arrays is None:
            items = [(k[0], k[1], x[0]) for k, x in self.extra.items() if x[1]]
            if items:
                a = np.array(items, dtype=np.float64)
                self._extra_arrays = (a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.float32))
            else:
                z = np.zeros(0, np.int64)
                self._extra_arrays = (z, z, np.zeros(0, np.float32))
        return self._extra_arrays

    def active_edges_within(self, svs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Active edges with both ends in ``svs`` (sorted indices): local endpoints and affinities."""
        starts, ends = self.indptr[svs], self.indptr[svs + 1]
        counts = ends - starts
        total = int(counts.sum())
        if total:
            offs = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
            owner = np.repeat(svs, counts)
            e = self.adj_e[offs]
            # each edge is listed under both ends: keep it once, under its smaller end, if active
            keep = (self.eu[e] == owner) & self.active[e]
            e = e[keep]
            u, v, w = self.eu[e], self.ev[e], self.aff[e]
        else:
            u = v = np.zeros(0, np.int64)
            w = np.zeros(0, np.float32)
        xu, xv, xw = self._extra()
        if len(xu):
            u, v, w = np.concatenate([u, xu]), np.concatenate([v, xv]), np.concatenate([w, xw])
        n = len(svs)
        if n > 4096 and n * 16 > self.n:
            # large sets: a dense lookup table beats binary search
            local = np.full(self.n, -1, dtype=np.int64)
            local[svs] = np.arange(n)
            lu, lv = local[u], local[v]
            ok = (lu >= 0) & (lv >= 0)
            return lu[ok], lv[ok], w[ok]
        lu, lv = np.searchsorted(svs, u), np.searchsorted(svs, v)
        ok = (lu < n) & (lv < n)
        ok[ok] &= (svs[lu[ok]] == u[ok]) & (svs[lv[ok]] == v[ok])
        return lu[ok], lv[ok], w[ok]

    def components(self, svs: np.ndarray) -> list[np.ndarray]:
        """Connected components (active edges) of the supervoxel indices ``svs``, by smallest index."""
        svs = np.sort(svs, kind="stable")
        n = len(svs)
        lu, lv, _ = self.active_edges_within(svs)
        g = sp.coo_matrix((np.ones(len(lu), dtype=np.int8), (lu, lv)), shape=(n, n)).tocsr()
        k, labels = connected_components(g, directed=False)
        order = np.argsort(labels, kind="stable")  # within a label, increasing index
        bounds = np.cumsum(np.bincount(labels, minlength=k))[:-1]
        comps = np.split(svs[order], bounds)
        comps.sort(key=lambda c: int(c[0]))
        return comps

    # -- edits --------------------------------------------------------------------------------------
    def plan(self, edges: list[tuple[int, int, float, bool]], merge_only: bool | None = None) -> Plan:
        """Components after setting ``edges`` (sv indices), without changing the state."""
        if not edges:
            raise InvalidArgument("the operation changes no edge", field="edges")
        ends = np.array([[e[0], e[1]] for e in edges], dtype=np.int64).ravel()
        old = [int(r) for r in np.unique(self.cur_root[ends])]
        if merge_only is None:
            merge_only = all(e[3] for e in edges)
        if merge_only:
            # activating edges only joins whole roots: union-find over the old roots
            parent = {r: r for r in old}

            def find(r):
                while parent[r] != r:
                    parent[r] = parent[parent[r]]
                    r = parent[r]
                return r

            for a, b, _, _ in edges:
                ra, rb = find(int(self.cur_root[a])), find(int(self.cur_root[b]))
                if ra != rb:
                    parent[ra] = rb
            groups: dict[int, list[int]] = {}
            for r in old:
                groups.setdefault(find(r), []).append(r)
            # sorted runs merged by a stable (timsort) sort: linear for a few runs
            comps = [np.sort(np.concatenate([self.members(r) for r in g]), kind="stable") for g in groups.values()]
            comps.sort(key=lambda c: int(c[0]))
            return Plan(edges=list(edges), old_roots=old, components=comps)
        saved = [(a, b, self.edge_state(a, b)) for a, b, _, _ in edges]
        try:
            for a, b, w, act in edges:
                self._set_edge(a, b, w, act)
            svs = np.concatenate([self.members(r) for r in old])
            comps = self.components(svs)
        finally:
            for a, b, st in saved:
                if st is None:
                    self.extra.pop((min(a, b), max(a, b)), None)
                    self._extra_arrays = None
                else:
                    self._set_edge(a, b, st[0], st[1])
        return Plan(edges=list(edges), old_roots=old, components=comps)

    def apply(self, plan: Plan, seq: int, ts: dt.datetime, new_roots: list[int]) -> None:
        """Make ``plan`` the current state as operation ``seq`` at ``ts`` with the given new root ids."""
        with self.lock:
            self._apply(plan, seq, ts, new_roots)

    def _apply(self, plan: Plan, seq: int, ts: dt.datetime, new_roots: list[int]) -> None:
        if seq != self.seq + 1:
            raise CorruptData(f"operation {seq} applied after {self.seq}", seq=seq)
        if len(new_roots) != len(plan.components):
            raise CorruptData(f"operation {seq} recorded {len(new_roots)} new roots but the graph gives "
                              f"{len(plan.components)}", seq=seq)
        for a, b, w, act in plan.edges:
            self._set_edge(a, b, w, act)
        for r in plan.old_roots:
            info = self.roots.get(r)
            if info is None:
                info = self.roots[r] = RootInfo(root=r, created_seq=0, created_ts=self.created)
            info.expired_seq, info.expired_ts = seq, ts
            info.children = [int(x) for x in new_roots]
        for r, comp in zip(new_roots, plan.components, strict=True):
            self.roots[int(r)] = RootInfo(root=int(r), created_seq=seq, created_ts=ts, members=comp,
                                          parents=list(plan.old_roots))
            self.cur_root[comp] = np.uint64(r)
            self._hist.append((seq, comp, int(r)))
        self.seq = seq
        self.op_ts.append(ts)

    # -- split --------------------------------------------------------------------------------------
    def min_cut(self, root: int, sources: np.ndarray, sinks: np.ndarray) -> list[tuple[int, int, float, bool]]:
        """Edges (as deactivations) of a minimum s-t cut between ``sources`` and ``sinks`` inside ``root``.

        Capacities are the edge affinities (scaled to integers); the maximum flow is computed with
        Dinic's algorithm (``scipy.sparse.csgraph.maximum_flow``), the cut is read from the residual
        graph (the edges leaving the set reachable from the sources), as PyChunkedGraph's
        ``cutting.py`` does with graph-tool's Boykov–Kolmogorov solver.
        """
        return self._cut(root, sources, sinks)[0]

    def split_plan(self, root: int, sources: np.ndarray, sinks: np.ndarray) -> Plan:
        """The plan of a split: ``plan(min_cut(root, sources, sinks))`` computed from one pass over the
        root's active edges (the components are those of the root's edges minus the cut, ordered and
        sorted exactly as :meth:`plan` gives them, so replaying the logged edges yields the same roots)."""
        edges, svs, lu, lv, cut = self._cut(root, sources, sinks)
        if not edges:
            raise InvalidArgument("the operation changes no edge", field="edges")
        n = len(svs)
        keep = ~cut
        g = sp.coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (lu[keep], lv[keep])), shape=(n, n)).tocsr()
        k, labels = connected_components(g, directed=False)
        order = np.argsort(labels, kind="stable")  # within a label, increasing index
        comps = np.split(svs[order], np.cumsum(np.bincount(labels, minlength=k))[:-1])
        comps.sort(key=lambda c: int(c[0]))
        return Plan(edges=edges, old_roots=[int(root)], components=comps)

    def _cut(self, root: int, sources: np.ndarray, sinks: np.ndarray):
        """(cut edges as deactivations, root members, local active edge ends lu / lv, cut mask of them)."""
        svs = self.members(root)
        n = len(svs)
        lu, lv, w = self.active_edges_within(svs)
        ls, lt = np.searchsorted(svs, sources), np.searchsorted(svs, sinks)
        cap = np.maximum(1, np.round(w.astype(np.float64) * CAPACITY_SCALE)).astype(np.int64)
        big = int(min(cap.sum() + 1, 2**30))
        cap = np.minimum(cap, 2**30).astype(np.int32)
        s_node, t_node = n, n + 1
        rows = np.concatenate([lu, lv, np.full(len(ls), s_node), lt])
        cols = np.concatenate([lv, lu, ls, np.full(len(lt), t_node)])
        data = np.concatenate([cap, cap, np.full(len(ls) + len(lt), big, dtype=np.int32)]).astype(np.int32)
        g = sp.csr_matrix((data, (rows, cols)), shape=(n + 2, n + 2))
        g.sum_duplicates()
        flow = maximum_flow(g, s_node, t_node, method="dinic")
        residual = (g - flow.flow).tocsr()
        residual.data[residual.data < 0] = 0
        residual.eliminate_zeros()
        reach = breadth_first_order(residual, s_node, directed=True, return_predecessors=False)
        side = np.zeros(n + 2, dtype=bool)
        side[reach] = True
        if side[t_node]:
            raise InvalidArgument("sources and sinks cannot be separated", field="sinks")
        cut = side[lu] != side[lv]
        edges = [(int(svs[a]), int(svs[b]), float(x), False) for a, b, x in zip(lu[cut], lv[cut], w[cut], strict=True)]
        return edges, svs, lu, lv, cut
