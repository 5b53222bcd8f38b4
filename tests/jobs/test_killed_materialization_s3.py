"""Materialization on Dask of a lake on object storage survives a killed worker: the tables of
tests/jobs/test_killed_materialization.py, built on an S3 lake (moto server, PostgreSQL catalog), materialized on a
real cluster (``dask scheduler`` + 2 ``dask worker`` processes, which inherit the AWS environment) whose worker is
SIGKILLed after 3 tasks. The job completes and every row of every table equals the one of an in-process
materialization of a local lake holding the same data (exact frames, same row groups). There is no rename on S3:
each task writes its object under a deterministic name, so a re-run overwrites it with the same bytes, and the
version's prefix becomes the version only when the client commits the catalog row; nothing is left outside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurolake.errors import InvalidArgument
from neurolake.jobs.records import get_job
from neurolake.materialize import materialize
from tests.jobs.test_killed_materialization import (
    _row_groups,
    _tables,
    build_gala_tables,
    materialize_killing_a_worker,
)

# the two lakes were written at different times: every column but the creation time is compared
VOLATILE = ["created"]


def test_materialization_on_s3_completes_after_a_worker_is_killed(s3_endpoint, dask_cluster, new_s3_lake,
                                                                  tmp_path):
    from neurolake import init_lake, open_lake

    local = init_lake(tmp_path / "lake")
    build_gala_tables(local)
    clean = materialize(local, "gala", batch_rows=50)  # in-process, local folder: the reference
    url, _db = new_s3_lake()
    lake = open_lake(url)
    assert lake.remote
    try:
        build_gala_tables(lake)
        killed, n_tasks = materialize_killing_a_worker(lake, dask_cluster)
        assert killed["rows"] == clean["rows"] > 1000
        assert {t: m["rows"] for t, m in killed["tables"].items()} == {t: m["rows"] for t, m in clean["tables"].items()}
        a, b = _tables(local, clean["version"]), _tables(lake, killed["version"])
        assert sorted(a) == sorted(b) == ["cell_types", "contacts", "synapses"]
        for t in a:
            assert list(a[t].columns) == list(b[t].columns)
            cols = [c for c in a[t].columns if c not in VOLATILE]
            pd.testing.assert_frame_equal(a[t][cols], b[t][cols], check_exact=True)
            assert b[t]["id"].is_unique and len(b[t]) == clean["tables"][t]["rows"]  # no row lost or twice
            assert b[t]["deleted"].isna().all() and (b[t]["created"] <= pd.Timestamp(killed["timestamp"])).all()
        s = b["synapses"]  # the roots really were bound (edits made some differ from the supervoxels)
        assert (s["pre_pt_root_id"].to_numpy(dtype=np.uint64)
                != s["pre_pt_supervoxel_id"].to_numpy(dtype=np.uint64)).any()
        c = b["contacts"]  # looked up under the points by the workers, in the layer on S3
        assert (c["pre_pt_supervoxel_id"] != 0).all() and (c["pre_pt_root_id"] != 0).all()
        assert _row_groups(local, clean["version"]) == _row_groups(lake, killed["version"])
        j = get_job(lake, killed["job"])
        assert (j["kind"], j["status"], j["scheduler"]) == ("materialize", "done", dask_cluster.address)
        assert j["tasks_done"] == j["tasks_total"] == n_tasks and j["error"] is None
        with pytest.raises(InvalidArgument):  # a job that fails on S3 leaves nothing either
            materialize(lake, "gala", scheduler="tcp://127.0.0.1:9")
        # nothing left behind: under materializations/ only the version's prefix, holding only its tables
        base = lake.root / "datastacks" / "gala" / "materializations"
        fs = base.fs
        objects = sorted(k.removeprefix(base.path + "/") for k in fs.find(base.path))
        assert killed["path"].startswith("datastacks/gala/materializations/w-")
        folder = killed["path"].rsplit("/", 1)[-1]
        assert objects == [f"{folder}/{t}.parquet" for t in ("cell_types", "contacts", "synapses")], objects
    finally:
        lake.close()
        local.close()
