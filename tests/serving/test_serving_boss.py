"""intern's BossRemote, unmodified, against a real server process: metadata, cutouts, ids, boxes, reserve."""

from __future__ import annotations

import blosc
import httpx
import numpy as np
import pytest
from requests import HTTPError

from neurolake.volumes.segments import BOSS_CUBOID_XYZ


def remote(base: str):
    from intern.remote.boss import BossRemote

    return BossRemote({"protocol": "http", "host": base.removeprefix("http://"), "token": "test-token"})


@pytest.fixture(scope="module")
def rmt(demo_server):
    return remote(demo_server)


def test_metadata(rmt, demo_lake):
    assert set(rmt.list_collections()) == {"gerhard2013", "gala_fibsem"}
    assert rmt.list_experiments("gerhard2013") == ["gerhard2013"]
    assert rmt.list_channels("gerhard2013", "gerhard2013") == ["image", "labels"]
    exp = rmt.get_experiment("gerhard2013", "gerhard2013")
    assert exp.coord_frame == "gerhard2013" and exp.num_hierarchy_levels == demo_lake.layer("gerhard2013", "image").num_mips
    frame = rmt.get_coordinate_frame("gerhard2013")
    assert (frame.x_stop, frame.y_stop, frame.z_stop) == (1024, 1024, 20)
    assert (frame.x_voxel_size, frame.z_voxel_size, frame.voxel_unit) == (4.6, 50.0, "nanometers")
    img = rmt.get_channel("image", "gerhard2013", "gerhard2013")
    lab = rmt.get_channel("labels", "gerhard2013", "gerhard2013")
    assert (img.datatype, img.type) == ("uint8", "image")
    assert (lab.datatype, lab.type) == ("uint64", "annotation")  # stored as uint32
    assert lab.raw["storage_type"] == "spdb" and lab.raw["downsample_status"] == "DOWNSAMPLED"


def test_metadata_lists_and_downsample(demo_server, demo_lake):
    c = httpx.Client(base_url=demo_server)
    assert set(c.get("/v1/coord/").json()["coords"]) == {"gerhard2013", "gala_fibsem"}
    assert c.get("/v1/collection/gerhard2013/experiment/").json() == {"experiments": ["gerhard2013"]}
    r = c.get("/v1/collection/gerhard2013/experiment/other")
    assert r.status_code == 404 and r.json()["code"] == 4000
    ds = c.get("/v1/downsample/gerhard2013/gerhard2013/image").json()
    layer = demo_lake.layer("gerhard2013", "image")
    assert ds["status"] == "DOWNSAMPLED" and ds["num_hierarchy_levels"] == layer.num_mips
    assert ds["extent"]["1"] == list(layer.size(1))
    assert c.post("/v1/downsample/gerhard2013/gerhard2013/image").status_code == 201


@pytest.mark.parametrize("mip", [0, 1])
def test_get_cutout_image_and_segmentation(rmt, demo_lake, mip):
    for name in ("image", "labels"):
        ch = rmt.get_channel(name, "gerhard2013", "gerhard2013")
        x, y, z = (37, 411), (5, 300), (3, 17)
        got = rmt.get_cutout(ch, mip, list(x), list(y), list(z))
        want = demo_lake.layer("gerhard2013", name).cutout(x=x, y=y, z=z, mip=mip)
        assert got.shape == want.shape
        assert got.dtype == (np.uint64 if name == "labels" else np.uint8)
        np.testing.assert_array_equal(got, want)


