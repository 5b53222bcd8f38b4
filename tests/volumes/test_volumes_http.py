"""The OCP-compatible HTTP service, against a real uvicorn process on loopback."""

import io

import blosc
import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import on_local_and_s3

demo_server = on_local_and_s3("demo_server")  # every test using it runs on a local lake, then on S3


def test_png_slice_equals_source_slice(demo_server, gerhard_source):
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/xy/0/0,1024/0,1024/10/")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), gerhard_source[10])


def test_xz_and_yz_planes(demo_server, gerhard_source):
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/xz/0/100,300/512/2,12/")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), gerhard_source[2:12, 512, 100:300])
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/yz/0/7/0,1024/0,20/")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), gerhard_source[:, :, 7])


def test_npz_cutout_equals_source_box(demo_server, gerhard_source):
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/npz/0/100,612/200,712/3,13/")
    assert r.status_code == 200
    arr = np.load(io.BytesIO(r.content))["cutout"]
    np.testing.assert_array_equal(arr, gerhard_source[3:13, 200:712, 100:612])


def test_mip1_over_http_is_area_mean(demo_server, gerhard_source):
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/npz/1/0,512/0,512/0,20/")
    ref = np.rint(gerhard_source.astype(float).reshape(20, 512, 2, 512, 2).mean(axis=(2, 4)))
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content))["cutout"], ref)


@pytest.mark.parametrize("fmt", ["blosc", "raw", "tiff"])
def test_other_formats(demo_server, gerhard_source, fmt):
    r = httpx.get(f"{demo_server}/ocp/ca/gerhard2013/image/{fmt}/0/0,300/0,200/5,9/")
    assert r.status_code == 200
    if fmt == "tiff":
        arr = tifffile.imread(io.BytesIO(r.content))
    else:
        raw = blosc.decompress(r.content) if fmt == "blosc" else r.content
        shape = tuple(int(v) for v in r.headers["x-neurolake-shape"].split(","))
        arr = np.frombuffer(raw, dtype=r.headers["x-neurolake-dtype"]).reshape(shape)
    np.testing.assert_array_equal(arr, gerhard_source[5:9, 0:200, 0:300])


def test_segmentation_png_colours_ids(demo_server):
    r = httpx.get(f"{demo_server}/ocp/ca/gala_fibsem/segmentation/xy/0/0,200/0,100/3/")
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (100, 200, 3) and len(np.unique(img.reshape(-1, 3), axis=0)) > 10


def test_metadata_routes(demo_server):
    ds = httpx.get(f"{demo_server}/api/v1/datastacks").json()
    assert {d["name"] for d in ds} == {"gerhard2013", "gala_fibsem"}
    one = httpx.get(f"{demo_server}/api/v1/datastacks/gerhard2013").json()
    assert {la["name"] for la in one["layers"]} >= {"image", "labels"}
    la = httpx.get(f"{demo_server}/api/v1/datastacks/gerhard2013/layers/image").json()
    assert la["dtype"] == "uint8" and la["voxel_size_nm"] == [4.6, 4.6, 50.0]
    assert la["mips"][1]["size_xyz"] == [512, 512, 20] and la["mips"][1]["voxel_size_nm"] == [9.2, 9.2, 50.0]
    assert la["mips"][0]["chunk_zyx"] == [16, 128, 128]
    assert httpx.get(f"{demo_server}/docs").status_code == 200
    assert "/ocp/ca/{datastack}/{layer}/{fmt}/{mip}/{a}/{b}/{c}/" in httpx.get(f"{demo_server}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("path", "status", "code", "text"),
    [
        ("gerhard2013/image/npz/0/0,10x/0,10/0,1/", 400, "invalid_argument", "malformed"),
        ("gerhard2013/image/npz/0/10,0/0,10/0,1/", 400, "invalid_argument", "inverted"),
        ("gerhard2013/image/npz/0/0,10/0,10/0/", 400, "invalid_argument", "malformed"),
        ("gerhard2013/image/npz/0/0,2000/0,10/0,1/", 400, "out_of_bounds", "0:1024"),
        ("gerhard2013/image/npz/9/0,10/0,10/0,1/", 400, "invalid_argument", "mips 0..4"),
        ("gerhard2013/image/npz/x/0,10/0,10/0,1/", 400, "invalid_argument", "mip"),
        ("gerhard2013/image/gif/0/0,10/0,10/0,1/", 400, "invalid_argument", "npz, blosc, raw, tiff"),
        ("nope/image/npz/0/0,10/0,10/0,1/", 404, "not_found", "datastack 'nope'"),
        ("gerhard2013/nope/npz/0/0,10/0,10/0,1/", 404, "not_found", "layer 'nope'"),
        ("gerhard2013/image/xy/0/0,10/0,10/25/", 400, "out_of_bounds", "z = 0:20"),
    ],
)
def test_bad_requests_get_clear_4xx(demo_server, path, status, code, text):
    r = httpx.get(f"{demo_server}/ocp/ca/{path}")
    assert r.status_code == status
    body = r.json()
    assert body["error"] == code and text in body["message"]


