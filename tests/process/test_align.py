"""Rigid section alignment (issue 16, step 2) on real EM (Gerhard et al. ssTEM).

Residual (precise): for section z, the recovered composed transform A_z (section z → reference frame) and the
true one are applied to a 16-px grid of points covering the section; the residual is the RMS distance (px)
between the two images of the grid. The true transform is taken *relative to the reference section* r:
the aligner cannot know the reference's own (injected) transform T_r, so it recovers T_r ∘ T_z⁻¹ (the frame of
the reference section as it was distorted) — that removes the one global rigid transform by which the recovered
frame differs from the original.

Two set-ups:

- *exact truth* (``test_recovers_known_transforms_on_real_em``): one real section, every z a copy moved by a known
  random rigid transform (rotation ±2.5°, shift ±20 px, about the centre, order-3 interpolation, taken from a
  larger crop so no black borders enter) plus independent Gaussian noise (σ = 10 grey levels) — neighbours share
  their content, so the true alignment is defined to well below a pixel;
- *the demo stack* (``test_demo_stack_distinct_sections``): the 20 real sections, each moved by a known random
  rigid transform. Neighbouring ssTEM sections are 50 nm apart (11 px at 4.6 nm) and their content differs (NCC
  0.3–0.45); a rigid neighbour-to-neighbour criterion finds offsets of several px between the *untouched*
  sections too (content flowing obliquely through the sections), so the recovered transforms are the injected ones
  composed with what the aligner finds in the untouched stack. The test checks exactly that ("equivariance"):
  the answer for the moved stack equals T_neighbour ∘ P⁰_z ∘ T_z⁻¹, with P⁰ the pairwise answer for the untouched
  stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolake.errors import AlreadyExists, Conflict, InvalidArgument
from neurolake.process.align import (
    align_layer,
    align_sections,
    compose,
    decompose,
    estimate_rigid,
    rigid_about_centre,
    table_matrices,
    transforms_path,
    warp_section,
)
from neurolake.process.jobs import read_layer

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "gerhard2013" / "raw"
PAD = 64  # the crop is taken from a region PAD px larger on each side: moved sections have no black borders


def _read(z: int | slice, n: int) -> np.ndarray:
    import tifffile

    files = sorted(RAW.glob("*.tif"))
    files = files[z] if isinstance(z, slice) else [files[z]]
    b = n // 2 + PAD
    return np.stack([tifffile.imread(p)[512 - b:512 + b, 512 - b:512 + b] for p in files]).astype(np.float32)


def _move(big: np.ndarray, rot: np.ndarray, shift: np.ndarray, n: int, noise: float = 0.0, seed: int = 0):
    """Each (padded) section moved by its rigid transform about the centre (order 3), cropped to n × n, uint8."""
    rng = np.random.default_rng(seed)
    out = np.stack([warp_section(s, rigid_about_centre(r, t[0], t[1], s.shape), order=3)
                    for s, r, t in zip(big, rot, shift, strict=True)])[:, PAD:PAD + n, PAD:PAD + n]
    if noise:
        out = out + rng.normal(0, noise, out.shape)
    truth = [rigid_about_centre(r, t[0], t[1], (n, n)) for r, t in zip(rot, shift, strict=True)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), truth


def _grid(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n:16, 0:n:16]
    return np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)]).astype(np.float64)


def residual(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """RMS distance (px) between a 16-px grid of an n × n section mapped by 3 × 3 matrices a and b."""
    g = _grid(n)
    return float(np.sqrt(np.mean(np.sum(((a @ g) - (b @ g))[:2] ** 2, axis=0))))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_recovers_known_transforms_on_real_em():
    n, nz = 384, 11
    rng = np.random.default_rng(16)
    rot, shift = rng.uniform(-2.5, 2.5, nz), rng.uniform(-20, 20, (nz, 2))
    big = np.repeat(_read(10, n), nz, axis=0)
    moved, truth = _move(big, rot, shift, n, noise=10.0, seed=16)
    aligned, table = align_sections(moved)
    ref = nz // 2
    assert list(table["z"]) == list(range(nz)) and table.loc[ref, "neighbour"] == -1
    got = table_matrices(table)
    res = [residual(got[z], truth[ref] @ np.linalg.inv(truth[z]), n) for z in range(nz) if z != ref]
    print("exact-truth residuals (px):", np.round(res, 3), "median", np.median(res), "max", max(res))
    assert np.median(res) < 0.5 and max(res) < 1.0
    # recovered angles: composed rotation = rot[ref] - rot[z]
    for z in range(nz):
        assert table.loc[z, "rotation_deg"] == pytest.approx(rot[ref] - rot[z], abs=0.05)
    # (b) the aligned sections equal the (moved) reference within interpolation error: in the interior each
    # correlates with the reference better than the reference does with itself shifted by 1 px
    m = slice(n // 8, n - n // 8)
    r0 = moved[ref].astype(np.float64)
    base = _corr(r0[m, m], np.roll(r0, 1, axis=1)[m, m])
    cs = [_corr(aligned[z].astype(np.float64)[m, m], r0[m, m]) for z in range(nz)]
    print("aligned vs reference correlation:", np.round(cs, 3), "1-px baseline", round(base, 3))
    assert min(cs) > max(base, 0.9)
    assert table["ncc"].drop(index=ref).min() > 0.8


def test_demo_stack_distinct_sections():
    n, nz = 512, 7
    rng = np.random.default_rng(7)
    rot, shift = rng.uniform(-2.5, 2.5, nz), rng.uniform(-20, 20, (nz, 2))
    big = _read(slice(6, 6 + nz), n)
    moved, truth = _move(big, rot, shift, n)
    untouched = np.clip(np.rint(big[:, PAD:PAD + n, PAD:PAD + n]), 0, 255).astype(np.uint8)
    aligned, table = align_sections(moved)
    aligned0, table0 = align_sections(untouched)
    ref = nz // 2
    a, a0 = table_matrices(table), table_matrices(table0)
    injected, pair_eq, comp_eq, natural = [], [], [], []
    for z in range(nz):
        if z == ref:
            continue
        nb = z - 1 if z > ref else z + 1
        p, p0 = np.linalg.inv(a[nb]) @ a[z], np.linalg.inv(a0[nb]) @ a0[z]
        pair_eq.append(residual(p, truth[nb] @ p0 @ np.linalg.inv(truth[z]), n))
        injected.append(residual(p, truth[nb] @ np.linalg.inv(truth[z]), n))
        comp_eq.append(residual(a[z], truth[ref] @ a0[z] @ np.linalg.inv(truth[z]), n))
        natural.append(residual(a0[z], np.eye(3), n))
    print("demo stack: residual vs injected only (px)", np.round(injected, 2), "median", np.median(injected))
    print("  untouched stack's own composed offsets (px)", np.round(natural, 2))
    print("  pairwise residual vs injected ∘ untouched (px)", np.round(pair_eq, 2), "median", np.median(pair_eq))
    print("  composed residual vs injected ∘ untouched (px)", np.round(comp_eq, 2), "median", np.median(comp_eq))
    # the injected transforms are recovered on top of the stack's own neighbour offsets (equivariance); this
    # is an order of magnitude tighter than the injected movement itself
    rel = [residual(truth[nb] @ np.linalg.inv(truth[z]), np.eye(3), n)
           for z in range(nz) if z != ref for nb in [z - 1 if z > ref else z + 1]]
    assert np.median(pair_eq) < 1.0 and np.median(pair_eq) < 0.1 * np.median(rel)
    # aligned(moved) ≈ aligned(untouched) seen through the reference's injected transform, near the reference
    m = slice(n // 8, n - n // 8)
    seen = warp_section(aligned0[ref + 1].astype(np.float32), truth[ref])
    assert _corr(aligned[ref + 1].astype(np.float64)[m, m], seen[m, m]) > 0.8


def test_elastic_refinement_removes_smooth_distortion():
    """Copies of one real section, each distorted by a smooth sinusoidal displacement field (amplitude 1.5–2.5 px,
    period 200 px) before a known rigid move, plus noise σ = 5: rigid alignment cannot undo the distortion,
    the optical-flow refinement brings every section to the reference within the noise floor (the mean absolute
    difference of two independent noise realisations, 5·√2·√(2/π) ≈ 5.6 grey levels)."""
    from scipy.ndimage import map_coordinates

    n, nz = 256, 5
    rng = np.random.default_rng(1)
    big = _read(10, n)[0]
    yy, xx = np.mgrid[0:big.shape[0], 0:big.shape[1]].astype(float)
    sections = []
    for _ in range(nz):
        ph, amp = rng.uniform(0, 2 * np.pi, 2), rng.uniform(1.5, 2.5, 2)
        dy, dx = amp[0] * np.sin(2 * np.pi * xx / 200 + ph[0]), amp[1] * np.sin(2 * np.pi * yy / 200 + ph[1])
        sections.append(map_coordinates(big, [yy + dy, xx + dx], order=3))
    moved, truth = _move(np.stack(sections).astype(np.float32), rng.uniform(-2, 2, nz),
                         rng.uniform(-10, 10, (nz, 2)), n, noise=5.0, seed=1)
    rigid, _ = align_sections(moved)
    refined, table = align_sections(moved, elastic=True)
    ref, m = nz // 2, slice(n // 8, n - n // 8)

    def mad(x, y):
        return float(np.mean(np.abs(x[m, m].astype(float) - y[m, m].astype(float))))
    before = [mad(rigid[z], rigid[ref]) for z in range(nz) if z != ref]
    after = [mad(refined[z], refined[ref]) for z in range(nz) if z != ref]
    print("elastic: MAD to the reference, rigid only", np.round(before, 2), "refined", np.round(after, 2))
    assert max(after) < 1.3 * 5 * np.sqrt(2) * np.sqrt(2 / np.pi) < min(before)
    assert table.loc[ref, "flow_rms_px"] == 0 and (table["flow_rms_px"].drop(index=ref) > 0.5).all()
    assert np.isnan(align_sections(moved[:2, :64, :64])[1]["flow_rms_px"]).all()
    with pytest.raises(InvalidArgument):
        align_sections(moved, elastic=True, attachment=0)


def test_helpers_roundtrip():
    m = rigid_about_centre(2.0, 3.5, -1.25, (100, 80))
    r, tx, ty = decompose(m, (100, 80))
    assert (r, tx, ty) == pytest.approx((2.0, 3.5, -1.25))
    c = compose([rigid_about_centre(1.0, 1, 0, (10, 10)), np.eye(3), rigid_about_centre(2.0, 0, 1, (10, 10))], 1)
    assert np.allclose(c[1], np.eye(3)) and decompose(c[2], (10, 10))[0] == pytest.approx(2.0)
    sec = _read(3, 128)[0, PAD:PAD + 128, PAD:PAD + 128].astype(np.uint8)
    assert warp_section(sec, np.eye(3)).dtype == np.uint8 and np.array_equal(warp_section(sec, np.eye(3)), sec)
    mat, q = estimate_rigid(sec, sec)
    assert residual(mat, np.eye(3), 128) < 0.05 and q > 0.99


def test_blank_section_is_bridged():
    """A lost section (blank) keeps its neighbour's frame; the next one is aligned across it."""
    n, nz = 192, 5
    rng = np.random.default_rng(5)
    rot, shift = rng.uniform(-2, 2, nz), rng.uniform(-8, 8, (nz, 2))
    moved, truth = _move(np.repeat(_read(4, n), nz, axis=0), rot, shift, n, noise=5.0, seed=5)
    moved[3] = 0
    aligned, table = align_sections(moved)
    assert table.loc[3, "neighbour"] == 2 and np.isnan(table.loc[3, "ncc"]) and table.loc[4, "neighbour"] == 2
    assert np.all(aligned[3] == 0)
    got = table_matrices(table)
    assert residual(got[4], truth[2] @ np.linalg.inv(truth[4]), n) < 0.5
    m, q = estimate_rigid(np.zeros((64, 64)), np.ones((64, 64)))
    assert np.array_equal(m, np.eye(3)) and np.isnan(q)


