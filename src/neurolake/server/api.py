"""``/api/v1``: JSON metadata of datastacks and layers."""

from __future__ import annotations

from fastapi import Depends

from neurolake.lake import Lake
from neurolake.server.deps import get_lake
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/api/v1", tags=["datastacks"])


@router.get("/datastacks", summary="List datastacks")
def list_datastacks(lake: Lake = Depends(get_lake)) -> list[dict]:
    return lake.datastacks()


@router.get("/datastacks/{datastack}", summary="One datastack with its layers")
def get_datastack(datastack: str, lake: Lake = Depends(get_lake)) -> dict:
    return lake.datastack(datastack)


@router.get("/datastacks/{datastack}/layers/{layer}",
            summary="Layer metadata: type, dtype, bounds, and size, voxel size (nm) and chunking per mip")
def get_layer(datastack: str, layer: str, lake: Lake = Depends(get_lake)) -> dict:
    return lake.layer(datastack, layer).info()
