"""The proofreading CLI against a copy of the annotated gala lake (a real subprocess per command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from neurolake.proofreading import segmentation


def _run(lake, *args):
    env = {**os.environ, "NEUROLAKE_LAKE": str(lake.root), "NEUROLAKE_USER": "cli-user"}
    return subprocess.run([sys.executable, "-m", "neurolake.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_merge_roots_undo_log_and_errors(gala_copy):
    lake = gala_copy
    seg = segmentation(lake, "gala")
    st = seg.state()
    a, b = int(st.sv_ids[0]), int(st.sv_ids[1])
    ra, rb = seg.get_roots([a, b])
    p = _run(lake, "proofread", "merge", "gala", str(a), str(b), "--roots", f"{ra},{rb}")
    assert p.returncode == 0, p.stderr
    op = json.loads(p.stdout)
    assert op["author"] == "cli-user" and op["kind"] == "merge"
    p = _run(lake, "proofread", "roots", "gala", f"{a},{b}")
    assert json.loads(p.stdout) == {str(a): op["new_roots"][0], str(b): op["new_roots"][0]}
    p = _run(lake, "proofread", "merge", "gala", str(a), str(b), "--roots", f"{ra},{rb}")
    assert p.returncode == 2 and "conflict" in p.stderr and "no longer current" in p.stderr
    p = _run(lake, "proofread", "undo", "gala", str(op["operation_id"]))
    assert p.returncode == 0, p.stderr
    p = _run(lake, "proofread", "log", "gala")
    assert [o["kind"] for o in json.loads(p.stdout)] == ["merge", "undo"]
    p = _run(lake, "proofread", "lineage", "gala", str(op["new_roots"][0]))
    out = json.loads(p.stdout)
    assert out["root"]["is_latest"] is False and len(out["latest_roots"]) == 2
    p = _run(lake, "proofread", "split", "gala", "--sources", str(a), "--sinks", str(b))
    assert p.returncode == 2 and "one root" in p.stderr
    p = _run(lake, "connectome", "summary", "gala", "--version", "1")
    assert p.returncode == 0 and json.loads(p.stdout)["version"] == 1, p.stderr
    p = _run(lake, "connectome", "motifs", "gala")
    assert p.returncode == 0 and len(json.loads(p.stdout)) == 16