def test_size_limit_413(serve_lake, demo_lake_path):
    base = serve_lake(demo_lake_path, env={"NEUROLAKE_MAX_CUTOUT_BYTES": "1000000"})
    r = httpx.get(f"{base}/ocp/ca/gerhard2013/image/npz/0/0,1024/0,1024/0,1/")
    assert r.status_code == 413 and "1000000" in r.json()["message"]
    assert httpx.get(f"{base}/ocp/ca/gerhard2013/image/npz/0/0,512/0,512/0,1/").status_code == 200


@pytest.fixture(scope="module")
def writable_server(serve_lake, tmp_path_factory):
    from neurolake import init_lake
    from tests.conftest import DATA

    path = tmp_path_factory.mktemp("w") / "lake"
    lake = init_lake(path)
    lake.ingest(f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/stack", "gala", "image", voxel_size=(8, 8, 8),
                scheduler="threads")
    lake.ingest(f"{DATA / 'gala_fibsem' / 'train-gt.lzf.h5'}:/stack", "gala", "seg", layer_type="segmentation",
                dtype="uint64", scheduler="threads")
    lake.close()
    return serve_lake(path)


def test_post_npz_and_blosc_write(writable_server):
    base = writable_server
    patch = np.arange(3 * 20 * 30, dtype=np.uint8).reshape(3, 20, 30)
    buf = io.BytesIO()
    np.savez_compressed(buf, patch)
    url = f"{base}/ocp/ca/gala/image/npz/0/11,41/7,27/4,7/"
    assert httpx.post(url, content=buf.getvalue()).status_code == 201
    np.testing.assert_array_equal(np.load(io.BytesIO(httpx.get(url).content))["cutout"], patch)
    ids = np.full((2, 10, 10), 2**40 + 5, dtype=np.uint64)
    url = f"{base}/ocp/ca/gala/seg/blosc/0/0,10/0,10/0,2/"
    assert httpx.post(url, content=blosc.compress(ids.tobytes(), typesize=8)).status_code == 201
    got = np.frombuffer(blosc.decompress(httpx.get(url).content), dtype=np.uint64).reshape(2, 10, 10)
    np.testing.assert_array_equal(got, ids)
    # the coarser mip of the touched region follows (mode of a uniform block is the id)
    mip1 = httpx.get(f"{base}/ocp/ca/gala/seg/npz/1/0,5/0,5/0,1/")
    assert (np.load(io.BytesIO(mip1.content))["cutout"] == 2**40 + 5).all()


@pytest.mark.parametrize(
    ("fmt", "body", "text"),
    [
        ("npz", b"not an npz", "not a readable npz"),
        ("blosc", b"garbage!", "blosc"),
        ("npz", "shape", "shape [2, 20, 30]"),
        ("npz", "dtype", "dtype float64 does not fit"),
        ("blosc", "short", "needs 1800"),
        ("raw", b"x", "npz, blosc"),
    ],
)
def test_bad_uploads_are_refused_and_change_nothing(writable_server, fmt, body, text):
    base = writable_server
    url = f"{base}/ocp/ca/gala/image/{fmt}/0/100,130/50,70/10,13/"
    before = np.load(io.BytesIO(httpx.get(url.replace(f"/{fmt}/", "/npz/")).content))["cutout"]
    if body in ("shape", "dtype"):
        arr = np.zeros((2, 20, 30), np.uint8) if body == "shape" else np.zeros((3, 20, 30), np.float64)
        buf = io.BytesIO()
        np.savez(buf, arr)
        body = buf.getvalue()
    elif body == "short":
        body = blosc.compress(b"\0" * 100, typesize=1)
    r = httpx.post(url, content=body)
    assert 400 <= r.status_code < 500 and text in r.json()["message"], r.text
    after = np.load(io.BytesIO(httpx.get(url.replace(f"/{fmt}/", "/npz/")).content))["cutout"]
    np.testing.assert_array_equal(before, after)
