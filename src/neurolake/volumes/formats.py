"""Byte formats of cutouts: npz, blosc, raw, tiff (3-D) and png (2-D planes).

All 3-D payloads hold a C-order (z, y, x) array.

- ``npz``: a ``.npz`` (as ``numpy.savez_compressed`` writes, deflate level 1) with one array ``cutout``. Uploads may also be the
  classic OCP body, a zlib-compressed ``.npy``.
- ``blosc``: a classic c-blosc 1 frame of the raw C-order bytes (what BossDB and intern exchange;
  blosc2 frames are not readable by intern). Dtype and shape travel separately (HTTP headers).
- ``raw``: the C-order bytes, little-endian.
- ``tiff``: a multi-page TIFF, one page per z section (tifffile).
- ``png``: one 2-D plane; grayscale for images (uint8 as L, uint16 as 16-bit, float32 min-max scaled
  to 8 bits), a stable colour per segment id (RGB) for segmentations, id 0 black.
"""

from __future__ import annotations

import io
import zlib

import blosc
import numpy as np

from neurolake.errors import CorruptData, InvalidArgument

CUTOUT_FORMATS = ("npz", "blosc", "raw", "tiff")
UPLOAD_FORMATS = ("npz", "blosc")
MEDIA_TYPES = {"npz": "application/octet-stream", "blosc": "application/blosc", "raw": "application/octet-stream",
               "tiff": "image/tiff", "png": "image/png", "jpg": "image/jpeg"}


def encode(arr: np.ndarray, fmt: str) -> bytes:
    """Encode a (z, y, x) array as ``fmt`` (one of :data:`CUTOUT_FORMATS`)."""
    arr = np.ascontiguousarray(arr)
    if fmt == "npz":
        import zipfile

        buf = io.BytesIO()  # what np.savez_compressed writes, with fast deflate (level 1)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
                zf.open("cutout.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, arr, allow_pickle=False)
        return buf.getvalue()
    if fmt == "blosc":
        return blosc.compress(arr.tobytes(), typesize=arr.dtype.itemsize, cname="lz4", shuffle=blosc.SHUFFLE)
    if fmt == "raw":
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    if fmt == "tiff":
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, arr)
        return buf.getvalue()
    raise InvalidArgument(f"format {fmt!r} is not allowed; use one of {', '.join(CUTOUT_FORMATS)}",
                          field="format", value=fmt, allowed=list(CUTOUT_FORMATS))


NPY_HEADER_MAX = 65536  # bytes of a .npy preamble + header we read before refusing (numpy's own cap is 10000)
CHUNK = 1 << 20  # decompressed bytes produced per step while decoding


def max_encoded_bytes(fmt: str, nbytes: int) -> int:
    """The largest encoded upload body (``fmt``: npz or blosc) that can hold ``nbytes`` of array data:
    ``nbytes`` plus the formats' worst-case overhead (blosc: 16-byte header; deflate: 5 bytes per
    stored 16 KiB block; zip and .npy headers), i.e. ``nbytes + nbytes // 64 + 64 KiB``. A server reads
    no more than this of a cutout upload.

    Raises InvalidArgument (``fmt`` is not an upload format)."""
    _check_upload_format(fmt)
    return int(nbytes) + int(nbytes) // 64 + 65536


def _check_upload_format(fmt: str) -> None:
    if fmt not in UPLOAD_FORMATS:
        raise InvalidArgument(f"upload format {fmt!r} is not allowed; use one of {', '.join(UPLOAD_FORMATS)}",
                              field="format", value=fmt, allowed=list(UPLOAD_FORMATS))


