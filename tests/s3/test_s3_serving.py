"""Serving a lake on S3 (moto server, PostgreSQL catalog): every real client reads the same bytes from a
``neurolake serve --lake s3://…`` process as from a server of the same demo data in a local folder — cloud-volume
and tensorstore (precomputed), tensorstore and zarr-python (Zarr v3 over HTTP), intern (BossDB), CATMAID tiles,
the raw HTTP rules of the static trees — and a write through the S3-backed server is read back by other clients
with new ETags."""

from __future__ import annotations

import io
import os
import tempfile

import blosc
import httpx
import numpy as np
import pytest
from PIL import Image

if not os.environ.get("HOME", "").startswith(tempfile.gettempdir()):  # intern / cloud-volume write under ~
    os.environ["HOME"] = tempfile.mkdtemp(prefix="nl-s3-serving-home-")

BOX = {"x": (37, 411), "y": (5, 300), "z": (3, 17)}


@pytest.fixture(scope="module")
def s3_server(s3_demo_server) -> str:
    return s3_demo_server


@pytest.fixture(scope="module")
def servers(s3_server, demo_server) -> tuple[str, str]:
    """(S3-backed server, local-lake server) of the same demo datastacks."""
    return s3_server, demo_server


def ref(lake, name, mip=0, ds="gerhard2013", box=BOX):
    return lake.layer(ds, name).cutout(x=box["x"], y=box["y"], z=box["z"], mip=mip)


def box_at(mip: int, box=BOX) -> dict:
    """BOX at ``mip`` of gerhard2013 (x and y halve per mip, z stays: 4.6 × 4.6 × 50 nm)."""
    return {"x": (box["x"][0] >> mip, box["x"][1] >> mip), "y": (box["y"][0] >> mip, box["y"][1] >> mip),
            "z": box["z"]}


def test_the_s3_server_serves_the_s3_lake(s3_server, s3_demo_lake_url):
    root = httpx.get(s3_server + "/").json()
    assert set(root["datastacks"]) >= {"gerhard2013", "gala_fibsem"}
    # the shards it serves are the S3 objects (no local copy): the group zarr.json's ETag is the object's
    from neurolake.storage.config import split_s3, storage_config

    bucket, prefix = split_s3(s3_demo_lake_url)
    s3 = storage_config().boto3_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    key = next(k for k in keys if k.endswith("volumes/image/zarr.json") and "gerhard2013" in k)
    r = httpx.get(s3_server + "/zarr/gerhard2013/image/zarr.json", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.headers["etag"] == s3.head_object(Bucket=bucket, Key=key)["ETag"]


@pytest.mark.parametrize("name", ["image", "labels"])
@pytest.mark.parametrize("mip", [0, 1])
def test_cloudvolume_precomputed(servers, demo_lake, name, mip):
    from cloudvolume import CloudVolume

    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    got = []
    for base in servers:
        cv = CloudVolume(f"precomputed://{base}/precomputed/gerhard2013/{name}", mip=mip, progress=False,
                         fill_missing=False, cache=False)
        got.append(np.asarray(cv[x0:x1, y0:y1, z0:z1])[..., 0].transpose(2, 1, 0))
        assert cv.info["scales"][mip]["encoding"] == ("compressed_segmentation" if name == "labels" else "raw")
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[0], ref(demo_lake, name, mip))


def test_cloudvolume_whole_gala_segmentation_and_jpeg(servers):
    from cloudvolume import CloudVolume

    seg = [np.asarray(CloudVolume(f"precomputed://{b}/precomputed/gala_fibsem/segmentation", progress=False,
                                  fill_missing=False, cache=False)[:, :, :]) for b in servers]
    np.testing.assert_array_equal(seg[0], seg[1])
    assert len(np.unique(seg[0])) > 50  # the real 88-label ground truth, not an empty volume
    jpeg = [np.asarray(CloudVolume(f"precomputed://{b}/precomputed/gerhard2013/image/jpeg", progress=False,
                                   cache=False)[0:256, 0:256, 0:16]) for b in servers]
    np.testing.assert_array_equal(jpeg[0], jpeg[1])  # the same encoder on the same voxels


