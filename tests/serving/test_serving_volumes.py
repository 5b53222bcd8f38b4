"""cloud-volume, tensorstore and zarr-python, unmodified, reading precomputed and Zarr v3 from a real server."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.conftest import on_local_and_s3

demo_lake = on_local_and_s3("demo_lake")  # every test using these runs on a local lake, then on S3
demo_server = on_local_and_s3("demo_server")

BOX = {"x": (37, 411), "y": (5, 300), "z": (3, 17)}


def ref(lake, name, mip=0, ds="gerhard2013", box=BOX):
    return lake.layer(ds, name).cutout(x=box["x"], y=box["y"], z=box["z"], mip=mip)


@pytest.mark.parametrize("name", ["image", "labels"])
@pytest.mark.parametrize("mip", [0, 1])
def test_cloudvolume_reads_precomputed(demo_server, demo_lake, name, mip):
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"precomputed://{demo_server}/precomputed/gerhard2013/{name}", mip=mip, progress=False,
                     fill_missing=False, cache=False)
    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    got = np.asarray(cv[x0:x1, y0:y1, z0:z1])  # (x, y, z, c)
    want = ref(demo_lake, name, mip)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got[..., 0].transpose(2, 1, 0), want)
    assert cv.info["scales"][mip]["encoding"] == ("compressed_segmentation" if name == "labels" else "raw")


def test_cloudvolume_whole_gala_segmentation(demo_server, demo_lake):
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"precomputed://{demo_server}/precomputed/gala_fibsem/segmentation", progress=False,
                     fill_missing=False, cache=False)
    got = np.asarray(cv[:, :, :])[..., 0].transpose(2, 1, 0)
    want = demo_lake.layer("gala_fibsem", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    np.testing.assert_array_equal(got, want)


def test_tensorstore_reads_precomputed_and_zarr3(demo_server, demo_lake):
    import tensorstore as ts

    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    for name in ("image", "labels"):
        t = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": f"{demo_server}/precomputed/gerhard2013/{name}/", "scale_index": 1}).result()
        got = t[x0 // 2:x1 // 2, y0 // 2:y1 // 2, z0:z1, 0].read().result().T
        box = {"x": (x0 // 2, x1 // 2), "y": (y0 // 2, y1 // 2), "z": BOX["z"]}
        np.testing.assert_array_equal(got, ref(demo_lake, name, 1, box=box))
        z = ts.open({"driver": "zarr3", "kvstore": f"{demo_server}/zarr/gerhard2013/{name}/0/"}).result()
        np.testing.assert_array_equal(z[z0:z1, y0:y1, x0:x1].read().result(), ref(demo_lake, name))


def test_zarr_python_reads_sharded_zarr3(demo_server, demo_lake):
    import zarr
    from zarr.storage import FsspecStore

    g = zarr.open_group(FsspecStore.from_url(f"{demo_server}/zarr/gerhard2013/image", read_only=True), mode="r")
    assert g.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    for mip in (0, 2):
        a = g[str(mip)]
        assert a.shards is not None  # the stored arrays are sharded
        x, y = (BOX["x"][0] >> mip, BOX["x"][1] >> mip), (BOX["y"][0] >> mip, BOX["y"][1] >> mip)
        want = demo_lake.layer("gerhard2013", "image").cutout(x=x, y=y, z=BOX["z"], mip=mip)
        np.testing.assert_array_equal(a[BOX["z"][0]:BOX["z"][1], y[0]:y[1], x[0]:x[1]], want)


def test_jpeg_precomputed_is_close_to_raw(demo_server, demo_lake):
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"precomputed://{demo_server}/precomputed/gerhard2013/image/jpeg", progress=False, cache=False)
    assert cv.info["scales"][0]["encoding"] == "jpeg"
    got = np.asarray(cv[0:256, 0:256, 0:16])[..., 0].transpose(2, 1, 0).astype(int)
    want = demo_lake.layer("gerhard2013", "image").cutout(x=(0, 256), y=(0, 256), z=(0, 16)).astype(int)
    assert np.abs(got - want).mean() < 4  # lossy, quality 90
    r = httpx.get(f"{demo_server}/precomputed/gerhard2013/labels/jpeg/info")
    assert r.status_code == 400 and "jpeg" in r.json()["message"]


def test_static_tree_http_rules(demo_server, demo_lake):
    c = httpx.Client(base_url=demo_server)
    # precomputed: missing / off-grid keys are 404 (never 500), with CORS
    for path in ("/precomputed/gerhard2013/image/4.6_4.6_50/0-100_0-128_0-16",
                 "/precomputed/gerhard2013/image/4.6_4.6_50/0-128_0-128_0-16x",
                 "/precomputed/gerhard2013/image/1_1_1/0-128_0-128_0-16",
                 "/precomputed/gerhard2013/image/4.6_4.6_50/1024-1152_0-128_0-16",
                 "/zarr/gerhard2013/image/.zarray", "/zarr/gerhard2013/image/.zattrs", "/zarr/gerhard2013/image/.zgroup",
                 "/zarr/gerhard2013/image/0/c/9/9/9", "/zarr/gerhard2013/image/../../../catalog.db",
                 "/zarr/gerhard2013/nolayer/zarr.json", "/precomputed/gerhard2013/nolayer/info"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.headers["access-control-allow-origin"] == "*"
    # the clipped edge chunk exists and is raw Fortran-order bytes
    r = c.get("/precomputed/gerhard2013/image/4.6_4.6_50/896-1024_896-1024_16-20")
    assert r.status_code == 200 and len(r.content) == 128 * 128 * 4
    want = demo_lake.layer("gerhard2013", "image").cutout(x=(896, 1024), y=(896, 1024), z=(16, 20))
    assert r.content == want.tobytes()
    # zarr shard: HEAD, suffix / open / bounded ranges, 416, ETag
    shard = "/zarr/gerhard2013/image/0/c/0/0/0"
    whole = c.get(shard, headers={"Accept-Encoding": "identity"})
    assert whole.status_code == 200 and "content-encoding" not in whole.headers
    total = len(whole.content)
    head = c.head(shard, headers={"Accept-Encoding": "gzip"})
    assert int(head.headers["content-length"]) == total and "content-encoding" not in head.headers
    r = c.get(shard, headers={"Range": "bytes=-1028", "Accept-Encoding": "gzip"})
    assert r.status_code == 206 and r.content == whole.content[-1028:] and "content-encoding" not in r.headers
    assert r.headers["content-range"] == f"bytes {total - 1028}-{total - 1}/{total}"
    r = c.get(shard, headers={"Range": f"bytes={total - 10}-"})
    assert r.status_code == 206 and r.content == whole.content[-10:]
    r = c.get(shard, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == whole.content[100:200]
    r = c.get(shard, headers={"Range": f"bytes={total}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{total}"
    assert c.get(shard, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
    # JSON: gzip on the whole 200 body only, never deflate
    info = c.get("/zarr/gerhard2013/image/zarr.json", headers={"Accept-Encoding": "gzip"})
    assert info.headers["content-encoding"] == "gzip"
    raw = httpx.get(f"{demo_server}/zarr/gerhard2013/image/zarr.json", headers={"Accept-Encoding": "gzip"})
    assert json.loads(raw.content)["node_type"] == "group"
    d = c.get("/zarr/gerhard2013/image/zarr.json", headers={"Accept-Encoding": "deflate"})
    assert "content-encoding" not in d.headers
    r = c.options("/precomputed/gerhard2013/image/info",
                  headers={"Origin": "http://elsewhere", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
