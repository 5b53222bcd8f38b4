"""Neuroglancer precomputed views of stored layers: the ``info`` JSON, chunk names and chunk encodings.

Nothing is converted on disk: each chunk is cut from the stored Zarr layer (``Layer.cutout``) and
encoded on request. Format reference: the Neuroglancer precomputed volume spec
(https://github.com/google/neuroglancer/blob/master/src/datasource/precomputed/volume.md):

- ``info``: ``@type neuroglancer_multiscale_volume``, ``type`` image|segmentation, ``data_type``,
  ``num_channels`` 1, one scale per mip with ``key`` (the x_y_z voxel size in nm, e.g.
  ``4.6_4.6_50``), ``size`` and ``chunk_sizes`` in (x, y, z) voxels, ``resolution`` in nm,
  ``voxel_offset`` [0, 0, 0], and ``encoding``;
- chunk ``{key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` with ends clipped to the scale's bounds;
- encodings: ``raw`` (little-endian, Fortran order x fastest — the same bytes as our C-order
  (z, y, x) array), ``jpeg`` (uint8 images; one grayscale JPEG of width x and height y·z, the z
  sections stacked vertically) and ``compressed_segmentation`` (uint32/uint64 segmentations, block
  size 8×8×8, via the ``compressed_segmentation`` package).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument, NotFound
from neurolake.volumes.layer import Layer

ENCODINGS = ("raw", "jpeg", "compressed_segmentation")
CSEG_BLOCK_XYZ = (8, 8, 8)
JPEG_QUALITY = 90
_CHUNK = re.compile(r"^(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)$")


def default_encoding(layer: Layer) -> str:
    """``compressed_segmentation`` for segmentations, ``raw`` for images."""
    return "compressed_segmentation" if layer.layer_type == "segmentation" else "raw"


def check_encoding(layer: Layer, encoding: str | None) -> str:
    """Validate ``encoding`` for ``layer`` (None → :func:`default_encoding`). Raises InvalidArgument."""
    if encoding is None:
        return default_encoding(layer)
    allowed = ["raw", "compressed_segmentation"] if layer.layer_type == "segmentation" else ["raw"]
    if layer.layer_type == "image" and layer.dtype == np.uint8:
        allowed.append("jpeg")
    if encoding not in allowed:
        raise InvalidArgument(f"encoding {encoding!r} is not available for {layer.datastack}/{layer.name} "
                              f"({layer.layer_type}, {layer.dtype}); use one of {', '.join(allowed)}",
                              field="encoding", value=encoding, allowed=allowed)
    return encoding


def chunk_size_xyz(layer: Layer, mip: int) -> tuple[int, int, int]:
    """The precomputed chunk size (x, y, z) of ``mip``: the stored Zarr chunk (inner chunk of a shard)."""
    cz, cy, cx = layer.spec.mips[mip].chunk_zyx
    return cx, cy, cz


def info(layer: Layer, encoding: str | None = None) -> dict[str, Any]:
    """The precomputed ``info`` JSON of ``layer`` with every scale in ``encoding``."""
    encoding = check_encoding(layer, encoding)
    scales = []
    for m in layer.spec.mips:
        scale = {"key": m.key, "size": list(m.size_xyz), "resolution": list(m.voxel_size_nm),
                 "voxel_offset": [0, 0, 0], "chunk_sizes": [list(chunk_size_xyz(layer, m.mip))],
                 "encoding": encoding}
        if encoding == "compressed_segmentation":
            scale["compressed_segmentation_block_size"] = list(CSEG_BLOCK_XYZ)
        scales.append(scale)
    doc = {"@type": "neuroglancer_multiscale_volume", "type": layer.layer_type, "data_type": str(layer.dtype),
           "num_channels": 1, "scales": scales}
    if (layer.root / "skeletons" / "info").is_file():  # built by neurolake.skeletons (docs/skeletons.md)
        doc["skeletons"] = "skeletons"
    mesh_meta = layer.root / "mesh" / "meta.json"  # built by neurolake.meshes (docs/meshes.md)
    if layer.layer_type == "segmentation" and mesh_meta.is_file():
        import json

        try:
            doc["mesh"] = json.loads(mesh_meta.read_text()).get("info_dir", "mesh")
        except (OSError, ValueError):  # being replaced right now: the legacy folder is always served
            doc["mesh"] = "mesh"
    return doc


def provenance(layer: Layer) -> dict[str, Any]:
    """The precomputed ``provenance`` JSON (cloud-volume's shape): description, owners, processing, sources."""
    return {"description": layer.description, "owners": [], "sources": [f"neurolake:{layer.datastack}/{layer.name}"],
            "processing": [layer.provenance] if layer.provenance else []}


def mip_of_key(layer: Layer, key: str) -> int:
    """The mip whose scale key is ``key``. Raises NotFound (a client reads that as a missing file)."""
    for m in layer.spec.mips:
        if m.key == key:
            return m.mip
    raise NotFound(f"scale {key!r} does not exist in {layer.datastack}/{layer.name}; scales are "
                   f"{', '.join(m.key for m in layer.spec.mips)}", key=key)


def parse_chunk_name(layer: Layer, mip: int, name: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``x0-x1_y0-y1_z0-z1`` → ((x0, x1), (y0, y1), (z0, z1)), checked against the grid of ``mip``.

    A chunk must start on the chunk grid and end at the next grid line or the volume bound, as a
    static precomputed tree would have it; anything else is NotFound (404, "no such file").
    """
    m = _CHUNK.match(name)
    if not m:
        raise NotFound(f"{name!r} is not a chunk name (x0-x1_y0-y1_z0-z1)", chunk=name)
    x0, x1, y0, y1, z0, z1 = (int(v) for v in m.groups())
    size = layer.size(mip)
    chunk = chunk_size_xyz(layer, mip)
    box = ((x0, x1), (y0, y1), (z0, z1))
    for axis, (a, b), n, c in zip("xyz", box, size, chunk, strict=True):
        if a % c or b != min(a + c, n) or a >= n:
            raise NotFound(f"chunk {name} is not on the {axis} chunk grid of scale {mip} "
                           f"(chunk size {c}, bound {n})", chunk=name, axis=axis)
    return box


def encode_chunk(arr_zyx: np.ndarray, encoding: str) -> bytes:
    """Encode a (z, y, x) chunk as precomputed ``encoding`` bytes (see module doc)."""
    arr = np.ascontiguousarray(arr_zyx)
    if encoding == "raw":
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    if encoding == "compressed_segmentation":
        import compressed_segmentation as cseg

        if arr.dtype not in (np.uint32, np.uint64):
            arr = arr.astype(np.uint64)
        # (z, y, x) C-order == (x, y, z) Fortran order: the precomputed layout.
        return bytes(cseg.compress(arr.T, block_size=CSEG_BLOCK_XYZ, order="F"))
    if encoding == "jpeg":
        import simplejpeg

        z, y, x = arr.shape
        return simplejpeg.encode_jpeg(arr.reshape(z * y, x, 1), quality=JPEG_QUALITY, colorspace="GRAY")
    raise InvalidArgument(f"encoding {encoding!r} is unknown; use one of {', '.join(ENCODINGS)}",
                          field="encoding", value=encoding, allowed=list(ENCODINGS))


def read_chunk(layer: Layer, key: str, name: str, encoding: str | None = None) -> bytes:
    """The encoded bytes of chunk ``name`` of scale ``key`` (one ``Layer.cutout``). Raises NotFound."""
    encoding = check_encoding(layer, encoding)
    mip = mip_of_key(layer, key)
    x, y, z = parse_chunk_name(layer, mip, name)
    return encode_chunk(layer.cutout(x=x, y=y, z=z, mip=mip), encoding)
