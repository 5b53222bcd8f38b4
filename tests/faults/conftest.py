"""Fault-injection fixtures (issue 11): small real lakes, and a runner for writers that SIGKILL themselves.

Killed writers: see :mod:`tests.faults.killing`.

- ``gala_template`` (session, read-only): the proofreading test lake built by
  ``tests/proofreading/conftest.py::build_gala_lake`` — the gala FIB-SEM ground-truth segmentation
  (proofreadable), tables ``synapses`` (400 rows at real contacts) and ``cell_types`` (one row per neuron),
  materialization version 1.
- ``gala_path``: a writable copy of it (a path; tests open and close lakes themselves).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ["HOME"] = tempfile.mkdtemp(prefix="nl-faults-home-")  # nothing of the user's home is touched
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def gala_template(tmp_path_factory) -> dict:
    from tests.proofreading.conftest import build_gala_lake

    return build_gala_lake(tmp_path_factory.mktemp("faults-gala") / "lake")


@pytest.fixture
def gala_path(gala_template, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(gala_template["path"], dst)
    return dst
