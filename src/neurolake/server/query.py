"""SQL over the whole lake over HTTP, with the run store (issue 12; :mod:`neurolake.query`, docs/query.md).

- ``POST /api/v1/query``: run one SELECT (:func:`neurolake.query.engine.run`). Body :class:`QueryBody`.
  JSON answer (default, ``format="json"``): :class:`QueryAnswer` — ``run_id``, ``sha256``, ``rows``,
  ``columns``, ``data`` (one object per row; ids are JSON integers, timestamps ISO-8601 UTC, NaN → null),
  ``partial``, ``manifest`` (the OpenLineage RunEvent). A JSON answer holds at most :data:`MAX_JSON_ROWS`
  rows (``app.state.max_query_rows`` overrides it); a larger result is refused with 413 ``too_large``
  (the run is still recorded: ``detail.run_id``) — ask ``format="arrow"``, aggregate or add a ``LIMIT``.
  Arrow answer (``format="arrow"`` or ``Accept: application/vnd.apache.arrow.stream``): the rows as an
  Arrow IPC stream whose schema metadata holds the manifest under the key ``openlineage`` (as in a saved
  result's Parquet file); headers ``X-Neurolake-Run-Id``, ``X-Neurolake-Sha256``, ``X-Neurolake-Partial``
  and ``Link: </api/v1/runs/{run_id}>; rel="describedby"`` (the manifest is not put in a header: headers
  are size-limited). An Arrow answer larger than the server's ``max_cutout_bytes`` is refused (413).
- ``POST /api/v1/query/explain``: what the query would read and do (:func:`neurolake.query.replay.explain`).
- ``GET /api/v1/runs`` (``user``, ``datastack``, ``mode``, ``limit``), ``GET /api/v1/runs/{run_id}`` (the
  stored run with its manifest; a unique prefix of ≥ 8 characters is enough),
  ``POST /api/v1/runs/{run_id}/reproduce``: re-run with the recorded pins. The answer is **200** for every
  outcome; its ``status`` says ``identical``, ``different`` or ``input_gone`` (the reproduction ran and this
  is its finding; errors such as an unknown run or a forbidden table are 4xx).

Under ``serve --auth``:

- the request's principal is passed to the engine, so a query, an explain and a reproduce read only
  tables the user may read (datastack role or public datastack, and each annotation table's own read
  permission): a forbidden table is 403; no token is 401; statements other than one SELECT, and reads
  of files or URLs outside the query's own tables (``read_csv('/etc/passwd')``, ``COPY … TO``,
  ``ATTACH``, ``INSTALL``, ``SET``), are refused by the engine (403 ``permission_denied``);
- runs are private to their user: a user who is not a lake admin lists and sees only their own runs
  (``user=`` naming someone else is 403; another user's run id answers the 404 of an unknown run);
  lake admins see every run;
- answers to a user who is not a lake admin name the lake's folder ``<lake>`` (manifests, explain inputs,
  result files), as error answers do; the stored manifest keeps the real paths;
- queries count against the user's quota like every request: the request and the answer's bytes (the
  result rows) are counted by :class:`neurolake.access.http.AuthMiddleware`, and a used-up quota is 429
  before the query runs.

Without ``--auth`` the local user has every right and sees every run. Routers only translate.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from neurolake.errors import InvalidArgument, NotFound, TooLarge
from neurolake.lake import Lake
from neurolake.server.access import Need
from neurolake.server.deps import get_lake, principal_of
from neurolake.server.models import Also, Limit, Model
from neurolake.server.routing import APIRouter

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_JSON_ROWS = 100_000  # rows of a JSON answer; larger results: format=arrow
RUN_ID = re.compile(r"^[0-9a-fA-F-]{8,36}$")
SELF = Need.self_checked("the query engine checks the principal's read right on every table the SQL names; "
                         "runs are checked against their user")

router = APIRouter(prefix="/api/v1", tags=["query"])


# -------------------------------------------------------------------------------------------------
# bodies and answers
# -------------------------------------------------------------------------------------------------
class QueryBody(BaseModel):
    """``POST /api/v1/query``."""

    model_config = ConfigDict(extra="forbid")
    sql: str = Field(description="one SELECT over the lake's tables: ds.table, ds.\"table@7\", ds.vN.table, "
                                 "ds.vN.connectome, ds.edits, features.name (docs/query.md)")
    params: list[Any] | dict[str, Any] | None = Field(None, description="values of ? (list) or $name (object)")
    mode: Literal["exploratory", "production"] = "exploratory"
    pins: dict[str, Any] | None = Field(None, description='{"ds.table": 7, "features.name": "3f2a…"}')
    sample: float | None = Field(None, description="exploratory: Bernoulli sample fraction of each input, (0, 1]")
    timeout_s: float | None = Field(None, description="exploratory: stop after this many seconds (partial result)")
    datastack: str | None = Field(None, description="datastack of unqualified table names")
    save: bool = Field(False, description="also write the result as Parquet in the lake (runs/<run_id>.parquet)")
    format: Literal["json", "arrow"] | None = Field(None, description="json (default) or arrow (IPC stream); "
                                                                      "the Accept header may ask for arrow too")


class ExplainBody(BaseModel):
    """``POST /api/v1/query/explain``."""

    model_config = ConfigDict(extra="forbid")
    sql: str
    pins: dict[str, Any] | None = None
    datastack: str | None = None
    mode: Literal["exploratory", "production"] = "exploratory"


class Column(Model):
    name: str
    type: str = Field(description="Arrow type, e.g. uint64, int64, double, string, timestamp[us, tz=UTC]")


class QueryAnswer(Model):
    run_id: str = Field(description="uuid of the recorded run (GET /api/v1/runs/{run_id})")
    sha256: str = Field(description="SHA-256 of the result's canonical serialisation (docs/query.md)")
    rows: int
    columns: list[Column]
    data: list[dict[str, Any]] = Field(description="the rows in order; ids JSON integers, timestamps ISO-8601 UTC")
    partial: bool = Field(description="a time-bounded exploratory run stopped early")
    mode: str = Field(description="exploratory or production")
    runtime_class: dict[str, Any] = Field(description="predicted and measured class, seconds, estimate")
    result_file: str | None = Field(None, description="Parquet file of the result (save=true)")
    manifest: dict[str, Any] = Field(description="the OpenLineage RunEvent of the run")


class ExplainAnswer(Model):
    plan_text: str | None = Field(None, description="DuckDB's plan as text")
    plan: list[dict[str, Any]] | None = Field(None, description="DuckDB's plan as a tree")
    estimated_rows: int | None
    estimated_bytes: int | None = Field(description="bytes the scans would read")
    predicted_seconds: float | None
    runtime_class: str | None = Field(description="interactive (< 1 s), short (< 1 min), batch (< 1 h) or long")
    layout: list[dict[str, Any]] = Field(description="per filter column: table, column, predicate, served_by "
                                                     "(sort|partition|statistics|none), row_groups, pruned, advice")
    inputs: list[dict[str, Any]] = Field(description="the tables the query would read, with their pins")
    executed_sql: str
    ordered_by: str = Field(description="query (its own ORDER BY) or all (neurolake adds ORDER BY ALL)")


class RunSummary(Model):
    run_id: str
    created: str = Field(description="ISO-8601 UTC")
    user: str
    mode: str
    status: str = Field(description="ok, partial or failed")
    rows: int
    result_sha256: str | None
    datastacks: list[str]
    sql: str
    result_file: str | None
    protecting: bool = Field(description="a production run: its pinned inputs are protected from expiry/vacuum")


class RunRecord(RunSummary):
    manifest: dict[str, Any] = Field(description="the OpenLineage RunEvent")
    inputs: list[dict[str, Any]] = Field(description="the run's inputs with their pins")


class Reproduction(Model):
    run_id: str | None
    status: str = Field(description="identical, different or input_gone")
    message: str = Field(description='"identical (sha256 …)", what differs, or which input is gone and why')
    sha256: str | None = Field(description="the recorded result hash")
    new_sha256: str | None = Field(None, description="the hash of the re-run (absent when an input is gone)")
    rows: list[int | None] | None = Field(None, description="[recorded, re-run]")
    first_differing_row: int | None = None
    inputs_gone: list[dict[str, Any]] | None = Field(None, description="{input, pin, pin_text, why, error}")


# -------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------
def _principal(request: Request):
    """The principal handed to the core: None for the local user (every right), else the token's user."""
    p = principal_of(request)
    return None if p.local else p


