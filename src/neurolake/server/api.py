"""``/api/v1``: JSON metadata of datastacks and layers."""

from __future__ import annotations

from fastapi import Depends, Request

from neurolake.lake import Lake
from neurolake.server.access import Need, visible_datastacks
from neurolake.server.deps import get_lake
from neurolake.server.models import DatastackInfo, DatastackSummary, LayerInfo
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/api/v1", tags=["datastacks"])


@router.get("/datastacks", access=Need.authenticated(), summary="List datastacks")
def list_datastacks(request: Request, lake: Lake = Depends(get_lake)) -> list[DatastackSummary]:
    """The datastacks the requester may read (``--auth``: public ones and those they hold a role on)."""
    infos = lake.datastack_infos()
    visible = set(visible_datastacks(request, [d["name"] for d in infos]))
    return [d for d in infos if d["name"] in visible]


@router.get("/datastacks/{datastack}", access=Need.read(), summary="One datastack with its layers")
def get_datastack(datastack: str, lake: Lake = Depends(get_lake)) -> DatastackInfo:
    return lake.datastack_info(datastack)


@router.get("/datastacks/{datastack}/layers/{layer}", access=Need.read(),
            summary="Layer metadata: type, dtype, bounds, and size, voxel size (nm) and chunking per mip")
def get_layer(datastack: str, layer: str, lake: Lake = Depends(get_lake)) -> LayerInfo:
    return lake.layer(datastack, layer).info()
