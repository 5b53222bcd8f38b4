"""Rigid section alignment (issue 16, step 2): rotation + translation of every section against its neighbour,
composed along z into the frame of a reference section.

Pairwise estimation (:func:`estimate_rigid`), for a fixed section ``f`` and its neighbour ``m`` (both (y, x)):

1. *coarse rotation*: at half resolution (:func:`skimage.transform.rescale` with anti-aliasing), for each angle
   θ on a grid of ``coarse_step_deg`` over ``[-max_rotation_deg, max_rotation_deg]``, ``m`` is rotated by θ about
   its centre, the translation is found by phase correlation (:func:`skimage.registration.phase_cross_correlation`;
   Kuglin & Hines 1975) and the pair is scored by the normalised cross-correlation (NCC) of the overlap; the best
   θ wins;
2. *refinement* at full resolution: θ is refined by a bounded scalar search (:func:`scipy.optimize.minimize_scalar`,
   Brent's method, tolerance 0.001°) within one grid step of the coarse angle, maximising the NCC, with the
   translation at every θ by phase correlation upsampled ``upsample_factor`` × (Guizar-Sicairos et al. 2008,
   subpixel) — so rotation and translation are both fitted to maximise the same similarity.

NCC is computed over the central region (a ``margin`` fraction of the size is left out on each side) of pixels
that the warped neighbour covers. The final NCC is the match *quality* (1 = identical; neighbouring ssTEM sections
50 nm apart typically give 0.3–0.5).

Why not the alternatives scikit-image offers: rotation from phase correlation of the log-polar transformed
Fourier magnitude spectra (the gallery's "Using Polar and Log-Polar Transformations for Registration") fails on
EM sections, whose spectra are nearly isotropic — on moved sections of the Gerhard et al. stack (512 × 512) it
returned rotations off by 22° and 40° for 2 of 7 neighbour pairs and by 0.1–2° for the others; SIFT features of
neighbouring sections rarely match (the content changes over 50 nm): 3–9 RANSAC inliers of 70–80 matches per
pair, and the Euclidean fit then failed. Maximising the image similarity directly uses every pixel: 0.04 px RMS
on moved copies of one real section with noise (tests/process/test_align.py).

Composition: pairwise transforms map each section's coordinates into its neighbour's towards the reference
section (default the middle one, ``nz // 2``); composing them gives, per section, the matrix ``A_z`` (3 × 3,
homogeneous (x, y, 1), pixels) mapping section z's coordinates into the reference frame. Each section is warped
with :func:`skimage.transform.warp` (``inverse_map = A_z⁻¹``, order 1 (bilinear), 0 outside). Errors of the pairwise
estimates add up along z (a random walk) — the transforms of sections far from the reference are the least sure.

Optional elastic refinement (:func:`refine_elastic`): dense TV-L1 optical flow between each rigidly aligned section
and its refined neighbour (scikit-image), smoothed, applied as a warp.

Arrays are numpy (z, y, x); transforms use skimage's (x, y) point convention. :func:`estimate_rigid` and
:func:`warp_section` work on one (y, x) section (pair), so pairs and sections can be processed in parallel.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

ACTION = "process.align"
METHODS = ("ncc",)
TABLE_COLUMNS = ("z", "neighbour", "rotation_deg", "tx_px", "ty_px", "pair_rotation_deg", "pair_tx_px",
                 "pair_ty_px", "m00", "m01", "m02", "m10", "m11", "m12", "ncc", "flow_rms_px", "flow_max_px")


# -- transforms -------------------------------------------------------------------------------------------------

def rigid_about_centre(rotation_deg: float, tx: float, ty: float, shape_yx: Sequence[int]) -> np.ndarray:
    """The 3 × 3 matrix (homogeneous (x, y, 1), px) rotating by ``rotation_deg`` (counter-clockwise in (x, y),
    i.e. from +x towards +y) about the centre ``((nx-1)/2, (ny-1)/2)`` of a (y, x) image of ``shape_yx``, then
    shifting by ``(tx, ty)``."""
    cy, cx = (shape_yx[0] - 1) / 2, (shape_yx[1] - 1) / 2
    t = np.deg2rad(rotation_deg)
    c, s = np.cos(t), np.sin(t)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1.0]]) @ rot @ np.array([[1, 0, -cx], [0, 1, -cy],
                                                                                        [0, 0, 1.0]])


def decompose(matrix: np.ndarray, shape_yx: Sequence[int]) -> tuple[float, float, float]:
    """``(rotation_deg, tx, ty)`` of a rigid 3 × 3 matrix as :func:`rigid_about_centre` builds it: the rotation
    and the shift of the image centre (px)."""
    m = np.asarray(matrix, dtype=np.float64)
    rot = float(np.rad2deg(np.arctan2(m[1, 0], m[0, 0])))
    cy, cx = (shape_yx[0] - 1) / 2, (shape_yx[1] - 1) / 2
    x, y, _ = m @ np.array([cx, cy, 1.0])
    return rot, float(x - cx), float(y - cy)


def warp_section(section_yx: np.ndarray, matrix: np.ndarray, order: int = 1) -> np.ndarray:
    """Section warped into the frame that ``matrix`` (3 × 3, section coordinates (x, y) → frame coordinates) maps
    it to: ``out(q) = section(matrix⁻¹ q)``, interpolation ``order`` (1 = bilinear), 0 outside. Same shape and
    dtype as the input (integers rounded)."""
    from skimage.transform import EuclideanTransform, warp

    a = np.asarray(section_yx)
    inv = EuclideanTransform(matrix=np.linalg.inv(np.asarray(matrix, dtype=np.float64)))
    out = warp(a.astype(np.float32, copy=False), inv, order=order, mode="constant", cval=0.0,
               preserve_range=True)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(a.dtype)
    return out.astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32)


# -- pairwise estimation ---------------------------------------------------------------------------------------

def _ncc_at(fixed: np.ndarray, moving: np.ndarray, rotation_deg: float, upsample: int, margin: int
            ) -> tuple[np.ndarray, float]:
    """(matrix moving → fixed, NCC) for rotation ``rotation_deg`` with the translation by phase correlation."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import EuclideanTransform, warp

    shape = fixed.shape
    rot = rigid_about_centre(rotation_deg, 0.0, 0.0, shape)
    mr = warp(moving, EuclideanTransform(matrix=np.linalg.inv(rot)), order=1, cval=0.0, preserve_range=True)
    inner = (slice(margin, shape[0] - margin), slice(margin, shape[1] - margin))
    with warnings.catch_warnings():  # an almost empty window (far rotations of small sections) is scored below
        warnings.filterwarnings("ignore", message="Could not determine RMS error")
        shift, _, _ = phase_cross_correlation(fixed[inner], mr[inner], upsample_factor=upsample,
                                              normalization=None)
    # phase_cross_correlation's shift (dy, dx) registers mr onto fixed: fixed(p) ≈ mr(p - shift)
    matrix = rigid_about_centre(rotation_deg, float(shift[1]), float(shift[0]), shape)
    w = warp(moving, EuclideanTransform(matrix=np.linalg.inv(matrix)), order=1, cval=np.nan, preserve_range=True)
    a, b = fixed[inner], w[inner]
    ok = np.isfinite(b)
    if ok.sum() < 16:
        return matrix, -1.0
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return matrix, float((a * b).sum() / den) if den > 0 else 0.0


