"""Crash safety: a load killed with SIGKILL mid-write leaves the table at its previous version, readable
and writable; the demo step is idempotent."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
from annotations_data import SITE_PROPS, navis_sites

from neurolake.annotations import create_table, get_table

STREAM_SCRIPT = """
import sys, time
import pandas as pd
from neurolake import open_lake
from neurolake.annotations import get_table
lake = open_lake(sys.argv[1])
t = get_table(lake, "hemibrain", sys.argv[2])
sites = pd.read_parquet(sys.argv[3])

def batches():
    for k in range(1000):
        if k == int(sys.argv[4]):
            print("writing", flush=True)  # the source stalls here, mid-load
            time.sleep(600)
        yield sites

{call}
"""


def _killed_midway(ann_lake_path, table: str, data, call: str, stall_at: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", STREAM_SCRIPT.replace("{call}", call), str(ann_lake_path),
                             table, str(data), str(stall_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_kill_during_stream_load_leaves_previous_version(ann_lake, ann_lake_path, tmp_path):
    t = create_table(ann_lake, "hemibrain", "crash_sites", "point", properties=SITE_PROPS)
    sites = navis_sites()
    t.append(sites)
    version, count, before = t.version, t.count(), t.query().df()
    sites.to_parquet(tmp_path / "sites.parquet")
    _killed_midway(ann_lake_path, "crash_sites", tmp_path / "sites.parquet", "t.append_stream(batches())", 6)
    t2 = get_table(ann_lake, "hemibrain", "crash_sites")
    assert t2.version == version and t2.count() == count
    pd.testing.assert_frame_equal(t2.query().df(), before)
    ids = t2.append(sites.head(10))  # still writable; ids continue after those the dead load reserved
    assert len(ids) == 10 and t2.count() == count + 10 and ids.min() > count


def test_kill_buffered_writer_loses_only_the_buffer(ann_lake, ann_lake_path, tmp_path):
    create_table(ann_lake, "hemibrain", "crash_writer", "point", properties=SITE_PROPS)
    sites = navis_sites()
    sites.to_parquet(tmp_path / "sites.parquet")
    n = len(sites)
    # a flush every 2 batches: batches 0-5 make 3 commits, batch 6 sits in the buffer when the source
    # stalls before batch 7 and the process is killed
    _killed_midway(ann_lake_path, "crash_writer", tmp_path / "sites.parquet",
                   f"w = t.writer(flush_rows={2 * n})\nfor b in batches():\n    w.add(b)", 7)
    t2 = get_table(ann_lake, "hemibrain", "crash_writer")
    assert t2.version == 3 and t2.count() == 6 * n
    assert [h["neurolake_action"] for h in t2.history()[:3]] == ["append"] * 3


def test_demo_step_is_idempotent(demo_lake_path, tmp_path):
    from neurolake import open_lake
    from neurolake.annotations.demo import demo_synapses

    path = tmp_path / "lake"
    shutil.copytree(demo_lake_path, path)
    lake = open_lake(path)
    said: list[str] = []
    demo_synapses(lake, said.append)
    demo_synapses(lake, said.append)
    assert get_table(lake, "gerhard2013", "synapses").count() == 50
    assert "detected 50 synapses" in said[0] and "already derived" in said[-1] and "50 rows" in said[-1]
    lake.close()
