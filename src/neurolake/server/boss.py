"""BossDB API v1 at ``/v1/``, enough for ``intern.remote.boss.BossRemote`` to work unmodified.

Mapping: collection = datastack, experiment = datastack (one per collection, same name), channel =
layer, coordinate frame named after the datastack; resolution level = mip. Routes:

- metadata: ``/v1/collection/`` (intern sends ``/v1/collection//``), ``/v1/collection/{c}``,
  ``…/experiment/``, ``…/experiment/{e}``, ``…/channel/``, ``…/channel/{ch}``, ``/v1/coord/``,
  ``/v1/coord/{frame}``;
- ``GET /v1/cutout/{c}/{e}/{ch}/{res}/{x0}:{x1}/{y0}:{y1}/{z0}:{z1}/[{t0}:{t1}/]`` (``filter=id,id``
  keeps only those ids of a segmentation) → blosc-1 frame of the C-order (z, y, x) array;
  ``POST`` the same URL with a blosc body → 201 (coarser mips are updated);
- ``GET /v1/ids/{c}/{e}/{ch}/{res}/{x}/{y}/{z}/[{t}/]`` → ``{"ids": ["1", …]}``;
- ``GET /v1/boundingbox/{c}/{e}/{ch}/{res}/{id}/?type=loose|tight``;
- ``GET /v1/reserve/{c}/{e}/{ch}/{n}`` → ``{"start_id", "count"}``;
- ``GET /v1/downsample/{c}/{e}/{ch}`` → downsample status (always DOWNSAMPLED: writes update mips);
  ``POST`` → 201.

uint32 segmentations are presented as uint64 (intern knows uint8/uint16/uint64 only); uploads to them
must fit in uint32. Errors use BossDB's JSON shape ``{"status", "code", "message"}`` with its codes
(1001 invalid cutout arguments, 2000 cutout too large, 4000 resource not found, …).
Reference: BossDB API v1 documentation and intern 1.4.2's ``intern/service/boss``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from neurolake.base.integers import parse_ids, parse_int, parse_range
from neurolake.base.names import not_found
from neurolake.errors import InvalidArgument, NeurolakeError
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need, visible_datastacks
from neurolake.server.deps import check_size
from neurolake.server.errors import public_error_async
from neurolake.server.http import count
from neurolake.server.models import (
    BloscBody,
    BossBoundingBox,
    BossChannel,
    BossChannels,
    BossCollection,
    BossCollections,
    BossDownsample,
    BossError,
    BossExperiment,
    BossExperiments,
    BossFrame,
    BossFrames,
    BossIds,
    BossReserved,
    Created,
)
from neurolake.server.routing import APIRouter
from neurolake.volumes import segments
from neurolake.volumes.layer import Layer

# BossDB error codes by HTTP status (bossutils ErrorCodes); cutout argument errors use 1001.
BOSS_CODES = {400: 1001, 401: 2001, 403: 2002, 404: 4000, 409: 4002, 413: 2000, 422: 1004, 429: 2003, 500: 5000}


def boss_error(status: int, message: str, code: int | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "code": code or BOSS_CODES.get(status, 5000), "message": message},
                        status_code=status)


class BossRoute(APIRoute):
    """Turns every NeurolakeError raised under /v1 into BossDB's error JSON."""

    error_model = BossError  # the error body declared in OpenAPI (neurolake.server.routing.APIRouter)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except NeurolakeError as exc:
                exc = await public_error_async(request, exc)  # names and folders the requester may see
                return boss_error(exc.http_status, exc.message)

        return wrapped


router = APIRouter(prefix="/v1", tags=["bossdb"], route_class=BossRoute)
BOSS_DTYPES = ("uint8", "uint16", "uint64")


def _lake(request: Request) -> Lake:
    return request.app.state.lake


def _stack(lake: Lake, c: str, e: str | None = None) -> dict:
    ds = lake.datastack_info(c)
    if e is not None and e != c:
        raise not_found("experiment", e, [c], within=("collection", c))
    return ds


def _layer(lake: Lake, c: str, e: str, ch: str) -> Layer:
    _stack(lake, c, e)
    return lake.layer(c, ch)


def boss_dtype(layer: Layer) -> str:
    """The datatype intern sees: uint32 segmentations as uint64."""
    return "uint64" if layer.dtype == np.uint32 else str(layer.dtype)


def _frame(lake: Lake, name: str) -> dict:
    ds = lake.datastack_info(name)
    layers = lake.layers(name)
    vx, vy, vz = ds.get("voxel_size_nm") or (layers[0].voxel_size if layers else (1, 1, 1))
    sx = max((la.size(0)[0] for la in layers), default=0)
    sy = max((la.size(0)[1] for la in layers), default=0)
    sz = max((la.size(0)[2] for la in layers), default=0)
    return {"name": name, "description": ds.get("description", "") or "", "x_start": 0, "x_stop": sx,
            "y_start": 0, "y_stop": sy, "z_start": 0, "z_stop": sz, "x_voxel_size": vx, "y_voxel_size": vy,
            "z_voxel_size": vz, "voxel_unit": "nanometers"}


