"""Annotation tables: one Delta Lake table per annotation table, with history and soft deletes.

Storage: ``<lake>/datastacks/<ds>/tables/<table>/`` is a Delta Lake table (https://delta.io,
written with delta-rs ``deltalake``); the catalog row (:class:`AnnotationTable`) holds its metadata.
Every write is one Delta commit (atomic: a killed writer leaves the previous version intact).
Updates insert a new row and mark the old one ``deleted`` with ``superceded_id`` pointing to the
new row; deletes only set ``deleted``. The rows valid at time ``T`` are those with
``created <= T`` and (``deleted`` null or ``deleted > T``) — CAVE's model, so nothing is ever lost
and any past state can be read back (Delta time travel gives each commit's exact state too).

Rows are sorted by a Morton (z-order) key of their primary point before each commit and written in
small Parquet row groups, so bounding-box queries skip most of the table using Parquet statistics.
"""

from __future__ import annotations

import datetime as dt
import queue
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import ColumnProperties, CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from sqlalchemy import select

from neurolake.annotations.models import AnnotationTable
from neurolake.annotations.paths import delta_options, same_file_key
from neurolake.annotations.schemas import (
    Schema,
    arrow_schema,
    check_properties,
    get_schema,
    id_columns,
    position_columns,
    validate,
)
from neurolake.base.boxes import bounding_box
from neurolake.base.integers import INT64_MAX, whole
from neurolake.base.names import check_name, not_found
from neurolake.base.results import Result
from neurolake.base.time import isoformat, parse_timestamp
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, OutOfBounds
from neurolake.provenance import current_user
from neurolake.storage.config import is_s3
from neurolake.storage.files import remove_tree

ROW_GROUP_ROWS = 4096
STREAM_SLICE = 262_144  # rows per pipelined batch when one append() is large
SORT_ROWS = 4_000_000  # rows Morton-sorted together in a stream load (bounds its memory: ~0.7 GB of synapses)
TARGET_FILE_BYTES = 64 << 20  # Parquet data files of ~64 MB
PERMISSIONS = ("PUBLIC", "GROUP", "PRIVATE")
# Write locks of table folders, shared by every Lake object of this process that opens the same folder.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


class _WriteLock:
    """Serialises the writes of one table: a lock of this process, and on a lake on object storage also the
    catalog's database lock ``delta:<table path>`` (delta-rs on S3 has no safe concurrent commit of its own)."""

    def __init__(self, lake: Any, path: Any) -> None:
        self._local = _lock(path)
        self._locks = getattr(lake, "locks", None) if getattr(lake, "remote", False) else None
        self._name = f"delta:{path}"
        self._held: Any = None

    def __enter__(self) -> _WriteLock:
        self._local.acquire()
        if self._locks is not None:
            try:
                self._held = self._locks.hold(self._name, timeout_s=120.0, what=f"annotation table {self._name[6:]}")
            except BaseException:
                self._local.release()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        held, self._held = self._held, None
        try:
            if held is not None:
                held.release()
        finally:
            self._local.release()


