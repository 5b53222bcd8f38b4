"""Fault injection, proofreading edits (issue 19): every acknowledged edit survives a SIGKILL of the editor.

An edit is one catalog transaction; on SQLite it commits with ``PRAGMA synchronous=NORMAL`` in WAL mode (no
fsync per commit; docs/proofreading.md, "Durability"). These tests kill real editor processes of the gala lake
(the gala FIB-SEM ground truth, proofreadable) and reopen the lake:

- killed from outside while editing in a loop, after it acknowledged (printed) some edits: every
  acknowledged operation is in the log with the roots it returned, the log is contiguous, and the replayed
  state gives the roots of the newest logged operation (at most one more, committed but not yet printed);
- killed just after the commit, before the edit returns: the edit is there (committed = durable);
- killed inside the transaction, just before the commit: nothing of it is there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np

from tests.faults.killing import PRELUDE, run_killed, subprocess_env

EDITOR = """
import json
import neurolake.proofreading.service as S
from neurolake import open_lake
from neurolake.proofreading import segmentation

point, path, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if point == "before-commit":
    S._CRASH_HOOK = lambda kind, seq: die()
elif point == "after-commit":
    S._ACK_HOOK = lambda op: die()
seg = segmentation(open_lake(path), "gala")
print("ready", flush=True)
while True:
    ra, rb = (int(r) for r in seg.roots([a, b]))
    if ra == rb:
        op = seg.split([a], [b], author="killed", roots=[ra])
    else:
        op = seg.merge(a, b, author="killed", roots=[ra, rb])
    print(json.dumps({"operation_id": op["operation_id"], "kind": op["kind"], "new_roots": op["new_roots"]}),
          flush=True)  # acknowledged
"""


def _pair(path) -> tuple[int, int]:
    """Two gala neurons with the largest contact."""
    from neurolake import open_lake
    from neurolake.proofreading.rag import region_adjacency

    lake = open_lake(path)
    rag = region_adjacency(lake.layer("gala", "segmentation"))
    lake.close()
    i = int(np.argmax(rag.area))
    return int(rag.sv_a[i]), int(rag.sv_b[i])


def _log(path, a, b) -> tuple[list[dict], list[int]]:
    """The operation log and the current roots of a, b, read by a fresh Lake (state replayed from the log)."""
    from neurolake import open_lake
    from neurolake.proofreading import segmentation

    lake = open_lake(path)
    try:
        seg = segmentation(lake, "gala")
        ops = seg.operations()
        assert seg.info()["operations"] == len(ops)
        return ops, [int(r) for r in seg.roots([a, b])]
    finally:
        lake.close()


def _ack(p) -> dict:
    """The editor's next acknowledgement; a clear failure with its stderr when it died of an error instead."""
    line = p.stdout.readline()
    if not line:
        p.wait(timeout=60)
        raise AssertionError(f"the editor exited ({p.returncode}) before acknowledging: {p.stderr.read()[-3000:]}")
    return json.loads(line)


def test_every_acknowledged_edit_survives_sigkill(gala_path):
    a, b = _pair(gala_path)
    acked: list[dict] = []
    for k in (7, 23, 2):  # three editor processes, each killed after k acknowledged edits
        p = subprocess.Popen([sys.executable, "-c", PRELUDE + EDITOR, "loop", str(gala_path), str(a), str(b)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        try:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
            mine = [_ack(p) for _ in range(k)]
            os.kill(p.pid, signal.SIGKILL)  # mid-loop: maybe inside the next edit's transaction
            rest, _ = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == -signal.SIGKILL
        mine += [json.loads(line) for line in rest.splitlines() if line.strip()]  # acknowledged before it died
        acked += mine
        ops, roots = _log(gala_path, a, b)
        assert [o["operation_id"] for o in ops] == list(range(1, len(ops) + 1))
        by_id = {o["operation_id"]: o for o in ops}
        for ack in acked:  # every acknowledged edit is there, as acknowledged
            o = by_id.get(ack["operation_id"])
            assert o is not None, f"acknowledged operation {ack['operation_id']} lost (log has {len(ops)})"
            assert (o["kind"], o["new_roots"], o["author"]) == (ack["kind"], ack["new_roots"], "killed")
        # at most one committed edit was not acknowledged yet (the kill came between commit and print)
        assert len(ops) - acked[-1]["operation_id"] in (0, 1)
        assert set(roots) == set(ops[-1]["new_roots"])


def test_killed_after_commit_before_return_keeps_the_edit(gala_path):
    a, b = _pair(gala_path)
    run_killed(EDITOR, "after-commit", str(gala_path), str(a), str(b))
    ops, roots = _log(gala_path, a, b)
    assert [(o["operation_id"], o["kind"]) for o in ops] == [(1, "merge")]
    assert roots == ops[0]["new_roots"] * 2


def test_killed_before_commit_leaves_nothing(gala_path):
    a, b = _pair(gala_path)
    _, before = _log(gala_path, a, b)
    run_killed(EDITOR, "before-commit", str(gala_path), str(a), str(b))
    ops, roots = _log(gala_path, a, b)
    assert ops == [] and roots == before
