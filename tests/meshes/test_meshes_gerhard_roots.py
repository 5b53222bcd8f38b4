"""Root meshes of the demo's proofread Gerhard et al. 2013 segmentation (seeded-watershed supervoxels of the
merged labels, 4.6 × 4.6 × 50 nm): meshed on demand, only the blocks that hold the root; a root's mesh spans
exactly the voxels of its supervoxels; after a merge it covers both roots, after the undo one."""

from __future__ import annotations

import numpy as np
import pytest

from neurolake import meshes as M
from neurolake import open_lake

DS = "gerhard2013"
RES = np.array([4.6, 4.6, 50.0])


@pytest.fixture(scope="module")
def lake(gerhard_proofread_path):
    lk = open_lake(gerhard_proofread_path)
    yield lk
    lk.close()


def _root_bounds(vol, roots_vol, root):
    z, y, x = np.nonzero(roots_vol == root)
    return np.array([x.min(), y.min(), z.min()]) * RES, (np.array([x.max(), y.max(), z.max()]) + 1) * RES


@pytest.mark.timeout(600)
def test_gerhard_root_meshes_on_demand_merge_and_undo(lake):
    seg = lake.datastack(DS).segmentation
    sv_layer = lake.layer(DS, seg.layer)
    box = ((0, 256), (0, 256), (0, 20))
    vol = sv_layer.cutout(*box)  # (z, y, x) supervoxels of the first block
    roots_vol = seg.remap_to_roots(vol)
    # two multi-supervoxel roots lying inside the first 256 × 256 block (so their voxels are all in `vol`)
    inside = []
    for r, n in zip(*np.unique(roots_vol[roots_vol != 0], return_counts=True), strict=True):
        z, y, x = np.nonzero(roots_vol == r)
        if len(seg.leaves(int(r))) > 1 and x.max() < 250 and y.max() < 250 and x.min() > 0 and y.min() > 0:
            inside.append((n, int(r)))
    assert len(inside) >= 2
    (_, ra), (_, rb) = sorted(inside)[-2:]
    keys = M.root_fragments(lake, DS, ra)
    blocks = sv_layer.root / "mesh" / "blocks"
    built = sorted(p.name for p in blocks.glob("*.parquet"))
    assert built and len(built) < 16, "only the blocks that hold the root are meshed"
    assert {int(k.split(":")[0]) for k in keys} == {int(s) for s in seg.leaves(ra)}
    v, _ = M.root_mesh(lake, DS, ra)
    lo_a, hi_a = _root_bounds(vol, roots_vol, ra)
    np.testing.assert_allclose(v.min(axis=0), lo_a, atol=1e-3)
    np.testing.assert_allclose(v.max(axis=0), hi_a, atol=1e-3)

    lo_b, hi_b = _root_bounds(vol, roots_vol, rb)
    op = seg.merge(int(seg.leaves(ra)[0]), int(seg.leaves(rb)[0]), author="test")
    root = op["new_roots"][0]
    v, _ = M.root_mesh(lake, DS, root)
    np.testing.assert_allclose(v.min(axis=0), np.minimum(lo_a, lo_b), atol=1e-3)
    np.testing.assert_allclose(v.max(axis=0), np.maximum(hi_a, hi_b), atol=1e-3)
    assert sorted(p.name for p in blocks.glob("*.parquet")) == built, "the edit re-meshed nothing"
    seg.undo(op["operation_id"], author="test")
    now = seg.root(int(seg.leaves(ra)[0]))
    v, _ = M.root_mesh(lake, DS, now)
    np.testing.assert_allclose(v.min(axis=0), lo_a, atol=1e-3)
    np.testing.assert_allclose(v.max(axis=0), hi_a, atol=1e-3)
