"""Electrophysiology over HTTP (issue 18; :mod:`neurolake.ephys`, docs/ephys.md). Translation only.

Under ``/api/v1/datastacks/{datastack}/ephys``:

- ``GET /``: the ephys tables that hold data, with their newest Delta version and row count;
- ``GET /{table}``: rows (``file``, ``cell``, ``version``, ``columns``, ``limit``, ``offset``), as JSON
  ``{"count", "version", "rows"}`` or an Arrow IPC stream (``format=arrow`` or
  ``Accept: application/vnd.apache.arrow.stream``);
- ``GET /files/{file}/sweeps/{sweep}/trace``: one stored sweep (``channel``, ``max_points`` for a min/max
  decimation that keeps spikes), JSON columns ``time_s``, ``response``, ``command`` plus units, or Arrow;
- ``GET /plots/{kind}``: a self-contained, offline Plotly page (``sweep``, ``fi``, ``isi``, ``raster``,
  ``heatmap``; see :mod:`neurolake.ephys.plots`).

Reading needs the viewer role on the datastack (or a public datastack). Ingest is a local job
(``neurolake ephys ingest``), never a server upload of a folder path.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from neurolake.base.names import check_name
from neurolake.errors import InvalidArgument
from neurolake.lake import Lake
from neurolake.server.access import Need
from neurolake.server.annotations import _json_rows
from neurolake.server.deps import get_lake
from neurolake.server.models import Also, Count, EphysRows, EphysTableInfo, EphysTrace, HtmlPageBody, Limit
from neurolake.server.routing import APIRouter

ARROW_STREAM = "application/vnd.apache.arrow.stream"
API = "/api/v1/datastacks/{datastack}/ephys"
MAX_POINTS = 200_000

router = APIRouter(tags=["ephys"])


def _ephys(lake: Lake, datastack: str):
    check_name("datastack", datastack)
    return lake[datastack].ephys


def _wants_arrow(request: Request, format: str | None) -> bool:
    if format not in (None, "json", "arrow"):
        raise InvalidArgument(f"format {format!r} must be 'json' or 'arrow'", field="format", value=format)
    return format == "arrow" or (format is None and ARROW_STREAM in request.headers.get("accept", ""))


def _arrow(tab: pa.Table) -> Response:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tab.schema) as w:
        w.write_table(tab)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)


@router.get(API, access=Need.read(), summary="Ephys tables holding data (newest Delta version, rows)")
def list_tables(datastack: str, lake: Lake = Depends(get_lake)) -> list[EphysTableInfo]:
    from neurolake.ephys import tables

    ep = _ephys(lake, datastack)
    out = []
    for t in ep.tables():
        out.append({"table": t, "version": tables.version(lake, datastack, t),
                    "rows": tables.read(lake, datastack, t, columns=[tables.SCHEMAS[t].names[0]]).num_rows})
    return out


@router.get(API + "/files/{file}/sweeps/{sweep}/trace", access=Need.read(),
            summary="One stored sweep (optionally min/max-decimated for plotting)")
def trace(datastack: str, file: str, sweep: Count, request: Request, channel: Count = 0,
          max_points: Annotated[int | None, Query(ge=2, le=MAX_POINTS)] = None,
          format: Literal["json", "arrow"] | None = None,
          lake: Lake = Depends(get_lake)) -> Annotated[EphysTrace, Also(ARROW_STREAM)]:
    res = _ephys(lake, datastack).trace(file, sweep, channel, max_points=max_points)
    tab = res.arrow()
    if _wants_arrow(request, format):
        return _arrow(tab)
    cols = {n: [None if v != v else v for v in tab.column(n).to_pylist()] for n in tab.column_names}
    return JSONResponse({**{k: res.metadata.get(k) for k in ("file_sha256", "sweep", "channel", "response_unit",
                                                              "command_unit", "sampling_rate_hz")},
                         "points": tab.num_rows, "columns": cols})


@router.get(API + "/plots/{kind}", access=Need.read(),
            summary="A self-contained offline Plotly figure: sweep, fi, isi, raster, heatmap")
def plot(datastack: str, kind: str, file: str | None = None, sweep: Count | None = None, channel: Count = 0,
         cell: str | None = None, well: str | None = None, value: str = "firing_rate_hz", plate: str | None = None,
         lake: Lake = Depends(get_lake)) -> HtmlPageBody:
    from neurolake.ephys.plots import to_html

    fig = _ephys(lake, datastack).plot(kind, file=file, sweep=sweep, channel=channel, cell=cell, well=well,
                                       value=value, plate=plate)
    return HTMLResponse(to_html(fig))


@router.get(API + "/{table}", access=Need.read(), summary="Rows of an ephys table (JSON or Arrow)")
def rows(datastack: str, table: str, request: Request, file: str | None = None, cell: str | None = None,
         version: Count | None = None, columns: str | None = None, limit: Limit | None = None,
         offset: Count = 0, format: Literal["json", "arrow"] | None = None,
         lake: Lake = Depends(get_lake)) -> Annotated[EphysRows, Also(ARROW_STREAM)]:
    ep = _ephys(lake, datastack)
    sha = ep.file(file)["file_sha256"] if file else None
    res = ep.table(table, version=version, file_sha256=sha, cell=cell,
                   columns=[c.strip() for c in columns.split(",")] if columns else None)
    tab = res.arrow()
    tab = tab.slice(offset, limit) if limit is not None else tab.slice(offset)
    if _wants_arrow(request, format):
        return _arrow(tab)
    return JSONResponse({"count": tab.num_rows, "version": res.metadata.get("version"), "rows": _json_rows(tab)})
