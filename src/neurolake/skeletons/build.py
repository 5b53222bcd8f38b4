"""Skeletonizing a whole segmentation layer with kimimaro (TEASAR) as a batch job on Dask.

:func:`skeletonize_layer` runs in two passes, each a set of Dask tasks (:func:`neurolake.jobs.run_tasks`):

1. **bounding boxes**: one task per slab of whole shards (z) finds each segment id's voxel count and bounding box;
2. **skeletons**: segment ids are packed into groups (sorted by position; at most ``ids_per_task`` ids and
   ``max_task_voxels`` voxels of their joint bounding box a group — a segment larger than that is still one
   task); each task reads the group's box plus a one-voxel margin, runs ``kimimaro.skeletonize`` on those ids
   only, moves the vertices to layer coordinates (nm) and writes one precomputed file per skeleton.

Every segment is skeletonized whole, in one piece, so no skeletons are stitched across task borders, and a task's
memory is its box (about 10 bytes a voxel: labels plus kimimaro's distance transform). A segment inside the volume
gets the skeleton kimimaro makes on the whole volume. A segment touching the volume border is rooted by kimimaro at
a border target whose choice depends on the extent of the image it is given: such segments are read with the whole
volume when it has at most ``max_task_voxels`` voxels (then every skeleton equals a whole-volume kimimaro run), else
in their box (a valid TEASAR skeleton that may be rooted elsewhere than a whole-volume run would). Tasks write into a fresh folder that replaces
``skeletons/`` when all are done (readers see the old or the new set, never half of each), then the skeleton
table gets a new Delta version. On object storage (no rename) the fresh prefix is copied over ``skeletons/``
(server-side copies), the old set's ``info`` removed first and the new ``info`` written last, so a reader sees
the old set, no skeletons, or the new set; builds of one layer are serialised by a database lock.

Idempotent like the processing jobs (:mod:`neurolake.process.jobs`): the build is keyed by the layer's identity
(:func:`neurolake.provenance.layer_identity`), the mip, the kimimaro parameters and kimimaro's version; the same
key again does nothing ("already built"), a different one is refused with AlreadyExists naming what differs,
unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import AlreadyExists, InvalidArgument
from neurolake.skeletons import store
from neurolake.storage.config import is_s3, storage_config
from neurolake.storage.files import remove_tree

ACTION = "skeletonize"
# kimimaro's own defaults (kimimaro 5.8 README), distances in nm
TEASAR_DEFAULTS = {"scale": 1.5, "const": 300, "pdrf_scale": 100000, "pdrf_exponent": 4,
                   "soma_acceptance_threshold": 3500, "soma_detection_threshold": 750,
                   "soma_invalidation_const": 300, "soma_invalidation_scale": 2, "max_paths": None}
DEFAULT_IDS_PER_TASK = 16
DEFAULT_MAX_TASK_VOXELS = 256**3

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # ((z0, z1), (y0, y1), (x0, x1))


def kimimaro_version() -> str:
    from importlib.metadata import version

    return version("kimimaro")


def kimimaro_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``kimimaro.skeletonize`` for recorded ``params``."""
    teasar = {k: v for k, v in params["teasar_params"].items() if v is not None}
    return {"teasar_params": teasar, "dust_threshold": params["dust_threshold"],
            "fix_branching": params["fix_branching"], "fix_borders": params["fix_borders"],
            "fill_holes": params["fill_holes"], "fix_avocados": params["fix_avocados"]}


