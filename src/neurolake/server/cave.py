"""The CAVE subset that unmodified ``caveclient`` (8.2.1) needs, translated to neurolake calls.

``CAVEclient(datastack, server_address=<this server>)`` works for: the info service
(``/info/api/v2/datastack/full/{ds}``), the materialization engine (versions, version metadata,
tables, table metadata, ``query_table`` with filters — answered as an Arrow IPC stream with
``Content-Type: data.arrow`` — and live queries at a timestamp) and the chunkedgraph
(``/segmentation/api/v1/table/{table_id}/…``: roots_binary, node root, leaves, lineage graph,
is_latest_roots, merge, split). The chunkedgraph table id is the datastack name.

Routers only translate: storage and logic live in ``neurolake.proofreading`` and
``neurolake.materialize``.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake import __version__
from neurolake.base.integers import UINT64_MAX, whole
from neurolake.base.names import not_found
from neurolake.base.time import parse_timestamp
from neurolake.errors import InvalidArgument, NotFound
from neurolake.lake import Lake
from neurolake.server.access import Need, visible_datastacks
from neurolake.server.deps import annotation_table, author_of, check_readable, get_lake, read_body
from neurolake.server.models import (
    AsciiInt,
    CaveAlignedVolume,
    CaveArrowBody,
    CaveDatastackInfo,
    CaveEdit,
    CaveIsLatest,
    CaveLeafIds,
    CavePastIdMapping,
    CaveRootId,
    CaveRootIds,
    CaveRootTimestamps,
    CaveTableMetadata,
    CaveVersion,
    Count,
    Id,
    LineageGraph,
    OctetStream,
    PcgInfo,
)
from neurolake.server.routing import APIRouter

router = APIRouter(tags=["cave"])

MAT_VERSION = "5.13.0"  # caveclient refuses query_table below 5.13.0 (CLIENTS.md)
PCG_VERSION = "2.18.0"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _json(request: Request) -> Any:
    body = await read_body(request)  # 413 beyond NEUROLAKE_MAX_BODY_BYTES
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidArgument("the request body is not valid JSON", field="body") from None


# -- info service ----------------------------------------------------------------------------------
def _datastack_info(lake: Lake, ds: str, base: str, request: Request | None = None) -> dict[str, Any]:
    d = lake.datastack_info(ds)
    from neurolake.proofreading import has_segmentation, segmentation

    vx, vy, vz = d["voxel_size_nm"]
    layers = {la["name"]: la for la in d["layers"]}
    image = next((n for n, la in layers.items() if la["type"] == "image"), None)
    seg_layer = segmentation(lake, ds).layer if has_segmentation(lake, ds) else None
    tables = []
    try:
        from neurolake.annotations import get_table, list_tables

        tables = [(n, get_table(lake, ds, n).schema.name) for n in list_tables(lake, ds)]
    except NotFound:
        pass
    if request is not None:  # only tables the requester may read are named
        from neurolake.errors import PermissionDenied

        def readable(name: str) -> bool:
            try:
                annotation_table(request, lake, ds, name)
            except (PermissionDenied, NotFound):
                return False
            return True

        tables = [(n, s) for n, s in tables if readable(n)]
    synapse = next((n for n, s in tables if s == "synapse"), None)
    soma = next((n for n, s in tables if s == "nucleus"), None)
    return {
        "datastack": ds, "name": ds, "description": d["description"],
        "aligned_volume": {"name": ds, "id": zlib.crc32(ds.encode()) % 100000 + 1, "description": d["description"],
                           "image_source": f"precomputed://{base}/precomputed/{ds}/{image}" if image else None,
                           "display_name": ds},
        "segmentation_source": f"graphene://{base}/segmentation/table/{ds}",
        "segmentation_layer": seg_layer,
        "local_server": base, "analysis_database": None, "viewer_site": None, "skeleton_source": None,
        "synapse_table": synapse, "soma_table": soma,
        "viewer_resolution_x": vx, "viewer_resolution_y": vy, "viewer_resolution_z": vz,
    }


@router.get("/info/api/v2/datastack/full/{datastack}", access=Need.read(), summary="CAVE info: datastack")
def info_datastack(datastack: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveDatastackInfo:
    return _datastack_info(lake, datastack, _base(request), request)


@router.get("/info/api/v2/datastacks", access=Need.authenticated(), summary="CAVE info: datastack names")
def info_datastacks(request: Request) -> list[str]:
    return visible_datastacks(request)


@router.get("/info/api/v2/aligned_volume/{name}", access=Need.read("name"),
            summary="CAVE info: aligned volume")
def info_aligned_volume(name: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveAlignedVolume:
    return _datastack_info(lake, name, _base(request), request)["aligned_volume"]


@router.get("/info/version", access=Need.authenticated(), summary="CAVE info: service version")
def info_version() -> str:
    return __version__


# -- materialization engine ------------------------------------------------------------------------
@router.get("/materialize/api/versions", access=Need.authenticated(),
            summary="CAVE materialize: API versions")
def mat_api_versions() -> list[int]:
    return [2, 3]


@router.get("/materialize/version", access=Need.authenticated(), summary="CAVE materialize: service version")
def mat_version() -> str:
    return MAT_VERSION


def _cave_ts(iso: str | None) -> str | None:
    """CAVE's timestamp text: naive UTC ``%Y-%m-%dT%H:%M:%S.%f`` (caveclient parses exactly that)."""
    ts = parse_timestamp(iso)
    return None if ts is None else ts.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _cave_version(v: dict, ds: str) -> dict:
    return {"version": v["version"], "time_stamp": _cave_ts(v["timestamp"]), "expires_on": _cave_ts(v["expires_on"]),
            "valid": v["valid"], "status": v["status"], "datastack": ds, "id": v["version"],
            "is_merged": True, "parent_version": None}


