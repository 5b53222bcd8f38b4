"""A real Dask cluster for the job tests: ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1.

Workers run without a nanny (``--no-nanny``), so a worker killed by a test stays dead and its tasks must
be re-run by the scheduler on the other worker, as after a lost machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

DASK = str(Path(sys.executable).parent / "dask")


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"dask-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"})
        self.procs.append(p)
        return p

    def start(self, n_workers: int = 2) -> None:
        self._start("scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard")
        for _ in range(n_workers):
            self.add_worker()
        self.wait_workers(n_workers)

    def add_worker(self) -> subprocess.Popen:
        w = self._start("worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                        "--host", "127.0.0.1", "--local-directory", str(self.tmp / "workers"))
        self.workers.append(w)
        return w

    def wait_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        end = time.monotonic() + timeout
        while True:
            try:
                with Client(self.address, timeout="5s") as c:
                    c.wait_for_workers(n, timeout=max(1.0, end - time.monotonic()))
                    return
            except (OSError, TimeoutError):
                if time.monotonic() > end:
                    raise

    def kill_worker(self, i: int = 0) -> int:
        w = self.workers[i]
        w.send_signal(signal.SIGKILL)
        w.wait(10)
        return w.pid

    def stop(self) -> None:
        # workers hold nothing worth a clean shutdown (a worker waits ~10 s for its lost scheduler on SIGTERM)
        for p in self.workers:
            if p.poll() is None:
                p.kill()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def dask_cluster(tmp_path):
    c = Cluster(tmp_path)
    c.start(2)
    yield c
    c.stop()
