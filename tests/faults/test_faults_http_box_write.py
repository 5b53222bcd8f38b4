"""Fault injection, HTTP box writes (issue 11): a real ``neurolake serve`` process SIGKILLed in the middle of
an OCP npz upload that spans 3 shards of mip 0 of the gala FIB-SEM image.

The kill points are chosen deterministically inside the server process (the next library call is replaced by
``os.kill(os.getpid(), SIGKILL)``): right after the pending-pyramid entry is recorded (nothing written yet),
after the first of the three shards landed (the shard writes are split in shard order; tensorstore writes
each shard file as a temp file + rename, so this is exactly the state a kill between two shard renames
leaves), and at the pyramid update (mip 0 complete). Afterwards the lake opens, every shard of mip 0 is
either wholly old or wholly new, and the coarser mips read back as the downsampling of mip 0 (the pending
update is finished when the layer is opened; a fresh server serves the same).

A running server is also the *reader* of a Python box write killed in another process: it serves no tile it
cached before that write, keeps no tile it rendered during it, and does not erase the live writer's pending
entry by finishing it early (the writer then dies after landing a shard: its pyramid update is still done).
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest

from neurolake.volumes.formats import encode
from tests.conftest import DATA, free_port, wait_http
from tests.faults.killing import PRELUDE, run_killed, subprocess_env

# Patches the library call at kill point sys.argv[1] (PRELUDE of tests.faults.killing gives ``die``).
KILL_POINT = """
import itertools
L = module("neurolake.volumes.layer")
point = sys.argv[1]

if point == "marked":  # the pending entry is durable, no voxel written yet
    L.Layer._mark_dirty = die_after(L.Layer._mark_dirty)
