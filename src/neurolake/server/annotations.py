"""Annotation tables over HTTP: a JSON/Arrow rows API and Neuroglancer precomputed annotations.

- ``/api/v1/datastacks/{ds}/tables``: list (GET) and create (POST) tables; ``/{table}`` metadata;
  ``/{table}/history`` commits; ``/{table}/rows`` insert (POST: JSON rows, ``{"rows": [...]}``,
  ``{"columns": {...}}`` or an Arrow IPC stream with ``Content-Type:
  application/vnd.apache.arrow.stream``), update (PATCH, JSON rows with ``id``), query (GET with
  parameters, or POST ``/{table}/query`` with a JSON body), soft delete (POST ``/{table}/rows/delete``
  with ``{"ids": [...]}``). Query answers are JSON (``format=json``, default) or Arrow IPC
  (``format=arrow``).
- ``/precomputed/{ds}/annotations/{table}/...``: ``info``, ``by_id/<id>``, ``rel_<name>/<segment>``,
  ``spatial0/<i>_<j>_<k>`` (see :mod:`neurolake.annotations.precomputed`), with HEAD, Range and ETag.

Routers only translate: every call goes to :mod:`neurolake.annotations`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import pandas as pd
import pyarrow as pa
from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from neurolake.annotations import create_table, list_tables
from neurolake.annotations.precomputed import precomputed
from neurolake.base.integers import parse_ids, parse_numbers
from neurolake.errors import CorruptData, InvalidArgument, NotFound, PermissionDenied
from neurolake.lake import Lake
from neurolake.server.access import Need
from neurolake.server.bodies import read_arrow
from neurolake.server.deps import annotation_table, author_of, get_lake, principal_of, read_body
from neurolake.server.http import bytes_response
from neurolake.server.models import (
    Also,
    Count,
    Limit,
    Mip,
    PrecomputedAnnotationInfo,
    RowsAnswer,
    RowsDeleted,
    RowsWritten,
    TableCommit,
    TableMetadata,
)
from neurolake.server.routing import APIRouter

ARROW_STREAM = "application/vnd.apache.arrow.stream"
router = APIRouter(tags=["annotations"])
API = "/api/v1/datastacks/{datastack}/tables"


class TableCreate(BaseModel):
    name: str
    schema_type: str = Field(description="synapse, cell_type, nucleus, bound_tag, point, line or box")
    description: str = ""
    voxel_size_nm: list[float] | None = Field(None, description="x, y, z nm per voxel of positions")
    properties: dict[str, str] = Field(default_factory=dict, description="extra columns {name: type}")
    segmentation_layer: str | None = None
    optional_points: list[str] = Field(default_factory=list)
    read_permission: str = "PUBLIC"
    write_permission: str = "PRIVATE"


class RowsQuery(BaseModel):
    ids: list[Count] | None = Field(None, description="row ids (int64)")
    bbox: list[list[float]] | None = Field(None, description="[[x0, y0, z0], [x1, y1, z1]] half-open")
    units: str = "nm"
    mip: Mip = 0
    layer: str | None = None
    bbox_point: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    timestamp: str | float | None = None
    include_deleted: bool = False
    columns: list[str] | None = None
    limit: Limit | None = None
    offset: Count = 0
    positions: str = "voxels"
    format: str = "json"


@router.get(API, access=Need.read(),
            summary="Annotation tables of a datastack (metadata; tables the user may not read are left out)")
def tables(datastack: str, request: Request, lake: Lake = Depends(get_lake)) -> list[TableMetadata]:
    out = []
    for n in list_tables(lake, datastack):
        try:
            out.append(annotation_table(request, lake, datastack, n).metadata())
        except PermissionDenied:
            continue
    return out


@router.post(API, access=Need.write(), status_code=201, summary="Create an annotation table")
def create(datastack: str, body: TableCreate, request: Request, lake: Lake = Depends(get_lake)) -> TableMetadata:
    p = principal_of(request)
    t = create_table(lake, datastack, body.name, body.schema_type, description=body.description,
                     owner=None if p.local else p.name,
                     voxel_size_nm=body.voxel_size_nm, properties=body.properties,
                     segmentation_layer=body.segmentation_layer, optional_points=body.optional_points,
                     read_permission=body.read_permission, write_permission=body.write_permission)
    return t.metadata()


@router.get(API + "/{table}", access=Need.read(),
            summary="Table metadata (schema, voxel resolution, version)")
def table_meta(datastack: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> TableMetadata:
    return annotation_table(request, lake, datastack, table).metadata()


@router.get(API + "/{table}/history", access=Need.read(), summary="Commits of the table, newest first")
def history(datastack: str, table: str, request: Request, limit: Limit | None = None,
            lake: Lake = Depends(get_lake)) -> list[TableCommit]:
    return annotation_table(request, lake, datastack, table).history(limit)


def _rows(body: bytes, content_type: str, max_bytes: int = 64 * 2**20) -> Any:
    """The rows of a write body: an Arrow table (Arrow IPC stream or file; refused (413) when its batches
    declare more than ``max_bytes`` once decompressed) or a DataFrame (JSON)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in (ARROW_STREAM, "application/vnd.apache.arrow.file", "application/x-arrow"):
        return read_arrow(body, max_bytes)
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptData(f"the body is not valid JSON ({exc}); send a list of rows, {{'rows': [...]}}, "
                          f"{{'columns': {{...}}}} or an Arrow IPC stream ({ARROW_STREAM})", field="body") from None
    if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
        doc = doc["rows"]
    if isinstance(doc, dict) and isinstance(doc.get("columns"), dict):
        try:
            return pd.DataFrame(doc["columns"])
        except ValueError as exc:
            raise InvalidArgument(f"columns must be lists of equal length ({exc})", field="columns") from None
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise InvalidArgument("the body must be a list of row objects, {'rows': [...]} or {'columns': {...}}",
                              field="body")
    return pd.DataFrame.from_records(doc)


