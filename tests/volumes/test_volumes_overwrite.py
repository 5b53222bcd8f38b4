"""``ingest --overwrite`` of a ready layer is atomic: the new volume is built aside and swapped in by one
catalog transaction. A source failing part-way, or a SIGKILL part-way, leaves the old layer ready with
its voxels unchanged; a re-run resumes the replacement; success removes the old folder.

Real data: crops of the Gerhard et al. 2013 ssTEM stack (data/gerhard2013/raw) written as TIFF folders.
"""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from neurolake import open_lake
from neurolake.errors import Conflict, CorruptData
from neurolake.volumes.sources import SliceFolder

OPTS = {"voxel_size": (4.6, 4.6, 50), "shard": (4, 128, 128), "chunk": (4, 64, 64), "scheduler": "threads"}


@pytest.fixture(scope="module")
def stacks(gerhard_source, tmp_path_factory):
    """Old volume A (16, 192, 256) and new volume B (12, 160, 224): two crops of the real stack, as TIFF
    folders; ``bad`` is B with slice 10 cut short after its header (fails while slab 3 of 3 is read)."""
    root = tmp_path_factory.mktemp("overwrite-src")
    vols = {"a": gerhard_source[:16, 0:192, 0:256], "b": gerhard_source[4:16, 500:660, 300:524]}
    vols["bad"] = vols["b"]
    for name, vol in vols.items():
        (root / name).mkdir()
        for i, sl in enumerate(vol):
            tifffile.imwrite(root / name / f"{i:02d}.tif", np.ascontiguousarray(sl))
    p = root / "bad" / "10.tif"
    p.write_bytes(p.read_bytes()[:3000])
    return {"dirs": {k: root / k for k in vols}, "a": vols["a"], "b": vols["b"]}


