"""CAVE's annotation engine and schema service for unmodified ``caveclient`` (8.2.1), on neurolake tables.

``CAVEclient(ds, server_address=<this server>).annotation`` works for: ``get_tables``,
``get_table_metadata``, ``get_annotation_count``, ``create_table``, ``get_annotation``,
``post_annotation`` / ``post_annotation_df``, ``update_annotation`` / ``update_annotation_df``,
``delete_annotation``, ``stage_annotations`` + ``upload_staged_annotations``; ``client.schema`` for
``get_schemas``, ``schema_definition``, ``schema_definition_multi``, ``schema_definition_all``.

Routes (AnnotationEngine 4.x, https://github.com/CAVEconnectome/AnnotationEngine ``annotationengine/api.py``;
caveclient ``endpoints.py``); the aligned volume is the datastack:

- ``GET|POST /annotation/api/v2/aligned_volume/{av}/table`` (names; create from ``{"table_name",
  "schema_type", "metadata": {"description", "voxel_resolution_x|y|z", "read_permission",
  "write_permission", ...}}``), ``GET …/table/{t}`` (metadata), ``GET …/table/{t}/count``;
- ``…/table/{t}/annotations``: ``GET ?annotation_ids=1,2`` (rows, deleted ones with ``valid: false``),
  ``POST {"annotations": [...]}`` → new ids, ``PUT`` → ``{old id: new id}``, ``DELETE
  {"annotation_ids": [...]}`` → the deleted ids. Annotations are CAVE's nested form
  (``{"pt": {"position": [x, y, z]}, "cell_type": "..."}``; ``supervoxel_id`` / ``root_id`` may be given
  in a point) or neurolake's flat columns; positions are voxels at the table's voxel resolution;
- ``/schema/versions``, ``/schema/api/v2/type`` (names), ``…/type/{name}`` (JSON schema),
  ``POST …/types?schema_names=a,b``, ``GET …/types_all``;
- views (``client.materialize.get_views``, ``get_view_metadata``, ``get_view_schema(s)``, ``query_view``):
  ``/materialize/api/v3/datastack/{ds}/version/{v}/views[/{view}/metadata|schema|query]``; a view is a
  named join of two annotation tables (:func:`neurolake.materialize.joins.define_view`, HTTP
  ``PUT /api/v1/datastacks/{ds}/views/{view}``) answered on the tables frozen in version ``v``.

Permissions are the annotation tables' own (``read_permission`` / ``write_permission``) on top of the
datastack roles under ``serve --auth``. Routers only translate: storage is :mod:`neurolake.annotations`.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from neurolake.annotations import SCHEMAS, create_table, get_schema, list_tables
from neurolake.annotations.schemas import COMMON, Schema
from neurolake.base.integers import parse_ids
from neurolake.errors import InvalidArgument, NotFound, PermissionDenied
from neurolake.lake import Lake
from neurolake.server.access import Need
from neurolake.server.deps import annotation_table, author_of, get_lake, principal_of, read_json
from neurolake.server.models import (
    CaveAnnotationTable,
    CaveArrowBody,
    CaveJsonSchema,
    CaveView,
    CaveViewSchema,
    Count,
    Row,
)
from neurolake.server.routing import APIRouter

router = APIRouter(tags=["cave"])
AE = "/annotation/api/v2/aligned_volume/{aligned_volume}/table"
SCHEMA = "/schema/api/v2"
# CAVE schema names (EMAnnotationSchemas) that are the same as a neurolake schema
ALIASES = {"cell_type_local": "cell_type", "nucleus_detection": "nucleus"}
JSON_TYPES = {"float": "number", "int": "integer", "uint64": "integer", "str": "string", "bool": "boolean"}


def _schema(name: Any) -> Schema:
    return get_schema(ALIASES.get(name, name) if isinstance(name, str) else name)


# -- annotation tables -----------------------------------------------------------------------------
def _cave_table(t) -> dict[str, Any]:
    vx, vy, vz = t.voxel_size_nm
    created = t.created.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f") if t.created else None
    return {"id": zlib.crc32(f"{t.datastack}/{t.name}".encode()) % 100000, "table_name": t.name,
            "schema_type": t.schema.name, "description": t.description, "valid": True, "created": created,
            "deleted": None, "user_id": t.owner, "notice_text": None, "reference_table": None,
            "flat_segmentation_source": None, "voxel_resolution_x": vx, "voxel_resolution_y": vy,
            "voxel_resolution_z": vz, "read_permission": t.read_permission, "write_permission": t.write_permission,
            "aligned_volume": t.datastack, "properties": t.properties}


@router.get(AE, access=Need.read("aligned_volume"), summary="CAVE annotation: table names of an aligned volume")
def ae_tables(aligned_volume: str, request: Request, timestamp: str | None = None,
              lake: Lake = Depends(get_lake)) -> list[str]:
    """Tables the requester may read (``timestamp`` is accepted and ignored: tables are never dropped)."""
    out = []
    for n in list_tables(lake, aligned_volume):
        try:
            annotation_table(request, lake, aligned_volume, n)
        except (PermissionDenied, NotFound):
            continue
        out.append(n)
    return out


@router.post(AE, access=Need.write("aligned_volume"), summary="CAVE annotation: create a table")
async def ae_create(aligned_volume: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveAnnotationTable:
    body = await read_json(request, empty={})
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be {table_name, schema_type, metadata: {...}}", field="body")
    md = body.get("metadata")
    if not isinstance(md, dict):
        raise InvalidArgument("the body needs metadata: {description, voxel_resolution_x, voxel_resolution_y, "
                              "voxel_resolution_z, read_permission, write_permission}", field="metadata")
    name, schema = body.get("table_name"), body.get("schema_type")
    if not isinstance(name, str) or not name:
        raise InvalidArgument("the body needs table_name (text)", field="table_name")
    sch = _schema(schema)  # InvalidArgument naming the known schemas
    description = md.get("description")
    if not isinstance(description, str) or not description.strip():
        raise InvalidArgument("metadata.description is required (what the table holds, who made it)",
                              field="description")
    ref = (md.get("table_metadata") or {}).get("reference_table") if isinstance(md.get("table_metadata"), dict) \
        else None
    if ref:
        raise InvalidArgument("reference tables (annotations of another table) are not supported by neurolake",
                              field="reference_table", value=str(ref)[:100])
    try:
        res = [md["voxel_resolution_x"], md["voxel_resolution_y"], md["voxel_resolution_z"]]
    except KeyError as exc:
        raise InvalidArgument(f"metadata.{exc.args[0]} is required (nm per voxel of the positions)",
                              field=str(exc.args[0])) from None
    props = md.get("properties")  # neurolake extension: extra typed columns {name: type}
    if props is not None and not isinstance(props, dict):
        raise InvalidArgument("metadata.properties must be {column: type}", field="properties")
    p = principal_of(request)

    def run() -> dict:
        t = create_table(lake, aligned_volume, name, sch.name, description=description, voxel_size_nm=res,
                         properties=props, owner=None if p.local else p.name,
                         read_permission=md.get("read_permission", "PUBLIC"),
                         write_permission=md.get("write_permission", "PRIVATE"))
        return _cave_table(t)

    return await run_in_threadpool(run)


@router.get(AE + "/{table}", access=Need.read("aligned_volume"), summary="CAVE annotation: table metadata")
def ae_table(aligned_volume: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveAnnotationTable:
    return _cave_table(annotation_table(request, lake, aligned_volume, table))


@router.get(AE + "/{table}/count", access=Need.read("aligned_volume"), summary="CAVE annotation: valid rows")
def ae_count(aligned_volume: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> int:
    return annotation_table(request, lake, aligned_volume, table).count()


# -- annotations -----------------------------------------------------------------------------------
def _flat_rows(t, annotations: Any, need_id: bool) -> list[dict[str, Any]]:
    """CAVE's nested annotations → neurolake's flat rows: ``{"pt": {"position": [x, y, z], "supervoxel_id": s,
    "root_id": r}}`` → ``pt_position``, ``pt_supervoxel_id``, ``pt_root_id``; ``valid`` is dropped."""
    if isinstance(annotations, dict):
        annotations = [annotations]
    if not isinstance(annotations, list) or not annotations:
        raise InvalidArgument("annotations must be a non-empty list of annotation objects", field="annotations")
    points = set(t.schema.points)
    rows = []
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            raise InvalidArgument(f"annotation {i} is not an object", field="annotations", rows=[i])
        row: dict[str, Any] = {}
        for k, v in a.items():
            if k == "valid":
                continue
            if k in points and isinstance(v, dict):
                extra = set(v) - {"position", "supervoxel_id", "root_id"}
                if extra:
                    raise InvalidArgument(f"annotation {i}: point {k!r} has unknown keys {sorted(extra)}; a point is "
                                          "{position: [x, y, z], supervoxel_id, root_id}", field=k, rows=[i])
                row[f"{k}_position"] = v.get("position")
                for key in ("supervoxel_id", "root_id"):
                    if v.get(key) is not None:
                        row[f"{k}_{key}"] = v[key]
            elif k in points:
                row[f"{k}_position"] = v  # [x, y, z] given directly
            else:
                row[k] = v
        if need_id and "id" not in row:
            raise InvalidArgument(f"annotation {i} has no id: an update names the annotation it replaces",
                                  field="id", rows=[i])
        rows.append(row)
    out = []
    for i, r in enumerate(rows):  # split [x, y, z] here: updates overlay columns on the stored row
        flat: dict[str, Any] = {}
        for k, v in r.items():
            if not (k.endswith("_position") and k[:-len("_position")] in points):
                flat[k] = v
            elif v is not None:
                if not (isinstance(v, list | tuple) and len(v) == 3):
                    raise InvalidArgument(f"annotation {i}: {k[:-len('_position')]!r} position must be [x, y, z], "
                                          f"got {v!r}"[:300], field=k, rows=[i])
                flat.update({f"{k}_{a}": x for a, x in zip("xyz", v, strict=True)})
        out.append(flat)
    return out


def _same_keys(t, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Update rows that give different columns: each row's missing columns keep their stored values (an
    update overlays whole columns, so a column given for one row only would empty it in the others)."""
    import pandas as pd

    keys = set().union(*rows)
    if all(set(r) == keys for r in rows):
        return rows
    try:
        ids = [int(r["id"]) for r in rows]
    except (TypeError, ValueError):
        return rows  # the update reports the bad ids
    cols = sorted(k for k in keys - {"id"} if k in t.arrow_schema.names)
    cur = t.query(ids=ids, columns=["id", *cols]).df().set_index("id") if cols else None
    out = []
    for r, i in zip(rows, ids, strict=True):
        r = dict(r)
        for k in cols:
            if k not in r and cur is not None and i in cur.index:
                v = cur.at[i, k]
                r[k] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
        out.append(r)
    return out


