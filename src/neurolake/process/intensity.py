"""Intensity correction of EM sections: per-section normalisation and CLAHE (issue 16, step 1).

Serial-section EM stacks vary in brightness and contrast from section to section (section thickness,
staining, beam current, detector gain). A per-section *linear* map removes that drift:

- ``method="meanstd"``: section ``i`` with mean ``m_i`` and standard deviation ``s_i`` is mapped to
  ``(x - m_i) / s_i * s_ref + m_ref`` — its mean and std become the reference's (z-score matching);
- ``method="percentile"``: the section's ``percentiles`` (default the 1st and 99th, ``lo_i``, ``hi_i``) are
  mapped linearly onto the reference's ``(lo_ref, hi_ref)``: ``(x - lo_i) / (hi_i - lo_i) * (hi_ref - lo_ref)
  + lo_ref`` — robust to a few saturated or black pixels (histogram stretching, e.g. Gonzalez & Woods,
  *Digital Image Processing*, ch. 3).

The reference is a section of the stack (default: the section of median mean brightness, so the output
stays in the range of a typical section) or given target values. Optionally, contrast-limited adaptive
histogram equalisation (CLAHE; Zuiderveld 1994, :func:`skimage.exposure.equalize_adapthist`) is applied per
section after the normalisation.

Output dtype: an integer input (uint8/uint16) gives the same dtype — values are rounded and **clipped** to the
dtype's range (saturated pixels are counted per section in the statistics, ``clipped_fraction``); a float input
gives float32 (no clipping). With CLAHE, whose output is in [0, 1], an integer output is scaled to the dtype's
full range and a float output stays in [0, 1].

Arrays are numpy (z, y, x); every function works per section (axis 0) and :func:`normalize_section` /
:func:`clahe_section` take one (y, x) section, so sections can be processed in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument

METHODS = ("meanstd", "percentile")
ACTION = "process.intensity"


# -- statistics -------------------------------------------------------------------------------------------------

def section_stats(stack_zyx: np.ndarray, percentiles: Sequence[float] = (1, 50, 99)) -> list[dict[str, Any]]:
    """Per-section statistics of a (z, y, x) stack (or one (y, x) section, treated as z = 1).

    Returns one dict per section: ``z``, ``mean``, ``std`` (population std), ``min``, ``max`` and ``p<q>`` for
    each ``q`` in ``percentiles`` (e.g. ``p1``, ``p50``, ``p99``), all floats in the input's units (JSON-able;
    ``pandas.DataFrame(section_stats(x))`` gives a table). Raises InvalidArgument (not 2-D/3-D, empty, bad q).
    """
    a = _as_stack(stack_zyx, "stack")
    qs = _check_percentiles(percentiles, "percentiles", n=None)
    out = []
    for z, sec in enumerate(a):
        f = sec.astype(np.float64, copy=False)
        row: dict[str, Any] = {"z": z, "mean": float(f.mean()), "std": float(f.std()), "min": float(f.min()),
                               "max": float(f.max())}
        for q, v in zip(qs, np.percentile(f, qs), strict=True):
            row[f"p{q:g}"] = float(v)
        out.append(row)
    return out


def variation(stats: list[dict[str, Any]], key: str = "mean") -> float:
    """Section-to-section variation of ``key`` (``"mean"`` or ``"std"``) in ``stats`` (from
    :func:`section_stats`): the coefficient of variation across sections, ``std_z(v) / |mean_z(v)|`` (population
    std; 0 for a single section). Dimensionless, so comparable across a linear change of units."""
    v = np.array([s[key] for s in stats], dtype=np.float64)
    m = abs(v.mean())
    return float(v.std() / m) if m > 0 else 0.0


def summary(stats: list[dict[str, Any]]) -> dict[str, float]:
    """``{"cv_mean", "cv_std", "mean_min", "mean_max", "std_min", "std_max"}`` of per-section ``stats``."""
    means = [s["mean"] for s in stats]
    stds = [s["std"] for s in stats]
    return {"cv_mean": variation(stats, "mean"), "cv_std": variation(stats, "std"), "mean_min": min(means),
            "mean_max": max(means), "std_min": min(stds), "std_max": max(stds)}


# -- per-section operations -------------------------------------------------------------------------------------

def section_params(section_yx: np.ndarray, method: str = "meanstd", percentiles: Sequence[float] = (1, 99)
                   ) -> tuple[float, float]:
    """What ``method`` matches for one (y, x) section: ``(mean, std)`` for ``"meanstd"``, ``(p_lo, p_hi)`` (the
    two ``percentiles``) for ``"percentile"``. Raises InvalidArgument (method, percentiles)."""
    _check_method(method)
    f = np.asarray(section_yx, dtype=np.float64)
    if method == "meanstd":
        return float(f.mean()), float(f.std())
    lo, hi = _check_percentiles(percentiles, "percentiles", n=2)
    plo, phi = np.percentile(f, [lo, hi])
    return float(plo), float(phi)


def normalize_section(section_yx: np.ndarray, target: tuple[float, float], method: str = "meanstd",
                      percentiles: Sequence[float] = (1, 99)) -> tuple[np.ndarray, float, float]:
    """Map one (y, x) section linearly so that what ``method`` measures (see :func:`section_params`) becomes
    ``target`` (``(mean, std)`` or ``(p_lo, p_hi)``). Returns ``(float32 section, gain, offset)`` with
    ``out = gain * x + offset``. A constant section (std or percentile spread 0) is only shifted (gain 1).
    Raises InvalidArgument."""
    f = np.asarray(section_yx, dtype=np.float32)
    a0, a1 = section_params(f, method, percentiles)
    t0, t1 = float(target[0]), float(target[1])
    if method == "meanstd":
        gain = t1 / a1 if a1 > 0 else 1.0
        offset = t0 - gain * a0
    else:
        gain = (t1 - t0) / (a1 - a0) if a1 > a0 else 1.0
        offset = t0 - gain * a0 if a1 > a0 else (t0 + t1) / 2 - a0
    return (f * np.float32(gain) + np.float32(offset)).astype(np.float32, copy=False), float(gain), float(offset)


def clahe_section(section_yx: np.ndarray, value_range: tuple[float, float], *, clip_limit: float = 0.01,
                  kernel_size: int | Sequence[int] | None = None) -> np.ndarray:
    """CLAHE of one (y, x) section (:func:`skimage.exposure.equalize_adapthist`; Zuiderveld 1994). Values are
    first clipped to ``value_range`` and scaled to [0, 1]; ``kernel_size`` (px, default 1/8 of the section),
    ``clip_limit`` in (0, 1]. Returns float32 in [0, 1]."""
    from skimage.exposure import equalize_adapthist

    lo, hi = float(value_range[0]), float(value_range[1])
    f = np.asarray(section_yx, dtype=np.float64)
    f = np.clip((f - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(f)
    if f.max() == f.min():  # equalize_adapthist divides by the range: a flat section stays flat
        return f.astype(np.float32)
    return equalize_adapthist(f, kernel_size=kernel_size, clip_limit=clip_limit).astype(np.float32)


# -- the stack -------------------------------------------------------------------------------------------------

def reference_target(stack_zyx: np.ndarray, method: str = "meanstd", reference: int | Sequence[float] | None = None,
                     percentiles: Sequence[float] = (1, 99)) -> tuple[int | None, tuple[float, float]]:
    """``(reference section index or None, target)`` for :func:`normalize_sections`: ``reference=None`` → the
    section whose mean is the median of the section means (the lower median for an even count); an int → that
    section; a pair → the target itself (``(mean, std)`` or ``(p_lo, p_hi)``). Raises InvalidArgument."""
    a = _as_stack(stack_zyx, "stack")
    _check_method(method)
    nz = a.shape[0]
    if reference is None:
        means = np.array([float(s.mean(dtype=np.float64)) for s in a])
        ref = int(np.argsort(means, kind="stable")[(nz - 1) // 2])
    elif isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        ref = int(reference)
        if not 0 <= ref < nz:
            raise InvalidArgument(f"reference section {ref} is outside the stack (0 … {nz - 1})", field="reference",
                                  value=ref, allowed=[0, nz - 1])
    elif isinstance(reference, (list, tuple, np.ndarray)) and len(reference) == 2 and \
            all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
                for v in reference):
        t = (float(reference[0]), float(reference[1]))
        if method == "meanstd" and t[1] <= 0 or method == "percentile" and t[1] <= t[0]:
            raise InvalidArgument(f"reference target {list(t)} is not allowed for method {method!r}: "
                                  + ("std must be > 0" if method == "meanstd" else "p_hi must be > p_lo"),
                                  field="reference", value=list(t))
        return None, t
    else:
        raise InvalidArgument(f"reference {reference!r} is not allowed: give None (the median-brightness section), "
                              "a section index, or a target pair (mean, std) / (p_lo, p_hi)", field="reference",
                              value=repr(reference)[:100])
    return ref, section_params(a[ref], method, percentiles)


def normalize_sections(stack_zyx: np.ndarray, method: str = "meanstd", reference: int | Sequence[float] | None = None,
                       percentiles: Sequence[float] = (1, 99), *, clahe: bool = False, clip_limit: float = 0.01,
                       kernel_size: int | Sequence[int] | None = None,
                       progress: Callable[[str, int, int], None] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalise every section of a (z, y, x) stack to a reference (module docstring), then optionally CLAHE.

    ``method``: ``"meanstd"`` or ``"percentile"``; ``reference``: None (median-brightness section), a section
    index, or a target pair; ``percentiles``: the two percentiles (0–100) the percentile method matches;
    ``clahe``/``clip_limit``/``kernel_size``: see :func:`clahe_section`.

    Returns ``(corrected, stats)``: ``corrected`` has the input's shape, dtype uint8/uint16 for such input
    (rounded, clipped), else float32; ``stats`` = ``{"method", "reference", "target", "percentiles", "clahe",
    "sections": [{z, gain, offset, clipped_fraction}], "before": section_stats, "after": section_stats,
    "summary": {"before": summary, "after": summary}}`` (JSON-able). Raises InvalidArgument.
    """
    a = _as_stack(stack_zyx, "stack")
    _check_method(method)
    pct = _check_percentiles(percentiles, "percentiles", n=2)
    _check_clahe(clip_limit, kernel_size)
    ref, target = reference_target(a, method, reference, pct)
    integer = np.issubdtype(a.dtype, np.integer)
    if integer and a.dtype not in (np.uint8, np.uint16):
        raise InvalidArgument(f"dtype {a.dtype} is not allowed for an image stack: use uint8, uint16 or float",
                              field="dtype", value=str(a.dtype), allowed=["uint8", "uint16", "float32", "float64"])
    out_dtype = a.dtype if integer else np.dtype(np.float32)
    lo_hi = (0.0, float(np.iinfo(a.dtype).max)) if integer else None
    out = np.empty(a.shape, dtype=out_dtype)
    sections = []
    normed = []
    for z in range(a.shape[0]):
        f, gain, offset = normalize_section(a[z], target, method, pct)
        clipped = float(np.mean((f < lo_hi[0] - 0.5) | (f > lo_hi[1] + 0.5))) if integer else 0.0
        sections.append({"z": z, "gain": gain, "offset": offset, "clipped_fraction": clipped})
        if clahe:
            normed.append(f)
            continue
        _store(out, z, f, integer)
        if progress:
            progress("intensity", z + 1, a.shape[0])
    if clahe:
        # CLAHE input range: the dtype's for integers, else the normalised stack's (the same for all sections)
        rng = lo_hi or (float(min(x.min() for x in normed)), float(max(x.max() for x in normed)))
        for z, f in enumerate(normed):
            e = clahe_section(f, rng, clip_limit=clip_limit, kernel_size=kernel_size)
            _store(out, z, e * np.float32(lo_hi[1]) if integer else e, integer)
            if progress:
                progress("intensity", z + 1, a.shape[0])
    before, after = section_stats(a), section_stats(out)
    stats = {"method": method, "reference": ref if ref is not None else list(target), "target": list(target),
             "percentiles": list(pct), "clahe": bool(clahe), "clip_limit": clip_limit if clahe else None,
             "kernel_size": _ks_json(kernel_size) if clahe else None, "output_dtype": str(out_dtype),
             "sections": sections, "before": before, "after": after,
             "summary": {"before": summary(before), "after": summary(after)}}
    return out, stats


