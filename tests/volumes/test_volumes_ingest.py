"""Ingest from every source kind, resume after a killed ingest, roll back on bad data."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
from PIL import Image

from neurolake.errors import AlreadyExists, CorruptData, InvalidArgument, NotFound, NotReady
from tests.conftest import DATA, on_local_and_s3

fresh_lake = on_local_and_s3("fresh_lake")  # every test using it runs on a local lake, then on S3


@pytest.fixture(scope="module")
def gala_image():
    import h5py

    with h5py.File(DATA / "gala_fibsem" / "train-image.h5") as f:
        return f["stack"][()]


def _ingest(lake, src, name, **kw):
    kw.setdefault("voxel_size", (8, 8, 8))
    return lake.ingest(str(src), "ds", name, scheduler="threads", **kw)


def test_ingest_every_source_kind(fresh_lake, tmp_path, gala_image):
    vol = gala_image[:20]  # (20, 100, 200) real FIB-SEM
    # folder of TIFF slices, names needing natural sort
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i, sl in enumerate(vol):
        tifffile.imwrite(folder / f"s{i}.tif", sl)
    # folder of PNG slices
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, sl in enumerate(vol):
        Image.fromarray(sl).save(pngs / f"img_{i}.png")
    tifffile.imwrite(tmp_path / "stack.tif", vol)
    np.save(tmp_path / "vol.npy", vol)
    import zarr

    z = zarr.create_array(str(tmp_path / "vol.zarr"), shape=vol.shape, chunks=(8, 64, 64), dtype=vol.dtype)
    z[:] = vol
    sources = {"tifs": folder, "pngs": pngs, "mtif": tmp_path / "stack.tif", "npy": tmp_path / "vol.npy",
               "zarr": tmp_path / "vol.zarr", "h5": f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/stack"}
    for name, src in sources.items():
        la = _ingest(fresh_lake, src, name)
        expect = gala_image if name == "h5" else vol
        np.testing.assert_array_equal(la[:, :, :], expect, err_msg=name)
        assert la.status == "ready" and la.provenance["action"] == "ingest"
        assert la.provenance["inputs"]["fingerprint"]


def test_a_folder_holding_one_multi_page_tiff_is_that_stack(fresh_lake, tmp_path, gala_image):
    folder = tmp_path / "one"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", gala_image[:12])
    np.testing.assert_array_equal(_ingest(fresh_lake, folder, "one")[:, :, :], gala_image[:12])


def test_a_layer_created_again_at_the_same_path_is_read_afresh(fresh_lake, tmp_path, gala_image):
    """Pyramid tasks open their arrays once per job: a layer deleted and ingested again under the same name (same
    folder, new shape and chunks) in the same process must not be read through the first job's opening (it
    failed with 'Not enough data' reading a shard, or gave the old shape)."""
    tifffile.imwrite(tmp_path / "a.tif", gala_image[:20])
    tifffile.imwrite(tmp_path / "b.tif", gala_image[:6, :64, :100])
    first = _ingest(fresh_lake, tmp_path / "a.tif", "again")
    assert first.num_mips >= 2
    fresh_lake.delete_layer("ds", "again")
    la = _ingest(fresh_lake, tmp_path / "b.tif", "again", shard=(4, 64, 64), chunk=(2, 32, 32))
    assert la.root == first.root
    np.testing.assert_array_equal(la[:, :, :], gala_image[:6, :64, :100])
    from neurolake.volumes.downsample import downsample

    sx, sy, sz = la.size(1)
    expect = downsample(gala_image[:6, :64, :100], la.spec.mips[1].step_xyz[::-1], "image")
    np.testing.assert_array_equal(la.cutout(x=(0, sx), y=(0, sy), z=(0, sz), mip=1), expect)


def test_natural_sort_of_slices(fresh_lake, tmp_path):
    folder = tmp_path / "nat"
    folder.mkdir()
    for i in (1, 2, 10):  # lexical order would be 1, 10, 2
        tifffile.imwrite(folder / f"{i}.tif", np.full((8, 8), i, np.uint8))
    la = _ingest(fresh_lake, folder, "nat")
    assert la[:, 0, 0].tolist() == [1, 2, 10]


def test_segmentation_from_signed_ints_and_refuses_negative(fresh_lake, tmp_path):
    import h5py

    with h5py.File(DATA / "gala_fibsem" / "train-gt.lzf.h5") as f:
        gt = f["stack"][()]
    assert gt.dtype == np.int32
    la = _ingest(fresh_lake, f"{DATA / 'gala_fibsem' / 'train-gt.lzf.h5'}:/stack", "seg", layer_type="segmentation")
    assert la.dtype == np.uint32
    np.testing.assert_array_equal(la[:, :, :], gt)
    bad = gt.copy()
    bad[5, 5, 5] = -3
    np.save(tmp_path / "neg.npy", bad)
    with pytest.raises(InvalidArgument, match="-3"):
        _ingest(fresh_lake, tmp_path / "neg.npy", "neg", layer_type="segmentation")
    with pytest.raises(NotFound):
        fresh_lake.layer("ds", "neg")  # rolled back


@pytest.mark.parametrize(
    ("kind", "err", "text"),
    [
        ("missing", NotFound, "does not exist"),
        ("empty_folder", InvalidArgument, "no .tif"),
        ("mismatch", InvalidArgument, "all slices must match"),
        ("two_stacks", InvalidArgument, "multi-page TIFF"),
        ("rgb", InvalidArgument, "RGB"),
        ("h5_no_dataset", NotFound, "no dataset"),
        ("float_seg", InvalidArgument, "cannot hold segment ids"),
        ("image_int64", InvalidArgument, "--dtype"),
        ("bad_suffix", InvalidArgument, "cannot ingest"),
    ],
)
def test_bad_sources_keep_nothing(fresh_lake, tmp_path, kind, err, text):
    kw = {}
    if kind == "missing":
        src = tmp_path / "nothing"
    elif kind == "empty_folder":
        src = tmp_path / "empty"
        src.mkdir()
    elif kind == "mismatch":
        src = tmp_path / "mm"
        src.mkdir()
        tifffile.imwrite(src / "0.tif", np.zeros((8, 8), np.uint8))
        tifffile.imwrite(src / "1.tif", np.zeros((8, 9), np.uint8))
    elif kind == "two_stacks":  # two multi-page TIFFs: not one section per file
        src = tmp_path / "stacks"
        src.mkdir()
        tifffile.imwrite(src / "a.tif", np.zeros((5, 8, 8), np.uint8))
        tifffile.imwrite(src / "b.tif", np.zeros((5, 8, 8), np.uint8))
    elif kind == "rgb":
        src = tmp_path / "rgb"
        src.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "0.png")
    elif kind == "h5_no_dataset":
        src = f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/nope"
    elif kind == "float_seg":
        src = tmp_path / "f.npy"
        np.save(src, np.zeros((2, 4, 4), np.float32))
        kw["layer_type"] = "segmentation"
    elif kind == "image_int64":
        src = tmp_path / "i.npy"
        np.save(src, np.zeros((2, 4, 4), np.int64))
    else:
        src = tmp_path / "x.csv"
        src.write_text("1,2\n")
    with pytest.raises(err, match=text):
        _ingest(fresh_lake, src, "bad", **kw)
    with pytest.raises(NotFound):
        fresh_lake.layer("ds", "bad")


def test_corrupt_slice_part_way_rolls_back(fresh_lake, tmp_path, gala_image):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for i, sl in enumerate(gala_image[:40]):
        tifffile.imwrite(folder / f"{i:02d}.tif", sl)
    # damage slice 30 after its header: the header reads fine, the pixel data is cut short
    p = folder / "30.tif"
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(CorruptData, match="rolled back") as info:
        _ingest(fresh_lake, folder, "c", shard=(16, 128, 256), chunk=(16, 64, 64))
    assert "30.tif" in str(info.value)
    with pytest.raises(NotFound):
        fresh_lake.layer("ds", "c")
    assert not fresh_lake.layer_path("ds", "c").exists()


def test_existing_layer_is_not_overwritten_silently(fresh_lake, tmp_path, gala_image):
    np.save(tmp_path / "a.npy", gala_image[:4])
    _ingest(fresh_lake, tmp_path / "a.npy", "a")
    with pytest.raises(AlreadyExists, match="--overwrite"):
        _ingest(fresh_lake, tmp_path / "a.npy", "a")
    np.save(tmp_path / "b.npy", gala_image[4:8])
    la = _ingest(fresh_lake, tmp_path / "b.npy", "a", overwrite=True)
    np.testing.assert_array_equal(la[:, :, :], gala_image[4:8])


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from neurolake import open_lake
    from neurolake.volumes.sources import NpyFile

    class DiesAtSlab(NpyFile):
        def read(self, z0, z1, y0=0, y1=None):
            if z0 >= int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)   # a real kill -9 in the middle of the ingest
            return super().read(z0, z1, y0, y1)

    lake = open_lake(sys.argv[1])
    lake.ingest(DiesAtSlab(__import__("pathlib").Path(sys.argv[2])), "ds", "vol", voxel_size=(8, 8, 8),
                shard=(8, 128, 256), chunk=(8, 64, 64), scheduler="threads")
""")


