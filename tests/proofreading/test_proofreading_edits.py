"""Proofreading on real segmentations: merge/split/undo/redo, lookups in the past, conflicts, crashes.

Real data: the gala FIB-SEM ground-truth segmentation (88 neurons, Nunez-Iglesias et al. 2014) as
supervoxels, and watershed fragments of the Gerhard et al. 2013 ssTEM membrane labels.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from neurolake import init_lake, open_lake
from neurolake.errors import Conflict, InvalidArgument, NotFound
from neurolake.proofreading import create_segmentation, segmentation
from neurolake.proofreading.rag import region_adjacency

DATA = Path(__file__).resolve().parents[2] / "data"

GALA_GT = str(DATA / "gala_fibsem" / "train-gt.lzf.h5") + ":/stack"


def _gala_lake(path, database_url=None):
    lake = init_lake(path, database_url=database_url)
    lake.ingest(GALA_GT, "gala", "segmentation", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    return lake


@pytest.fixture(scope="module")
def gala_template(tmp_path_factory):
    """A lake with the gala segmentation ingested (copied per test: tests edit)."""
    path = tmp_path_factory.mktemp("gala") / "lake"
    _gala_lake(path).close()
    return path


@pytest.fixture
def gala(gala_template, tmp_path):
    import shutil

    dst = tmp_path / "lake"
    shutil.copytree(gala_template, dst)
    lake = open_lake(dst)
    seg = create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    yield lake, seg
    lake.close()


def _adjacent_pair(lake):
    """Two gala neurons with the largest contact (from the RAG computed independently here)."""
    rag = region_adjacency(lake.layer("gala", "segmentation"))
    i = int(np.argmax(rag.area))
    return int(rag.sv_a[i]), int(rag.sv_b[i]), rag


def test_gala_graph_matches_the_volume(gala):
    lake, seg = gala
    vol = lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    ids = np.unique(vol)
    ids = ids[ids != 0]
    info = seg.info()
    assert info["supervoxels"] == len(ids)  # every label of the volume is a supervoxel
    roots = seg.roots(ids)
    assert len(np.unique(roots)) == len(ids)  # "each": one root per supervoxel
    assert (roots >= 2**52).all()  # root ids never collide with supervoxel ids
    # the RAG: each edge is a real contact in the volume
    a, b, rag = _adjacent_pair(lake)
    za = np.argwhere(vol == a)
    assert len(za) and rag.area.max() > 0
    # bounding boxes recorded per supervoxel match the volume
    leaves = seg.leaves(seg.root(a), bounds=((0, 200), (0, 100), (0, 50)))
    assert leaves.tolist() == [a]
    z, y, x = za.min(axis=0)
    assert seg.leaves(seg.root(a), bounds=((0, int(x)), (0, 100), (0, 50))).size == 0


def test_merge_split_undo_redo_round_trip(gala):
    lake, seg = gala
    a, b, _ = _adjacent_pair(lake)
    ra, rb = seg.roots([a, b])
    t0 = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    m = seg.merge(a, b, author="ann", roots=[ra, rb])
    assert m["kind"] == "merge" and m["author"] == "ann" and sorted(m["old_roots"]) == sorted([int(ra), int(rb)])
    (rm,) = m["new_roots"]
    assert seg.roots([a, b]).tolist() == [rm, rm]
    assert sorted(seg.leaves(rm).tolist()) == sorted([a, b])
    assert not seg.is_latest([ra]).any() and seg.is_latest([rm]).all()
    assert seg.latest_roots(ra).tolist() == [rm]
    # split back by a minimum cut: the only active edge inside the root is the merge edge
    s = seg.split([a], [b], author="bob", roots=[rm])
    assert s["kind"] == "split" and len(s["new_roots"]) == 2
    r2a, r2b = seg.roots([a, b])
    assert r2a != r2b and {int(r2a), int(r2b)} == set(s["new_roots"])
    assert seg.operation(s["operation_id"])["edges"] == [{"sv_a": min(a, b), "sv_b": max(a, b),
                                                          "affinity": 1.0, "active": False}]
    # undo the split: merged again (a new root id, as in PyChunkedGraph)
    u = seg.undo(s["operation_id"], author="bob")
    (ru,) = u["new_roots"]
    assert ru not in (rm, r2a, r2b) and seg.roots([a, b]).tolist() == [ru, ru]
    assert seg.operation(s["operation_id"])["undone_by"] == u["operation_id"]
    with pytest.raises(InvalidArgument, match="already undone"):
        seg.undo(s["operation_id"])
    r = seg.redo(s["operation_id"], author="bob")
    ra3, rb3 = seg.roots([a, b])
    assert ra3 != rb3 and sorted(r["new_roots"]) == sorted([int(ra3), int(rb3)])
    with pytest.raises(InvalidArgument, match="not undone"):
        seg.redo(s["operation_id"])
    # the past is unchanged: at t0 the initial roots, at the merge the merged root
    assert seg.roots([a, b], timestamp=t0).tolist() == [ra, rb]
    assert seg.roots([a, b], timestamp=m["timestamp"]).tolist() == [rm, rm]
    assert seg.roots([a, b], timestamp=u["timestamp"]).tolist() == [ru, ru]
    # lineage: ra, rb -> rm -> (split) -> ru -> (redo) -> two roots
    lin = seg.lineage([ra3])
    ids = {n["id"] for n in lin["nodes"]}
    assert {int(ra), int(rb), rm, ru, int(ra3)} <= ids
    assert {"source": int(ra), "target": rm} in lin["links"]
    # the log in order, with authors
    log = seg.operations()
    assert [o["kind"] for o in log] == ["merge", "split", "undo", "redo"]
    assert [o["author"] for o in seg.operations(author="bob")] == ["bob", "bob", "bob"]
    # a new process (a fresh Lake, replaying the log) sees the same state
    lake2 = open_lake(lake.root)
    seg2 = segmentation(lake2, "gala")
    assert seg2.roots([a, b]).tolist() == seg.roots([a, b]).tolist()
    assert seg2.roots([a, b], timestamp=m["timestamp"]).tolist() == [rm, rm]
    lake2.close()


def test_rollback_of_one_authors_edits(gala):
    lake, seg = gala
    a, b, rag = _adjacent_pair(lake)
    # a third neuron touching a or b
    others = [(int(x), int(y)) for x, y in zip(rag.sv_a, rag.sv_b, strict=True) if {int(x), int(y)} & {a, b}]
    c = next(y if x in (a, b) else x for x, y in others if {x, y} != {a, b})
    before = seg.roots([a, b, c]).tolist()
    t = dt.datetime.now(dt.UTC)
    seg.merge(a, b, author="mallory")
    seg.merge(b if (min(b, c), max(b, c)) in {(min(p), max(p)) for p in others} else a, c, author="mallory")
    assert len(set(seg.roots([a, b, c]).tolist())) == 1
    rb = seg.rollback("mallory", since=t, author="admin")
    assert rb["kind"] == "rollback" and rb["author"] == "admin" and len(rb["targets"]) == 2
    after = seg.roots([a, b, c]).tolist()
    assert len(set(after)) == 3 and set(after).isdisjoint(before)  # separate again, with new root ids
    with pytest.raises(InvalidArgument, match="no edit since"):
        seg.rollback("mallory", since=t)


def test_bad_input_gives_clear_errors(gala):
    lake, seg = gala
    a, b, _ = _adjacent_pair(lake)
    with pytest.raises(NotFound, match="do not exist") as e:
        seg.merge(a, 999_999, author="x")
    assert e.value.detail["unknown"] == [999_999]
    with pytest.raises(InvalidArgument, match="with itself"):
        seg.merge(a, a, author="x")
    m = seg.merge(a, b, author="x")
    with pytest.raises(InvalidArgument, match="already in the same root"):
        seg.merge(a, b, author="x")
    ids = np.unique(lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50)))
    c = int(next(i for i in ids if i not in (0, a, b)))
    with pytest.raises(InvalidArgument, match="must belong to one root") as e:
        seg.split([a], [c], author="x")
    assert set(e.value.detail["roots"]) == {str(a), str(c)}
    with pytest.raises(InvalidArgument, match="both sources and sinks"):
        seg.split([a], [a], author="x")
    with pytest.raises(InvalidArgument, match="at least one"):
        seg.split([], [b], author="x")
    with pytest.raises(InvalidArgument, match="non-negative integer"):
        seg.roots(["abc"])
    with pytest.raises(NotFound):
        seg.roots([123456789])
    assert seg.roots([123456789, 0], unknown="zero").tolist() == [0, 0]
    with pytest.raises(NotFound, match="root id"):
        seg.leaves(12345)
    with pytest.raises(NotFound, match="operation 99"):
        seg.undo(99)
    with pytest.raises(InvalidArgument, match="before this segmentation was created"):
        seg.roots([a], timestamp="2001-01-01T00:00:00Z")
    with pytest.raises(InvalidArgument, match="not a time"):
        seg.roots([a], timestamp="yesterday")
    with pytest.raises(InvalidArgument, match="author"):
        seg.split([a], [b], author=" ")
    # an edit based on expired roots: 409 with the current roots
    with pytest.raises(Conflict) as e:
        seg.split([a], [b], author="x", roots=m["old_roots"])
    assert e.value.http_status == 409
    assert e.value.detail["current_roots"] == {str(a): m["new_roots"][0], str(b): m["new_roots"][0]}
    with pytest.raises(NotFound, match="no proofreadable segmentation"):
        lake.create_datastack("empty", (1, 1, 1))
        segmentation(lake, "empty")


def test_two_concurrent_editors_one_wins_one_gets_409_nothing_lost(gala):
    lake, seg = gala
    a, b, rag = _adjacent_pair(lake)
    seg.merge(a, b, author="setup")
    root = seg.root(a)
    # a neighbour of the merged neuron for editor 1 to merge in
    c = next(int(y) if int(x) in (a, b) else int(x) for x, y in zip(rag.sv_a, rag.sv_b, strict=True)
             if ({int(x), int(y)} & {a, b}) and not {int(x), int(y)} <= {a, b})
    rc = seg.root(c)
    # two editors in separate Lake instances (separate caches, connections), started together
    lakes = [open_lake(lake.root) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def editor(name, fn):
        s = segmentation(lakes[0 if name == "ed1" else 1], "gala")
        barrier.wait()
        try:
            results[name] = fn(s)
        except Conflict as exc:
            results[name] = exc

    t1 = threading.Thread(target=editor, args=("ed1", lambda s: s.merge(a, c, author="ed1", roots=[root, rc])))
    t2 = threading.Thread(target=editor, args=("ed2", lambda s: s.split([a], [b], author="ed2", roots=[root])))
    t1.start(), t2.start(), t1.join(), t2.join()
    wins = [k for k, v in results.items() if isinstance(v, dict)]
    lost = [k for k, v in results.items() if isinstance(v, Conflict)]
    assert len(wins) == 1 and len(lost) == 1, results
    exc = results[lost[0]]
    assert exc.http_status == 409 and exc.detail["stale_roots"] == [root] or root in exc.detail["stale_roots"]
    # nothing lost: the winner's operation is in the log; the loser retries on the current roots
    assert [o["author"] for o in seg.operations()][-1] == wins[0]
    cur = exc.detail["current_roots"]
    if lost[0] == "ed2":
        retry = seg.split([a], [b], author="ed2", roots=[cur[str(a)]])
        # the split separates a from b; c stays with the side it was merged to
        ra, rb, rc2 = seg.roots([a, b, c])
        assert ra != rb and rc2 in (ra, rb) and retry["kind"] == "split"
    else:
        retry = seg.merge(a, c, author="ed1", roots=[cur[str(a)], int(seg.root(c))])
        assert len(set(seg.roots([a, c]).tolist())) == 1
    assert [o["author"] for o in seg.operations()][-2:] == [wins[0], lost[0]]
    for lk in lakes:
        lk.close()


CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import neurolake.proofreading.service as S
    from neurolake import open_lake
    from neurolake.proofreading import segmentation
    mode, a, b = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seg = segmentation(open_lake(sys.argv[1]), "gala")
    if mode == "mid":
        S._CRASH_HOOK = lambda kind, seq: os.kill(os.getpid(), signal.SIGKILL)
        seg.merge(a, b, author="crash")
    else:  # loop: edit until killed from outside
        import itertools
        seg.root(a)  # imports and the graph state loaded: the kill window below falls on edits
        print("ready", flush=True)
        for i in itertools.count():
            if seg.root(a) == seg.root(b):
                seg.split([a], [b], author="loop")
            else:
                seg.merge(a, b, author="loop")
""")


