"""Zarr v3 / OME-Zarr 0.5 over HTTP: the stored layer itself, as a static tree.

``GET|HEAD /zarr/{ds}/{layer}/{key}`` serves ``<lake>/datastacks/<ds>/volumes/<layer>/{key}``: the
group ``zarr.json`` (OME-Zarr ``multiscales``), each mip's array ``{mip}/zarr.json`` and its shard
files ``{mip}/c/{i}/{j}/{k}`` — with HEAD, bounded/open/suffix Range (sharded readers fetch the
shard index with ``bytes=-N``), ETag/304 and 404 for every missing key (zarr-python's ``.zarray`` /
``.zattrs`` / ``.zgroup`` probes included). Readers: zarr-python (``zarr.open_group(FsspecStore)`` or
``zarr.open_array("http://HOST/zarr/ds/layer/0")``), tensorstore (``zarr3`` over an ``http`` kvstore)
and Neuroglancer (``zarr3://http://HOST/zarr/{ds}/{layer}``). Only layer files are served: keys are
confined to the layer folder, and temporary files of in-progress writes are not listed anywhere.

On a lake on object storage the keys are S3 objects (:func:`_object_response`): one GET per request (the
client's byte range is passed on to S3, so a shard-index read is one ranged GET), one HEAD per HEAD; the ETag is
the object's S3 ETag (it changes whenever a write replaces the object).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from neurolake.errors import NotFound
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.http import _respond, count, file_response
from neurolake.server.models import ZarrKey
from neurolake.server.routing import APIRouter, fast_path
from neurolake.storage.config import is_s3

router = APIRouter(prefix="/zarr", tags=["zarr"])
INLINE_BYTES = 4 << 20  # reads up to this size (a shard index, an inner chunk, metadata) stay on the event loop
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)  # one range (RFC 9110 §14.1.2)


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
        if is_s3(la.root):
            response = await _object_response(request, path, media, compress)
        elif request.method == "GET" and "range" not in request.headers and _size(path) > INLINE_BYTES:
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


async def _object_response(request: Request, path: Any, media: str, compress: bool | None) -> Response:
    """The answer for the S3 object at ``path`` (a ``upath.UPath``) with the rules of
    :func:`neurolake.server.http.file_response` (HEAD, Range → 206/416, ETag/304/If-Range, gzip): HEAD → one
    HEAD request; GET → one GET, of the client's range when it asks for a single satisfiable one (a second
    HEAD only to answer 416). The requests run on the event loop of the lake's s3fs filesystem. Raises
    FileNotFoundError for a missing key."""
    fs = path.fs
    bucket, _, key = path.path.partition("/")

    async def call(method: str, **kw: Any) -> Any:
        async def run() -> Any:
            resp = await fs._call_s3(method, Bucket=bucket, Key=key, **kw)
            if "Body" in resp:
                try:
                    resp["Data"] = await resp["Body"].read()
                finally:
                    resp["Body"].close()
            return resp
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), fs.loop))

    if request.method == "HEAD":
        head = await call("head_object")
        return _respond(request, int(head["ContentLength"]), _no_body, media, head["ETag"], compress, None,
                        "no-cache")
    rng = _single_range(request.headers.get("range")) if "if-range" not in request.headers else None
    try:
        got = await call("get_object", **({"Range": rng} if rng else {}))
    except OSError as exc:  # InvalidRange: nothing of the object is in the range; the 416 names its size
        if rng is None or isinstance(exc, FileNotFoundError):
            raise
        head = await call("head_object")
        return _respond(request, int(head["ContentLength"]), _no_body, media, head["ETag"], compress, None,
                        "no-cache")
    data: bytes = got["Data"]
    first, total = 0, len(data)
    m = re.match(r"bytes (\d+)-(\d+)/(\d+)", got.get("ContentRange") or "")
    if m:
        first, total = int(m.group(1)), int(m.group(3))

    def read(a: int, b: int) -> bytes:
        if a < first or b - first > len(data):  # never: the span asked for is the one S3 answered
            raise RuntimeError(f"byte span {a}-{b} outside the fetched {first}-{first + len(data)}")
        return data[a - first:b - first]

    return _respond(request, total, read, media, got["ETag"], compress, None, "no-cache")


def _no_body(a: int, b: int) -> bytes:
    raise RuntimeError("a HEAD answer has no body")


def _single_range(header: str | None) -> str | None:
    """The ``Range`` to send to S3 for the client's header: one valid ``bytes=`` range, else None (the whole
    object; :func:`neurolake.server.http.parse_byte_range` then ignores the header the same way)."""
    m = _RANGE.match(header or "")
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    a, b = m.group(1), m.group(2)
    if a and b and int(b) < int(a):
        return None
    return f"bytes={a}-{b}"
