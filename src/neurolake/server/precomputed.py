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

from fastapi import Depends, Request, Response

from neurolake.lake import Lake
from neurolake.server.deps import get_lake
from neurolake.server.http import bytes_response, count
from neurolake.server.routing import APIRouter
from neurolake.volumes import precomputed as pc

router = APIRouter(prefix="/precomputed", tags=["precomputed"])
GET = ["GET", "HEAD"]


def _json(request: Request, doc: dict) -> Response:
    return bytes_response(request, json.dumps(doc).encode(), "application/json")


@router.api_route("/{datastack}/{layer}/info", methods=GET, summary="precomputed info")
def get_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> Response:
    return _json(request, pc.info(lake.layer(datastack, layer)))


@router.api_route("/{datastack}/{layer}/jpeg/info", methods=GET, summary="precomputed info, JPEG chunks")
def get_info_jpeg(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> Response:
    return _json(request, pc.info(lake.layer(datastack, layer), "jpeg"))


@router.api_route("/{datastack}/{layer}/provenance", methods=GET, summary="precomputed provenance")
@router.api_route("/{datastack}/{layer}/jpeg/provenance", methods=GET, include_in_schema=False)
def get_provenance(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> Response:
    return _json(request, pc.provenance(lake.layer(datastack, layer)))


@router.api_route("/{datastack}/{layer}/jpeg/{key}/{chunk}", methods=GET, summary="JPEG chunk")
def get_chunk_jpeg(datastack: str, layer: str, key: str, chunk: str, request: Request,
                   lake: Lake = Depends(get_lake)) -> Response:
    body = pc.read_chunk(lake.layer(datastack, layer), key, chunk, "jpeg")
    count(request, "precomputed_chunks")
    return bytes_response(request, body, "image/jpeg")


@router.api_route("/{datastack}/{layer}/{key}/{chunk}", methods=GET, summary="precomputed chunk")
def get_chunk(datastack: str, layer: str, key: str, chunk: str, request: Request,
              lake: Lake = Depends(get_lake)) -> Response:
    la = lake.layer(datastack, layer)
    body = pc.read_chunk(la, key, chunk)
    count(request, "precomputed_chunks")
    # raw EM gains ~4 % from gzip at ~5 ms per 256 KiB chunk: not worth it; segmentations gain ~80 %
    return bytes_response(request, body, "application/octet-stream",
                          compress=False if la.layer_type == "image" else None)
