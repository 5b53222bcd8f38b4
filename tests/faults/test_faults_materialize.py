"""Fault injection, materialization (issue 11): ``lake["gala"].versions.create()`` SIGKILLed while it writes a
table's Parquet (after the first batch: the file has no footer yet), between the rename of its folder and the
catalog insert, and after the insert but before the catalog commit.

No half version is ever listed, version 1 reads as before, the next materialization gets number 2 and
complete tables; the folder a killed run leaves (``tmp-*``, or a renamed ``v2-*`` no catalog row names) is
swept by a later run once it is more than a day old (docs/proofreading.md), never while it may belong to a
running one.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from tests.faults.killing import run_killed

KILLED_MATERIALIZE = """
import pyarrow.parquet as pq
from neurolake import open_lake

V, P = module("neurolake.materialize.versions"), module("neurolake.provenance")

point, path = sys.argv[1], sys.argv[2]
if point == "parquet":  # the first batch of the first table is in the file, no footer yet
    pq.ParquetWriter.write_table = die_after(pq.ParquetWriter.write_table)
elif point == "rename":  # the folder is renamed to v2-…, the catalog row not yet inserted
    P.record = die
elif point == "insert":  # the row is inserted (flushed), the catalog transaction not committed
    V._vdict = die
open_lake(path)["gala"].versions.create(batch_rows=100)
"""


def _dump(vs, version: int) -> dict[str, pd.DataFrame]:
    return {t: vs.query(t, version=version).df() for t in vs.tables(version)}


@pytest.mark.parametrize("point", ["parquet", "rename", "insert"])
def test_materialize_killed_midway_lists_no_half_version(gala_path, point):
    from neurolake import open_lake

    base = gala_path / "datastacks" / "gala" / "materializations"
    lake = open_lake(gala_path)
    vs = lake["gala"].versions
    assert [v["version"] for v in vs.list()] == [1]
    v1 = _dump(vs, 1)
    folders = set(os.listdir(base))
    lake.close()

    run_killed(KILLED_MATERIALIZE, point, gala_path)
    left = sorted(set(os.listdir(base)) - folders)
    assert len(left) == 1 and left[0].startswith("tmp-" if point == "parquet" else "v2-"), left

    lake = open_lake(gala_path)  # the lake opens after the kill
    vs = lake["gala"].versions
    assert [v["version"] for v in vs.list()] == [1]  # no half version listed
    assert vs.get()["version"] == 1
    got = _dump(vs, 1)  # the other version reads as before
    assert got.keys() == v1.keys()
    for t in v1:
        pd.testing.assert_frame_equal(got[t], v1[t])

    v2 = vs.create()  # the next materialization gets the next number and whole tables
    assert v2["version"] == 2 and not v2["reused"] and v2["path"] != f"datastacks/gala/materializations/{left[0]}"
    assert [v["version"] for v in vs.list()] == [1, 2]
    live = {t: lake["gala"].table(t).count() for t in vs.tables(2)}
    assert {t: len(vs.query(t, version=2).df()) for t in vs.tables(2)} == live
    assert v2["rows"] == sum(live.values())
    # the dead run's folder (tmp-…, or v2-… that no catalog row names) stays while it may belong to a running
    # materialization, and is swept by a later run once it is more than a day old
    assert (base / left[0]).is_dir()
    old = time.time() - 2 * 86400
    os.utime(base / left[0], (old, old))
    assert vs.create()["version"] == 3
    assert not (base / left[0]).exists()
    assert [v["version"] for v in vs.list()] == [1, 2, 3]
    for v in (1, 2, 3):  # every listed version still has its files
        assert {t: len(df) for t, df in _dump(vs, v).items()} == {t: vs.get(v)["tables"][t]["rows"] for t in v1}
    lake.close()
