"""The proofreadable segmentation of a datastack: creation, edits, lookups, lineage.

Obtain one with :func:`neurolake.proofreading.segmentation` (``seg = segmentation(lake, "ds")``).
All supervoxel and root ids are uint64 (0 = background). Timestamps are timezone-aware UTC
datetimes (naive ones are read as UTC; unix seconds and ISO-8601 strings are accepted too).

Sources: the data model and the API names follow CAVE's PyChunkedGraph (Dorkenwald et al. 2022,
"CAVE: Connectome Annotation Versioning Engine"; github.com/seung-lab/PyChunkedGraph): merges add an
edge, splits remove the edges of a minimum cut, every edit creates new immutable root ids, undo and
redo are new operations, lineage is a graph of root ids.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import bindparam, insert, select, update

from neurolake.base.integers import INT64_MAX, UINT64_MAX, whole
from neurolake.base.names import not_found
from neurolake.base.time import parse_timestamp
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from neurolake.proofreading.models import Operation, Root, SegmentationGraph
from neurolake.proofreading.state import GraphState
from neurolake.volumes.models import Datastack

ROOT_BASE = 1 << 52  # root ids are ROOT_BASE + n: never equal to a supervoxel id, exact as JSON doubles
MAX_SV = ROOT_BASE - 1
AGGLOMERATIONS = ("each", "mapping", "threshold", "edges")
USER_EDGE_AFFINITY = 1.0
_CRASH_HOOK = None  # tests: called inside the edit transaction just before commit (e.g. to kill the process)
_ACK_HOOK = None  # tests: called with the operation dict after its commit, before the edit returns
# SQLite: PRAGMA synchronous of the edit transactions (None = the connection's, FULL). NORMAL in WAL mode: a
# committed edit survives the process being killed (SIGKILL, OOM) but the newest ones may roll back after a power
# loss or OS crash (https://www.sqlite.org/pragma.html#pragma_synchronous, https://www.sqlite.org/wal.html)
EDIT_SYNCHRONOUS: str | None = "NORMAL"
# Core tables of the edit hot path (one transaction of plain INSERT/UPDATE statements per edit, no ORM objects)
_GRAPHS = SegmentationGraph.__table__
_OPS = Operation.__table__
_ROOTS = Root.__table__
# graph ``b_gid`` while it still belongs to datastack ``b_ds`` (a replaced graph or datastack matches no row)
_THIS_GRAPH = (_GRAPHS.c.id == bindparam("b_gid")) & (_GRAPHS.c.datastack_id == select(Datastack.id).where(
    Datastack.name == bindparam("b_ds")).scalar_subquery())
_GRAPH_NOW = select(_GRAPHS.c.last_seq, _GRAPHS.c.base_path, _GRAPHS.c.created).where(_THIS_GRAPH)
# the edit's first statement: takes the write lock (SQLite: the database's; PostgreSQL: the graph row's)
_BUMP = (update(_GRAPHS).where(_THIS_GRAPH).values(last_seq=_GRAPHS.c.last_seq + 1)
         .returning(_GRAPHS.c.last_seq, _GRAPHS.c.next_root, _GRAPHS.c.base_path, _GRAPHS.c.created))
_NEXT_ROOT = update(_GRAPHS).where(_GRAPHS.c.id == bindparam("b_gid")).values(next_root=bindparam("b_next"))
_INSERT_OP = insert(_OPS)
_INSERT_ROOTS = insert(_ROOTS)
_EXPIRE = (update(_ROOTS).where(_ROOTS.c.graph_id == bindparam("b_gid"),
                                _ROOTS.c.root_id.in_(bindparam("b_roots", expanding=True)))
           .values(expired_seq=bindparam("b_seq")))


def _ids(values: Any, field: str) -> np.ndarray:
    """(N,) uint64 ids of a list, array or single value; InvalidArgument naming ``field`` for anything that is
    not a whole number in 0 .. 2**64 - 1 (:func:`neurolake.base.integers.whole`)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "u":
        return values.astype(np.uint64, copy=False).ravel()
    if not isinstance(values, np.ndarray) and isinstance(values, list | tuple) and values and all(
            type(v) is int for v in values):
        values = np.asarray(values) if -(2**63) <= min(values) and max(values) < 2**63 else values  # fast path
    if isinstance(values, np.ndarray) and values.dtype.kind == "i":
        if values.size and values.min() < 0:
            raise InvalidArgument(f"{field} must be non-negative integer ids, got {values.min()}", field=field)
        return values.astype(np.uint64).ravel()
    try:
        items = list(np.asarray(values, dtype=object).ravel())  # nested lists flatten, as arrays do
    except (TypeError, ValueError):  # ragged nesting
        items = None
    if items is None or any(isinstance(v, list | tuple | dict | np.ndarray) for v in items):
        raise InvalidArgument(f"{field} must be a flat list of non-negative integer ids, got {values!r}"[:300],
                              field=field)
    try:
        return np.array([whole(v, field, 0, UINT64_MAX) for v in items], dtype=np.uint64)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field} must be non-negative integer ids below 2**64, got "
                              f"{exc.detail.get('value')!r}"[:300], field=field, value=exc.detail.get("value")) from None


