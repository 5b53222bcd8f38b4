"""Helpers of the mesh tests."""

from __future__ import annotations


def bbox_nm(vol, sid, res):
    """(lo, hi) x, y, z nm of the voxels of ``sid`` in a (z, y, x) volume: voxel faces, hi exclusive."""
    import numpy as np

    z, y, x = np.nonzero(vol == sid)
    lo = np.array([x.min(), y.min(), z.min()], float) * res
    hi = (np.array([x.max(), y.max(), z.max()], float) + 1) * res
    return lo, hi
