"""Skeletons over HTTP (:mod:`neurolake.skeletons`, docs/skeletons.md).

Neuroglancer precomputed skeletons, beside the volume they belong to (the volume's ``info`` names them with
``"skeletons": "skeletons"`` once built), as cloud-volume and Neuroglancer fetch them:

- ``GET|HEAD /precomputed/{ds}/{layer}/skeletons/info`` → the skeleton ``info`` JSON;
- ``GET|HEAD /precomputed/{ds}/{layer}/skeletons/{segment_id}`` → one precomputed skeleton (404: none).

Cloud path: ``precomputed://http://HOST/precomputed/{ds}/{layer}`` (``vol.skeleton.get(id)``). Also:

- ``GET /api/v1/datastacks/{ds}/layers/{layer}/skeletons`` → the skeleton table (rows, provenance);
- ``GET /api/v1/datastacks/{ds}/layers/{layer}/skeletons/{segment_id}/swc`` → SWC text.

This router is included before :mod:`neurolake.server.precomputed`, whose chunk route
``/{ds}/{layer}/{key}/{chunk}`` would otherwise take ``skeletons/…``.
"""

from __future__ import annotations

import json

from fastapi import Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake.errors import NotFound
from neurolake.lake import Lake
from neurolake.server.access import Need
from neurolake.server.deps import get_lake
from neurolake.server.http import bytes_response, count
from neurolake.server.models import SkeletonBody, SkeletonInfo, SkeletonTable, SwcBody
from neurolake.server.routing import APIRouter

router = APIRouter(tags=["skeletons"])
GET = ["GET", "HEAD"]


@router.api_route("/precomputed/{datastack}/{layer}/skeletons/info", access=Need.read(), methods=GET,
                  summary="precomputed skeleton info")
def get_skeleton_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> SkeletonInfo:
    from neurolake.skeletons import store

    doc = store.read_info(store.seg_layer(lake, datastack, layer))
    return bytes_response(request, json.dumps(doc).encode(), "application/json")


@router.api_route("/precomputed/{datastack}/{layer}/skeletons/{segment_id}", access=Need.read(), methods=GET,
                  summary="precomputed skeleton of one segment")
def get_skeleton(datastack: str, layer: str, segment_id: str, request: Request,
                 lake: Lake = Depends(get_lake)) -> SkeletonBody:
    from neurolake.skeletons import store

    la = store.seg_layer(lake, datastack, layer)
    if not segment_id.isdigit():  # a static precomputed tree has no such file
        raise NotFound(f"{segment_id!r} is not a segment id; skeleton files are named by decimal segment ids",
                       segment_id=segment_id)
    body = store.skeleton_bytes(la, segment_id)
    count(request, "skeletons")  # /api/v1/stats: requests.skeletons
    return bytes_response(request, body, "application/octet-stream")


@router.get("/api/v1/datastacks/{datastack}/layers/{layer}/skeletons", access=Need.read(),
            summary="skeleton table of a segmentation layer")
async def get_skeleton_table(datastack: str, layer: str, request: Request,
                             version: int | None = Query(None, description="Delta version (default: newest)"),
                             lake: Lake = Depends(get_lake)) -> SkeletonTable:
    def work() -> dict:
        from neurolake.skeletons import store

        la = store.seg_layer(lake, datastack, layer)
        tab = store.read_table(la, version)
        return {"datastack": datastack, "layer": layer,
                "table_version": store.table_version(la) if version is None else int(version),
                "rows": tab.to_pylist(), "provenance": store.read_provenance(la)}

    return await run_in_threadpool(work)


@router.get("/api/v1/datastacks/{datastack}/layers/{layer}/skeletons/{segment_id}/swc", access=Need.read(),
            summary="SWC of one skeleton")
def get_swc(datastack: str, layer: str, segment_id: str, request: Request, lake: Lake = Depends(get_lake)) -> SwcBody:
    from neurolake.skeletons import store

    text = store.to_swc(store.seg_layer(lake, datastack, layer), segment_id)
    return Response(text, media_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{datastack}_{layer}_{segment_id}.swc"'})
