"""Fault injection, annotation updates and deletes (issue 11): ``Table.update`` / ``Table.delete`` of the gala
``cell_types`` table SIGKILLed just before their Delta commit (the merge's ``execute``), inside it (strace
kills the process as deltalake links the written log entry into place: the merge's data files are written,
the commit is not) and just after it.

Before the commit, and inside it, the table keeps its old rows exactly (only ids were reserved in the catalog, never reused);
after it the table holds the whole edit: the new rows, the superseded rows marked deleted with their
``superceded_id``, and the old state still readable at a past timestamp. Never half of an edit.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tests.faults.killing import run_killed, run_killed_at_delta_commit

KILLED_EDIT = """
import deltalake.table as DT
from neurolake import open_lake

point, what, path, ids = sys.argv[1], sys.argv[2], sys.argv[3], [int(i) for i in sys.argv[4].split(",")]
if point == "before":
    DT.TableMerger.execute = die
elif point == "after":
    DT.TableMerger.execute = die_after(DT.TableMerger.execute)
# "commit": no patch; strace kills the process inside deltalake's commit
t = open_lake(path)["gala"].table("cell_types")
if what == "update":
    t.update([{"id": i, "cell_type": "killed-" + str(i)} for i in ids])
else:
    t.delete(ids)
"""


def _state(t) -> dict:
    return {"version": t.version, "count": t.count(), "rows": t.query().df(),
            "all": t.query(include_deleted=True).df(), "history": len(t.history())}


@pytest.mark.parametrize("what", ["update", "delete"])
@pytest.mark.parametrize("point", ["before", "commit", "after"])
def test_edit_killed_around_its_commit_is_all_or_nothing(gala_path, point, what):
    from neurolake import open_lake

    lake = open_lake(gala_path)
    t = lake["gala"].table("cell_types")
    old = _state(t)
    edited = np.sort(old["rows"]["id"].to_numpy())[[0, 5, 17, 30, 41]]  # 5 of the neurons
    time.sleep(0.01)
    t_before = pd.Timestamp.now(tz="UTC")
    time.sleep(0.01)
    args = (point, what, gala_path, ",".join(map(str, edited)))
    if point == "commit":
        run_killed_at_delta_commit(KILLED_EDIT, gala_path / "datastacks" / "gala" / "tables" / "cell_types",
                                   old["version"] + 1, *args)
    else:
        run_killed(KILLED_EDIT, *args)

    lake2 = open_lake(gala_path)  # the lake and the table open after the kill
    t2 = lake2["gala"].table("cell_types")
    new = _state(t2)
    if point in ("before", "commit"):  # nothing of the edit is visible
        assert new["version"] == old["version"] and new["history"] == old["history"]
        assert new["count"] == old["count"]
        pd.testing.assert_frame_equal(new["all"], old["all"])
    else:  # the whole edit is visible, in one commit
        assert new["version"] == old["version"] + 1 and new["history"] == old["history"] + 1
        assert t2.history()[0]["neurolake_action"] == what
        rows = new["rows"].set_index("id")
        assert not set(edited) & set(rows.index)  # every edited row left the valid set
        dead = new["all"].set_index("id").loc[edited]
        assert dead["deleted"].notna().all()
        if what == "delete":
            assert new["count"] == old["count"] - len(edited) and len(new["all"]) == len(old["all"])
            assert dead["superceded_id"].isna().all()
        else:
            assert new["count"] == old["count"] and len(new["all"]) == len(old["all"]) + len(edited)
            succ = dead["superceded_id"].astype("int64").to_numpy()
            assert set(succ) <= set(rows.index) and (succ > old["all"]["id"].max()).all()
            assert rows.loc[succ, "cell_type"].tolist() == [f"killed-{i}" for i in edited]
            keep = [c for c in old["rows"].columns if c.startswith("pt_position")]
            pd.testing.assert_frame_equal(rows.loc[succ, keep].reset_index(drop=True),
                                          old["rows"].set_index("id").loc[edited, keep].reset_index(drop=True))
        # the superseded rows' history: the state before the edit reads back exactly
        past = t2.query(timestamp=t_before).df()
        pd.testing.assert_frame_equal(past.drop(columns=["deleted", "superceded_id"]),
                                      old["rows"].drop(columns=["deleted", "superceded_id"]))

    # still writable; the edit runs to completion now, with ids never reused
    if what == "update":
        valid = np.setdiff1d(edited, new["all"]["id"][new["all"]["deleted"].notna()].to_numpy())
        if len(valid):
            got = t2.update([{"id": int(i), "cell_type": "again"} for i in valid])
            assert (got.astype(np.int64) > new["all"]["id"].max()).all()
    else:
        valid = np.setdiff1d(edited, new["all"]["id"][new["all"]["deleted"].notna()].to_numpy())
        if len(valid):
            assert t2.delete(valid) == len(valid)
    assert t2.count() == old["count"] - (len(edited) if what == "delete" else 0)
    lake.close()
    lake2.close()
