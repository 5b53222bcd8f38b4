"""Segmentation evaluation (issue 16, step 5): VI split/merge parts, adapted Rand error, split/merge counts.

Synthetic cases with a known answer, then the real gala FIB-SEM ground truth (data/gala_fibsem, 50 × 100 × 200,
88 labels, 0 = boundary) against itself relabelled, with real objects split or merged, and cross-checked against
scikit-image's own functions on the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolake.errors import InvalidArgument
from neurolake.process.evaluate import evaluate, evaluate_layers

ROOT = Path(__file__).resolve().parents[2]
GALA = ROOT / "data" / "gala_fibsem"


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    import h5py

    with h5py.File(GALA / "train-gt.lzf.h5", "r") as f:
        return f["stack"][:]


def _two_objects() -> np.ndarray:
    t = np.ones((4, 20, 20), np.int32)
    t[:, :, 10:] = 2
    return t


def test_identical_is_perfect():
    t = _two_objects()
    r = evaluate(t, t)
    assert r["vi"] == {"split": 0.0, "merge": 0.0, "total": 0.0}
    assert r["adapted_rand"]["error"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"] == {"splits": 0, "merges": 0, "split_objects": 0, "merged_segments": 0}
    assert r["worst_splits"] == [] and r["worst_merges"] == []
    assert r["voxels"] == t.size and r["objects"] == {"truth": 2, "segments": 2}


def test_known_split():
    t = _two_objects()
    s = t.copy()
    s[:, :10, :10] = 7  # object 1 cut into two halves: 1 and 7
    r = evaluate(s, t)
    # H(seg | truth): half of the voxels (object 1) carry 1 bit → 0.5 bit
    assert r["vi"]["split"] == pytest.approx(0.5)
    assert r["vi"]["merge"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"]["splits"] == 1 and r["counts"]["merges"] == 0
    assert r["adapted_rand"]["precision"] == pytest.approx(1.0) and r["adapted_rand"]["recall"] < 1.0
    assert r["adapted_rand"]["error"] > 0
    assert r["worst_splits"][0]["truth_id"] == 1 and sorted(r["worst_splits"][0]["segments"]) == [1, 7]


def test_known_merge():
    t = _two_objects()
    s = np.ones_like(t)  # both objects in one segment
    r = evaluate(s, t)
    assert r["vi"]["merge"] == pytest.approx(1.0)
    assert r["vi"]["split"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"]["merges"] == 1 and r["counts"]["splits"] == 0
    assert r["adapted_rand"]["recall"] == pytest.approx(1.0) and r["adapted_rand"]["precision"] < 1.0
    assert r["worst_merges"][0]["segment_id"] == 1 and sorted(r["worst_merges"][0]["truth"]) == [1, 2]


def test_small_spill_is_not_counted_but_measured():
    t = _two_objects()
    s = t.copy()
    s[0, 0, 10:12] = 1  # 2 voxels of object 2 labelled as segment 1: boundary disagreement, not a merge
    r = evaluate(s, t, min_overlap_voxels=10)
    assert r["counts"]["merges"] == 0 and r["counts"]["splits"] == 0
    assert r["vi"]["merge"] > 0 and r["vi"]["split"] > 0
    r1 = evaluate(s, t, min_overlap_voxels=1, min_overlap_fraction=0.0)
    assert r1["counts"]["merges"] == 1 and r1["counts"]["splits"] == 1


def test_truth_zero_ignored_or_not():
    t = _two_objects()
    t[:, :, 9:11] = 0  # a boundary band
    s = _two_objects()  # the segmentation fills the band
    assert evaluate(s, t)["vi"]["total"] == pytest.approx(0.0, abs=1e-12)
    r = evaluate(s, t, ignore_truth_zero=False)
    assert r["vi"]["merge"] > 0  # the band (truth 0) is split between the two segments → merged with them


def test_gala_truth_vs_itself_relabelled(gt):
    rng = np.random.default_rng(16)
    ids = np.unique(gt)
    new = rng.choice(2**40, size=len(ids), replace=False).astype(np.uint64) + 1
    new[ids == 0] = 0
    relab = new[np.searchsorted(ids, gt)]
    r = evaluate(relab, gt)
    assert r["vi"]["total"] == pytest.approx(0.0, abs=1e-12)
    assert r["adapted_rand"]["error"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"]["splits"] == 0 and r["counts"]["merges"] == 0
    assert r["objects"]["truth"] == len(ids) - 1 == r["objects"]["segments"]


def test_gala_real_split_and_merge_match_skimage(gt):
    from skimage.metrics import adapted_rand_error, variation_of_information

    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    big = ids[np.argsort(-counts)[:2]]
    # split the largest object at its median z
    split = gt.astype(np.int64).copy()
    zs = np.nonzero(gt == big[0])[0]
    zmid = int(np.median(zs))
    part = (gt == big[0]) & (np.arange(gt.shape[0])[:, None, None] >= zmid)
    split[part] = 10_000
    r = evaluate(split, gt)
    assert r["vi"]["split"] > 0 and r["vi"]["merge"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"]["splits"] == 1 and r["counts"]["merges"] == 0
    assert r["worst_splits"][0]["truth_id"] == int(big[0])
    sk = variation_of_information(gt, split, ignore_labels=[0])
    assert (r["vi"]["split"], r["vi"]["merge"]) == pytest.approx((sk[0], sk[1]), abs=1e-9)
    assert r["adapted_rand"]["error"] == pytest.approx(adapted_rand_error(gt, split)[0], abs=1e-12)
    # merge the two largest objects
    merged = np.where(gt == big[1], big[0], gt)
    r = evaluate(merged, gt)
    assert r["vi"]["merge"] > 0 and r["vi"]["split"] == pytest.approx(0.0, abs=1e-12)
    assert r["counts"]["merges"] == 1 and r["counts"]["splits"] == 0
    assert sorted(r["worst_merges"][0]["truth"]) == sorted(int(b) for b in big)
    sk = variation_of_information(gt, merged, ignore_labels=[0])
    assert (r["vi"]["split"], r["vi"]["merge"]) == pytest.approx((sk[0], sk[1]), abs=1e-9)


@pytest.mark.parametrize("seg, truth, field", [
    (np.ones((2, 3, 4), int), np.ones((2, 3, 5), int), "truth"),
    (np.ones((3, 4), int), np.ones((3, 4), int), "segmentation"),
    (np.ones((2, 3, 4), float), np.ones((2, 3, 4), int), "segmentation"),
    (np.ones((2, 3, 4), int), np.zeros((2, 3, 4), int), "truth"),
])
def test_bad_input(seg, truth, field):
    with pytest.raises(InvalidArgument) as e:
        evaluate(seg, truth)
    assert e.value.detail.get("field") == field


def test_bad_overlap_parameters():
    t = _two_objects()
    with pytest.raises(InvalidArgument, match="min_overlap_voxels"):
        evaluate(t, t, min_overlap_voxels=0)
    with pytest.raises(InvalidArgument, match="min_overlap_fraction"):
        evaluate(t, t, min_overlap_fraction=1.5)


def test_evaluate_layers_records_provenance(tmp_path, gt):
    from neurolake import open_lake
    from neurolake.provenance import layer_identity

    crop = gt[:10, :64, :64].astype(np.uint32)
    seg = crop.copy()
    seg[seg == 0] = 1  # fill the boundary voxels (ignored) …
    ids, counts = np.unique(crop[crop > 0], return_counts=True)
    seg[crop == ids[np.argmax(counts)]] = 0  # … and make the largest truth object background: one more "segment"
    paths = {}
    for name, arr in (("truth", crop), ("seg", seg), ("short", crop[:5]), ("image", (crop % 256).astype(np.uint8))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    lake = open_lake(tmp_path / "lake", create=True)
    lake.create_datastack("g", (8, 8, 8))
    for name in ("truth", "seg", "short"):
        lake.ingest(str(paths[name]), "g", name, voxel_size=(8, 8, 8), layer_type="segmentation",
                    scheduler="threads")
    lake.ingest(str(paths["image"]), "g", "image", voxel_size=(8, 8, 8), layer_type="image", scheduler="threads")
    said = []
    entry = evaluate_layers(lake, "g", "seg", "truth", say=said.append)
    expected = evaluate(seg, crop)
    assert entry["vi"] == pytest.approx(expected["vi"]) and entry["counts"] == expected["counts"]
    assert entry["action"] == "process.evaluate" and entry["code"]
    assert entry["truth"]["identity"] == layer_identity(lake, lake.layer("g", "truth"))
    assert entry["segmentation"]["identity"] == layer_identity(lake, lake.layer("g", "seg"))
    assert said and "VI" in said[0]
    prov = lake.layer("g", "seg").provenance
    assert len(prov["evaluations"]) == 1 and prov["evaluations"][0]["vi"] == pytest.approx(expected["vi"])
    assert prov["action"] == "ingest" and prov["inputs"]  # the ingest record is kept beside the evaluations
    # again against the same truth: replaced, not appended; against another truth: added
    evaluate_layers(lake, "g", "seg", "truth")
    assert len(lake.layer("g", "seg").provenance["evaluations"]) == 1
    evaluate_layers(lake, "g", "seg", "seg")
    evs = lake.layer("g", "seg").provenance["evaluations"]
    assert len(evs) == 2 and evs[1]["vi"]["total"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InvalidArgument) as e:
        evaluate_layers(lake, "g", "seg", "short")
    assert e.value.detail.get("field") == "truth_layer"
    with pytest.raises(InvalidArgument) as e:
        evaluate_layers(lake, "g", "image", "truth")
    assert e.value.detail.get("field") == "segmentation_layer"