def estimate_rigid(fixed_yx: np.ndarray, moving_yx: np.ndarray, *, max_rotation_deg: float = 5.0,
                   coarse_step_deg: float = 0.5, upsample_factor: int = 50, margin: float = 0.125
                   ) -> tuple[np.ndarray, float]:
    """The rigid transform aligning ``moving_yx`` onto ``fixed_yx`` (two (y, x) sections of the same shape) by the
    method of the module docstring. Returns ``(matrix, ncc)``: the 3 × 3 matrix (homogeneous (x, y, 1), px) mapping
    moving coordinates to fixed coordinates, and the NCC of the aligned pair (match quality, −1 … 1); for a blank
    (constant) section the identity and NaN.

    ``max_rotation_deg``: the rotations searched, ±; ``coarse_step_deg``: the coarse grid step; ``upsample_factor``:
    phase correlation subpixel precision 1/upsample px; ``margin``: fraction of each side left out of the
    similarity. Raises InvalidArgument.
    """
    from scipy.optimize import minimize_scalar
    from skimage.transform import rescale

    f = _section(fixed_yx, "fixed")
    m = _section(moving_yx, "moving")
    if f.shape != m.shape:
        raise InvalidArgument(f"sections differ in shape: fixed {list(f.shape)}, moving {list(m.shape)}",
                              field="moving", value=list(m.shape))
    _check_params(max_rotation_deg, coarse_step_deg, upsample_factor, margin)
    if min(f.shape) < 32:
        raise InvalidArgument(f"sections of shape {list(f.shape)} are too small to align (at least 32 × 32 px)",
                              field="shape", value=list(f.shape))
    if f.min() == f.max() or m.min() == m.max():  # a blank section: nothing to align on
        return np.eye(3), float("nan")
    f2 = rescale(f, 0.5, anti_aliasing=True, preserve_range=True)
    m2 = rescale(m, 0.5, anti_aliasing=True, preserve_range=True)
    n = int(np.floor(max_rotation_deg / coarse_step_deg))
    angles = np.arange(-n, n + 1) * coarse_step_deg
    scores = [_ncc_at(f2, m2, float(a), 1, int(margin * min(f2.shape)))[1] for a in angles]
    best = float(angles[int(np.argmax(scores))])
    mg = int(margin * min(f.shape))
    lo, hi = max(best - coarse_step_deg, -max_rotation_deg), min(best + coarse_step_deg, max_rotation_deg)
    if hi - lo > 1e-9:
        r = minimize_scalar(lambda d: -_ncc_at(f, m, float(d), 20, mg)[1], bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-3})
        best = float(r.x)
    return _ncc_at(f, m, best, upsample_factor, mg)


