"""Jobs over HTTP: the heavy steps (ingest, pyramid, materialize, …) with their progress
(:mod:`neurolake.jobs.records`, docs/jobs.md).

- ``GET /api/v1/jobs`` (``status``, ``kind``, ``datastack``, ``limit``): job rows, newest first;
- ``GET /api/v1/jobs/{job_id}``: one job row.

Under ``serve --auth`` a job is seen by whoever may read its datastack (a role on it, or a public
datastack); jobs without a datastack only by lake admins. A job the principal may not see answers the same
404 as a job that does not exist, so an id never confirms a private datastack's jobs. Without ``--auth``
the local user sees every job. Routers only translate.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Request
from pydantic import Field

from neurolake.errors import NotFound
from neurolake.lake import Lake
from neurolake.server.access import Need, may_read, request_principal, visible_datastacks
from neurolake.server.deps import get_lake
from neurolake.server.models import Limit, Model
from neurolake.server.routing import APIRouter

SELF = Need.self_checked("a job is visible to whoever may read its datastack; the handler checks the job's "
                         "datastack (jobs without one: lake admins)")

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobInfo(Model):
    """One job: a heavy step and its progress (``tasks_done`` of ``tasks_total``; the total may grow while a
    job discovers its work)."""

    id: int
    kind: str = Field(description="ingest, pyramid, materialize, …")
    datastack: str | None = None
    target: str | None = Field(None, description="what the job makes: a layer, the tables of a version, …")
    user: str
    status: Literal["running", "done", "failed", "lost"]
    tasks_total: int
    tasks_done: int
    started: str = Field(description="ISO-8601 UTC")
    finished: str | None = Field(None, description="ISO-8601 UTC; null while running")
    seconds: float = Field(description="run time so far (running) or in all (finished), seconds")
    error: str | None = Field(None, description="the error of a failed job")
    scheduler: str | None = Field(None, description="where the tasks ran: in-process, threads, local or a "
                                                    "Dask scheduler address")


def _admin(request: Request) -> bool:
    p = request_principal(request)
    return p is None or p.is_admin


@router.get("/jobs", access=SELF, summary="Jobs (ingest, pyramid, materialize, …) with their progress, newest first")
def jobs(request: Request, status: Literal["running", "done", "failed", "lost"] | None = None, kind: str | None = None,
         datastack: str | None = None, limit: Limit = 100, lake: Lake = Depends(get_lake)) -> list[JobInfo]:
    from neurolake.jobs.records import list_jobs

    seen = None if _admin(request) else visible_datastacks(request)
    return list_jobs(lake, status=status, kind=kind, datastack=datastack, datastacks=seen, limit=min(limit, 10_000))


@router.get("/jobs/{job_id}", access=SELF, summary="One job with its progress")
def job(job_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request,
        lake: Lake = Depends(get_lake)) -> JobInfo:
    from neurolake.jobs.records import get_job

    j = get_job(lake, job_id)
    if not _admin(request) and (j["datastack"] is None or not may_read(lake, request_principal(request),
                                                                       j["datastack"])):
        raise NotFound(f"job {job_id} does not exist (`GET /api/v1/jobs` lists the jobs)", job_id=job_id)
    return j


__all__ = ["router"]
