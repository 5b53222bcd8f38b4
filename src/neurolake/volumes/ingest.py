"""Ingest: stream a source into a new layer by z-slabs, then build its pyramid.

Memory is bounded whatever the volume size: the source is read in units of one shard depth of
sections; when such a slab would exceed the buffer budget (``NEUROLAKE_INGEST_BUFFER_BYTES``, default
256 MiB) it is split into y-bands of whole shard rows, so huge sections stream too. Every unit covers
whole shards (no read-modify-write), and the catalog records how many units are durable, so:

- a process killed or interrupted part-way leaves the layer in status ``ingesting`` (never readable
  as complete); running the same ingest again **resumes** after the last durable slab;
- bad data found part-way (a corrupt or mismatched slice) **rolls back**: the partial layer is
  deleted and the error says so.

``overwrite`` of a *ready* layer is atomic: the new volume is built aside in a fresh folder
``volumes/<layer>@<token>`` (recorded in the row's ``progress["replacing"]``) while the row keeps
pointing at the old data, then one catalog transaction switches the row's ``path``/``spec`` to it
(:meth:`neurolake.lake.Lake.replace_layer`) and the old folder is removed. Bad data part-way removes
only the new folder; a kill part-way leaves the old layer ready and readable, and the same
``--overwrite`` command resumes the replacement.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import AlreadyExists, InvalidArgument, NeurolakeError, NotFound, NotReady
from neurolake.provenance import record
from neurolake.storage.files import relative, remove_tree
from neurolake.volumes.layer import Layer
from neurolake.volumes.pyramid import build_pyramid
from neurolake.volumes.sources import Source, open_source
from neurolake.volumes.spec import DEFAULT_CHUNK_ZYX, DEFAULT_SHARD_ZYX, IMAGE_DTYPES, LayerSpec
from neurolake.volumes.store import create_arrays, make_context, open_array

log = logging.getLogger("neurolake.ingest")

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def target_dtype(src_dtype: np.dtype, layer_type: str, dtype: str | None) -> str:
    """The stored dtype: explicit ``dtype``, else the source's when allowed.

    Images keep uint8/uint16/float32 (float64 becomes float32). Segmentations are uint32 for integer
    sources of up to 32 bits and uint64 for 64-bit ones (ids are checked to be non-negative).
    """
    if dtype:
        return dtype
    src_dtype = np.dtype(src_dtype)
    if layer_type == "image":
        if src_dtype.name in IMAGE_DTYPES:
            return src_dtype.name
        if src_dtype == np.float64:
            return "float32"
        if src_dtype == np.bool_:
            return "uint8"
        raise InvalidArgument(f"source dtype {src_dtype} is not an image dtype ({', '.join(IMAGE_DTYPES)}); "
                              "pass --dtype to convert", field="dtype", value=str(src_dtype))
    if src_dtype.kind not in "uib":
        raise InvalidArgument(f"source dtype {src_dtype} cannot hold segment ids; segmentations need integers",
                              field="dtype", value=str(src_dtype))
    return "uint64" if src_dtype.itemsize == 8 else "uint32"


def convert(block: np.ndarray, dtype: str, layer_type: str, z0: int) -> np.ndarray:
    """Cast a slab to the stored dtype, refusing values that would change (negative ids, overflow)."""
    target = np.dtype(dtype)
    if block.dtype == target:
        return block
    if block.dtype.kind in "iu" and target.kind in "iu":
        lo, hi = (int(block.min()), int(block.max())) if block.size else (0, 0)
        info = np.iinfo(target)
        if lo < info.min or hi > info.max:
            what = "segment ids" if layer_type == "segmentation" else "values"
            raise InvalidArgument(f"{what} in sections {z0}..{z0 + len(block) - 1} range {lo}..{hi}, outside "
                                  f"{target} ({info.min}..{info.max})", field="dtype", value=dtype)
    return block.astype(target)


def ingest(lake, source: str | Source, datastack: str, layer: str, *, voxel_size: Any = None,
           layer_type: str = "image", dtype: str | None = None, chunk: Any = None, shard: Any = None,
           compression: str = "zstd", compression_level: int = 3, num_mips: int | None = None,
           description: str = "", overwrite: bool = False, scheduler: str | None = None,
           client: Any = None, buffer_bytes: int | None = None, progress: Progress | None = None, say: Callable[[str], None] | None = None) -> Layer:
    """Ingest ``source`` (see :mod:`neurolake.volumes.sources`) as layer ``datastack/layer``.

    ``voxel_size`` is (x, y, z) nm at mip 0 (needed when the datastack does not exist yet; it is
    created). ``chunk``/``shard`` are (z, y, x) voxel shapes. The pyramid runs on ``client`` (an open
    ``distributed.Client``) if given, else on a cluster made from ``scheduler`` (see
    :mod:`neurolake.jobs`). Returns the ready :class:`Layer`.

    Raises NotFound/InvalidArgument/CorruptData for a bad source (nothing is kept), AlreadyExists
    when a ready layer of that name exists (unless ``overwrite``), NotReady when an interrupted ingest
    of a *different* source holds the name. With ``overwrite`` a ready layer is replaced atomically:
    on any error or kill it keeps its previous data (see the module docstring).
    """
    from neurolake.jobs.records import job

    say = say or log.info
    src = source if isinstance(source, Source) else open_source(source)
    try:
        # a job row (kind ingest) with the progress of every phase: mip 0 slabs, then the pyramid's tasks
        with job(lake, "ingest", datastack=datastack, target=layer,
                 scheduler=scheduler or ("client" if client is not None else "local")) as j:
            return _ingest(lake, src, datastack, layer, voxel_size=voxel_size, layer_type=layer_type, dtype=dtype,
                           chunk=chunk, shard=shard, compression=compression, compression_level=compression_level,
                           num_mips=num_mips, description=description, overwrite=overwrite, scheduler=scheduler,
                           client=client, buffer_bytes=buffer_bytes, progress=j.progress(progress), say=say)
    finally:
        src.close()


def _voxel_size_of(ds: Any) -> Any:
    info = ds.info() if hasattr(ds, "info") else ds  # a Datastack object, or the older info dict
    return info["voxel_size_nm"]


def _ingest(lake, src: Source, datastack: str, layer: str, *, voxel_size, layer_type, dtype, chunk, shard,
            compression, compression_level, num_mips, description, overwrite, scheduler, client, buffer_bytes,
            progress, say) -> Layer:
    try:
        ds = lake.datastack(datastack)
    except NotFound:
        if voxel_size is None:
            raise InvalidArgument(f"datastack {datastack!r} does not exist yet: give --voxel-size X,Y,Z (nm) to "
                                  "create it", field="voxel_size") from None
        ds = lake.create_datastack(datastack, voxel_size)
    vs = voxel_size if voxel_size is not None else _voxel_size_of(ds)
    z, y, x = src.shape
    spec = LayerSpec(layer_type=layer_type, dtype=target_dtype(src.dtype, layer_type, dtype), size_xyz=(x, y, z),
                     voxel_size_nm=tuple(vs), chunk_zyx=tuple(chunk or DEFAULT_CHUNK_ZYX),
                     shard_zyx=tuple(shard or DEFAULT_SHARD_ZYX), compression=compression,
                     compression_level=compression_level, num_mips=num_mips)
    slab, shard_y = spec.mips[0].shard_zyx[0], spec.mips[0].shard_zyx[1]
    budget = buffer_bytes or lake.settings.ingest_buffer_bytes
    row_bytes = slab * x * max(np.dtype(src.dtype).itemsize, np.dtype(spec.dtype).itemsize)
    band_rows = min(y, shard_y * max(1, budget // max(1, row_bytes * shard_y)))
    params = {"layer_type": layer_type, "dtype": spec.dtype, "voxel_size_nm": list(spec.voxel_size_nm),
              "chunk_zyx": list(spec.chunk_zyx), "shard_zyx": list(spec.shard_zyx), "compression": compression,
              "compression_level": compression_level, "num_mips": len(spec.mips)}
    fresh_progress = {"source": src.description, "fingerprint": src.fingerprint, "params": params,
                      "phase": "mip0", "band_rows": band_rows, "slabs_done": 0}

    start = 0
    try:
        existing = lake.layer(datastack, layer)
    except NotFound:
        existing = None
    # Overwriting a ready layer builds the new one aside (under a fresh folder recorded in the row's
    # progress as "replacing") and swaps the row to it in one catalog transaction once complete: until
    # then readers keep the old data, and a failure or kill part-way leaves the old layer as it was.
    replacing = existing is not None and overwrite and existing.status == "ready"
    resumed = False
    if existing is not None and not overwrite:
        prog = existing.progress
        if existing.status == "ready":
            pending = " (an interrupted overwrite of it can be resumed with --overwrite)" if prog.get("replacing") else ""
            raise AlreadyExists(f"layer {datastack}/{layer} already exists; use --overwrite to replace it{pending}",
                                datastack=datastack, layer=layer)
        if prog.get("fingerprint") != src.fingerprint or prog.get("params") != params:
            raise NotReady(f"layer {datastack}/{layer} holds an interrupted ingest of another source or with other "
                           f"parameters ({prog.get('source')}); use --overwrite to replace it",
                           datastack=datastack, layer=layer)
        start = int(prog.get("slabs_done", 0))
        band_rows = int(prog.get("band_rows", band_rows))
        fresh_progress["band_rows"] = band_rows
        spec = existing.spec
        resumed = True
    elif replacing:
        prev = existing.progress.get("replacing") or {}
        if (prev.get("fingerprint") == src.fingerprint and prev.get("params") == params and prev.get("path")
                and (lake.root / prev["path"] / "zarr.json").exists()):
            start = int(prev.get("slabs_done", 0))
            band_rows = int(prev.get("band_rows", band_rows))
            fresh_progress["band_rows"] = band_rows
            spec = LayerSpec.from_json(prev["spec"])
            resumed = True
    elif existing is not None:  # --overwrite of an unfinished ingest: nothing readable to keep
        lake.delete_layer(datastack, layer)
    n_bands = -(-y // band_rows)
    total = -(-z // slab) * n_bands
    fresh_progress["slabs_total"] = total

    if replacing:
        if resumed:
            rel = prev["path"]
            say(f"resuming the interrupted overwrite of {datastack}/{layer} after slab {start}/{total}; "
                "the layer keeps its previous data until the new one is complete")
        else:
            # '@' is not allowed in layer names, so this folder can belong to no other layer
            rel = relative(lake.layer_path(datastack, f"{layer}@{secrets.token_hex(6)}"), lake.root)
            # record the folder before creating it: every folder that exists is known to the catalog
            lake.update_layer(datastack, layer, progress={"replacing": fresh_progress | {"path": rel,
                                                                                          "spec": spec.to_json()}})
            create_arrays(lake.root / rel, spec, layer, lake.context, lake.storage)
        fresh_progress |= {"path": rel, "spec": spec.to_json()}

        def save(p: dict) -> None:
            lake.update_layer(datastack, layer, progress={"replacing": p})
    else:
        if resumed:
            say(f"resuming the interrupted ingest of {datastack}/{layer} after slab {start}/{total}")
        else:
            lake.create_layer(datastack, layer, spec, description=description, progress=fresh_progress)
        rel = relative(lake.layer(datastack, layer).root, lake.root)

        def save(p: dict) -> None:
            lake.update_layer(datastack, layer, progress=p)
    root = lake.root / rel
    sweep_layer_folders(lake, datastack, layer, keep=(root,))

    mip0 = open_array(root, 0, make_context(0, lake.storage if lake.remote else None))  # no chunk cache: written data is not kept in memory
    try:
        for i in range(start, total):
            zi, yi = divmod(i, n_bands)
            z0, z1 = zi * slab, min(z, (zi + 1) * slab)
            y0, y1 = yi * band_rows, min(y, (yi + 1) * band_rows)
            block = convert(src.read(z0, z1, y0, y1), spec.dtype, layer_type, z0)
            mip0[z0:z1, y0:y1].write(block).result()
            del block
            save(fresh_progress | {"slabs_done": i + 1})
            if progress:
                progress("mip0", i + 1, total)
    except NeurolakeError as exc:
        if replacing:
            lake.update_layer(datastack, layer, progress={})  # forget the replacement, then remove it
            remove_tree(root)
            exc.message = (f"{exc.message} (overwrite rolled back: layer {datastack}/{layer} keeps its previous "
                           "data)")
        else:
            lake.delete_layer(datastack, layer)
            exc.message = f"{exc.message} (ingest rolled back: layer {datastack}/{layer} was removed)"
        exc.args = (exc.message,)
        raise
    except BaseException:
        if replacing:
            say(f"overwrite of {datastack}/{layer} interrupted; the layer keeps its previous data. "
                "Run the same command again to resume the overwrite.")
        else:
            say(f"ingest of {datastack}/{layer} interrupted; it stays incomplete and is not readable. "
                "Run the same command again to resume.")
        raise

    save(fresh_progress | {"slabs_done": total, "phase": "pyramid"})
    done = {"n": 0, "total": 0}

    def on_level(mip: int, n: int) -> None:
        done["total"] += n

    def on_task(_nbytes: int) -> None:
        done["n"] += 1
        if progress:
            progress(f"mips 1-{len(spec.mips) - 1}", done["n"], max(done["total"], done["n"]))

    build_pyramid(root, spec, scheduler=scheduler, client=client, on_level=on_level, on_task=on_task)
    prov = record("ingest", inputs={"source": src.description, "fingerprint": src.fingerprint}, params=params,
                  scheduler=scheduler or "local")
    if replacing:
        return lake.replace_layer(datastack, layer, root, spec, description=description or existing.description,
                                  progress={}, provenance=prov)
    return lake.update_layer(datastack, layer, status="ready", progress={}, provenance=prov)


def sweep_layer_folders(lake, datastack: str, layer: str, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove folders of layer ``datastack/layer`` that its catalog row no longer points to.

    They are left behind by a process killed between an overwrite's catalog swap and the removal of
    the folder it replaced, or by an abandoned overwrite: ``volumes/<layer>`` and ``volumes/<layer>@*``
    other than the row's ``path``, its recorded replacement, and ``keep``. Returns the removed folders.
    Called by :func:`ingest` once it holds the layer's row; not on open (a running ingest in another
    process could own the folder).
    """
    def key(p: Any) -> str:
        return relative(p, lake.root)

    keep_set = {key(p) for p in keep}
    try:
        la = lake.layer(datastack, layer)
    except NotFound:
        return []
    keep_set.add(key(la.root))
    repl = la.progress.get("replacing") or {}
    if repl.get("path"):
        keep_set.add(key(lake.root / repl["path"]))
    base = lake.layer_path(datastack, layer)
    removed = []
    try:
        siblings = list(base.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        siblings = []
    for p in siblings:
        if (p.name == layer or p.name.startswith(layer + "@")) and key(p) not in keep_set:
            remove_tree(p)
            removed.append(p)
    return removed


def rebuild_pyramid(lake, datastack: str, layer: str, scheduler: str | None = None) -> Layer:
    """Recompute every mip > 0 of a layer from mip 0 (e.g. after bulk writes without updates)."""
    from neurolake.jobs.records import job

    la = lake.layer(datastack, layer)
    with job(lake, "pyramid", datastack=datastack, target=layer, scheduler=scheduler or "local") as j:
        n = {"done": 0, "total": 0}

        def on_level(_mip: int, tasks: int) -> None:
            n["total"] += tasks

        def on_task(_nbytes: int) -> None:
            n["done"] += 1
            j.phase("pyramid", n["done"], n["total"])

        build_pyramid(la.root, la.spec, scheduler=scheduler, on_level=on_level, on_task=on_task)
    prov = dict(la.provenance)
    prov["pyramid"] = record("pyramid", params={"scheduler": scheduler or "local"})
    return lake.update_layer(datastack, layer, provenance=prov)
