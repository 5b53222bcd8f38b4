"""Cutouts of the real demo data at every mip, against references computed independently here."""

import numpy as np
import pytest

from neurolake.errors import InvalidArgument, NotFound, OutOfBounds
from tests.conftest import on_local_and_s3

demo_lake = on_local_and_s3("demo_lake")  # every test using it runs on a local lake, then on S3


def area_mean_reference(src: np.ndarray, factor_zyx) -> np.ndarray:
    """Independent reference: reshape-mean over full windows, rint (edges trimmed)."""
    fz, fy, fx = factor_zyx
    z, y, x = (s // f * f for s, f in zip(src.shape, factor_zyx, strict=True))
    v = src[:z, :y, :x].astype(np.float64).reshape(z // fz, fz, y // fy, fy, x // fx, fx)
    return np.rint(v.mean(axis=(1, 3, 5)))


def test_gerhard_mip0_full_volume_equals_tiffs(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    assert la.shape(0) == (20, 1024, 1024) and la.dtype == np.uint8
    assert la.voxel_size == (4.6, 4.6, 50.0)
    np.testing.assert_array_equal(la.cutout(x=(0, 1024), y=(0, 1024), z=(0, 20)), gerhard_source)


def test_random_boxes_every_mip_cross_chunk_and_shard_borders(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    rng = np.random.default_rng(7)
    # reference pyramid built level by level from the source, independently of neurolake's kernels
    refs = {0: gerhard_source.astype(np.float64)}
    for m in la.spec.mips[1:]:
        step = (m.step_xyz[2], m.step_xyz[1], m.step_xyz[0])
        prev = refs[m.mip - 1]
        refs[m.mip] = area_mean_reference(prev, step) if all(
            s % f == 0 for s, f in zip(prev.shape, step, strict=True)) else None
    checked = 0
    for mip in range(la.num_mips):
        ref = refs.get(mip)
        if ref is None:
            continue
        sz, sy, sx = la.shape(mip)
        for _ in range(6):
            x0, y0, z0 = (int(rng.integers(0, s - 1)) for s in (sx, sy, sz))
            x1 = int(rng.integers(x0 + 1, sx + 1))
            y1 = int(rng.integers(y0 + 1, sy + 1))
            z1 = int(rng.integers(z0 + 1, sz + 1))
            got = la.cutout(x=(x0, x1), y=(y0, y1), z=(z0, z1), mip=mip)
            assert got.shape == (z1 - z0, y1 - y0, x1 - x0)
            # mip 1+ computed from rounded previous levels: allow 1 grey level per level of rounding
            np.testing.assert_allclose(got, ref[z0:z1, y0:y1, x0:x1], atol=0 if mip <= 1 else 1)
            checked += 1
    # boxes straddling chunk (128) and shard (1024 x/y at mip 0; 16 in z) borders explicitly
    got = la.cutout(x=(120, 900), y=(127, 129), z=(14, 18), mip=0)
    np.testing.assert_array_equal(got, gerhard_source[14:18, 127:129, 120:900])
    assert checked >= 12


def test_mip1_is_2x2_area_mean_of_source(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    assert la.spec.mips[1].step_xyz == (2, 2, 1)
    mip1 = la.cutout(x=(0, 512), y=(0, 512), z=(0, 20), mip=1)
    np.testing.assert_array_equal(mip1, area_mean_reference(gerhard_source, (1, 2, 2)))


def test_pyramid_is_anisotropy_aware_and_stops_at_one_chunk(demo_lake):
    la = demo_lake.layer("gerhard2013", "image")
    steps = [m.step_xyz for m in la.spec.mips[1:]]
    # 4.6 nm in-plane vs 50 nm sections: xy halves until near isotropic (36.8 nm), then z too
    assert steps[:3] == [(2, 2, 1)] * 3 and steps[3] == (2, 2, 2)
    last = la.spec.mips[-1]
    assert all(s <= c for s, c in zip(last.shape_zyx, (16, 128, 128), strict=True))
    assert last.voxel_size_nm == pytest.approx((73.6, 73.6, 100.0))


def test_segmentation_mode_downsampling_on_gala(demo_lake):
    import h5py

    from tests.conftest import DATA

    with h5py.File(DATA / "gala_fibsem" / "train-gt.lzf.h5") as f:
        gt = f["stack"][()]
    seg = demo_lake.layer("gala_fibsem", "segmentation")
    assert seg.dtype == np.uint32 and seg.layer_type == "segmentation"
    np.testing.assert_array_equal(seg[:, :, :], gt.astype(np.uint32))
    mip1 = seg.cutout(x=(0, 100), y=(0, 50), z=(0, 25), mip=1)
    # independent reference: most frequent id per 2x2x2 window, ties to the first in z, y, x order
    w = gt.reshape(25, 2, 50, 2, 100, 2).transpose(0, 2, 4, 1, 3, 5).reshape(25, 50, 100, 8)
    ref = np.empty((25, 50, 100), dtype=np.int64)
    for idx in np.ndindex(25, 50, 100):
        vals, first, counts = np.unique(w[idx], return_index=True, return_counts=True)
        best = counts == counts.max()
        ref[idx] = vals[best][np.argmin(first[best])]
    np.testing.assert_array_equal(mip1, ref)
    # every id at mip 1 exists at mip 0 (mode never invents ids)
    assert set(np.unique(mip1)) <= set(np.unique(gt))


def test_getitem_matches_cutout_and_squeezes_ints(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    np.testing.assert_array_equal(la[3:5, 10:20, 30:40], gerhard_source[3:5, 10:20, 30:40])
    np.testing.assert_array_equal(la[10, :, 5:9], gerhard_source[10, :, 5:9])
    with pytest.raises(InvalidArgument, match="step"):
        la[0:4:2]


@pytest.mark.parametrize(
    ("box", "err", "text"),
    [
        (dict(x=(10, 5), y=(0, 1), z=(0, 1)), InvalidArgument, "empty or inverted"),
        (dict(x=(0, 2000), y=(0, 1), z=(0, 1)), OutOfBounds, "0:1024"),
        (dict(x=(-1, 5), y=(0, 1), z=(0, 1)), OutOfBounds, "outside"),
        (dict(x=(0, 5), y=(0, 1), z=(0, 21)), OutOfBounds, "z = 0:20"),
        (dict(x=("a", 5), y=(0, 1), z=(0, 1)), InvalidArgument, "whole numbers"),
        (dict(x=(0.5, 5), y=(0, 1), z=(0, 1)), InvalidArgument, "whole numbers"),
    ],
)
def test_bad_boxes(demo_lake, box, err, text):
    with pytest.raises(err, match=text):
        demo_lake.layer("gerhard2013", "image").cutout(**box)


def test_bad_mip_and_names(demo_lake):
    la = demo_lake.layer("gerhard2013", "image")
    with pytest.raises(InvalidArgument, match="mips 0..4"):
        la.cutout(x=(0, 1), y=(0, 1), z=(0, 1), mip=5)
    with pytest.raises(OutOfBounds):
        la.cutout(x=(0, 600), y=(0, 1), z=(0, 1), mip=1)
    with pytest.raises(NotFound, match="known: gala_fibsem, gerhard2013"):
        demo_lake.layer("nope", "image")
    with pytest.raises(NotFound, match="known: image, labels"):
        demo_lake.layer("gerhard2013", "nope")


def test_read_points(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    pts = np.array([[0, 0, 0], [19, 1023, 1023], [10, 500, 3]])
    np.testing.assert_array_equal(la.read_points(pts), gerhard_source[pts[:, 0], pts[:, 1], pts[:, 2]])
    with pytest.raises(OutOfBounds, match="row 1"):
        la.read_points(np.array([[0, 0, 0], [20, 0, 0]]))