def intensity_layer(lake, datastack: str, input: str, output: str, *, method: str = "meanstd",
                    reference: int | Sequence[float] | None = None, percentiles: Sequence[float] = (1, 99),
                    clahe: bool = False, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None,
                    overwrite: bool = False, scheduler: str | None = "threads", progress=None,
                    say: Callable[[str], None] | None = None):
    """Intensity-correct image layer ``input`` of ``datastack`` into a new image layer ``output`` (job
    ``process.intensity``, idempotent: see :func:`neurolake.process.jobs.derive_layer`).

    Parameters as :func:`normalize_sections`. The provenance record ``provenance["process.intensity"]`` holds the
    parameters and the statistics (per-section gain/offset, before/after :func:`section_stats` and their
    :func:`summary`). Output dtype: the input's for uint8/uint16 (clipped), else float32. ``say`` gets a one-line
    before/after summary. Returns the Layer. Raises InvalidArgument (parameters, a segmentation input), NotFound,
    AlreadyExists, NotReady.
    """
    from neurolake.process.jobs import derive_layer, read_layer

    _check_method(method)
    pct = _check_percentiles(percentiles, "percentiles", n=2)
    _check_clahe(clip_limit, kernel_size)
    if reference is not None and not isinstance(reference, (int, np.integer)):
        reference = [float(v) for v in reference] if isinstance(reference, (list, tuple)) else reference
    layer = lake.layer(datastack, input)
    if getattr(layer, "layer_type", "image") != "image":
        raise InvalidArgument(f"layer {datastack}/{input} is a {layer.layer_type} layer; intensity correction "
                              "needs an image layer", field="input", value=input)
    params = {"method": method, "reference": reference, "percentiles": list(pct), "clahe": bool(clahe),
              "clip_limit": float(clip_limit), "kernel_size": _ks_json(kernel_size)}
    result: dict[str, Any] = {}

    def compute() -> np.ndarray:
        stack = read_layer(lake, datastack, input)
        out, stats = normalize_sections(stack, method, reference, pct, clahe=clahe, clip_limit=clip_limit,
                                        kernel_size=kernel_size, progress=progress)
        result["stats"] = stats
        if say:
            b, a = stats["summary"]["before"], stats["summary"]["after"]
            say(f"{datastack}/{output}: section-to-section CV of mean {b['cv_mean']:.4f} → {a['cv_mean']:.4f}, "
                f"of std {b['cv_std']:.4f} → {a['cv_std']:.4f} ({method}, reference {stats['reference']})")
        return out

    return derive_layer(lake, datastack, output, action=ACTION, inputs=[input], params=params, compute=compute,
                        layer_type="image", description=f"intensity-corrected ({method}) {input}",
                        overwrite=overwrite, scheduler=scheduler, progress=progress, say=say,
                        extra=lambda: {"statistics": result.get("stats")})