def test_filter_ids_and_boxes(rmt, demo_lake):
    ch = rmt.get_channel("segmentation", "gala_fibsem", "gala_fibsem")
    layer = demo_lake.layer("gala_fibsem", "segmentation")
    full = layer.cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    ids = rmt.get_ids_in_region(ch, 0, [0, 200], [0, 100], [0, 50])
    np.testing.assert_array_equal(sorted(ids), np.unique(full[full != 0]))
    keep = [int(ids[0]), int(ids[3])]
    got = rmt.get_cutout(ch, 0, [0, 200], [0, 100], [0, 50], id_list=keep)
    np.testing.assert_array_equal(got, np.where(np.isin(full, keep), full, 0))
    sid = int(ids[5])
    zz, yy, xx = np.nonzero(full == sid)
    tight = rmt.get_bounding_box(ch, 0, sid, "tight")
    assert tight["x_range"] == [xx.min(), xx.max() + 1]
    assert tight["y_range"] == [yy.min(), yy.max() + 1]
    assert tight["z_range"] == [zz.min(), zz.max() + 1]
    loose = rmt.get_bounding_box(ch, 0, sid, "loose")
    cz = BOSS_CUBOID_XYZ[2]
    assert loose["z_range"] == [zz.min() // cz * cz, min(50, -(-(zz.max() + 1) // cz) * cz)]
    assert loose["x_range"] == [0, 200]


def test_errors_in_boss_shape(demo_server, rmt):
    r = httpx.get(f"{demo_server}/v1/collection/gerhard2013/experiment/gerhard2013/channel/nope")
    assert r.status_code == 404 and r.json()["code"] == 4000 and r.json()["status"] == 404
    assert "nope" in r.json()["message"]
    r = httpx.get(f"{demo_server}/v1/cutout/gerhard2013/gerhard2013/image/0/0:2000/0:10/0:1/")
    assert r.status_code == 400 and r.json()["code"] == 1001 and "x range" in r.json()["message"]
    r = httpx.get(f"{demo_server}/v1/cutout/gerhard2013/gerhard2013/image/0/0:10/0:x/0:1/")
    assert r.status_code == 400 and "y range" in r.json()["message"]
    r = httpx.get(f"{demo_server}/v1/cutout/gerhard2013/gerhard2013/image/0/0:10/0:10/0:1/1:2/")
    assert r.status_code == 400 and "time" in r.json()["message"]
    r = httpx.get(f"{demo_server}/v1/boundingbox/gerhard2013/gerhard2013/image/0/5/?type=tight")
    assert r.status_code == 400 and "segmentation" in r.json()["message"]
    r = httpx.get(f"{demo_server}/v1/boundingbox/gerhard2013/gerhard2013/labels/0/5/?type=round")
    assert r.status_code == 400 and "loose or tight" in r.json()["message"]
    ch = rmt.get_channel("labels", "gerhard2013", "gerhard2013")
    with pytest.raises(HTTPError):
        rmt.get_bounding_box(ch, 0, 7, "tight")  # id 7 does not occur: 404


def test_write_read_reserve_and_limits(gala_server, gala_lake):
    r = remote(gala_server)
    img = r.get_channel("image", "gala", "gala")
    seg = r.get_channel("segmentation", "gala", "gala")
    layer_seg = gala_lake.layer("gala", "segmentation")
    # image: write a real block (the same data shifted) and read it back through intern and the lake
    layer_img = gala_lake.layer("gala", "image")
    block = layer_img.cutout(x=(0, 64), y=(0, 32), z=(0, 8))[:, :, ::-1].copy()
    r.create_cutout(img, 0, [100, 164], [40, 72], [20, 28], block)
    np.testing.assert_array_equal(r.get_cutout(img, 0, [100, 164], [40, 72], [20, 28]), block)
    np.testing.assert_array_equal(layer_img.cutout(x=(100, 164), y=(40, 72), z=(20, 28)), block)
    # a tile served before the write is not served stale after it
    tile_url = f"{gala_server}/catmaid/gala/image/xy/22/0_0_0.png"
    before = httpx.get(tile_url).content
    r.create_cutout(img, 0, [100, 164], [40, 72], [22, 23], np.full((1, 32, 64), 7, np.uint8))  # intern skips all-0
    after = httpx.get(tile_url).content
    assert before != after
    import io

    from PIL import Image

    assert (np.asarray(Image.open(io.BytesIO(after)))[40:72, 100:164] == 7).all()
    # the same through the OCP service
    ocp = f"{gala_server}/ocp/ca/gala/image/blosc/0/100,164/40,72/22,23/"
    assert httpx.post(ocp, content=blosc.compress(bytes([9]) * 64 * 32, typesize=1)).status_code == 201
    assert (np.asarray(Image.open(io.BytesIO(httpx.get(tile_url).content)))[40:72, 100:164] == 9).all()
    # segmentation: reserve new ids above every stored id, paint them, read back as uint64
    max_stored = int(layer_seg.cutout(x=(0, 200), y=(0, 100), z=(0, 50)).max())
    start = r.reserve_ids(seg, 5)
    assert start == max_stored + 1
    assert r.reserve_ids(seg, 2) == start + 5  # reservations never overlap
    labels = np.full((4, 16, 16), start, np.uint64)
    labels[:, 8:, :] = start + 1
    r.create_cutout(seg, 0, [10, 26], [10, 26], [10, 14], labels)
    np.testing.assert_array_equal(r.get_cutout(seg, 0, [10, 26], [10, 26], [10, 14]), labels)
    assert layer_seg.cutout(x=(10, 26), y=(10, 26), z=(10, 14)).dtype == np.uint32
    assert r.get_bounding_box(seg, 0, start + 1, "tight") == {"x_range": [10, 26], "y_range": [18, 26],
                                                                "z_range": [10, 14], "t_range": [0, 1]}
    # coarser mips were updated by the write (mode downsampling of the painted block)
    assert start in r.get_ids_in_region(seg, 1, [5, 13], [5, 13], [5, 7])
    # ids beyond uint32 are refused with a clear message
    big = np.full((1, 2, 2), 2**40, np.uint64)
    url = f"{gala_server}/v1/cutout/gala/gala/segmentation/0/0:2/0:2/0:1/"
    resp = httpx.post(url, content=blosc.compress(big.tobytes(), typesize=8))
    assert resp.status_code == 400 and "uint32" in resp.json()["message"]
    # BossDB's size limit: 413 with code 2000
    resp = httpx.get(f"{gala_server}/v1/cutout/gala/gala/image/0/0:200/0:100/0:50/")
    assert resp.status_code == 413 and resp.json()["code"] == 2000
    with pytest.raises(HTTPError):
        r.get_cutout(img, 0, [0, 200], [0, 100], [0, 50])
