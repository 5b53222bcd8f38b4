"""The ``neurolake`` command as a whole: every command group takes the lake and the datastack the same way,
one default lake (``--lake``, else ``NEUROLAKE_LAKE``, else the current folder), no duplicate commands,
and ``--help`` loads no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from neurolake.cli import app

ROOT = get_command(app)


def _leaves(cmd, path: tuple[str, ...] = ()):
    if hasattr(cmd, "commands"):  # a group (Typer ships its own copy of click: compare by kind, not class)
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield " ".join(path), cmd


COMMANDS = dict(_leaves(ROOT))

# every command that works on one datastack (or filters by one) takes it as --datastack/-d
ON_A_DATASTACK = [
    "ingest", "cutout", "info", "materialize", "audit", "segment watershed",
    *(f"annotations {c}" for c in ("list", "create", "load", "detect", "query", "history", "delete", "vacuum")),
    *(f"proofread {c}" for c in ("init", "info", "merge", "split", "undo", "redo", "rollback", "log", "roots",
                                 "leaves", "lineage")),
    *(f"versions {c}" for c in ("list", "show", "expire", "query")),
    *(f"connectome {c}" for c in ("summary", "partners", "matrix", "motifs", "export")),
    *(f"features {c}" for c in ("register", "list", "show", "status", "update", "verify", "url", "crawl", "delete")),
    "users grant", "users revoke",
]


def test_the_command_tree_is_complete():
    assert set(ON_A_DATASTACK) <= set(COMMANDS)
    assert {"init", "serve", "demo", "usage", "users add", "users list", "tokens create", "tokens list"} <= set(COMMANDS)
    # one command per job: `features list` has every filter, there is no second `features search`
    assert "features search" not in COMMANDS
    filters = {p.name for p in COMMANDS["features list"].params}
    assert {"datastack", "name", "tag", "version", "status", "owner", "column", "q"} <= filters
    assert all(not p.required for p in COMMANDS["features list"].params)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_takes_the_lake_the_same_way(path):
    params = {p.name: p for p in COMMANDS[path].params}
    lake = params.get("lake")
    assert lake is not None and lake.param_type_name == "option", f"{path} has no --lake option"
    assert sorted(lake.opts) == ["--lake", "-l"] and lake.envvar == "NEUROLAKE_LAKE"
    assert not lake.required and lake.default is None  # None = NEUROLAKE_LAKE, else the current folder
    # -l and -d mean the same thing in every command
    for p in COMMANDS[path].params:
        if "-l" in getattr(p, "opts", []):
            assert p.name == "lake", path
        if "-d" in getattr(p, "opts", []) or "--datastack" in getattr(p, "opts", []):
            assert p.name == "datastack", path


@pytest.mark.parametrize("path", ON_A_DATASTACK)
def test_every_datastack_is_given_as_an_option(path):
    params = {p.name: p for p in COMMANDS[path].params}
    ds = params.get("datastack")
    assert ds is not None and ds.param_type_name == "option", f"{path}: the datastack must be --datastack/-d"
    assert sorted(ds.opts) == ["--datastack", "-d"]


def test_no_command_takes_a_datastack_positionally():
    for path, cmd in COMMANDS.items():
        for p in cmd.params:
            if p.param_type_name == "argument":
                assert p.name not in ("datastack", "ds"), path


def _nl(*args, cwd, env_lake=None):
    env = {k: v for k, v in os.environ.items() if k != "NEUROLAKE_LAKE"}
    if env_lake is not None:
        env["NEUROLAKE_LAKE"] = str(env_lake)
    return subprocess.run([sys.executable, "-m", "neurolake.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_one_default_lake_for_every_command(tmp_path):
    here, other = tmp_path / "here", tmp_path / "other"
    here.mkdir()
    other.mkdir()
    # the current folder is the default lake
    p = _nl("init", cwd=here)
    assert p.returncode == 0 and (here / "lake.json").exists(), p.stderr
    p = _nl("info", cwd=here)
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    p = _nl("features", "list", cwd=here)
    assert p.returncode == 0 and p.stdout == "", p.stderr
    # NEUROLAKE_LAKE replaces it; --lake/-l wins over both
    p = _nl("info", cwd=other, env_lake=here)
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    p = _nl("info", cwd=here, env_lake=other)
    assert p.returncode == 2 and "neurolake init" in p.stderr
    p = _nl("info", "-l", here, cwd=other, env_lake=other)
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    p = _nl("users", "list", "--lake", here, cwd=other)
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    # errors: `error (code): message` on stderr, exit status 2
    p = _nl("versions", "list", "-d", "nope", cwd=here)
    assert p.returncode == 2 and "error (not_found)" in p.stderr and "nope" in p.stderr, p.stderr


def test_help_loads_no_heavy_library():
    code = ("import sys\n"
            "sys.argv = ['neurolake', '--help']\n"
            "from neurolake.cli import app\n"
            "try:\n"
            "    app()\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = ('numpy', 'tensorstore', 'pandas', 'pyarrow', 'deltalake', 'fastapi', 'sqlalchemy', 'dask',\n"
            "         'scipy', 'networkx', 'igraph', 'uvicorn', 'neurolake.lake')\n"
            "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage" in p.stdout and "annotations" in p.stdout
    assert p.stderr.strip() == "", f"--help imported {p.stderr.strip()}"


@pytest.mark.parametrize("group", ["annotations", "proofread", "segment", "versions", "connectome", "features",
                                   "users", "tokens"])
def test_every_group_has_help(group):
    r = CliRunner().invoke(app, [group, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output, r.output
    for path in (p for p in COMMANDS if p.startswith(group + " ")):
        r = CliRunner().invoke(app, [*path.split(), "--help"])
        assert r.exit_code == 0 and "--lake" in r.output and "NEUROLAKE_LAKE" in r.output, (path, r.output)
