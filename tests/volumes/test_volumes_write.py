"""Writes of arbitrary boxes, pyramid updates, and concurrent writers."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from neurolake.errors import InvalidArgument, OutOfBounds
from neurolake.volumes.spec import LayerSpec
from tests.conftest import on_local_and_s3

fresh_lake = on_local_and_s3("fresh_lake")  # every test using it runs on a local lake, then on S3


@pytest.fixture
def gerhard_copy(fresh_lake, gerhard_source, tmp_path):
    """A writable copy of the Gerhard image (first 16 sections) in a fresh lake."""
    np.save(tmp_path / "g.npy", gerhard_source[:16])
    return fresh_lake.ingest(str(tmp_path / "g.npy"), "g", "image", voxel_size=(4.6, 4.6, 50),
                             scheduler="threads")


def test_write_unaligned_box_then_read(gerhard_copy, gerhard_source):
    la = gerhard_copy
    rng = np.random.default_rng(1)
    patch = rng.integers(0, 256, (5, 301, 777), dtype=np.uint8)
    la.write(patch, x0=100, y0=127, z0=9)  # crosses chunk borders in x, y and z
    expect = gerhard_source[:16].copy()
    expect[9:14, 127:428, 100:877] = patch
    np.testing.assert_array_equal(la[:, :, :], expect)
    # coarser mips were recomputed over the touched region: mip 1 equals the 2x2 mean of the new data
    mip1 = la.cutout(x=(0, 512), y=(0, 512), z=(0, 16), mip=1)
    ref = np.rint(expect.astype(float).reshape(16, 512, 2, 512, 2).mean(axis=(2, 4)))
    np.testing.assert_array_equal(mip1, ref)
    mip2 = la.cutout(x=(0, 256), y=(0, 256), z=(0, 16), mip=2)
    ref2 = np.rint(ref.reshape(16, 256, 2, 256, 2).mean(axis=(2, 4)))
    np.testing.assert_array_equal(mip2, ref2)


def test_write_rejects_bad_arrays_and_changes_nothing(gerhard_copy, gerhard_source):
    la = gerhard_copy
    with pytest.raises(InvalidArgument, match="dtype uint16 does not fit"):
        la.write(np.zeros((1, 4, 4), np.uint16), x0=0, y0=0, z0=0)
    with pytest.raises(InvalidArgument, match="3 axes"):
        la.write(np.zeros((4, 4), np.uint8))
    with pytest.raises(OutOfBounds, match="x = 0:1024"):
        la.write(np.zeros((1, 4, 4), np.uint8), x0=1022, y0=0, z0=0)
    np.testing.assert_array_equal(la[:, :, :], gerhard_source[:16])


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from neurolake import open_lake
    lake = open_lake(sys.argv[1])
    la = lake.layer("seg", "s")
    k = int(sys.argv[2])
    for i in range(8):  # 8 writes each of a 4-column band; both writers share every shard
        x0 = (2 * i + k) * 4
        la.write(np.full((4, 32, 4), 10 * k + i + 1, np.uint64), x0=x0, y0=0, z0=0, update_mips=False)
""")


def test_two_processes_writing_the_same_shard_lose_nothing(fresh_lake, tmp_path):
    spec = LayerSpec(layer_type="segmentation", dtype="uint64", size_xyz=(64, 32, 4), voxel_size_nm=(8, 8, 8),
                     chunk_zyx=(4, 32, 8), shard_zyx=(4, 32, 64))
    fresh_lake.create_datastack("seg", (8, 8, 8))
    fresh_lake.create_layer("seg", "s", spec, status="ready")
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(fresh_lake.root), str(k)]) for k in (0, 1)]
    assert [p.wait(120) for p in procs] == [0, 0]
    got = fresh_lake.layer("seg", "s")[:, :, :]
    for k in (0, 1):
        for i in range(8):
            x0 = (2 * i + k) * 4
            assert (got[:, :, x0:x0 + 4] == 10 * k + i + 1).all(), (k, i)
