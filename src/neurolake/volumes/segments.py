"""Segment-id queries on segmentation layers: ids in a box, bounding box of an id, id reservation.

These answer BossDB's ``ids``, ``boundingbox`` and ``reserve`` services (and are usable directly).
Coordinates are (x, y, z) half-open voxel ranges at the given mip; arrays are (z, y, x).
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument, NotFound
from neurolake.storage.config import is_s3
from neurolake.storage.files import write_text_atomic
from neurolake.volumes.layer import Layer

# BossDB's cuboid (x, y, z): the unit of "loose" bounding boxes.
BOSS_CUBOID_XYZ = (512, 512, 16)


def _check_segmentation(layer: Layer) -> None:
    if layer.layer_type != "segmentation":
        raise InvalidArgument(f"{layer.datastack}/{layer.name} is an {layer.layer_type} layer; ids exist only in "
                              "segmentation layers", field="layer", value=layer.name)


def ids_in_box(layer: Layer, x, y, z, mip: int = 0) -> np.ndarray:
    """Sorted unique non-zero ids (uint64) in the box. Raises InvalidArgument / OutOfBounds."""
    _check_segmentation(layer)
    arr = layer.cutout(x=x, y=y, z=z, mip=mip)
    ids = np.unique(arr)
    return ids[ids != 0].astype(np.uint64)


def _slabs(layer: Layer, mip: int):
    """(z0, z1) slabs one shard deep covering the layer at ``mip``."""
    depth = layer.spec.mips[mip].shard_zyx[0]
    nz = layer.shape(mip)[0]
    for z0 in range(0, nz, depth):
        yield z0, min(nz, z0 + depth)


def bounding_box(layer: Layer, segment_id: int, mip: int = 0, tight: bool = True) -> dict[str, list[int]]:
    """Bounding box of ``segment_id`` at ``mip`` as ``{"x_range": [x0, x1], "y_range", "z_range"}``.

    ``tight`` gives the exact half-open extent; loose (BossDB's default) rounds it out to whole
    512 × 512 × 16 (x, y, z) cuboids, clipped to the layer bounds. Scans the layer one shard-deep
    slab at a time. Raises NotFound when the id does not occur, InvalidArgument for id 0 or an image layer.
    """
    _check_segmentation(layer)
    if int(segment_id) <= 0:
        raise InvalidArgument(f"segment id must be a positive integer, got {segment_id}", field="id",
                              value=int(segment_id))
    sid = layer.dtype.type(segment_id) if int(segment_id) <= np.iinfo(layer.dtype).max else None
    lo = [None, None, None]
    hi = [None, None, None]
    if sid is not None:
        arr = layer.array(mip)
        for z0, z1 in _slabs(layer, mip):
            mask = arr[z0:z1].read().result() == sid
            if not mask.any():
                continue
            for ax, proj in enumerate((mask.any(axis=(1, 2)), mask.any(axis=(0, 2)), mask.any(axis=(0, 1)))):
                idx = np.flatnonzero(proj)
                a, b = int(idx[0]), int(idx[-1]) + 1
                if ax == 0:
                    a, b = a + z0, b + z0
                lo[ax] = a if lo[ax] is None else min(lo[ax], a)
                hi[ax] = b if hi[ax] is None else max(hi[ax], b)
    if lo[0] is None:
        raise NotFound(f"id {segment_id} does not occur in {layer.datastack}/{layer.name} at mip {mip}",
                       id=int(segment_id))
    (z0, y0, x0), (z1, y1, x1) = lo, hi
    box = {"x": [x0, x1], "y": [y0, y1], "z": [z0, z1]}
    if not tight:
        size = dict(zip("xyz", layer.size(mip), strict=True))
        for axis, c in zip("xyz", BOSS_CUBOID_XYZ, strict=True):
            a, b = box[axis]
            box[axis] = [a // c * c, min(size[axis], -(-b // c) * c)]
    return {"x_range": box["x"], "y_range": box["y"], "z_range": box["z"]}


def max_id(layer: Layer) -> int:
    """The largest id stored at mip 0 (scanned slab by slab)."""
    _check_segmentation(layer)
    arr = layer.array(0)
    return max((int(arr[z0:z1].read().result().max()) for z0, z1 in _slabs(layer, 0)), default=0)


def reserve_ids(lake_root: Path | Any, layer: Layer, count: int, locks: Any = None) -> int:
    """Reserve ``count`` new consecutive ids for ``layer``; returns the first one.

    The first reservation starts above the largest stored id; later ones continue from the last
    reservation. State is ``<lake>/datastacks/<ds>/serving/reserved_ids.json``, updated under an
    exclusive lock — a file lock in a local lake, the database lock ``locks`` (``lake.locks``, required) in a
    lake on object storage — so concurrent server processes never hand out the same id.
    Raises InvalidArgument for count < 1 or an image layer; Conflict when the lock stays taken (object storage).
    """
    _check_segmentation(layer)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"number of ids to reserve must be a whole number >= 1, got {count!r}",
                              field="count", value=repr(count))
    if is_s3(lake_root):
        if locks is None:
            raise ValueError("reserving ids in a lake on object storage needs the lake's database locks")
        state_path = lake_root / "datastacks" / layer.datastack / "serving" / "reserved_ids.json"
        with locks.hold(f"reserve-ids:{state_path}", what=f"id reservation of {layer.datastack}/{layer.name}"):
            return _reserve(state_path, layer, count)
    folder = Path(lake_root) / "datastacks" / layer.datastack / "serving"
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "reserved_ids.json"
    with open(folder / "reserved_ids.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _reserve(state_path, layer, count)


def _reserve(state_path: Path | Any, layer: Layer, count: int) -> int:
    """Under the reservation lock: the first of ``count`` ids, recorded in ``state_path`` (replaced at once)."""
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    key = f"{layer.name}@{layer.created}"
    start = state.get(key) or max_id(layer) + 1
    limit = int(np.iinfo(layer.dtype).max)
    if start + count - 1 > limit:
        raise InvalidArgument(f"cannot reserve {count} ids from {start}: the layer dtype {layer.dtype} ends at "
                              f"{limit}", field="count", value=count)
    state[key] = start + count
    write_text_atomic(state_path, json.dumps(state))
    return start
