"""CATMAID tiles: pixels equal the cutout, padding, cache counters, LRU bound, prefetch in scroll direction."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from neurolake.errors import InvalidArgument, NotFound
from neurolake.volumes.tiles import TILE, TileCache, TileKey, render_tiles, tile_box
from tests.conftest import on_local_and_s3

demo_lake = on_local_and_s3("demo_lake")  # every test using these runs on a local lake, then on S3
demo_server = on_local_and_s3("demo_server")


def png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def stats(base: str) -> dict:
    return httpx.get(f"{base}/api/v1/stats").json()["tiles"]


def test_tiles_equal_cutout_planes(demo_server, demo_lake):
    layer = demo_lake.layer("gerhard2013", "image")
    r = httpx.get(f"{demo_server}/catmaid/gerhard2013/image/xy/7/1_0_0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(png(r.content), layer.cutout(x=(0, 512), y=(512, 1024), z=(7, 8))[0])
    # mip 1: the index is a mip-0 section; z is not downsampled at mip 1 for 4.6 x 4.6 x 50 nm
    r = httpx.get(f"{demo_server}/catmaid/gerhard2013/image/xy/7/0_0_1.png")
    np.testing.assert_array_equal(png(r.content), layer.cutout(x=(0, 512), y=(0, 512), z=(7, 8), mip=1)[0])
    # xz: rows along z (20 sections, padded with 0 to 512), columns along x
    tile = png(httpx.get(f"{demo_server}/catmaid/gerhard2013/image/xz/300/0_1_0.png").content)
    want = layer.cutout(x=(512, 1024), y=(300, 301), z=(0, 20))[:, 0, :]
    np.testing.assert_array_equal(tile[:20], want)
    assert tile.shape == (TILE, TILE) and not tile[20:].any()
    # jpg is lossy but close
    j = httpx.get(f"{demo_server}/catmaid/gerhard2013/image/xy/7/1_0_0.jpg")
    assert j.headers["content-type"] == "image/jpeg"
    diff = np.abs(png(j.content).astype(int) - layer.cutout(x=(0, 512), y=(512, 1024), z=(7, 8))[0].astype(int))
    assert diff.mean() < 5
    # segmentation tiles are colour images
    assert png(httpx.get(f"{demo_server}/catmaid/gerhard2013/labels/xy/7/0_0_0.png").content).shape == (512, 512, 3)


def test_tile_errors(demo_server):
    for path, status in (("xy/20/0_0_0.png", 404), ("xy/0/2_0_0.png", 404), ("xy/0/0_0_9.png", 404),
                         ("ab/0/0_0_0.png", 400), ("xy/0/0_0_0.gif", 400), ("xy/x/0_0_0.png", 400)):
        r = httpx.get(f"{demo_server}/catmaid/gerhard2013/image/{path}")
        assert r.status_code == status, path
        assert r.headers["access-control-allow-origin"] == "*"
    assert "plane" in httpx.get(f"{demo_server}/catmaid/gerhard2013/image/ab/0/0_0_0.png").json()["message"]


def test_cache_hits_and_prefetch_in_scroll_direction(demo_server):
    base = f"{demo_server}/catmaid/gala_fibsem/image/xy"
    before = stats(demo_server)
    httpx.get(f"{base}/0/0_0_0.png")
    httpx.get(f"{base}/0/0_0_0.png")
    after = stats(demo_server)
    assert after["hits"] >= before["hits"] + 1
    assert after["misses"] >= before["misses"] + 1
    # scroll forward: 1, 2 -> the prefetcher renders the next sections ahead of the client
    httpx.get(f"{base}/1/0_0_0.png")
    httpx.get(f"{base}/2/0_0_0.png")
    deadline = time.time() + 20
    while time.time() < deadline and stats(demo_server)["prefetch_pending"]:
        time.sleep(0.1)
    mid = stats(demo_server)
    assert mid["prefetched"] > after["prefetched"]
    for z in range(3, 7):
        httpx.get(f"{base}/{z}/0_0_0.png")
    end = stats(demo_server)
    assert end["prefetch_hits"] >= mid["prefetch_hits"] + 4  # all four sections came from prefetch
    assert end["bytes"] > 0 and end["entries"] >= 7


def key(i: int) -> TileKey:
    return TileKey("ds", "layer", "id", "xy", i, 0, 0, 0, "png")


def test_lru_is_bounded_in_bytes():
    cache = TileCache(max_bytes=1000)
    for i in range(10):
        cache.put(key(i), bytes(300))
    assert cache.nbytes <= 1000 and len(cache) == 3 and cache.evictions == 7
    assert cache.get(key(9)) is not None and cache.get(key(0)) is None
    cache.get(key(7))  # touch 7: 8 is now the least recently used
    cache.put(key(10), bytes(300))
    assert cache.get(key(8)) is None and cache.get(key(7)) is not None
    cache.put(key(11), bytes(5000))  # larger than the whole cache: not stored
    assert cache.get(key(11)) is None and cache.nbytes <= 1000
    assert cache.invalidate("ds", "layer") == 3 and cache.nbytes == 0
    with pytest.raises(InvalidArgument, match="tile cache size"):
        TileCache(-1)
    expired = TileCache(1000, max_age_s=0)
    expired.put(key(1), b"x")
    time.sleep(0.01)
    assert expired.get(key(1)) is None


def test_render_several_sections_in_one_cutout(demo_lake):
    layer = demo_lake.layer("gala_fibsem", "image")
    tiles = render_tiles(layer, "xy", [4, 5, 6], 0, 0, 0, "png")
    for z, body in tiles.items():
        t = png(body)
        np.testing.assert_array_equal(t[:100, :200], layer.cutout(x=(0, 200), y=(0, 100), z=(z, z + 1))[0])
        assert not t[100:].any() and not t[:, 200:].any()
    with pytest.raises(NotFound):
        tile_box(layer, "yz", 200, 0, 0, 0)
    assert tile_box(layer, "yz", 199, 0, 0, 0) == ((199, 200), (0, 100), (0, 50))