class _Cache:
    """Per-lake cache of loaded graph states (one per datastack), shared by threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.states: dict[int, tuple[str, GraphState]] = {}  # graph id -> (base path, state)
        self.locks: dict[int, threading.RLock] = {}
        # datastack name -> graph row id; every use re-checks it in SQL (a replaced graph or datastack
        # makes the check find no row, and the id is looked up again)
        self.gids: dict[str, int] = {}


def _cache(lake) -> _Cache:
    return lake.state("proofreading.graphs", _Cache)


def _ds_id(s, datastack: str) -> int:
    ds = s.scalar(select(Datastack.id).where(Datastack.name == datastack))
    if ds is None:
        raise not_found("datastack", datastack, s.scalars(select(Datastack.name).order_by(Datastack.name)).all())
    return ds


# -------------------------------------------------------------------------------------------------
# creation
# -------------------------------------------------------------------------------------------------
def create_segmentation(lake, datastack: str, *, layer: str | None = None, supervoxels: Any = None,
                        edges: Any = None, affinities: Any = None, mapping: Any = None,
                        agglomeration: str | None = None, threshold: float = 0.5, boundary_layer: str | None = None,
                        overwrite: bool = False, author: str | None = None) -> Segmentation:
    """Make ``datastack`` proofreadable: store its supervoxels, region adjacency graph and initial roots.

    - ``layer``: the supervoxel layer (a segmentation layer of the datastack). When given, supervoxel
      ids, per-supervoxel bounding boxes and the RAG (with contact areas; affinities from
      ``boundary_layer`` when given, see :func:`neurolake.proofreading.rag.region_adjacency`) are
      computed from it, unless ``supervoxels`` / ``edges`` are passed explicitly.
    - ``supervoxels``: (N,) uint64 ids (0 is ignored); ``edges``: (M, 2) supervoxel id pairs of the RAG,
      ``affinities``: (M,) floats in [0, 1] (default 1.0), or a DataFrame with columns ``sv_a, sv_b,
      affinity``.
    - initial agglomeration (``agglomeration``): ``"each"`` (every supervoxel its own root), ``"mapping"``
      (``mapping`` = dict / DataFrame ``supervoxel_id → object``; supervoxels of one object that the RAG
      does not connect are joined by extra edges of affinity 0), ``"threshold"`` (edges with affinity ≥
      ``threshold`` are active; roots are the connected components) or ``"edges"`` (all given edges
      active). Default: ``"mapping"`` when a mapping is given, else ``"threshold"`` when edges are
      known, else ``"each"``.

    Raises NotFound (datastack, layer), AlreadyExists (unless ``overwrite``), InvalidArgument.
    """
    from neurolake.provenance import record

    if agglomeration is None:
        agglomeration = "mapping" if mapping is not None else ("threshold" if (edges is not None or layer) else "each")
    if agglomeration not in AGGLOMERATIONS:
        raise InvalidArgument(f"agglomeration {agglomeration!r} is not one of {', '.join(AGGLOMERATIONS)}",
                              field="agglomeration", value=agglomeration, allowed=list(AGGLOMERATIONS))
    if agglomeration == "mapping" and mapping is None:
        raise InvalidArgument("agglomeration 'mapping' needs a mapping (supervoxel id -> object)", field="mapping")
    if not 0.0 <= float(threshold) <= 1.0:
        raise InvalidArgument(f"threshold {threshold} must be within [0, 1]", field="threshold", value=threshold)
    if layer is None and supervoxels is None:
        raise InvalidArgument("a proofreadable segmentation needs supervoxels: name the supervoxel layer (layer) "
                              "or give the supervoxel ids (supervoxels)", field="layer")
    lake.datastack(datastack)  # NotFound
    with lake.catalog.session() as s:
        dsid = _ds_id(s, datastack)
        row = s.scalar(select(SegmentationGraph).where(SegmentationGraph.datastack_id == dsid))
        if row is not None and not overwrite:
            raise AlreadyExists(f"datastack {datastack!r} already has a proofreadable segmentation "
                                f"(layer {row.layer!r}); use overwrite to replace it", datastack=datastack)
    bbox = None
    if layer is not None:
        la = lake.layer(datastack, layer)
        if la.layer_type != "segmentation":
            raise InvalidArgument(f"layer {datastack}/{layer} is a {la.layer_type} layer; supervoxels need a "
                                  "segmentation layer", field="layer", value=layer)
        from neurolake.proofreading.rag import region_adjacency

        boundary = lake.layer(datastack, boundary_layer) if boundary_layer else None
        rag = region_adjacency(la, boundary=boundary)
        if supervoxels is None:
            supervoxels = rag.supervoxels
            bbox = rag.bbox
        if edges is None:
            edges = np.stack([rag.sv_a, rag.sv_b], axis=1) if len(rag.sv_a) else np.zeros((0, 2), np.uint64)
            affinities = rag.affinity
    sv_ids, base_root, ea, eb, aff, active = _build_base(supervoxels, edges, affinities, mapping, agglomeration,
                                                         threshold)
    if bbox is not None and len(bbox) != len(sv_ids):
        bbox = None
    # write the immutable base files to a new folder, then point the catalog at it
    rel = Path("datastacks") / datastack / "proofreading" / f"base-{uuid.uuid4().hex[:12]}"
    folder = lake.root / str(rel)
    if not lake.remote:
        folder.mkdir(parents=True, exist_ok=True)
    cols = {"supervoxel_id": pa.array(sv_ids, pa.uint64()), "root_id": pa.array(base_root, pa.uint64())}
    if bbox is not None:
        for i, name in enumerate(("x0", "x1", "y0", "y1", "z0", "z1")):
            cols[name] = pa.array(bbox[:, i].astype(np.int64))
    fs, where = lake.storage.pyarrow_fs(folder / "supervoxels.parquet")
    pq.write_table(pa.table(cols), where, filesystem=fs)
    fs, where = lake.storage.pyarrow_fs(folder / "edges.parquet")
    pq.write_table(pa.table({"sv_a": pa.array(ea, pa.uint64()), "sv_b": pa.array(eb, pa.uint64()),
                             "affinity": pa.array(aff, pa.float32()), "active": pa.array(active, pa.bool_())}),
                   where, filesystem=fs)
    n_roots = int(len(np.unique(base_root))) if len(base_root) else 0
    prov = record("proofreading.create", inputs={"datastack": datastack, "layer": layer,
                                                "boundary_layer": boundary_layer},
                  params={"agglomeration": agglomeration, "threshold": threshold}, user=author,
                  supervoxels=int(len(sv_ids)), edges=int(len(ea)), roots=n_roots)
    old_base = None
    with lake.catalog.session() as s:
        dsid = _ds_id(s, datastack)
        old = s.scalar(select(SegmentationGraph).where(SegmentationGraph.datastack_id == dsid))
        if old is not None:
            if not overwrite:
                raise AlreadyExists(f"datastack {datastack!r} already has a proofreadable segmentation",
                                    datastack=datastack)
            old_base = old.base_path
            s.delete(old)
            s.flush()
        s.add(SegmentationGraph(datastack_id=dsid, layer=layer, base_path=str(rel), agglomeration=agglomeration,
                                n_supervoxels=len(sv_ids), n_edges=len(ea), root_base=ROOT_BASE,
                                next_root=ROOT_BASE + n_roots, last_seq=0, created=utcnow(), provenance=prov))
    if old_base and old_base != str(rel):
        from neurolake.storage.files import remove_tree

        remove_tree(lake.root / old_base)  # the replaced graph's base files
    return Segmentation(lake, datastack)


def _build_base(supervoxels, edges, affinities, mapping, agglomeration, threshold):
    """Sorted supervoxel ids, base root per supervoxel, and the RAG edges with active flags."""
    import pandas as pd

    if isinstance(edges, pd.DataFrame):
        missing = {"sv_a", "sv_b"} - set(edges.columns)
        if missing:
            raise InvalidArgument(f"edges table lacks columns {sorted(missing)}", field="edges")
        if affinities is None and "affinity" in edges.columns:
            affinities = edges["affinity"].to_numpy()
        edges = edges[["sv_a", "sv_b"]].to_numpy()
    if edges is None:
        edges = np.zeros((0, 2), dtype=np.uint64)
    e = np.asarray(edges)
    if e.ndim != 2 or e.shape[1] != 2:
        raise InvalidArgument(f"edges must be an (M, 2) array of supervoxel id pairs, got shape {list(e.shape)}",
                              field="edges")
    e = _ids(e, "edges").reshape(-1, 2)
    aff = np.ones(len(e), np.float32) if affinities is None else np.asarray(affinities, dtype=np.float32).ravel()
    if len(aff) != len(e):
        raise InvalidArgument(f"{len(aff)} affinities for {len(e)} edges", field="affinities")
    if len(aff) and (np.isnan(aff).any() or aff.min() < 0 or aff.max() > 1):
        raise InvalidArgument("affinities must be within [0, 1]", field="affinities")
    if mapping is not None:
        if isinstance(mapping, dict):
            m_sv = _ids(list(mapping.keys()), "mapping")
            m_obj = np.asarray([int(v) for v in mapping.values()], dtype=np.int64)
        else:
            df = pd.DataFrame(mapping)
            if df.shape[1] < 2:
                raise InvalidArgument("mapping needs two columns: supervoxel_id, object", field="mapping")
            m_sv = _ids(df.iloc[:, 0].to_numpy(), "mapping")
            m_obj = df.iloc[:, 1].to_numpy().astype(np.int64)
    if supervoxels is None:
        parts = [e.ravel()] + ([m_sv] if mapping is not None else [])
        supervoxels = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    sv = np.unique(_ids(supervoxels, "supervoxels"))
    sv = sv[sv != 0]
    if len(sv) and int(sv[-1]) > MAX_SV:
        raise InvalidArgument(f"supervoxel ids must be below 2**52, got {int(sv[-1])}", field="supervoxels")
    # edges: drop self loops and background, both ends must be supervoxels, deduplicate (keep max affinity)
    keep = (e[:, 0] != e[:, 1]) & (e[:, 0] != 0) & (e[:, 1] != 0)
    e, aff = e[keep], aff[keep]
    if len(e):
        unknown = ~np.isin(e.ravel(), sv)
        if unknown.any():
            raise InvalidArgument(f"edges name supervoxels that are not in the supervoxel list: "
                                  f"{e.ravel()[unknown][:10].tolist()}", field="edges")
    a, b = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    if len(a):
        order = np.lexsort((-aff, b, a))
        a, b, aff = a[order], b[order], aff[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, aff = a[first], b[first], aff[first]
    n = len(sv)
    ia, ib = np.searchsorted(sv, a), np.searchsorted(sv, b)
    import scipy.sparse as sparse
    from scipy.sparse.csgraph import connected_components

    if agglomeration == "each":
        active = np.zeros(len(a), bool)
        labels = np.arange(n)
    elif agglomeration in ("threshold", "edges"):
        active = (aff >= threshold) if agglomeration == "threshold" else np.ones(len(a), bool)
        g = sparse.coo_matrix((np.ones(int(active.sum()), np.int8), (ia[active], ib[active])), shape=(n, n))
        _, labels = connected_components(g, directed=False)
    else:  # mapping
        obj = np.full(n, -1, dtype=np.int64)
        pos = np.searchsorted(sv, m_sv)
        ok = (pos < n) & (sv[np.minimum(pos, max(n - 1, 0))] == m_sv) if n else np.zeros(len(m_sv), bool)
        obj[pos[ok]] = m_obj[ok]
        unmapped = obj < 0  # supervoxels without an object are their own root
        obj[unmapped] = obj.max(initial=0) + 1 + np.arange(int(unmapped.sum()))
        active = obj[ia] == obj[ib]
        g = sparse.coo_matrix((np.ones(int(active.sum()), np.int8), (ia[active], ib[active])), shape=(n, n))
        _, comp = connected_components(g, directed=False)
        # join components of one object that the RAG does not connect with extra edges (affinity 0)
        pairs = np.unique(np.stack([obj, comp], axis=1), axis=0)
        extra_a, extra_b = [], []
        if len(pairs):
            rep = {}
            first_idx = {}
            for i in range(n):
                first_idx.setdefault(int(comp[i]), i)
            for o, c in pairs:
                rep.setdefault(int(o), []).append(first_idx[int(c)])
            for reps in rep.values():
                for x, y in zip(reps[:-1], reps[1:], strict=True):
                    extra_a.append(sv[x])
                    extra_b.append(sv[y])
        if extra_a:
            xa = np.minimum(np.array(extra_a, np.uint64), np.array(extra_b, np.uint64))
            xb = np.maximum(np.array(extra_a, np.uint64), np.array(extra_b, np.uint64))
            a, b = np.concatenate([a, xa]), np.concatenate([b, xb])
            aff = np.concatenate([aff, np.zeros(len(xa), np.float32)])
            active = np.concatenate([active, np.ones(len(xa), bool)])
        _, labels = np.unique(obj, return_inverse=True)
    # root ids: ROOT_BASE + rank of the component, ranked by its smallest supervoxel
    labels = np.asarray(labels).ravel()
    if n:
        _, first = np.unique(labels, return_index=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        base_root = (np.uint64(ROOT_BASE) + rank[np.unique(labels, return_inverse=True)[1]].astype(np.uint64))
    else:
        base_root = np.zeros(0, np.uint64)
    return sv, base_root.astype(np.uint64), a, b, aff.astype(np.float32), active


def segmentation(lake, datastack: str) -> Segmentation:
    """The proofreadable segmentation of ``datastack``. Raises NotFound when it has none."""
    seg = Segmentation(lake, datastack)
    seg._row()
    return seg


def has_segmentation(lake, datastack: str) -> bool:
    try:
        segmentation(lake, datastack)
        return True
    except NotFound:
        return False


# -------------------------------------------------------------------------------------------------
# the service
# -------------------------------------------------------------------------------------------------
class Segmentation:
    """Edits and lookups on the proofreadable segmentation of one datastack.

    Edits (:meth:`merge`, :meth:`split`, :meth:`undo`, :meth:`redo`, :meth:`rollback`) run in one
    catalog transaction each and return the operation as a dict ``{"operation_id", "kind", "author",
    "timestamp", "old_roots", "new_roots", "inputs", …}``. An edit may name the roots it was based on
    (``roots=``); when one of them is no longer current it is refused with :class:`Conflict` (HTTP 409)
    whose detail carries the current roots — optimistic concurrency.
    """

    def __init__(self, lake, datastack: str) -> None:
        self.lake = lake
        self.datastack = datastack

    def __repr__(self) -> str:
        return f"<Segmentation {self.datastack}>"

    # -- state --------------------------------------------------------------------------------------
    def _row(self, s=None) -> SegmentationGraph:
        def get(sess):
            dsid = _ds_id(sess, self.datastack)
            row = sess.scalar(select(SegmentationGraph).where(SegmentationGraph.datastack_id == dsid))
            if row is None:
                raise NotFound(f"datastack {self.datastack!r} has no proofreadable segmentation; create one with "
                               f"`neurolake proofread init {self.datastack} --layer <supervoxel layer>`",
                               datastack=self.datastack)
            return row

        if s is not None:
            return get(s)
        with self.lake.catalog.session() as sess:
            return get(sess)

    @property
    def layer(self) -> str:
        """Name of the supervoxel layer (a segmentation layer of the datastack) whose ids this graph joins."""
        return self._row().layer

    def info(self) -> dict[str, Any]:
        """Metadata: supervoxel layer, counts, agglomeration, created, number of operations."""
        row = self._row()
        return {"datastack": self.datastack, "layer": row.layer, "supervoxels": row.n_supervoxels,
                "edges": row.n_edges, "agglomeration": row.agglomeration, "operations": row.last_seq,
                "created": as_utc(row.created).isoformat(), "provenance": row.provenance}

    def _lock(self, gid: int) -> threading.RLock:
        c = _cache(self.lake)
        with c.lock:
            return c.locks.setdefault(gid, threading.RLock())

    def _graph_id(self) -> int:
        """The graph row id of this datastack (cached per lake; NotFound when it has no segmentation)."""
        c = _cache(self.lake)
        gid = c.gids.get(self.datastack)
        if gid is None:
            gid = c.gids[self.datastack] = self._row().id
        return gid

    def _forget(self, gid: int) -> None:
        c = _cache(self.lake)
        if c.gids.get(self.datastack) == gid:
            c.gids.pop(self.datastack, None)

    def state(self, s=None, upto: int | None = None) -> GraphState:
        """The in-memory state synchronised with the catalog (loads new operations when needed)."""
        for _attempt in range(2):
            gid = self._graph_id()
            with contextlib.ExitStack() as stack:
                conn = s if s is not None else stack.enter_context(self.lake.catalog.engine.connect())
                row = conn.execute(_GRAPH_NOW, {"b_gid": gid, "b_ds": self.datastack}).first()
                if row is not None:
                    return self._synced(conn, gid, row.base_path, row.created,
                                        row.last_seq if upto is None else upto)
            self._forget(gid)  # the graph was replaced (or its datastack): look the id up again
        raise Conflict(f"the segmentation of {self.datastack!r} is being replaced; retry", datastack=self.datastack)

    def _synced(self, conn, gid: int, base_path: str, created: dt.datetime, last: int) -> GraphState:
        """The cached state of graph ``gid`` brought to operation ``last`` (replaying newer operations of the
        log through ``conn``, a Session or Connection inside the caller's transaction)."""
        c = _cache(self.lake)
        with self._lock(gid):
            cached = c.states.get(gid)
            if cached is None or cached[0] != base_path or cached[1].seq > last:
                st = self._load_base(base_path, created)
                c.states[gid] = (base_path, st)
            else:
                st = cached[1]
            if st.seq < last:
                ops = conn.execute(select(_OPS.c.seq, _OPS.c.edges, _OPS.c.timestamp, _OPS.c.new_roots)
                                   .where(_OPS.c.graph_id == gid, _OPS.c.seq > st.seq, _OPS.c.seq <= last)
                                   .order_by(_OPS.c.seq)).all()
                for op in ops:
                    edges = [(int(a), int(b), float(w), bool(act)) for a, b, w, act in op.edges]
                    idx = st.index([e[0] for e in edges] + [e[1] for e in edges])
                    k = len(edges)
                    iedges = [(int(idx[i]), int(idx[k + i]), edges[i][2], edges[i][3]) for i in range(k)]
                    plan = st.plan(iedges)
                    st.apply(plan, op.seq, as_utc(op.timestamp), [int(r) for r in op.new_roots])
            return st

    def _load_base(self, base_path: str, created: dt.datetime) -> GraphState:
        folder = self.lake.root / base_path
        fs, where = self.lake.storage.pyarrow_fs(folder / "supervoxels.parquet")
        svt = pq.read_table(where, filesystem=fs)
        fs, where = self.lake.storage.pyarrow_fs(folder / "edges.parquet")
        et = pq.read_table(where, filesystem=fs)
        bbox = None
        if "x0" in svt.column_names:
            bbox = np.stack([svt[c].to_numpy() for c in ("x0", "x1", "y0", "y1", "z0", "z1")], axis=1)
        return GraphState(svt["supervoxel_id"].to_numpy(), svt["root_id"].to_numpy(), et["sv_a"].to_numpy(),
                          et["sv_b"].to_numpy(), et["affinity"].to_numpy(), et["active"].to_numpy(),
                          as_utc(created), bbox=bbox)

    # -- lookups ------------------------------------------------------------------------------------
    def roots(self, supervoxel_ids: Iterable[int], timestamp: Any = None, unknown: str = "error") -> np.ndarray:
        """Root id of each supervoxel at ``timestamp`` (None = now); (N,) uint64, 0 for background (id 0).

        ``unknown="error"`` raises NotFound for ids that are not supervoxels; ``"zero"`` gives 0 (as
        CAVE's ``roots_binary`` does). Raises InvalidArgument for a timestamp before the segmentation existed.
        """
        ids = _ids(supervoxel_ids, "supervoxel_ids")
        ts = parse_timestamp(timestamp)
        st = self.state()
        with st.lock:
            seq = st.seq_at(ts)
            bg = ids == 0
            idx = st.index(ids, missing="mask" if (unknown == "zero" or bg.any()) else "error")
            if unknown != "zero" and ((idx < 0) & ~bg).any():
                st.index(ids[~bg])  # raises NotFound naming the unknown ids
            return st.roots_of_indices(idx, None if seq >= st.seq else seq)

    def root(self, supervoxel_id: int, timestamp: Any = None) -> int:
        return int(self.roots([supervoxel_id], timestamp)[0])

    def leaves(self, root_id: int, bounds: Any = None) -> np.ndarray:
        """Supervoxel ids of ``root_id`` (current or expired), sorted uint64.

        ``bounds`` = ((x0, x1), (y0, y1), (z0, z1)) voxels at mip 0 keeps supervoxels whose bounding
        box intersects it (needs a graph built from a layer). Raises NotFound, InvalidArgument.
        """
        root_id = whole(root_id, "root_id", 0, UINT64_MAX)
        st = self.state()
        with st.lock:
            members = st.members(root_id)
        if bounds is not None:
            if st.bbox is None:
                raise InvalidArgument("bounds need supervoxel bounding boxes; this segmentation was not built "
                                      "from a layer", field="bounds")
            try:
                (x0, x1), (y0, y1), (z0, z1) = [(int(a), int(b)) for a, b in bounds]
            except (TypeError, ValueError):
                raise InvalidArgument(f"bounds must be ((x0, x1), (y0, y1), (z0, z1)), got {bounds!r}",
                                      field="bounds") from None
            bb = st.bbox[members]
            keep = ((bb[:, 0] < x1) & (bb[:, 1] > x0) & (bb[:, 2] < y1) & (bb[:, 3] > y0)
                    & (bb[:, 4] < z1) & (bb[:, 5] > z0))
            members = members[keep]
        return st.sv_ids[members]

    def is_latest(self, root_ids: Any, timestamp: Any = None) -> np.ndarray:
        """(N,) bool: is each root current at ``timestamp`` (None = now)? Raises NotFound for unknown roots."""
        st = self.state()
        seq = st.seq_at(parse_timestamp(timestamp))
        out = []
        for r in _ids(root_ids, "root_ids"):
            info = st.root_info(int(r))
            out.append(info.created_seq <= seq and (info.expired_seq is None or info.expired_seq > seq))
        return np.array(out, dtype=bool)

    def latest_roots(self, root_id: int, timestamp: Any = None) -> np.ndarray:
        """The current (or at ``timestamp``) roots descending from ``root_id`` (uint64, sorted)."""
        root_id = whole(root_id, "root_id", 0, UINT64_MAX)
        st = self.state()
        seq = st.seq_at(parse_timestamp(timestamp))
        out, todo, seen = set(), [root_id], set()
        st.root_info(root_id)
        while todo:
            r = todo.pop()
            if r in seen:
                continue
            seen.add(r)
            info = st.root_info(r)
            if info.expired_seq is None or info.expired_seq > seq:
                if info.created_seq <= seq:
                    out.add(r)
            else:
                todo.extend(info.children)
        return np.array(sorted(out), dtype=np.uint64)

    def lineage(self, root_ids: Any, timestamp_past: Any = None, timestamp_future: Any = None) -> dict[str, Any]:
        """The lineage graph around ``root_ids`` as networkx node-link JSON (``nodes``/``links``).

        Nodes carry ``timestamp`` (creation, unix seconds), ``operation_id`` (the operation that
        created the root, absent for initial roots) and ``expired_by``; links go from a root to the
        roots an operation made from it. The walk stops at roots created before ``timestamp_past``
        (going back) and after ``timestamp_future`` (going forward), like CAVE's ``lineage_graph``.
        """
        st = self.state()
        past = parse_timestamp(timestamp_past, "timestamp_past")
        future = parse_timestamp(timestamp_future, "timestamp_future")
        nodes: dict[int, dict] = {}
        links: set[tuple[int, int]] = set()

        def node(r):
            if r not in nodes:
                info = st.root_info(r)
                d = {"id": r, "timestamp": info.created_ts.timestamp()}
                if info.created_seq:
                    d["operation_id"] = info.created_seq
                if info.expired_seq is not None:
                    d["expired_by"] = info.expired_seq
                nodes[r] = d
            return st.root_info(r)

        starts = [int(r) for r in _ids(root_ids, "root_ids")]
        back, fwd = list(starts), list(starts)
        for r in starts:
            node(r)
        seen = set()
        while back:
            r = back.pop()
            if r in seen:
                continue
            seen.add(r)
            info = node(r)
            if past is not None and info.created_ts < past:
                continue
            for p in info.parents:
                node(p)
                links.add((p, r))
                back.append(p)
        seen = set()
        while fwd:
            r = fwd.pop()
            if r in seen:
                continue
            seen.add(r)
            info = node(r)
            if info.expired_seq is None or (future is not None and info.expired_ts > future):
                continue
            for ch in info.children:
                node(ch)
                links.add((r, ch))
                fwd.append(ch)
        return {"directed": True, "multigraph": False, "graph": {},
                "nodes": [nodes[k] for k in sorted(nodes)],
                "links": [{"source": a, "target": b} for a, b in sorted(links)]}

    def past_ids(self, root_ids: Any, timestamp_past: Any = None, timestamp_future: Any = None) -> dict[str, dict]:
        """CAVE's past/future id mapping: for each root (at ``timestamp_future``, default now) the roots
        at ``timestamp_past`` (default the creation) that share supervoxels with it, and for each of those
        the roots at ``timestamp_future`` that share supervoxels with them. Keys and values are ints."""
        st = self.state()
        past = parse_timestamp(timestamp_past, "timestamp_past") or st.created
        future = parse_timestamp(timestamp_future, "timestamp_future")
        past_map: dict[int, list[int]] = {}
        future_map: dict[int, list[int]] = {}
        for r in _ids(root_ids, "root_ids"):
            leaves = st.sv_ids[st.members(int(r))]
            prev = np.unique(self.roots(leaves, past))
            past_map[int(r)] = [int(x) for x in prev]
            for p in prev:
                if int(p) not in future_map:
                    fut = np.unique(self.roots(st.sv_ids[st.members(int(p))], future))
                    future_map[int(p)] = [int(x) for x in fut]
        return {"past_id_map": past_map, "future_id_map": future_map}

    def root_info(self, root_id: int) -> dict[str, Any]:
        """Creation and expiry of a root: ``{"root_id", "created", "created_by", "expired", "expired_by",
        "is_latest", "supervoxels", "parents", "children"}``. Raises NotFound."""
        st = self.state()
        info = st.root_info(whole(root_id, "root_id", 0, UINT64_MAX))
        return {"root_id": info.root, "created": info.created_ts.isoformat(), "created_by": info.created_seq or None,
                "expired": info.expired_ts.isoformat() if info.expired_ts else None, "expired_by": info.expired_seq,
                "is_latest": info.expired_seq is None, "supervoxels": int(len(st.members(info.root))),
                "parents": info.parents, "children": info.children}

    # -- operation log ------------------------------------------------------------------------------
    @staticmethod
    def _op_dict(op: Operation) -> dict[str, Any]:
        return {"operation_id": op.seq, "kind": op.kind, "author": op.author,
                "timestamp": as_utc(op.timestamp).isoformat(), "old_roots": [int(r) for r in op.old_roots],
                "new_roots": [int(r) for r in op.new_roots], "inputs": op.inputs, "targets": op.targets,
                "undone_by": op.undone_by,
                "edges": [{"sv_a": int(a), "sv_b": int(b), "affinity": w, "active": act} for a, b, w, act in op.edges]}

    def operations(self, author: str | None = None, since: Any = None, until: Any = None,
                   root_id: int | None = None) -> list[dict[str, Any]]:
        """The edit log (oldest first), filtered by author, time range and/or a root it made or expired."""
        since, until = parse_timestamp(since, "since"), parse_timestamp(until, "until")
        if root_id is not None:
            root_id = whole(root_id, "root_id", 0, UINT64_MAX)
        with self.lake.catalog.session() as s:
            row = self._row(s)
            q = select(Operation).where(Operation.graph_id == row.id)
            if author is not None:
                q = q.where(Operation.author == author)
            if since is not None:
                q = q.where(Operation.timestamp >= since)
            if until is not None:
                q = q.where(Operation.timestamp <= until)
            ops = [self._op_dict(o) for o in s.scalars(q.order_by(Operation.seq))]
        if root_id is not None:
            ops = [o for o in ops if int(root_id) in o["new_roots"] or int(root_id) in o["old_roots"]]
        return ops

    def operation(self, operation_id: int) -> dict[str, Any]:
        """One operation by id. Raises NotFound, InvalidArgument (not a whole number below 2**63)."""
        operation_id = whole(operation_id, "operation_id", 0, INT64_MAX)
        with self.lake.catalog.session() as s:
            row = self._row(s)
            op = s.scalar(select(Operation).where(Operation.graph_id == row.id, Operation.seq == int(operation_id)))
            if op is None:
                raise NotFound(f"operation {operation_id} does not exist in {self.datastack!r} "
                               f"(operations 1..{row.last_seq})", field="operation_id", value=operation_id)
            return self._op_dict(op)

    # -- edits --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """The edit's one catalog transaction, on a Core connection. On SQLite it commits with
        ``PRAGMA synchronous`` = :data:`EDIT_SYNCHRONOUS` (the connection's setting is restored afterwards;
        docs/proofreading.md, "Durability", says what each setting guarantees)."""
        engine = self.lake.catalog.engine
        with engine.connect() as conn:
            raw = conn.connection.driver_connection if engine.dialect.name == "sqlite" else None
            before = None
            if raw is not None and EDIT_SYNCHRONOUS is not None:
                before = raw.execute("PRAGMA synchronous").fetchone()[0]
                raw.execute(f"PRAGMA synchronous={EDIT_SYNCHRONOUS}")  # outside a transaction: no BEGIN
            try:
                with conn.begin():
                    yield conn
            finally:
                if before is not None:
                    raw.execute(f"PRAGMA synchronous={int(before)}")

    def _edit(self, kind: str, author: str | None, make_plan, inputs: dict[str, Any],
              expected_roots: Any = None) -> dict[str, Any]:
        """Run one edit: a single catalog transaction of Core statements (take the graph's write lock by
        bumping ``last_seq``, insert the operation, expire / insert root rows, advance ``next_root``), then
        apply the plan to the in-memory state. ``make_plan(st, conn, gid)`` → (Plan, targets, extra) where
        ``extra(conn, gid, seq)`` writes more rows in the same transaction."""
        from neurolake.provenance import current_user

        author = author or current_user()
        if not isinstance(author, str) or not author.strip() or len(author) > 256:
            raise InvalidArgument(f"author {author!r} must be a non-empty name of at most 256 characters",
                                  field="author")
        expected = [int(r) for r in _ids(expected_roots, "roots")] if expected_roots is not None else []
        for _attempt in range(3):
            gid = self._graph_id()
            with self._lock(gid):
                with self._transaction() as conn:
                    # take the per-graph write lock first: an UPDATE is the transaction's first statement
                    row = conn.execute(_BUMP, {"b_gid": gid, "b_ds": self.datastack}).first()
                    if row is None:  # the graph was replaced (or its datastack): nothing written
                        self._forget(gid)
                        continue
                    seq = int(row.last_seq)
                    st = self._synced(conn, gid, row.base_path, row.created, seq - 1)
                    op = self._write(conn, st, gid, seq, int(row.next_root), kind, author, make_plan, inputs,
                                     expected)
                # committed: now the in-memory state may follow
                st.apply(op.pop("_plan"), seq, op.pop("_ts"), op["new_roots"])
            if _ACK_HOOK is not None:
                _ACK_HOOK(op)
            return op
        self._row()  # NotFound when the segmentation is gone
        raise Conflict(f"the segmentation of {self.datastack!r} is being replaced; retry", datastack=self.datastack)

    def _write(self, conn, st: GraphState, gid: int, seq: int, next_root: int, kind: str, author: str, make_plan,
               inputs: dict[str, Any], expected: list[int]) -> dict[str, Any]:
        stale = [r for r in expected if not _known_current(st, r)]
        if stale:
            raise Conflict(self._conflict_message(st, stale, inputs), stale_roots=stale,
                           current_roots=self._current_for(st, inputs), operation=kind)
        plan, targets, extra = make_plan(st, conn, gid)
        if expected:
            missing = sorted(set(plan.old_roots) - set(expected))
            if missing:
                raise Conflict(f"the edit touches root(s) {missing} that it was not based on "
                               f"(based on {expected}); reload and retry", stale_roots=expected,
                               current_roots=plan.old_roots, operation=kind)
        new_roots = [next_root + i for i in range(len(plan.components))]
        now = utcnow()
        last_ts = st.op_ts[-1]
        ts = now if now > last_ts else last_ts + dt.timedelta(microseconds=1)
        ids = st.sv_ids
        edges_json = [[int(ids[a]), int(ids[b]), round(float(w), 6), bool(act)] for a, b, w, act in plan.edges]
        conn.execute(_INSERT_OP, {"graph_id": gid, "seq": seq, "kind": kind, "author": author, "timestamp": ts,
                                  "old_roots": plan.old_roots, "new_roots": new_roots, "edges": edges_json,
                                  "inputs": inputs, "targets": targets, "undone_by": None})
        # root rows: the old roots that took part in an operation have one (they are in st.roots); initial
        # roots get theirs now (created_seq 0), expired by this operation
        had = [r for r in plan.old_roots if r in st.roots]
        if had:
            n = conn.execute(_EXPIRE, {"b_gid": gid, "b_roots": had, "b_seq": seq}).rowcount
            if n != len(had):  # pragma: no cover - the log and the root rows disagree: trust the rows
                have = set(conn.execute(select(_ROOTS.c.root_id).where(
                    _ROOTS.c.graph_id == gid, _ROOTS.c.root_id.in_(plan.old_roots))).scalars())
                conn.execute(_EXPIRE, {"b_gid": gid, "b_roots": list(have), "b_seq": seq})
                had = list(have)
        rows = [{"graph_id": gid, "root_id": r, "created_seq": 0, "expired_seq": seq,
                 "n_supervoxels": int(len(st.members(r)))} for r in plan.old_roots if r not in had]
        rows += [{"graph_id": gid, "root_id": r, "created_seq": seq, "expired_seq": None,
                  "n_supervoxels": int(len(comp))} for r, comp in zip(new_roots, plan.components, strict=True)]
        conn.execute(_INSERT_ROOTS, rows)
        conn.execute(_NEXT_ROOT, {"b_gid": gid, "b_next": next_root + len(new_roots)})
        if extra is not None:
            extra(conn, gid, seq)
        if _CRASH_HOOK is not None:
            _CRASH_HOOK(kind, seq)
        return {"operation_id": seq, "kind": kind, "author": author, "timestamp": ts.isoformat(),
                "old_roots": plan.old_roots, "new_roots": new_roots, "inputs": inputs, "targets": targets,
                "undone_by": None, "_plan": plan, "_ts": ts}

    def _current_for(self, st: GraphState, inputs: dict) -> dict[str, int]:
        svs = [int(x) for k in ("supervoxels", "sources", "sinks") for x in inputs.get(k, [])]
        if not svs:
            return {}
        idx = st.index(svs, missing="mask")
        roots = st.roots_of_indices(idx)
        return {str(sv): int(r) for sv, r in zip(svs, roots, strict=True)}

    def _conflict_message(self, st, stale, inputs) -> str:
        cur = self._current_for(st, inputs)
        return (f"root(s) {stale} are no longer current (edited by someone else); the supervoxels now belong to "
                f"{sorted(set(cur.values()))}; reload and retry")

    def merge(self, sv_a: int, sv_b: int, author: str | None = None, roots: Any = None,
              positions: Any = None) -> dict[str, Any]:
        """Join the roots of supervoxels ``sv_a`` and ``sv_b`` into one new root (activates the edge a–b).

        ``roots``: the root ids the editor saw (optimistic concurrency); ``positions``: optional
        [[x, y, z], [x, y, z]] nm where the editor clicked (recorded only). Raises NotFound (unknown
        supervoxel), InvalidArgument (same supervoxel, or both already in one root), Conflict (stale roots).
        """
        a, b = (int(x) for x in _ids([sv_a, sv_b], "supervoxels"))
        inputs: dict[str, Any] = {"supervoxels": [a, b]}
        if positions is not None:
            inputs["positions"] = positions

        def plan(st: GraphState, conn, gid):
            ia, ib = (int(i) for i in st.index([a, b], "supervoxels"))
            if a == b:
                raise InvalidArgument(f"cannot merge supervoxel {a} with itself", field="supervoxels", value=[a, b])
            ra, rb = int(st.cur_root[ia]), int(st.cur_root[ib])
            if ra == rb:
                raise InvalidArgument(f"supervoxels {a} and {b} are already in the same root {ra}; nothing to merge",
                                      field="supervoxels", value=[a, b], root_id=ra)
            state = st.edge_state(ia, ib)
            w = state[0] if state is not None else USER_EDGE_AFFINITY
            return st.plan([(ia, ib, w, True)], merge_only=True), [], None

        return self._edit("merge", author, plan, inputs, roots)

    def split(self, sources: Any, sinks: Any, author: str | None = None, roots: Any = None,
              source_positions: Any = None, sink_positions: Any = None) -> dict[str, Any]:
        """Split a root by a minimum cut between supervoxels ``sources`` and ``sinks``.

        The cut is a minimum s-t cut on the active edges inside the root, edge capacity = affinity
        (max-flow by Dinic's algorithm, scipy); the cut edges are deactivated and the connected
        components of the root become new roots (two, or more when the cut isolates further pieces).
        Raises NotFound (unknown supervoxel), InvalidArgument (empty lists, overlap, sources and sinks in
        different roots), Conflict (stale roots).
        """
        src = [int(x) for x in _ids(sources, "sources")]
        snk = [int(x) for x in _ids(sinks, "sinks")]
        if not src or not snk:
            raise InvalidArgument("a split needs at least one source and one sink supervoxel",
                                  field="sources" if not src else "sinks")
        both = sorted(set(src) & set(snk))
        if both:
            raise InvalidArgument(f"supervoxel(s) {both} are both sources and sinks", field="sinks", value=both)
        inputs: dict[str, Any] = {"sources": src, "sinks": snk}
        if source_positions is not None:
            inputs["source_positions"] = source_positions
        if sink_positions is not None:
            inputs["sink_positions"] = sink_positions

        def plan(st: GraphState, conn, gid):
            isrc, isnk = st.index(src, "sources"), st.index(snk, "sinks")
            rs = {int(r) for r in st.cur_root[isrc]} | {int(r) for r in st.cur_root[isnk]}
            if len(rs) != 1:
                where = {str(sv): int(st.cur_root[i]) for sv, i in zip(src + snk, list(isrc) + list(isnk), strict=True)}
                raise InvalidArgument(f"sources and sinks must belong to one root; they are in roots {sorted(rs)}",
                                      field="sinks", roots=where)
            return st.split_plan(rs.pop(), isrc, isnk), [], None

        return self._edit("split", author, plan, inputs, roots)

    def _mark(self, targets: list[int], undone_by: int | None):
        def extra(conn, gid, seq):
            conn.execute(update(_OPS).where(_OPS.c.graph_id == gid, _OPS.c.seq.in_(targets))
                         .values(undone_by=seq if undone_by is not None else None))
        return extra

    def _target(self, conn, gid: int, operation_id: int):
        """The operation row (seq, edges, undone_by) of ``operation_id``; NotFound."""
        op = conn.execute(select(_OPS.c.seq, _OPS.c.edges, _OPS.c.undone_by)
                          .where(_OPS.c.graph_id == gid, _OPS.c.seq == int(operation_id))).first()
        if op is None:
            raise NotFound(f"operation {operation_id} does not exist in {self.datastack!r}",
                           field="operation_id", value=operation_id)
        return op

    @staticmethod
    def _changes(st: GraphState, edges: list, invert: bool) -> list[tuple[int, int, float, bool]]:
        """Edge settings (sv indices) that differ from the current state."""
        out = []
        for a, b, w, act in edges:
            ia, ib = (int(i) for i in st.index([int(a), int(b)]))
            want = (not act) if invert else bool(act)
            cur = st.edge_state(ia, ib)
            if (cur[1] if cur is not None else False) != want:
                out.append((ia, ib, float(w), want))
        return out

    def undo(self, operation_id: int, author: str | None = None) -> dict[str, Any]:
        """Revert one operation by a new operation that sets its edges back (new root ids, as in PyChunkedGraph).

        Raises NotFound (unknown operation), InvalidArgument (already undone, or nothing left to revert).
        """
        target = whole(operation_id, "operation_id", 0, INT64_MAX)

        def plan(st, conn, gid):
            op = self._target(conn, gid, target)
            if op.undone_by is not None:
                raise InvalidArgument(f"operation {target} is already undone (by operation {op.undone_by})",
                                      field="operation_id", value=target)
            changes = self._changes(st, op.edges, invert=True)
            if not changes:
                raise InvalidArgument(f"operation {target} has no effect left to undo (later edits changed the same "
                                      "edges)", field="operation_id", value=target)
            return st.plan(changes), [target], self._mark([target], 1)

        return self._edit("undo", author, plan, {"operation_id": target})

    def redo(self, operation_id: int, author: str | None = None) -> dict[str, Any]:
        """Apply an undone operation again (a new operation with new root ids).

        Raises NotFound, InvalidArgument (the operation is not undone, or nothing to apply).
        """
        target = whole(operation_id, "operation_id", 0, INT64_MAX)

        def plan(st, conn, gid):
            op = self._target(conn, gid, target)
            if op.undone_by is None:
                raise InvalidArgument(f"operation {target} is not undone; only undone operations can be redone",
                                      field="operation_id", value=target)
            changes = self._changes(st, op.edges, invert=False)
            if not changes:
                raise InvalidArgument(f"operation {target} has nothing left to redo", field="operation_id",
                                      value=target)
            return st.plan(changes), [target], self._mark([target], None)

        return self._edit("redo", author, plan, {"operation_id": target})

    def rollback(self, author_of_edits: str, since: Any, author: str | None = None) -> dict[str, Any]:
        """Revert every operation of ``author_of_edits`` made at or after ``since`` in one operation.

        Edges are set back newest first (the state before the author's first edit wins for each edge);
        edits of others on the same edges are overwritten for those edges. Raises InvalidArgument when
        the author made no (not yet undone) edit since then.
        """
        since_ts = parse_timestamp(since, "since")
        if since_ts is None:
            raise InvalidArgument("rollback needs a start time (since)", field="since")

        def plan(st, conn, gid):
            ops = conn.execute(select(_OPS.c.seq, _OPS.c.edges).where(
                _OPS.c.graph_id == gid, _OPS.c.author == author_of_edits, _OPS.c.timestamp >= since_ts,
                _OPS.c.undone_by.is_(None), _OPS.c.kind.in_(("merge", "split", "redo")))
                .order_by(_OPS.c.seq.desc())).all()
            if not ops:
                raise InvalidArgument(f"{author_of_edits!r} made no edit since {since_ts.isoformat()} to roll back",
                                      field="author", value=author_of_edits)
            want: dict[tuple[int, int], tuple[float, bool]] = {}
            for op in ops:  # newest first: the oldest operation's "before" state wins
                for a, b, w, act in op.edges:
                    want[(min(int(a), int(b)), max(int(a), int(b)))] = (float(w), not bool(act))
            changes = self._changes(st, [[a, b, w, act] for (a, b), (w, act) in want.items()], invert=False)
            if not changes:
                raise InvalidArgument(f"the edits of {author_of_edits!r} since {since_ts.isoformat()} have no effect "
                                      "left to roll back", field="author", value=author_of_edits)
            targets = sorted(op.seq for op in ops)
            return st.plan(changes), targets, self._mark(targets, 1)

        return self._edit("rollback", author, plan, {"author": author_of_edits, "since": since_ts.isoformat()})

    # -- volumes ------------------------------------------------------------------------------------
    def remap_to_roots(self, array: np.ndarray, timestamp: Any = None) -> np.ndarray:
        """Replace supervoxel ids in ``array`` (any shape, e.g. a (z, y, x) cutout) by their root ids at
        ``timestamp``; returns uint64 of the same shape (0 stays 0, unknown ids become 0)."""
        import fastremap

        arr = np.asarray(array)
        uniq = fastremap.unique(arr)
        roots = self.roots(uniq.astype(np.uint64), timestamp, unknown="zero")
        table = {int(k): int(v) for k, v in zip(uniq, roots, strict=True)}
        return fastremap.remap(arr.astype(np.uint64), table, preserve_missing_labels=True, in_place=False)

    def supervoxels_at(self, points_nm: Any) -> np.ndarray:
        """Supervoxel ids of the supervoxel layer at (N, 3) positions **x, y, z in nm** (uint64).

        Raises InvalidArgument (no layer, bad shape), OutOfBounds."""
        name = self._row().layer
        if name is None:
            raise InvalidArgument("this segmentation has no supervoxel layer to look points up in", field="points")
        pts = np.asarray(points_nm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InvalidArgument(f"points must be (N, 3) x, y, z nm, got shape {list(pts.shape)}", field="points")
        la = self.lake.layer(self.datastack, name)
        vox = np.floor(pts / np.array(la.voxel_size, dtype=np.float64)).astype(np.int64)
        return la.read_points(vox[:, ::-1]).astype(np.uint64)

    def cutout(self, x, y, z, mip: int = 0, timestamp: Any = None, layer: str | None = None) -> np.ndarray:
        """A (z, y, x) uint64 cutout of the supervoxel layer with root ids at ``timestamp``."""
        name = layer or self._row().layer
        if name is None:
            raise InvalidArgument("this segmentation has no supervoxel layer", field="layer")
        arr = self.lake.layer(self.datastack, name).cutout(x=x, y=y, z=z, mip=mip)
        return self.remap_to_roots(arr, timestamp)


def _known_current(st: GraphState, root: int) -> bool:
    try:
        return st.is_current(root)
    except NotFound:
        return False