def test_killed_mid_edit_leaves_old_state(gala, tmp_path):
    lake, seg = gala
    a, b, _ = _adjacent_pair(lake)
    before = seg.roots([a, b]).tolist()
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(lake.root), "mid", str(a), str(b)], capture_output=True,
                       timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    lake2 = open_lake(lake.root)
    seg2 = segmentation(lake2, "gala")
    assert seg2.info()["operations"] == 0 and seg2.operations() == []
    assert seg2.roots([a, b]).tolist() == before
    seg2.merge(a, b, author="after")  # the lake is usable: the lock was released with the dead process
    assert seg2.info()["operations"] == 1
    lake2.close()


def test_killed_at_random_moments_never_leaves_a_mix(gala, tmp_path):
    lake, seg = gala
    a, b, _ = _adjacent_pair(lake)
    script = tmp_path / "loop.py"
    script.write_text(CRASH_SCRIPT)
    rng = np.random.default_rng(5)
    for _ in range(3):
        p = subprocess.Popen([sys.executable, str(script), str(lake.root), "loop", str(a), str(b)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.2, 0.8)))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    lake2 = open_lake(lake.root)
    seg2 = segmentation(lake2, "gala")
    ops = seg2.operations()
    assert len(ops) == seg2.info()["operations"] > 0
    assert [o["operation_id"] for o in ops] == list(range(1, len(ops) + 1))
    # every operation is complete: its new roots are the current ones or expired by the next operation
    st = seg2.state()
    for o in ops:
        for r in o["new_roots"]:
            info = seg2.root_info(r)
            assert info["created_by"] == o["operation_id"]
    # the state replayed from the log agrees with the last operation
    last = ops[-1]
    cur = set(seg2.roots([a, b]).tolist())
    assert cur == set(last["new_roots"]) or cur <= set(last["new_roots"])
    assert (len(cur) == 1) == (last["kind"] == "merge")
    assert st.seq == len(ops)
    lake2.close()