# -- the stack -------------------------------------------------------------------------------------------------

def compose(pairwise: Sequence[np.ndarray], reference: int, neighbours: Sequence[int] | None = None
            ) -> list[np.ndarray]:
    """Compose pairwise matrices into one per section. ``pairwise[z]`` maps section z's coordinates into those of
    ``neighbours[z]`` — a section closer to ``reference`` (default: z − 1 above it, z + 1 below it); ignored for
    the reference itself. Returns ``A_z`` mapping section z into the reference frame (``A_reference`` = I)."""
    nz = len(pairwise)
    if neighbours is None:
        neighbours = [z - 1 if z > reference else z + 1 for z in range(nz)]
    out: list[np.ndarray] = [np.eye(3)] * nz
    for z in sorted(range(nz), key=lambda z: abs(z - reference)):
        if z != reference:
            out[z] = out[neighbours[z]] @ pairwise[z]
    return out


def refine_elastic(aligned_zyx: np.ndarray, reference: int, *, attachment: float = 15.0, smooth_sigma: float = 4.0,
                   progress: Callable[[str, int, int], None] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Optional elastic refinement of a rigidly aligned (z, y, x) stack by optical flow: from ``reference``
    outwards, each section is warped onto its already refined neighbour by the dense TV-L1 optical flow
    (:func:`skimage.registration.optical_flow_tvl1`; Zach, Pock & Bischof 2007, Wedel et al. 2009) between them,
    smoothed by a Gaussian of ``smooth_sigma`` px (0: none) so it stays a smooth, elastic deformation;
    ``attachment``: TV-L1's data attachment weight (smaller = smoother flow) on intensities scaled to [0, 1]
    (integers by their dtype's maximum, floats by the stack's range).

    Returns ``(refined, flows)``: the refined stack (input shape and dtype) and per section ``{"z", "flow_rms_px",
    "flow_max_px"}`` (RMS / max length of the applied displacement, px; 0 for the reference).

    Caveat: neighbouring ssTEM sections differ in content; the flow then also "straightens" genuinely oblique
    structures (it matches neighbours, not the truth). Use it for section distortions (compression, lens
    distortion, folds) and check ``flow_rms_px``. Raises InvalidArgument.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.registration import optical_flow_tvl1
    from skimage.transform import warp

    a = np.asarray(aligned_zyx)
    if a.ndim != 3 or a.size == 0:
        raise InvalidArgument(f"stack must be a non-empty (z, y, x) array; got shape {list(a.shape)}",
                              field="stack", value=list(a.shape))
    nz = a.shape[0]
    ref = _check_reference(reference, nz)
    _check_elastic(attachment, smooth_sigma)
    if np.issubdtype(a.dtype, np.integer):
        lo, scale = 0.0, float(np.iinfo(a.dtype).max)
    else:
        lo, scale = float(a.min()), float(a.max() - a.min()) or 1.0
    out = a.astype(np.float32)
    flows = [{"z": z, "flow_rms_px": 0.0, "flow_max_px": 0.0} for z in range(nz)]
    rows, cols = np.mgrid[0:a.shape[1], 0:a.shape[2]].astype(np.float32)
    order = [*range(ref + 1, nz), *range(ref - 1, -1, -1)]
    for i, z in enumerate(order):
        nb = z - 1 if z > ref else z + 1
        moving = (a[z].astype(np.float32) - lo) / scale
        if a[z].min() == a[z].max() or a[nb].min() == a[nb].max():  # blank: nothing to match
            out[z] = a[z]
        else:
            v, u = optical_flow_tvl1((out[nb] - lo) / scale, moving, attachment=float(attachment))
            if smooth_sigma > 0:
                v, u = gaussian_filter(v, smooth_sigma), gaussian_filter(u, smooth_sigma)
            out[z] = warp(a[z].astype(np.float32), np.array([rows + v, cols + u]), order=1, mode="constant",
                          cval=0.0, preserve_range=True)
            length = np.hypot(u, v)
            flows[z] = {"z": z, "flow_rms_px": float(np.sqrt(np.mean(length ** 2))),
                        "flow_max_px": float(length.max())}
        if progress:
            progress("elastic", i + 1, len(order))
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(a.dtype), flows
    return out.astype(a.dtype), flows


def align_sections(stack_zyx: np.ndarray, reference: int | None = None, *, method: str = "ncc",
                   max_rotation_deg: float = 5.0, coarse_step_deg: float = 0.5, upsample_factor: int = 50,
                   margin: float = 0.125, order: int = 1, elastic: bool = False, attachment: float = 15.0,
                   smooth_sigma: float = 4.0, progress: Callable[[str, int, int], None] | None = None,
                   client: Any = None):
    """Align every section of a (z, y, x) stack to its neighbour and warp all into the frame of ``reference``
    (default ``nz // 2``). Parameters as :func:`estimate_rigid`; ``order``: interpolation of the final warp;
    ``client``: a ``distributed.Client`` to run the neighbour pairs and the warps on in parallel (one task per
    pair / section; :func:`neurolake.jobs.run_tasks`), else they run here one after the other; ``elastic``: then
    refine by optical flow (:func:`refine_elastic` with ``attachment``, ``smooth_sigma``; sequential).

    Returns ``(aligned, table)``: the aligned stack (shape and dtype of the input; 0 where a section does not reach)
    and a pandas DataFrame, one row per section, columns :data:`TABLE_COLUMNS`: ``z``; ``neighbour`` (the section
    it was aligned to: the nearest non-blank one towards the reference; −1 for the reference; a blank (constant)
    section keeps its neighbour's frame, with ``ncc`` NaN); ``rotation_deg``, ``tx_px``, ``ty_px`` of the
    composed transform (rotation about the section centre, shift of the centre, px, into the reference frame); the
    same for the pairwise transform (``pair_*``); ``m00 … m12`` the composed 2 × 3 matrix (x, y) → reference
    (x, y); ``ncc`` the pairwise match quality (NaN for the reference); ``flow_rms_px``, ``flow_max_px`` the
    elastic displacement applied after the rigid transform (NaN without ``elastic``). Raises InvalidArgument.
    """
    import pandas as pd

    a = np.asarray(stack_zyx)
    if a.ndim != 3 or a.size == 0:
        raise InvalidArgument(f"stack must be a non-empty (z, y, x) array; got shape {list(a.shape)}",
                              field="stack", value=list(a.shape))
    if method not in METHODS:
        raise InvalidArgument(f"method {method!r} is not allowed; use one of {', '.join(METHODS)}", field="method",
                              value=method, allowed=list(METHODS))
    _check_params(max_rotation_deg, coarse_step_deg, upsample_factor, margin)
    nz = a.shape[0]
    ref = _check_reference(reference, nz)
    if order not in (0, 1, 3):
        raise InvalidArgument(f"order {order!r} is not allowed; use 0, 1 or 3", field="order", value=order,
                              allowed=[0, 1, 3])
    if elastic:
        _check_elastic(attachment, smooth_sigma)
    pairwise: list[np.ndarray] = [np.eye(3)] * nz
    quality = [float("nan")] * nz
    neighbour = [-1] * nz
    steps = 2 * nz - 1
    done = [0]
    kw = {"max_rotation_deg": max_rotation_deg, "coarse_step_deg": coarse_step_deg,
          "upsample_factor": upsample_factor, "margin": margin}

    def tick(_=None) -> None:
        done[0] += 1
        if progress:
            progress("align", done[0], steps)

    # a blank (constant) section — a lost section replaced by an empty image — cannot be aligned: it keeps its
    # neighbour's frame (identity, ncc NaN), and the next section is aligned to the nearest non-blank one
    blank = [bool(a[z].min() == a[z].max()) for z in range(nz)]
    pairs = []
    for z in [*range(ref + 1, nz), *range(ref - 1, -1, -1)]:
        step = -1 if z > ref else 1
        nb = next((k for k in range(z + step, ref + step, step) if not blank[k]), None)
        if blank[z] or nb is None:
            neighbour[z] = z + step
            tick()
        else:
            pairs.append((z, nb))
    if client is None:
        results = []
        for z, nb in pairs:
            results.append(_pair_task(z, nb, a[nb], a[z], kw))
            tick()
    else:
        from neurolake.jobs import run_tasks

        results = run_tasks(client, _pair_task, [(z, nb, a[nb], a[z], kw) for z, nb in pairs], on_done=tick)
    for z, nb, matrix, q in results:
        pairwise[z], quality[z], neighbour[z] = matrix, q, nb
    composed = compose(pairwise, ref, neighbour)
    out = np.empty_like(a)
    out[ref] = a[ref]
    todo = [(z, a[z], composed[z], order) for z in range(nz) if z != ref]
    if client is None:
        warped = []
        for args in todo:
            warped.append(_warp_task(*args))
            tick()
    else:
        from neurolake.jobs import run_tasks

        warped = run_tasks(client, _warp_task, todo, on_done=tick)
    for z, w in warped:
        out[z] = w
    tick()
    flows = [{"flow_rms_px": float("nan"), "flow_max_px": float("nan")}] * nz
    if elastic:
        out, flows = refine_elastic(out, ref, attachment=attachment, smooth_sigma=smooth_sigma, progress=progress)
    rows = []
    for z in range(nz):
        r, tx, ty = decompose(composed[z], a.shape[1:])
        pr, ptx, pty = decompose(pairwise[z], a.shape[1:])
        c = composed[z]
        rows.append({"z": z, "neighbour": neighbour[z], "rotation_deg": r, "tx_px": tx, "ty_px": ty,
                     "pair_rotation_deg": pr, "pair_tx_px": ptx, "pair_ty_px": pty, "m00": c[0, 0], "m01": c[0, 1],
                     "m02": c[0, 2], "m10": c[1, 0], "m11": c[1, 1], "m12": c[1, 2], "ncc": quality[z],
                     "flow_rms_px": flows[z]["flow_rms_px"], "flow_max_px": flows[z]["flow_max_px"]})
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["z"] = table["z"].astype("int64")
    table["neighbour"] = table["neighbour"].astype("int64")
    return out, table


def _pair_task(z: int, nb: int, fixed: np.ndarray, moving: np.ndarray, kw: dict[str, Any]):
    matrix, q = estimate_rigid(fixed, moving, **kw)
    return z, nb, matrix, q


def _warp_task(z: int, section: np.ndarray, matrix: np.ndarray, order: int):
    return z, warp_section(section, matrix, order=order)


def table_matrices(table) -> list[np.ndarray]:
    """The composed 3 × 3 matrices (section → reference frame) of a transforms table, in row order."""
    return [np.array([[r.m00, r.m01, r.m02], [r.m10, r.m11, r.m12], [0, 0, 1.0]]) for r in table.itertuples()]


# -- the layer job ---------------------------------------------------------------------------------------------

def transforms_path(lake, datastack: str, output: str) -> Path | Any:
    """Where the transforms table of aligned layer ``output`` is stored:
    ``<lake>/datastacks/<datastack>/process/<output>_transforms.parquet`` (a ``upath.UPath`` on object storage)."""
    return lake.root / "datastacks" / datastack / "process" / f"{output}_transforms.parquet"


def align_layer(lake, datastack: str, input: str, output: str, *, reference: int | None = None, method: str = "ncc",
                max_rotation_deg: float = 5.0, coarse_step_deg: float = 0.5, upsample_factor: int = 50,
                elastic: bool = False, attachment: float = 15.0, smooth_sigma: float = 4.0,
                overwrite: bool = False, scheduler: str | None = "threads", progress=None,
                say: Callable[[str], None] | None = None):
    """Align image layer ``input`` of ``datastack`` section by section (:func:`align_sections`; ``elastic``: then
    :func:`refine_elastic`) into a new layer ``output`` (job ``process.align``, idempotent: see
    :func:`neurolake.process.jobs.derive_layer`). Neighbour pairs and warps run as tasks on ``scheduler``
    (:func:`neurolake.jobs.dask_client`).

    The transforms table is stored in the provenance record (``provenance["process.align"]["transforms"]``, a
    list of rows), written as Parquet at :func:`transforms_path` and registered as feature table
    ``<output>_transforms`` of the datastack (so ``lake.sql("SELECT * FROM features.<output>_transforms")``
    reaches it); a re-run that finds the layer already derived re-writes or re-registers the table if it is
    missing. Returns the Layer. Raises InvalidArgument, NotFound, AlreadyExists (also when a feature table of that
    name describes another location), NotReady, Conflict (``overwrite`` while the registered table is no longer a
    draft — published tables are immutable); all before any work.
    """
    from neurolake.process.jobs import derive_layer, read_layer

    if method not in METHODS:
        raise InvalidArgument(f"method {method!r} is not allowed; use one of {', '.join(METHODS)}", field="method",
                              value=method, allowed=list(METHODS))
    _check_params(max_rotation_deg, coarse_step_deg, upsample_factor, 0.125)
    if elastic:
        _check_elastic(attachment, smooth_sigma)
    layer = lake.layer(datastack, input)
    if layer.layer_type != "image":
        raise InvalidArgument(f"layer {datastack}/{input} is a {layer.layer_type} layer; alignment needs an image "
                              "layer", field="input", value=input)
    nz = layer.size()[2]
    ref = _check_reference(reference, nz)
    name = f"{output}_transforms"
    path = transforms_path(lake, datastack, output)
    entry = _feature_entry(lake, name, datastack)
    if entry is not None and entry.get("location") != _local(path):
        raise AlreadyExists(f"feature table {name!r} of datastack {datastack!r} already exists and describes "
                            f"{entry.get('location')}, not this alignment's transforms ({path}); choose another "
                            "output name or remove that entry", table=name, datastack=datastack)
    if overwrite:
        if entry is not None and entry.get("status") != "draft":
            raise Conflict(f"feature table {name!r} of datastack {datastack!r} is {entry.get('status')}; it cannot "
                           "be replaced by re-aligning with overwrite — deprecate it and choose another output name",
                           table=name, datastack=datastack, status=entry.get("status"))
    params = {"reference": ref, "method": method, "max_rotation_deg": float(max_rotation_deg),
              "coarse_step_deg": float(coarse_step_deg), "upsample_factor": int(upsample_factor),
              "elastic": bool(elastic)}
    if elastic:
        params |= {"attachment": float(attachment), "smooth_sigma": float(smooth_sigma)}
    result: dict[str, Any] = {}

    def compute() -> np.ndarray:
        from neurolake.jobs import dask_client

        stack = read_layer(lake, datastack, input)
        with dask_client(scheduler) as client:  # one task per neighbour pair, then per section warp
            out, table = align_sections(stack, ref, method=method, max_rotation_deg=max_rotation_deg,
                                        coarse_step_deg=coarse_step_deg, upsample_factor=upsample_factor,
                                        elastic=elastic, attachment=attachment, smooth_sigma=smooth_sigma,
                                        progress=progress, client=client)
        result["table"] = table
        if say:
            q = table["ncc"].drop(index=ref)
            say(f"{datastack}/{output}: aligned {nz} sections to section {ref}; rotations "
                f"{table['rotation_deg'].abs().max():.2f}° max, shifts {np.hypot(table['tx_px'], table['ty_px']).max():.1f}"
                f" px max, neighbour NCC {q.min() if len(q) else float('nan'):.3f} … "
                f"{q.max() if len(q) else float('nan'):.3f}")
        return out

    def extra() -> dict[str, Any]:
        table = result["table"]
        _write_table(table, path)
        return {"transforms": _records(table), "transforms_table": str(path), "feature_table": name}

    out_layer = derive_layer(lake, datastack, output, action=ACTION, inputs=[input], params=params,
                             compute=compute, layer_type="image", description=f"rigidly aligned {input}",
                             overwrite=overwrite, scheduler=scheduler, progress=progress, say=say, extra=extra)
    if not path.is_file():  # already derived, but the table file went missing: write it again from the record
        import pandas as pd

        rows = (out_layer.provenance.get(ACTION) or {}).get("transforms") or []
        table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
        _write_table(table.astype({c: "int64" if c in ("z", "neighbour") else "float64" for c in TABLE_COLUMNS}),
                     path)
    _register(lake, datastack, name, path, input, output, say)
    return out_layer


# -- helpers ---------------------------------------------------------------------------------------------------

def _local(path: Path) -> str:
    from neurolake.storage import normalize_location

    return normalize_location(str(path))


def _records(table) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
             for k, v in row.items()} for row in table.to_dict(orient="records")]


