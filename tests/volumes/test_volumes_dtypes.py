"""Image dtypes, compression codecs and chunk/shard options, stored and read back through zarr-python too."""

import json

import numpy as np
import pytest
import zarr

from neurolake.errors import InvalidArgument
from neurolake.volumes.spec import LayerSpec
from tests.conftest import on_local_and_s3

fresh_lake = on_local_and_s3("fresh_lake")  # every test using it runs on a local lake, then on S3


@pytest.mark.parametrize(
    ("dtype", "compression"),
    [("uint8", "blosc"), ("uint16", "zstd"), ("uint16", "blosc"), ("float32", "zstd")],
)
def test_image_dtypes_and_codecs_round_trip(fresh_lake, gerhard_source, dtype, compression, tmp_path):
    base = gerhard_source[:6, :300, :500]
    vol = (base.astype(np.float32) / 255.0) if dtype == "float32" else base.astype(dtype) * (
        257 if dtype == "uint16" else 1)
    np.save(tmp_path / "v.npy", vol)
    la = fresh_lake.ingest(str(tmp_path / "v.npy"), "d", f"{dtype}_{compression}", voxel_size=(4.6, 4.6, 50),
                           compression=compression, chunk=(4, 64, 64), shard=(4, 256, 256), scheduler="threads")
    assert la.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(la[:, :, :], vol)
    # the stored array is plain sharded Zarr v3 with the chosen codec, readable by zarr-python
    meta = json.loads((la.root / "0" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]
    assert meta["codecs"][0]["name"] == "sharding_indexed" and inner["chunk_shape"] == [4, 64, 64]
    assert inner["codecs"][-1]["name"] == compression
    if fresh_lake.remote:  # zarr-python through fsspec, with the lake's storage configuration
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(str(la.root / "0"), storage_options=fresh_lake.storage.fsspec_options(),
                                     read_only=True)
    else:
        store = str(la.root / "0")
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], vol)
    group = json.loads((la.root / "zarr.json").read_text())["attributes"]["ome"]
    assert group["version"] == "0.5"
    assert group["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] == [50.0, 9.2, 9.2]
    mip1 = la.cutout(x=(0, 250), y=(0, 150), z=(0, 6), mip=1)
    ref = vol.astype(np.float64).reshape(6, 150, 2, 250, 2).mean(axis=(2, 4))
    if dtype == "float32":
        np.testing.assert_allclose(mip1, ref, rtol=1e-6)
    else:
        np.testing.assert_array_equal(mip1, np.rint(ref))


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        (dict(chunk_zyx=(4, 64, 64), shard_zyx=(4, 100, 64)), "multiple of the chunk"),
        (dict(chunk_zyx=(4, 0, 64)), "chunk must be > 0"),
        (dict(dtype="int8"), "dtype 'int8' is not allowed for a image layer"),
        (dict(layer_type="mesh"), "layer type 'mesh'"),
        (dict(compression="lzma"), "compression 'lzma'"),
        (dict(voxel_size_nm=(4, -1, 40)), "voxel_size must be > 0"),
    ],
)
def test_bad_specs(kw, text):
    args = dict(layer_type="image", dtype="uint8", size_xyz=(64, 64, 8), voxel_size_nm=(4, 4, 40)) | kw
    with pytest.raises(InvalidArgument, match=text):
        LayerSpec(**args)


def test_segmentation_dtype_rules():
    with pytest.raises(InvalidArgument, match="uint32, uint64"):
        LayerSpec(layer_type="segmentation", dtype="uint8", size_xyz=(8, 8, 8), voxel_size_nm=(8, 8, 8))