def _channel(c: str, la: Layer) -> dict:
    return {"name": la.name, "description": la.description or "", "experiment": c, "default_time_sample": 0,
            "type": "annotation" if la.layer_type == "segmentation" else "image", "base_resolution": 0,
            "datatype": boss_dtype(la), "creator": "neurolake", "sources": [], "related": [],
            "downsample_status": "DOWNSAMPLED" if la.status == "ready" else "IN_PROGRESS",
            "storage_type": "spdb", "bucket": None, "cv_path": None}


def _experiment(lake: Lake, c: str) -> dict:
    ds = lake.datastack_info(c)
    layers = lake.layers(c)
    iso = any(m.factor_xyz[2] > 1 for la in layers for m in la.spec.mips)
    return {"name": c, "description": ds.get("description", "") or "", "collection": c, "coord_frame": c,
            "num_hierarchy_levels": max((la.num_mips for la in layers), default=1),
            "hierarchy_method": "isotropic" if iso else "anisotropic", "num_time_samples": 1, "time_step": 0,
            "time_step_unit": "seconds", "creator": "neurolake", "channels": [la.name for la in layers]}


# -- metadata -------------------------------------------------------------------------------------
@router.get("/collection/", access=Need.authenticated(), summary="List collections (datastacks)")
@router.get("/collection//", access=Need.authenticated(), include_in_schema=False)
def list_collections(request: Request) -> BossCollections:
    return {"collections": visible_datastacks(request)}


@router.get("/collection/{c}", access=Need.read("c"), summary="Collection")
@router.get("/collection/{c}/", access=Need.read("c"), include_in_schema=False)
def get_collection(c: str, request: Request) -> BossCollection:
    ds = _stack(_lake(request), c)
    return {"name": c, "description": ds.get("description", "") or "", "creator": "neurolake", "experiments": [c],
            "public": True}


@router.get("/collection/{c}/experiment/", access=Need.read("c"), summary="List experiments")
def list_experiments(c: str, request: Request) -> BossExperiments:
    _stack(_lake(request), c)
    return {"experiments": [c]}


@router.get("/collection/{c}/experiment/{e}", access=Need.read("c"), summary="Experiment")
@router.get("/collection/{c}/experiment/{e}/", access=Need.read("c"), include_in_schema=False)
def get_experiment(c: str, e: str, request: Request) -> BossExperiment:
    _stack(_lake(request), c, e)
    return _experiment(_lake(request), c)


@router.get("/collection/{c}/experiment/{e}/channel/", access=Need.read("c"),
            summary="List channels (layers)")
def list_channels(c: str, e: str, request: Request) -> BossChannels:
    lake = _lake(request)
    _stack(lake, c, e)
    return {"channels": [la.name for la in lake.layers(c)]}


@router.get("/collection/{c}/experiment/{e}/channel/{ch}", access=Need.read("c"), summary="Channel")
@router.get("/collection/{c}/experiment/{e}/channel/{ch}/", access=Need.read("c"), include_in_schema=False)
def get_channel(c: str, e: str, ch: str, request: Request) -> BossChannel:
    return _channel(c, _layer(_lake(request), c, e, ch))


@router.get("/coord/", access=Need.authenticated(), summary="List coordinate frames")
def list_frames(request: Request) -> BossFrames:
    return {"coords": visible_datastacks(request)}


@router.get("/coord/{frame}", access=Need.read("frame"), summary="Coordinate frame")
@router.get("/coord/{frame}/", access=Need.read("frame"), include_in_schema=False)
def get_frame(frame: str, request: Request) -> BossFrame:
    return _frame(_lake(request), frame)


# -- volume service -------------------------------------------------------------------------------
def _box(la: Layer, res: str, parts: list[str]):
    """Parse ``{x}/{y}/{z}[/{t}]`` ranges ("a:b") at resolution ``res``; only t = 0:1 exists."""
    parts = [p for p in parts if p != ""]
    if len(parts) not in (3, 4):
        raise InvalidArgument("cutout needs x, y and z ranges (and optionally t) as start:stop",
                              field="range", value="/".join(parts))
    mip = parse_int("resolution", res)
    x, y, z = (parse_range(a, p) for a, p in zip("xyz", parts, strict=False))
    if len(parts) == 4 and parse_range("t", parts[3]) != (0, 1):
        raise InvalidArgument(f"time range {parts[3]} is not available; layers have one time sample (0:1)",
                              field="t", value=parts[3])
    return mip, la.check_box(x, y, z, mip)


@router.get("/cutout/{c}/{e}/{ch}/{res}/{ranges:path}", access=Need.read("c"),
            summary="Cutout (blosc, C-order z, y, x)")
