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


def decode(body: bytes, fmt: str, dtype: np.dtype, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Decode an uploaded body into a (z, y, x) array that must have ``shape_zyx``.

    Raises CorruptData (undecodable body), InvalidArgument (wrong shape, size or dtype).
    """
    dtype = np.dtype(dtype)
    if fmt == "npz":
        try:
            if body[:2] == b"PK":
                with np.load(io.BytesIO(body), allow_pickle=False) as z:
                    if len(z.files) != 1:
                        raise InvalidArgument(f"npz body must hold exactly one array, found {z.files}",
                                              field="body", arrays=z.files)
                    arr = z[z.files[0]]
            else:
                arr = np.load(io.BytesIO(zlib.decompress(body)), allow_pickle=False)
        except InvalidArgument:
            raise
        except Exception as exc:
            raise CorruptData(f"body is not a readable npz (or zlib-compressed npy): {exc}", field="body") from exc
        if arr.ndim == 4 and arr.shape[0] == 1:  # OCP clients sent (c, z, y, x) with one channel
            arr = arr[0]
        if tuple(arr.shape) != tuple(shape_zyx):
            raise InvalidArgument(f"body array has shape {list(arr.shape)} (z, y, x) but the box is "
                                  f"{list(shape_zyx)}", field="body", shape=list(arr.shape), expected=list(shape_zyx))
        if arr.dtype != dtype and not np.can_cast(arr.dtype, dtype, casting="safe"):
            raise InvalidArgument(f"body array dtype {arr.dtype} does not fit the layer dtype {dtype}",
                                  field="dtype", value=str(arr.dtype), allowed=str(dtype))
        return arr.astype(dtype, copy=False)
    if fmt == "blosc":
        try:
            raw = blosc.decompress(body)
        except Exception as exc:
            raise CorruptData(f"body is not a blosc-1 frame: {exc}", field="body") from exc
        want = int(np.prod(shape_zyx)) * dtype.itemsize
        if len(raw) != want:
            raise InvalidArgument(f"blosc body holds {len(raw)} bytes but the box {list(shape_zyx)} (z, y, x) of "
                                  f"{dtype} needs {want}", field="body", bytes=len(raw), expected=want)
        return np.frombuffer(raw, dtype=dtype).reshape(shape_zyx)
    raise InvalidArgument(f"upload format {fmt!r} is not allowed; use one of {', '.join(UPLOAD_FORMATS)}",
                          field="format", value=fmt, allowed=list(UPLOAD_FORMATS))


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
