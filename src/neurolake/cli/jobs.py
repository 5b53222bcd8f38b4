"""``neurolake jobs list|show``: heavy steps (ingest, pyramid, materialize, …) and their progress."""

from __future__ import annotations

from typing import Annotated

import typer

from neurolake.cli._common import LakeOpt, MaybeDsOpt, echo_json, open_lake

app = typer.Typer(help="Jobs: heavy steps and their progress (docs/jobs.md).", no_args_is_help=True)


@app.command("list")
def j_list(lake: LakeOpt = None, datastack: MaybeDsOpt = None,
           status: Annotated[str | None, typer.Option(help="running, done, failed or lost (its process is gone)")] = None,
           kind: Annotated[str | None, typer.Option(help="ingest, pyramid, materialize, …")] = None,
           limit: Annotated[int, typer.Option(help="at most this many jobs")] = 20):
    """Jobs, newest first, with tasks done of total (as GET /api/v1/jobs)."""
    from neurolake.jobs.records import list_jobs

    echo_json(list_jobs(open_lake(lake), status=status, kind=kind, datastack=datastack, limit=limit))


@app.command("show")
def j_show(job_id: Annotated[int, typer.Argument(help="job id (from `neurolake jobs list`)")], lake: LakeOpt = None):
    """One job with its progress."""
    from neurolake.jobs.records import get_job

    echo_json(get_job(open_lake(lake), job_id))
