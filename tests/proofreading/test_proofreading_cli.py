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
    ra, rb = seg.roots([a, b])
    p = _run(lake, "proofread", "merge", "-d", "gala", str(a), str(b), "--roots", f"{ra},{rb}")
    assert p.returncode == 0, p.stderr
    op = json.loads(p.stdout)
    assert op["author"] == "cli-user" and op["kind"] == "merge"
    p = _run(lake, "proofread", "roots", "-d", "gala", f"{a},{b}")
    assert json.loads(p.stdout) == {str(a): op["new_roots"][0], str(b): op["new_roots"][0]}
    p = _run(lake, "proofread", "merge", "-d", "gala", str(a), str(b), "--roots", f"{ra},{rb}")
    assert p.returncode == 2 and "conflict" in p.stderr and "no longer current" in p.stderr
    p = _run(lake, "proofread", "undo", "-d", "gala", str(op["operation_id"]))
    assert p.returncode == 0, p.stderr
    p = _run(lake, "proofread", "log", "-d", "gala")
    assert [o["kind"] for o in json.loads(p.stdout)] == ["merge", "undo"]
    p = _run(lake, "proofread", "lineage", "-d", "gala", str(op["new_roots"][0]))
    out = json.loads(p.stdout)
    assert out["root"]["is_latest"] is False and len(out["latest_roots"]) == 2
    p = _run(lake, "proofread", "split", "-d", "gala", "--sources", str(a), "--sinks", str(b))
    assert p.returncode == 2 and "one root" in p.stderr
    p = _run(lake, "connectome", "summary", "-d", "gala", "--version", "1")
    assert p.returncode == 0 and json.loads(p.stdout)["version"] == 1, p.stderr
    p = _run(lake, "connectome", "motifs", "-d", "gala")
    assert p.returncode == 0 and len(json.loads(p.stdout)) == 16


def test_cli_info_shows_layers_tables_versions_and_segmentation(gala_copy):
    lake = gala_copy
    p = _run(lake, "info", "-d", "gala")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["name"] == "gala" and [la["name"] for la in out["layers"]] == ["segmentation"]
    assert out["layers"][0]["type"] == "segmentation" and out["layers"][0]["status"] == "ready"
    tables = {t["name"]: t for t in out["tables"]}
    assert set(tables) == {"synapses", "cell_types"}
    assert tables["synapses"]["schema"] == "synapse" and tables["cell_types"]["schema"] == "cell_type"
    for name, t in tables.items():
        assert t["rows"] == lake["gala"].table(name).count() > 0
    assert [v["version"] for v in out["versions"]] == [1]
    assert out["versions"][0]["rows"] == sum(t["rows"] for t in tables.values())
    seg = segmentation(lake, "gala").info()
    assert out["segmentation"]["layer"] == "segmentation" == seg["layer"]
    assert out["segmentation"]["supervoxels"] == seg["supervoxels"] > 0
    # the lake overview names the datastack's layers and tables too
    p = _run(lake, "info")
    assert json.loads(p.stdout) == [{"name": "gala", "description": out["description"],
                                     "voxel_size_nm": out["voxel_size_nm"], "layers": ["segmentation"],
                                     "tables": ["cell_types", "synapses"]}]
    # a datastack without tables, versions or segmentation says so
    lake.create_datastack("empty", (4, 4, 40))
    out = json.loads(_run(lake, "info", "-d", "empty").stdout)
    assert (out["layers"], out["tables"], out["versions"], out["segmentation"]) == ([], [], [], None)
    p = _run(lake, "info", "-d", "nope")
    assert p.returncode == 2 and "error (not_found)" in p.stderr and "gala" in p.stderr


def _terminal_console(monkeypatch):
    """Make the CLI's stderr console a terminal writing into a buffer, so progress bars are drawn."""
    import io

    from rich.console import Console

    from neurolake.cli import _common

    buf = io.StringIO()
    monkeypatch.setattr(_common, "_console", Console(file=buf, force_terminal=True, width=100))
    return buf


def test_cli_progress_bars_on_materialize_and_watershed(gala_copy, monkeypatch):
    from typer.testing import CliRunner

    from neurolake.cli import app

    lake = gala_copy
    buf = _terminal_console(monkeypatch)
    r = CliRunner().invoke(app, ["materialize", "-l", str(lake.root), "-d", "gala"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads(r.stdout)["version"] == 2
    assert "materialize" in buf.getvalue() and "2/2" in buf.getvalue()  # one step per table
    buf = _terminal_console(monkeypatch)
    r = CliRunner().invoke(app, ["segment", "watershed", "-l", str(lake.root), "-d", "gala", "--boundary-layer",
                                 "segmentation", "--boundary-values", "0", "--output", "sv", "--z", "0,4"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "watershed" in buf.getvalue() and "4/4" in buf.getvalue()  # one step per section
    assert lake["gala"].layer("sv").info()["status"] == "ready"
    # not a terminal: nothing drawn
    import io

    from rich.console import Console

    from neurolake.cli import _common

    quiet = io.StringIO()
    monkeypatch.setattr(_common, "_console", Console(file=quiet))
    with _common.Bar() as bar:
        bar("ingest", 1, 3)
    assert quiet.getvalue() == ""
