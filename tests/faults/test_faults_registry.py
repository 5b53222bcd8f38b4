"""Fault injection, feature registration (issue 11): ``lake.features.register(...)`` SIGKILLed while it
validates the table, after its row is inserted (flushed, no audit event yet), after the audit event but
before the catalog commit, and after the commit.

The registry opens after every kill and lists correctly; the entry is absent (and can be registered again)
or complete (every detected field, its files, its audit event; registering again is AlreadyExists). Never
an entry without its audit event or the reverse. The table: per-neuron voxel counts and bounding boxes of
the gala FIB-SEM ground-truth segmentation, as Parquet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from neurolake.access.models import AuditEvent
from neurolake.errors import AlreadyExists
from tests.faults.killing import run_killed

KILLED_REGISTER = """
from neurolake import open_lake

A, R = module("neurolake.access.core"), module("neurolake.catalog.registry")

point, path, location = sys.argv[1], sys.argv[2], sys.argv[3]
if point == "inspect":  # validating the files: nothing written yet
    R.fmts.inspect = die
elif point == "flushed":  # the row is inserted, its audit event not yet added, nothing committed
    A.Access._audit = die
elif point == "audited":  # row and audit event in the transaction, not committed
    R.to_dict = die
elif point == "committed":  # the transaction is committed
    R._grant_cache = die
open_lake(path).features.register(**SPEC, location=location)
"""

SPEC = {"name": "neuron_sizes", "datastack": "gala", "description": "voxel counts of the gala GT neurons",
        "tags": ["morphology", "gala"], "owner_team": "faults", "materialization_version": 1,
        "citation": "Nunez-Iglesias et al. 2014"}


@pytest.fixture(scope="module")
def sizes_parquet(gala_template, tmp_path_factory):
    from scipy import ndimage

    from neurolake import open_lake

    lake = open_lake(gala_template["path"])  # read only
    layer = lake["gala"].layer("segmentation")
    z, y, x = layer.shape(0)
    vol = layer.cutout(x=(0, x), y=(0, y), z=(0, z))
    lake.close()
    ids, counts = np.unique(vol[vol != 0], return_counts=True)
    boxes = ndimage.find_objects(vol.astype(np.int64))
    rows = [{"segment_id": int(i), "voxels": int(n), "x0": boxes[i - 1][2].start, "x1": boxes[i - 1][2].stop,
             "y0": boxes[i - 1][1].start, "y1": boxes[i - 1][1].stop, "z0": boxes[i - 1][0].start,
             "z1": boxes[i - 1][0].stop} for i, n in zip(ids, counts, strict=True)]
    path = tmp_path_factory.mktemp("features") / "neuron_sizes.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _audits(lake) -> int:
    with lake.catalog.session() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "feature.register",
                                                                           AuditEvent.target == SPEC["name"]))


@pytest.mark.parametrize("point", ["inspect", "flushed", "audited", "committed"])
def test_register_killed_midway_leaves_no_partial_entry(gala_path, sizes_parquet, point):
    from neurolake import open_lake

    script = KILLED_REGISTER.replace("**SPEC", "**" + repr(SPEC))
    run_killed(script, point, gala_path, sizes_parquet)

    lake = open_lake(gala_path)  # the lake and its registry open after the kill
    reg = lake.features
    listed = [e["name"] for e in reg.search(datastack="gala")]
    if point != "committed":  # absent, everywhere
        assert listed == [] and reg.search(tag="morphology") == [] and _audits(lake) == 0
        entry = reg.register(**SPEC, location=str(sizes_parquet))  # and registers cleanly now
    else:
        assert listed == [SPEC["name"]] and _audits(lake) == 1
        entry = reg.get(SPEC["name"], "gala", with_files=True)
        with pytest.raises(AlreadyExists):
            reg.register(**SPEC, location=str(sizes_parquet))
    # complete: what the registration detected and was given, its files, searchable, audited once
    df = pd.read_parquet(sizes_parquet)
    assert entry["row_count"] == len(df) > 50 and entry["format"] == "parquet"
    assert [c["name"] for c in entry["schema"]] == list(df.columns)
    assert entry["fingerprint"] and entry["tags"] == SPEC["tags"] and entry["materialization_version"] == 1
    assert entry["file_count"] == 1 and len(reg.get(SPEC["name"], "gala", with_files=True)["files"]) == 1
    assert [e["name"] for e in reg.search(tag="morphology")] == [SPEC["name"]]
    assert [e["name"] for e in reg.search(column="voxels")] == [SPEC["name"]]
    assert reg.verify(SPEC["name"], "gala")["ok"]
    assert _audits(lake) == 1
    lake.close()
