"""Build and update the mip pyramid of a layer.

Whole pyramids are built level by level on Dask: level m+1 is split into blocks aligned to its shard
grid, so every task writes whole shards and no two tasks touch the same file. Partial updates after a
cutout write (:func:`update_region`) run in-process over the touched region only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorstore as ts

from neurolake.jobs import dask_client, run_tasks
from neurolake.volumes.downsample import downsample
from neurolake.volumes.spec import LayerSpec, Mip
from neurolake.volumes.store import open_array_cached, task_spec

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # ((z0, z1), (y0, y1), (x0, x1))


def _step_zyx(spec: LayerSpec, mip: int) -> tuple[int, int, int]:
    x, y, z = spec.mips[mip].step_xyz
    return (z, y, x)


def source_box(dst_box: Box, step_zyx, src_shape_zyx) -> Box:
    """The region of mip m-1 that a box of mip m is computed from (clipped to mip m-1)."""
    return tuple((a * f, min(b * f, s)) for (a, b), f, s in zip(dst_box, step_zyx, src_shape_zyx, strict=True))


def _downsample_task(src_json: str, dst_json: str, dst_box: Box, step_zyx, layer_type: str) -> int:
    src = open_array_cached(src_json)
    dst = open_array_cached(dst_json)
    sb = source_box(dst_box, step_zyx, src.shape)
    block = src[sb[0][0]:sb[0][1], sb[1][0]:sb[1][1], sb[2][0]:sb[2][1]].read().result()
    out = downsample(block, step_zyx, layer_type)
    dst[dst_box[0][0]:dst_box[0][1], dst_box[1][0]:dst_box[1][1], dst_box[2][0]:dst_box[2][1]].write(out).result()
    return int(out.nbytes)


def shard_boxes(shape_zyx, shard_zyx) -> list[Box]:
    ranges = [[(i, min(i + sh, s)) for i in range(0, s, sh)] for s, sh in zip(shape_zyx, shard_zyx, strict=True)]
    return [tuple(b) for b in itertools.product(*ranges)]


def build_pyramid(root: Path, spec: LayerSpec, *, scheduler: str | None = None, client: Any = None,
                  on_level: Callable[[int, int], None] | None = None,
                  on_task: Callable[[int], None] | None = None) -> None:
    """Compute mips 1..n from mip 0 on Dask (see :mod:`neurolake.jobs` for ``scheduler``).

    ``on_level(mip, n_tasks)`` is called before each level, ``on_task(nbytes)`` after each task.
    """
    if len(spec.mips) < 2:
        return
    if client is None:
        with dask_client(scheduler) as c:
            return build_pyramid(root, spec, client=c, on_level=on_level, on_task=on_task)
    for m in spec.mips[1:]:
        src_json = task_spec(root, m.mip - 1)
        dst_json = task_spec(root, m.mip)
        boxes = shard_boxes(m.shape_zyx, m.shard_zyx)
        if on_level:
            on_level(m.mip, len(boxes))
        run_tasks(client, _downsample_task,
                  [(src_json, dst_json, b, _step_zyx(spec, m.mip), spec.layer_type) for b in boxes], on_task)


def update_region(arrays: list[ts.TensorStore], mips: list[Mip], layer_type: str, box: Box) -> None:
    """Recompute ``mips[1:]`` over the region touched by a write of ``box`` (z, y, x) into ``mips[0]``.

    ``arrays[i]`` is the array of ``mips[i]``. The region is widened at each level to whole windows of
    the step, so edge voxels of the write are averaged with their real neighbours.
    """
    for i, m in enumerate(mips[1:], start=1):
        step = (m.step_xyz[2], m.step_xyz[1], m.step_xyz[0])
        dst_box = tuple((a // f, min(math.ceil(b / f), s)) for (a, b), f, s in zip(box, step, m.shape_zyx, strict=True))
        src = arrays[i - 1]
        sb = source_box(dst_box, step, src.shape)
        block = src[sb[0][0]:sb[0][1], sb[1][0]:sb[1][1], sb[2][0]:sb[2][1]].read().result()
        out = downsample(block, step, layer_type)
        arrays[i][dst_box[0][0]:dst_box[0][1], dst_box[1][0]:dst_box[1][1],
                  dst_box[2][0]:dst_box[2][1]].write(out).result()
        box = dst_box


def describe(spec: LayerSpec) -> list[dict[str, Any]]:
    return [{"mip": m.mip, "size": list(m.size_xyz), "voxel_size": list(m.voxel_size_nm)} for m in spec.mips]


def region_boxes(spec: LayerSpec, box: Box, mip: int = 0) -> list[tuple[int, list[Box]]]:
    """The output boxes of a pyramid update after a write of ``box`` ((z0, z1), (y0, y1), (x0, x1) voxels at
    ``mip``): per coarser mip, the region :func:`update_region` recomputes (widened to whole windows of the
    step), split along that mip's shard grid, so that each box lies in one output shard. ``[(mip, boxes)]``."""
    out = []
    for m in spec.mips[mip + 1:]:
        step = _step_zyx(spec, m.mip)
        box = tuple((a // f, min(math.ceil(b / f), s)) for (a, b), f, s in zip(box, step, m.shape_zyx, strict=True))
        ranges = [[(max(i, a), min(i + sh, b)) for i in range((a // sh) * sh, b, sh)]
                  for (a, b), sh in zip(box, m.shard_zyx, strict=True)]
        out.append((m.mip, [tuple(b) for b in itertools.product(*ranges)]))
    return out


def update_region_on_dask(root: Path, spec: LayerSpec, box: Box, *, mip: int = 0, scheduler: str | None = None,
                          client: Any = None, job: Any = None, on_task: Callable[[int], None] | None = None) -> int:
    """:func:`update_region` on Dask, for large writes: recompute the mips above ``mip`` over the region a write
    of ``box`` ((z0, z1), (y0, y1), (x0, x1) voxels at ``mip``) touched, level by level, one task per touched
    output shard (:func:`region_boxes`; each task reads its source block and writes its box, so no two tasks
    write the same shard and a re-run task writes the same voxels). Gives the voxels :func:`update_region`
    gives. ``scheduler``/``client``: :mod:`neurolake.jobs`; ``job``: a
    :class:`neurolake.jobs.records.Job` counting the tasks; ``on_task(nbytes)`` after each. Returns the number
    of tasks."""
    if client is None:
        with dask_client(scheduler) as c:
            return update_region_on_dask(root, spec, box, mip=mip, client=c, job=job, on_task=on_task)
    n = 0
    for m, boxes in region_boxes(spec, box, mip):
        src_json = task_spec(root, m - 1)
        dst_json = task_spec(root, m)
        run_tasks(client, _downsample_task,
                  [(src_json, dst_json, b, _step_zyx(spec, m), spec.layer_type) for b in boxes], on_task, job=job)
        n += len(boxes)
    return n