for _api in ("v2", "v3"):
    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/versions", access=Need.read(),
                summary="CAVE materialize: versions")
    def mat_versions(datastack: str, expired: bool = False, lake: Lake = Depends(get_lake)) -> list[int]:
        from neurolake.materialize import versions

        return [v["version"] for v in versions(lake, datastack, expired=expired)]

    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/version/{{version}}", access=Need.read(),
                summary="CAVE materialize: version metadata")
    def mat_version_meta(datastack: str, version: Count, lake: Lake = Depends(get_lake)) -> CaveVersion:
        from neurolake.materialize import get_version

        return _cave_version(get_version(lake, datastack, version), datastack)

    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/metadata", access=Need.read(),
                summary="CAVE materialize: metadata of all versions")
    def mat_versions_meta(datastack: str, expired: bool = False, lake: Lake = Depends(get_lake)) -> list[CaveVersion]:
        from neurolake.materialize import versions

        return [_cave_version(v, datastack) for v in versions(lake, datastack, expired=expired)]

    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/version/{{version}}/tables", access=Need.read(),
                summary="CAVE materialize: tables of a version")
    def mat_tables(datastack: str, version: Count, lake: Lake = Depends(get_lake)) -> list[str]:
        from neurolake.materialize import version_tables

        return version_tables(lake, datastack, version)

    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/version/{{version}}/table/{{table}}/metadata", access=Need.read(),
                summary="CAVE materialize: table metadata")
    def mat_table_meta(datastack: str, version: Count, table: str, lake: Lake = Depends(get_lake)) -> CaveTableMetadata:
        return _table_meta(lake, datastack, version, table)

    @router.get(f"/materialize/api/{_api}/datastack/{{datastack}}/version/{{version}}/tables/metadata", access=Need.read(),
                summary="CAVE materialize: metadata of every table")
    def mat_tables_meta(datastack: str, version: Count, lake: Lake = Depends(get_lake)) -> list[CaveTableMetadata]:
        from neurolake.materialize import version_tables

        return [_table_meta(lake, datastack, version, t) for t in version_tables(lake, datastack, version)]


