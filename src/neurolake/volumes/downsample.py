"""Downsampling kernels for the pyramid: area mean for images, mode for segmentations.

Arrays are (z, y, x); ``factor_zyx`` is the integer step per axis; the result has shape
``ceil(shape / factor)`` and the input dtype. Both kernels work on strided views of the input (one per
offset inside the window), so memory stays near the size of the output, not a transposed copy of the
input. Partial windows at the far edges are reduced over the voxels that exist (mean) or padded by
repeating edge voxels (mode).
"""

from __future__ import annotations

import itertools

import numpy as np


def _offsets(factor_zyx):
    return list(itertools.product(*(range(f) for f in factor_zyx)))


def _view(block: np.ndarray, off, factor_zyx, out_shape) -> np.ndarray:
    """Voxels at offset ``off`` of every window, clipped to windows that contain such a voxel."""
    sl = tuple(slice(o, None, f) for o, f in zip(off, factor_zyx, strict=True))
    return block[sl]


def downsample_mean(block: np.ndarray, factor_zyx: tuple[int, int, int]) -> np.ndarray:
    """Area mean over ``factor_zyx`` windows; integers are rounded half to even (``np.rint``)."""
    factor_zyx = tuple(int(f) for f in factor_zyx)
    if factor_zyx == (1, 1, 1):
        return block.copy()
    out_shape = tuple(-(-s // f) for s, f in zip(block.shape, factor_zyx, strict=True))
    k = int(np.prod(factor_zyx))
    if block.dtype == np.uint8 and k <= 256:
        acc_t = np.uint16
    elif block.dtype == np.uint16 and k <= 65536:
        acc_t = np.uint32
    else:
        acc_t = np.float64
    total = np.zeros(out_shape, dtype=acc_t)
    count = np.zeros(out_shape, dtype=np.uint16) if any(
        s % f for s, f in zip(block.shape, factor_zyx, strict=True)) else None
    for off in _offsets(factor_zyx):
        v = _view(block, off, factor_zyx, out_shape)
        region = tuple(slice(0, n) for n in v.shape)
        total[region] += v.astype(acc_t, copy=False) if acc_t is np.float64 else v
        if count is not None:
            count[region] += 1
    if block.dtype.kind in "ui" and acc_t is not np.float64:
        # round half to even in integer arithmetic (no float temporaries the size of the output)
        div = count if count is not None else acc_t(k)
        q = total // div
        twice_r = (total - q * div) * 2
        q += (twice_r > div) | ((twice_r == div) & (q & 1 == 1))
        return q.astype(block.dtype)
    mean = total / (count if count is not None else k)
    if block.dtype.kind in "ui":
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)


def downsample_mode(block: np.ndarray, factor_zyx: tuple[int, int, int]) -> np.ndarray:
    """Most frequent id in each window (ties: the first in z, y, x order within the window)."""
    factor_zyx = tuple(int(f) for f in factor_zyx)
    if factor_zyx == (1, 1, 1):
        return block.copy()
    pads = [(0, (-s) % f) for s, f in zip(block.shape, factor_zyx, strict=True)]
    if any(p for _, p in pads):
        block = np.pad(block, pads, mode="edge")
    out_shape = tuple(s // f for s, f in zip(block.shape, factor_zyx, strict=True))
    views = [_view(block, off, factor_zyx, out_shape) for off in _offsets(factor_zyx)]
    best = views[0].copy()
    best_count = np.zeros(out_shape, dtype=np.uint8)
    for vi in views:
        c = np.zeros(out_shape, dtype=np.uint8)
        for vj in views:
            c += vi == vj
        better = c > best_count
        best[better] = vi[better]
        best_count[better] = c[better]
    return best


def downsample(block: np.ndarray, factor_zyx: tuple[int, int, int], layer_type: str) -> np.ndarray:
    """Area mean for ``image`` layers, mode for ``segmentation`` layers."""
    return downsample_mean(block, factor_zyx) if layer_type == "image" else downsample_mode(block, factor_zyx)
