"""Tiles at video rate: ``GET /catmaid/{ds}/{layer}/{xy|xz|yz}/{index}/{row}_{col}_{mip}.{png|jpg}``.

512 × 512 tiles in the CATMAID convention (see :mod:`neurolake.volumes.tiles` for the geometry),
served from an in-memory LRU cache bounded in bytes with background prefetch of neighbouring tiles
and of the next sections in the scroll direction. ``GET /api/v1/stats`` reports the cache size and
hit / miss / prefetch counters. Settings (environment of the server process):
``NEUROLAKE_TILE_CACHE_BYTES`` (default 512 MiB), ``NEUROLAKE_TILE_PREFETCH_DEPTH`` (sections ahead,
default 8; 0 disables prefetch), ``NEUROLAKE_TILE_MAX_AGE_S`` (default 300: tiles older than this are
re-rendered, so writes by other processes show up).
"""

from __future__ import annotations

import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from neurolake.errors import InvalidArgument
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.http import bytes_response
from neurolake.server.models import ServerStats, TileBody
from neurolake.server.routing import APIRouter, fast_path
from neurolake.storage.config import is_s3
from neurolake.volumes.tiles import TILE_FORMATS, TileCache, TileService

router = APIRouter(tags=["tiles"])
_NAME = re.compile(r"^([0-9]{1,9})_([0-9]{1,9})_([0-9]{1,3})\.(png|jpg|jpeg)$")  # ASCII digits (\d takes ١٢)


def tile_service(app) -> TileService:
    """The app's :class:`TileService`, created on first use from the lake's settings (``NEUROLAKE_TILE_*``)."""
    svc = getattr(app.state, "tiles", None)
    if svc is None:
        st = app.state.lake.settings
        svc = app.state.tiles = TileService(TileCache(st.tile_cache_bytes, st.tile_max_age_s),
                                            depth=st.tile_prefetch_depth)
    return svc


def invalidate(app, datastack: str, layer: str | None = None) -> None:
    """Forget cached tiles of a layer after a write through this server (:func:`neurolake.server.cutouts.write`
    calls it)."""
    svc = getattr(app.state, "tiles", None)
    if svc is not None:
        svc.cache.invalidate(datastack, layer)


@router.api_route("/catmaid/{datastack}/{layer}/{plane}/{index}/{name}", access=Need.read(),
                  methods=["GET", "HEAD"],
                  summary="512x512 tile (CATMAID convention)")
@fast_path
async def get_tile(datastack: str, layer: str, plane: str, index: str, name: str, request: Request) -> TileBody:
    m = _NAME.match(name)
    if not m or not re.fullmatch(r"[0-9]{1,9}", index):
        raise InvalidArgument(f"tile {index}/{name!r} must look like {{index}}/{{row}}_{{col}}_{{mip}}.png or .jpg "
                              "with whole numbers", field="tile", value=f"{index}/{name}")
    row, col, mip, fmt = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    svc = tile_service(request.app)
    la = await cutouts.layer_async(request, datastack, layer)  # catalog only when it changed
    client = request.client.host if request.client else ""
    if is_s3(la.root):  # the layer's generation is a catalog query there: not on the event loop
        body = await run_in_threadpool(svc.get, la, plane, int(index), row, col, mip, fmt, client)
        return bytes_response(request, body, TILE_FORMATS[fmt])
    body = svc.lookup(la, plane, int(index), row, col, mip, fmt)
    if body is None:
        body = await run_in_threadpool(svc.render, la, plane, int(index), row, col, mip, fmt)
    svc.schedule(la, plane, int(index), row, col, mip, fmt, client)
    return bytes_response(request, body, TILE_FORMATS[fmt])


@router.get("/api/v1/stats", access=Need.authenticated(),
            summary="Tile cache size and hit/miss/prefetch counters; served requests")
def stats(request: Request) -> ServerStats:
    """``tiles``: cache entries/bytes/limit, hits, misses, prefetch counters; ``requests``: counts of
    precomputed chunks, Zarr keys and BossDB cutouts served by this process."""
    return {"tiles": tile_service(request.app).stats(),
            "requests": dict(getattr(request.app.state, "serving_counts", {}) or {})}
