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

from fastapi import Depends, Request

from neurolake.errors import NotFound
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.deps import get_lake
from neurolake.server.http import count, file_response
from neurolake.server.models import ZarrKey
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/zarr", tags=["zarr"])


@router.api_route("/{datastack}/{layer}/{key:path}", access=Need.read(),
                  methods=["GET", "HEAD"], summary="Zarr v3 key")
def get_key(datastack: str, layer: str, key: str, request: Request, lake: Lake = Depends(get_lake)) -> ZarrKey:
    la = cutouts.layer_of(request, datastack, layer)
    key = key or "zarr.json"
    parts = key.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts) or key.endswith(".tmp"):
        raise NotFound(f"no key {key!r} in zarr layer {datastack}/{layer}", key=key)
    path = la.root.joinpath(*parts)
    media = "application/json" if parts[-1] == "zarr.json" else "application/octet-stream"
    try:
        response = file_response(request, path, media, compress=None if media == "application/json" else False)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no key {key!r} in zarr layer {datastack}/{layer}", key=key) from None
    count(request, "zarr_keys")
    return response