def _authored(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Under ``--auth`` the rows' author is the token's user (an ``author`` field is dropped unless the
    user is an admin), as on every write route (:func:`neurolake.server.deps.author_of`)."""
    p = principal_of(request)
    if p.local or p.is_admin:
        return rows
    return [{k: v for k, v in r.items() if k != "author"} for r in rows]


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame.from_records(rows)


def _cave_rows(tab) -> list[dict[str, Any]]:
    """Query rows → CAVE's flattened annotations: ``P_position`` as [x, y, z], timestamps ISO, ``valid``."""
    import pyarrow as pa

    cols: dict[str, list] = {}
    names = tab.column_names
    done = set()
    for name in names:
        if name in done:
            continue
        if "_position_" in name and name[-2:] in ("_x", "_y", "_z"):
            base = name[:-2]
            xyz = [tab.column(f"{base}_{a}").to_pylist() for a in "xyz"]
            cols[base] = [None if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in p) else list(p)
                          for p in zip(*xyz, strict=True)]
            done.update(f"{base}_{a}" for a in "xyz")
            continue
        c = tab.column(name)
        if pa.types.is_timestamp(c.type):
            cols[name] = [v.isoformat() if v is not None else None for v in c.to_pylist()]
        else:
            vals = c.to_pylist()
            if pa.types.is_floating(c.type):
                vals = [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
            cols[name] = vals
    cols["valid"] = [d is None for d in tab.column("deleted").to_pylist()] if "deleted" in names else []
    return [dict(zip(cols, r, strict=True)) for r in zip(*cols.values(), strict=True)] if cols else []


AE_ROWS = AE + "/{table}/annotations"


@router.get(AE_ROWS, access=Need.read("aligned_volume"), summary="CAVE annotation: annotations by id")
def ae_get(aligned_volume: str, table: str, request: Request, annotation_ids: str | None = None,
           lake: Lake = Depends(get_lake)) -> list[Row]:
    """Every row with these ids, also deleted or superseded ones (``valid`` false). 404 when none exists."""
    ids = parse_ids("annotation_ids", annotation_ids or "", bound=2**63)
    if not ids:
        raise InvalidArgument("annotation_ids must name at least one id (comma-separated)", field="annotation_ids")
    t = annotation_table(request, lake, aligned_volume, table)
    tab = t.query(ids=ids, include_deleted=True).arrow()
    if len(tab) == 0:
        raise NotFound(f"annotation ids {ids[:10]} are not in table {table!r}", table=table, ids=ids[:10])
    return _cave_rows(tab)


async def _body(request: Request, key: str) -> Any:
    body = await read_json(request, empty={})
    if not isinstance(body, dict) or key not in body:
        raise InvalidArgument(f"the body must be {{{key!r}: [...]}}", field=key)
    return body[key]


@router.post(AE_ROWS, access=Need.write("aligned_volume"), summary="CAVE annotation: insert annotations")
async def ae_post(aligned_volume: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> list[int]:
    annotations = await _body(request, "annotations")

    def run() -> list[int]:
        t = annotation_table(request, lake, aligned_volume, table, "write")
        ids = t.append(_frame(_authored(request, _flat_rows(t, annotations, False))), author=author_of(request))
        return [int(i) for i in ids]

    return await run_in_threadpool(run)


@router.put(AE_ROWS, access=Need.write("aligned_volume"), summary="CAVE annotation: update annotations")
async def ae_put(aligned_volume: str, table: str, request: Request,
                 lake: Lake = Depends(get_lake)) -> dict[str, int]:
    """Each annotation names the ``id`` it replaces; answers ``{old id: new id}`` (ids as JSON keys)."""
    annotations = await _body(request, "annotations")

    def run() -> dict[str, int]:
        t = annotation_table(request, lake, aligned_volume, table, "write")
        rows = _same_keys(t, _authored(request, _flat_rows(t, annotations, True)))
        new = t.update(_frame(rows), author=author_of(request))
        return {str(int(r["id"])): int(n) for r, n in zip(rows, new, strict=True)}

    return await run_in_threadpool(run)


@router.delete(AE_ROWS, access=Need.write("aligned_volume"), summary="CAVE annotation: delete annotations")
async def ae_delete(aligned_volume: str, table: str, request: Request, lake: Lake = Depends(get_lake)) -> list[int]:
    """Soft delete (rows keep their history); answers the deleted ids. 404 naming ids that are not valid rows."""
    ids = await _body(request, "annotation_ids")
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = [ids]
    if not isinstance(ids, list) or not ids:
        raise InvalidArgument("annotation_ids must be a non-empty list of ids", field="annotation_ids")

    def run() -> list[int]:
        t = annotation_table(request, lake, aligned_volume, table, "write")
        t.delete(ids, author=author_of(request))
        return [int(i) for i in dict.fromkeys(ids)]

    return await run_in_threadpool(run)


# -- schema service --------------------------------------------------------------------------------
def _class_name(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_")) + "Annotation"


def json_schema(name: str) -> dict[str, Any]:
    """The JSON schema (draft 7, marshmallow-jsonschema's shape) of neurolake schema ``name``: bound points
    as ``BoundSpatialPoint`` objects, the schema's fields and the common ``confidence``/``status``/
    ``metadata``. Tables may add properties: the annotation object allows further keys."""
    sch = _schema(name)
    cls = _class_name(name)
    props: dict[str, Any] = {}
    required = []
    for p in sch.points:
        props[p] = {"type": "object", "$ref": "#/definitions/BoundSpatialPoint"}
        if p not in sch.optional_points:
            required.append(p)
    for f in (*(c for c in COMMON if c.name != "author"), *sch.fields):
        typ = JSON_TYPES[f.type]
        props[f.name] = {"title": f.name, "type": ["object", "string"] if f.name == "metadata" else typ}
        if f.description:
            props[f.name]["description"] = f.description
        if f.required:
            required.append(f.name)
    props["valid"] = {"title": "valid", "type": "boolean"}
    point = {"type": "object", "additionalProperties": False, "required": ["position"],
             "properties": {"position": {"title": "position", "type": "array", "minItems": 3, "maxItems": 3,
                                         "items": {"type": "number"},
                                         "description": "x, y, z voxels at the table's voxel resolution"},
                            "supervoxel_id": {"title": "supervoxel_id", "type": "integer"},
                            "root_id": {"title": "root_id", "type": "integer"}}}
    return {"$ref": f"#/definitions/{cls}", "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"BoundSpatialPoint": point,
                            cls: {"type": "object", "properties": props, "required": required,
                                  "additionalProperties": True, "description": sch.description}}}


def _names() -> list[str]:
    return [*SCHEMAS, *ALIASES]


@router.get("/schema/versions", access=Need.authenticated(), summary="CAVE schema service: API versions")
def schema_versions() -> list[int]:
    return [2]


@router.get(SCHEMA + "/type", access=Need.authenticated(), summary="CAVE schema service: schema names")
def schema_types() -> list[str]:
    return _names()


@router.get(SCHEMA + "/type/{schema_type}", access=Need.authenticated(),
            summary="CAVE schema service: JSON schema of one schema")
def schema_type(schema_type: str) -> CaveJsonSchema:
    if schema_type not in _names():
        raise NotFound(f"schema {schema_type!r} is unknown; known schemas: {', '.join(_names())}",
                       schema=schema_type)
    return json_schema(schema_type)


@router.post(SCHEMA + "/types", access=Need.authenticated(),
             summary="CAVE schema service: JSON schemas of several schemas")
def schema_types_multi(schema_names: str = "") -> dict[str, CaveJsonSchema]:
    names = [n for n in schema_names.split(",") if n]
    bad = [n for n in names if n not in _names()]
    if bad:
        raise NotFound(f"schemas {bad} are unknown; known schemas: {', '.join(_names())}", schema=bad)
    return {n: json_schema(n) for n in names}


@router.get(SCHEMA + "/types_all", access=Need.authenticated(), summary="CAVE schema service: every JSON schema")
def schema_types_all() -> dict[str, CaveJsonSchema]:
    return {n: json_schema(n) for n in _names()}


# -- views: named joins of two annotation tables, answered on any materialization version ---------
VIEWS = "/materialize/api/v3/datastack/{datastack}/version/{version}/views"


class ViewBody(BaseModel):
    tables: list[list[str]] = Field(description="[[table1, join column], [table2, join column]]")
    suffixes: list[str] | dict[str, str] | None = Field(None, description="suffix per table for shared columns")
    select_columns: dict[str, list[str]] | None = Field(None, description="{table: [columns]}; default all")
    description: str = ""
    overwrite: bool = False


def _cave_view(v: dict) -> dict[str, Any]:
    vx, vy, vz = v["voxel_size_nm"]
    return {"table_name": v["name"], "description": v.get("description") or "", "notice_text": None,
            "live_compatible": False, "voxel_resolution_x": vx, "voxel_resolution_y": vy,
            "voxel_resolution_z": vz, "voxel_resolution": [vx, vy, vz], "tables": v["tables"],
            "suffixes": v["suffixes"]}


def _readable_view(request: Request, lake: Lake, datastack: str, name: str) -> dict:
    from neurolake.materialize.joins import get_view
    from neurolake.server.deps import check_readable

    v = get_view(lake, datastack, name)
    check_readable(request, lake, datastack, *(t for t, _ in v["tables"]))
    return v


@router.put("/api/v1/datastacks/{datastack}/views/{view}", access=Need.write(),
            summary="Define a view: a named join of two annotation tables (CAVE query_view)")
def view_define(datastack: str, view: str, body: ViewBody, request: Request,
                lake: Lake = Depends(get_lake)) -> CaveView:
    from neurolake.materialize.joins import define_view
    from neurolake.server.deps import check_readable

    check_readable(request, lake, datastack, *(t[0] for t in body.tables if t))
    p = principal_of(request)
    return _cave_view(define_view(lake, datastack, view, body.tables, suffixes=body.suffixes,
                                  select_columns=body.select_columns, description=body.description,
                                  owner=None if p.local else p.name, overwrite=body.overwrite))


@router.get(VIEWS, access=Need.read(), summary="CAVE materialize: views {name: metadata}")
def views(datastack: str, version: Count, request: Request, lake: Lake = Depends(get_lake)) -> dict[str, CaveView]:
    from neurolake.materialize import get_version
    from neurolake.materialize.joins import list_views

    get_version(lake, datastack, version, allow_expired=False)  # 404/410 for a bad version
    out = {}
    for n in list_views(lake, datastack):
        try:
            out[n] = _cave_view(_readable_view(request, lake, datastack, n))
        except (PermissionDenied, NotFound):
            continue
    return out


@router.get(VIEWS + "/{view}/metadata", access=Need.read(), summary="CAVE materialize: view metadata")
def view_metadata(datastack: str, version: Count, view: str, request: Request,
                  lake: Lake = Depends(get_lake)) -> CaveView:
    return _cave_view(_readable_view(request, lake, datastack, view))


def _view_schema(tab) -> dict[str, Any]:
    import pyarrow as pa

    props: dict[str, Any] = {}
    for name in tab.column_names:
        t = tab.schema.field(name).type
        if "_position" in name and name[-2:] in ("_x", "_y", "_z"):
            props[name[:-2]] = {"type": "SpatialPoint"}
        elif pa.types.is_integer(t):
            props[name] = {"type": "integer"}
        elif pa.types.is_floating(t):
            props[name] = {"type": "number"}
        elif pa.types.is_boolean(t):
            props[name] = {"type": "boolean"}
        elif pa.types.is_timestamp(t):
            props[name] = {"type": "string", "format": "date-time"}
        else:
            props[name] = {"type": "string"}
    return {"type": "object", "properties": props}


@router.get(VIEWS + "/{view}/schema", access=Need.read(), summary="CAVE materialize: columns of a view")
def view_schema(datastack: str, version: Count, view: str, request: Request,
                lake: Lake = Depends(get_lake)) -> CaveViewSchema:
    from neurolake.materialize.joins import query_view

    _readable_view(request, lake, datastack, view)
    return _view_schema(query_view(lake, datastack, version, view, limit=0).arrow())


@router.get(VIEWS + "/schemas", access=Need.read(), summary="CAVE materialize: columns of every view")
def view_schemas(datastack: str, version: Count, request: Request,
                 lake: Lake = Depends(get_lake)) -> dict[str, CaveViewSchema]:
    from neurolake.materialize.joins import list_views, query_view

    out = {}
    for n in list_views(lake, datastack):
        try:
            _readable_view(request, lake, datastack, n)
        except (PermissionDenied, NotFound):
            continue
        out[n] = _view_schema(query_view(lake, datastack, version, n, limit=0).arrow())
    return out


@router.post(VIEWS + "/{view}/query", access=Need.read(),
             summary="CAVE materialize: query a view of a version (Arrow IPC stream)")
async def view_query(datastack: str, version: Count, view: str, request: Request,
                     lake: Lake = Depends(get_lake)) -> CaveArrowBody:
    """caveclient's ``query_view``: filters keyed by the view name, on the view's columns."""
    from neurolake.materialize.joins import query_view
    from neurolake.server.cave import _arrow_response, _json, _object, _table_filters

    body = _object(await _json(request))
    f = _table_filters(body, view)
    # _table_filters strips "_position" from spatial keys (tables' point names); views name their columns
    spatial = (body.get("filter_spatial_dict") or {}).get(view) if isinstance(body.get("filter_spatial_dict"),
                                                                             dict) else None

    def run():
        _readable_view(request, lake, datastack, view)
        filters = {k: f[k] for k in f if k.startswith("filter_") and k != "filter_spatial"}
        filters["filter_spatial"] = spatial
        r = query_view(lake, datastack, version, view, filters=filters, columns=f["columns"], offset=f["offset"],
                       limit=f["limit"], desired_resolution=body.get("desired_resolution"))
        resp = _arrow_response(r.arrow(), {}, None)
        resp.headers["dataframe_resolution"] = ", ".join(str(x) for x in r.metadata["dataframe_resolution"])
        return resp

    return await run_in_threadpool(run)