def _write_table(table, path: Path | Any) -> None:
    from neurolake.storage.config import is_s3

    if is_s3(path):  # one PUT: atomic
        import io

        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        path.write_bytes(buf.getvalue())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)


def _feature_entry(lake, name: str, datastack: str) -> dict[str, Any] | None:
    try:
        return lake.features.get(name, datastack)
    except NotFound:
        return None


def _register(lake, datastack: str, name: str, path: Path, input: str, output: str,
              say: Callable[[str], None] | None) -> None:
    desc = (f"per-section rigid transforms of aligned layer {output} (from {input}); one row per section z: "
            "composed rotation_deg, tx_px, ty_px (about the section centre, into the reference frame), the pairwise "
            "transform to the neighbour (pair_*), the composed 2x3 matrix m00..m12 (x, y px), ncc match quality, "
            "flow_rms_px/flow_max_px of the optional elastic refinement")
    entry = _feature_entry(lake, name, datastack)
    if entry is None:
        lake.features.register(name=name, datastack=datastack, location=str(path), format="parquet",
                               description=desc, pipeline=ACTION)
        if say:
            say(f"{datastack}: transforms registered as feature table {name} ({path})")
        return
    from neurolake.catalog import formats

    if entry.get("status") == "draft" and entry.get("fingerprint") != formats.inspect(str(path), "parquet").fingerprint:
        lake.features.update(name, datastack, location=str(path), description=desc)  # re-inspects the new file
        if say:
            say(f"{datastack}: feature table {name} now describes the new transforms ({path})")


