"""Materialization read in runs from the table's own files: the rows valid at T, after updates and deletes
(files rewritten by Delta MERGE), bound to the roots at T, whatever the run size."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from deltalake import DeltaTable

from neurolake.annotations import get_table
from neurolake.materialize import get_version, live_query, materialize, query_version
from neurolake.proofreading import segmentation


def test_runs_after_updates_and_deletes_match_the_valid_rows(gala_copy):
    lake = gala_copy
    t = get_table(lake, "gala", "synapses")
    ids = t.query(columns=["id"]).df()["id"].to_numpy(dtype=np.int64)
    assert len(ids) > 10
    t.delete(ids[:3].tolist())
    (new,) = t.update([{"id": int(ids[5]), "size": 12345.5}])
    time.sleep(0.01)
    v = materialize(lake, "gala", batch_rows=4)  # many runs of whole row groups
    time.sleep(0.01)
    t.delete([int(ids[6])])  # after T: still in the version
    got = query_version(lake, "gala", v["version"], "synapses").df()
    # the reference: every row version in the Delta table at the version's Delta version, filtered in pandas
    ts = pd.Timestamp(get_version(lake, "gala", v["version"])["timestamp"])
    ref = DeltaTable(str(t.path), version=v["tables"]["synapses"]["delta_version"]).to_pandas()
    ref = ref[(ref["created"] <= ts) & (ref["deleted"].isna() | (ref["deleted"] > ts))].sort_values("id")
    assert got["id"].tolist() == ref["id"].tolist()
    assert not set(ids[:3].tolist()) & set(got["id"].tolist()) and int(ids[6]) in got["id"].tolist()
    assert got.loc[got["size"] == 12345.5, "id"].tolist() == [new] and int(ids[5]) not in got["id"].tolist()
    seg = segmentation(lake, "gala")
    for p in ("pre_pt", "post_pt"):
        assert (got[f"{p}_root_id"].to_numpy(dtype=np.uint64)
                == seg.roots(got[f"{p}_supervoxel_id"].to_numpy(dtype=np.uint64), timestamp=ts)).all()
        assert str(got[f"{p}_root_id"].dtype) in ("uint64", "UInt64")
    live = live_query(lake, "gala", "synapses", ts).df()
    assert live["id"].tolist() == got["id"].tolist()
    assert live["pre_pt_root_id"].tolist() == got["pre_pt_root_id"].tolist()
