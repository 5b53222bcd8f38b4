"""The pyramid update after a large write, on Dask (:func:`neurolake.volumes.pyramid.update_region_on_dask`): one
task per touched output shard, on a real cluster (``dask scheduler`` + 2 ``dask worker`` processes), gives every
mip the voxels of the in-process update (:func:`update_region`) and of a full rebuild, for the real Gerhard EM
stack and its labels, with a write that crosses shard borders and reaches the volume's edge."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from neurolake.volumes.pyramid import build_pyramid, region_boxes, update_region, update_region_on_dask
from neurolake.volumes.store import make_context, open_array
from tests.conftest import DATA
from tests.jobs.test_killed_worker import _labels, _layer


@pytest.mark.parametrize("kind", ["image", "segmentation"])
def test_region_update_on_dask_equals_in_process(dask_cluster, tmp_path, gerhard_source, kind):
    vol = gerhard_source if kind == "image" else _labels()
    a = tmp_path / "a"
    spec = _layer(a, vol, kind)
    build_pyramid(a, spec, scheduler="threads")
    b, full = tmp_path / "b", tmp_path / "full"
    shutil.copytree(a, b)
    # a write of a flipped block: crosses shard borders (128 × 128 in y, x), ends at the volume's edge in z and x
    z, y, x = vol.shape
    box = ((3, z), (100, 700), (x - 530, x))
    block = np.ascontiguousarray(vol[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]][:, ::-1, ::-1])
    ctx = make_context(1 << 26)
    for root in (a, b):
        open_array(root, 0, ctx)[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]].write(block).result()
    update_region([open_array(a, m.mip, ctx) for m in spec.mips], spec.mips, kind, box)
    done = []
    n = update_region_on_dask(b, spec, box, scheduler=dask_cluster.address, on_task=done.append)
    assert n == len(done) == sum(len(bs) for _, bs in region_boxes(spec, box)) and n > len(spec.mips)
    shutil.copytree(a, full)
    build_pyramid(full, spec, scheduler="threads")  # from the new mip 0
    for m in spec.mips:
        ra = open_array(a, m.mip, ctx).read().result()
        np.testing.assert_array_equal(ra, open_array(b, m.mip, ctx).read().result(), err_msg=f"mip {m.mip}")
        np.testing.assert_array_equal(ra, open_array(full, m.mip, ctx).read().result(), err_msg=f"mip {m.mip}")


def test_region_boxes_lie_in_one_shard_each(gerhard_source, tmp_path):
    spec = _layer(tmp_path / "l", gerhard_source[:4], "image")
    for m, boxes in region_boxes(spec, ((0, 4), (5, 900), (130, 1024))):
        sh = spec.mips[m].shard_zyx
        for bx in boxes:
            assert all(a // s == (e - 1) // s and a < e for (a, e), s in zip(bx, sh, strict=True)), (m, bx)
        # together they cover the widened region exactly once
        vox = sum(int(np.prod([e - a for a, e in bx])) for bx in boxes)
        lo = [min(bx[i][0] for bx in boxes) for i in range(3)]
        hi = [max(bx[i][1] for bx in boxes) for i in range(3)]
        assert vox == int(np.prod(np.array(hi) - np.array(lo)))


def test_a_large_write_updates_its_pyramid_on_dask(fresh_lake, gerhard_source, monkeypatch):
    """Layer.write hands a region of at least DASK_REGION_BYTES to Dask tasks (lowered here so the real stack
    qualifies); every mip equals a write whose pyramid is updated in the process."""
    import neurolake.volumes.layer as layer_mod
    import neurolake.volumes.pyramid as pyr

    for name in ("a", "b"):
        fresh_lake.ingest(str(DATA / "gerhard2013" / "raw"), "g", name, voxel_size=(4.6, 4.6, 50),
                          scheduler="threads")
    block = np.ascontiguousarray(gerhard_source[:, :512, :512][:, ::-1])
    fresh_lake.layer("g", "a").write(block, x0=256, y0=128, z0=0)
    calls = []
    real = pyr.update_region_on_dask
    monkeypatch.setattr(pyr, "update_region_on_dask", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(layer_mod, "DASK_REGION_BYTES", block.nbytes)
    monkeypatch.setattr(layer_mod, "DASK_REGION_SCHEDULER", "threads")
    lb = fresh_lake.layer("g", "b")
    lb.write(block, x0=256, y0=128, z0=0)
    assert calls  # (it calls itself again with its cluster)
    la = fresh_lake.layer("g", "a")
    for m in range(la.num_mips):
        x, y, z = la.size(m)
        np.testing.assert_array_equal(la.cutout(x=(0, x), y=(0, y), z=(0, z), mip=m),
                                      lb.cutout(x=(0, x), y=(0, y), z=(0, z), mip=m), err_msg=f"mip {m}")
