"""Supervoxels from a boundary map by seeded watershed.

For anisotropic serial-section data (ssTEM: 50 nm sections, ~4 nm pixels) the watershed runs per
section (2-D), so every supervoxel is one profile fragment in one section and the region adjacency
graph joins fragments within and across sections — the usual over-segmentation that proofreading
then agglomerates. Per section (axes y, x):

1. interior = boundary < ``threshold`` (boundary values in [0, 1]; 1 = membrane);
2. elevation = distance to the interior (on membrane) minus the distance to the boundary (inside),
   both Euclidean (``scipy.ndimage.distance_transform_edt``), so basins are cell interiors and
   watershed lines run along membrane centres;
3. seeds = local maxima of the inside distance at least ``min_distance`` pixels apart
   (``skimage.feature.peak_local_max``), plus one seed for any interior component without a peak;
4. ``skimage.segmentation.watershed(elevation, seeds)`` labels every pixel (no background).

Labels are numbered consecutively over the whole volume from 1 (uint32 if they fit, else uint64).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument


def watershed_section(boundary: np.ndarray, threshold: float = 0.5, min_distance: int = 8) -> np.ndarray:
    """Seeded watershed of one (y, x) section; returns int64 labels 1..n (every pixel labelled)."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    interior = boundary < threshold
    if not interior.any():
        return np.ones(boundary.shape, np.int64)
    inside = ndi.distance_transform_edt(interior)
    outside = ndi.distance_transform_edt(~interior)
    elevation = outside - inside
    comps, n = ndi.label(interior)
    peaks = peak_local_max(inside, min_distance=max(1, int(min_distance)), labels=comps, exclude_border=False)
    markers = np.zeros(boundary.shape, np.int64)
    k = 0
    if len(peaks):
        k = len(peaks)
        markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, k + 1)
    # components without a seed get one at their deepest point
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(comps[markers > 0])] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if len(missing):
        pos = ndi.maximum_position(inside, comps, missing)
        for (y, x) in pos:
            k += 1
            markers[int(y), int(x)] = k
    return watershed(elevation, markers).astype(np.int64)


def _section_task(z: int, section: np.ndarray, threshold: float, min_distance: int) -> tuple[int, np.ndarray]:
    """One Dask task of :func:`watershed_volume`: section ``z``'s labels 1..n (uint32 when they fit)."""
    lab = watershed_section(section.astype(np.float32), threshold, min_distance)
    return z, (lab.astype(np.uint32) if lab.max(initial=0) < 2**32 else lab)


def watershed_volume(boundary_zyx: np.ndarray, threshold: float = 0.5, min_distance: int = 8,
                     progress: Callable[[str, int, int], None] | None = None, client: Any = None,
                     job: Any = None) -> np.ndarray:
    """Per-section seeded watershed of a (z, y, x) boundary map (values in [0, 1], 1 = boundary).

    With ``client`` (a ``distributed.Client``, :mod:`neurolake.jobs`) the sections run as Dask tasks, one
    per section (pure: a re-run task gives the same labels), counted by ``job``
    (:class:`neurolake.jobs.records.Job`); the labels are numbered here, in section order, so the result
    is the same as in-process. Returns (z, y, x) labels numbered 1..N over the volume (uint32, or uint64
    beyond 2**32 - 1). Raises InvalidArgument for a map that is not 3-D.
    """
    b = np.asarray(boundary_zyx)
    if b.ndim != 3:
        raise InvalidArgument(f"boundary map must be (z, y, x), got shape {list(b.shape)}", field="boundary")
    sections: dict[int, np.ndarray] = {}
    if client is not None:
        from neurolake.jobs import run_tasks

        n = [0]

        def tick(_res) -> None:
            n[0] += 1
            if progress:
                progress("watershed", n[0], b.shape[0])

        for z, lab in run_tasks(client, _section_task, [(z, b[z], threshold, min_distance) for z in range(b.shape[0])],
                                tick, job=job):
            sections[z] = lab
    out = np.zeros(b.shape, np.uint64)
    offset = 0
    for z in range(b.shape[0]):
        lab = sections.pop(z) if client is not None else watershed_section(b[z].astype(np.float32), threshold,
                                                                           min_distance)
        out[z] = lab.astype(np.uint64) + np.uint64(offset)
        offset += int(lab.max())
        if progress and client is None:
            progress("watershed", z + 1, b.shape[0])
    return out.astype(np.uint32) if offset < 2**32 else out


def boundary_from_layer(layer, boundary_values: Any = None, x=None, y=None, z=None) -> np.ndarray:
    """A (z, y, x) float32 boundary map in [0, 1] from a layer.

    ``boundary_values``: label values that mean "boundary" (e.g. the membrane values 0, 32, 64, 96,
    128 of the Gerhard et al. 2013 label images) → 1 there, 0 elsewhere; otherwise the layer is read
    as a probability map (integers scaled by their dtype maximum, floats clipped to [0, 1]).
    """
    sx, sy, sz = layer.size(0)
    arr = layer.cutout(x=x or (0, sx), y=y or (0, sy), z=z or (0, sz))
    if boundary_values is not None:
        return np.isin(arr, np.asarray(list(boundary_values))).astype(np.float32)
    if arr.dtype.kind in "ui":
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return np.clip(arr.astype(np.float32), 0, 1)