def test_tensorstore_zarr3_and_precomputed(servers, demo_lake):
    import tensorstore as ts

    for name in ("image", "labels"):
        for mip in (0, 2):
            b = box_at(mip)
            (x0, x1), (y0, y1), (z0, z1) = b["x"], b["y"], b["z"]
            got = [ts.open({"driver": "zarr3", "kvstore": f"{base}/zarr/gerhard2013/{name}/{mip}/"}).result()
                   [z0:z1, y0:y1, x0:x1].read().result() for base in servers]
            np.testing.assert_array_equal(got[0], got[1])
            np.testing.assert_array_equal(got[0], ref(demo_lake, name, mip, box=b))
        b = box_at(1)
        (x0, x1), (y0, y1), (z0, z1) = b["x"], b["y"], b["z"]
        got = [ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"{base}/precomputed/gerhard2013/{name}/",
                        "scale_index": 1}).result()[x0:x1, y0:y1, z0:z1, 0].read().result().T for base in servers]
        np.testing.assert_array_equal(got[0], got[1])
        np.testing.assert_array_equal(got[0], ref(demo_lake, name, 1, box=b))


def test_zarr_python_sharded_zarr3(servers, demo_lake):
    import zarr
    from zarr.storage import FsspecStore

    for name in ("image", "labels"):
        groups = [zarr.open_group(FsspecStore.from_url(f"{base}/zarr/gerhard2013/{name}", read_only=True), mode="r")
                  for base in servers]
        assert groups[0].attrs.asdict() == groups[1].attrs.asdict()
        assert groups[0].attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
        for mip in (0, 2):
            b = box_at(mip)
            arrays = [g[str(mip)] for g in groups]
            assert arrays[0].shards is not None and arrays[0].shards == arrays[1].shards
            got = [a[b["z"][0]:b["z"][1], b["y"][0]:b["y"][1], b["x"][0]:b["x"][1]] for a in arrays]
            np.testing.assert_array_equal(got[0], got[1])
            np.testing.assert_array_equal(got[0], ref(demo_lake, name, mip, box=b))


def _remote(base: str):
    from intern.remote.boss import BossRemote

    return BossRemote({"protocol": "http", "host": base.removeprefix("http://"), "token": "test-token"})


@pytest.mark.parametrize("mip", [0, 1])
def test_intern_cutouts_ids_and_boxes(servers, demo_lake, mip):
    remotes = [_remote(b) for b in servers]
    assert set(remotes[0].list_collections()) == set(remotes[1].list_collections())
    for name in ("image", "labels"):
        got = []
        for r in remotes:
            ch = r.get_channel(name, "gerhard2013", "gerhard2013")
            b = box_at(mip)
            got.append(r.get_cutout(ch, mip, list(b["x"]), list(b["y"]), list(b["z"])))
        assert got[0].dtype == got[1].dtype == (np.uint64 if name == "labels" else np.uint8)
        np.testing.assert_array_equal(got[0], got[1])
        np.testing.assert_array_equal(got[0], ref(demo_lake, name, mip, box=box_at(mip)))
    ids, boxes = [], []
    for r in remotes:
        ch = r.get_channel("segmentation", "gala_fibsem", "gala_fibsem")
        found = sorted(int(i) for i in r.get_ids_in_region(ch, mip, [0, 200 >> mip], [0, 100 >> mip],
                                                          [0, 50 >> mip]))
        ids.append(found)
        boxes.append([r.get_bounding_box(ch, mip, found[k], kind) for k in (0, 5) for kind in ("tight", "loose")])
    assert ids[0] == ids[1] and len(ids[0]) > 10
    assert boxes[0] == boxes[1]


