"""The one HTTP cutout path: every router that reads or writes voxels (OCP, BossDB, precomputed,
precomputed root ids, Zarr, tiles, proofreading) goes through here and only translates its own URL
syntax into these calls.

Reads: the layer (:func:`layer_of`), the box checked against the volume at ``mip``
(``Layer.check_box``), the size limit (:func:`neurolake.server.deps.check_size`, 413), the time
(:func:`neurolake.base.time.parse_timestamp`), then the core read
:meth:`neurolake.datastack.Datastack.cutout` (supervoxels remapped to root ids at that time with
``roots=True``), encoded by :mod:`neurolake.volumes.formats` (:func:`response`) or as a precomputed
chunk (:func:`precomputed_chunk`). Writes (:func:`write`): box, size limit, the body decoded and
checked against the box shape and the layer dtype, :meth:`~neurolake.datastack.Datastack.write`
(coarser mips follow), then the tile cache of the layer is invalidated.

Arrays are C-order (z, y, x); ranges are half-open voxel ranges (x, y, z) at ``mip``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake.base.time import parse_timestamp
from neurolake.datastack import Datastack
from neurolake.errors import InvalidArgument
from neurolake.server.deps import check_size, read_body
from neurolake.server.http import bytes_response, count, not_modified
from neurolake.storage.config import is_s3
from neurolake.volumes import precomputed as pc
from neurolake.volumes.formats import MEDIA_TYPES, decode, encode, max_encoded_bytes
from neurolake.volumes.layer import Layer

Range = tuple[int, int]


def layer_of(request: Request, datastack: str, name: str, *, memo: bool = False) -> Layer:
    """The layer ``datastack/name`` of the server's lake (:meth:`neurolake.lake.Lake.layer`: no SQL while the
    lake's catalog generation is unchanged; any change, in any process, is seen by the next request).
    Raises NotFound naming the known datastacks or layers. ``memo`` is accepted for older callers."""
    return request.app.state.lake.layer(datastack, name)


def cached_layer(request: Request, datastack: str, name: str) -> Layer | None:
    """The layer when the lake holds it in memory and its catalog generation is unchanged, else None — no
    database I/O, so an ``async`` handler may call it on the event loop and go to the thread pool only on a
    miss (:func:`layer_async`)."""
    return request.app.state.lake.cached_layer(datastack, name)


async def layer_async(request: Request, datastack: str, name: str) -> Layer:
    """:func:`layer_of` for ``async`` handlers: from memory (:func:`cached_layer`), else looked up in the
    thread pool. Raises NotFound."""
    return cached_layer(request, datastack, name) or await run_in_threadpool(layer_of, request, datastack, name)


def _datastack(request: Request, layer: Layer) -> Datastack:
    # the layer lookup already proved that the datastack exists: no second catalog query
    return Datastack(request.app.state.lake, layer.datastack)


def read(request: Request, layer: Layer, x: Any, y: Any, z: Any, mip: int = 0, *, roots: bool = False,
         timestamp: Any = None, what: str = "cutout") -> np.ndarray:
    """The (z, y, x) cutout of ``layer`` for the box ``x × y × z`` at ``mip``; with ``roots`` the
    supervoxel ids are replaced by root ids at ``timestamp`` (None = now; uint64).

    Raises InvalidArgument (malformed/inverted range, unknown mip, bad timestamp, ``roots`` on a layer
    that is not the supervoxel layer), OutOfBounds, TooLarge (``what`` names the request in the
    message), NotFound (no proofreadable segmentation)."""
    (x0, x1), (y0, y1), (z0, z1) = layer.check_box(x, y, z, mip)
    check_size(request, layer, (z1 - z0, y1 - y0, x1 - x0), what)
    ts = parse_timestamp(timestamp) if roots else None
    return _datastack(request, layer).cutout(layer, (x0, x1), (y0, y1), (z0, z1), mip, roots=roots, timestamp=ts)


def response(arr: np.ndarray, fmt: str, media_type: str | None = None) -> Response:
    """``arr`` (z, y, x) encoded as ``fmt`` (npz, blosc, raw, tiff) with ``X-Neurolake-Dtype``,
    ``X-Neurolake-Shape`` (z,y,x) and ``X-Neurolake-Axes`` headers."""
    headers = {"X-Neurolake-Dtype": str(arr.dtype), "X-Neurolake-Shape": ",".join(map(str, arr.shape)),
               "X-Neurolake-Axes": "z,y,x"}
    return Response(encode(arr, fmt), media_type=media_type or MEDIA_TYPES[fmt], headers=headers)


async def write(request: Request, layer: Layer, x: Any, y: Any, z: Any, mip: int, fmt: str, *,
                wire_dtype: Any = None) -> None:
    """Write the request body (``fmt``: npz or blosc, a (z, y, x) array of the box) into ``layer`` at
    ``mip``; coarser mips follow and the layer's cached tiles are dropped.

    ``wire_dtype`` is the dtype the body is sent in when it differs from the layer's (BossDB sends
    uint32 segmentations as uint64); its values must fit the layer dtype. Raises InvalidArgument
    (box, shape, dtype, values out of range), OutOfBounds, TooLarge, CorruptData (undecodable body).
    """
    (x0, x1), (y0, y1), (z0, z1) = layer.check_box(x, y, z, mip)
    shape = (z1 - z0, y1 - y0, x1 - x0)
    check_size(request, layer, shape, "upload")
    wire = np.dtype(wire_dtype or layer.dtype)
    limit = max_encoded_bytes(fmt, int(np.prod(shape)) * wire.itemsize)  # no bigger body can hold the box
    body = await read_body(request, limit, f"{fmt} body for the box {list(shape)} (z, y, x) of {wire}")

    def decode_and_write() -> None:  # inflating, casting and writing run in the thread pool, not the loop
        arr = decode(body, fmt, wire, shape)  # shape/size declared in the body are checked before inflating
        if arr.dtype != layer.dtype:
            _check_fits(arr, layer)
            arr = arr.astype(layer.dtype)
        _datastack(request, layer).write(layer, arr, x0, y0, z0, mip)

    await run_in_threadpool(decode_and_write)
    from neurolake.server.tiles import invalidate  # cached tiles of this layer are stale now

    invalidate(request.app, layer.datastack, layer.name)


def _check_fits(arr: np.ndarray, layer: Layer) -> None:
    if np.can_cast(arr.dtype, layer.dtype, casting="safe"):
        return
    if arr.dtype.kind in "ui" and layer.dtype.kind in "ui":
        info = np.iinfo(layer.dtype)
        hi, lo = (int(arr.max()), int(arr.min())) if arr.size else (0, 0)
        if hi <= info.max and lo >= info.min:
            return
        raise InvalidArgument(f"ids up to {hi} do not fit the {layer.dtype} layer {layer.datastack}/{layer.name}",
                              field="body", max_id=hi, allowed=int(info.max))
    raise InvalidArgument(f"body dtype {arr.dtype} does not fit the {layer.dtype} layer "
                          f"{layer.datastack}/{layer.name}", field="dtype", value=str(arr.dtype),
                          allowed=str(layer.dtype))


# -- precomputed ----------------------------------------------------------------------------------
def roots_layer(request: Request, datastack: str, spec: str) -> tuple[Layer, Any]:
    """``layer`` or ``layer@T`` (T = unix seconds or ISO 8601) of a root-id volume: the supervoxel layer
    and the time (None = now). Raises NotFound, InvalidArgument (not the supervoxel layer of the
    datastack's segmentation, malformed time, a time before the segmentation existed)."""
    from neurolake.proofreading import remap_to_roots

    name, _, when = spec.partition("@")
    la = layer_of(request, datastack, name)
    ts = parse_timestamp(when) if when else None
    remap_to_roots(request.app.state.lake, datastack, np.zeros(0, np.uint64), ts, layer=name)  # the checks
    return la, ts


def precomputed_info(request: Request, layer: Layer, encoding: str | None = None, *,
                     roots: bool = False) -> Response:
    """The precomputed ``info`` JSON of ``layer`` (``roots``: as a uint64 volume of root ids)."""
    import json

    doc = pc.info(layer, encoding)
    if roots:
        doc["data_type"] = "uint64"
    return bytes_response(request, json.dumps(doc).encode(), "application/json")


def chunk_etag(layer: Layer, *parts: Any) -> str:
    """A strong ETag (quoted) for bytes derived from ``layer`` (identified by ``parts``, e.g. scale key, chunk
    name and encoding) that changes with the layer's folder, creation time and data generation
    (:meth:`~neurolake.volumes.layer.Layer.generation`: any landed or started write, in any process) — so
    no hash of the body is needed and a conditional request is answered before anything is read."""
    ident = "|".join(map(str, (layer.root, layer.created, layer.generation(), *parts)))
    return '"g' + hashlib.blake2b(ident.encode(), digest_size=12).hexdigest() + '"'


async def precomputed_chunk_async(request: Request, layer: Layer, key: str, chunk: str, encoding: str | None = None,
                                  *, counter: str | None = None) -> Response:
    """:func:`precomputed_chunk` (without ``roots``) for ``async`` handlers: the read is awaited on the event
    loop (:meth:`~neurolake.volumes.layer.Layer.cutout_async`), raw chunks are the stored bytes as read
    (no encoder), JPEG / compressed_segmentation encoding runs in the thread pool, and the ETag comes from the
    layer's generation (:func:`chunk_etag`), so ``If-None-Match`` is answered (304) before any read."""
    encoding = pc.check_encoding(layer, encoding)
    mip = pc.mip_of_key(layer, key)
    x, y, z = pc.parse_chunk_name(layer, mip, chunk)
    if is_s3(layer.root):  # the generation and checks are catalog queries there: all of it off the event loop
        return await run_in_threadpool(_precomputed_chunk_blocking, request, layer, key, chunk, encoding, counter)
    etag = chunk_etag(layer, key, chunk, encoding)
    media = "image/jpeg" if encoding == "jpeg" else "application/octet-stream"
    early = not_modified(request, etag)
    if early is not None:
        return early
    arr = await layer.cutout_async(x, y, z, mip)
    body = pc.encode_chunk(arr, encoding) if encoding == "raw" else await run_in_threadpool(
        pc.encode_chunk, arr, encoding)
    if counter:
        count(request, counter)
    return bytes_response(request, body, media, etag=etag, compress=False if layer.layer_type == "image" else None)


def _precomputed_chunk_blocking(request: Request, layer: Layer, key: str, chunk: str, encoding: str,
                                counter: str | None) -> Response:
    """:func:`precomputed_chunk_async` in a worker thread (a layer on object storage): the same ETag (from the
    layer's generation, 304 before any read), body and headers."""
    mip = pc.mip_of_key(layer, key)
    x, y, z = pc.parse_chunk_name(layer, mip, chunk)
    etag = chunk_etag(layer, key, chunk, encoding)
    early = not_modified(request, etag)
    if early is not None:
        return early
    body = pc.encode_chunk(layer.cutout(x, y, z, mip), encoding)
    if counter:
        count(request, counter)
    media = "image/jpeg" if encoding == "jpeg" else "application/octet-stream"
    return bytes_response(request, body, media, etag=etag, compress=False if layer.layer_type == "image" else None)


def precomputed_chunk(request: Request, layer: Layer, key: str, chunk: str, encoding: str | None = None, *,
                      roots: bool = False, timestamp: Any = None, counter: str | None = None) -> Response:
    """One precomputed chunk ``{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` of scale ``key``, encoded as ``encoding``
    (None = the layer's default), with HEAD/Range/ETag rules (:func:`neurolake.server.http.bytes_response`).
    ``roots``: root ids at ``timestamp`` (compressed_segmentation). Raises NotFound (unknown scale, chunk
    off the grid: a reader takes it as a missing file), InvalidArgument (encoding)."""
    encoding = pc.check_encoding(layer, "compressed_segmentation" if roots else encoding)
    mip = pc.mip_of_key(layer, key)
    x, y, z = pc.parse_chunk_name(layer, mip, chunk)
    arr = _datastack(request, layer).cutout(layer, x, y, z, mip, roots=roots, timestamp=timestamp)
    body = pc.encode_chunk(arr, encoding)
    if counter:
        count(request, counter)
    media = "image/jpeg" if encoding == "jpeg" else "application/octet-stream"
    # raw EM gains ~4 % from gzip at ~5 ms per 256 KiB chunk: not worth it; segmentations gain ~80 %
    return bytes_response(request, body, media, compress=False if layer.layer_type == "image" else None)
