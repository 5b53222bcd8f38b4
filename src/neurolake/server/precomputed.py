"""Neuroglancer precomputed volumes over HTTP, generated from the stored Zarr layers.

- ``GET|HEAD /precomputed/{ds}/{layer}/info`` → the ``info`` JSON (raw for images,
  compressed_segmentation for segmentations; one scale per mip);
- ``GET|HEAD /precomputed/{ds}/{layer}/provenance``;
- ``GET|HEAD /precomputed/{ds}/{layer}/{key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` → one encoded chunk;
- the same three under ``/precomputed/{ds}/{layer}/jpeg/`` for uint8 images as JPEG chunks.

Cloud paths: ``precomputed://http://HOST/precomputed/{ds}/{layer}`` (cloud-volume, Neuroglancer) or
tensorstore ``{"driver": "neuroglancer_precomputed", "kvstore": "http://HOST/precomputed/{ds}/{layer}/"}``.
``annotations`` is a reserved layer name here: ``/precomputed/{ds}/annotations/…`` belongs to the
annotation service, whose router is included first. Missing keys answer 404 (read as empty chunks).
"""

from __future__ import annotations

import json

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.http import bytes_response
from neurolake.server.models import ChunkBody, PrecomputedInfo, PrecomputedProvenance
from neurolake.server.routing import APIRouter, fast_path
from neurolake.storage.config import is_s3
from neurolake.volumes import precomputed as pc

router = APIRouter(prefix="/precomputed", tags=["precomputed"])
GET = ["GET", "HEAD"]


def _json(request: Request, doc: dict) -> Response:
    return bytes_response(request, json.dumps(doc).encode(), "application/json")


# Handlers are ``async`` and do no SQL on the hot path: the layer comes from the lake's memory while its
# catalog generation is unchanged (cutouts.layer_async; a lookup in the thread pool otherwise), a chunk is
# read by awaiting tensorstore (no thread-pool hop) and only JPEG / compressed_segmentation encoding (CPU
# work) goes to the thread pool.
@router.api_route("/{datastack}/{layer}/info", access=Need.read(), methods=GET, summary="precomputed info")
@fast_path
async def get_info(datastack: str, layer: str, request: Request) -> PrecomputedInfo:
    return await _info(request, await cutouts.layer_async(request, datastack, layer))


@router.api_route("/{datastack}/{layer}/jpeg/info", access=Need.read(),
                  methods=GET, summary="precomputed info, JPEG chunks")
@fast_path
async def get_info_jpeg(datastack: str, layer: str, request: Request) -> PrecomputedInfo:
    return await _info(request, await cutouts.layer_async(request, datastack, layer), "jpeg")


async def _info(request: Request, la, encoding: str | None = None) -> Response:
    if is_s3(la.root):  # looks for skeleton / mesh objects: S3 requests, not on the event loop
        return await run_in_threadpool(cutouts.precomputed_info, request, la, encoding)
    return cutouts.precomputed_info(request, la, encoding)


@router.api_route("/{datastack}/{layer}/provenance", access=Need.read(),
                  methods=GET, summary="precomputed provenance")
@router.api_route("/{datastack}/{layer}/jpeg/provenance", access=Need.read(),
                  methods=GET, include_in_schema=False)
@fast_path
async def get_provenance(datastack: str, layer: str, request: Request) -> PrecomputedProvenance:
    return _json(request, pc.provenance(await cutouts.layer_async(request, datastack, layer)))


@router.api_route("/{datastack}/{layer}/jpeg/{key}/{chunk}", access=Need.read(),
                  methods=GET, summary="JPEG chunk")
@fast_path
async def get_chunk_jpeg(datastack: str, layer: str, key: str, chunk: str, request: Request) -> ChunkBody:
    return await cutouts.precomputed_chunk_async(request, await cutouts.layer_async(request, datastack, layer), key,
                                                 chunk, "jpeg", counter="precomputed_chunks")


@router.api_route("/{datastack}/{layer}/{key}/{chunk}", access=Need.read(),
                  methods=GET, summary="precomputed chunk")
@fast_path
async def get_chunk(datastack: str, layer: str, key: str, chunk: str, request: Request) -> ChunkBody:
    return await cutouts.precomputed_chunk_async(request, await cutouts.layer_async(request, datastack, layer), key,
                                                 chunk, counter="precomputed_chunks")
