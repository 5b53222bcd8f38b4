"""Fault injection, the demo derivation ``neurolake annotations detect`` (issue 11): the synapse label (223) of
the Gerhard et al. (2013) ssTEM labels turned into ``gerhard2013/synapses``, the CLI process SIGKILLed just
before its Delta commit (the table is created, its rows prepared), inside it (strace kills it as deltalake
links the written log entry into place: the data files are written, the commit is not) and just after it
(before the derivation is recorded in the catalog and anything is reported).

Only the crash property is tested here (idempotence is tests/annotations/test_annotations_detect_rerun.py):
the table opens and holds none or all of the detected rows, never some; running the same command again
completes, and ends with all of them exactly once.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from neurolake.demo import GERHARD_VOXEL
from tests.conftest import DATA
from tests.faults.killing import run_killed, run_killed_at_delta_commit, subprocess_env

DETECT = ["annotations", "detect", "-d", "gerhard2013", "--mask", "labels", "--value", "223",
          "--segmentation-layer", "labels"]
N_SYNAPSES = 50  # connected components of label 223 (the demo's count, tests/annotations)

KILLED_DETECT = """
from neurolake.cli import main

T = module("neurolake.annotations.table")
point, path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if point == "before":
    T.Table._commit = die
elif point == "after":
    T.Table._commit = die_after(T.Table._commit)
# "commit": no patch; strace kills the process inside deltalake's commit
sys.argv = ["neurolake", *args, "--lake", path]
main()
"""


@pytest.fixture(scope="module")
def labels_template(tmp_path_factory):
    from neurolake import init_lake

    path = tmp_path_factory.mktemp("faults-detect") / "lake"
    lake = init_lake(path)
    lake.ingest(str(DATA / "gerhard2013" / "labels"), "gerhard2013", "labels", voxel_size=GERHARD_VOXEL,
                layer_type="segmentation", scheduler="threads")
    lake.close()
    return path


@pytest.fixture
def labels_lake(labels_template, tmp_path):
    import shutil

    dst = tmp_path / "lake"
    shutil.copytree(labels_template, dst)
    return dst


def _rows(path) -> pd.DataFrame | None:
    from neurolake import open_lake

    lake = open_lake(path)
    try:
        if "synapses" not in lake["gerhard2013"].tables():
            return None
        return lake["gerhard2013"].table("synapses").query().df()
    finally:
        lake.close()


@pytest.mark.parametrize(("point", "n_after_kill"), [("before", 0), ("commit", 0), ("after", N_SYNAPSES)])
def test_detect_killed_around_its_commit_holds_none_or_all_rows(labels_lake, point, n_after_kill):
    table = labels_lake / "datastacks" / "gerhard2013" / "tables" / "synapses"
    if point == "commit":  # version 0 is the empty table create_table makes; the rows are version 1
        run_killed_at_delta_commit(KILLED_DETECT, table, 1, point, labels_lake, *DETECT)
        assert list(table.glob("*.parquet"))  # the rows' data file is written, just not committed
    else:
        run_killed(KILLED_DETECT, point, labels_lake, *DETECT)
    killed = _rows(labels_lake)  # the table opens after the kill
    assert killed is not None and len(killed) == n_after_kill
    if n_after_kill:
        assert killed["id"].is_unique and (killed["size_nm3"] > 0).all()

    p = subprocess.run([sys.executable, "-m", "neurolake.cli", *DETECT, "--lake", str(labels_lake)],
                       capture_output=True, text=True, timeout=180, env=subprocess_env())
    assert p.returncode == 0, p.stdout + p.stderr  # the same command completes after the crash
    rows = _rows(labels_lake)
    assert len(rows) == N_SYNAPSES and rows["id"].is_unique
    assert not rows.duplicated(subset=["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]).any()
    if n_after_kill:  # the rows the dead run committed are the table's rows: nothing added or rewritten
        pd.testing.assert_frame_equal(rows, killed)