# -- helpers ---------------------------------------------------------------------------------------------------

def _store(out: np.ndarray, z: int, f: np.ndarray, integer: bool) -> None:
    if integer:
        info = np.iinfo(out.dtype)
        out[z] = np.clip(np.rint(f), info.min, info.max).astype(out.dtype)
    else:
        out[z] = f


def _as_stack(x: Any, field: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.size == 0:
        raise InvalidArgument(f"{field} must be a non-empty (z, y, x) array (or one (y, x) section); got shape "
                              f"{list(a.shape)}", field=field, value=list(a.shape))
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)) or a.dtype == bool:
        raise InvalidArgument(f"{field} dtype {a.dtype} is not allowed: an image (unsigned integer or float)",
                              field=field, value=str(a.dtype))
    return a


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InvalidArgument(f"method {method!r} is not allowed; use one of {', '.join(METHODS)}", field="method",
                              value=method, allowed=list(METHODS))


def _check_percentiles(qs: Sequence[float], field: str, n: int | None) -> list[float]:
    try:
        vals = [float(q) for q in qs]
    except (TypeError, ValueError):
        vals = None
    ok = vals is not None and all(0 <= q <= 100 for q in vals) and (n is None or len(vals) == n) and len(vals) > 0
    if ok and n == 2:
        ok = vals[0] < vals[1]
    if not ok:
        raise InvalidArgument(f"{field} {qs!r} is not allowed: " + ("two increasing percentiles in [0, 100], e.g. "
                              "(1, 99)" if n == 2 else "percentiles in [0, 100]"), field=field,
                              value=repr(qs)[:100])
    return vals


def _check_clahe(clip_limit: float, kernel_size: Any) -> None:
    if isinstance(clip_limit, bool) or not isinstance(clip_limit, (int, float)) or not 0 < clip_limit <= 1:
        raise InvalidArgument(f"clip_limit {clip_limit!r} is not allowed: a number in (0, 1]", field="clip_limit",
                              value=repr(clip_limit))
    if kernel_size is None:
        return
    ks = [kernel_size] if isinstance(kernel_size, (int, np.integer)) else kernel_size
    if not (isinstance(ks, (list, tuple)) and len(ks) in (1, 2) and
            all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 2 for k in ks)):
        raise InvalidArgument(f"kernel_size {kernel_size!r} is not allowed: None (1/8 of the section), an int ≥ 2 "
                              "or a (y, x) pair of ints ≥ 2 (px)", field="kernel_size", value=repr(kernel_size))


def _ks_json(kernel_size: Any) -> Any:
    if kernel_size is None:
        return None
    if isinstance(kernel_size, (int, np.integer)):
        return int(kernel_size)
    return [int(k) for k in kernel_size]
