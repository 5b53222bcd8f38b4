"""Materialization on Dask survives a killed worker: a version materialized on a real cluster (``dask scheduler``
+ 2 ``dask worker`` processes) whose worker is SIGKILLed mid-job completes, and every row of every table equals
the one of a clean in-process run (same rows, same root ids, same row groups), also for a
table whose supervoxels are looked up under its points.

The lake is real: the gala FIB-SEM ground-truth segmentation, proofreadable, with edits (merges) so that root
ids differ from supervoxel ids, a synapse table at real contact sites appended in many commits (so it has many
Delta files: many run tasks) and a cell-type table. Tasks write whole output files (a part per run of row
groups, then one file per table, each by rename); the client commits the version once all tasks are done.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from neurolake.annotations.paths import open_input
from neurolake.jobs.records import get_job, list_jobs
from neurolake.materialize import get_version, materialize, query_version
from tests.conftest import DATA

GALA_GT = str(DATA / "gala_fibsem" / "train-gt.lzf.h5") + ":/stack"
APPENDS = 12  # commits of the synapse table: Delta files, hence run tasks


def build_gala_tables(lake) -> None:
    """On ``lake``: the gala segmentation (proofreadable), a synapse table of 12 commits with soft deletes, a cell
    type table, a table at 4 nm voxels not bound to the segmentation, and merges (roots at T differ from the
    supervoxels). Shared with the S3 variant of this test."""
    from neurolake.annotations import create_table
    from neurolake.proofreading import create_segmentation
    from tests.proofreading.conftest import contact_sites

    lake.ingest(GALA_GT, "gala", "segmentation", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    seg = create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    vol = lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    sites = contact_sites(vol, 1200, seed=3)
    syn = create_table(lake, "gala", "synapses", "synapse", segmentation_layer="segmentation")
    for part in np.array_split(np.arange(len(sites)), APPENDS):
        syn.append(sites.iloc[part].reset_index(drop=True), author="test")
    ids = syn.query(columns=["id"]).df()["id"].to_numpy(dtype=np.int64)
    syn.delete(ids[:25].tolist())  # soft-deleted before T: not in the version
    ids_ct, first = np.unique(vol, return_index=True)
    keep = ids_ct != 0
    z, y, x = np.unravel_index(first[keep], vol.shape)
    ct = create_table(lake, "gala", "cell_types", "cell_type", segmentation_layer="segmentation")
    ct.append(pd.DataFrame({"pt_position": [[int(a), int(b), int(c)] for a, b, c in zip(x, y, z, strict=True)],
                            "cell_type": np.where(np.arange(keep.sum()) % 2 == 0, "large", "small")}), author="test")
    # a table not bound to the segmentation, at 4 nm voxels: its supervoxels are looked up under the points
    con = create_table(lake, "gala", "contacts", "synapse", voxel_size_nm=(4, 4, 4))
    doubled = contact_sites(vol, 300, seed=5)
    for c in ("pre_pt_position", "post_pt_position", "ctr_pt_position"):
        doubled[c] = [[2 * v for v in pos] for pos in doubled[c]]
    for part in np.array_split(np.arange(len(doubled)), 3):
        con.append(doubled.iloc[part].reset_index(drop=True), author="test")
    df = syn.query().df()
    for i in range(3):  # edits: roots at T differ from the supervoxels
        a, b = int(df["pre_pt_supervoxel_id"].iloc[i]), int(df["post_pt_supervoxel_id"].iloc[i])
        if seg.root(a) != seg.root(b):
            seg.merge(a, b, author="editor")
    time.sleep(0.01)


@pytest.fixture(scope="module")
def mat_lake(tmp_path_factory):
    from neurolake import init_lake

    lake = init_lake(tmp_path_factory.mktemp("mat") / "lake")
    build_gala_tables(lake)
    yield lake
    lake.close()


def _tables(lake, version: int) -> dict[str, pd.DataFrame]:
    v = get_version(lake, "gala", version)
    return {t: query_version(lake, "gala", version, t).df().sort_values("id").reset_index(drop=True)
            for t in sorted(v["tables"])}


def _row_groups(lake, version: int) -> dict[str, list[int]]:
    v = get_version(lake, "gala", version)
    out = {}
    for t in v["tables"]:
        md = pq.ParquetFile(open_input(lake.root / v["path"] / f"{t}.parquet")).metadata
        out[t] = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    return out


def materialize_killing_a_worker(lake, cluster) -> tuple[dict, int]:
    """Materialize ``gala`` on ``cluster``, SIGKILLing worker 0 after 3 tasks; checks the worker died while
    tasks were still to run. Returns the materialization's result and the number of tasks reported."""
    done = {"n": 0, "killed": None, "total": 0}

    def progress(phase: str, n: int, total: int) -> None:
        done["n"], done["total"] = n, total
        if n == 3 and done["killed"] is None:  # the other run tasks are queued or running
            done["killed"] = cluster.kill_worker(0)

    killed = materialize(lake, "gala", batch_rows=50, scheduler=cluster.address, progress=progress)
    assert done["killed"] is not None, "the worker was not killed: the job ended too early"
    assert cluster.workers[0].poll() is not None  # really dead
    assert done["total"] > 3 + 2  # tasks were still to run when the worker died (runs + one per table)
    return killed, done["total"]