elif point in ("one_shard", "paused"):  # the mip-0 write dies after its first shard landed ("paused": it
    # first says "paused" and waits for a line on stdin, with its pending entry recorded, no voxel written)
    array = L.Layer.array

    class Box:
        def __init__(self, arr, key, shard):
            self.arr, self.key, self.shard = arr, key, shard

        def read(self):
            return self.arr[self.key].read()

        def write(self, data):  # the same write, one shard after the other, in shard order
            lo = [k.start for k in self.key]
            hi = [k.stop for k in self.key]
            cuts = [sorted({a, b, *range((a // s + 1) * s, b, s)}) for a, b, s in zip(lo, hi, self.shard)]
            parts = list(itertools.product(*[list(zip(c, c[1:])) for c in cuts]))
            assert len(parts) >= 2, parts
            for i, part in enumerate(parts):
                if i == 0 and point == "paused":
                    print("paused", flush=True)
                    sys.stdin.readline()
                if i == 1:
                    die()
                dst = tuple(slice(a, b) for a, b in part)
                src = tuple(slice(a - o, b - o) for (a, b), o in zip(part, lo))
                self.arr[dst].write(data[src]).result()

    class Arr:
        def __init__(self, arr, shard):
            self.arr, self.shard = arr, shard

        def __getitem__(self, key):
            return Box(self.arr, key, self.shard)

        def __getattr__(self, name):
            return getattr(self.arr, name)

    def split_array(self, mip=0):
        arr = array(self, mip)
        return Arr(arr, self.spec.mips[mip].shard_zyx) if mip == 0 else arr
    L.Layer.array = split_array
elif point == "pyramid":  # mip 0 landed whole, the coarser mips not yet
    L.update_region = die
else:
    raise SystemExit(f"unknown kill point {point}")
"""

# argv: kill point, lake, port: the real CLI server, patched.
KILLED_SERVER = PRELUDE + KILL_POINT + """
from neurolake.cli import main
sys.argv = ["neurolake", "serve", "--lake", sys.argv[2], "--host", "127.0.0.1", "--port", sys.argv[3]]
main()
"""

# argv: kill point, lake, the box's new voxels (.npy): a Python box write in another process than the server.
KILLED_WRITER = KILL_POINT + """
import numpy as np
from neurolake import open_lake
layer = open_lake(sys.argv[2])["gala"].layer("image")
layer.write(np.load(sys.argv[3]), x0=BOX[0][0], y0=BOX[1][0], z0=BOX[2][0])
"""

BOX_X, BOX_Y, BOX_Z = (0, 200), (0, 100), (8, 40)  # z 8..40 touches the mip-0 shards z 0-16, 16-32, 32-48
KILLED_WRITER = KILLED_WRITER.replace("BOX", repr((BOX_X, BOX_Y, BOX_Z)))


@pytest.fixture(scope="module")
def image_template(tmp_path_factory):
    from neurolake import init_lake

    path = tmp_path_factory.mktemp("faults-http") / "lake"
    lake = init_lake(path)
    lake.ingest(f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/stack", "gala", "image", voxel_size=(8, 8, 8),
                scheduler="threads")
    lake.close()
    return path


@pytest.fixture
def gala_lake(image_template, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(image_template, dst)
    return dst


def _read_all(path) -> tuple[np.ndarray, dict]:
    from neurolake import open_lake

    lake = open_lake(path)
    layer = lake["gala"].layer("image")
    z, y, x = layer.shape(0)
    out = layer.cutout(x=(0, x), y=(0, y), z=(0, z)), layer.info()
    lake.close()
    return out


def _kill_server_mid_upload(path, point: str, body: bytes) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SERVER, point, str(path), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/", proc)
        url = f"{base}/ocp/ca/gala/image/npz/0/{BOX_X[0]},{BOX_X[1]}/{BOX_Y[0]},{BOX_Y[1]}/{BOX_Z[0]},{BOX_Z[1]}/"
        with pytest.raises(httpx.HTTPError):  # the server dies before it answers
            httpx.post(url, content=body, timeout=60)
        assert proc.wait(30) == -9, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _shards(info: dict) -> list[tuple[slice, slice, slice]]:
    shape, shard = info["mips"][0]["shape_zyx"], info["mips"][0]["shard_zyx"]
    ranges = [[slice(i, min(i + s, n)) for i in range(0, n, s)] for n, s in zip(shape, shard, strict=True)]
    return list(itertools.product(*ranges))


def _mean2(a: np.ndarray) -> np.ndarray:
    z, y, x = (s // 2 * 2 for s in a.shape)
    return a[:z, :y, :x].astype(float).reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))


def _check_pyramid(layer, mip0: np.ndarray) -> None:
    """mips 1 and 2 read back as the 2x area mean of the mip below (as read; rounding: off by ≤ 1)."""
    z, y, x = layer.shape(1)
    mip1 = layer.cutout(x=(0, x), y=(0, y), z=(0, z), mip=1)
    assert np.abs(mip1.astype(float) - _mean2(mip0)).max() <= 1
    z, y, x = layer.shape(2)
    mip2 = layer.cutout(x=(0, x), y=(0, y), z=(0, z), mip=2)
    m = _mean2(mip1)
    assert np.abs(mip2[:m.shape[0], :m.shape[1], :m.shape[2]].astype(float) - m).max() <= 1


@pytest.mark.parametrize(("point", "new_shards"), [("marked", 0), ("one_shard", 1), ("pyramid", 3)])
def test_server_killed_mid_multi_shard_upload_leaves_whole_shards(gala_lake, serve_lake, point, new_shards):
    from neurolake import open_lake

    before, info = _read_all(gala_lake)
    touched = [s for s in _shards(info) if s[0].start < BOX_Z[1] and BOX_Z[0] < s[0].stop]
    assert len(touched) == 3  # the upload spans three shards of mip 0
    box = (slice(*BOX_Z), slice(*BOX_Y), slice(*BOX_X))
    after = before.copy()
    after[box] = 255 - before[box]  # the inverted image: differs from the old voxels in every shard
    _kill_server_mid_upload(gala_lake, point, encode(after[box], "npz"))
    dirty = gala_lake / "datastacks" / "gala" / "volumes" / "image" / "dirty"
    assert len(list(dirty.glob("*.json"))) == 1  # the killed write is recorded as pending

    lake = open_lake(gala_lake)  # the lake opens after the kill (opening the layer finishes the pending update)
    layer = lake["gala"].layer("image")
    z, y, x = layer.shape(0)
    got = layer.cutout(x=(0, x), y=(0, y), z=(0, z))
    new = []
    for s in _shards(info):
        old_ok, new_ok = np.array_equal(got[s], before[s]), np.array_equal(got[s], after[s])
        assert old_ok or new_ok, f"shard {s} is a mix of old and new voxels"
        if new_ok and not old_ok:
            new.append(s)
    assert len(new) == new_shards and all(s in touched for s in new)
    assert layer.pending_updates() == []
    _check_pyramid(layer, got)
    z, y, x = layer.shape(1)
    raw = layer.array(1)[0:z, 0:y, 0:x].read().result()  # right in storage, not only on read
    assert np.abs(raw.astype(float) - _mean2(got)).max() <= 1
    lake.close()
    if point == "one_shard":  # the mixed-shard case through a fresh server too (one server start is enough)
        _check_fresh_server(serve_lake(gala_lake), before, after)


def _check_fresh_server(base: str, before: np.ndarray, after: np.ndarray) -> None:
    """A new server on the killed lake serves the same mixed-but-whole-shard mip 0 and a consistent mip 1,
    and a write over the dead writer's shards works."""
    r1 = httpx.get(f"{base}/ocp/ca/gala/image/npz/1/0,100/0,50/0,25/", timeout=60)
    r0 = httpx.get(f"{base}/ocp/ca/gala/image/npz/0/0,200/0,100/0,50/", timeout=60)
    assert r1.status_code == 200 and r0.status_code == 200, (r1.text[:300], r0.text[:300])
    mip1, mip0 = (np.load(io.BytesIO(r.content))["cutout"] for r in (r1, r0))
    assert not np.array_equal(mip0, before) and not np.array_equal(mip0, after)  # some shards new, some old
    assert np.abs(mip1.astype(float) - _mean2(mip0)).max() <= 1
    box = (slice(*BOX_Z), slice(*BOX_Y), slice(*BOX_X))
    assert httpx.post(f"{base}/ocp/ca/gala/image/npz/0/0,200/0,100/8,40/", content=encode(after[box], "npz"),
                      timeout=60).status_code == 201
    r0 = httpx.get(f"{base}/ocp/ca/gala/image/npz/0/0,200/0,100/0,50/", timeout=60)
    assert np.array_equal(np.load(io.BytesIO(r0.content))["cutout"], after)


def test_a_running_server_serves_no_stale_tile_after_another_process_was_killed_mid_write(gala_lake, serve_lake,
                                                                                         tmp_path):
    """A Python box write in another process dies after its first shard (z 8-16) landed. The server that
    cached a tile of that shard before the write must not keep serving the old tile next to new cutouts
    (the writer changes the layer's generation before it writes, not only after)."""
    before, _ = _read_all(gala_lake)
    base = serve_lake(gala_lake)
    tile = "/catmaid/gala/image/xy/10/0_0_0.png"  # section z = 10: in the shard the dead writer replaced
    assert np.array_equal(_tile(base, tile), before[10])  # rendered and cached before the kill
    box = (slice(*BOX_Z), slice(*BOX_Y), slice(*BOX_X))
    np.save(tmp_path / "new.npy", 255 - before[box])
    run_killed(KILLED_WRITER, "one_shard", gala_lake, tmp_path / "new.npy")

    cut = httpx.get(f"{base}/ocp/ca/gala/image/npz/0/0,200/0,100/10,11/", timeout=60)
    assert np.array_equal(np.load(io.BytesIO(cut.content))["cutout"][0], 255 - before[10])  # the new voxels
    assert np.array_equal(_tile(base, tile), 255 - before[10]), "the old tile is served"  # like the cutout
    assert np.array_equal(_tile(base, "/catmaid/gala/image/xy/20/0_0_0.png"), before[20])  # shard not reached


def _tile(base: str, path: str) -> np.ndarray:
    """The (y, x) section a 512 x 512 PNG tile of the 200 x 100 gala section shows (grey, top-left)."""
    from PIL import Image

    r = httpx.get(base + path, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("L"))[:100, :200]


def test_a_server_reading_during_another_process_write_keeps_nothing_stale_after_its_death(gala_lake, serve_lake,
                                                                                            tmp_path):
    """The writer pauses with its pending entry recorded and no voxel written; the server opens the layer and
    renders the tile of a section it is about to replace (old voxels, right at that moment); then the writer
    lands that shard and dies. The server must not keep the tile it rendered during the write, and must not
    have finished (and so erased) the live writer's pending entry when it opened the layer: the coarser mips
    over the landed shard are recomputed."""
    before, _ = _read_all(gala_lake)
    base = serve_lake(gala_lake)
    tile = "/catmaid/gala/image/xy/10/0_0_0.png"
    box = (slice(*BOX_Z), slice(*BOX_Y), slice(*BOX_X))
    np.save(tmp_path / "new.npy", 255 - before[box])
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + KILLED_WRITER, "paused", str(gala_lake),
                             str(tmp_path / "new.npy")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert proc.stdout.readline().strip() == "paused", proc.stderr.read()[-2000:]
        assert np.array_equal(_tile(base, tile), before[10])  # during the write: still the old voxels
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(60) == -9, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert np.array_equal(_tile(base, tile), 255 - before[10]), "the tile rendered during the write is served"
    dirty = gala_lake / "datastacks" / "gala" / "volumes" / "image" / "dirty"
    assert len(list(dirty.glob("*.json"))) == 1, "the dead writer's pending entry was taken while it ran"
    r1 = httpx.get(f"{base}/ocp/ca/gala/image/npz/1/0,100/0,50/0,25/", timeout=60)  # finishes it
    r0 = httpx.get(f"{base}/ocp/ca/gala/image/npz/0/0,200/0,100/0,50/", timeout=60)
    mip1, mip0 = (np.load(io.BytesIO(r.content))["cutout"] for r in (r1, r0))
    assert np.array_equal(mip0[10], 255 - before[10]) and np.array_equal(mip0[20], before[20])
    assert np.abs(mip1.astype(float) - _mean2(mip0)).max() <= 1
