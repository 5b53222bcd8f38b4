"""``neurolake mesh build | info | export`` on a copy of the meshed gala lake, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import trimesh


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolake.cli", *args], capture_output=True, text=True, timeout=300)


def test_mesh_commands(gala_mesh_path, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(gala_mesh_path, lake)
    r = _run("mesh", "build", "-l", str(lake), "-d", "gala_fibsem", "--layer", "segmentation", "--block", "64,48,20",
             "--scheduler", "threads", "--draco")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["meshed_blocks"] == 0 and summary["objects"] == 87 and summary["info_dir"] == "mesh_draco"
    r = _run("mesh", "info", "-l", str(lake), "-d", "gala_fibsem", "--layer", "segmentation")
    assert r.returncode == 0 and json.loads(r.stdout)["draco"] is True
    r = _run("mesh", "export", "-l", str(lake), "-d", "gala_fibsem", "6", str(tmp_path / "n6.ply"),
             "--layer", "segmentation")
    assert r.returncode == 0, r.stderr
    mesh = trimesh.load(tmp_path / "n6.ply")
    assert mesh.is_watertight and np.all(mesh.bounds[0] >= 0)
    r = _run("mesh", "build", "-l", str(lake), "-d", "gala_fibsem", "--layer", "nope")
    assert r.returncode != 0 and "nope" in r.stderr
    r = _run("mesh", "export", "-l", str(lake), "-d", "gala_fibsem", "6", str(tmp_path / "x.ply"))
    assert r.returncode != 0 and "--layer" in r.stderr
