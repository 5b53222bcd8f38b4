"""Precomputed chunk encodings and names, segment queries: real demo data, typed errors."""

from __future__ import annotations

import compressed_segmentation as cseg
import numpy as np
import pytest
import simplejpeg

from neurolake.errors import InvalidArgument, NotFound
from neurolake.volumes import precomputed as pc
from neurolake.volumes import segments
from tests.conftest import on_local_and_s3

demo_lake = on_local_and_s3("demo_lake")  # every test using it runs on a local lake, then on S3


def test_compressed_segmentation_roundtrip_real_labels(demo_lake):
    layer = demo_lake.layer("gala_fibsem", "segmentation")
    arr = layer.cutout(x=(0, 128), y=(0, 100), z=(0, 16))
    body = pc.encode_chunk(arr, "compressed_segmentation")
    back = cseg.decompress(body, (128, 100, 16, 1), dtype=np.uint32, block_size=(8, 8, 8), order="F")
    np.testing.assert_array_equal(back[..., 0].T, arr)


def test_raw_and_jpeg_layout(demo_lake):
    layer = demo_lake.layer("gerhard2013", "image")
    arr = layer.cutout(x=(0, 128), y=(0, 64), z=(0, 4))
    raw = pc.encode_chunk(arr, "raw")
    f = np.frombuffer(raw, np.uint8).reshape((128, 64, 4), order="F")  # x fastest
    np.testing.assert_array_equal(f.T, arr)
    img = simplejpeg.decode_jpeg(pc.encode_chunk(arr, "jpeg"), colorspace="GRAY")[..., 0]
    assert img.shape == (4 * 64, 128)  # z sections stacked vertically
    assert np.abs(img.astype(int) - arr.reshape(256, 128).astype(int)).mean() < 4


def test_info_and_names(demo_lake):
    layer = demo_lake.layer("gerhard2013", "labels")
    info = pc.info(layer)
    assert [s["key"] for s in info["scales"]] == [m.key for m in layer.spec.mips]
    assert info["scales"][0]["size"] == [1024, 1024, 20] and info["scales"][0]["chunk_sizes"] == [[128, 128, 16]]
    assert pc.parse_chunk_name(layer, 0, "896-1024_0-128_16-20") == ((896, 1024), (0, 128), (16, 20))
    for bad in ("0-128_0-128", "0-64_0-128_0-16", "0-128_0-128_0-20", "1024-1152_0-128_0-16"):
        with pytest.raises(NotFound):
            pc.parse_chunk_name(layer, 0, bad)
    with pytest.raises(NotFound, match="scales are"):
        pc.mip_of_key(layer, "1_1_1")
    with pytest.raises(InvalidArgument, match="encoding 'jpeg'"):
        pc.info(layer, "jpeg")


def test_segment_queries_errors(demo_lake, tmp_path):
    seg = demo_lake.layer("gala_fibsem", "segmentation")
    img = demo_lake.layer("gala_fibsem", "image")
    with pytest.raises(InvalidArgument, match="segmentation"):
        segments.ids_in_box(img, (0, 10), (0, 10), (0, 1))
    with pytest.raises(InvalidArgument, match="positive"):
        segments.bounding_box(seg, 0)
    with pytest.raises(NotFound):
        segments.bounding_box(seg, 2**40)
    with pytest.raises(InvalidArgument, match=">= 1"):
        segments.reserve_ids(tmp_path, seg, 0)
    full = seg.cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    assert segments.reserve_ids(tmp_path, seg, 3) == int(full.max()) + 1
