"""Parallel jobs on Dask.

``scheduler`` everywhere in neurolake means:

- ``None`` or ``"local"``: a new ``distributed.LocalCluster`` with one single-threaded worker process
  per core (the default for ingest and pyramids);
- ``"threads"``: an in-process cluster of threads (fast start; for small jobs and tests);
- ``"tcp://host:port"`` (or any address ``distributed.Client`` accepts): an existing cluster.

Job rows with progress (``GET /api/v1/jobs``, ``neurolake jobs list``) are in :mod:`neurolake.jobs.records`;
:func:`run_tasks` counts its tasks into one with ``job=``. See docs/jobs.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from neurolake.errors import InvalidArgument


@contextlib.contextmanager
def dask_client(scheduler: str | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``scheduler`` (see module doc); closes what it started."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler in (None, "", "local"):
        n = os.cpu_count() or 1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
    elif scheduler == "threads":
        with LocalCluster(n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
    else:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InvalidArgument(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}",
                                  field="scheduler", value=scheduler) from exc
        with client:
            yield client


def run_tasks(client: Any, fn: Callable[..., Any], args: Sequence[tuple], on_done: Callable[[Any], None] | None = None,
              job: Any = None) -> list[Any]:
    """Run ``fn(*a)`` for each ``a`` in ``args`` on the cluster; call ``on_done(result)`` as each ends.

    ``job``: a :class:`neurolake.jobs.records.Job` whose row counts these tasks (``tasks_total``) and
    each finished one (``tasks_done``, written at most every 0.5 s). Results come in completion order.
    Raises the first task error after cancelling the rest.
    """
    from distributed import as_completed

    if job is not None:
        job.add(len(args))
    futures = [client.submit(fn, *a, pure=False) for a in args]
    results = []
    try:
        for fut in as_completed(futures):
            res = fut.result()
            results.append(res)
            if job is not None:
                job.done()
            if on_done:
                on_done(res)
    except BaseException:
        client.cancel(futures)
        raise
    return results


def chunked(seq: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in seq:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
