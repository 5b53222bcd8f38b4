"""The edit hot path (issue 19): one catalog transaction of plain statements per edit, the cached graph id
re-checked in SQL, and the SQLite durability setting confined to the edit's transaction.

Real data: the gala FIB-SEM ground truth as supervoxels (``gala_copy``, tests/proofreading/conftest.py).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import event

from neurolake import open_lake
from neurolake.proofreading import create_segmentation, segmentation
from neurolake.proofreading.rag import region_adjacency


def _pairs(lake, n=2):
    """``n`` disjoint pairs of touching gala neurons, largest contacts first."""
    rag = region_adjacency(lake.layer("gala", "segmentation"))
    out, used = [], set()
    for i in np.argsort(-rag.area):
        a, b = int(rag.sv_a[i]), int(rag.sv_b[i])
        if not {a, b} & used:
            out.append((a, b))
            used |= {a, b}
        if len(out) == n:
            return out
    raise AssertionError("not enough pairs")


class _Statements:
    """SQL statements and commits on an engine while active."""

    def __init__(self, engine):
        self.engine, self.sql, self.commits = engine, [], 0

    def _sql(self, conn, cursor, statement, *args):
        self.sql.append(statement.split()[0].upper() + " " + statement)

    def _commit(self, conn):
        self.commits += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._sql)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._sql)
        event.remove(self.engine, "commit", self._commit)


def test_an_edit_is_one_transaction_without_row_lookups(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    (a, b), (c, d) = _pairs(lake)
    seg.merge(c, d, author="warm")  # loads the state, caches the graph id
    ra, rb = seg.roots([a, b])
    with _Statements(lake.catalog.engine) as rec:
        op = seg.merge(a, b, author="t", roots=[ra, rb])
    assert rec.commits == 1, rec.sql
    writes = [s for s in rec.sql if s.startswith(("UPDATE", "INSERT"))]
    reads = [s for s in rec.sql if s.startswith("SELECT")]
    # bump last_seq (write lock), the operation, the root rows, next_root; no SELECT of rows to modify
    assert len(writes) == 4 and reads == [], rec.sql
    assert op["new_roots"] == [int(r) for r in seg.roots([a, b])][:1]
    with _Statements(lake.catalog.engine) as rec:
        s = seg.split([a], [b], author="t", roots=op["new_roots"])
        seg.undo(s["operation_id"], author="t")
    assert rec.commits == 2
    assert len(set(seg.roots([a, b]).tolist())) == 1  # the undo joined them again


def test_the_edit_durability_setting_does_not_leak_to_other_writes(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    (a, b), = _pairs(lake, 1)
    with lake.catalog.engine.connect() as conn:
        default = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    seg.merge(a, b, author="t")
    pool = lake.catalog.engine.pool
    conns = [lake.catalog.engine.connect() for _ in range(pool.checkedin() or 1)]
    try:  # every pooled connection, including the one the edit used, is back at the catalog's setting
        assert {c.exec_driver_sql("PRAGMA synchronous").scalar() for c in conns} == {default}
    finally:
        for c in conns:
            c.close()


def test_edits_follow_a_graph_replaced_by_another_process(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    (a, b), (c, d) = _pairs(lake)
    seg.merge(a, b, author="before")  # this Lake caches the graph id and state
    other = open_lake(lake.root)
    try:
        create_segmentation(other, "gala", layer="segmentation", agglomeration="each", overwrite=True)
        op = seg.merge(c, d, author="after")  # the cached id no longer names this datastack's graph
        assert op["operation_id"] == 1 and seg.info()["operations"] == 1
        ra, rb, rc, rd = seg.roots([a, b, c, d])
        assert ra != rb and rc == rd == op["new_roots"][0]
        assert [o["author"] for o in segmentation(other, "gala").operations()] == ["after"]
        # a cached id that names no graph of this datastack any more (SQLite may reuse the id of a replaced
        # row, as above, or not): the edit writes nothing under it, looks the id up again and goes on
        from neurolake.proofreading.service import _cache

        _cache(lake).gids["gala"] = 10**9
        op = seg.split([c], [d], author="after")
        assert op["operation_id"] == 2 and _cache(lake).gids["gala"] != 10**9
    finally:
        other.close()


def test_split_plan_is_the_plan_of_the_min_cut(gala_copy):
    """The split's one-pass plan gives exactly the roots that replaying its logged edges gives."""
    lake = gala_copy
    seg = segmentation(lake, "gala")
    pairs = _pairs(lake, 6)
    ends = []
    for chain in (pairs[:3], pairs[3:]):  # chains of three neuron pairs: cuts of several edges
        for i, (a, b) in enumerate(chain):
            if seg.root(a) != seg.root(b):
                seg.merge(a, b, author="t")
            if i and seg.root(chain[i - 1][1]) != seg.root(a):
                seg.merge(chain[i - 1][1], a, author="t")
        ends.append((chain[0][0], chain[-1][1]))
    st = seg.state()
    for a, d in ends:
        root = int(seg.root(a))
        assert root == int(seg.root(d))
        src, snk = st.index([a]), st.index([d])
        fast = st.split_plan(root, src, snk)
        slow = st.plan(st.min_cut(root, src, snk), merge_only=False)
        assert fast.edges == slow.edges and fast.old_roots == slow.old_roots
        assert [c.tolist() for c in fast.components] == [c.tolist() for c in slow.components]
        op = seg.split([a], [d], author="t")
        assert len(op["new_roots"]) == len(fast.components) >= 2
    # another process replays the log to the same roots
    other = open_lake(lake.root)
    try:
        ids = np.unique(np.array(pairs).ravel())
        assert segmentation(other, "gala").roots(ids).tolist() == seg.roots(ids).tolist()
    finally:
        other.close()


def test_postgres_two_editors_of_one_root_one_wins_one_conflict(gala_builder, new_pg_database, tmp_path):
    """On PostgreSQL the first statement's row lock serialises the editors; the second sees the first's
    operation (READ COMMITTED) and is refused with 409, and both processes' caches agree afterwards."""
    import threading

    from neurolake.errors import Conflict

    path = gala_builder(tmp_path / "pglake", database_url=new_pg_database())["path"]
    lakes = [open_lake(path) for _ in range(3)]
    try:
        (a, b), (c, _) = _pairs(lakes[0])
        seg = segmentation(lakes[0], "gala")
        root = seg.merge(a, b, author="setup")["new_roots"][0]
        rc = int(seg.root(c))
        barrier, results = threading.Barrier(2), {}

        def editor(name, lake, fn):
            s = segmentation(lake, "gala")
            s.roots([a])  # state loaded before the race
            barrier.wait()
            try:
                results[name] = fn(s)
            except Conflict as exc:
                results[name] = exc

        threads = [threading.Thread(target=editor, args=("merge", lakes[1],
                                                         lambda s: s.merge(a, c, author="ed1", roots=[root, rc]))),
                   threading.Thread(target=editor, args=("split", lakes[2],
                                                         lambda s: s.split([a], [b], author="ed2", roots=[root])))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [k for k, v in results.items() if isinstance(v, dict)]
        lost = [k for k, v in results.items() if isinstance(v, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert results[lost[0]].http_status == 409
        ops = seg.operations()
        assert [o["operation_id"] for o in ops] == [1, 2] and ops[1]["kind"] == won[0]
        ids = [a, b, c]
        assert {tuple(segmentation(lk, "gala").roots(ids).tolist()) for lk in lakes} == {tuple(seg.roots(ids).tolist())}
    finally:
        for lk in lakes:
            lk.close()
