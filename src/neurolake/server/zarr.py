"""Zarr v3 / OME-Zarr 0.5 over HTTP: the stored layer itself, as a static tree.

``GET|HEAD /zarr/{ds}/{layer}/{key}`` serves ``<lake>/datastacks/<ds>/volumes/<layer>/{key}``: the
group ``zarr.json`` (OME-Zarr ``multiscales``), each mip's array ``{mip}/zarr.json`` and its shard
files ``{mip}/c/{i}/{j}/{k}`` — with HEAD, bounded/open/suffix Range (sharded readers fetch the
shard index with ``bytes=-N``), ETag/304 and 404 for every missing key (zarr-python's ``.zarray`` /
``.zattrs`` / ``.zgroup`` probes included). Readers: zarr-python (``zarr.open_group(FsspecStore)`` or
``zarr.open_array("http://HOST/zarr/ds/layer/0")``), tensorstore (``zarr3`` over an ``http`` kvstore)
and Neuroglancer (``zarr3://http://HOST/zarr/{ds}/{layer}``). Only layer files are served: keys are
confined to the layer folder, and temporary files of in-progress writes are not listed anywhere.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from neurolake.errors import NotFound
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.http import count, file_response
from neurolake.server.models import ZarrKey
from neurolake.server.routing import APIRouter, fast_path

router = APIRouter(prefix="/zarr", tags=["zarr"])
INLINE_BYTES = 4 << 20  # reads up to this size (a shard index, an inner chunk, metadata) stay on the event loop


@router.api_route("/{datastack}/{layer}/{key:path}", access=Need.read(),
                  methods=["GET", "HEAD"], summary="Zarr v3 key")
@fast_path
async def get_key(datastack: str, layer: str, key: str, request: Request) -> ZarrKey:
    # async, no SQL while the catalog is unchanged (the layer from the lake's memory), and no thread-pool hop
    # for the small reads sharded readers make (Range requests of a shard index or one inner chunk, metadata):
    # one open + fstat + pread of stored bytes; whole-shard reads above INLINE_BYTES go to the thread pool
    la = await cutouts.layer_async(request, datastack, layer)
    key = key or "zarr.json"
    parts = key.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts) or key.endswith(".tmp"):
        raise NotFound(f"no key {key!r} in zarr layer {datastack}/{layer}", key=key)
    path = la.root.joinpath(*parts)
    media = "application/json" if parts[-1] == "zarr.json" else "application/octet-stream"
    compress = None if media == "application/json" else False
    try:
        if request.method == "GET" and "range" not in request.headers and _size(path) > INLINE_BYTES:
            response = await run_in_threadpool(file_response, request, path, media, compress=compress)
        else:
            response = file_response(request, path, media, compress=compress)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no key {key!r} in zarr layer {datastack}/{layer}", key=key) from None
    count(request, "zarr_keys")
    return response


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # missing: file_response raises the error that becomes 404
