"""The architecture rules of pyproject.toml ([tool.importlinter]) hold, and they would catch a break.

`lint-imports` runs on the source tree; then on copies of it with one deliberate violation each (a core
module importing the server, a new package placed in no layer), where it must fail and name the contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(project: Path, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}  # the copy shadows the installed (editable) package
    return subprocess.run([str(LINT), str(project / "pyproject.toml"), "--no-cache"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "neurolake", tmp_path / "src" / "neurolake",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "static", "*.js", "*.map"))
    return tmp_path, tmp_path / "src"


def test_import_contracts_hold():
    p = _lint(ROOT, ROOT / "src")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 kept, 0 broken" in p.stdout


@pytest.mark.parametrize("module, line", [
    ("volumes/spec.py", "import neurolake.server.app  # deliberate violation\n"),
    ("annotations/table.py", "from neurolake.cli import app as _cli  # deliberate violation\n"),
    ("base/time.py", "import neurolake.lake  # deliberate violation: base imports the core\n"),
    ("volumes/layer.py", "import neurolake.annotations.table  # deliberate violation: volumes above annotations\n"),
])
def test_import_contracts_catch_a_violation(tmp_path, module, line):
    project, src = _copy(tmp_path)
    target = src / "neurolake" / module
    text = target.read_text()
    cut = text.index("\nfrom __future__ import annotations\n") + len("\nfrom __future__ import annotations\n") \
        if "from __future__ import annotations" in text else 0
    target.write_text(text[:cut] + line + text[cut:])
    p = _lint(project, src)
    assert p.returncode != 0, p.stdout
    assert "BROKEN" in p.stdout and "is not allowed to import" in p.stdout, p.stdout


def test_a_new_package_must_be_placed_in_a_layer(tmp_path):
    project, src = _copy(tmp_path)
    (src / "neurolake" / "newthing").mkdir()
    (src / "neurolake" / "newthing" / "__init__.py").write_text('"""A package in no layer."""\n')
    p = _lint(project, src)
    assert p.returncode != 0 and "newthing" in p.stdout, p.stdout


def test_every_neurolake_setting_is_read_in_one_place():
    """NEUROLAKE_* variables are read by neurolake.base.settings.Settings only (other modules use lake.settings)."""
    import re

    offenders = []
    for path in sorted((ROOT / "src" / "neurolake").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "base":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(environ|getenv)\b.*NEUROLAKE_", line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
