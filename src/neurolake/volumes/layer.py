"""A layer: arbitrary cutouts and writes at any mip of one stored volume.

Coordinates are named x, y, z in voxels of the requested mip, as half-open ``(start, stop)`` ranges
(OCP/BossDB/Neuroglancer convention). Arrays in and out are C-order numpy arrays with axes
**(z, y, x)** (BossDB/intern and OME-Zarr order).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from neurolake.errors import Conflict, InvalidArgument, NotReady, OutOfBounds
from neurolake.storage.config import is_s3
from neurolake.storage.files import write_text_atomic
from neurolake.volumes.pyramid import update_region
from neurolake.volumes.spec import LayerSpec
from neurolake.volumes.store import open_array

Range = tuple[int, int]
GENERATION = "generation"  # file in the layer folder replaced after every landed write (see Layer.generation)
DIRTY = "dirty"  # folder of pending pyramid updates: one JSON file per write whose coarser mips may be stale
DASK_REGION_BYTES = 1 << 30  # writes touching at least this much (at their mip) update the pyramid on Dask
DASK_REGION_SCHEDULER: str | None = None  # the cluster for those updates (neurolake.jobs: None = a local one)


def check_range(axis: str, value: Any, size: int) -> Range:
    """Validate one half-open range ``(start, stop)`` against ``[0, size)``.

    Raises :class:`InvalidArgument` for a malformed or empty/inverted range and :class:`OutOfBounds`
    when it leaves the bounds; both name the axis, the value and the bounds.
    """
    try:
        start, stop = value
        if isinstance(start, bool) or isinstance(stop, bool):
            raise TypeError
        if int(start) != start or int(stop) != stop:
            raise TypeError
        start, stop = int(start), int(stop)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{axis} range must be two whole numbers (start, stop), got {value!r}",
                              field=axis, value=repr(value)) from exc
    if stop <= start:
        raise InvalidArgument(f"{axis} range {start}:{stop} is empty or inverted; stop must be greater than start",
                              field=axis, value=[start, stop])
    if start < 0 or stop > size:
        raise OutOfBounds(f"{axis} range {start}:{stop} is outside the layer bounds {axis} = 0:{size}",
                          field=axis, value=[start, stop], bounds=[0, size])
    return start, stop


class Layer:
    """One volume of a datastack. Obtain with ``lake.layer(datastack, name)``.

    ``layer.cutout(x=(x0, x1), y=(y0, y1), z=(z0, z1), mip=0)`` and ``layer[z0:z1, y0:y1, x0:x1]``
    return (z, y, x) arrays; ``layer.write(array, x0=, y0=, z0=, mip=0)`` writes a box.
    """

    def __init__(self, *, datastack: str, name: str, spec: LayerSpec, root: Path | Any, status: str,
                 context: ts.Context, description: str = "", progress: dict | None = None,
                 provenance: dict | None = None, created: Any = None, locks: Any = None,
                 tokens: Any = None) -> None:
        self.datastack = datastack
        self.name = name
        self.spec = spec
        self.root = root if is_s3(root) else Path(root)  # a folder, or a upath.UPath under an s3:// lake
        # on object storage (no file locks, a GET per small file): the lake's database locks and change tokens
        # (neurolake.db.locks.AdvisoryLocks, ChangeTokens) instead of flock and the generation file
        self._locks = locks if is_s3(root) else None
        self._tokens = tokens if is_s3(root) else None
        self._token_name = f"layer:{root}"
        self.status = status
        self.description = description
        self.progress = progress or {}
        self.provenance = provenance or {}
        self.created = created
        self._context = context
        self._arrays: dict[int, ts.TensorStore] = {}
        self._generation_seen: str | None = None
        self._lock = threading.Lock()

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def layer_type(self) -> str:
        return self.spec.layer_type

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.spec.dtype)

    @property
    def num_mips(self) -> int:
        return len(self.spec.mips)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """(x, y, z) nm per voxel at mip 0."""
        return self.spec.voxel_size_nm

    def size(self, mip: int = 0) -> tuple[int, int, int]:
        """(x, y, z) size in voxels at ``mip``."""
        return self.spec.mips[self._check_mip(mip)].size_xyz

    def shape(self, mip: int = 0) -> tuple[int, int, int]:
        """(z, y, x) array shape at ``mip``."""
        return self.spec.mips[self._check_mip(mip)].shape_zyx

    def info(self) -> dict[str, Any]:
        """JSON metadata: type, dtype, bounds, chunking and voxel size per mip, status, provenance."""
        from neurolake.db.base import as_utc  # the database layer only when metadata is asked for

        s = self.spec
        return {
            "datastack": self.datastack,
            "name": self.name,
            "description": self.description,
            "type": s.layer_type,
            "dtype": s.dtype,
            "status": self.status,
            "voxel_size_nm": list(s.voxel_size_nm),
            "bounds": {"x": [0, s.size_xyz[0]], "y": [0, s.size_xyz[1]], "z": [0, s.size_xyz[2]]},
            "compression": {"codec": s.compression, "level": s.compression_level},
            "axes": ["z", "y", "x"],
            "mips": [{"mip": m.mip, "size_xyz": list(m.size_xyz), "shape_zyx": list(m.shape_zyx),
                      "voxel_size_nm": list(m.voxel_size_nm), "downsample_factor_xyz": list(m.factor_xyz),
                      "chunk_zyx": list(m.chunk_zyx), "shard_zyx": list(m.shard_zyx)} for m in s.mips],
            "created": as_utc(self.created).isoformat() if self.created else None,
            "provenance": self.provenance,
            "progress": self.progress if self.status != "ready" else {},
        }

    def __repr__(self) -> str:
        x, y, z = self.spec.size_xyz
        return (f"<Layer {self.datastack}/{self.name} {self.layer_type} {self.spec.dtype} "
                f"x={x} y={y} z={z} mips={self.num_mips} {self.status}>")

    # -- arrays -----------------------------------------------------------------------------------
    def _check_mip(self, mip: Any) -> int:
        if isinstance(mip, bool) or not isinstance(mip, int | np.integer) or not 0 <= mip < len(self.spec.mips):
            raise InvalidArgument(f"mip {mip!r} does not exist; this layer has mips 0..{len(self.spec.mips) - 1}",
                                  field="mip", value=repr(mip), allowed=[0, len(self.spec.mips) - 1])
        return int(mip)

    def _check_ready(self) -> None:
        if self.status != "ready":
            done = self.progress.get("slabs_done")
            total = self.progress.get("slabs_total")
            where = f" ({done}/{total} slabs written)" if total else ""
            raise NotReady(
                f"layer {self.datastack}/{self.name} is {self.status}{where}: its ingest did not finish; "
                "run the same `neurolake ingest` command again to resume, or use --overwrite",
                datastack=self.datastack, layer=self.name, status=self.status)

    def _check_current(self) -> None:
        """After a read: the layer's folder must still exist. ``--overwrite`` swaps the catalog row to a new
        folder and renames the old one away, so a reader holding this (old) object would otherwise get
        fill values for the vanished files instead of an error."""
        if self._tokens is not None and self._tokens.get(self._token_name) is not None:
            return  # the token of a replaced or deleted layer is dropped with it
        if not (self.root / "zarr.json").exists():
            raise Conflict(f"layer {self.datastack}/{self.name} was replaced or deleted while it was read; "
                           "get it again (lake.layer) and repeat the read", datastack=self.datastack,
                           layer=self.name)

    def _cached_array(self, mip: int) -> tuple[ts.TensorStore | None, str | None]:
        """Object storage: ``(array, token)`` when ``mip``'s array is open and was validated at a token of no
        write in flight; a read from it is then confirmed by one token read after it (:meth:`_confirmed`)
        instead of one before and one after. ``(None, None)`` otherwise (and always on a local lake)."""
        seen = self._generation_seen
        if self._tokens is None or seen is None or seen.startswith("p"):
            return None, None
        return self._arrays.get(mip), seen

    def _confirmed(self, seen: str) -> bool:
        """After a read from :meth:`_cached_array`: True when the layer's token is still ``seen``, so no write
        started or landed since the array's caches were validated and the read is what a read after the token
        check would have returned (tokens change when a write starts and when it lands, and a killed writer
        leaves its pending token: so no pyramid update is pending either). Otherwise (also when the token is
        gone: the layer was replaced or deleted) the arrays are dropped and False is returned: the caller reads
        again the checked way, which raises Conflict for a replaced layer."""
        g = self._tokens.get(self._token_name)
        if g == seen:
            return True
        with self._lock:
            if self._generation_seen == seen:
                self._arrays = {}
                self._generation_seen = None
        return False

    def generation(self) -> str:
        """A token that changes whenever a write to this layer starts and lands, in this process or any other
        (the identity of the ``generation`` file the writer replaces). Caches of derived bytes (tiles,
        encoded chunks) key on it, so nothing stale is served after an acknowledged write."""
        if self._tokens is not None:  # object storage: a row of the catalog; "p…" while a write is in flight
            return self._tokens.get(self._token_name) or "0"
        try:
            st = os.stat(self.root / GENERATION)
        except FileNotFoundError:
            return "0"
        return f"{st.st_ino}.{st.st_mtime_ns}.{st.st_size}"

    def _bump_generation(self, pending: bool = False) -> None:
        if self._tokens is not None:
            self._tokens.set(self._token_name, ("p" if pending else "g") + uuid.uuid4().hex)
            return
        write_text_atomic(self.root / GENERATION, uuid.uuid4().hex)

    def _maybe_pending(self) -> bool:
        """Whether pyramid updates may be pending (cheap: on object storage the change token says so, a killed
        or failed writer leaves it pending; locally one listdir)."""
        if self._tokens is not None:
            return self.generation().startswith("p")
        return bool(self._dirty_names())

    def _dirty_names(self) -> list[str]:
        """Names of the pending-update entries (``dirty/*.json``): one listdir, or one LIST on object storage."""
        if self._locks is not None:
            folder = self.root / DIRTY
            try:  # one LIST request (UPath.iterdir would add a HEAD)
                return [k.rsplit("/", 1)[-1] for k in folder.fs.ls(folder.path, detail=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            return os.listdir(self.root / DIRTY)
        except FileNotFoundError:
            return []

    def _revalidate(self) -> None:
        """Before a read: when the layer's generation changed (a write landed or started, in any process) or a
        write is in flight or was killed (its pending entry exists), reopen the arrays, so chunks cached before
        now are revalidated (``recheck_cached_data: "open"``). One stat and one listdir per read."""
        g = self.generation()
        in_flight = g.startswith("p") if self._tokens is not None else bool(self._dirty_names())
        if g != self._generation_seen or in_flight:
            with self._lock:
                self._arrays = {}
                self._generation_seen = g

    def array(self, mip: int = 0) -> ts.TensorStore:
        """The tensorstore array (axes z, y, x) of ``mip``, opened once and reopened after any write to the
        layer (see :meth:`_revalidate`): what it reads is never older than the last landed write."""
        mip = self._check_mip(mip)
        self._revalidate()
        arr = self._arrays.get(mip)
        if arr is None:
            with self._lock:
                arr = self._arrays.get(mip)
                if arr is None:
                    arr = self._arrays[mip] = open_array(self.root, mip, self._context)
        return arr

    def check_box(self, x: Any, y: Any, z: Any, mip: int = 0) -> tuple[Range, Range, Range]:
        """Validate a box at ``mip``; returns ((x0, x1), (y0, y1), (z0, z1))."""
        sx, sy, sz = self.size(mip)
        return check_range("x", x, sx), check_range("y", y, sy), check_range("z", z, sz)

    def cutout(self, x: Range, y: Range, z: Range, mip: int = 0) -> np.ndarray:
        """Read the box ``x × y × z`` (half-open voxel ranges at ``mip``).

        Returns a C-order array of shape (z1 - z0, y1 - y0, x1 - x0) and the layer's dtype.
        Raises InvalidArgument (malformed/inverted range, unknown mip), OutOfBounds, NotReady, Conflict
        (the layer was replaced by an overwrite, or deleted, during the read).
        """
        self._check_ready()
        (x0, x1), (y0, y1), (z0, z1) = self.check_box(x, y, z, mip)
        arr, seen = self._cached_array(mip)
        if arr is not None:  # object storage, array open: read, then one token check
            out = arr[z0:z1, y0:y1, x0:x1].read().result()
            if self._confirmed(seen):
                return out
        if mip > 0:
            self._repair_overlapping(mip, ((z0, z1), (y0, y1), (x0, x1)))
        out = self.array(mip)[z0:z1, y0:y1, x0:x1].read().result()
        self._check_current()
        return out

    async def cutout_async(self, x: Range, y: Range, z: Range, mip: int = 0) -> np.ndarray:
        """:meth:`cutout` for asyncio code (same checks, result and errors): the read is awaited as a
        tensorstore future instead of blocking a thread, so a server answers small reads without a
        thread-pool hop. Opening an array for the first time and finishing pending pyramid updates (both
        blocking) run in a worker thread."""
        import asyncio

        self._check_ready()
        (x0, x1), (y0, y1), (z0, z1) = self.check_box(x, y, z, mip)
        arr, seen = self._cached_array(mip)
        if arr is not None:  # object storage, array open: read, then one token check
            out = await arr[z0:z1, y0:y1, x0:x1].read()
            if self._confirmed(seen):
                return out
        if mip > 0 and self._maybe_pending() and self.pending_updates():
            return await asyncio.to_thread(self.cutout, (x0, x1), (y0, y1), (z0, z1), mip)
        self._revalidate()
        arr = self._arrays.get(mip)
        if arr is None:
            arr = await asyncio.to_thread(self.array, mip)
        out = await arr[z0:z1, y0:y1, x0:x1].read()
        self._check_current()
        return out

    def read_points(self, points_zyx: np.ndarray, mip: int = 0) -> np.ndarray:
        """Values at integer voxel positions; ``points_zyx`` is (N, 3) in (z, y, x) order at ``mip``.

        Returns an (N,) array of the layer's dtype. Raises OutOfBounds naming the first bad row, Conflict
        (the layer was replaced by an overwrite, or deleted, during the read).
        """
        self._check_ready()
        pts = np.asarray(points_zyx)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InvalidArgument(f"points must be an (N, 3) array of z, y, x, got shape {pts.shape}",
                                  field="points", value=list(pts.shape))
        if len(pts) == 0:
            return np.zeros(0, dtype=self.dtype)
        pts = pts.astype(np.int64)
        if mip > 0 and self.pending_updates():
            self.repair()
        shape = np.array(self.shape(mip))
        bad = np.nonzero(((pts < 0) | (pts >= shape)).any(axis=1))[0]
        if len(bad):
            raise OutOfBounds(f"point {pts[bad[0]].tolist()} (z, y, x; row {int(bad[0])}) is outside the layer "
                              f"shape {shape.tolist()}", field="points", row=int(bad[0]), bounds=shape.tolist())
        arr = self.array(mip)
        out = arr.vindex[pts[:, 0], pts[:, 1], pts[:, 2]].read().result()
        self._check_current()
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """``layer[z0:z1, y0:y1, x0:x1]`` at mip 0 (axes z, y, x; integers drop that axis)."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 3:
            raise InvalidArgument(f"a layer has 3 axes (z, y, x), got {len(key)} indices", field="index")
        key = key + (slice(None),) * (3 - len(key))
        ranges, squeeze = [], []
        for axis, k, n in zip("zyx", key, self.shape(0), strict=True):
            if isinstance(k, slice):
                if k.step not in (None, 1):
                    raise InvalidArgument(f"{axis} slice step must be 1, got {k.step}", field=axis)
                ranges.append((0 if k.start is None else k.start, n if k.stop is None else k.stop))
            elif isinstance(k, int | np.integer):
                ranges.append((int(k), int(k) + 1))
                squeeze.append("zyx".index(axis))
            else:
                raise InvalidArgument(f"{axis} index must be an int or a slice, got {k!r}", field=axis)
        out = self.cutout(x=ranges[2], y=ranges[1], z=ranges[0])
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    def write(self, array: np.ndarray, x0: int = 0, y0: int = 0, z0: int = 0, mip: int = 0,
              update_mips: bool = True) -> None:
        """Write a (z, y, x) array with its corner at voxel (x0, y0, z0) of ``mip``.

        The box need not align to chunks or shards. With ``update_mips`` the coarser mips of the
        touched region are recomputed (area mean / mode). ``array.dtype`` must equal the layer's dtype
        (or be safely castable, e.g. uint8 into uint16); each shard file is replaced atomically, so a
        killed writer leaves every shard either old or new.
        Raises InvalidArgument (ndim, dtype), OutOfBounds, NotReady.
        """
        self._check_ready()
        with self._writing():
            self._write(array, x0, y0, z0, mip, update_mips)
        if self._tokens is not None and self._dirty_names():  # entries of killed writers: finish them now
            self.repair()

    def _writing(self) -> Any:
        """Held while shards are read, modified and written. A local folder needs nothing (tensorstore's file
        kvstore replaces each shard atomically and re-reads it if it changed meanwhile). Object storage has
        no such read-modify-write: the layer's writers take turns under a database lock (freed if its holder
        dies), so two writes of disjoint boxes in one shard both land; one that waits more than a minute gets
        a retryable Conflict (409)."""
        if self._locks is None:
            return contextlib.nullcontext()
        return self._locks.hold(f"layer-write:{self.root}", what=f"layer {self.datastack}/{self.name}")

    def _write(self, array: np.ndarray, x0: int, y0: int, z0: int, mip: int, update_mips: bool) -> None:
        arr = np.asarray(array)
        if arr.ndim != 3:
            raise InvalidArgument(f"array must have 3 axes (z, y, x), got shape {list(arr.shape)}",
                                  field="array", value=list(arr.shape))
        if arr.dtype != self.dtype:
            if not np.can_cast(arr.dtype, self.dtype, casting="safe"):
                raise InvalidArgument(
                    f"array dtype {arr.dtype} does not fit layer {self.datastack}/{self.name} of dtype {self.dtype}",
                    field="dtype", value=str(arr.dtype), allowed=str(self.dtype))
            arr = arr.astype(self.dtype)
        z, y, x = arr.shape
        box = self.check_box((x0, x0 + x), (y0, y0 + y), (z0, z0 + z), mip)
        (bx0, bx1), (by0, by1), (bz0, bz1) = box
        region = ((bz0, bz1), (by0, by1), (bx0, bx1))
        # (entry file, descriptor holding its lock until this write ends)
        # every write is recorded while in flight (readers in other processes revalidate while one exists);
        # the entry also carries the pyramid update that follows, when there are coarser mips to update
        pyramid = update_mips and mip + 1 < self.num_mips
        pending = self._mark_dirty(mip, region, pyramid)
        landed = False
        try:
            # before the write too: a writer killed part-way never bumps it afterwards, and bytes derived and
            # cached (in any process) before the write must not outlive it (TileService caches nothing while
            # an update is pending)
            self._bump_generation(pending=True)
            self.array(mip)[bz0:bz1, by0:by1, bx0:bx1].write(arr).result()
            if pyramid:
                self._update_pyramid(mip, region)
            pending[0].unlink(missing_ok=True)  # only now are the coarser mips right again
            landed = True
        finally:  # also after a partial failure: whatever landed must not be hidden by caches
            self._release(pending[1])  # a repair may take over an entry left by a failure
            self._bump_generation(pending=not landed)

    # -- pending pyramid updates (crash safety of writes) -----------------------------------------
    def _update_pyramid(self, mip: int, region: tuple[Range, Range, Range]) -> None:
        """Recompute the coarser mips over ``region`` ((z, y, x) voxel ranges at ``mip``): in this process, or —
        for a region of at least :data:`DASK_REGION_BYTES` — as Dask tasks, one per touched output shard, on
        a local cluster (:func:`neurolake.volumes.pyramid.update_region_on_dask`; same voxels either way)."""
        nbytes = int(np.prod([b - a for a, b in region])) * self.dtype.itemsize
        if nbytes >= DASK_REGION_BYTES:
            from neurolake.volumes.pyramid import update_region_on_dask

            update_region_on_dask(self.root, self.spec, region, mip=mip, scheduler=DASK_REGION_SCHEDULER)
            self._arrays = {}  # written by other processes: reopen (chunks cached before are revalidated)
            return
        arrays = [self.array(m) for m in range(mip, self.num_mips)]
        update_region(arrays, self.spec.mips[mip:], self.layer_type, region)

    def _release(self, handle: Any) -> None:
        """Release the lock on a pending entry (a file descriptor, or a database lock on object storage)."""
        if isinstance(handle, int):
            os.close(handle)
        else:
            handle.release()

    def _mark_dirty(self, mip: int, region: tuple[Range, Range, Range], pyramid: bool = True) -> tuple[Path, Any]:
        """Record, durably and before the write, that the coarser mips over ``region`` ((z, y, x) voxel
        ranges at ``mip``) are about to be stale; removed once the pyramid update has landed. Returns the
        entry file and a descriptor holding an exclusive ``flock`` on it until the writer closes it (or dies):
        repairs leave a live writer's entry alone (:meth:`_claim`)."""
        folder = self.root / DIRTY
        doc = json.dumps({"mip": mip, "box_zyx": [list(r) for r in region], "pyramid": pyramid})
        if self._locks is not None:  # object storage: the entry's lock is a database lock named after it
            path = folder / f"{uuid.uuid4().hex}.json"
            held = self._locks.hold(f"entry:{path}")
            try:
                path.write_text(doc)
            except BaseException:
                held.release()
                raise
            return path, held
        folder.mkdir(exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.json"
        tmp = folder / f".{path.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # locked before the entry is visible under its name
            os.write(fd, doc.encode())
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        return path, fd

    def _claim(self, path: Path) -> Any:
        """Lock a pending entry to repair it: a descriptor holding the lock, or None when its writer is still
        running (it holds the lock and finishes its own pyramid update) or the entry is gone meanwhile."""
        if self._locks is not None:
            held = self._locks.try_hold(f"entry:{path}")
            if held is not None and not path.exists():
                held.release()
                return None
            return held
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # its writer finished between our open and lock
            os.close(fd)
            return None
        return fd

    def pending_updates(self) -> list[tuple[Path, int, tuple[Range, Range, Range]]]:
        """Writes whose coarser mips were not updated yet (a writer killed between its mip and its pyramid
        update, or one in progress): ``(entry file, mip, ((z0, z1), (y0, y1), (x0, x1)))``."""
        names = self._dirty_names()
        out = []
        for n in names:
            if n.endswith(".json") and not n.startswith("."):
                path = self.root / DIRTY / n
                try:
                    doc = json.loads(path.read_text())
                except (FileNotFoundError, ValueError):  # finished meanwhile, or a torn temp file
                    continue
                if not doc.get("pyramid", True):  # a write with no pyramid update: only its in-flight marker
                    fd = self._claim(path)
                    if fd is not None:  # its writer is gone: nothing to finish
                        path.unlink(missing_ok=True)
                        self._release(fd)
                    continue
                out.append((path, int(doc["mip"]), tuple(tuple(r) for r in doc["box_zyx"])))
        return out

    def repair(self) -> int:
        """Recompute the coarser mips of every pending update (see :meth:`pending_updates`) whose writer is gone
        (killed or failed; a running writer's entry is left to it); returns how many were finished.
        ``neurolake repair``, opening a layer and reads of a stale region at a coarser mip call this."""
        done = 0
        for path, mip, region in self.pending_updates():
            fd = self._claim(path)
            if fd is None:
                continue
            try:
                with self._writing():
                    self._update_pyramid(mip, region)
                path.unlink(missing_ok=True)
            finally:
                self._release(fd)
            done += 1
        if done:
            self._bump_generation()
        return done

    def _repair_overlapping(self, mip: int, box: tuple[Range, Range, Range]) -> None:
        """Before reading ``box`` at coarse ``mip``: finish the pending updates that overlap it, so a read
        never returns a coarser mip that a killed write left stale."""
        if self._tokens is not None and not self._maybe_pending():
            return
        pending = self.pending_updates()
        if not pending:
            return
        f_to = self.spec.mips[mip].factor_xyz
        for path, m, region in pending:
            if m >= mip:
                continue
            f_from = self.spec.mips[m].factor_xyz
            scaled = [(a * ff // ft, -(-b * ff // ft)) for (a, b), ff, ft in
                      zip(region, f_from[::-1], f_to[::-1], strict=True)]
            if all(a < hi and lo < b for (a, b), (lo, hi) in zip(scaled, box, strict=True)):
                fd = self._claim(path)
                if fd is None:  # a running writer's entry: it updates the pyramid itself
                    continue
                try:
                    with self._writing():
                        self._update_pyramid(m, region)
                    path.unlink(missing_ok=True)
                finally:
                    self._release(fd)
                self._bump_generation()