def test_postgres_catalog_edits_and_conflicts(gala_template, tmp_path, new_pg_database):
    import shutil

    lake = _gala_lake(tmp_path / "pglake", database_url=new_pg_database())
    try:
        seg = create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
        a, b, _ = _adjacent_pair(lake)
        ra, rb = seg.roots([a, b])
        m = seg.merge(a, b, author="pg", roots=[ra, rb])
        with pytest.raises(Conflict):
            seg.merge(a, b, author="pg2", roots=[ra, rb])
        s = seg.split([a], [b], author="pg")
        seg.undo(s["operation_id"])
        other = open_lake(lake.root)
        seg2 = segmentation(other, "gala")
        assert seg2.roots([a, b], timestamp=m["timestamp"]).tolist() == m["new_roots"] * 2
        assert len(set(seg2.roots([a, b]).tolist())) == 1
        assert len(seg2.operations()) == 3
        other.close()
    finally:
        lake.close()
    shutil.rmtree(tmp_path / "pglake", ignore_errors=True)


def test_mapping_agglomeration_joins_objects_the_rag_does_not_connect(gala):
    lake, _ = gala
    a, b, rag = _adjacent_pair(lake)
    ids = np.unique(np.concatenate([rag.sv_a, rag.sv_b]))
    # a neuron not adjacent to a: same object as a in the mapping
    neigh = {int(y) for x, y in zip(rag.sv_a, rag.sv_b, strict=True) if int(x) == a}
    neigh |= {int(x) for x, y in zip(rag.sv_a, rag.sv_b, strict=True) if int(y) == a}
    far = int(next(i for i in ids if int(i) != a and int(i) not in neigh))
    mapping = {int(i): int(i) for i in ids}
    mapping[far] = a  # object "a" = {a, far}
    mapping[b] = a  # and b, adjacent to a
    seg = create_segmentation(lake, "gala", layer="segmentation", mapping=mapping, overwrite=True)
    assert seg.info()["agglomeration"] == "mapping"
    r = seg.roots([a, b, far])
    assert len(set(r.tolist())) == 1
    assert sorted(seg.leaves(r[0]).tolist()) == sorted([a, b, far])
    # the joining edge has affinity 0: a split between far and a cuts it, not the real contact a-b
    op = seg.split([far], [a], author="t")
    ra, rb, rf = seg.roots([a, b, far])
    assert ra == rb != rf
    cut = seg.operation(op["operation_id"])["edges"]
    assert [e["affinity"] for e in cut] == [0.0]
    # overwrite replaced the old graph (its base files are gone)
    assert len(list((lake.root / "datastacks" / "gala" / "proofreading").glob("base-*"))) == 1


