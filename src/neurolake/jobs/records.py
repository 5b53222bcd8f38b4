"""Job rows in the catalog: what heavy step runs, for whom, on which scheduler, and how far it got.

``with job(lake, "materialize", datastack="ds", target="v3") as j:`` adds a row (status ``running``) and
marks it ``done`` when the block ends, or ``failed`` with the error's text when it raises (also on an
interrupt). Inside, progress reaches the row in two ways, both throttled to one catalog write per
``interval`` seconds (0.5 s) plus a last one at the end:

- :func:`neurolake.jobs.run_tasks` with ``job=j`` adds its tasks to ``tasks_total`` and counts each
  finished task in ``tasks_done``;
- ``j.progress(inner)`` wraps a ``progress(phase, done, total)`` callback (the CLI's Rich bar): the row's
  totals are the sums over the phases seen so far.

The process running a job writes a heartbeat to its row every :data:`HEARTBEAT_S` seconds. A job whose
process was killed keeps the stored status ``running`` (nothing is left to update it), but is reported as
``lost``: at once when its process ran on this host and is gone, otherwise when its heartbeat is older than
:data:`LOST_AFTER_S`. Rows are read with :func:`list_jobs` and :func:`get_job` (``GET /api/v1/jobs``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

from neurolake.base.integers import INT64_MAX, whole
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import InvalidArgument, NotFound
from neurolake.jobs.models import REPORTED_STATUSES, JobRow

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
HEARTBEAT_S = 10.0  # a running job's process writes its heartbeat this often
LOST_AFTER_S = 3 * HEARTBEAT_S  # a running job with an older heartbeat is reported lost


class Job:
    """The row of one running job and its counters (see the module doc). Thread-safe."""

    def __init__(self, lake, job_id: int, interval: float = 0.5) -> None:
        self.lake = lake
        self.id = int(job_id)
        self.interval = float(interval)
        self._phases: dict[str, list[int]] = {}  # phase -> [done, total]
        self._lock = threading.Lock()
        self._last = 0.0
        self._written: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"job-{self.id}-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self.lake.catalog.session() as s:
                    row = s.get(JobRow, self.id)
                    if row is None or row.status != "running":
                        return
                    row.heartbeat = utcnow()
            except Exception as exc:  # a busy or closed catalog: try again at the next beat
                log.debug("job %s: heartbeat not recorded (%s)", self.id, exc)

    def __repr__(self) -> str:
        done, total = self.counts()
        return f"<Job {self.id}: {done}/{total}>"

    def counts(self) -> tuple[int, int]:
        """(tasks_done, tasks_total) summed over the phases."""
        with self._lock:
            return (sum(d for d, _ in self._phases.values()), sum(t for _, t in self._phases.values()))

    def add(self, n: int, phase: str = "tasks") -> None:
        """``n`` more tasks to do in ``phase``."""
        with self._lock:
            self._phases.setdefault(phase, [0, 0])[1] += int(n)
        self.flush()

    def done(self, n: int = 1, phase: str = "tasks") -> None:
        """``n`` tasks of ``phase`` finished."""
        with self._lock:
            p = self._phases.setdefault(phase, [0, 0])
            p[0] += int(n)
            p[1] = max(p[1], p[0])
        self.flush()

    def phase(self, phase: str, done: int, total: int) -> None:
        """``phase`` is at ``done`` of ``total`` (a ``progress(phase, done, total)`` callback)."""
        with self._lock:
            self._phases[phase] = [int(done), max(int(total), int(done))]
        self.flush()

    def progress(self, inner: Progress | None = None) -> Progress:
        """A ``progress(phase, done, total)`` callback that records into this job, then calls ``inner``."""

        def cb(phase: str, done: int, total: int) -> None:
            self.phase(phase, done, total)
            if inner is not None:
                inner(phase, done, total)

        return cb

    def flush(self, force: bool = False) -> None:
        """Write the counters to the row: at most once per ``interval`` unless ``force``. A failed
        intermediate write (a busy catalog) is logged and retried at the next one."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        done, total = self.counts()
        if (done, total) == self._written and not force:
            return
        self._last = now
        try:
            with self.lake.catalog.session() as s:
                row = s.get(JobRow, self.id)
                if row is not None:
                    row.tasks_done, row.tasks_total = done, total
            self._written = (done, total)
        except Exception as exc:  # progress is best effort; the job itself must not fail for it
            if force:
                raise
            log.warning("job %s: progress not recorded (%s)", self.id, exc)

    def finish(self, error: BaseException | None = None) -> None:
        """Mark the row done (``error`` None) or failed with the error's text."""
        self._stop.set()
        done, total = self.counts()
        with self.lake.catalog.session() as s:
            row = s.get(JobRow, self.id)
            if row is None:
                return
            row.tasks_done, row.tasks_total = done, total
            row.finished = utcnow()
            if error is None:
                row.status = "done"
            else:
                row.status = "failed"
                row.error = (str(error) or type(error).__name__)[:4000]  # KeyboardInterrupt: its name