def _public(request: Request, obj: Any) -> Any:
    """``obj`` (JSON-able) as a user who is not a lake admin may see it: the lake's folder (as given and
    resolved) replaced by ``<lake>`` everywhere (input locations and files, result files), as in error
    answers (:func:`neurolake.server.errors.public_error`). Unchanged for admins and the local user."""
    import os

    p = principal_of(request)
    if p.is_admin or p.local:
        return obj
    lake = request.app.state.lake
    roots = {lake.url} if lake.remote else {str(lake.root), os.path.realpath(lake.root)}
    text = json.dumps(obj, default=str)
    for r in sorted(roots, key=len, reverse=True):
        text = text.replace(json.dumps(r)[1:-1], "<lake>")
    return json.loads(text)


def _cell(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _cell(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_cell(x) for x in v]
    return str(v)


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON-able dicts (ids integers, timestamps ISO-8601, NaN/inf → None, bytes hex)."""
    names = table.column_names
    cols = [[_cell(v) for v in table.column(i).to_pylist()] for i in range(table.num_columns)]
    return [dict(zip(names, r, strict=True)) for r in zip(*cols, strict=True)] if cols else []


def _wants_arrow(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "arrow"
    return ARROW_STREAM in request.headers.get("accept", "")


def _arrow_answer(request: Request, res) -> Response:
    table = res.arrow()
    limit = request.app.state.max_cutout_bytes
    if table.nbytes > limit:
        raise TooLarge(f"the result of run {res.run_id} ({res.num_rows} rows, {table.nbytes} bytes) exceeds the "
                       f"server's answer limit of {limit} bytes; aggregate, filter or add a LIMIT",
                       run_id=res.run_id, rows=res.num_rows, size=table.nbytes, limit=limit)
    meta = dict(table.schema.metadata or {})
    meta[b"openlineage"] = json.dumps(_public(request, res.manifest), default=str).encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    headers = {"X-Neurolake-Run-Id": res.run_id, "X-Neurolake-Sha256": res.sha256,
               "X-Neurolake-Partial": "true" if res.partial else "false",
               "Link": f'</api/v1/runs/{res.run_id}>; rel="describedby"'}
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM, headers=headers)


def _json_answer(request: Request, res) -> JSONResponse:
    cap = int(getattr(request.app.state, "max_query_rows", None) or MAX_JSON_ROWS)
    if res.num_rows > cap:
        raise TooLarge(f"the result of run {res.run_id} has {res.num_rows} rows; a JSON answer holds at most {cap}: "
                       'ask format="arrow" (or Accept: application/vnd.apache.arrow.stream), aggregate, or add a '
                       "LIMIT (the run is recorded: GET /api/v1/runs/" + res.run_id + ")",
                       run_id=res.run_id, rows=res.num_rows, limit=cap)
    run = res.run
    body = {"run_id": res.run_id, "sha256": res.sha256, "rows": res.num_rows, "columns": run["columns"],
            "data": json_rows(res.arrow()), "partial": res.partial, "mode": run["mode"],
            "runtime_class": run.get("runtime_class") or {}}
    body.update(_public(request, {"result_file": run.get("result_file"), "manifest": res.manifest}))
    return JSONResponse(body)


def _own_run(request: Request, lake: Lake, run_id: str) -> dict[str, Any]:
    """The stored run ``run_id`` (or unique prefix) if the principal may see it: their own, or any for lake
    admins and the local user. Another user's run answers the same 404 as an unknown id, listing only the
    principal's own recent runs. Raises NotFound, InvalidArgument (malformed or ambiguous id)."""
    from neurolake.provenance.runs import get_run, list_runs

    if not RUN_ID.match(run_id):
        raise InvalidArgument(f"run id {run_id!r} must be a run's uuid or a prefix of at least 8 of its characters "
                              "(hex digits and dashes)", field="run_id", value=run_id)
    p = principal_of(request)
    if p.is_admin:
        return get_run(lake, run_id)
    try:
        rec = get_run(lake, run_id)
    except NotFound:
        rec = None
    except InvalidArgument:  # an ambiguous prefix would name other users' run ids
        rec = None
    if rec is None or rec["user"] != p.name:
        from neurolake.base.names import not_found

        mine = [r["run_id"] for r in list_runs(lake, user=p.name, limit=10)]
        raise not_found("query run", run_id, mine, hint="these are your most recent runs" if mine else "",
                        run_id=run_id)
    return rec


# -------------------------------------------------------------------------------------------------
# routes
# -------------------------------------------------------------------------------------------------
@router.post("/query", access=SELF, summary="Run one SELECT over the lake; the answer carries its manifest")
def query(body: QueryBody, request: Request, lake: Lake = Depends(get_lake)
          ) -> Annotated[QueryAnswer, Also(ARROW_STREAM, description="JSON, or an Arrow IPC stream (format=arrow)")]:
    from neurolake.query.engine import run

    res = run(lake, body.sql, body.params, mode=body.mode, pins=body.pins, sample=body.sample,
              timeout_s=body.timeout_s, principal=_principal(request), datastack=body.datastack, save=body.save)
    if _wants_arrow(request, body.format):
        return _arrow_answer(request, res)
    return _json_answer(request, res)


@router.post("/query/explain", access=SELF,
             summary="The plan, estimated rows and bytes, runtime class and layout advice, before running")
def explain(body: ExplainBody, request: Request, lake: Lake = Depends(get_lake)) -> ExplainAnswer:
    from neurolake.query.replay import explain as explain_query

    return _public(request, explain_query(lake, body.sql, pins=body.pins, datastack=body.datastack,
                                          principal=_principal(request), mode=body.mode))


@router.get("/runs", access=SELF, summary="Recorded query runs, newest first (your own unless you are a lake admin)")
def runs(request: Request, user: str | None = None, datastack: str | None = None,
         mode: Literal["exploratory", "production"] | None = None, limit: Limit = 50,
         lake: Lake = Depends(get_lake)) -> list[RunSummary]:
    from neurolake.provenance.runs import list_runs

    p = principal_of(request)
    if not p.is_admin:
        if user is not None and user != p.name:
            lake.access.require(p, None, "admin", "listing another user's query runs")
        user = p.name
    return _public(request, list_runs(lake, user=user, datastack=datastack, mode=mode, limit=limit))


@router.get("/runs/{run_id}", access=SELF, summary="One recorded run with its manifest (a unique id prefix works)")
def run_record(run_id: str, request: Request, lake: Lake = Depends(get_lake)) -> RunRecord:
    return _public(request, _own_run(request, lake, run_id))


@router.post("/runs/{run_id}/reproduce", access=SELF,
             summary="Re-run a recorded run with its pinned inputs: identical, different or input_gone (200)")
def reproduce(run_id: str, request: Request, lake: Lake = Depends(get_lake)) -> Reproduction:
    from neurolake.query.replay import reproduce as reproduce_run

    rec = _own_run(request, lake, run_id)
    return _public(request, reproduce_run(lake, rec["run_id"], principal=_principal(request)))


__all__ = ["MAX_JSON_ROWS", "json_rows", "router"]