def get_cutout(c: str, e: str, ch: str, res: str, ranges: str, request: Request,
               filter: str | None = None, roots: bool = False, timestamp: str | None = None) -> BloscBody:
    la = _layer(_lake(request), c, e, ch)
    mip, (x, y, z) = _box(la, res, ranges.split("/"))
    # ?roots=true[&timestamp=T]: supervoxels remapped to proofread root ids (issue 5)
    arr = cutouts.read(request, la, x, y, z, mip, roots=roots, timestamp=timestamp)
    if filter:
        if la.layer_type != "segmentation":
            raise InvalidArgument("filter= applies to annotation (segmentation) channels only", field="filter")
        keep = np.array(parse_ids("filter", filter), dtype=np.uint64)
        arr = np.where(np.isin(arr, keep), arr, 0).astype(arr.dtype)
    if arr.dtype == np.uint32:
        arr = arr.astype(np.uint64)
    count(request, "boss_cutouts")
    return cutouts.response(arr, "blosc")


@router.post("/cutout/{c}/{e}/{ch}/{res}/{ranges:path}", access=Need.write("c"),
             status_code=201, summary="Write a cutout (blosc)")
async def post_cutout(c: str, e: str, ch: str, res: str, ranges: str, request: Request) -> Created:
    la = await run_in_threadpool(_layer, _lake(request), c, e, ch)  # catalog read: off the event loop
    mip, (x, y, z) = _box(la, res, ranges.split("/"))
    await cutouts.write(request, la, x, y, z, mip, "blosc", wire_dtype=boss_dtype(la))
    return Response(status_code=201)


@router.get("/ids/{c}/{e}/{ch}/{res}/{ranges:path}", access=Need.read("c"), summary="Ids in a region")
def get_ids(c: str, e: str, ch: str, res: str, ranges: str, request: Request) -> BossIds:
    la = _layer(_lake(request), c, e, ch)
    mip, (x, y, z) = _box(la, res, ranges.split("/"))
    check_size(request, la, (z[1] - z[0], y[1] - y[0], x[1] - x[0]), "ids region")
    return {"ids": [str(int(i)) for i in segments.ids_in_box(la, x, y, z, mip)]}


@router.get("/boundingbox/{c}/{e}/{ch}/{res}/{segment_id}/", access=Need.read("c"),
            summary="Bounding box of an id")
@router.get("/boundingbox/{c}/{e}/{ch}/{res}/{segment_id}", access=Need.read("c"), include_in_schema=False)
def get_bounding_box(c: str, e: str, ch: str, res: str, segment_id: str, request: Request,
                     type: str = "loose") -> BossBoundingBox:
    if type not in ("loose", "tight"):
        raise InvalidArgument(f"type {type!r} must be loose or tight", field="type", value=type,
                              allowed=["loose", "tight"])
    la = _layer(_lake(request), c, e, ch)
    box = segments.bounding_box(la, parse_int("id", segment_id), parse_int("resolution", res), type == "tight")
    return {**box, "t_range": [0, 1]}


@router.get("/reserve/{c}/{e}/{ch}/{n}", access=Need.write("c"), summary="Reserve ids")
@router.get("/reserve/{c}/{e}/{ch}/{n}/", access=Need.write("c"), include_in_schema=False)
def reserve(c: str, e: str, ch: str, n: str, request: Request) -> BossReserved:
    lake = _lake(request)
    la = _layer(lake, c, e, ch)
    count = parse_int("count", n)
    return {"start_id": segments.reserve_ids(lake.root, la, count, lake.locks), "count": count}


@router.get("/downsample/{c}/{e}/{ch}", access=Need.read("c"), summary="Downsample status")
@router.get("/downsample/{c}/{e}/{ch}/", access=Need.read("c"), include_in_schema=False)
def downsample_status(c: str, e: str, ch: str, request: Request) -> BossDownsample:
    la = _layer(_lake(request), c, e, ch)
    m0 = la.spec.mips[0]
    return {"num_hierarchy_levels": la.num_mips,
            "status": "DOWNSAMPLED" if la.status == "ready" else "IN_PROGRESS",
            "voxel_size": {str(m.mip): list(m.voxel_size_nm) for m in la.spec.mips},
            "extent": {str(m.mip): list(m.size_xyz) for m in la.spec.mips},
            "cuboid_size": {str(m.mip): [m.chunk_zyx[2], m.chunk_zyx[1], m.chunk_zyx[0]] for m in la.spec.mips},
            "voxel_unit": "nanometers", "base_voxel_size": list(m0.voxel_size_nm)}


@router.post("/downsample/{c}/{e}/{ch}", access=Need.write("c"),
             status_code=201, summary="Start downsampling (already done)")
@router.post("/downsample/{c}/{e}/{ch}/", access=Need.write("c"), status_code=201, include_in_schema=False)
def start_downsample(c: str, e: str, ch: str, request: Request) -> Created:
    _layer(_lake(request), c, e, ch)
    return Response(status_code=201)