def check_params(teasar_params: dict[str, Any] | None, dust_threshold: int) -> dict[str, Any]:
    """``TEASAR_DEFAULTS`` updated with ``teasar_params``. Raises InvalidArgument naming an unknown key."""
    tp = dict(TEASAR_DEFAULTS)
    for k, v in (teasar_params or {}).items():
        if k not in TEASAR_DEFAULTS:
            raise InvalidArgument(f"unknown TEASAR parameter {k!r}", field="teasar_params", value=k,
                                  allowed=sorted(TEASAR_DEFAULTS))
        if v is not None and not isinstance(v, (int, float)):
            raise InvalidArgument(f"TEASAR parameter {k} must be a number, not {v!r}", field=k, value=v)
        tp[k] = v
    if not isinstance(dust_threshold, int) or dust_threshold < 0:
        raise InvalidArgument(f"dust_threshold must be a whole number of voxels ≥ 0, not {dust_threshold!r}",
                              field="dust_threshold", value=dust_threshold)
    return tp


def differences(old: dict | None, new: dict) -> str:
    """What differs between two build keys, in words (``dust_threshold: 1000 then, 5000 now``)."""
    if not old:
        return "they were not made by a recorded build"
    out = []
    if (old.get("inputs") or [{}])[0].get("identity") != new["inputs"][0]["identity"]:
        out.append("the layer changed since (re-ingested or replaced)")
    op, np_ = old.get("params") or {}, new["params"]
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            out.append(f"{k}: {op.get(k)!r} then, {np_.get(k)!r} now")
    return "; ".join(out) or "the recorded key differs"


# -- tasks (run on Dask workers: module-level, plain arguments) -----------------------------------
def _read(spec_json: str, box: Box) -> np.ndarray:
    from neurolake.volumes.store import open_array_cached

    (z0, z1), (y0, y1), (x0, x1) = box
    return open_array_cached(spec_json)[z0:z1, y0:y1, x0:x1].read().result()


def _bbox_task(spec_json: str, box: Box) -> dict[int, list[int]]:
    """Per segment id in ``box``: ``[voxels, z0, z1, y0, y1, x0, x1]`` (layer voxels at the mip)."""
    import fastremap
    from scipy.ndimage import find_objects

    arr = _read(spec_json, box)
    renum, mapping = fastremap.renumber(arr, preserve_zero=True, in_place=False)
    inv = {v: k for k, v in mapping.items()}
    counts = np.bincount(renum.ravel())
    out: dict[int, list[int]] = {}
    oz, oy, ox = box[0][0], box[1][0], box[2][0]
    for i, sl in enumerate(find_objects(renum), start=1):
        if sl is None or inv.get(i, 0) == 0:
            continue
        out[int(inv[i])] = [int(counts[i]), sl[0].start + oz, sl[0].stop + oz, sl[1].start + oy, sl[1].stop + oy,
                            sl[2].start + ox, sl[2].stop + ox]
    return out


def _skeleton_task(spec_json: str, box: Box, ids: list[int], anisotropy: Sequence[float], kw: dict[str, Any],
                   out_dir: str) -> list[dict[str, Any]]:
    """Skeletonize ``ids`` in ``box``; write ``out_dir/<id>``; return their table rows (without voxels/mip)."""
    import kimimaro

    arr = _read(spec_json, box)
    xyz = np.asfortranarray(arr.T)  # kimimaro indexes (x, y, z)
    skels = kimimaro.skeletonize(xyz, anisotropy=tuple(anisotropy), object_ids=list(ids), progress=False,
                                 parallel=1, **kw)
    offset = np.array([box[2][0], box[1][0], box[0][0]], np.float32) * np.asarray(anisotropy, np.float32)
    rows = []
    for sid, skel in skels.items():
        skel.vertices = (skel.vertices + offset).astype(np.float32)
        skel.id = int(sid)
        if is_s3(out_dir):  # one PUT (atomic); the build prefix is fresh
            storage_config().path(out_dir).joinpath(str(int(sid))).write_bytes(skel.to_precomputed())
            rows.append({"segment_id": int(sid), **store.stats(skel)})
            continue
        tmp = Path(out_dir) / f".{sid}.tmp"
        tmp.write_bytes(skel.to_precomputed())
        tmp.replace(Path(out_dir) / str(int(sid)))
        rows.append({"segment_id": int(sid), **store.stats(skel)})
    return rows


