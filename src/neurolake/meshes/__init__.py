"""Meshes of segmentation objects and of proofread roots (issue 17), in Neuroglancer precomputed formats.

Meshing (zmesh, marching cubes on labels) runs per **block** of a segmentation layer at mip 0: each block
is read with one voxel of overlap on its upper faces, padded with background on the volume's faces, and
meshed with ``close=False``, so the pieces of an object from neighbouring blocks share their vertices on
the block faces exactly and their union is closed. A piece is a **fragment**, keyed
``"{segment_id}:0:{bx}_{by}_{bz}"`` (block grid indices). Fragments are not simplified.

Storage (under the layer's folder — a local folder or an ``s3://`` prefix of a lake on object storage — so a
re-ingested or replaced layer has no stale meshes)::

    <layer>/mesh/meta.json                  block size, resolution, info dir, progress, provenance
    <layer>/mesh/blocks/{bx}_{by}_{bz}.bin  the block's fragments, concatenated (one file per block:
                                            a few files instead of one per object and block)
    <layer>/mesh/blocks/{bx}_{by}_{bz}.parquet  index: segment_id, offset, nbytes, vertices, faces;
                                            written last = block done

On object storage each block is two PUTs (the ``.bin`` first, its index last); fragments are read with ranged
GETs, and the index of a layer is one LIST plus one GET per block, cached for :data:`S3_INDEX_TTL_S` seconds.

Formats served (spec: github.com/google/neuroglancer/blob/master/src/datasource/precomputed/meshes.md):

- **legacy** (``mesh/``, ``@type neuroglancer_legacy_mesh``): manifest ``{id}:0`` = ``{"fragments":
  [keys]}``; fragment = little-endian ``uint32 n``, ``n × 3 float32`` vertex positions (x, y, z) in
  nanometres, then ``uint32`` triangle vertex indices (:func:`encode_fragment`). Read by Neuroglancer and
  cloud-volume (``UnshardedLegacyPrecomputedMeshSource``).
- **multi-resolution Draco** (``mesh_draco/``, ``@type neuroglancer_multilod_draco``, unsharded, one level
  of detail, one fragment per object): manifest ``{id}.index`` (:func:`multilod_manifest`), data ``{id}``
  = the object's fragments joined and Draco-encoded (DracoPy) with positions quantised to
  :data:`QUANT_BITS` bits over the object's bounding box. Read by Neuroglancer and cloud-volume
  (``UnshardedMultiLevelPrecomputedMeshSource``). Built on request from the stored fragments.

The precomputed ``info`` of a layer names its mesh folder (``"mesh"``) once meshes exist
(:mod:`neurolake.volumes.precomputed`); ``build_meshes(..., draco=True)`` makes it ``mesh_draco``.

**Proofread roots** (as CAVE's graphene format does with its level-2 fragments): supervoxels are immutable,
so the mesh of a root is the union of the fragments of its supervoxels (:meth:`Segmentation.leaves`); after
a merge, split or undo the new root's mesh is assembled from fragments that already exist, and only
supervoxels without fragments (blocks never meshed) are meshed, on demand (:func:`root_fragments`).

Coordinates: vertices are (x, y, z) nanometres; an object occupying voxels ``[x0, x1)`` has mesh
vertices spanning exactly ``[x0 · rx, x1 · rx]`` (voxel faces, ``voxel_centered=True`` in zmesh).
Arrays read from layers are (z, y, x), as everywhere in neurolake.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import Conflict, InvalidArgument, NotFound
from neurolake.storage.config import is_s3, storage_config
from neurolake.storage.files import remove_tree, write_text_atomic

MESH_DIR = "mesh"
DRACO_DIR = "mesh_draco"
META = "meta.json"
QUANT_BITS = 16
DEFAULT_BLOCK_XYZ = (256, 256, 128)
FORMAT_VERSION = 2
_KEY = re.compile(r"^(\d+):0:(\d+)_(\d+)_(\d+)$")
_MANIFEST = re.compile(r"^(\d+):0$")
_COLUMNS = ("segment_id", "offset", "nbytes", "vertices", "faces")
_write_lock = threading.Lock()
S3_INDEX_TTL_S = 2.0  # on object storage a layer's fragment index (a LIST) is re-read at most this often


def _loc(location: Any) -> Any:
    """A path object for ``location`` (a string handed to a Dask task): Path, or UPath for ``s3://``."""
    return storage_config().path(location) if is_s3(location) else Path(location)

__all__ = ["build_meshes", "mesh_info", "has_meshes", "segment_fragments", "layer_fragment", "segment_mesh",
           "root_fragments", "fragment_bytes", "root_mesh", "draco_manifest_and_data", "encode_fragment",
           "decode_fragment", "multilod_manifest", "MESH_DIR", "DRACO_DIR"]


