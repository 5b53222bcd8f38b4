"""No stale reads across processes (issue 11, finding 3).

After a write is acknowledged, every process reading the lake serves the new voxels: a layer reopens its
arrays (so tensorstore revalidates cached chunks) whenever the layer's generation changed or a write is in
flight, and caches of derived bytes (tiles) key on the generation, which every write changes. On the old code (``recheck_cached_data: "open"`` and tiles
keyed by layer identity only) the second process kept serving the old voxels and tiles.
"""

from __future__ import annotations

import io
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA

WRITER = """
import sys, numpy as np, neurolake
lake = neurolake.open_lake(sys.argv[1])
layer = lake["gala"].layer("image")
layer.write(np.full((2, 40, 50), int(sys.argv[2]), np.uint8), x0=10, y0=20, z0=3)
lake.close()
"""


@pytest.fixture(scope="module")
def gala_lake(tmp_path_factory):
    from neurolake import init_lake

    path = tmp_path_factory.mktemp("fresh") / "lake"
    lake = init_lake(path)
    lake.ingest(f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/stack", "gala", "image", voxel_size=(8, 8, 8),
                scheduler="threads")
    lake.close()
    return path


def _write_in_another_process(path, value: int) -> None:
    p = subprocess.run([sys.executable, "-c", WRITER, str(path), str(value)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


def test_python_reader_sees_another_process_write(gala_lake):
    from neurolake import open_lake

    lake = open_lake(gala_lake)
    layer = lake["gala"].layer("image")
    before = layer.cutout(x=(0, 100), y=(0, 100), z=(0, 8))  # now cached in this process
    coarse_before = layer.cutout(x=(0, 50), y=(0, 50), z=(0, 4), mip=1)
    gen = layer.generation()
    _write_in_another_process(gala_lake, 7)
    after = layer.cutout(x=(0, 100), y=(0, 100), z=(0, 8))
    assert (after[3:5, 20:60, 10:60] == 7).all()
    assert (after[:3] == before[:3]).all()  # outside the box: unchanged
    assert layer.generation() != gen
    coarse = layer.cutout(x=(0, 50), y=(0, 50), z=(0, 4), mip=1)  # the pyramid followed (2x2x2 area mean)
    fx, fy, fz = layer.spec.mips[1].factor_xyz
    want = after.reshape(8 // fz, fz, 100 // fy, fy, 100 // fx, fx).mean(axis=(1, 3, 5))
    assert (coarse != coarse_before).any()
    assert np.abs(coarse.astype(float) - want).max() <= 1
    lake.close()


def test_second_server_serves_new_voxels_and_tiles_after_a_write(gala_lake, serve_lake):
    a, b = serve_lake(gala_lake), serve_lake(gala_lake)  # two processes on the same lake
    cut = f"{b}/ocp/ca/gala/image/npz/0/0,100/0,100/3,5/"
    tile = f"{b}/catmaid/gala/image/xy/3/0_0_0.png"
    chunk_before = httpx.get(cut)
    tile_before = httpx.get(tile)
    assert chunk_before.status_code == tile_before.status_code == 200
    # the write goes through server A
    buf = io.BytesIO()
    np.savez_compressed(buf, np.full((2, 40, 50), 201, np.uint8))
    r = httpx.post(f"{a}/ocp/ca/gala/image/npz/0/10,60/20,60/3,5/", content=buf.getvalue())
    assert r.status_code == 201, r.text
    # server B: the cutout, the tile and the precomputed chunk show it at once
    got = np.load(io.BytesIO(httpx.get(cut).content))
    got = got[got.files[0]]
    assert (got[:, 20:60, 10:60] == 201).all()
    img = np.asarray(Image.open(io.BytesIO(httpx.get(tile).content)))
    assert (img[20:60, 10:60] == 201).all() and httpx.get(tile).content != tile_before.content
    info = httpx.get(f"{b}/precomputed/gala/image/info").json()
    cx, cy, cz = info["scales"][0]["chunk_sizes"][0]
    key = info["scales"][0]["key"]
    raw = httpx.get(f"{b}/precomputed/gala/image/{key}/0-{cx}_0-{cy}_0-{cz}")
    assert raw.status_code == 200
    arr = np.frombuffer(raw.content, np.uint8).reshape(cz, cy, cx)  # raw encoding, (z, y, x)
    assert (arr[3:5, 20:60, 10:60] == 201).all()