def _png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def test_catmaid_tiles(servers, demo_lake):
    layer = demo_lake.layer("gerhard2013", "image")
    for path in ("gerhard2013/image/xy/7/1_0_0.png", "gerhard2013/image/xy/7/0_0_1.png",
                 "gerhard2013/image/xz/300/0_1_0.png", "gerhard2013/image/yz/40/0_0_1.png",
                 "gerhard2013/labels/xy/7/0_0_0.png", "gala_fibsem/segmentation/xy/10/0_0_0.png",
                 "gerhard2013/image/xy/7/1_0_0.jpg"):
        bodies = []
        for base in servers:
            r = httpx.get(f"{base}/catmaid/{path}")
            assert r.status_code == 200, (base, path, r.text[:200])
            bodies.append(r.content)
        np.testing.assert_array_equal(_png(bodies[0]), _png(bodies[1]), err_msg=path)
    np.testing.assert_array_equal(_png(httpx.get(f"{servers[0]}/catmaid/gerhard2013/image/xy/7/1_0_0.png").content),
                                  layer.cutout(x=(0, 512), y=(512, 1024), z=(7, 8))[0])
    for path, status in (("xy/20/0_0_0.png", 404), ("xy/0/2_0_0.png", 404), ("ab/0/0_0_0.png", 400)):
        assert [httpx.get(f"{b}/catmaid/gerhard2013/image/{path}").status_code for b in servers] == [status] * 2


def test_ocp_and_boss_raw_cutouts(servers):
    for url in ("/ocp/ca/gerhard2013/labels/npz/1/10,200/20,300/2,9/",
                "/ocp/ca/gala_fibsem/image/blosc/0/0,200/0,100/0,50/",
                "/v1/cutout/gerhard2013/gerhard2013/image/0/0:100/0:100/0:5/"):
        got = [httpx.get(b + url) for b in servers]
        assert got[0].status_code == got[1].status_code == 200, url
        assert got[0].content == got[1].content and len(got[0].content) > 100, url