def start_job(lake, kind: str, *, datastack: str | None = None, target: str | None = None, user: str | None = None,
              scheduler: str | None = None, interval: float = 0.5) -> Job:
    """Add a ``running`` row for a job of ``kind`` and return its :class:`Job`; end it with
    :meth:`Job.finish`. Prefer :func:`job`."""
    from neurolake.provenance import current_user

    with lake.catalog.session() as s:
        now = utcnow()
        row = JobRow(kind=str(kind), datastack=datastack, target=target, user=user or current_user(),
                     status="running", tasks_total=0, tasks_done=0, started=now, scheduler=scheduler,
                     host=socket.gethostname(), pid=os.getpid(), heartbeat=now)
        s.add(row)
        s.flush()
        job_id = row.id
    return Job(lake, job_id, interval)


@contextlib.contextmanager
def job(lake, kind: str, *, datastack: str | None = None, target: str | None = None, user: str | None = None,
        scheduler: str | None = None, interval: float = 0.5) -> Iterator[Job]:
    """A job row around a block (see the module doc): ``done`` when it ends, ``failed`` when it raises
    (the exception propagates)."""
    j = start_job(lake, kind, datastack=datastack, target=target, user=user, scheduler=scheduler, interval=interval)
    try:
        yield j
    except BaseException as exc:
        try:
            j.finish(exc)
        except Exception as rec:  # never hide the job's own error behind a catalog error
            log.warning("job %s: failure not recorded (%s)", j.id, rec)
        raise
    j.finish()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lost(r: JobRow) -> bool:
    """A stored ``running`` job whose process is gone: on this host its pid no longer exists; anywhere, its
    heartbeat is older than LOST_AFTER_S (rows of an older catalog have none: not judged)."""
    if r.status != "running" or r.heartbeat is None:
        return False
    if r.host == socket.gethostname() and r.pid and not _pid_alive(r.pid):
        return True
    return utcnow() - as_utc(r.heartbeat) > dt.timedelta(seconds=LOST_AFTER_S)


def _jdict(r: JobRow) -> dict[str, Any]:
    started, finished = as_utc(r.started), as_utc(r.finished)
    end = finished or utcnow()
    return {"id": r.id, "kind": r.kind, "datastack": r.datastack, "target": r.target, "user": r.user,
            "status": "lost" if _lost(r) else r.status, "tasks_total": r.tasks_total, "tasks_done": r.tasks_done,
            "started": started.isoformat(), "finished": finished.isoformat() if finished else None,
            "seconds": round(max((end - started).total_seconds(), 0.0), 3), "error": r.error,
            "scheduler": r.scheduler}


def list_jobs(lake, *, status: str | None = None, kind: str | None = None, datastack: str | None = None,
              datastacks: list[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Job rows, newest first: ``{"id", "kind", "datastack", "target", "user", "status", "tasks_total",
    "tasks_done", "started", "finished" (ISO-8601 UTC), "seconds" (so far, for a running job), "error",
    "scheduler"}``. Filters: ``status`` (running, done, failed, lost: see the module doc), ``kind``,
    ``datastack``; ``datastacks`` keeps only jobs of these datastacks (jobs without one are dropped too).
    Raises InvalidArgument."""
    if status is not None and status not in REPORTED_STATUSES:
        raise InvalidArgument(f"status {status!r} is not one of {', '.join(REPORTED_STATUSES)}", field="status",
                              value=status, allowed=list(REPORTED_STATUSES))
    limit = whole(limit, "limit", 1, 10_000)
    q = select(JobRow)
    if status is not None:
        q = q.where(JobRow.status == ("running" if status == "lost" else status))
    if kind is not None:
        q = q.where(JobRow.kind == kind)
    if datastack is not None:
        q = q.where(JobRow.datastack == datastack)
    if datastacks is not None:
        q = q.where(JobRow.datastack.in_(list(datastacks)))
    q = q.order_by(JobRow.started.desc(), JobRow.id.desc())
    if status not in ("running", "lost"):  # (those two are told apart after reading)
        q = q.limit(limit)
    with lake.catalog.session() as s:
        rows = [_jdict(r) for r in s.scalars(q)]
    return [r for r in rows if status is None or r["status"] == status][:limit]


def get_job(lake, job_id: int) -> dict[str, Any]:
    """One job row (fields as in :func:`list_jobs`). Raises NotFound, InvalidArgument."""
    jid = whole(job_id, "job_id", 1, INT64_MAX)
    with lake.catalog.session() as s:
        row = s.get(JobRow, jid)
        if row is None:
            raise NotFound(f"job {jid} does not exist (`neurolake jobs list` lists the jobs)", job_id=jid)
        return _jdict(row)
