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


def test_kill_during_load_leaves_previous_version(ann_lake, ann_lake_path, tmp_path):
    t = create_table(ann_lake, "hemibrain", "crash_sites", "point", properties=SITE_PROPS)
    sites = navis_sites()
    t.append(sites)
    version, count = t.version, t.count()
    big = pd.concat([sites] * 500, ignore_index=True)  # 4.5M rows of the real sites, repeated
    big.to_parquet(tmp_path / "big.parquet")
    proc = subprocess.Popen([sys.executable, "-m", "neurolake.cli", "annotations", "load", str(tmp_path / "big.parquet"),
                             "--lake", str(ann_lake_path), "--datastack", "hemibrain", "--table", "crash_sites",
                             "--batch-rows", "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = t.path
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once the new version's first data file exists
        if len(list(parts.glob("*.parquet"))) > 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the load finished before it could be killed"
    t2 = get_table(ann_lake, "hemibrain", "crash_sites")
    assert t2.version == version and t2.count() == count
    pd.testing.assert_frame_equal(t2.query()[["pt_position_x", "roi"]], t.query()[["pt_position_x", "roi"]])
    ids = t2.append(sites.head(10))  # still writable; ids continue after the ids the dead load reserved
    assert len(ids) == 10 and t2.count() == count + 10 and ids.min() > count


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
    assert "50 synapses detected" in said[0] and "already has 50" in said[1]
    lake.close()