def _section(x: Any, field: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.size == 0:
        raise InvalidArgument(f"{field} must be a non-empty (y, x) section; got shape {list(a.shape)}", field=field,
                              value=list(a.shape))
    return a.astype(np.float64, copy=False)


def _check_reference(reference: Any, nz: int) -> int:
    if reference is None:
        return nz // 2
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) or not 0 <= reference < nz:
        raise InvalidArgument(f"reference {reference!r} is not allowed: a section index 0 … {nz - 1} (default the "
                              f"middle, {nz // 2})", field="reference", value=repr(reference), allowed=[0, nz - 1])
    return int(reference)


def _check_elastic(attachment: Any, smooth_sigma: Any) -> None:
    for field, v, strict in (("attachment", attachment, True), ("smooth_sigma", smooth_sigma, False)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 or \
                (strict and v == 0):
            raise InvalidArgument(f"{field} {v!r} is not allowed: a number {'> 0' if strict else '≥ 0'}",
                                  field=field, value=repr(v))


def _check_params(max_rotation_deg: Any, coarse_step_deg: Any, upsample_factor: Any, margin: Any) -> None:
    def num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

    if not (num(max_rotation_deg) and 0 <= max_rotation_deg <= 45):
        raise InvalidArgument(f"max_rotation_deg {max_rotation_deg!r} is not allowed: 0 … 45 (degrees)",
                              field="max_rotation_deg", value=repr(max_rotation_deg))
    if not (num(coarse_step_deg) and 0 < coarse_step_deg <= 5):
        raise InvalidArgument(f"coarse_step_deg {coarse_step_deg!r} is not allowed: > 0 and ≤ 5 (degrees)",
                              field="coarse_step_deg", value=repr(coarse_step_deg))
    if isinstance(upsample_factor, bool) or not isinstance(upsample_factor, (int, np.integer)) or \
            not 1 <= upsample_factor <= 1000:
        raise InvalidArgument(f"upsample_factor {upsample_factor!r} is not allowed: an int 1 … 1000",
                              field="upsample_factor", value=repr(upsample_factor))
    if not (num(margin) and 0 <= margin < 0.5):
        raise InvalidArgument(f"margin {margin!r} is not allowed: a fraction 0 … < 0.5", field="margin",
                              value=repr(margin))