def test_static_tree_http_rules_on_s3_objects(servers):
    s3, local = (httpx.Client(base_url=b) for b in servers)
    for path in ("/zarr/gerhard2013/image/.zarray", "/zarr/gerhard2013/image/.zattrs",
                 "/zarr/gerhard2013/image/0/c/9/9/9", "/zarr/gerhard2013/image/0", "/zarr/gerhard2013/image/0/c",
                 "/zarr/gerhard2013/image/../../../lake.json", "/zarr/gerhard2013/nolayer/zarr.json",
                 "/precomputed/gerhard2013/image/4.6_4.6_50/0-100_0-128_0-16"):
        r = s3.get(path)
        assert r.status_code == 404, path
        assert r.headers["access-control-allow-origin"] == "*"
    for key in ("/zarr/gerhard2013/image/zarr.json", "/zarr/gerhard2013/labels/1/zarr.json",
                "/zarr/gerhard2013/image/0/c/0/0/0", "/zarr/gerhard2013/labels/0/c/1/0/0"):
        whole = s3.get(key, headers={"Accept-Encoding": "identity"})
        assert whole.status_code == 200 and "content-encoding" not in whole.headers
        assert whole.content == local.get(key, headers={"Accept-Encoding": "identity"}).content
    shard = "/zarr/gerhard2013/image/0/c/0/0/0"
    whole = s3.get(shard, headers={"Accept-Encoding": "identity"}).content
    total = len(whole)
    etag = s3.get(shard).headers["etag"]
    head = s3.head(shard, headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200 and int(head.headers["content-length"]) == total
    assert "content-encoding" not in head.headers and head.headers["etag"] == etag
    head = s3.head(shard, headers={"Range": "bytes=-16"})
    assert head.status_code == 206 and head.headers["content-length"] == "16"
    for rng, want in (("bytes=-1028", whole[-1028:]), (f"bytes={total - 10}-", whole[-10:]),
                      ("bytes=100-199", whole[100:200]), (f"bytes=5-{total + 100}", whole[5:]),
                      (f"bytes=-{total + 50}", whole)):
        r = s3.get(shard, headers={"Range": rng, "Accept-Encoding": "gzip"})
        assert r.status_code == 206 and r.content == want and "content-encoding" not in r.headers, rng
        assert r.headers["etag"] == etag
        assert r.headers["content-range"] == local.get(shard, headers={"Range": rng}).headers["content-range"], rng
    for rng in ("bytes=200-100", "bytes=0-1,5-9", "items=0-5"):  # ignored: the whole object, as locally
        r = s3.get(shard, headers={"Range": rng})
        assert r.status_code == 200 and r.content == whole, rng
    for rng in (f"bytes={total}-", "bytes=-0"):
        r = s3.get(shard, headers={"Range": rng})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{total}", rng
    assert s3.get(shard, headers={"If-None-Match": etag}).status_code == 304
    assert s3.get(shard, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    r = s3.get(shard, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == whole
    info = s3.get("/zarr/gerhard2013/image/zarr.json", headers={"Accept-Encoding": "gzip"})
    assert info.headers["content-encoding"] == "gzip" and info.json()["node_type"] == "group"


# -- writes through the S3-backed server ------------------------------------------------------------------
@pytest.fixture
def gala_s3(new_s3_lake, serve_lake):
    """A writable S3 lake holding the real gala FIB-SEM crop, and a server process of it."""
    from neurolake import open_lake
    from neurolake.demo import GALA_VOXEL, data_dir

    url, _db = new_s3_lake()
    lake = open_lake(url)
    lake.create_datastack("gala", GALA_VOXEL)
    for name, rel, kind in (("image", "train-image.h5:/stack", "image"),
                            ("segmentation", "train-gt.lzf.h5:/stack", "segmentation")):
        lake.ingest(str(data_dir() / "gala_fibsem" / rel), "gala", name, voxel_size=GALA_VOXEL, layer_type=kind,
                    scheduler="threads")
    yield serve_lake(url), lake
    lake.close()


def test_a_write_through_the_s3_server_is_read_by_every_client_with_new_etags(gala_s3):
    import tensorstore as ts
    from cloudvolume import CloudVolume

    base, lake = gala_s3
    c = httpx.Client(base_url=base)
    shard, chunk = "/zarr/gala/image/0/c/1/0/0", "/precomputed/gala/image/8_8_8/0-128_0-100_16-32"  # z 16:32
    tile = "/catmaid/gala/image/xy/22/0_0_0.png"
    before = {p: c.get(p) for p in (shard, chunk, tile)}
    assert all(r.status_code == 200 for r in before.values())
    # intern writes a real block (the crop's own voxels, mirrored) into one shard at mip 0
    rmt = _remote(base)
    img = rmt.get_channel("image", "gala", "gala")
    block = lake.layer("gala", "image").cutout(x=(0, 64), y=(0, 32), z=(0, 8))[:, :, ::-1].copy()
    rmt.create_cutout(img, 0, [100, 164], [40, 72], [18, 26], block)
    # every other client reads it back through the same server
    np.testing.assert_array_equal(rmt.get_cutout(img, 0, [100, 164], [40, 72], [18, 26]), block)
    z = ts.open({"driver": "zarr3", "kvstore": f"{base}/zarr/gala/image/0/"}).result()
    np.testing.assert_array_equal(z[18:26, 40:72, 100:164].read().result(), block)
    cv = CloudVolume(f"precomputed://{base}/precomputed/gala/image", progress=False, cache=False)
    np.testing.assert_array_equal(np.asarray(cv[100:164, 40:72, 18:26])[..., 0].transpose(2, 1, 0), block)
    np.testing.assert_array_equal(_png(c.get(tile).content)[40:72, 100:164], block[22 - 18])
    # and the lake itself, opened afresh (another process's view), including the coarser mip
    from neurolake import open_lake

    other = open_lake(lake.url)
    np.testing.assert_array_equal(other.layer("gala", "image").cutout(x=(100, 164), y=(40, 72), z=(18, 26)), block)
    assert not other.layer("gala", "image").pending_updates()
    other.close()
    # every cached representation has a new ETag: a revalidating client is not answered 304 with stale bytes
    for p, old in before.items():
        r = c.get(p, headers={"If-None-Match": old.headers["etag"]})
        assert r.status_code == 200 and r.headers["etag"] != old.headers["etag"], p
        assert r.content != old.content, p
        assert c.get(p, headers={"If-None-Match": r.headers["etag"]}).status_code == 304, p
    # OCP blosc POST too, into the same shard
    ocp = "/ocp/ca/gala/image/blosc/0/100,164/40,72/22,23/"
    etag = c.get(shard).headers["etag"]
    assert c.post(ocp, content=blosc.compress(bytes([9]) * 64 * 32, typesize=1)).status_code == 201
    assert (_png(c.get(tile).content)[40:72, 100:164] == 9).all()
    assert c.get(shard).headers["etag"] != etag
    # BossDB id reservation on object storage: above every stored id, never twice the same
    seg = rmt.get_channel("segmentation", "gala", "gala")
    start = rmt.reserve_ids(seg, 5)
    assert start == int(lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50)).max()) + 1
    assert rmt.reserve_ids(seg, 2) == start + 5
    labels = np.full((4, 16, 16), start, np.uint64)
    rmt.create_cutout(seg, 0, [10, 26], [10, 26], [10, 14], labels)
    assert rmt.get_bounding_box(seg, 0, start, "tight") == {"x_range": [10, 26], "y_range": [10, 26],
                                                            "z_range": [10, 14], "t_range": [0, 1]}


def test_ingest_from_s3_sources(new_s3_lake, gerhard_source, demo_lake):
    """Ingest reads sources on object storage too: a prefix of TIFF slices and an HDF5 dataset."""
    import uuid

    from neurolake import open_lake
    from neurolake.demo import GALA_VOXEL, data_dir
    from neurolake.errors import NotFound
    from neurolake.storage.config import storage_config

    s3 = storage_config().boto3_client()
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for f in sorted((data_dir() / "gerhard2013" / "raw").glob("*.tif")):
        s3.upload_file(str(f), bucket, f"gerhard/raw/{f.name}")
    s3.upload_file(str(data_dir() / "gala_fibsem" / "train-gt.lzf.h5"), bucket, "gala/train-gt.lzf.h5")
    url, _db = new_s3_lake()
    lake = open_lake(url)
    la = lake.ingest(f"s3://{bucket}/gerhard/raw", "gerhard", "em", voxel_size=(4.6, 4.6, 50), scheduler="threads")
    np.testing.assert_array_equal(la.cutout(x=(0, 1024), y=(0, 1024), z=(0, 20)), gerhard_source)
    assert f"s3://{bucket}/gerhard/raw" in la.info()["provenance"]["inputs"]["source"]
    seg = lake.ingest(f"s3://{bucket}/gala/train-gt.lzf.h5:/stack", "gala", "segmentation", voxel_size=GALA_VOXEL,
                      layer_type="segmentation", scheduler="threads")
    want = demo_lake.layer("gala_fibsem", "segmentation")
    assert seg.dtype == want.dtype
    np.testing.assert_array_equal(seg.cutout(x=(0, 200), y=(0, 100), z=(0, 50)),
                                  want.cutout(x=(0, 200), y=(0, 100), z=(0, 50)))
    with pytest.raises(NotFound, match="does not exist"):
        lake.ingest(f"s3://{bucket}/nothing/here", "gerhard", "other", voxel_size=(4.6, 4.6, 50))
    lake.close()
