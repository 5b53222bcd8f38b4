"""Writers that SIGKILL themselves at a chosen point (issue 11 fault injection).

A killed writer is a ``python -c`` subprocess whose script replaces the next library call at the chosen point
with ``os.kill(os.getpid(), signal.SIGKILL)`` (:data:`PRELUDE` defines ``die``, ``die_after(fn)`` and
``module(name)``): the kill
point is deterministic, never a sleep-and-kill race.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

PRELUDE = """
import importlib, os, signal, sys

def module(name):  # the module itself (packages re-export functions under some module names)
    return importlib.import_module(name)

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

def die_after(fn):
    def wrapped(*a, **k):
        fn(*a, **k)
        die()
    return wrapped
"""


def subprocess_env() -> dict[str, str]:
    """The environment of the killed processes: this one's, with bytecode cached in a private folder (under
    ``PYTHONDONTWRITEBYTECODE`` every start would compile numpy/pandas/neurolake again: seconds each)."""
    env = dict(os.environ)
    if env.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in env:
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"neurolake-faults-pycache-{os.getuid()}")
    return env


def run_killed(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``PRELUDE + script`` with ``args``; assert the process died of SIGKILL (not of an error)."""
    p = subprocess.run([sys.executable, "-c", PRELUDE + script, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=subprocess_env())
    assert p.returncode == -9, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return p


def run_killed_at_delta_commit(script: str, table_path, version: int, *args: str, timeout: float = 180) -> None:
    """Run ``PRELUDE + script`` under ``strace``, which SIGKILLs the process as it commits Delta ``version`` of
    the table at ``table_path``: deltalake writes the data files and the log entry as ``N.json#…`` first, then
    links that temp file to ``_delta_log/N.json`` (the atomic put-if-absent that *is* the commit); the kill
    lands on entering that ``linkat``, inside native code. Skips when strace is not installed."""
    import shutil

    import pytest

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (fault injection inside native code)")
    entry = Path(table_path) / "_delta_log" / f"{version:020d}.json"
    p = subprocess.run([strace, "-f", "-qq", "-o", os.devnull, "-P", str(entry), "-e", "trace=linkat,link",
                        "-e", "inject=linkat,link:signal=KILL:when=1", sys.executable, "-c", PRELUDE + script,
                        *map(str, args)], capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    assert p.returncode in (-9, 137), (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert not entry.exists() and list(entry.parent.glob(entry.name + "#*")), "killed between write and link"