EDITOR_SCRIPT = textwrap.dedent("""
    import json, sys
    from neurolake import open_lake
    from neurolake.errors import Conflict
    from neurolake.proofreading import segmentation
    seg = segmentation(open_lake(sys.argv[1]), "gala")
    a, b, n, name = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    seg.roots([a, b])  # load the state, then start together with the other editor
    import time
    time.sleep(max(0.0, float(sys.argv[6]) - time.time()))
    ok = conflicts = 0
    for _ in range(n):
        ra, rb = (int(r) for r in seg.roots([a, b]))
        try:
            if ra == rb:
                seg.split([a], [b], author=name, roots=[ra])
            else:
                seg.merge(a, b, author=name, roots=[ra, rb])
            ok += 1
        except Conflict:
            conflicts += 1
    print(json.dumps({"ok": ok, "conflicts": conflicts}))
""")


def test_two_editor_processes_hammering_one_neuron_serialise(gala, tmp_path):
    lake, seg = gala
    a, b, _ = _adjacent_pair(lake)
    script = tmp_path / "editor.py"
    script.write_text(EDITOR_SCRIPT)
    n = 15
    start = time.time() + 12  # both processes import, open the lake, then begin at the same moment
    procs = [subprocess.Popen([sys.executable, str(script), str(lake.root), str(a), str(b), str(n), name,
                               str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("p1", "p2")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ok = sum(o["ok"] for o in outs)
    print("editor outcomes", outs)
    assert sum(o["ok"] + o["conflicts"] for o in outs) == 2 * n
    ops = segmentation(open_lake(lake.root), "gala").operations()
    assert len(ops) == ok  # every accepted edit is in the log, every refused one is not
    # serialisable: each operation was based on exactly the roots the previous one produced
    cur = {int(r) for r in seg.roots([a, b], timestamp=seg.state().created)}
    for o in ops:
        assert set(o["old_roots"]) == cur, o
        cur = set(o["new_roots"])
        assert o["kind"] == ("merge" if len(o["old_roots"]) == 2 else "split")
    assert set(seg.roots([a, b]).tolist()) == cur
