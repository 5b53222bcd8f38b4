"""A job whose process dies is reported ``lost``, not ``running`` forever: at once when the process ran on this
host (its pid is gone), and from anywhere once its heartbeat is older than LOST_AFTER_S."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from neurolake.errors import InvalidArgument
from neurolake.jobs.models import JobRow
from neurolake.jobs.records import LOST_AFTER_S, get_job, job, list_jobs


def test_a_killed_job_is_lost_and_a_live_one_running(fresh_lake, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from neurolake import open_lake
        from neurolake.jobs.records import start_job

        j = start_job(open_lake(sys.argv[1]), "materialize", datastack="ds", target="v1")
        print(j.id, flush=True)
        time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(fresh_lake.root)], stdout=subprocess.PIPE, text=True)
    try:
        job_id = int(proc.stdout.readline())
        assert get_job(fresh_lake, job_id)["status"] == "running"  # its process is alive
        with job(fresh_lake, "pyramid", datastack="ds") as mine:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert get_job(fresh_lake, job_id)["status"] == "lost"
            assert get_job(fresh_lake, mine.id)["status"] == "running"
            assert [j["id"] for j in list_jobs(fresh_lake, status="lost")] == [job_id]
            assert [j["id"] for j in list_jobs(fresh_lake, status="running")] == [mine.id]
        assert get_job(fresh_lake, mine.id)["status"] == "done"
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(InvalidArgument, match="lost"):
        list_jobs(fresh_lake, status="vanished")


def test_a_job_of_another_host_is_lost_when_its_heartbeat_stops(fresh_lake):
    with job(fresh_lake, "ingest", datastack="ds") as j:
        with fresh_lake.catalog.session() as s:  # as if it ran elsewhere, and last beat long ago
            row = s.get(JobRow, j.id)
            row.host, row.pid = "another-host", 1
            row.heartbeat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LOST_AFTER_S + 5)
        assert get_job(fresh_lake, j.id)["status"] == "lost"
        with fresh_lake.catalog.session() as s:  # a fresh heartbeat: running again
            s.get(JobRow, j.id).heartbeat = dt.datetime.now(dt.UTC)
        time.sleep(0.01)
        assert get_job(fresh_lake, j.id)["status"] == "running"


def test_a_running_job_beats(fresh_lake, monkeypatch):
    import neurolake.jobs.records as records

    monkeypatch.setattr(records, "HEARTBEAT_S", 0.05)
    with job(fresh_lake, "ingest") as j:
        with fresh_lake.catalog.session() as s:
            first = s.get(JobRow, j.id).heartbeat
        deadline = time.monotonic() + 10
        while True:
            with fresh_lake.catalog.session() as s:
                now = s.get(JobRow, j.id).heartbeat
            if now != first or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert now > first