# -- planning ---------------------------------------------------------------------------------------
def slabs(shape_zyx: Sequence[int], depth: int) -> list[Box]:
    """Whole-width boxes ``depth`` sections deep covering ``shape_zyx``."""
    nz, ny, nx = shape_zyx
    return [((z, min(z + depth, nz)), (0, ny), (0, nx)) for z in range(0, nz, depth)]


def merge_boxes(parts: list[dict[int, list[int]]]) -> dict[int, list[int]]:
    """Merge per-slab ``{id: [voxels, z0, z1, y0, y1, x0, x1]}`` into one."""
    out: dict[int, list[int]] = {}
    for part in parts:
        for sid, b in part.items():
            o = out.get(sid)
            if o is None:
                out[sid] = list(b)
            else:
                out[sid] = [o[0] + b[0], min(o[1], b[1]), max(o[2], b[2]), min(o[3], b[3]), max(o[4], b[4]),
                            min(o[5], b[5]), max(o[6], b[6])]
    return out


def plan(boxes: dict[int, list[int]], shape_zyx: Sequence[int], *, ids_per_task: int, max_task_voxels: int,
         min_voxels: int = 0) -> list[tuple[Box, list[int]]]:
    """Groups of segment ids and the box (one-voxel margin, clipped to the layer) each group is read in.

    Ids with fewer than ``min_voxels`` voxels (kimimaro's ``dust_threshold``) are left out: they get no skeleton.
    """
    def volume(bx: list[list[int]]) -> int:
        return int(np.prod([b - a for a, b in bx]))

    whole = [[0, n] for n in shape_zyx]

    def box_of(b: list[int]) -> list[list[int]]:
        tight = [[max(b[1] - 1, 0), min(b[2] + 1, shape_zyx[0])], [max(b[3] - 1, 0), min(b[4] + 1, shape_zyx[1])],
                 [max(b[5] - 1, 0), min(b[6] + 1, shape_zyx[2])]]
        touches = 0 in (b[1], b[3], b[5]) or b[2] == shape_zyx[0] or b[4] == shape_zyx[1] or b[6] == shape_zyx[2]
        # kimimaro roots a segment touching the image border at one of its border targets, found on each face
        # plane and picked in the order of a set of coordinates: both depend on the extent of the image. Read
        # whole (when within max_task_voxels), such a segment gets the skeleton of a whole-volume run.
        return whole if touches and volume(whole) <= max_task_voxels else tight

    order = sorted((sid for sid, b in boxes.items() if b[0] >= max(min_voxels, 1)),
                   key=lambda s: (boxes[s][1], boxes[s][3], boxes[s][5], s))
    groups: list[tuple[Box, list[int]]] = []
    cur_ids: list[int] = []
    cur: list[list[int]] | None = None
    for sid in order:
        bx = box_of(boxes[sid])
        if cur is not None:
            joint = [[min(a[0], b[0]), max(a[1], b[1])] for a, b in zip(cur, bx, strict=True)]
            if len(cur_ids) < ids_per_task and volume(joint) <= max_task_voxels:
                cur, cur_ids = joint, [*cur_ids, sid]
                continue
            groups.append((tuple(tuple(r) for r in cur), cur_ids))  # type: ignore[arg-type]
        cur, cur_ids = bx, [sid]
    if cur is not None:
        groups.append((tuple(tuple(r) for r in cur), cur_ids))  # type: ignore[arg-type]
    return groups