@router.post(API + "/{table}/rows", access=Need.write(),
             status_code=201, summary="Insert rows (JSON or Arrow IPC); one commit")
async def insert(datastack: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> RowsWritten:
    return await _write(request, lake, datastack, table, "append")


@router.patch(API + "/{table}/rows", access=Need.write(),
              summary="Update rows by id (new rows supersede the old ones)")
async def update(datastack: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> RowsWritten:
    return await _write(request, lake, datastack, table, "update")


async def _write(request: Request, lake: Lake, datastack: str, table: str, how: str) -> dict:
    """Read the body on the event loop; parse it, check the permission and commit in the thread pool."""
    body = await read_body(request)  # 413 beyond NEUROLAKE_MAX_BODY_BYTES

    def run() -> dict:
        rows = _rows(body, request.headers.get("content-type", ""), request.app.state.max_body_bytes)
        t = annotation_table(request, lake, datastack, table, "write")
        ids = getattr(t, how)(rows, author=author_of(request))
        return {"count": int(len(ids)), "ids": [int(i) for i in ids], "version": t.version}

    return await run_in_threadpool(run)


class DeleteBody(BaseModel):
    ids: list[Count] = Field(..., description="row ids (int64)")


@router.post(API + "/{table}/rows/delete", access=Need.write(), summary="Soft-delete rows by id")
def delete(datastack: str, table: str, body: DeleteBody, request: Request, lake: Lake = Depends(get_lake)) -> RowsDeleted:
    t = annotation_table(request, lake, datastack, table, "write")
    n = t.delete(body.ids)
    return {"count": n, "version": t.version}


def _answer(t, q: RowsQuery):
    if q.format not in ("json", "arrow"):
        raise InvalidArgument(f"format {q.format!r} must be 'json' or 'arrow'", field="format", value=q.format)
    tab = t.query(ids=q.ids, bbox=q.bbox, bbox_point=q.bbox_point, units=q.units, mip=q.mip, layer=q.layer,
                  filters=q.filters or None, timestamp=q.timestamp, include_deleted=q.include_deleted,
                  columns=q.columns, limit=q.limit, offset=q.offset, positions=q.positions).arrow()
    if q.format == "arrow":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, tab.schema) as w:
            w.write_table(tab)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
    return JSONResponse({"count": len(tab), "rows": _json_rows(tab)})


def _json_rows(tab: pa.Table) -> list[dict]:
    cols = {}
    for name in tab.column_names:
        c = tab.column(name)
        if pa.types.is_timestamp(c.type):
            vals = [v.isoformat() if v is not None else None for v in c.to_pylist()]
        else:
            vals = c.to_pylist()
            if pa.types.is_floating(c.type):
                vals = [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals]
        cols[name] = vals
    return [dict(zip(cols, r, strict=True)) for r in zip(*cols.values(), strict=True)] if cols else []


def _parse_list(name: str, text: str | None, kind=int) -> list | None:
    if text is None or text == "":
        return None
    return parse_ids(name, text, bound=2**63) if kind is int else parse_numbers(name, text)  # row ids: int64


@router.get(API + "/{table}/rows", access=Need.read(),
            summary="Query rows: ids, bbox (nm or voxels), filters, timestamp")
def query_get(datastack: str, table: str, request: Request,
              ids: str | None = Query(None, description="comma-separated ids"),
              bbox: str | None = Query(None, description="x0,y0,z0,x1,y1,z1 (half-open)"),
              units: str = "nm", mip: Mip = 0, layer: str | None = None, bbox_point: str | None = None,
              timestamp: str | None = None, include_deleted: bool = False,
              columns: str | None = None, limit: Limit | None = None, offset: Count = 0,
              positions: str = "voxels", format: str = "json",
              lake: Lake = Depends(get_lake)) -> Annotated[RowsAnswer, Also(ARROW_STREAM)]:
    """Any other query parameter ``col=value`` (or ``col=v1,v2``… for text use repeated params) filters
    rows on that column."""
    known = {"ids", "bbox", "units", "mip", "layer", "bbox_point", "timestamp", "include_deleted", "columns",
             "limit", "offset", "positions", "format"}
    filters: dict[str, Any] = {}
    for k in request.query_params:
        if k not in known:
            vals = request.query_params.getlist(k)
            filters[k] = vals[0] if len(vals) == 1 else vals
    t = annotation_table(request, lake, datastack, table)
    for k, v in list(filters.items()):  # numbers in the query string → the column's type
        if k in t.arrow_schema.names and not pa.types.is_string(t.arrow_schema.field(k).type):
            try:
                conv = (lambda s: float(s)) if pa.types.is_floating(t.arrow_schema.field(k).type) else int
                filters[k] = [conv(x) for x in v] if isinstance(v, list) else conv(v)
            except ValueError:
                raise InvalidArgument(f"filter {k}={v!r} must be a number", field=k, value=v) from None
    box = _parse_list("bbox", bbox, float)
    if box is not None and len(box) != 6:
        raise InvalidArgument(f"bbox {bbox!r} must be 6 numbers x0,y0,z0,x1,y1,z1", field="bbox", value=bbox)
    q = RowsQuery(ids=_parse_list("ids", ids), bbox=[box[:3], box[3:]] if box else None, units=units, mip=mip,
                  layer=layer, bbox_point=bbox_point, filters=filters, timestamp=timestamp,
                  include_deleted=include_deleted, columns=columns.split(",") if columns else None, limit=limit,
                  offset=offset, positions=positions, format=format)
    return _answer(t, q)


@router.post(API + "/{table}/query", access=Need.read(), summary="Query rows with a JSON body")
def query_post(datastack: str, table: str, body: RowsQuery, request: Request,
               lake: Lake = Depends(get_lake)) -> Annotated[RowsAnswer, Also(ARROW_STREAM)]:
    return _answer(annotation_table(request, lake, datastack, table), body)


# -- Neuroglancer precomputed annotations --------------------------------------------------------
@router.api_route("/precomputed/{datastack}/annotations/{table}/{key:path}", access=Need.read(),
                  methods=["GET", "HEAD"],
                  summary="Precomputed annotations: info, by_id/<id>, rel_<name>/<segment>, spatial0/<i>_<j>_<k>")
def precomputed_file(datastack: str, table: str, key: str, request: Request, lake: Lake = Depends(get_lake)
                     ) -> Annotated[PrecomputedAnnotationInfo, Also("application/octet-stream")]:
    t = annotation_table(request, lake, datastack, table)
    body = precomputed(t).get(key)
    if body is None:
        raise NotFound(f"no precomputed annotation file {key!r} in table {datastack}/{table}",
                       datastack=datastack, table=table, key=key)
    media = "application/json" if key.strip("/") == "info" else "application/octet-stream"
    return bytes_response(request, body, media)