def test_ingest_killed_part_way_is_not_complete_and_resumes(fresh_lake, tmp_path, gala_image):
    np.save(tmp_path / "vol.npy", gala_image)  # 50 sections, slabs of 8 -> 7 slabs
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(fresh_lake.root), str(tmp_path / "vol.npy"), "24"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    la = fresh_lake.layer("ds", "vol")
    assert la.status == "ingesting"
    assert la.progress["slabs_done"] == 3 and la.progress["slabs_total"] == 7
    with pytest.raises(NotReady, match="3/7 slabs"):
        la.cutout(x=(0, 10), y=(0, 10), z=(0, 1))
    # a different source cannot take over the half-written layer without --overwrite
    np.save(tmp_path / "other.npy", gala_image[:10])
    with pytest.raises(NotReady, match="interrupted ingest"):
        fresh_lake.ingest(str(tmp_path / "other.npy"), "ds", "vol", shard=(8, 128, 256), chunk=(8, 64, 64),
                          scheduler="threads")
    said = []
    la = fresh_lake.ingest(str(tmp_path / "vol.npy"), "ds", "vol", voxel_size=(8, 8, 8), shard=(8, 128, 256),
                           chunk=(8, 64, 64), scheduler="threads", say=said.append)
    assert any("resuming" in s and "3/7" in s for s in said)
    assert la.status == "ready"
    np.testing.assert_array_equal(la[:, :, :], gala_image)
    mip1 = la.cutout(x=(0, 100), y=(0, 50), z=(0, 25), mip=1)
    ref = np.rint(gala_image.astype(float).reshape(25, 2, 50, 2, 100, 2).mean(axis=(1, 3, 5)))
    np.testing.assert_array_equal(mip1, ref)