def decode(body: bytes, fmt: str, dtype: np.dtype, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Decode an uploaded body into a (z, y, x) array that must have ``shape_zyx`` (voxels) and fit
    ``dtype``.

    Decompression bombs are refused before they are decompressed: the shape and dtype a body declares
    (the ``.npy`` header of an npz member or of a zlib-compressed ``.npy``; the uncompressed size in a
    blosc header; a zip member's declared size) must match the box, zip members must be stored or deflated
    (what numpy writes), and the data is inflated in steps of at most 1 MiB into a buffer of exactly the
    declared size; inflating stops one byte past it (a body holding more is refused). Memory stays within
    the box's size (``prod(shape_zyx) × dtype.itemsize``) plus a few MiB whatever the body claims.

    Raises CorruptData (undecodable body), InvalidArgument (format not npz/blosc, wrong shape, size or
    dtype, more than one array, data beyond what the body declares).
    """
    dtype = np.dtype(dtype)
    _check_upload_format(fmt)
    if fmt == "npz":
        try:
            if body[:2] == b"PK":
                arr = _decode_npz_zip(body, dtype, shape_zyx)
            else:
                arr = _read_npy(_Inflater(body), dtype, shape_zyx)
        except (InvalidArgument, CorruptData):
            raise
        except Exception as exc:
            raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): {exc}", field="body") from exc
        if arr.ndim == 4:  # OCP clients sent (c, z, y, x) with one channel
            arr = arr[0]
        return arr.astype(dtype, copy=False)
    want = int(np.prod(shape_zyx)) * dtype.itemsize
    view = memoryview(body).cast("B")
    if len(view) < 16:
        raise CorruptData(f"body is not a blosc-1 frame: {len(view)} bytes is shorter than its 16-byte header",
                          field="body")
    nbytes, cbytes = int.from_bytes(view[4:8], "little"), int.from_bytes(view[12:16], "little")
    if nbytes != want:  # the header's uncompressed size, checked before anything is decompressed
        raise InvalidArgument(f"blosc body holds {nbytes} bytes but the box {list(shape_zyx)} (z, y, x) of "
                              f"{dtype} needs {want}", field="body", bytes=nbytes, expected=want)
    if cbytes > len(view) or cbytes < 16:
        raise CorruptData(f"body is not a blosc-1 frame: its header declares {cbytes} compressed bytes but the "
                          f"body has {len(view)}", field="body")
    try:
        raw = blosc.decompress(body)
    except Exception as exc:
        raise CorruptData(f"body is not a blosc-1 frame: {exc}", field="body") from exc
    if len(raw) != want:
        raise InvalidArgument(f"blosc body holds {len(raw)} bytes but the box {list(shape_zyx)} (z, y, x) of "
                              f"{dtype} needs {want}", field="body", bytes=len(raw), expected=want)
    return np.frombuffer(raw, dtype=dtype).reshape(shape_zyx)


class _Inflater:
    """A file-like ``read(n)`` over a zlib stream that never inflates more than ``n`` bytes at a time."""

    def __init__(self, data: bytes) -> None:
        self._src = memoryview(data).cast("B")
        self._pos = 0
        self._z = zlib.decompressobj()

    def read(self, n: int) -> bytes:
        parts, want = [], n
        while want > 0 and not self._z.eof:
            data = self._z.unconsumed_tail
            if not data and self._pos < len(self._src):
                data = self._src[self._pos:self._pos + 65536]
                self._pos += len(data)
            out = self._z.decompress(data, want)  # with no input left: what zlib still holds back
            if not out and not data:
                break  # the stream ends early: the caller sees a short read
            parts.append(out)
            want -= len(out)
        return b"".join(parts)


def _read_exact(f, n: int, what: str) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(n - got, CHUNK))
        if not chunk:
            raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): it ends inside the {what} "
                               f"({got} of {n} bytes)", field="body")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _decode_npz_zip(body: bytes, dtype: np.dtype, shape_zyx) -> np.ndarray:
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): {exc}", field="body") from None
    with zf:
        infos = zf.infolist()
        if len(infos) != 1:
            names = [i.filename.removesuffix(".npy") for i in infos[:10]] + (["..."] if len(infos) > 10 else [])
            raise InvalidArgument(f"npz body must hold exactly one array, found {len(infos)}: {names}",
                                  field="body", arrays=names)
        info = infos[0]
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
            raise InvalidArgument(f"npz member {info.filename!r} must be stored or deflated (as numpy writes "
                                  f"it), not compression method {info.compress_type}"
                                  f"{' with encryption' if info.flag_bits & 0x1 else ''}", field="body")
        cap = _npy_cap(dtype, shape_zyx)
        if info.file_size > cap:  # the declared size; the stream below is capped too, in case it lies
            raise InvalidArgument(f"npz member {info.filename!r} declares {info.file_size} bytes but an array of "
                                  f"the box {list(shape_zyx)} (z, y, x) of {dtype} needs at most {cap}",
                                  field="body", bytes=info.file_size, expected=cap)
        with zf.open(info) as f:
            return _read_npy(f, dtype, shape_zyx)


def _npy_cap(dtype: np.dtype, shape_zyx) -> int:
    """The largest .npy (header + data) that can hold the box (a dtype that casts safely to ``dtype`` is
    never wider)."""
    return NPY_HEADER_MAX + int(np.prod(shape_zyx)) * dtype.itemsize


def _read_npy(f, dtype: np.dtype, shape_zyx) -> np.ndarray:
    """Read a .npy stream whose header must declare ``shape_zyx`` (or ``(1, *shape_zyx)``) and a dtype that
    casts safely to ``dtype``; the data is read in steps of :data:`CHUNK` into a buffer of the declared
    size and must end there."""
    pre = _read_exact(f, 8, ".npy preamble")
    if pre[:6] != b"\x93NUMPY":
        raise CorruptData("body is not a readable npz (or zlib-compressed npy): the array lacks the .npy magic",
                          field="body")
    major = pre[6]
    if major not in (1, 2):
        raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): .npy format version {major} "
                          f"is not supported (1 or 2)", field="body")
    size_bytes = _read_exact(f, 2 if major == 1 else 4, ".npy header")
    hlen = int.from_bytes(size_bytes, "little")
    if hlen > NPY_HEADER_MAX:
        raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): .npy header of {hlen} bytes",
                          field="body")
    head = io.BytesIO(pre + size_bytes + _read_exact(f, hlen, ".npy header"))
    try:
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, body_dtype = read_header(head)
    except ValueError as exc:
        raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): {exc}", field="body") from None
    shape = tuple(int(n) for n in shape)
    if shape != tuple(shape_zyx) and shape != (1, *shape_zyx):
        raise InvalidArgument(f"body array has shape {list(shape)} (z, y, x) but the box is "
                              f"{list(shape_zyx)}", field="body", shape=list(shape), expected=list(shape_zyx))
    if body_dtype.hasobject or body_dtype.fields is not None or (
            body_dtype != dtype and not np.can_cast(body_dtype, dtype, casting="safe")):
        raise InvalidArgument(f"body array dtype {body_dtype} does not fit the layer dtype {dtype}",
                              field="dtype", value=str(body_dtype), allowed=str(dtype))
    nbytes = int(np.prod(shape)) * body_dtype.itemsize
    buf = bytearray(nbytes)  # exactly the declared size, which the shape check tied to the box
    view, got = memoryview(buf), 0
    while got < nbytes:
        chunk = f.read(min(nbytes - got, CHUNK))
        if not chunk:
            raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): it ends inside the array "
                               f"data ({got} of {nbytes} bytes)", field="body")
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    if f.read(1):
        raise InvalidArgument(f"body holds more data than its array of shape {list(shape)} {body_dtype} "
                              f"({nbytes} bytes)", field="body", expected=nbytes)
    arr = np.frombuffer(buf, dtype=body_dtype)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def _id_colours(ids: np.ndarray) -> np.ndarray:
    """A stable RGB colour per uint64 id (splitmix64 hash); 0 is black."""
    x = ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)], axis=-1).astype(np.uint8)
    rgb |= 0x40  # keep every non-background colour visible
    rgb[ids == 0] = 0
    return rgb


def plane_to_image(plane: np.ndarray, layer_type: str):
    """A PIL image of a 2-D plane (rows, cols) as described in the module doc."""
    from PIL import Image

    if layer_type == "segmentation":
        return Image.fromarray(_id_colours(plane), mode="RGB")
    if plane.dtype == np.uint8:
        return Image.fromarray(plane, mode="L")
    if plane.dtype == np.uint16:
        return Image.fromarray(plane.astype("<u2"), mode="I;16")
    lo, hi = float(np.nanmin(plane)), float(np.nanmax(plane))
    scaled = np.zeros(plane.shape, np.uint8) if hi <= lo else np.clip((plane - lo) / (hi - lo) * 255, 0, 255)
    return Image.fromarray(np.asarray(scaled, dtype=np.uint8), mode="L")


def encode_plane(plane: np.ndarray, layer_type: str, fmt: str = "png", quality: int = 85) -> bytes:
    """PNG (lossless, fast zlib level 1) or JPEG bytes of a 2-D plane."""
    if fmt in ("jpg", "jpeg"):
        import simplejpeg

        if layer_type == "image" and plane.dtype == np.uint8:
            return simplejpeg.encode_jpeg(np.ascontiguousarray(plane[..., None]), quality=quality,
                                          colorspace="GRAY")
        img = np.asarray(plane_to_image(plane, layer_type).convert("RGB"))
        return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace="RGB")
    buf = io.BytesIO()
    plane_to_image(plane, layer_type).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
