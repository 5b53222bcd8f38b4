"""Intensity correction (issue 16, step 1) on the real Gerhard et al. ssTEM stack.

Must show: an injected per-section brightness/contrast drift is removed — the section-to-section variation of
the per-section mean and of the per-section std is back within 5 % of the original's.

Criterion (precise): for a stack, take per-section mean m_z and std s_z and their coefficient of variation
across sections, cv(v) = std_z(v) / mean_z(v). The correction passes when cv_corrected ≤ 1.05 · cv_original for
both m and s, i.e. the corrected stack varies from section to section no more than the untouched original (5 %
slack). Per-section normalisation to a reference section also removes the original's own natural variation, so
the corrected cv is usually *below* the original's; the second check makes sure the sections are really brought
to the reference's brightness (not just flattened): undoing the reference section's own drift (which a correction
towards that reference cannot know), every section's mean/std equals the reference section's original mean/std
within 0.5 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolake.errors import AlreadyExists, InvalidArgument
from neurolake.process.intensity import (
    clahe_section,
    intensity_layer,
    normalize_section,
    normalize_sections,
    section_stats,
    summary,
    variation,
)
from neurolake.process.jobs import read_layer

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "gerhard2013" / "raw"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """20 × 256 × 256 uint8, the centre of the real stack."""
    import tifffile

    return np.stack([tifffile.imread(p)[384:640, 384:640] for p in sorted(RAW.glob("*.tif"))])


@pytest.fixture(scope="module")
def drift(crop):
    """Section z multiplied by a_z ∈ U[0.7, 1.3] and offset by b_z ∈ U[-30, 30] (seed 16), in float32 (no
    clipping)."""
    rng = np.random.default_rng(16)
    a = rng.uniform(0.7, 1.3, crop.shape[0])
    b = rng.uniform(-30, 30, crop.shape[0])
    x = crop.astype(np.float32) * a[:, None, None].astype(np.float32) + b[:, None, None].astype(np.float32)
    return x, a, b


def _check_removed(orig, corrected, ref, a, b, tol_ref=0.005):
    so, sc = summary(section_stats(orig)), summary(section_stats(corrected))
    for key in ("cv_mean", "cv_std"):
        assert sc[key] <= 1.05 * so[key], (key, sc[key], so[key])
    undone = (corrected.astype(np.float64) - b[ref]) / a[ref]
    ref_stats = section_stats(orig[ref])[0]
    for s in section_stats(undone):
        assert abs(s["mean"] / ref_stats["mean"] - 1) <= tol_ref, s
        assert abs(s["std"] / ref_stats["std"] - 1) <= tol_ref, s
    return so, sc


def test_meanstd_removes_float_drift(crop, drift):
    x, a, b = drift
    so, sd = summary(section_stats(crop)), summary(section_stats(x))
    assert sd["cv_mean"] > 10 * so["cv_mean"] and sd["cv_std"] > 5 * so["cv_std"]  # the drift is real
    out, stats = normalize_sections(x, "meanstd")
    assert out.dtype == np.float32 and out.shape == crop.shape
    ref = stats["reference"]
    means = [s["mean"] for s in section_stats(x)]
    assert means[ref] == sorted(means)[(len(means) - 1) // 2]  # default: the median-brightness section
    so, sc = _check_removed(crop, out, ref, a, b)
    # figures for the report: original 0.0126 / 0.0323, drifted 0.228 / 0.191, corrected ≈ 0
    assert sc["cv_mean"] < 1e-4 and sc["cv_std"] < 1e-4
    assert stats["summary"]["before"]["cv_mean"] == pytest.approx(sd["cv_mean"])


def test_percentile_removes_float_drift(crop, drift):
    x, a, b = drift
    out, stats = normalize_sections(x, "percentile", percentiles=(1, 99))
    so, sc = summary(section_stats(crop)), stats["summary"]["after"]
    # measured: cv_mean 0.0090 (original 0.0126), cv_std 0.0085 (original 0.0323)
    assert sc["cv_mean"] <= 1.05 * so["cv_mean"] and sc["cv_std"] <= 1.05 * so["cv_std"]
    # each section's 1st/99th percentiles land on the reference's
    ref = stats["reference"]
    p_ref = (stats["after"][ref]["p1"], stats["after"][ref]["p99"])
    for s in stats["after"]:
        assert s["p1"] == pytest.approx(p_ref[0], abs=0.05) and s["p99"] == pytest.approx(p_ref[1], abs=0.05)


def test_meanstd_removes_clipped_uint8_drift(crop, drift):
    """The same drift stored as uint8 (rounded, clipped to 0–255 as a microscope would): mean/std matching still
    passes; the output stays uint8."""
    x, a, b = drift
    x8 = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    out, stats = normalize_sections(x8, "meanstd")
    assert out.dtype == np.uint8
    so, sc = summary(section_stats(crop)), stats["summary"]["after"]
    assert sc["cv_mean"] <= 1.05 * so["cv_mean"] and sc["cv_std"] <= 1.05 * so["cv_std"]
    assert all(0 <= s["clipped_fraction"] < 0.01 for s in stats["sections"])


def test_reference_choices_and_section_functions(crop):
    out, stats = normalize_sections(crop, "meanstd", reference=3)
    assert stats["reference"] == 3 and np.array_equal(out[3], crop[3])  # the reference maps onto itself
    out, stats = normalize_sections(crop.astype(np.float32), "meanstd", reference=(100.0, 20.0))
    assert stats["reference"] == [100.0, 20.0]
    st = section_stats(out)
    assert all(s["mean"] == pytest.approx(100, abs=1e-3) and s["std"] == pytest.approx(20, rel=1e-4) for s in st)
    f, gain, offset = normalize_section(crop[0], (0.0, 1.0), "percentile", (5, 95))
    lo, hi = np.percentile(f, [5, 95])
    assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5) and gain > 0
    assert variation([{"mean": 1.0}, {"mean": 3.0}]) == pytest.approx(0.5)
    flat = np.full((2, 8, 8), 7, np.uint8)
    out, stats = normalize_sections(flat, "meanstd")  # constant sections: shifted only, no division by 0
    assert np.all(out == 7)


def test_clahe_raises_local_contrast(crop):
    out, stats = normalize_sections(crop[:3], "meanstd", clahe=True, clip_limit=0.02, kernel_size=32)
    assert out.dtype == np.uint8 and stats["clahe"] and stats["kernel_size"] == 32
    # CLAHE stretches contrast: every section ends with a larger std than before
    assert stats["summary"]["after"]["std_min"] > stats["summary"]["before"]["std_min"]
    e = clahe_section(crop[0], (0, 255), clip_limit=0.01)
    assert e.dtype == np.float32 and 0 <= e.min() and e.max() <= 1
    assert np.all(clahe_section(np.zeros((16, 16)), (0, 255)) == 0)


@pytest.mark.parametrize("kwargs,field", [
    ({"method": "zscore"}, "method"),
    ({"reference": 20}, "reference"),
    ({"reference": "middle"}, "reference"),
    ({"reference": (10.0, 0.0)}, "reference"),
    ({"percentiles": (99, 1)}, "percentiles"),
    ({"percentiles": (1, 101)}, "percentiles"),
    ({"clahe": True, "clip_limit": 0}, "clip_limit"),
    ({"clahe": True, "kernel_size": 1}, "kernel_size"),
])
def test_bad_arguments(crop, kwargs, field):
    with pytest.raises(InvalidArgument) as e:
        normalize_sections(crop[:2, :32, :32], **kwargs)
    assert e.value.detail["field"] == field


def test_bad_stacks():
    with pytest.raises(InvalidArgument):
        normalize_sections(np.zeros(5))
    with pytest.raises(InvalidArgument):
        normalize_sections(np.zeros((2, 4, 4), dtype=np.int32))
    with pytest.raises(InvalidArgument):
        section_stats(np.zeros((0, 4, 4)))


def test_intensity_layer_job(tmp_path, crop, drift):
    from neurolake import open_lake

    x, a, b = drift
    x8 = np.clip(np.rint(x[:6, :128, :128]), 0, 255).astype(np.uint8)
    np.save(tmp_path / "drift.npy", x8)
    lake = open_lake(tmp_path / "lake", create=True)
    lake.create_datastack("g", (4.6, 4.6, 50))
    lake.ingest(str(tmp_path / "drift.npy"), "g", "image", voxel_size=(4.6, 4.6, 50), layer_type="image",
                scheduler="threads")
    said, prog = [], []
    layer = intensity_layer(lake, "g", "image", "norm", method="meanstd", say=said.append,
                            progress=lambda *p: prog.append(p))
    assert layer.dtype == np.uint8
    got = read_layer(lake, "g", "norm")
    expect, _ = normalize_sections(x8, "meanstd")
    assert np.array_equal(got, expect)
    rec = layer.provenance["process.intensity"]
    assert rec["params"]["method"] == "meanstd" and len(rec["statistics"]["before"]) == 6
    assert rec["statistics"]["summary"]["after"]["cv_mean"] < rec["statistics"]["summary"]["before"]["cv_mean"]
    assert ("intensity", 6, 6) in prog and any("CV of mean" in s for s in said)
    # idempotent; a different derivation is refused before any work, unless overwrite
    said.clear()
    intensity_layer(lake, "g", "image", "norm", method="meanstd", say=said.append)
    assert any("already derived" in s for s in said)
    with pytest.raises(AlreadyExists, match="method"):
        intensity_layer(lake, "g", "image", "norm", method="percentile")
    layer = intensity_layer(lake, "g", "image", "norm", method="percentile", overwrite=True)
    assert layer.provenance["process.intensity"]["params"]["method"] == "percentile"
    with pytest.raises(InvalidArgument):
        intensity_layer(lake, "g", "image", "norm2", method="nope")