def test_ingest_with_local_dask_cluster_processes(fresh_lake, tmp_path, gala_image):
    """The default scheduler: a LocalCluster of worker processes builds the pyramid."""
    np.save(tmp_path / "v.npy", gala_image)
    la = fresh_lake.ingest(str(tmp_path / "v.npy"), "ds", "v", voxel_size=(8, 8, 8), scheduler=None)
    assert la.provenance["scheduler"] == "local"
    ref = np.rint(gala_image.astype(float).reshape(25, 2, 50, 2, 100, 2).mean(axis=(1, 3, 5)))
    np.testing.assert_array_equal(la.cutout(x=(0, 100), y=(0, 50), z=(0, 25), mip=1), ref)


def test_pyramid_on_an_existing_dask_cluster(fresh_lake, tmp_path, gala_image):
    """--scheduler ADDRESS: a separately started `dask scheduler` + `dask worker` build the pyramid."""
    import time

    from tests.conftest import free_port

    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    sched = subprocess.Popen([os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([os.path.join(bin_dir, "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                               "--no-dashboard", "--name", "nl-test-worker"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        deadline = time.time() + 60
        while True:
            try:
                with Client(f"tcp://127.0.0.1:{port}", timeout="2s") as c:
                    if c.scheduler_info()["workers"]:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "dask cluster did not start"
            time.sleep(0.5)
        np.save(tmp_path / "v.npy", gala_image)
        la = fresh_lake.ingest(str(tmp_path / "v.npy"), "ds", "v", voxel_size=(8, 8, 8),
                               scheduler=f"tcp://127.0.0.1:{port}")
        assert la.provenance["scheduler"] == f"tcp://127.0.0.1:{port}"
        ref = np.rint(gala_image.astype(float).reshape(25, 2, 50, 2, 100, 2).mean(axis=(1, 3, 5)))
        np.testing.assert_array_equal(la.cutout(x=(0, 100), y=(0, 50), z=(0, 25), mip=1), ref)
    finally:
        for p in (worker, sched):
            p.terminate()
            p.wait(20)


def test_unreachable_scheduler_is_a_clear_error(fresh_lake, tmp_path, gala_image):
    from tests.conftest import free_port

    np.save(tmp_path / "v.npy", gala_image[:8])
    with pytest.raises(InvalidArgument, match="cannot reach the Dask scheduler"):
        fresh_lake.ingest(str(tmp_path / "v.npy"), "ds", "v", voxel_size=(8, 8, 8),
                          scheduler=f"tcp://127.0.0.1:{free_port()}")


@pytest.mark.parametrize("kind", ["tifs", "mtif", "npy", "h5"])
def test_small_buffer_streams_y_bands(fresh_lake, tmp_path, gala_image, kind):
    """With a buffer smaller than one slab, ingest reads shard-row bands (partial reads) and still
    reproduces the source exactly."""
    import h5py

    vol = gala_image[:20]
    if kind == "tifs":
        src = tmp_path / "t"
        src.mkdir()
        for i, sl in enumerate(vol):
            tifffile.imwrite(src / f"{i}.tif", sl, rowsperstrip=8)
    elif kind == "mtif":
        src = tmp_path / "m.tif"
        tifffile.imwrite(src, vol, tile=(32, 32))
    elif kind == "npy":
        src = tmp_path / "v.npy"
        np.save(src, vol)
    else:
        with h5py.File(tmp_path / "v.h5", "w") as f:
            f["a/b"] = vol
        src = f"{tmp_path / 'v.h5'}:/a/b"
    la = fresh_lake.ingest(str(src), "ds", kind, voxel_size=(8, 8, 8), chunk=(8, 16, 64), shard=(8, 32, 128),
                           buffer_bytes=8 * 32 * 200, scheduler="threads")
    np.testing.assert_array_equal(la[:, :, :], vol)
    assert la.provenance["action"] == "ingest"


def test_y_band_source_reads_only_requested_rows(tmp_path, gala_image):
    from neurolake.volumes.sources import open_source

    np.save(tmp_path / "v.npy", gala_image)
    tifffile.imwrite(tmp_path / "m.tif", gala_image, tile=(32, 32))
    for path in (tmp_path / "v.npy", tmp_path / "m.tif"):
        src = open_source(path)
        np.testing.assert_array_equal(src.read(3, 9, 40, 77), gala_image[3:9, 40:77])
        src.close()