def _triple_nm(value: Any, what: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(v > 0 and np.isfinite(v) for v in vals):
        raise InvalidArgument(f"{what} must be 3 positive numbers (x, y, z nm), got {value!r}",
                              field=what, value=repr(value))
    return vals  # type: ignore[return-value]


def _spread3(v: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of the uint32 array ``v`` so that bit i moves to bit 3i, in place
    (``scratch``: a uint32 array of the same length; no temporaries: fresh 16 MB arrays page-fault)."""
    np.bitwise_and(v, np.uint32(0x3FF), out=v)
    for shift, mask in ((16, 0x030000FF), (8, 0x0300F00F), (4, 0x030C30C3), (2, 0x09249249)):
        np.left_shift(v, np.uint32(shift), out=scratch)
        np.bitwise_or(v, scratch, out=v)
        np.bitwise_and(v, np.uint32(mask), out=v)
    return v


def morton_key(points: Any, bits: int = 10) -> np.ndarray:
    """Z-order (Morton) key (uint64, 30 bits used) of x, y, z positions — an (N, 3) array or three
    length-N arrays — normalised to their own bounding box, 10 bits per axis (a 1024³ grid); NaN
    positions sort as 0."""
    axes = [points[:, i] for i in range(3)] if isinstance(points, np.ndarray) else list(points)
    n = len(axes[0]) if axes else 0
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    key = np.zeros(n, dtype=np.uint32)
    q = np.empty(n, dtype=np.uint32)
    scratch = np.empty(n, dtype=np.uint32)
    f = np.empty(n, dtype=np.float64)
    for i, v in enumerate(axes):
        v = np.asarray(v, dtype=np.float64)
        nan = np.isnan(v)
        if nan.any():
            v = np.where(nan, 0.0, v)
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo if hi > lo else 1.0
        np.subtract(v, lo, out=f)
        np.multiply(f, 1023.0 / span, out=f)
        q[:] = f  # truncation, as astype
        _spread3(q, scratch)
        np.left_shift(q, np.uint32(i), out=q)
        np.bitwise_or(key, q, out=key)
    return key.astype(np.uint64)


def zorder(key: np.ndarray) -> np.ndarray:
    """The stable argsort of 30-bit Morton keys, as two LSD radix passes on 16-bit digits (numpy's radix
    sort for 16-bit integers): ~4x faster than ``np.argsort(key, kind="stable")``, same result."""
    order = np.argsort(key.astype(np.uint16), kind="stable")  # the low 16 bits (astype truncates)
    if len(key) and int(key.max()) >> 16:
        order = order[np.argsort((key >> np.uint64(16)).astype(np.uint16)[order], kind="stable")]
    return order


def _sorted_batches(tab: pa.Table, order: np.ndarray | None, rows: int) -> Iterable[pa.RecordBatch]:
    """Record batches of ``tab.take(order)`` (``order`` None: ``tab`` as is), ``rows`` at a time.

    Columns that are all null or constant (one value, e.g. the commit time or the author) are sliced
    instead of gathered; the others are gathered with Arrow ``take`` (which releases the GIL, so the
    next slice is gathered while the Parquet writer encodes this one)."""
    n = len(tab)
    if order is None:
        yield from tab.combine_chunks().to_batches(max_chunksize=rows)
        return
    cols, const = [], []
    for f in tab.schema:
        c = tab.column(f.name)  # chunked as it came (no whole-column copy: fresh buffers page-fault)
        cols.append(c)
        same = c.null_count == n
        if not same and c.null_count == 0 and n and not pa.types.is_floating(f.type):
            mm = pc.min_max(c)
            same = mm["min"] == mm["max"]
        const.append(same)

    def one(c, k, idx, start, stop):
        part = c.slice(start, stop - start) if k else c.take(idx)
        return part.chunk(0) if part.num_chunks == 1 else part.combine_chunks()

    for start in range(0, n, rows):
        idx = pa.array(order[start:start + rows])
        stop = start + len(idx)
        yield pa.RecordBatch.from_arrays([one(c, k, idx, start, stop) for c, k in zip(cols, const, strict=True)],
                                         schema=tab.schema)


def _take(tab: pa.Table, order: np.ndarray) -> pa.Table:
    """``tab.take(order)``, fast for the common columns (all-null and constant ones are kept)."""
    return pa.Table.from_batches(list(_sorted_batches(tab, order, max(len(tab), 1))), schema=tab.schema)


def prefetch(items: Iterable[Any], depth: int = 2):
    """Iterate ``items`` in a background thread, ``depth`` items ahead; its exception is re-raised here.

    Used to pipeline reading, validating and writing: pyarrow, numpy and delta-rs release the GIL in
    their heavy parts, so the stages run on different cores.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as exc:  # handed to the consumer
            q.put((end, exc))

    th = threading.Thread(target=produce, name="annotations-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(timeout=0.1)


def _shift_rows(exc: Any, offset: int) -> Any:
    """``exc`` (a neurolake error naming ``rows [..]`` of a batch) renumbered to rows of the whole input,
    the batch starting at row ``offset``."""
    if offset:

        def fix(m):
            return "rows [" + ", ".join(str(int(v) + offset) for v in m.group(1).split(",")) + "]"

        exc.message = re.sub(r"rows \[([\d, ]+)\]", fix, exc.message)
        exc.args = (exc.message,)
        if isinstance(exc.detail.get("rows"), list):
            exc.detail["rows"] = [int(r) + offset for r in exc.detail["rows"]]
        exc.detail["row_offset"] = offset
    return exc


class Table:
    """One annotation table. Obtain with :func:`get_table` / :func:`create_table`.

    Positions are (x, y, z) **voxels at** ``voxel_size_nm`` (nm per voxel); multiply by
    ``voxel_size_nm`` for nm (or query with ``positions="nm"``). Ids are uint64.
    """

    def __init__(self, lake: Any, datastack: str, row: AnnotationTable) -> None:
        self.lake = lake
        self.datastack = datastack
        self.name = row.name
        self.schema: Schema = get_schema(row.schema_name)
        self.properties: dict[str, str] = dict(row.properties or {})
        self.voxel_size_nm: tuple[float, float, float] = tuple(row.voxel_size_nm)  # type: ignore
        self.segmentation_layer: str | None = row.segmentation_layer
        self.required_points: tuple[str, ...] = tuple(row.required_points)
        self.description = row.description
        self.owner = row.owner
        self.read_permission = row.read_permission
        self.write_permission = row.write_permission
        self.created = as_utc(row.created)
        self.path = lake.root / row.path if is_s3(lake.root) else Path(lake.root) / row.path
        self.rel_path = row.path
        self._storage = delta_options(self.path)
        self.arrow_schema = arrow_schema(self.schema, self.properties)
        self._dt: DeltaTable | None = None
        self._dataset: tuple[int, pads.Dataset] | None = None
        self._rg_index: tuple[int, Any] | None = None
        self._dt_lock = threading.RLock()
        self._lock = _WriteLock(lake, self.path)

    def __repr__(self) -> str:
        return f"<annotation Table {self.datastack}/{self.name} schema={self.schema.name} version={self.version}>"

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def id_columns(self) -> list[str]:
        return id_columns(self.schema, self.properties)

    def metadata(self) -> dict[str, Any]:
        """Table metadata (JSON-able): schema, columns, ``voxel_size_nm`` (x, y, z nm per voxel of the stored
        positions), permissions, Delta version."""
        return {
            "datastack": self.datastack, "table_name": self.name, "schema_type": self.schema.name,
            "schema": self.schema.to_json(), "properties": self.properties, "description": self.description,
            "owner": self.owner, "voxel_size_nm": list(self.voxel_size_nm), "segmentation_layer": self.segmentation_layer,
            "required_points": list(self.required_points), "read_permission": self.read_permission,
            "write_permission": self.write_permission, "reference_table": None,
            "created": self.created.isoformat() if self.created else None, "version": self.version,
            "columns": self.arrow_schema.names, "id_columns": self.id_columns,
        }

    # -- Delta access -----------------------------------------------------------------------------
    def delta(self) -> DeltaTable:
        """The current :class:`deltalake.DeltaTable` (refreshed to the newest version)."""
        with self._dt_lock:
            if self._dt is None:
                self._dt = DeltaTable(str(self.path), storage_options=self._storage or None)
            else:
                self._dt.update_incremental()
            return self._dt

    @property
    def version(self) -> int:
        """The Delta version of the table (one per committed write)."""
        return self.delta().version()

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first: version, timestamp (UTC ISO), operation, and neurolake's commit info."""
        out = []
        for h in self.delta().history(limit):
            ts = h.get("timestamp")
            out.append({"version": h.get("version"),
                        "timestamp": dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat() if ts else None,
                        "operation": h.get("operation"),
                        **{k: v for k, v in h.items() if k.startswith("neurolake")}})
        return out

    def vacuum(self, retention_hours: float = 168, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Delete the table's Parquet files that no version of the last ``retention_hours`` hours references
        (rounded up to whole hours, deltalake's unit; default one week): files that updates and deletes
        replaced that long ago, and files no commit names. Reading an older Delta version whose files are
        gone fails afterwards.

        Files of a Delta version that a production query run pinned are protected
        (:func:`neurolake.provenance.runs.protecting_runs`): a vacuum that would delete any of them is
        refused with Conflict naming the runs, unless ``force``. ``dry_run`` deletes nothing and is never
        refused. Returns ``{"deleted": [paths relative to the table folder (with dry_run: to be deleted)],
        "broken_runs": [ids of the production runs whose pinned version loses files], "dry_run": bool}``.
        Raises InvalidArgument (``retention_hours`` not a number >= 0), Conflict.
        """
        import math

        from neurolake.provenance.runs import protecting_pins, short_ids

        if (isinstance(retention_hours, bool | np.bool_) or not isinstance(retention_hours, int | float | np.number)
                or not math.isfinite(float(retention_hours)) or retention_hours < 0):
            raise InvalidArgument(f"retention_hours must be a number of hours >= 0, got {retention_hours!r}",
                                  field="retention_hours", value=repr(retention_hours))
        hours = math.ceil(float(retention_hours))
        with self._lock:
            d = self.delta()
            doomed = sorted(d.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False))
            broken: list[str] = []
            if doomed:
                gone = {same_file_key(self.path / f) for f in doomed}
                by_version: dict[int, list[str]] = {}
                for p in protecting_pins(self.lake, "annotation", self.datastack, self.name):
                    if p["version"] is not None:
                        by_version.setdefault(int(p["version"]), []).append(p["run_id"])
                for v, runs in sorted(by_version.items()):
                    try:
                        files = DeltaTable(str(self.path), version=v, storage_options=self._storage or None).file_uris()
                    except (DeltaError, OSError):  # its log is gone: the version is unreadable already
                        continue
                    if any(same_file_key(u) in gone for u in files):
                        broken += [r for r in runs if r not in broken]
            if broken and not force and not dry_run:
                n = len(broken)
                raise Conflict(
                    f"vacuuming annotation table {self.datastack}/{self.name} (retention {hours} h) would delete "
                    f"files of Delta versions pinned by {n} production query run{'s' if n > 1 else ''} "
                    f"({short_ids(broken)}); it would make {'them' if n > 1 else 'it'} irreproducible; pass "
                    "force=True (`--force`) to vacuum anyway, or a longer retention",
                    datastack=self.datastack, table=self.name, runs=broken, retention_hours=hours)
            if doomed and not dry_run:
                doomed = sorted(d.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False))
        return {"deleted": doomed, "broken_runs": broken, "dry_run": bool(dry_run)}

    def dataset(self, version: int | None = None) -> pads.Dataset:
        """A pyarrow dataset over the table's Parquet files (cached per Delta version)."""
        if version is not None:
            d = DeltaTable(str(self.path), version=version, storage_options=self._storage or None)
            return d.to_pyarrow_dataset()
        with self._dt_lock:
            d = self.delta()
            v = d.version()
            if self._dataset is None or self._dataset[0] != v:
                self._dataset = (v, d.to_pyarrow_dataset())
            return self._dataset[1]

    def row_group_index(self):
        """The :class:`~neurolake.annotations.spatial.RowGroupIndex` of the current version (cached)."""
        from neurolake.annotations.spatial import RowGroupIndex

        with self._dt_lock:
            d = self.delta()
            v = d.version()
            if self._rg_index is None or self._rg_index[0] != v:
                self._rg_index = (v, RowGroupIndex(d.file_uris(), self.schema.points, self.arrow_schema))
            return self._rg_index[1]

    # -- writes -----------------------------------------------------------------------------------
    def _bounds_nm(self) -> np.ndarray | None:
        """(x, y, z) extent in nm positions must lie below: the binding layer's, else the largest layer's."""
        try:
            layers = ([self.lake.layer(self.datastack, self.segmentation_layer)] if self.segmentation_layer
                      else self.lake.layers(self.datastack))
        except NotFound:
            return None
        if not layers:
            return None
        ext = [np.array(la.size(0), dtype=np.float64) * np.array(la.voxel_size, dtype=np.float64) for la in layers]
        return np.max(np.stack(ext), axis=0)

    def prepare(self, rows: Any, *, author: str | None = None, bind: bool = True) -> pa.Table:
        """Validate ``rows`` (DataFrame, Arrow table, list of dicts) into stored columns, check positions
        against the volume, look up supervoxels; ids are not assigned yet. Raises InvalidArgument,
        OutOfBounds; nothing is written."""
        if isinstance(rows, list | tuple):
            rows = pd.DataFrame(list(rows))
        elif isinstance(rows, dict):
            rows = pd.DataFrame(rows)
        tab = validate(rows, self.schema, self.properties, self.required_points)
        if author is not None and "author" in tab.column_names:
            col = tab.column("author")
            if col.null_count == len(col):
                tab = tab.set_column(tab.column_names.index("author"), "author",
                                     pa.repeat(pa.scalar(author, pa.string()), len(tab)))
        self._check_bounds(tab)
        if bind and self.segmentation_layer:
            tab = self._bind(tab)
        return tab

    def _positions(self, tab: pa.Table, point: str) -> np.ndarray:
        return np.stack([tab.column(c).to_numpy(zero_copy_only=False) for c in position_columns(point)], axis=1)

    def _check_bounds(self, tab: pa.Table) -> None:
        ext = self._bounds_nm()
        if ext is None or len(tab) == 0:
            return
        res = np.array(self.voxel_size_nm)
        for p in self.schema.points:
            inside = True
            for i, c in enumerate(position_columns(p)):  # min/max first (NaN ignored): one pass per column
                mm = pc.min_max(tab.column(c))
                lo, hi = mm["min"].as_py(), mm["max"].as_py()
                if lo is not None and not np.isnan(lo) and not (lo * res[i] >= 0 and hi * res[i] < ext[i]):
                    inside = False
            if inside:
                continue
            nm = self._positions(tab, p) * res
            with np.errstate(invalid="ignore"):
                bad = ((nm < 0) | (nm >= ext)).any(axis=1)
            if bad.any():
                rows = [int(i) for i in np.flatnonzero(bad)[:10]]
                vox = (ext / res).tolist()
                raise OutOfBounds(f"point {p!r} lies outside the volume (x, y, z < {[round(v, 3) for v in vox]} "
                                  f"voxels of {list(res)} nm) in rows {rows}: "
                                  f"{self._positions(tab, p)[rows[:3]].tolist()}",
                                  field=p, rows=rows, bounds_nm=ext.tolist())

    def _bind(self, tab: pa.Table) -> pa.Table:
        """Look up the segment id under each point in the segmentation layer (batched point reads)."""
        layer = self.lake.layer(self.datastack, self.segmentation_layer)
        scale = np.array(self.voxel_size_nm) / np.array(layer.voxel_size, dtype=np.float64)
        shape_xyz = np.array(layer.size(0)) - 1
        for p in self.schema.points:
            col = f"{p}_supervoxel_id"
            given = tab.column(col)
            pos = self._positions(tab, p)
            need = ~np.isnan(pos).any(axis=1) & np.asarray(given.is_null())
            if not need.any():
                continue
            vox = np.clip(np.floor(pos[need] * scale).astype(np.int64), 0, shape_xyz)
            vals = layer.read_points(vox[:, ::-1]).astype(np.uint64).view(np.int64)
            out = given.to_numpy(zero_copy_only=False).astype(np.float64) if given.null_count < len(given) else None
            arr = np.zeros(len(tab), dtype=np.int64)
            if out is not None:
                ok = ~np.isnan(out)
                arr[ok] = given.to_numpy(zero_copy_only=False)[ok].astype(np.int64)
            arr[need] = vals
            mask = ~need & np.asarray(given.is_null())
            tab = tab.set_column(tab.column_names.index(col), col, pa.array(arr, pa.int64(), mask=mask))
        return tab

    def _existing_ids(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return ids
        t = self.dataset().to_table(columns=["id"], filter=pc.field("id").isin(pa.array(ids, pa.int64())))
        return t.column("id").to_numpy()

    def _assign_ids(self, tab: pa.Table) -> pa.Table:
        """Give rows without ids new ones (catalog counter); check given ids are new. Raises AlreadyExists."""
        col = tab.column("id")
        n = len(tab)
        given = col.null_count == 0 and n > 0
        with self.lake.catalog.session() as s:
            row = s.scalar(select(AnnotationTable).where(AnnotationTable.path == self.rel_path).with_for_update())
            if given:
                ids = col.to_numpy()
                uniq, counts = np.unique(ids, return_counts=True)
                if (counts > 1).any():
                    dups = uniq[counts > 1][:10]
                    rows = [int(i) for i in np.flatnonzero(np.isin(ids, dups))[:10]]
                    raise AlreadyExists(f"ids {dups.tolist()} appear more than once in the batch (rows {rows})",
                                        field="id", ids=dups.tolist(), rows=rows)
                if ids.min() < row.next_id:
                    clash = self._existing_ids(ids)
                    if len(clash):
                        rows = [int(i) for i in np.flatnonzero(np.isin(ids, clash))[:10]]
                        raise AlreadyExists(f"ids {sorted(set(clash.tolist()))[:10]} already exist in table "
                                            f"{self.name!r} (rows {rows}); ids are never reused, use update()",
                                            field="id", ids=sorted(set(clash.tolist()))[:10], rows=rows)
                row.next_id = max(row.next_id, int(ids.max()) + 1)
                return tab
            if col.null_count != n and n:
                rows = [int(i) for i in np.flatnonzero(np.asarray(col.is_null()))[:10]]
                raise InvalidArgument(f"column 'id' is empty in rows {rows}: give every row an id or none",
                                      field="id", rows=rows)
            start = row.next_id
            row.next_id = start + n
        return tab.set_column(0, "id", pa.array(np.arange(start, start + n, dtype=np.int64), pa.int64()))

    def _finish(self, tab: pa.Table, created: dt.datetime, deleted=None, superceded=None) -> pa.Table:
        """The stored rows: system columns added, sorted by the Morton key of the primary point."""
        out, order = self._unsorted(tab, created, deleted, superceded)
        return out if order is None else _take(out, order)

    def _unsorted(self, tab: pa.Table, created: dt.datetime, deleted=None,
                  superceded=None) -> tuple[pa.Table, np.ndarray | None]:
        """(rows with the system columns, their Morton order by the primary point or None)."""
        n = len(tab)
        cols = {name: tab.column(name) for name in tab.column_names}
        # one value repeated in C (a numpy datetime64 array converts element by element: ~0.15 s per 10⁶ rows)
        utc = created.replace(tzinfo=dt.UTC) if created.tzinfo is None else created.astimezone(dt.UTC)
        cols["created"] = pa.repeat(pa.scalar(utc, pa.timestamp("us", tz="UTC")), n)
        cols["deleted"] = deleted if deleted is not None else pa.nulls(n, pa.timestamp("us", tz="UTC"))
        cols["superceded_id"] = superceded if superceded is not None else pa.nulls(n, pa.int64())
        out = pa.Table.from_arrays([cols[f.name] for f in self.arrow_schema], schema=self.arrow_schema)
        if n < 2:
            return out, None
        axes = [out.column(c).to_numpy() for c in position_columns(self.schema.primary)]
        if all(np.isnan(v).all() for v in axes):
            return out, None
        return out, zorder(morton_key(axes))

    def _finish_batches(self, tab: pa.Table, created: dt.datetime) -> Iterable[pa.RecordBatch]:
        """:meth:`_finish` as record batches of ``STREAM_SLICE`` rows, gathered one at a time."""
        out, order = self._unsorted(tab, created)
        return _sorted_batches(out, order, STREAM_SLICE)

    def _commit(self, data: Any, action: str, **info: Any) -> None:
        props = CommitProperties(custom_metadata={"neurolake_action": action,
                                                  **{f"neurolake_{k}": str(v) for k, v in info.items()}})
        write_deltalake(str(self.path), data, mode="append", commit_properties=props,
                        target_file_size=TARGET_FILE_BYTES, writer_properties=self._writer_properties(),
                        storage_options=self._storage or None)

    def _writer_properties(self) -> WriterProperties:
        """Parquet settings of every write: ``ROW_GROUP_ROWS``-row groups, LZ4_RAW, row-group statistics;
        dictionary encoding only for text, boolean and the commit-time columns (on ids, positions and sizes
        it cost ~40 % of the write's CPU time and saved nothing; measured with write_deltalake on 2 × 10⁶
        synapse rows: 1.10 → 0.65 CPU s, 110 → 112 MB)."""
        dict_cols = {f.name: ColumnProperties(dictionary_enabled=True, statistics_enabled="CHUNK")
                     for f in self.arrow_schema if pa.types.is_string(f.type) or pa.types.is_boolean(f.type)
                     or f.name in ("created", "deleted")}  # one commit time per write
        return WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="LZ4_RAW",
                                default_column_properties=ColumnProperties(dictionary_enabled=False,
                                                                           statistics_enabled="CHUNK"),
                                column_properties=dict_cols)

    def append(self, rows: Any, *, author: str | None = None, bind: bool = True) -> np.ndarray:
        """Insert a batch of new annotations as one Delta commit; returns their ids (uint64 array).

        ``rows``: a DataFrame / Arrow table / list of dicts with the schema's columns (see
        :mod:`neurolake.annotations.schemas`); positions are x, y, z voxels at the table's
        ``voxel_size_nm``. Rows without ``id`` get new ids. With ``bind`` and a segmentation layer
        the supervoxel under each point is stored in ``<point>_supervoxel_id`` (given ids are kept).
        Raises InvalidArgument (columns/values, naming rows), OutOfBounds (positions outside the
        volume), AlreadyExists (duplicate ids); on any error nothing is written.
        """
        author = author or current_user()
        if isinstance(rows, pa.Table | pd.DataFrame) and len(rows) > STREAM_SLICE:
            # validated slice by slice (a small working set), then sorted once, all rows together
            parts = []
            for i in range(0, len(rows), STREAM_SLICE):
                part = rows.slice(i, STREAM_SLICE) if isinstance(rows, pa.Table) else rows.iloc[i:i + STREAM_SLICE]
                try:
                    parts.append(self.prepare(part, author=author, bind=bind))
                except (InvalidArgument, OutOfBounds) as exc:
                    _shift_rows(exc, i)  # row numbers of the whole input
                    raise
            return self.append_prepared(pa.concat_tables(parts))
        tab = self.prepare(rows, author=author, bind=bind)
        return self.append_prepared(tab)

    def append_prepared(self, tab: pa.Table) -> np.ndarray:
        """Commit rows returned by :meth:`prepare` (one Delta commit); returns their ids.

        The rows are Morton-sorted once, all together; a large table is gathered in sorted slices of
        ``STREAM_SLICE`` rows in a background thread while delta-rs encodes the previous slice (a small
        working set: the slices' memory is reused instead of page-faulting a sorted copy of everything)."""
        if len(tab) == 0:
            return np.zeros(0, dtype=np.uint64)
        with self._lock:
            tab = self._assign_ids(tab)
            ids = tab.column("id").to_numpy().astype(np.uint64)
            if len(tab) <= STREAM_SLICE:
                data: Any = self._finish(tab, utcnow())
            else:
                data = pa.RecordBatchReader.from_batches(self.arrow_schema,
                                                         prefetch(self._finish_batches(tab, utcnow()), 2))
            self._commit(data, "append", rows=len(tab))
        return ids

    def append_stream(self, batches: Iterable[Any], *, author: str | None = None, bind: bool = True) -> np.ndarray:
        """Append many batches as **one** Delta commit, streaming (constant memory per batch).

        Each batch is validated, bound and given ids as it is read; if any batch fails (bad rows, a
        truncated file) nothing is committed and the error names the batch's first row in the whole
        stream. Returns all new ids (uint64).
        """
        author = author or current_user()
        failure: list[BaseException] = []
        ids: list[np.ndarray] = []
        schema = self.arrow_schema
        offset = 0
        pending: list[pa.Table] = []

        def gen():
            nonlocal offset
            try:
                for rows in prefetch(batches, 2):
                    try:
                        tab = self.prepare(rows, author=author, bind=bind)
                    except (InvalidArgument, OutOfBounds, AlreadyExists) as exc:
                        _shift_rows(exc, offset)  # report row numbers of the whole stream, not of the batch
                        raise
                    offset += len(tab)
                    if not len(tab):
                        continue
                    tab = self._assign_ids(tab)
                    ids.append(tab.column("id").to_numpy().astype(np.uint64))
                    pending.append(tab)
                    if sum(len(p) for p in pending) >= SORT_ROWS:  # sort ~SORT_ROWS rows at once
                        yield from self._finish_batches(pa.concat_tables(pending), now)
                        pending.clear()
                if pending:
                    yield from self._finish_batches(pa.concat_tables(pending), now)
            except BaseException as exc:  # surfaced after the aborted write
                failure.append(exc)
                raise

        now = utcnow()
        with self._lock:
            reader = pa.RecordBatchReader.from_batches(schema, prefetch(gen(), 2))
            try:
                self._commit(reader, "append", author=author)
            except Exception:
                if failure:
                    raise failure[0] from None
                raise
            if failure:
                raise failure[0]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint64)

    def writer(self, flush_rows: int = 100_000, *, author: str | None = None, bind: bool = True):
        """A buffered writer (``with table.writer() as w: w.add(df)``); see :class:`BufferedWriter`."""
        from neurolake.annotations.writer import BufferedWriter

        return BufferedWriter(self, flush_rows=flush_rows, author=author, bind=bind)

    def _current(self, ids: np.ndarray) -> pa.Table:
        """Currently valid rows with these ids; NotFound naming ids that are missing or not valid."""
        ids = np.asarray(ids, dtype=np.int64)
        cur = self.dataset().to_table(filter=pc.field("id").isin(pa.array(ids, pa.int64()))
                                      & pc.field("deleted").is_null())
        missing = sorted(set(ids.tolist()) - set(cur.column("id").to_numpy().tolist()))
        if missing:
            raise NotFound(f"ids {missing[:10]} are not valid rows of table {self.name!r} (unknown, deleted or "
                           "already superseded)", table=self.name, ids=missing[:10])
        return cur

    def update(self, rows: Any, *, author: str | None = None, bind: bool = True) -> np.ndarray:
        """Replace existing rows: each input row names an ``id`` that is currently valid and gives the
        columns to change; a new row (new id, the old values overlaid with the given ones) is inserted
        and the old one marked deleted with ``superceded_id``. One Delta commit. Returns the new ids in
        input order. Raises InvalidArgument, NotFound (unknown/deleted ids), Conflict (concurrent edit).
        """
        df = pd.DataFrame(list(rows)) if isinstance(rows, list | tuple) else (
            rows.to_pandas() if isinstance(rows, pa.Table) else pd.DataFrame(rows))
        if "id" not in df.columns:
            raise InvalidArgument("update rows need an 'id' column naming the rows to replace", field="id")
        old_ids = pd.to_numeric(df["id"], errors="coerce")
        if old_ids.isna().any():
            raise InvalidArgument(f"column 'id' is empty or not a number in rows "
                                  f"{np.flatnonzero(old_ids.isna().to_numpy())[:10].tolist()}", field="id")
        old_ids = old_ids.to_numpy().astype(np.int64)
        if len(np.unique(old_ids)) != len(old_ids):
            raise InvalidArgument("update rows name the same id more than once", field="id")
        with self._lock:
            cur = self._current(old_ids).to_pandas()
            cur = cur.set_index("id").loc[old_ids]
            base = cur[[c for c in cur.columns if c not in ("created", "deleted", "superceded_id")]].reset_index(
                drop=True)
            for c in self.id_columns:
                if c in base.columns:
                    base[c] = base[c].astype("Int64")
            changes = df.drop(columns=["id"]).reset_index(drop=True)
            for c in changes.columns:
                base[c] = changes[c].to_numpy() if c in base.columns else changes[c]
                for p in self.schema.points:  # a moved point needs a new lookup unless given
                    if c in position_columns(p) and f"{p}_supervoxel_id" not in changes.columns:
                        base[f"{p}_supervoxel_id"] = pd.array([pd.NA] * len(base), dtype="Int64")
            tab = self.prepare(base, author=author or current_user(), bind=bind)
            tab = tab.set_column(0, "id", pa.nulls(len(tab), pa.int64()))
            tab = self._assign_ids(tab)
            new_ids = tab.column("id").to_numpy()
            now = utcnow()
            new_rows = self._finish(tab, now)
            tomb = pa.table({"id": pa.array(old_ids, pa.int64()),
                             "deleted": pa.array(np.full(len(old_ids), np.datetime64(now.replace(tzinfo=None), "us")),
                                                 pa.timestamp("us", tz="UTC")),
                             "superceded_id": pa.array(new_ids, pa.int64())})
            relaxed = pa.schema([f.with_nullable(True) for f in self.arrow_schema])
            tomb_full = pa.Table.from_arrays(
                [tomb.column(f.name) if f.name in tomb.column_names else pa.nulls(len(tomb), f.type)
                 for f in relaxed], schema=relaxed)
            source = pa.concat_tables([new_rows.cast(tomb_full.schema), tomb_full])
            self._merge(source, "update", rows=len(old_ids))
        return new_ids.astype(np.uint64)

    def delete(self, ids: Iterable[int], *, author: str | None = None) -> int:
        """Soft-delete currently valid rows (sets ``deleted``; one Delta commit). Returns the count.
        Raises NotFound naming ids that are unknown or no longer valid."""
        ids = np.unique(np.asarray([whole(i, "ids", 0, INT64_MAX) for i in ids], dtype=np.int64))
        if len(ids) == 0:
            return 0
        with self._lock:
            self._current(ids)
            now = np.datetime64(utcnow().replace(tzinfo=None), "us")
            source = pa.table({"id": pa.array(ids, pa.int64()),
                               "deleted": pa.array(np.full(len(ids), now), pa.timestamp("us", tz="UTC"))})
            self._merge(source, "delete", rows=len(ids), author=author or current_user())
        return len(ids)

    def _merge(self, source: pa.Table, action: str, **info: Any) -> None:
        props = CommitProperties(custom_metadata={"neurolake_action": action,
                                                  **{f"neurolake_{k}": str(v) for k, v in info.items()}})
        d = self.delta()
        m = d.merge(source, predicate="t.id = s.id", source_alias="s", target_alias="t", commit_properties=props,
                    writer_properties=self._writer_properties())
        upd = {"deleted": "s.deleted"}
        if "superceded_id" in source.column_names:
            upd["superceded_id"] = "s.superceded_id"
        m = m.when_matched_update(updates=upd, predicate="t.deleted IS NULL")
        if action == "update":
            m = m.when_not_matched_insert_all()
        try:
            m.execute()
        except CommitFailedError as exc:
            raise Conflict(f"table {self.name!r} changed during the {action}; retry", table=self.name) from exc

    # -- reads ------------------------------------------------------------------------------------
    def _bbox_voxels(self, bbox: Any, units: str, mip: int, layer: str | None) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (np.asarray(c, dtype=np.float64) for c in bbox)  # checked by base.boxes.bounding_box
        res = np.array(self.voxel_size_nm)
        if units == "nm":
            return lo / res, hi / res
        if units == "voxels":
            name = layer or self.segmentation_layer
            if name is None:
                if mip != 0:
                    raise InvalidArgument("bbox in voxels at mip > 0 needs a layer (its mip voxel size)",
                                          field="layer")
                return lo, hi
            la = self.lake.layer(self.datastack, name)
            vs = np.array(la.spec.mips[la._check_mip(mip)].voxel_size_nm, dtype=np.float64)
            return lo * vs / res, hi * vs / res
        raise InvalidArgument(f"units {units!r} must be 'nm' or 'voxels'", field="units", value=units,
                              allowed=["nm", "voxels"])

    def query(self, *, ids: Sequence[int] | None = None, bbox: Any = None, bbox_point: str | None = None,
              units: str = "nm", mip: int = 0, layer: str | None = None, filters: dict[str, Any] | None = None,
              timestamp: Any = None, include_deleted: bool = False, columns: Sequence[str] | None = None,
              limit: int | None = None, offset: int = 0, positions: str = "voxels",
              x: Any = None, y: Any = None, z: Any = None,
              desired_resolution: Sequence[float] | None = None) -> Result:
        """Rows valid now (or at ``timestamp``) matching all given conditions, sorted by id.

        - ``ids``: annotation ids;
        - ``bbox``: ``[[x0, y0, z0], [x1, y1, z1]]`` half-open — or ranges ``x=(x0, x1)``, ``y=``, ``z=``
          (an omitted axis is unbounded) — in ``units`` "nm" or "voxels" (voxels
          of ``layer`` — default the table's segmentation layer — at ``mip``, else table voxels),
          tested against ``bbox_point`` (default the schema's primary point, e.g. ``ctr_pt``);
        - ``filters``: ``{column: value}`` (equal) or ``{column: [values]}`` (in);
        - ``timestamp``: datetime / ISO text / epoch seconds: the rows valid at that time;
          ``include_deleted``: every row version ever written (with ``created``/``deleted``);
        - ``positions``: "voxels" (stored, at ``voxel_size_nm``) or "nm"; or ``desired_resolution``
          ``(x, y, z)`` nm per voxel: positions in voxels of that size (caveclient's ``desired_resolution``);

        Returns a :class:`~neurolake.base.results.Result` (``.df()``, ``.arrow()``, ``.pl()``; id columns
        uint64) whose ``metadata`` names the datastack, table, Delta version, timestamp and conditions.

        Raises InvalidArgument (unknown column, bad bbox/units/timestamp), NotFound (layer).
        """
        names = self.arrow_schema.names
        expr = None
        bbox = bounding_box(bbox, x=x, y=y, z=z)
        if desired_resolution is not None:
            scale = np.asarray(self.voxel_size_nm) / np.asarray(_triple_nm(desired_resolution,
                                                                              "desired_resolution"))
            positions = "scaled"
        elif positions not in ("voxels", "nm"):
            raise InvalidArgument(f"positions {positions!r} must be 'voxels' or 'nm'", field="positions",
                                  value=positions, allowed=["voxels", "nm"])
        else:
            scale = np.asarray(self.voxel_size_nm) if positions == "nm" else None
        meta = {"datastack": self.datastack, "table": self.name, "delta_version": self.version,
                "timestamp": isoformat(parse_timestamp(timestamp)),
                "filters": {k: v for k, v in {"ids": None if ids is None else len(list(ids)), "bbox": bbox,
                                               "bbox_units": units if bbox is not None else None,
                                               "filters": filters}.items() if v is not None} or None,
                "positions": "nm" if positions == "nm" else (
                    list(desired_resolution) if desired_resolution is not None else "voxels")}

        def conj(e):
            nonlocal expr
            expr = e if expr is None else expr & e

        ts = parse_timestamp(timestamp)
        if ts is not None:
            t = pa.scalar(ts, pa.timestamp("us", tz="UTC"))
            conj((pc.field("created") <= t) & (pc.field("deleted").is_null() | (pc.field("deleted") > t)))
        elif not include_deleted:
            conj(pc.field("deleted").is_null())
        if ids is not None:
            arr = np.asarray([whole(i, "ids", 0, INT64_MAX) for i in ids], dtype=np.uint64)
            if (arr > np.iinfo(np.int64).max).any():
                return self._empty(columns, scale, meta)
            conj(pc.field("id").isin(pa.array(arr.astype(np.int64), pa.int64())))
        if bbox is not None:
            point = bbox_point or self.schema.primary
            if point not in self.schema.points:
                raise InvalidArgument(f"bbox_point {point!r} is not a point of schema {self.schema.name!r}; "
                                      f"points: {list(self.schema.points)}", field="bbox_point", value=point)
            lo, hi = self._bbox_voxels(bbox, units, mip, layer)
            for i, c in enumerate(position_columns(point)):
                conj((pc.field(c) >= float(lo[i])) & (pc.field(c) < float(hi[i])))
        for col, val in (filters or {}).items():
            if col not in names:
                raise InvalidArgument(f"filter column {col!r} is not a column of table {self.name!r}; "
                                      f"columns: {names}", field="filters", value=col, allowed=names)
            typ = self.arrow_schema.field(col).type
            if isinstance(val, list | tuple | set | np.ndarray):
                conj(pc.field(col).isin(pa.array(list(val)).cast(typ)))
            elif val is None:
                conj(pc.field(col).is_null())
            else:
                conj(pc.field(col) == pa.scalar(val).cast(typ))
        cols = None
        if columns is not None:
            bad = [c for c in columns if c not in names]
            if bad:
                raise InvalidArgument(f"columns {bad} are not columns of table {self.name!r}; columns: {names}",
                                      field="columns", value=bad, allowed=names)
            cols = list(dict.fromkeys(["id", *columns]))
        try:
            if bbox is not None:  # read only the row groups overlapping the box (Parquet statistics)
                need = None if cols is None else list(dict.fromkeys(
                    [*cols, "created", "deleted", *position_columns(point), *(filters or {})]))
                tab = self.row_group_index().read(self.row_group_index().candidates(point, lo, hi), need, expr)
                if cols is not None:
                    tab = tab.select(cols)
            else:
                tab = self.dataset().to_table(filter=expr, columns=cols)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(f"query on table {self.name!r} failed: {exc}", table=self.name) from exc
        if len(tab) > 1:
            tab = tab.take(pc.sort_indices(tab, [("id", "ascending"), ("created", "ascending")]
                                           if "created" in tab.column_names else [("id", "ascending")]))
        if offset or limit is not None:
            tab = tab.slice(offset, limit)
        if columns is not None and "id" not in columns:
            tab = tab.drop_columns(["id"])
        return self._out(tab, scale, meta)

    def _empty(self, columns, scale, meta):
        tab = self.arrow_schema.empty_table()
        if columns is not None:
            tab = tab.select(list(columns))
        return self._out(tab, scale, meta)

    def _out(self, tab: pa.Table, scale: np.ndarray | None, meta: dict[str, Any]) -> Result:
        """``scale``: factors (x, y, z) applied to stored positions (None = stored voxels)."""
        idc = set(self.id_columns)
        cols = []
        for name in tab.column_names:
            c = tab.column(name)
            if name in idc:
                c = c.cast(pa.uint64())
            elif scale is not None and "_position_" in name:
                c = pc.multiply(c.cast(pa.float64()), float(scale["xyz".index(name[-1])]))
            cols.append(c)
        return Result(pa.table(cols, names=tab.column_names), meta)

    def count(self, timestamp: Any = None) -> int:
        """Number of rows valid now (or at ``timestamp``)."""
        return len(self.query(timestamp=timestamp, columns=["id"]))


# -- the catalog face -----------------------------------------------------------------------------
def _table_rel(lake: Any, datastack: str, name: str) -> str:
    return f"datastacks/{datastack}/tables/{name}"


def create_table(lake: Any, datastack: str, name: str, schema: str, *, description: str = "",
                 voxel_size_nm: Any = None, properties: dict[str, str] | None = None,
                 segmentation_layer: str | None = None, optional_points: Sequence[str] = (),
                 owner: str | None = None, read_permission: str = "PUBLIC", write_permission: str = "PRIVATE",
                 exist_ok: bool = False) -> Table:
    """Create an empty annotation table ``name`` of ``schema`` in ``datastack``.

    ``voxel_size_nm``: (x, y, z) nm per voxel of the stored positions (default: the datastack's
    voxel size). ``properties``: extra typed columns ``{name: "float"|"int"|"uint64"|"str"|"bool"}``.
    ``segmentation_layer``: a segmentation layer of the datastack whose ids are looked up under every
    point on write. ``optional_points``: points that may be left empty (NaN), beyond the schema's own.
    Raises NotFound (datastack/layer), AlreadyExists (unless ``exist_ok``), InvalidArgument.
    """
    from neurolake.volumes.models import Datastack

    check_name("table", name)
    sch = get_schema(schema)
    props = check_properties(sch, properties)
    for p in optional_points:
        if p not in sch.points:
            raise InvalidArgument(f"optional point {p!r} is not a point of schema {schema!r}: {list(sch.points)}",
                                  field="optional_points", value=p)
    required = [p for p in sch.points if p not in sch.optional_points and p not in optional_points]
    for perm, what in ((read_permission, "read_permission"), (write_permission, "write_permission")):
        if perm not in PERMISSIONS:
            raise InvalidArgument(f"{what} {perm!r} must be one of {PERMISSIONS}", field=what, value=perm)
    ds = lake.datastack_info(datastack)
    if segmentation_layer is not None:
        la = lake.layer(datastack, segmentation_layer)
        if la.layer_type != "segmentation":
            raise InvalidArgument(f"layer {segmentation_layer!r} is an {la.layer_type} layer; binding needs a "
                                  "segmentation layer", field="segmentation_layer", value=segmentation_layer)
    res = _triple_nm(voxel_size_nm if voxel_size_nm is not None else ds["voxel_size_nm"], "voxel_size_nm")
    rel = _table_rel(lake, datastack, name)
    with lake.catalog.session() as s:
        dsrow = s.scalar(select(Datastack).where(Datastack.name == datastack))
        row = s.scalar(select(AnnotationTable).where(AnnotationTable.datastack_id == dsrow.id,
                                                     AnnotationTable.name == name))
        if row is not None:
            if exist_ok:
                return Table(lake, datastack, row)
            raise AlreadyExists(f"annotation table {datastack}/{name} already exists", datastack=datastack,
                                table=name)
        remote = is_s3(lake.root)
        path = lake.root / rel if remote else Path(lake.root) / rel
        if remote:
            remove_tree(path)  # a leftover of a failed create (no folders on S3: remove whatever is there)
        else:
            if path.exists():
                shutil.rmtree(path)  # a leftover of a failed create
            path.parent.mkdir(parents=True, exist_ok=True)
        # the Delta log is history users pin (queries, materializations): never cleaned up by age, so an old
        # version stays readable until its data files are vacuumed on purpose (Table.vacuum)
        DeltaTable.create(str(path), arrow_schema(sch, props), name=name, description=description or None,
                          configuration={"delta.enableExpiredLogCleanup": "false"},
                          storage_options=delta_options(path) or None)
        row = AnnotationTable(datastack_id=dsrow.id, name=name, schema_name=sch.name, description=description,
                              owner=owner or current_user(), voxel_size_nm=list(res), properties=props,
                              required_points=required, segmentation_layer=segmentation_layer,
                              read_permission=read_permission, write_permission=write_permission, path=rel,
                              next_id=1, provenance={})
        s.add(row)
        s.flush()
        return Table(lake, datastack, row)


def get_table(lake: Any, datastack: str, name: str) -> Table:
    """The annotation table ``name`` of ``datastack``. Raises NotFound naming the known tables."""
    from neurolake.volumes.models import Datastack

    lake.datastack(datastack)
    with lake.catalog.session() as s:
        dsrow = s.scalar(select(Datastack).where(Datastack.name == datastack))
        row = s.scalar(select(AnnotationTable).where(AnnotationTable.datastack_id == dsrow.id,
                                                     AnnotationTable.name == name))
        if row is None:
            known = s.scalars(select(AnnotationTable.name).where(AnnotationTable.datastack_id == dsrow.id)
                              .order_by(AnnotationTable.name)).all()
            raise not_found("annotation table", name, known, within=("datastack", datastack), table=name)
        key = (datastack, row.id, row.path)
        tables, guard = lake.state("annotations.tables", lambda: ({}, threading.Lock()))
        with guard:
            t = tables.get(key)
        if t is None:  # reuse Table objects: their Delta state and row-group index stay warm
            t = Table(lake, datastack, row)
            with guard:
                if len(tables) > 64:
                    tables.pop(next(iter(tables)))
                t = tables.setdefault(key, t)
        return t


def list_tables(lake: Any, datastack: str) -> list[str]:
    """Names of the annotation tables of ``datastack``, sorted. Raises NotFound (datastack)."""
    from neurolake.volumes.models import Datastack

    lake.datastack(datastack)
    with lake.catalog.session() as s:
        dsrow = s.scalar(select(Datastack).where(Datastack.name == datastack))
        return list(s.scalars(select(AnnotationTable.name).where(AnnotationTable.datastack_id == dsrow.id)
                              .order_by(AnnotationTable.name)).all())


def drop_table(lake: Any, datastack: str, name: str) -> None:
    """Remove a table's catalog row and its Delta files (irreversible). Raises NotFound."""
    t = get_table(lake, datastack, name)
    with lake.catalog.session() as s:
        row = s.scalar(select(AnnotationTable).where(AnnotationTable.path == t.rel_path))
        s.delete(row)
    remove_tree(t.path)