# -------------------------------------------------------------------------------------------------
# fragment encoding
# -------------------------------------------------------------------------------------------------
def encode_fragment(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Legacy precomputed fragment bytes of ``vertices`` (N, 3) x, y, z nm and ``faces`` (M, 3) indices."""
    return b"".join(_fragment_parts(vertices, faces))


def _fragment_parts(vertices: np.ndarray, faces: np.ndarray) -> list:
    """The fragment as buffers (no copy of C-contiguous little-endian arrays): written one after the other."""
    v = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    f = np.ascontiguousarray(faces, dtype="<u4").reshape(-1, 3)
    return [struct.pack("<I", len(v)), memoryview(v).cast("B"), memoryview(f).cast("B")]


def decode_fragment(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3) float32 nm, faces (M, 3) uint32) of legacy fragment bytes. Raises InvalidArgument."""
    if len(data) < 4:
        raise InvalidArgument("a mesh fragment needs at least 4 bytes", field="fragment")
    (n,) = struct.unpack_from("<I", data)
    rest = len(data) - 4 - 12 * n
    if rest < 0 or rest % 12:
        raise InvalidArgument(f"mesh fragment of {len(data)} bytes does not hold {n} vertices and whole triangles",
                              field="fragment")
    v = np.frombuffer(data, "<f4", 3 * n, 4).reshape(n, 3)
    f = np.frombuffer(data, "<u4", rest // 4, 4 + 12 * n).reshape(-1, 3)
    return v, f


# -------------------------------------------------------------------------------------------------
# blocks
# -------------------------------------------------------------------------------------------------
def _grid(size_xyz, block_xyz) -> list[tuple[int, int, int]]:
    n = [-(-s // b) for s, b in zip(size_xyz, block_xyz, strict=True)]
    return [(bx, by, bz) for bz in range(n[2]) for by in range(n[1]) for bx in range(n[0])]


def _block_name(b) -> str:
    return f"{b[0]}_{b[1]}_{b[2]}"


def _read_box(b, size_xyz, block_xyz) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Voxel ranges (x, y, z) to read for block ``b`` (one voxel of overlap on upper faces inside the
    volume) and the padding (lower, upper) of background to add on the volume's faces."""
    box, pad = [], []
    for i in range(3):
        a = b[i] * block_xyz[i]
        e = min(a + block_xyz[i], size_xyz[i])
        hi = e + 1 if e < size_xyz[i] else e
        box.append((a, hi))
        pad.append((1 if a == 0 else 0, 1 if hi == size_xyz[i] else 0))
    return box, pad


def mesh_labels(labels_zyx: np.ndarray, resolution_xyz, origin_xyz=(0, 0, 0), close: bool = True,
                simplify: float | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Meshes of every non-zero label of a (z, y, x) array: ``{id: (vertices (N, 3) float32 x, y, z nm,
    faces (M, 3) uint32)}``, the array's voxel (0, 0, 0) at ``origin_xyz`` voxels. ``close`` pads with
    background so objects touching the array's faces are closed there (zmesh, marching cubes).
    ``simplify``: zmesh's quadric simplification with this maximum error in nm (reduction factor up to
    100; open borders are kept, so block pieces still stitch); None = none."""
    import zmesh

    arr = labels_zyx
    if close:
        arr = np.pad(arr, 1)
        origin_xyz = tuple(o - 1 for o in origin_xyz)
    res = np.asarray(resolution_xyz, dtype=np.float64)
    mesher = zmesh.Mesher(tuple(float(r) for r in res))
    mesher.mesh(arr.T, close=False)  # (z, y, x) C-order == (x, y, z) Fortran order
    shift = (np.asarray(origin_xyz, dtype=np.float64) * res).astype(np.float32)
    out = {}  # vertices shifted in place (zmesh returns new float32 arrays): no copies of large meshes
    for sid in mesher.ids():
        m = (mesher.get(sid, normals=False, voxel_centered=True) if not simplify else
             mesher.get(sid, normals=False, voxel_centered=True, reduction_factor=100, max_error=float(simplify)))
        mesher.erase(sid)
        if len(m.faces):
            v = m.vertices if m.vertices.dtype == np.float32 else m.vertices.astype(np.float32)
            v += shift
            out[int(sid)] = (v, m.faces.astype(np.uint32, copy=False))
    mesher.clear()
    return out


def _mesh_block(read: Callable[[list[tuple[int, int]]], np.ndarray], b, size_xyz, block_xyz, res,
                simplify: float | None = None) -> tuple[list, dict[str, np.ndarray]]:
    box, pad = _read_box(b, size_xyz, block_xyz)
    arr = read(box)  # (z, y, x)
    arr = np.pad(arr, [pad[2], pad[1], pad[0]])
    origin = [box[i][0] - pad[i][0] for i in range(3)]
    meshes = mesh_labels(arr, res, origin, close=False, simplify=simplify)
    parts, rows, off = [], {c: [] for c in _COLUMNS}, 0
    for sid in sorted(meshes):
        v, f = meshes[sid]
        frag = _fragment_parts(v, f)
        n = sum(len(p) for p in frag)
        for c, val in zip(_COLUMNS, (sid, off, n, len(v), len(f)), strict=True):
            rows[c].append(val)
        parts += frag
        off += n
    cols = {"segment_id": np.array(rows["segment_id"], np.uint64), "offset": np.array(rows["offset"], np.uint64),
            "nbytes": np.array(rows["nbytes"], np.uint64), "vertices": np.array(rows["vertices"], np.uint32),
            "faces": np.array(rows["faces"], np.uint32)}
    return parts, cols


def _store_block(blocks: Path | Any, b, parts: list, cols: dict[str, np.ndarray]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = _block_name(b)
    if is_s3(blocks):  # one PUT each (atomic); the index lands last: a block is done when it exists
        buf = io.BytesIO()
        pq.write_table(pa.table(cols), buf)
        blocks.fs.pipe_file(f"{blocks.path}/{name}.bin", b"".join(bytes(p) for p in parts))
        blocks.fs.pipe_file(f"{blocks.path}/{name}.parquet", buf.getvalue())
        return len(cols["segment_id"])
    blocks.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}"
    tmp = blocks / f".{name}.bin.{tag}"
    with open(tmp, "wb") as fh:
        fh.writelines(parts)
    os.replace(tmp, blocks / f"{name}.bin")
    tmpq = blocks / f".{name}.parquet.{tag}"
    pq.write_table(pa.table(cols), tmpq)
    os.replace(tmpq, blocks / f"{name}.parquet")  # the index lands last: a block is done when it exists
    return len(cols["segment_id"])


def _block_task(spec_json: str, b, size_xyz, block_xyz, res, blocks: str, simplify: float | None = None
                ) -> tuple[str, int, int, float]:
    """Dask task: mesh block ``b`` of the array opened from ``spec_json`` and store it under ``blocks``."""
    from neurolake.volumes.store import open_array_cached

    t0 = time.perf_counter()
    arr = open_array_cached(spec_json)

    def read(box):
        (x0, x1), (y0, y1), (z0, z1) = box
        return arr[z0:z1, y0:y1, x0:x1].read().result()

    parts, cols = _mesh_block(read, b, size_xyz, block_xyz, res, simplify)
    n = _store_block(_loc(blocks), b, parts, cols)
    return _block_name(b), n, int(cols["nbytes"].sum()), time.perf_counter() - t0


# -------------------------------------------------------------------------------------------------
# meta and index
# -------------------------------------------------------------------------------------------------
def _layer(lake, datastack: str, layer: str):
    la = lake.layer(datastack, layer)  # NotFound naming the known layers
    if la.layer_type != "segmentation":
        raise InvalidArgument(f"layer {datastack}/{layer} is a {la.layer_type} layer; meshes need a segmentation "
                              "layer", field="layer", value=layer)
    if la.status != "ready":
        from neurolake.errors import NotReady

        raise NotReady(f"layer {datastack}/{layer} is {la.status}; mesh it when its ingest is done",
                       datastack=datastack, layer=layer)
    return la


def _mesh_dir(la) -> Path | Any:
    return la.root / MESH_DIR  # a Path, or a UPath on object storage


def _read_meta(la) -> dict[str, Any] | None:
    try:
        return json.loads((_mesh_dir(la) / META).read_text())
    except FileNotFoundError:
        return None


def _write_meta(la, meta: dict[str, Any]) -> None:
    d = _mesh_dir(la)
    if not is_s3(d):
        d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(d / META, json.dumps(meta, indent=1))


def _block_names(blocks: Path | Any) -> list[str]:
    """Names of the files in the blocks folder (one listdir, or one LIST on object storage); [] when missing."""
    if is_s3(blocks):
        try:
            return [k.rsplit("/", 1)[-1] for k in blocks.fs.ls(blocks.path, detail=False, refresh=True)]
        except (FileNotFoundError, NotADirectoryError):
            return []
    try:
        return os.listdir(blocks)
    except FileNotFoundError:
        return []


def _check_block(block_xyz, size_xyz) -> tuple[int, int, int]:
    if block_xyz is None:
        return tuple(min(b, s) for b, s in zip(DEFAULT_BLOCK_XYZ, size_xyz, strict=True))
    try:
        out = tuple(int(v) for v in block_xyz)
    except (TypeError, ValueError):
        raise InvalidArgument(f"block must be three voxel counts (x, y, z), got {block_xyz!r}", field="block") from None
    if len(out) != 3 or min(out) < 2 or max(out) > 4096:
        raise InvalidArgument(f"block must be three voxel counts (x, y, z) within 2..4096, got {block_xyz!r}",
                              field="block", value=list(out))
    return out


def _check_simplify(value: Any) -> float | None:
    if value is None or value == 0:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not 0 < out < 1e6:
        raise InvalidArgument(f"simplify must be a maximum error in nm (> 0), got {value!r}", field="simplify",
                              value=str(value))
    return out


def _new_meta(la, block_xyz, draco: bool, mode: str, simplify: float | None = None) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "datastack": la.datastack, "layer": la.name, "mip": 0,
            "resolution": [float(r) for r in la.voxel_size], "size": list(la.size(0)), "block": list(block_xyz),
            "info_dir": DRACO_DIR if draco else MESH_DIR, "draco": bool(draco), "mode": mode, "complete": False,
            "simplify": simplify,
            "layer_generation": la.generation(), "progress": {}, "provenance": None}


@dataclass
class _Index:
    seg: np.ndarray     # (N,) uint64 sorted
    block: np.ndarray   # (N,) int32 into names
    offset: np.ndarray  # (N,) uint64
    nbytes: np.ndarray  # (N,) uint64
    names: list[str]
    done: set[str]

    def rows(self, sid: int) -> np.ndarray:
        lo = np.searchsorted(self.seg, np.uint64(sid), "left")
        hi = np.searchsorted(self.seg, np.uint64(sid), "right")
        return np.arange(lo, hi)


def _index(lake, la) -> _Index:
    """The fragment index of ``la`` (all block parquets), cached per lake until the blocks folder changes."""
    import pyarrow.parquet as pq

    blocks = _mesh_dir(la) / "blocks"
    cache = lake.state("meshes.index", dict)
    key = str(blocks)
    hit = cache.get(key)
    remote = is_s3(blocks)
    if remote:
        if hit is not None and time.monotonic() - hit[2] < S3_INDEX_TTL_S:
            return hit[1]
        stamp = _s3_stamp(blocks)
    else:
        try:  # a block adds two files: the folder's mtime and entry count change (mtime alone is too coarse)
            stamp = (blocks.stat().st_mtime_ns, len(os.listdir(blocks)))
        except FileNotFoundError:
            stamp = None
    if hit is not None and hit[0] == stamp and stamp is not None:
        if remote:
            cache[key] = (stamp, hit[1], time.monotonic())
        return hit[1]
    names, parts = [], []
    if remote and stamp:
        got = blocks.fs.cat([f"{blocks.path}/{n}" for n, _ in stamp], on_error="omit")
        for n, _ in stamp:
            data = got.get(f"{blocks.path}/{n}")
            if data is None:  # removed meanwhile (a rebuild): the next look lists again
                continue
            names.append(n[: -len(".parquet")])
            parts.append((len(names) - 1, pq.read_table(io.BytesIO(data))))
    elif stamp is not None:
        for p in sorted(blocks.glob("*.parquet")):
            if p.name.startswith("."):
                continue
            t = pq.read_table(p)
            names.append(p.name[: -len(".parquet")])
            parts.append((len(names) - 1, t))
    if parts:
        seg = np.concatenate([t["segment_id"].to_numpy() for _, t in parts]).astype(np.uint64)
        blk = np.concatenate([np.full(t.num_rows, i, np.int32) for i, t in parts])
        off = np.concatenate([t["offset"].to_numpy() for _, t in parts]).astype(np.uint64)
        nb = np.concatenate([t["nbytes"].to_numpy() for _, t in parts]).astype(np.uint64)
        order = np.argsort(seg, kind="stable")
        idx = _Index(seg[order], blk[order], off[order], nb[order], names, set(names))
    else:
        idx = _Index(np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.uint64), np.zeros(0, np.uint64),
                     [], set())
    if len(cache) > 64:
        cache.clear()
    cache[key] = (stamp, idx, time.monotonic())
    return idx


def _s3_stamp(blocks: Any) -> tuple[tuple[str, str], ...]:
    """(name, ETag) of every block index object under ``blocks`` (one LIST): changes when a block is added,
    rewritten or removed."""
    try:
        entries = blocks.fs.ls(blocks.path, detail=True, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    out = []
    for e in entries:
        n = str(e["name"]).rsplit("/", 1)[-1]
        if n.endswith(".parquet") and not n.startswith("."):
            out.append((n, str(e.get("ETag") or e.get("LastModified") or e.get("size"))))
    return tuple(sorted(out))


def _forget_index(lake, la) -> None:
    lake.state("meshes.index", dict).pop(str(_mesh_dir(la) / "blocks"), None)


# -------------------------------------------------------------------------------------------------
# building
# -------------------------------------------------------------------------------------------------
def build_meshes(lake, datastack: str, layer: str, *, draco: bool = False, block: Any = None,
                 simplify: float | None = None, scheduler: str | None = None,
                 progress: Callable[[int, int], None] | None = None, overwrite: bool = False,
                 author: str | None = None) -> dict[str, Any]:
    """Mesh every object of segmentation layer ``datastack/layer`` (mip 0) on Dask, one task per block.

    - ``block``: block size (x, y, z) voxels (default :data:`DEFAULT_BLOCK_XYZ`, clipped to the volume);
      a different block size than the stored meshes' starts over;
    - ``simplify``: maximum simplification error in nm (zmesh quadric simplification, see
      :func:`mesh_labels`; measured ~30× slower to build, ~50–90× fewer vertices); None = unsimplified;
    - ``draco``: the layer's precomputed ``info`` names the Draco multi-resolution folder ``mesh_draco``
      (else the legacy ``mesh``); both are served either way;
    - ``scheduler``: see :mod:`neurolake.jobs`; ``progress(done, total)`` after each block.

    Resumable: blocks already stored (same block size, simplification and layer generation) are kept;
    ``overwrite`` meshes every block again. Returns a summary ``{"datastack",
    "layer", "blocks", "meshed_blocks", "fragments", "objects", "bytes", "seconds", "voxels",
    "voxels_per_second" (of the blocks meshed now), "block", "info_dir", "provenance"}``,
    also recorded in ``<layer>/mesh/meta.json``. Raises NotFound, InvalidArgument (not a segmentation
    layer, bad block), NotReady (layer still ingesting).
    """
    from neurolake.jobs import dask_client, run_tasks
    from neurolake.provenance import layer_identity, record
    from neurolake.volumes.store import task_spec

    la = _layer(lake, datastack, layer)
    size = tuple(int(s) for s in la.size(0))
    blk = _check_block(block, size)
    meta = _read_meta(la)
    simplify = _check_simplify(simplify)
    if meta is not None and (overwrite or tuple(meta.get("block", ())) != blk or meta.get("format_version") != FORMAT_VERSION
                             or meta.get("simplify") != simplify
                             or meta.get("layer_generation") != la.generation()):
        remove_tree(_mesh_dir(la) / "blocks")  # other block size or the layer changed
        _forget_index(lake, la)
        meta = None
    if meta is None:
        meta = _new_meta(la, blk, draco, "build", simplify)
    meta.update(draco=bool(draco), info_dir=DRACO_DIR if draco else MESH_DIR, mode="build")
    blocks_dir = _mesh_dir(la) / "blocks"
    grid = _grid(size, blk)
    stored = set(_block_names(blocks_dir))  # one listing (a LIST on object storage)
    todo = [b for b in grid if f"{_block_name(b)}.parquet" not in stored]
    meta["progress"] = {"blocks": len(grid), "done": len(grid) - len(todo)}
    _write_meta(la, meta)
    res = tuple(float(r) for r in la.voxel_size)
    t0 = time.perf_counter()
    done = len(grid) - len(todo)
    nbytes = 0

    last_write = time.monotonic()

    def on_done(r):
        nonlocal done, nbytes, last_write
        done += 1
        nbytes += r[2]
        if progress:
            progress(done, len(grid))
        if time.monotonic() - last_write > 2.0:  # `neurolake mesh info` shows a running build's progress
            meta["progress"] = {"blocks": len(grid), "done": done}
            _write_meta(la, meta)
            last_write = time.monotonic()

    if todo:  # a job row (kind mesh) counts the blocks' tasks: `neurolake jobs`, GET /api/v1/jobs
        from neurolake.jobs.records import job

        spec_json = task_spec(la.root, 0)
        with dask_client(scheduler) as client, job(lake, "mesh", datastack=datastack, target=layer, user=author,
                                                   scheduler=scheduler or "local") as j:
            run_tasks(client, _block_task, [(spec_json, b, size, blk, res, str(blocks_dir), simplify)
                                            for b in todo], on_done, job=j)
    seconds = time.perf_counter() - t0
    _forget_index(lake, la)
    idx = _index(lake, la)
    summary = {"datastack": datastack, "layer": layer, "blocks": len(grid), "meshed_blocks": len(todo),
               "fragments": int(len(idx.seg)), "objects": int(len(np.unique(idx.seg))),
               "bytes": int(idx.nbytes.sum()), "seconds": round(seconds, 3), "voxels": int(np.prod(size)),
               "voxels_per_second": round(int(np.prod(size)) * len(todo) / len(grid) / max(seconds, 1e-9)),
               "block": list(blk), "info_dir": meta["info_dir"]}
    meta["complete"] = True
    meta["progress"] = {"blocks": len(grid), "done": len(grid)}
    meta["provenance"] = record("mesh", inputs=[{"datastack": datastack, "layer": layer,
                                                 "identity": layer_identity(lake, la)}],
                                params={"block": list(blk), "mip": 0, "draco": bool(draco), "mesher": "zmesh",
                                        "close": True, "simplify_max_error_nm": simplify},
                                user=author, result=dict(summary))
    _write_meta(la, meta)
    summary["provenance"] = meta["provenance"]
    return summary


def mesh_info(lake, datastack: str, layer: str) -> dict[str, Any]:
    """``<layer>/mesh/meta.json``: block size, resolution, info dir, progress, provenance. Raises NotFound
    when the layer has no meshes."""
    la = _layer(lake, datastack, layer)
    meta = _read_meta(la)
    if meta is None:
        raise NotFound(f"layer {datastack}/{layer} has no meshes; build them with "
                       f"`neurolake mesh build -d {datastack} -l {layer}`", datastack=datastack, layer=layer)
    return meta


def has_meshes(lake, datastack: str, layer: str) -> bool:
    try:
        mesh_info(lake, datastack, layer)
        return True
    except NotFound:
        return False


def _ensure_blocks(lake, la, blocks: set[tuple[int, int, int]]) -> int:
    """Mesh the ``blocks`` of ``la`` that are not stored yet, here (on demand); returns how many were meshed."""
    meta = _read_meta(la)
    if meta is None:
        with _write_lock:
            meta = _read_meta(la)
            if meta is None:
                meta = _new_meta(la, _check_block(None, la.size(0)), False, "on-demand")
                _write_meta(la, meta)
    idx = _index(lake, la)
    todo = sorted(b for b in blocks if _block_name(b) not in idx.done)
    if not todo:
        return 0
    size, blk, res = tuple(la.size(0)), tuple(meta["block"]), tuple(meta["resolution"])
    blocks_dir = _mesh_dir(la) / "blocks"
    for b in todo:
        parts, cols = _mesh_block(lambda box: la.cutout(*box), b, size, blk, res, meta.get("simplify"))
        _store_block(blocks_dir, b, parts, cols)
    _forget_index(lake, la)
    return len(todo)


# -------------------------------------------------------------------------------------------------
# layer meshes (segment ids of the layer)
# -------------------------------------------------------------------------------------------------
def _segment_id(value: Any, field: str = "segment_id") -> int:
    from neurolake.base.integers import UINT64_MAX, whole

    return whole(value, field, 0, UINT64_MAX)


def segment_fragments(lake, datastack: str, layer: str, segment_id: int) -> list[str]:
    """Fragment keys ``"{id}:0:{bx}_{by}_{bz}"`` of object ``segment_id`` of a meshed layer (the legacy
    manifest). Raises NotFound (no meshes; an id without voxels has no fragments: NotFound too, as a
    missing manifest file)."""
    la = _layer(lake, datastack, layer)
    if _read_meta(la) is None:
        mesh_info(lake, datastack, layer)  # NotFound with the build hint
    sid = _segment_id(segment_id)
    idx = _index(lake, la)
    rows = idx.rows(sid)
    if not len(rows):
        raise NotFound(f"segment {sid} has no mesh in {datastack}/{layer}", segment_id=sid)
    return [f"{sid}:0:{idx.names[idx.block[i]]}" for i in rows]


def _fragment(lake, la, key: str) -> bytes:
    m = _KEY.match(key)
    if not m:
        raise NotFound(f"{key!r} is not a mesh fragment key ({{id}}:0:{{bx}}_{{by}}_{{bz}})", key=key)
    sid, name = int(m.group(1)), f"{m.group(2)}_{m.group(3)}_{m.group(4)}"
    idx = _index(lake, la)
    rows = idx.rows(sid)
    hit = [i for i in rows if idx.names[idx.block[i]] == name]
    if not hit:
        raise NotFound(f"mesh fragment {key} does not exist in {la.datastack}/{la.name}", key=key)
    i = hit[0]
    off, n = int(idx.offset[i]), int(idx.nbytes[i])
    path = _mesh_dir(la) / "blocks" / f"{name}.bin"
    try:
        if is_s3(path):  # one ranged GET
            data = path.fs.cat_file(path.path, start=off, end=off + n) if n else b""
        else:
            with open(path, "rb") as fh:
                fh.seek(off)
                data = fh.read(n)
    except FileNotFoundError:
        raise NotFound(f"mesh fragment {key} was removed (meshes rebuilt); reload", key=key) from None
    if len(data) != n:
        raise Conflict(f"mesh fragment {key} is being rewritten; retry", key=key)
    return data


def layer_fragment(lake, datastack: str, layer: str, key: str) -> bytes:
    """Bytes (legacy precomputed fragment, see module doc) of fragment ``key`` of a meshed layer. Raises NotFound."""
    return _fragment(lake, _layer(lake, datastack, layer), key)


def _join(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One mesh of fragments: vertices (N, 3) float32 nm with the shared block-face vertices merged, faces (M, 3)."""
    vs, fs, n = [], [], 0
    for data in parts:
        v, f = decode_fragment(data)
        vs.append(v)
        fs.append(f.astype(np.int64) + n)
        n += len(v)
    if not vs:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32)
    v = np.ascontiguousarray(np.concatenate(vs), dtype=np.float32)
    f = np.concatenate(fs)
    _, first, inverse = np.unique(v.view(np.dtype((np.void, 12))).ravel(), return_index=True, return_inverse=True)
    return v[first], inverse.reshape(-1)[f].astype(np.uint32)


def segment_mesh(lake, datastack: str, layer: str, segment_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole mesh of object ``segment_id``: (vertices (N, 3) float32 x, y, z nm, faces (M, 3) uint32),
    fragments joined and block-face vertices merged. Raises NotFound."""
    la = _layer(lake, datastack, layer)
    return _join([_fragment(lake, la, k) for k in segment_fragments(lake, datastack, layer, segment_id)])


# -------------------------------------------------------------------------------------------------
# proofread roots
# -------------------------------------------------------------------------------------------------
def _seg_layer(lake, datastack: str):
    from neurolake.proofreading import segmentation

    seg = segmentation(lake, datastack)  # NotFound
    return seg, _layer(lake, datastack, seg.layer)


def root_fragments(lake, datastack: str, root_id: int, timestamp: Any = None) -> list[str]:
    """Fragment keys ``"{supervoxel}:0:{bx}_{by}_{bz}"`` whose union is the mesh of proofread root ``root_id``
    (the fragments of its supervoxels, :meth:`Segmentation.leaves`), sorted. Supervoxels without stored
    fragments are meshed now (the blocks of the supervoxel layer that hold them). Root ids are immutable,
    so ``timestamp`` is only validated. Raises NotFound (datastack, no proofreadable segmentation, unknown
    root), InvalidArgument (malformed root id or timestamp)."""
    from neurolake.base.time import parse_timestamp

    parse_timestamp(timestamp)
    seg, la = _seg_layer(lake, datastack)
    root_id = _segment_id(root_id, "root_id")
    leaves = seg.leaves(root_id)  # NotFound for an unknown root
    _mesh_supervoxels(lake, seg, la, leaves)  # every block that may hold a piece of a leaf (usually all done)
    idx = _index(lake, la)
    keys = []
    for sv in leaves:
        for i in idx.rows(int(sv)):
            keys.append(f"{int(sv)}:0:{idx.names[idx.block[i]]}")
    return sorted(keys)


def _mesh_supervoxels(lake, seg, la, svs: np.ndarray) -> int:
    """Mesh the blocks that may hold a piece of ``svs`` and are not meshed yet (a supervoxel's bounding box from
    the segmentation graph, widened by one voxel downwards: a block reads one voxel past its upper faces)."""
    meta = _read_meta(la)
    size = tuple(la.size(0))
    blk = tuple(meta["block"]) if meta else _check_block(None, size)
    st = seg.state()
    with st.lock:
        pos = st.index(svs, missing="mask")
        bbox = st.bbox
    grid = set(_grid(size, blk))
    need: set[tuple[int, int, int]] = set()
    if bbox is None:
        need = grid  # no bounding boxes: mesh everything once
    else:
        bb = bbox[pos[pos >= 0]].astype(np.int64)
        bb = bb[bb[:, 1] > bb[:, 0]]
        bs = np.repeat(np.asarray(blk, np.int64), 2)
        lo = np.maximum(bb[:, 0::2] - 1, 0) // bs[0::2]
        hi = (bb[:, 1::2] - 1) // bs[0::2]
        for row in np.unique(np.concatenate([lo, hi], axis=1), axis=0):
            need.update((bx, by, bz) for bz in range(row[2], row[5] + 1) for by in range(row[1], row[4] + 1)
                        for bx in range(row[0], row[3] + 1))
    done = _index(lake, la).done
    if all(_block_name(b) in done for b in need & grid):
        return 0
    return _ensure_blocks(lake, la, need & grid)


def fragment_bytes(lake, datastack: str, key: str) -> bytes:
    """Bytes of fragment ``key`` (from :func:`root_fragments`) of the datastack's supervoxel layer: a legacy
    precomputed fragment (see module doc). Raises NotFound (unknown or malformed key)."""
    _, la = _seg_layer(lake, datastack)
    return _fragment(lake, la, key)


def root_mesh(lake, datastack: str, root_id: int, timestamp: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The mesh of proofread root ``root_id``: (vertices (N, 3) float32 x, y, z nm, faces (M, 3) uint32)."""
    keys = root_fragments(lake, datastack, root_id, timestamp)
    return _join([fragment_bytes(lake, datastack, k) for k in keys])


# -------------------------------------------------------------------------------------------------
# Draco, multi-resolution format
# -------------------------------------------------------------------------------------------------
def multilod_manifest(chunk_shape, grid_origin, fragment_sizes: list[int]) -> bytes:
    """Manifest (``{id}.index``) of one level of detail with one fragment per entry of ``fragment_sizes``
    at grid position (0, 0, 0) — our case has one fragment (spec: Neuroglancer multi-resolution meshes)."""
    n = len(fragment_sizes)
    out = struct.pack("<3f", *chunk_shape) + struct.pack("<3f", *grid_origin)
    out += struct.pack("<I", 1) + struct.pack("<f", 1.0) + struct.pack("<3f", 0, 0, 0) + struct.pack("<I", n)
    out += np.zeros(3 * n, "<u4").tobytes() + np.asarray(fragment_sizes, "<u4").tobytes()
    return out


def draco_encode(vertices: np.ndarray, faces: np.ndarray, bits: int = QUANT_BITS
                 ) -> tuple[bytes, tuple[float, ...], tuple[float, ...]]:
    """Draco bytes of a mesh for the multi-resolution format: positions quantised to ``bits`` bits over the
    mesh's bounding box (integer stored-model coordinates). Returns (bytes, chunk_shape, grid_origin) nm."""
    import DracoPy

    lo = vertices.min(axis=0).astype(np.float64)
    extent = np.maximum(vertices.max(axis=0) - lo, 1e-3)
    top = (1 << bits) - 1
    q = np.rint((vertices - lo) / extent * top).astype(np.float32)
    data = DracoPy.encode(q, np.asarray(faces, np.uint32).ravel(), quantization_bits=bits, compression_level=7,
                          quantization_range=float(top), quantization_origin=[0.0, 0.0, 0.0])
    return bytes(data), tuple(float(e) for e in extent), tuple(float(v) for v in lo)


def draco_manifest_and_data(vertices: np.ndarray, faces: np.ndarray) -> tuple[bytes, bytes]:
    """(``{id}.index`` manifest, ``{id}`` data) of one mesh in ``neuroglancer_multilod_draco``."""
    data, shape, origin = draco_encode(vertices, faces)
    return multilod_manifest(shape, origin, [len(data)]), data


def draco_info() -> dict[str, Any]:
    """``mesh_draco/info``: multi-resolution Draco meshes in nm (identity transform)."""
    return {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": QUANT_BITS,
            "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "lod_scale_multiplier": 1.0}


def legacy_info() -> dict[str, Any]:
    """``mesh/info``: legacy single-resolution meshes."""
    return {"@type": "neuroglancer_legacy_mesh"}


class _DracoCache:
    """Per-lake LRU of encoded Draco meshes (a client reads ``{id}.index`` then ``{id}``: encode once)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        from collections import OrderedDict

        self.lock = threading.Lock()
        self.items: OrderedDict = OrderedDict()
        self.bytes = 0
        self.max_bytes = max_bytes

    def get(self, key, make):
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
                return hit
        val = make()
        with self.lock:
            self.items[key] = val
            self.bytes += len(val[0]) + len(val[1])
            while self.bytes > self.max_bytes and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.bytes -= len(old[0]) + len(old[1])
        return val


def segment_draco(lake, datastack: str, layer: str, segment_id: int) -> tuple[bytes, bytes]:
    """(``{id}.index`` manifest, ``{id}`` Draco data) of object ``segment_id`` in ``neuroglancer_multilod_draco``
    (one level of detail, one fragment), encoded from the stored fragments. Raises NotFound."""
    la = _layer(lake, datastack, layer)
    sid = _segment_id(segment_id)
    keys = segment_fragments(lake, datastack, layer, sid)
    cache = lake.state("meshes.draco", _DracoCache)
    return cache.get((str(la.root), "seg", sid, tuple(keys), _index_stamp(lake, la)),
                     lambda: draco_manifest_and_data(*_join([_fragment(lake, la, k) for k in keys])))


def root_draco(lake, datastack: str, root_id: int, timestamp: Any = None) -> tuple[bytes, bytes]:
    """(``{id}.index`` manifest, ``{id}`` Draco data) of proofread root ``root_id`` (see :func:`root_fragments`)."""
    keys = root_fragments(lake, datastack, root_id, timestamp)
    if not keys:
        raise NotFound(f"root {root_id} has no mesh (its supervoxels have no voxels)", root_id=root_id)
    _, la = _seg_layer(lake, datastack)
    cache = lake.state("meshes.draco", _DracoCache)
    return cache.get((str(la.root), "root", int(root_id), tuple(keys), _index_stamp(lake, la)),
                     lambda: draco_manifest_and_data(*_join([_fragment(lake, la, k) for k in keys])))


def _index_stamp(lake, la) -> Any:
    blocks = _mesh_dir(la) / "blocks"
    if is_s3(blocks):  # the stamp of the (recently checked) cached index
        _index(lake, la)
        hit = lake.state("meshes.index", dict).get(str(blocks))
        return hit[0] if hit else None
    try:
        return blocks.stat().st_mtime_ns
    except FileNotFoundError:
        return None