def test_materialization_completes_after_a_worker_is_killed(dask_cluster, mat_lake):
    lake = mat_lake
    clean = materialize(lake, "gala", batch_rows=50)  # in-process: the reference
    killed, n_tasks = materialize_killing_a_worker(lake, dask_cluster)
    assert killed["version"] == clean["version"] + 1 and killed["rows"] == clean["rows"] > 1000
    a, b = _tables(lake, clean["version"]), _tables(lake, killed["version"])
    assert sorted(a) == sorted(b) == ["cell_types", "contacts", "synapses"]
    for t in a:
        assert len(a[t]) == clean["tables"][t]["rows"] == killed["tables"][t]["rows"]
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=True)
        assert a[t]["id"].is_unique  # no row written twice
    # the roots really were bound (edits made some differ from the supervoxels)
    s = b["synapses"]
    assert (s["pre_pt_root_id"].to_numpy(dtype=np.uint64) != s["pre_pt_supervoxel_id"].to_numpy(dtype=np.uint64)).any()
    c = b["contacts"]  # looked up under the points: real labels (contacts between two neurons), bound to roots
    assert (c["pre_pt_supervoxel_id"] != 0).all() and (c["pre_pt_root_id"] != 0).all()
    assert (c["pre_pt_root_id"] != c["post_pt_root_id"]).mean() > 0.9  # mostly two neurons (some were merged)
    assert _row_groups(lake, clean["version"]) == _row_groups(lake, killed["version"])
    # the job rows: done, every task counted, on the cluster's address
    j = get_job(lake, killed["job"])
    assert (j["kind"], j["status"], j["datastack"], j["scheduler"]) == ("materialize", "done", "gala",
                                                                          dask_cluster.address)
    assert j["tasks_done"] == j["tasks_total"] == n_tasks and j["finished"] and j["error"] is None
    jc = get_job(lake, clean["job"])
    assert (jc["status"], jc["scheduler"], jc["tasks_done"], jc["tasks_total"]) == ("done", "in-process", 3, 3)
    assert [r["id"] for r in list_jobs(lake, kind="materialize")][:2] == [killed["job"], clean["job"]]
    # nothing left behind: the parts and the roots snapshot were removed with the temporary folder
    base = Path(lake.root) / "datastacks" / "gala" / "materializations"
    assert not list(base.glob("tmp-*")) and not list(base.rglob("parts"))
    assert sorted(p.name for p in (Path(lake.root) / killed["path"]).iterdir()) == [
        "cell_types.parquet", "contacts.parquet", "synapses.parquet"]


def test_a_failed_materialization_is_a_failed_job(mat_lake):
    from neurolake.errors import InvalidArgument

    before = {r["id"] for r in list_jobs(mat_lake)}
    with pytest.raises(InvalidArgument):  # no such scheduler: nothing runs, the job says why
        materialize(mat_lake, "gala", scheduler="tcp://127.0.0.1:9")
    (new,) = [r for r in list_jobs(mat_lake) if r["id"] not in before]
    assert new["status"] == "failed" and "cannot reach the Dask scheduler" in new["error"] and new["finished"]
    assert list_jobs(mat_lake, status="failed")[0]["id"] == new["id"]
    base = Path(mat_lake.root) / "datastacks" / "gala" / "materializations"
    assert not list(base.glob("tmp-*"))


def test_threads_scheduler_writes_the_same_version(mat_lake):
    a = materialize(mat_lake, "gala", batch_rows=50)
    b = materialize(mat_lake, "gala", batch_rows=50, scheduler="threads")
    ta, tb = _tables(mat_lake, a["version"]), _tables(mat_lake, b["version"])
    for t in ta:
        pd.testing.assert_frame_equal(ta[t], tb[t], check_exact=True)
    assert _row_groups(mat_lake, a["version"]) == _row_groups(mat_lake, b["version"])