@pytest.mark.parametrize("kwargs,field", [
    ({"method": "orb"}, "method"),
    ({"reference": 5}, "reference"),
    ({"reference": -1}, "reference"),
    ({"max_rotation_deg": 90}, "max_rotation_deg"),
    ({"coarse_step_deg": 0}, "coarse_step_deg"),
    ({"upsample_factor": 0}, "upsample_factor"),
    ({"order": 2}, "order"),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(InvalidArgument) as e:
        align_sections(np.zeros((3, 64, 64), np.uint8), **kwargs)
    assert e.value.detail["field"] == field


def test_bad_sections():
    with pytest.raises(InvalidArgument):
        align_sections(np.zeros((64, 64)))
    with pytest.raises(InvalidArgument):
        estimate_rigid(np.zeros((64, 64)), np.zeros((64, 32)))
    with pytest.raises(InvalidArgument):
        estimate_rigid(np.zeros((16, 16)), np.zeros((16, 16)))


def test_align_layer_job(tmp_path):
    from neurolake import open_lake

    n, nz = 192, 5
    rng = np.random.default_rng(3)
    rot, shift = rng.uniform(-2, 2, nz), rng.uniform(-8, 8, (nz, 2))
    moved, truth = _move(np.repeat(_read(12, n), nz, axis=0), rot, shift, n, noise=5.0, seed=3)
    np.save(tmp_path / "moved.npy", moved)
    lake = open_lake(tmp_path / "lake", create=True)
    lake.create_datastack("g", (4.6, 4.6, 50))
    lake.ingest(str(tmp_path / "moved.npy"), "g", "image", voxel_size=(4.6, 4.6, 50), layer_type="image",
                scheduler="threads")
    said, prog = [], []
    layer = align_layer(lake, "g", "image", "aligned", say=said.append, progress=lambda *p: prog.append(p))
    got = read_layer(lake, "g", "aligned")
    assert got.dtype == np.uint8 and got.shape == moved.shape
    rec = layer.provenance["process.align"]
    assert rec["params"]["reference"] == 2 and len(rec["transforms"]) == nz and rec["feature_table"] == \
        "aligned_transforms"
    path = transforms_path(lake, "g", "aligned")
    assert path.is_file() and rec["transforms_table"] == str(path)
    import pandas as pd

    table = pd.read_parquet(path)
    mats = table_matrices(table)
    assert np.median([residual(mats[z], truth[2] @ np.linalg.inv(truth[z]), n) for z in (0, 1, 3, 4)]) < 0.5
    # SQL reaches the table through the feature registry
    df = lake.sql("SELECT z, rotation_deg, ncc FROM features.aligned_transforms ORDER BY z").df()
    assert list(df["z"]) == list(range(nz)) and df["rotation_deg"].tolist() == pytest.approx(
        table["rotation_deg"].tolist())
    assert any(p[0] == "align" and p[1] == p[2] == 2 * nz - 1 for p in prog) and any("NCC" in s for s in said)
    # idempotent: nothing recomputed; a lost table file is written again from the provenance record
    path.unlink()
    said.clear()
    align_layer(lake, "g", "image", "aligned", say=said.append)
    assert any("already derived" in s for s in said) and path.is_file()
    assert pd.read_parquet(path)["rotation_deg"].tolist() == pytest.approx(table["rotation_deg"].tolist())
    with pytest.raises(AlreadyExists, match="reference"):
        align_layer(lake, "g", "image", "aligned", reference=0)
    layer = align_layer(lake, "g", "image", "aligned", reference=0, overwrite=True)
    assert lake.features.get("aligned_transforms", "g")["row_count"] == nz
    assert lake.sql("SELECT m02 FROM features.aligned_transforms WHERE z = 0").df()["m02"].iloc[0] == \
        pytest.approx(0.0)
    # a published transforms table is immutable: overwriting the alignment is refused before any work
    lake.features.set_status("aligned_transforms", "published", "g")
    with pytest.raises(Conflict, match="published"):
        align_layer(lake, "g", "image", "aligned", reference=1, overwrite=True)
    assert lake.layer("g", "aligned").provenance["process.align"]["params"]["reference"] == 0
    # a feature table of the output's name that describes something else is not taken over
    lake.features.register(name="other_transforms", datastack="g", location=str(path))
    with pytest.raises(AlreadyExists, match="other_transforms"):
        align_layer(lake, "g", "image", "other")
    el = align_layer(lake, "g", "image", "elastic", elastic=True, attachment=10.0)
    assert el.provenance["process.align"]["params"]["elastic"] is True
    assert lake.sql("SELECT max(flow_rms_px) AS f FROM features.elastic_transforms").df()["f"].iloc[0] > 0
    with pytest.raises(InvalidArgument):
        align_layer(lake, "g", "image", "x", reference=nz)
    with pytest.raises(InvalidArgument):
        align_layer(lake, "g", "image", "x", method="sift")


def test_recovers_known_transforms_of_every_demo_section():
    """Issue 16: each of the 20 distinct demo sections, moved by a known random rigid transform (order-3
    interpolation), is registered back onto itself: the recovered transform matches the injected one to < 0.5 px
    RMS over the section (median over sections). (Aligning *neighbours* cannot be held to this bar on this stack:
    see test_demo_stack_distinct_sections and docs/processing.md.)"""
    n = 384
    big = _read(slice(0, 20), n)
    rng = np.random.default_rng(20)
    rot, shift = rng.uniform(-2.5, 2.5, 20), rng.uniform(-20, 20, (20, 2))
    moved, truth = _move(big, rot, shift, n)
    fixed = np.clip(np.rint(big[:, PAD:PAD + n, PAD:PAD + n]), 0, 255).astype(np.uint8)
    res = []
    for z in range(20):
        got, ncc = estimate_rigid(fixed[z], moved[z])
        res.append(residual(got, np.linalg.inv(truth[z]), n))  # truth maps original → moved; got moved → original
    print("per-section recovery residuals (px):", np.round(res, 3), "median", round(float(np.median(res)), 3))
    assert np.median(res) < 0.5 and max(res) < 1.0