def _mip1(vol):
    z, y, x = vol.shape
    return np.rint(vol[:, : y // 2 * 2, : x // 2 * 2].astype(float).reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4)))


def _folders(lake, layer="img"):
    vols = lake.layer_path("ds", layer).parent
    return sorted(p.name for p in vols.iterdir() if p.name == layer or p.name.startswith(layer + "@"))


def _assert_is(la, vol):
    assert la.status == "ready"
    assert la.shape(0) == vol.shape
    np.testing.assert_array_equal(la[:, :, :], vol)
    np.testing.assert_array_equal(la.cutout(x=(0, vol.shape[2] // 2), y=(0, vol.shape[1] // 2), z=(0, vol.shape[0]),
                                            mip=1), _mip1(vol))


def test_failed_overwrite_keeps_the_old_layer(fresh_lake, stacks):
    old = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    _assert_is(old, stacks["a"])
    boxes = [{"x": (0, x), "y": (0, y), "z": (0, z), "mip": m} for m in range(old.num_mips)
             for x, y, z in [old.size(m)]]
    before = [old.cutout(**box) for box in boxes]
    with pytest.raises(CorruptData, match="10.tif") as info:  # slab 3 of 3 is unreadable
        fresh_lake.ingest(str(stacks["dirs"]["bad"]), "ds", "img", overwrite=True, **OPTS)
    la = fresh_lake.layer("ds", "img")
    assert la.status == "ready" and la.root == old.root and la.progress == {}
    for box, ref in zip(boxes, before, strict=True):  # every mip, voxel for voxel
        np.testing.assert_array_equal(la.cutout(**box), ref)
    _assert_is(la, stacks["a"])
    assert "overwrite rolled back" in str(info.value) and "keeps its previous data" in str(info.value)
    _assert_is(old, stacks["a"])  # an object obtained before the failed overwrite reads on
    assert _folders(fresh_lake) == ["img"]  # the half-built replacement is gone
    assert open_lake(fresh_lake.root).layer("ds", "img").status == "ready"


def test_readers_see_the_old_layer_until_the_swap_then_the_new(fresh_lake, stacks):
    old = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    other = open_lake(fresh_lake.root)  # a second lake object: another process's view through the catalog
    seen = []

    class Watched(SliceFolder):
        def read(self, z0, z1, y0=0, y1=None):
            if z0 == 8:  # two slabs of the new volume are written aside by now
                for lk in (fresh_lake, other):
                    la = lk.layer("ds", "img")
                    assert la.status == "ready" and la.info()["status"] == "ready" and la.root == old.root
                    np.testing.assert_array_equal(la[:, :, :], stacks["a"])
                    seen.append(la.info()["bounds"]["z"])
                assert len(_folders(fresh_lake)) == 2  # old + the one being built
            return super().read(z0, z1, y0, y1)

    created = old.created
    new = fresh_lake.ingest(Watched(stacks["dirs"]["b"]), "ds", "img", overwrite=True, **OPTS)
    assert seen == [[0, 16], [0, 16]]
    for lk in (fresh_lake, other):  # both lake objects drop their cached Layer on the swap
        la = lk.layer("ds", "img")
        assert la.root == new.root != old.root
        _assert_is(la, stacks["b"])
        assert la.info()["bounds"] == {"x": [0, 224], "y": [0, 160], "z": [0, 12]}
    assert new.created > created and new.provenance["action"] == "ingest" and new.progress == {}
    assert not old.root.exists() and _folders(fresh_lake) == [new.root.name]
    with pytest.raises(Conflict, match="replaced or deleted"):  # a stale object never reads vanished files as zeros
        old.cutout(x=(0, 8), y=(0, 8), z=(0, 1))
    # a second overwrite swaps again, and deleting the layer leaves no folder behind
    again = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", overwrite=True, **OPTS)
    _assert_is(again, stacks["a"])
    assert _folders(fresh_lake) == [again.root.name]
    fresh_lake.delete_layer("ds", "img")
    assert _folders(fresh_lake) == []


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from neurolake import open_lake
    from neurolake.volumes.sources import SliceFolder

    class DiesAtSlab(SliceFolder):
        def read(self, z0, z1, y0=0, y1=None):
            if z0 >= int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)   # a real kill -9 in the middle of the overwrite
            return super().read(z0, z1, y0, y1)

    lake = open_lake(sys.argv[1])
    lake.ingest(DiesAtSlab(Path(sys.argv[2])), "ds", "img", voxel_size=(4.6, 4.6, 50), shard=(4, 128, 128),
                chunk=(4, 64, 64), scheduler="threads", overwrite=True)
""")


def test_overwrite_killed_part_way_keeps_old_layer_and_resumes(fresh_lake, stacks, tmp_path):
    old = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(fresh_lake.root), str(stacks["dirs"]["b"]), "8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    reopened = open_lake(fresh_lake.root)
    for lk in (reopened, fresh_lake):
        la = lk.layer("ds", "img")
        assert la.root == old.root
        _assert_is(la, stacks["a"])
        assert la.info()["progress"] == {}
        assert la.progress["replacing"]["slabs_done"] == 2 and la.progress["replacing"]["slabs_total"] == 3
    assert len(_folders(fresh_lake)) == 2
    said = []
    new = fresh_lake.ingest(str(stacks["dirs"]["b"]), "ds", "img", overwrite=True, say=said.append, **OPTS)
    assert any("resuming the interrupted overwrite" in s and "2/3" in s for s in said), said
    _assert_is(new, stacks["b"])
    _assert_is(reopened.layer("ds", "img"), stacks["b"])
    assert not old.root.exists() and _folders(fresh_lake) == [new.root.name]


def test_kill_after_the_swap_leaves_the_new_layer_and_a_stray_folder_the_next_ingest_removes(fresh_lake, stacks,
                                                                                          tmp_path):
    old = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    script = tmp_path / "kill_after_commit.py"
    script.write_text(textwrap.dedent("""
        import os, shutil, signal, sys
        import neurolake.storage.files
        from neurolake import open_lake

        rmtree = shutil.rmtree

        def die(path, *a, **k):  # the catalog swap has committed; the old folder is renamed but not yet removed
            if "@old-" in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
            return rmtree(path, *a, **k)  # (Dask's own temporary folders)

        neurolake.storage.files.shutil.rmtree = die
        open_lake(sys.argv[1]).ingest(sys.argv[2], "ds", "img", voxel_size=(4.6, 4.6, 50), shard=(4, 128, 128),
                                      chunk=(4, 64, 64), scheduler="threads", overwrite=True)
    """))
    proc = subprocess.run([sys.executable, str(script), str(fresh_lake.root), str(stacks["dirs"]["b"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    la = open_lake(fresh_lake.root).layer("ds", "img")
    _assert_is(la, stacks["b"])
    assert not old.root.exists()
    assert len(_folders(fresh_lake)) == 2  # the new layer + the renamed-away old folder
    again = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", overwrite=True, **OPTS)
    _assert_is(again, stacks["a"])
    assert _folders(fresh_lake) == [again.root.name]


def test_overwrite_of_an_unfinished_ingest_starts_afresh(fresh_lake, stacks, tmp_path):
    """Nothing readable to protect: --overwrite of an interrupted first ingest replaces it in place."""
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.replace(", overwrite=True)", ")"))
    proc = subprocess.run([sys.executable, str(script), str(fresh_lake.root), str(stacks["dirs"]["b"]), "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert fresh_lake.layer("ds", "img").status == "ingesting"
    la = fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", overwrite=True, **OPTS)
    _assert_is(la, stacks["a"])
    assert _folders(fresh_lake) == ["img"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neurolake.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_overwrite(fresh_lake, stacks):
    fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    common = ["--lake", fresh_lake.root, "--datastack", "ds", "--layer", "img", "--shard", "4,128,128",
              "--chunk", "4,64,64", "--scheduler", "threads", "--overwrite"]
    p = _cli("ingest", stacks["dirs"]["bad"], *common)
    assert p.returncode != 0 and "keeps its previous data" in p.stderr + p.stdout, p.stderr
    _assert_is(fresh_lake.layer("ds", "img"), stacks["a"])
    p = _cli("ingest", stacks["dirs"]["b"], *common)
    assert p.returncode == 0, p.stderr
    _assert_is(fresh_lake.layer("ds", "img"), stacks["b"])
    assert _folders(fresh_lake) == [fresh_lake.layer("ds", "img").root.name]


def test_a_running_server_serves_old_data_during_the_overwrite_and_new_data_after(fresh_lake, stacks, serve_lake):
    import io
    import time

    import httpx

    fresh_lake.ingest(str(stacks["dirs"]["a"]), "ds", "img", **OPTS)
    base = serve_lake(fresh_lake.root)  # a real `neurolake serve` process with its own catalog view

    def npz(x, y, z):
        r = httpx.get(f"{base}/ocp/ca/ds/img/npz/0/{x}/{y}/{z}/", timeout=30)
        return r.status_code, (np.load(io.BytesIO(r.content))["cutout"] if r.status_code == 200 else r.json())

    def zarr_shape():
        return httpx.get(f"{base}/zarr/ds/img/0/zarr.json", timeout=30).json()["shape"]

    tile = f"{base}/catmaid/ds/img/xy/2/0_0_0.png"
    tile_a = httpx.get(tile, timeout=30).content
    during = []

    class Watched(SliceFolder):
        def read(self, z0, z1, y0=0, y1=None):
            if z0 == 8:  # the new volume is two-thirds written aside
                during.append((npz("0,256", "0,192", "0,16"), zarr_shape(), httpx.get(tile, timeout=30).content))
            return super().read(z0, z1, y0, y1)

    fresh_lake.ingest(Watched(stacks["dirs"]["b"]), "ds", "img", overwrite=True, **OPTS)
    (status, arr), shape, tile_during = during[0]
    assert status == 200 and shape == [16, 192, 256] and tile_during == tile_a
    np.testing.assert_array_equal(arr, stacks["a"])
    status, arr = npz("0,224", "0,160", "0,12")
    assert status == 200 and zarr_shape() == [12, 160, 224]
    np.testing.assert_array_equal(arr, stacks["b"])
    status, body = npz("0,256", "0,192", "0,16")  # the old bounds are gone with the old layer
    assert status == 400 and body["error"] == "out_of_bounds"
    time.sleep(1.2)  # tiles reuse a layer lookup for up to 1 s (neurolake.server.cutouts.LAYER_TTL_S)
    tile_b = httpx.get(tile, timeout=30).content
    assert tile_b != tile_a
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(tile_b)))[:160, :224], stacks["b"][2])