def _table_meta(lake: Lake, ds: str, version: int, table: str) -> dict:
    from neurolake.materialize import get_version

    v = get_version(lake, ds, version, allow_expired=False)
    if table not in v["tables"]:
        raise not_found("table", table, sorted(v["tables"]), within=("version", version), datastack=ds)
    t = v["tables"][table]
    vx, vy, vz = t.get("voxel_size_nm") or t["voxel_resolution_nm"]  # versions made before the rename
    return {"table_name": table, "schema": t["schema"], "schema_type": t["schema"], "description": t["description"],
            "reference_table": None, "voxel_resolution_x": vx, "voxel_resolution_y": vy, "voxel_resolution_z": vz,
            "voxel_resolution": [vx, vy, vz], "valid": True, "aligned_volume": ds, "created": _cave_ts(v["timestamp"]),
            "row_count": t["rows"], "segmentation_source": None, "id": zlib.crc32(f"{ds}/{table}".encode()) % 100000,
            "annotation_table": table, "datastack": ds, "version": v["version"]}


def _object(body: Any) -> dict:
    """The JSON body as an object; InvalidArgument (field ``body``) for an array, a number, null ..."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"the request body must be a JSON object, not {type(body).__name__}", field="body")
    return body


def _count(body: dict, key: str, default: int | None, least: int) -> int | None:
    """``body[key]`` as a whole number >= ``least`` below 2**63 (None/absent: ``default``); InvalidArgument."""
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not least <= v < 2**63:
        raise InvalidArgument(f"{key} must be a whole number >= {least} below 2**63, got {v!r}"[:200], field=key,
                              value=str(v)[:100])
    return v


def _flat(ids: Any, field: str) -> list:
    """A JSON list of ids (null: none); InvalidArgument naming ``field`` for an object, a string ..."""
    if ids is None:
        return []
    if not isinstance(ids, list):
        raise InvalidArgument(f"{field} must be a list of ids", field=field)
    return ids


def _table_filters(body: dict, table: str) -> dict[str, Any]:
    body = _object(body)

    def pick(key):
        d = body.get(key)
        if d is None:
            return None
        if not isinstance(d, dict):
            raise InvalidArgument(f"{key} must be an object keyed by table name", field=key)
        d = d.get(table)
        if d is not None and not isinstance(d, dict):
            raise InvalidArgument(f"{key}[{table!r}] must be an object {{column: value(s)}}", field=key)
        return d

    spatial = pick("filter_spatial_dict")
    if spatial:
        spatial = {k[:-len("_position")] if k.endswith("_position") else k: v for k, v in spatial.items()}
    if pick("filter_regex_dict"):
        raise InvalidArgument("filter_regex_dict is not supported by neurolake; use filter_in_dict / "
                              "filter_equal_dict", field="filter_regex_dict")
    cols = body.get("select_columns")
    if isinstance(body.get("select_column_map"), dict):
        cols = body["select_column_map"].get(table)
    if cols is not None and (not isinstance(cols, list) or not all(isinstance(c, str) for c in cols)):
        raise InvalidArgument("select_columns / select_column_map must list column names", field="select_columns")
    return {"filter_in": pick("filter_in_dict"), "filter_equal": pick("filter_equal_dict"),
            "filter_not_in": pick("filter_notin_dict"), "filter_greater": pick("filter_greater_dict"),
            "filter_less": pick("filter_less_dict"), "filter_greater_equal": pick("filter_greater_equal_dict"),
            "filter_less_equal": pick("filter_less_equal_dict"), "filter_spatial": spatial, "columns": cols,
            "offset": _count(body, "offset", 0, 0), "limit": _count(body, "limit", None, 1)}


def _arrow_response(tab: pa.Table, body: dict, res: list[float] | None) -> Response:
    headers = {"column_names": json.dumps(tab.column_names)}
    desired = body.get("desired_resolution")
    if desired is not None and res is not None:
        try:
            desired = [float(x) for x in desired]
            assert len(desired) == 3
        except (TypeError, ValueError, AssertionError):
            raise InvalidArgument("desired_resolution must be 3 numbers (x, y, z nm)", field="desired_resolution"
                                  ) from None
        cols = []
        for name in tab.column_names:
            c = tab.column(name)
            if "_position_" in name and name[-1] in "xyz":
                i = "xyz".index(name[-1])
                c = pa.compute.multiply(c.cast(pa.float64()), res[i] / desired[i])
            cols.append(c)
        tab = pa.table(cols, names=tab.column_names)
        headers["dataframe_resolution"] = ", ".join(str(x) for x in desired)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tab.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(tab)
    return Response(sink.getvalue().to_pybytes(), media_type="data.arrow", headers=headers)


@router.post("/materialize/api/v3/datastack/{datastack}/version/{version}/table/{table}/query", access=Need.read(),
             summary="CAVE materialize: query a table of a version (Arrow IPC stream)")
@router.post("/materialize/api/v2/datastack/{datastack}/version/{version}/table/{table}/query", access=Need.read(),
             include_in_schema=False)
async def mat_query(datastack: str, version: Count, table: str, request: Request,
                    lake: Lake = Depends(get_lake)) -> CaveArrowBody:
    from neurolake.materialize import get_version, query_version

    body = await _json(request)
    f = _table_filters(body, table)

    def run() -> Response:  # catalog, Parquet and Arrow encoding: off the event loop
        check_readable(request, lake, datastack, table)
        v = get_version(lake, datastack, version, allow_expired=False)
        tab = query_version(
            lake, datastack, version, table, filter_in=f["filter_in"], filter_equal=f["filter_equal"],
            filter_not_in=f["filter_not_in"], filter_greater=f["filter_greater"], filter_less=f["filter_less"],
            filter_greater_equal=f["filter_greater_equal"], filter_less_equal=f["filter_less_equal"],
            filter_spatial=f["filter_spatial"], columns=f["columns"], offset=f["offset"], limit=f["limit"]).arrow()
        return _arrow_response(tab, body, v["tables"].get(table, {}).get("voxel_size_nm"))

    return await run_in_threadpool(run)


@router.post("/materialize/api/v3/datastack/{datastack}/version/{version}/query", access=Need.read(),
             summary="CAVE materialize: join two tables of a version (Arrow IPC stream)")
@router.post("/materialize/api/v2/datastack/{datastack}/version/{version}/query", access=Need.read(),
             include_in_schema=False)
async def mat_join_query(datastack: str, version: Count, request: Request,
                         lake: Lake = Depends(get_lake)) -> CaveArrowBody:
    """caveclient's ``join_query``: ``{"tables": [[t1, col1], [t2, col2]], filters keyed by table, "suffixes"
    or "suffix_map", "select_column_map", "offset", "limit", "desired_resolution"}`` (see
    :func:`neurolake.materialize.joins.join_version`)."""
    from neurolake.materialize.joins import join_specs, join_version

    body = _object(await _json(request))
    specs = join_specs(body.get("tables"))
    per = {t: _table_filters(body, t) for t, _ in specs}
    window = per[specs[0][0]]
    select = body.get("select_column_map") if isinstance(body.get("select_column_map"), dict) \
        else body.get("select_columns")
    suffixes = body.get("suffix_map") if body.get("suffix_map") is not None else body.get("suffixes")

    def run() -> Response:  # catalog, Parquet, the join and Arrow encoding: off the event loop
        check_readable(request, lake, datastack, *(t for t, _ in specs))
        r = join_version(lake, datastack, version, specs,
                         filters={t: {k: f[k] for k in f if k.startswith("filter_")} for t, f in per.items()},
                         select_columns=select, suffixes=suffixes, offset=window["offset"], limit=window["limit"],
                         desired_resolution=body.get("desired_resolution"))
        resp = _arrow_response(r.arrow(), {}, None)
        resp.headers["dataframe_resolution"] = ", ".join(str(x) for x in r.metadata["dataframe_resolution"])
        return resp

    return await run_in_threadpool(run)


@router.post("/materialize/api/v3/datastack/{datastack}/query", access=Need.read(),
             summary="CAVE materialize: live query at a timestamp")
async def mat_live_query(datastack: str, request: Request, timestamp: str | None = None,
                         lake: Lake = Depends(get_lake)) -> CaveArrowBody:
    from neurolake.materialize import live_query

    body = _object(await _json(request))
    table = body.get("table")
    if not isinstance(table, str):
        raise InvalidArgument("live query needs 'table' in the body", field="table")
    f = _table_filters(body, table)
    ts = body.get("timestamp") or timestamp

    def run() -> Response:  # catalog, Delta and Arrow encoding: off the event loop
        t = annotation_table(request, lake, datastack, table)
        tab = live_query(
            lake, datastack, table, ts, filter_in=f["filter_in"], filter_equal=f["filter_equal"],
            filter_not_in=f["filter_not_in"], filter_spatial=f["filter_spatial"], columns=f["columns"],
            offset=f["offset"], limit=f["limit"]).arrow()
        return _arrow_response(tab, body, list(t.voxel_size_nm))

    return await run_in_threadpool(run)


# -- chunkedgraph ----------------------------------------------------------------------------------
PCG = "/segmentation/api/v1/table/{table_id}"


def _datastack(lake: Lake, table_id: str):
    """The datastack of a chunkedgraph table id (neurolake names the table after its datastack)."""
    return lake.datastack(table_id)


@router.get("/segmentation/api/versions", access=Need.authenticated(),
            summary="CAVE chunkedgraph: API versions")
def pcg_api_versions() -> list[int]:
    return [1]


@router.get("/segmentation/api/version", access=Need.authenticated(),
            summary="CAVE chunkedgraph: service version")
def pcg_version() -> str:
    return PCG_VERSION


@router.get("/segmentation/table/{table_id}/info", access=Need.read("table_id"),
            summary="CAVE chunkedgraph: segmentation info")
def pcg_info(table_id: str, request: Request, lake: Lake = Depends(get_lake)) -> PcgInfo:
    from neurolake.server.graphene import segmentation_info  # the shape cloud-volume's graphene reads

    return segmentation_info(request, lake, table_id)


@router.post(PCG + "/roots_binary", access=Need.read("table_id"),
             summary="CAVE chunkedgraph: roots of supervoxels (raw uint64)")
async def pcg_roots_binary(table_id: str, request: Request, timestamp: str | None = None,
                           lake: Lake = Depends(get_lake)) -> OctetStream:
    body = await read_body(request)  # 413 beyond NEUROLAKE_MAX_BODY_BYTES
    if len(body) % 8:
        raise InvalidArgument(f"body of {len(body)} bytes is not a whole number of uint64 ids", field="body")
    svs = np.frombuffer(body, dtype="<u8")

    def run() -> bytes:
        roots = _datastack(lake, table_id).segmentation.roots(svs, timestamp, "zero")
        return np.ascontiguousarray(roots, dtype="<u8").tobytes()

    return Response(await run_in_threadpool(run), media_type="application/octet-stream")


@router.post(PCG + "/roots", access=Need.read("table_id"),
             summary="CAVE chunkedgraph: roots of supervoxels (JSON)")
async def pcg_roots(table_id: str, request: Request, timestamp: str | None = None,
                    lake: Lake = Depends(get_lake)) -> CaveRootIds:
    body = await _json(request)
    svs = body.get("node_ids", body) if isinstance(body, dict) else body
    roots = await run_in_threadpool(_datastack(lake, table_id).segmentation.roots, svs, timestamp, "zero")
    return {"root_ids": [int(r) for r in roots]}


@router.get(PCG + "/node/{node_id}/root", access=Need.read("table_id"),
            summary="CAVE chunkedgraph: root of one supervoxel")
def pcg_root(table_id: str, node_id: Id, timestamp: str | None = None, lake: Lake = Depends(get_lake)) -> CaveRootId:
    return {"root_id": int(_datastack(lake, table_id).segmentation.roots([node_id], timestamp)[0])}


def _bounds(text: str | None):
    if not text:
        return None
    try:
        parts = [tuple(int(v) for v in p.split("-")) for p in text.split("_")]
        assert len(parts) == 3 and all(len(p) == 2 for p in parts)
        return parts
    except (ValueError, AssertionError):
        raise InvalidArgument(f"bounds {text!r} must be x0-x1_y0-y1_z0-z1", field="bounds", value=text) from None


@router.get(PCG + "/node/{node_id}/leaves", access=Need.read("table_id"),
            summary="CAVE chunkedgraph: supervoxels of a root")
def pcg_leaves(table_id: str, node_id: Id, bounds: str | None = None, stop_layer: AsciiInt | None = None,
               lake: Lake = Depends(get_lake)) -> CaveLeafIds:
    if stop_layer not in (None, 1):
        raise InvalidArgument("neurolake has no chunk hierarchy: stop_layer must be 1 (supervoxels)",
                              field="stop_layer", value=stop_layer)
    leaves = _datastack(lake, table_id).segmentation.leaves(node_id, _bounds(bounds))
    return {"leaf_ids": [int(x) for x in leaves]}


@router.post(PCG + "/lineage_graph_multiple", access=Need.read("table_id"),
             summary="CAVE chunkedgraph: lineage graph (node-link JSON)")
async def pcg_lineage(table_id: str, request: Request, timestamp_past: float | None = None,
                      timestamp_future: float | None = None, lake: Lake = Depends(get_lake)) -> LineageGraph:
    body = await _json(request)
    roots = body.get("root_ids") if isinstance(body, dict) else None
    if roots is None:
        raise InvalidArgument("body needs root_ids", field="root_ids")
    return await run_in_threadpool(
        lambda: _datastack(lake, table_id).segmentation.lineage(roots, timestamp_past, timestamp_future))


@router.get(PCG + "/root/{root_id}/lineage_graph", access=Need.read("table_id"),
            summary="CAVE chunkedgraph: lineage graph of one root")
def pcg_lineage_one(table_id: str, root_id: Id, timestamp_past: float | None = None,
                    timestamp_future: float | None = None, lake: Lake = Depends(get_lake)) -> LineageGraph:
    return _datastack(lake, table_id).segmentation.lineage([root_id], timestamp_past, timestamp_future)


@router.get(PCG + "/past_id_mapping", access=Need.read("table_id"),
            summary="CAVE chunkedgraph: past and future ids of roots")
@router.post(PCG + "/past_id_mapping", access=Need.read("table_id"), include_in_schema=False)
async def pcg_past_ids(table_id: str, request: Request, timestamp_past: float | None = None,
                       timestamp_future: float | None = None, lake: Lake = Depends(get_lake)) -> CavePastIdMapping:
    body = await _json(request)
    roots = body.get("root_ids") if isinstance(body, dict) else None
    if roots is None:
        raise InvalidArgument("body needs root_ids", field="root_ids")
    out = await run_in_threadpool(
        lambda: _datastack(lake, table_id).segmentation.past_ids(roots, timestamp_past, timestamp_future))
    return {k: {str(r): v for r, v in m.items()} for k, m in out.items()}


@router.post(PCG + "/is_latest_roots", access=Need.read("table_id"),
             summary="CAVE chunkedgraph: are roots current")
async def pcg_is_latest(table_id: str, request: Request, timestamp: str | None = None,
                        lake: Lake = Depends(get_lake)) -> CaveIsLatest:
    body = await _json(request)
    ids = body.get("node_ids") if isinstance(body, dict) else body
    latest = await run_in_threadpool(lambda: _datastack(lake, table_id).segmentation.is_latest(ids or [], timestamp))
    return {"is_latest": [bool(x) for x in latest]}


@router.post(PCG + "/root_timestamps", access=Need.read("table_id"),
             summary="CAVE chunkedgraph: creation times of roots")
async def pcg_root_timestamps(table_id: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveRootTimestamps:
    body = await _json(request)
    ids = body.get("node_ids") if isinstance(body, dict) else body

    def run() -> list[float]:
        seg = _datastack(lake, table_id).segmentation
        return [parse_timestamp(seg.root_info(r)["created"]).timestamp() for r in _flat(ids, "node_ids")]

    return {"timestamp": await run_in_threadpool(run)}


def _sv_points(data: Any, what: str) -> tuple[list[int], list]:
    if not isinstance(data, list) or not all(isinstance(row, list) and len(row) == 4 for row in data):
        raise InvalidArgument(f"{what} must be a list of [supervoxel_id, x, y, z]", field=what)
    try:
        svs = [whole(row[0], what, 0, UINT64_MAX) for row in data]
        pos = [[float(v) for v in row[1:4]] for row in data]
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a list of [supervoxel_id, x, y, z] numbers", field=what) from None
    if not all(math.isfinite(v) for p in pos for v in p):
        raise InvalidArgument(f"{what}: positions must be finite numbers", field=what)
    return svs, pos


def _resolve(seg, svs: list[int], pos: list) -> list[int]:
    """Supervoxels given as 0 or as a root id (caveclient sends the root when it has no supervoxel) are
    looked up in the supervoxel layer at their position (nm)."""
    from neurolake.proofreading.service import ROOT_BASE

    need = [i for i, s in enumerate(svs) if s == 0 or s >= ROOT_BASE]
    if need:
        found = seg.supervoxels_at([pos[i] for i in need])
        svs = list(svs)
        for i, s in zip(need, found, strict=True):
            svs[i] = int(s)
    return svs


@router.post(PCG + "/merge", access=Need.write("table_id"),
             summary="CAVE chunkedgraph: merge two supervoxels' roots")
async def pcg_merge(table_id: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveEdit:
    body = await _json(request)
    svs, pos = _sv_points(body, "body")
    if len(svs) != 2:
        raise InvalidArgument(f"a merge needs exactly 2 [supervoxel_id, x, y, z] rows, got {len(svs)}", field="body")

    def run() -> dict:
        seg = _datastack(lake, table_id).segmentation
        a, b = _resolve(seg, svs, pos)
        return seg.merge(a, b, author=author_of(request), positions=pos)

    op = await run_in_threadpool(run)
    return {"operation_id": op["operation_id"], "new_root_ids": op["new_roots"], "new_lvl2_ids": []}


@router.post(PCG + "/split", access=Need.write("table_id"),
             summary="CAVE chunkedgraph: split by a minimum cut")
async def pcg_split(table_id: str, request: Request, lake: Lake = Depends(get_lake)) -> CaveEdit:
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidArgument("body must be {sources: [[sv, x, y, z]...], sinks: [...]}", field="body")
    src, spos = _sv_points(body.get("sources", []), "sources")
    snk, tpos = _sv_points(body.get("sinks", []), "sinks")

    def run() -> dict:
        seg = _datastack(lake, table_id).segmentation
        return seg.split(_resolve(seg, src, spos), _resolve(seg, snk, tpos), author=author_of(request),
                         source_positions=spos, sink_positions=tpos)

    op = await run_in_threadpool(run)
    return {"operation_id": op["operation_id"], "new_root_ids": op["new_roots"], "new_lvl2_ids": []}