def watershed_layer(lake, datastack: str, boundary_layer: str, output_layer: str, *, boundary_values: Any = None,
                    threshold: float = 0.5, min_distance: int = 8, x=None, y=None, z=None, overwrite: bool = False,
                    scheduler: str | None = "threads", progress=None, say=None):
    """Run :func:`watershed_volume` on ``boundary_layer`` (or a box of it) and store the supervoxels as
    segmentation layer ``output_layer`` of the same datastack (with its pyramid). Returns the Layer.

    The box ``x``, ``y``, ``z`` (half-open voxel ranges at mip 0) defaults to the whole volume; the
    output layer covers only the box. The sections run as Dask tasks on ``scheduler``
    (:mod:`neurolake.jobs`; recorded as a job of kind ``watershed``), then the output's pyramid on the
    same cluster.

    Idempotent: the output layer's provenance ``watershed.key`` records the inputs (``boundary_layer``
    and its identity: catalog path and creation time, which change when it is re-ingested) and the
    parameters (threshold, min_distance, box, boundary values). When a ready ``output_layer`` holds
    the same key nothing is computed and it is returned (``say`` reports "already derived"); when it
    holds anything else AlreadyExists names what differs — checked before any work — unless
    ``overwrite`` (then it is replaced atomically, see :func:`neurolake.volumes.ingest.ingest`; with
    the same key it is recomputed). An interrupted run resumes when run again with the same key.
    Raises NotFound, AlreadyExists, NotReady (an interrupted ingest of something else holds the name;
    use ``overwrite``), InvalidArgument.
    """
    from neurolake.errors import AlreadyExists, NotFound, NotReady
    from neurolake.provenance import layer_identity, record
    from neurolake.volumes.sources import NpyFile

    say = say or (lambda _m: None)
    src = lake.layer(datastack, boundary_layer)
    sx, sy, sz = src.size(0)
    box = {a: [int(v) for v in (r if r is not None else (0, n))] for a, r, n in (("x", x, sx), ("y", y, sy),
                                                                                 ("z", z, sz))}
    bvals = sorted({int(v) for v in boundary_values}) if boundary_values is not None else None
    key = {"action": "segment.watershed",
           "inputs": {"datastack": datastack, "layer": boundary_layer, "identity": layer_identity(lake, src)},
           "params": {"threshold": float(threshold), "min_distance": int(min_distance), "box": box,
                      "boundary_values": bvals}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    fingerprint = f"watershed:{digest}"  # lets ingest resume an interrupted run of the same derivation
    try:
        existing = lake.layer(datastack, output_layer)
    except NotFound:
        existing = None
    if existing is not None and existing.status == "ready":
        prev = (existing.provenance.get("watershed") or {}).get("key")
        if prev == key and not overwrite:
            say(f"{datastack}/{output_layer}: already derived (seeded watershed of {boundary_layer} with these "
                "parameters), nothing to do")
            return existing
        if not overwrite:
            what = ("; ".join(_differences(prev, key)) if prev else
                    "it was not made by a recorded watershed run")
            raise AlreadyExists(f"layer {datastack}/{output_layer} already exists and differs from this watershed "
                                f"({what}). Nothing was changed: pass overwrite=True (--overwrite) to replace it",
                                datastack=datastack, layer=output_layer)
    elif existing is not None and not overwrite and existing.progress.get("fingerprint") != fingerprint:
        raise NotReady(f"layer {datastack}/{output_layer} holds an interrupted ingest of something else "
                       f"({existing.progress.get('source')}); use overwrite to replace it",
                       datastack=datastack, layer=output_layer)
    from neurolake.jobs import dask_client
    from neurolake.jobs.records import job

    bmap = boundary_from_layer(src, boundary_values, x, y, z)
    description = f"seeded watershed of {datastack}/{boundary_layer}"
    with dask_client(scheduler) as client:  # one cluster for the sections and the output's pyramid
        with job(lake, "watershed", datastack=datastack, target=output_layer, scheduler=scheduler or "local") as j:
            labels = watershed_volume(bmap, threshold, min_distance, progress, client=client, job=j)
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "supervoxels.npy"
            np.save(p, labels)
            npy = NpyFile(p)
            npy.fingerprint, npy.description = fingerprint, description
            layer = lake.ingest(npy, datastack, output_layer, voxel_size=src.voxel_size,
                                layer_type="segmentation", overwrite=overwrite, scheduler=scheduler, client=client,
                                progress=progress, say=say,
                                description=f"supervoxels: seeded watershed of {boundary_layer}")
    prov = record("segment.watershed", inputs={"datastack": datastack, "layer": boundary_layer},
                  params={"threshold": threshold, "min_distance": min_distance, "box": {"x": x, "y": y, "z": z},
                          "boundary_values": list(boundary_values) if boundary_values is not None else None},
                  supervoxels=int(labels.max()), key=key, digest=digest)
    return lake.update_layer(datastack, output_layer, provenance={**layer.provenance, "watershed": prov})


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for part in ("params", "inputs"):
        a, b = old.get(part) or {}, new.get(part) or {}
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                if k == "identity":
                    out.append(f"layer {new['inputs']['layer']} was re-ingested or overwritten since")
                else:
                    out.append(f"{k}: {a.get(k)!r} → {b.get(k)!r}")
    return out