# -- the job ----------------------------------------------------------------------------------------
def skeletonize_layer(lake, datastack: str, layer: str, *, mip: int = 0, teasar_params: dict[str, Any] | None = None,
                      dust_threshold: int = 1000, fix_branching: bool = True, fix_borders: bool = True,
                      fill_holes: bool = False, fix_avocados: bool = False,
                      ids_per_task: int = DEFAULT_IDS_PER_TASK, max_task_voxels: int = DEFAULT_MAX_TASK_VOXELS,
                      overwrite: bool = False, scheduler: str | None = "threads", client: Any = None,
                      progress: Callable[[str, int, int], None] | None = None,
                      say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Skeletonize every segment of segmentation layer ``datastack/layer`` at ``mip`` (module doc) and store the
    skeletons (precomputed, nm) and the skeleton table (:mod:`neurolake.skeletons.store`).

    ``teasar_params`` override kimimaro's TEASAR defaults (:data:`TEASAR_DEFAULTS`; distances in nm);
    ``dust_threshold`` (voxels at ``mip``): smaller segments get no skeleton; ``fix_branching``, ``fix_borders``,
    ``fill_holes``, ``fix_avocados``: kimimaro's options. ``scheduler``/``client``: :mod:`neurolake.jobs`.
    ``progress(phase, done, total)`` is called as tasks end (phases ``bounding boxes``, ``skeletons``).

    Returns the provenance record plus ``already_built`` (bool). Raises NotFound (layer), InvalidArgument (not a
    segmentation, bad mip or parameters), AlreadyExists (built differently; pass ``overwrite``), NotReady.
    """
    from neurolake.jobs import dask_client, run_tasks
    from neurolake.provenance import layer_identity, record
    from neurolake.volumes.store import task_spec

    la = store.seg_layer(lake, datastack, layer)
    if not isinstance(mip, int) or not 0 <= mip < la.num_mips:
        raise InvalidArgument(f"mip {mip!r} does not exist in {datastack}/{layer} (mips 0–{la.num_mips - 1})",
                              field="mip", value=mip)
    for name, v in (("ids_per_task", ids_per_task), ("max_task_voxels", max_task_voxels)):
        if not isinstance(v, int) or v < 1:
            raise InvalidArgument(f"{name} must be a positive integer, not {v!r}", field=name, value=v)
    params = {"mip": mip, "teasar_params": check_params(teasar_params, dust_threshold),
              "dust_threshold": dust_threshold, "fix_branching": bool(fix_branching),
              "fix_borders": bool(fix_borders), "fill_holes": bool(fill_holes), "fix_avocados": bool(fix_avocados),
              "kimimaro": kimimaro_version()}
    key = {"action": ACTION, "inputs": [{"datastack": datastack, "layer": layer,
                                          "identity": layer_identity(lake, la)}], "params": params}
    prev = store.read_provenance(la)
    if prev is not None and store.has_skeletons(la):
        if prev.get("key") == key and not overwrite:
            if say:
                say(f"{datastack}/{layer}: skeletons already built with these parameters, nothing to do")
            return {**prev, "already_built": True}
        if not overwrite:
            raise AlreadyExists(f"{datastack}/{layer} already has skeletons made differently "
                                f"({differences(prev.get('key'), key)}). Nothing was changed: pass overwrite=True "
                                "(--overwrite) to replace them", datastack=datastack, layer=layer)
    if client is None:
        with dask_client(scheduler) as c:
            return skeletonize_layer(lake, datastack, layer, mip=mip, teasar_params=teasar_params,
                                     dust_threshold=dust_threshold, fix_branching=fix_branching,
                                     fix_borders=fix_borders, fill_holes=fill_holes, fix_avocados=fix_avocados,
                                     ids_per_task=ids_per_task, max_task_voxels=max_task_voxels,
                                     overwrite=overwrite, scheduler=scheduler or "local", client=c,
                                     progress=progress, say=say)
    from neurolake.jobs.records import job

    # a job row (kind skeletonize) counts both phases' tasks: `neurolake jobs`, GET /api/v1/jobs
    with job(lake, "skeletonize", datastack=datastack, target=layer, scheduler=scheduler or "client") as j:
        t0 = time.perf_counter()
        shape = la.shape(mip)
        spec_json = task_spec(la.root, mip)
        anisotropy = list(la.spec.mips[mip].voxel_size_nm)
        depth = la.spec.mips[mip].shard_zyx[0]

        def ticker(phase: str, total: int) -> Callable[[Any], None]:
            done = [0]
            if progress:
                progress(phase, 0, total)

            def tick(_: Any) -> None:
                done[0] += 1
                if progress:
                    progress(phase, done[0], total)
            return tick

        sl = slabs(shape, depth)
        boxes = merge_boxes(run_tasks(client, _bbox_task, [(spec_json, b) for b in sl],
                                      ticker("bounding boxes", len(sl)), job=j))
        groups = plan(boxes, shape, ids_per_task=ids_per_task, max_task_voxels=max_task_voxels,
                      min_voxels=dust_threshold)
        final = store.skeleton_dir(la)
        build = final.parent / f"{store.SKELETON_DIR}.build-{secrets.token_hex(4)}"
        remote = is_s3(build)
        if not remote:
            build.mkdir(parents=True)
        held = (lake.locks.hold(f"skeletons:{la.root}", timeout_s=600, what=f"skeleton build of {datastack}/{layer}")
                if remote else contextlib.nullcontext())
        try:
            kw = kimimaro_kwargs(params)
            parts = run_tasks(client, _skeleton_task, [(spec_json, b, ids, anisotropy, kw, str(build))
                                                       for b, ids in groups], ticker("skeletons", len(groups)), job=j)
            rows = [{**r, "voxels": boxes[r["segment_id"]][0], "mip": mip} for part in parts for r in part]
            seconds = time.perf_counter() - t0
            voxels = int(np.prod(shape))
            (build / "info").write_text(json.dumps(store.info_doc(mip)))
            prov = record(ACTION, inputs=[{"datastack": datastack, "layer": layer}], params=params, key=key,
                          kimimaro=params["kimimaro"], generation=la.generation(),
                          statistics={"segments": len(boxes), "skeletons": len(rows), "tasks": len(groups),
                                      "voxels": voxels, "seconds": round(seconds, 3),
                                      "voxels_per_second": round(voxels / seconds, 1) if seconds else None,
                                      "cable_length_nm": float(sum(r["cable_length_nm"] for r in rows))})
            digest = json.dumps(key, sort_keys=True)
            with held:
                prov["table_version"] = store.write_table(la, rows, {"neurolake.skeletonize": digest})
                (build / store.PROVENANCE).write_text(json.dumps(prov, indent=1))
                _swap(build, final)
        except BaseException:
            if remote:
                held.release()  # idempotent: also left by the `with` above
            remove_tree(build)
            raise
    if say:
        say(f"{datastack}/{layer}: {len(rows)} skeletons of {len(boxes)} segments at mip {mip} in {len(groups)} "
            f"tasks, {prov['statistics']['seconds']} s; skeleton table version {prov['table_version']}")
    return {**prov, "already_built": False}


def _swap(build: Path | Any, final: Path | Any) -> None:
    """Replace ``final`` by ``build``: two renames, then the old folder is deleted. On object storage: the old
    ``info`` goes first, the old set next, then the build's objects are copied (``info`` last) and the build
    prefix removed."""
    if is_s3(final):
        fs = final.fs
        (final / "info").unlink(missing_ok=True)
        remove_tree(final)
        names = [k.rsplit("/", 1)[-1] for k in fs.ls(build.path, detail=False, refresh=True)]
        rest = [n for n in names if n != "info"]
        if rest:
            fs.copy([f"{build.path}/{n}" for n in rest], [f"{final.path}/{n}" for n in rest])
        if "info" in names:
            fs.copy(f"{build.path}/info", f"{final.path}/info")
        remove_tree(build)
        return
    old = None
    if final.exists():
        old = final.parent / f"{store.SKELETON_DIR}.old-{secrets.token_hex(4)}"
        final.rename(old)
    build.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
