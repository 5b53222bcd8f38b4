"""Materialization versions: annotation tables bound to root ids at a timestamp, frozen as Parquet.

``materialize(lake, ds, timestamp=None)`` makes version N (1, 2, …) of a datastack: for every
annotation table, the rows valid at T (``created <= T`` and not deleted by T), with every
``<point>_root_id`` set to the root id of ``<point>_supervoxel_id`` at T (from the proofreadable
segmentation; without one, the supervoxel id itself). The rows are written once, as one Parquet file
per table under ``<lake>/datastacks/<ds>/materializations/v<N>-<uid>/``, and never changed; later
edits and annotation writes do not change a version. Version metadata follows CAVE's
MaterializationEngine: ``version``, ``timestamp`` (CAVE routes call it ``time_stamp``), ``expires_on``, ``valid``,
``status``.

Positions in the stored tables are x, y, z voxels at each table's ``voxel_size_nm`` (nm).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from sqlalchemy import func, select

from neurolake.annotations.paths import arrow_source, delta_options, open_input
from neurolake.base.integers import INT64_MAX, whole
from neurolake.base.names import not_found
from neurolake.base.results import Result
from neurolake.base.time import parse_timestamp
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import Conflict, InvalidArgument, NeurolakeError, NotFound
from neurolake.materialize.models import MaterializationVersion
from neurolake.materialize.tasks import row_group_runs, rows_at
from neurolake.storage.config import is_s3
from neurolake.storage.files import relative, remove_tree
from neurolake.volumes.models import Datastack

PINNING_KINDS = ("version_table", "connectome")  # query-run inputs that read a materialization version


class VersionExpired(NeurolakeError):
    """The materialization version was expired: its data are gone (HTTP 410)."""

    code = "version_expired"
    http_status = 410


def _dsid(s, datastack: str) -> int:
    dsid = s.scalar(select(Datastack.id).where(Datastack.name == datastack))
    if dsid is None:
        raise not_found("datastack", datastack, s.scalars(select(Datastack.name).order_by(Datastack.name)).all())
    return dsid


def _vdict(row: MaterializationVersion) -> dict[str, Any]:
    return {"version": row.version, "timestamp": as_utc(row.time_stamp).isoformat(),
            "expires_on": as_utc(row.expires_on).isoformat() if row.expires_on else None,
            "valid": row.valid, "status": row.status, "created": as_utc(row.created).isoformat(),
            "tables": row.tables, "rows": row.rows, "path": row.path, "provenance": row.provenance}


# -------------------------------------------------------------------------------------------------
# binding annotations to roots
# -------------------------------------------------------------------------------------------------
def _segmentation(lake, datastack: str):
    from neurolake.proofreading import has_segmentation, segmentation

    return segmentation(lake, datastack) if has_segmentation(lake, datastack) else None


def bind_roots(lake, datastack: str, table, tab: pa.Table, timestamp: dt.datetime | None, seg=None) -> pa.Table:
    """Set every ``<point>_root_id`` column of ``tab`` (rows of annotation ``table``) to the root ids at
    ``timestamp`` (None = now). Supervoxels come from ``<point>_supervoxel_id`` when the table is bound to
    the proofreading layer, else they are looked up in that layer at the point positions."""
    if seg is None:
        seg = _segmentation(lake, datastack)
    sv_layer = seg._row().layer if seg is not None else None
    pending: list[tuple[str, np.ndarray, np.ndarray]] = []
    for p in table.schema.points:
        rcol, scol = f"{p}_root_id", f"{p}_supervoxel_id"
        if rcol not in tab.column_names or scol not in tab.column_names:
            continue
        # root ids written with the rows (a table of given root ids, no supervoxel): kept where no supervoxel
        stored = _uint64_values(tab.column(rcol))
        svs = _uint64_values(tab.column(scol))
        if svs is None:
            svs = np.zeros(len(tab), np.uint64)
        if seg is not None and sv_layer is not None and table.segmentation_layer != sv_layer and len(tab):
            layer = lake.layer(datastack, sv_layer)
            pos = np.stack([tab.column(f"{p}_position_{a}").to_numpy(zero_copy_only=False) for a in "xyz"], axis=1)
            ok = ~np.isnan(pos).any(axis=1)
            scale = np.array(table.voxel_size_nm) / np.array(layer.voxel_size, dtype=np.float64)
            vox = np.clip(np.floor(pos[ok] * scale).astype(np.int64), 0, np.array(layer.size(0)) - 1)
            svs = np.zeros(len(tab), np.uint64)
            svs[ok] = layer.read_points(vox[:, ::-1]).astype(np.uint64)
            tab = tab.set_column(tab.column_names.index(scol), scol,
                                 pa.array(svs.view(np.int64), pa.int64(), mask=~ok))
        pending.append((rcol, svs, stored))
    if not pending:
        return tab
    allsv = np.concatenate([x for _, x, _ in pending])
    roots = seg.roots(allsv, timestamp, unknown="zero") if seg is not None else allsv  # one lookup
    k = 0
    for rcol, svs, stored in pending:
        r = roots[k:k + len(svs)].astype(np.uint64, copy=False)
        if stored is not None:
            r = np.where(svs == 0, stored, r)
        col = pa.array(r, pa.uint64())
        k += len(svs)
        tab = tab.set_column(tab.column_names.index(rcol), rcol, col)
    return tab


def _uint64_values(col) -> np.ndarray | None:
    """The values of an int64/uint64 id column as a uint64 numpy array (nulls as 0); None when all null."""
    if col.null_count == len(col):
        return None
    if col.null_count:
        col = pc.fill_null(col, 0)
    vals = np.asarray(col.to_numpy(zero_copy_only=False))
    return vals.view(np.uint64) if vals.dtype.itemsize == 8 and vals.dtype.kind in "iu" else vals.astype(np.uint64)


def _valid_filter(ts: dt.datetime):
    t = pa.scalar(ts, pa.timestamp("us", tz="UTC"))
    return (pc.field("created") <= t) & (pc.field("deleted").is_null() | (pc.field("deleted") > t))


def _valid_runs(table, version: int, ts: dt.datetime, rows: int):
    """The rows of annotation ``table`` at Delta ``version`` that are valid at ``ts``, as Arrow tables of
    about ``rows`` rows (whole row groups) in the table's stored schema.

    The version's Parquet files are read directly (``ParquetFile.read_row_groups``: columns decoded in
    parallel) and each run is filtered with one mask: a pyarrow dataset scan with the same filter, which
    evaluates it per 4,096-row group, costs ~3x the CPU time (measured in benchmarks/materialize.py).
    Tables whose Delta protocol uses deletion vectors or partitions are read through the dataset scan.
    """
    from deltalake import DeltaTable

    schema = table.arrow_schema
    d = DeltaTable(str(table.path), version=version, storage_options=delta_options(table.path) or None)
    if "deletionVectors" in (d.protocol().reader_features or []) or d.metadata().partition_columns:
        pending, n = [], 0
        for b in table.dataset(version).to_batches(filter=_valid_filter(ts), batch_size=rows):
            pending.append(b)
            n += b.num_rows
            if n >= rows:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, n = [], 0
        if n:
            yield pa.Table.from_batches(pending).combine_chunks()
        return
    t = pa.scalar(ts, pa.timestamp("us", tz="UTC"))
    for uri in d.file_uris():
        pf = pq.ParquetFile(open_input(uri), pre_buffer=False)  # less CPU on many small row groups
        for gs in row_group_runs(pf.metadata, rows):
            tab = rows_at(pf.read_row_groups(gs, use_threads=True), schema, t)
            if len(tab):
                yield tab


def _uint64_ids(table, tab: pa.Table) -> pa.Table:
    for name in table.id_columns:
        if name in tab.column_names and tab.schema.field(name).type != pa.uint64():
            i = tab.column_names.index(name)
            c = tab.column(name)  # stored ids are 0..2**63-1: the same bits
            tab = tab.set_column(i, name, pa.chunked_array([ch.view(pa.uint64()) for ch in c.chunks], pa.uint64())
                                 if c.type == pa.int64() else c.cast(pa.uint64()))
    return tab


# -------------------------------------------------------------------------------------------------
# versions
# -------------------------------------------------------------------------------------------------
def materialize(lake, datastack: str, timestamp: Any = None, tables: list[str] | None = None,
                expires_in: dt.timedelta | float | None = None, author: str | None = None,
                progress=None, batch_rows: int = 262_144, scheduler: str | None = None) -> dict[str, Any]:
    """Freeze version N of ``datastack`` at ``timestamp`` (default now); returns its metadata dict.

    ``tables``: the annotation tables to include (default all); ``expires_in``: a timedelta or days
    until ``expires_on`` (default none); ``progress(phase, done, total)`` is called per table.
    Rows are streamed in runs of about ``batch_rows`` (one Parquet row group each), read and bound in a
    background thread while the previous run is written; each table is read at the Delta version
    recorded in the version's provenance. Idempotent for an explicit ``timestamp``: when a valid version already
    froze the same tables at that same time from the same table Delta versions and the same
    segmentation operation, that version is returned (``"reused": True``, its own ``expires_on``)
    instead of a duplicate; ``timestamp=None`` always makes a new version (time moves on). The dict
    has ``"reused": False`` for a new version. Raises NotFound (datastack, table), InvalidArgument
    (timestamp in the future; an unreachable ``scheduler``).

    ``scheduler`` (see :mod:`neurolake.jobs`): None runs here, in this process (the fastest for tables
    of a few million rows: ~2 M rows/s); given, the rows are written by Dask tasks aligned to output
    files (one per run of row groups, then one per table; :mod:`neurolake.materialize.tasks`), which a
    killed worker does not break. Both write the same files. The run is recorded as a job of kind
    ``materialize`` (:mod:`neurolake.jobs.records`, ``GET /api/v1/jobs``) with its progress.
    """
    from neurolake.annotations import get_table, list_tables
    from neurolake.provenance import record

    lake.datastack(datastack)
    now = utcnow()
    ts = parse_timestamp(timestamp) or now
    if ts > now + dt.timedelta(seconds=1):
        raise InvalidArgument(f"timestamp {ts.isoformat()} is in the future", field="timestamp",
                              value=ts.isoformat())
    names = list_tables(lake, datastack) if tables is None else list(tables)
    tabs = [get_table(lake, datastack, n) for n in names]
    seg = _segmentation(lake, datastack)
    if seg is not None:
        seg.state().seq_at(ts)  # InvalidArgument before the segmentation existed
    delta_versions = {t.name: t.version for t in tabs}  # each table is read at exactly this version
    if timestamp is not None:
        same = _same_version(lake, datastack, ts, delta_versions, seg)
        if same is not None:
            return {**same, "reused": True}
    base = lake.root / "datastacks" / datastack / "materializations"
    remote = is_s3(base)
    if not remote:
        base.mkdir(parents=True, exist_ok=True)
    with lake.catalog.session() as s:
        listed = {Path(p).name for p in s.scalars(select(MaterializationVersion.path).where(
            MaterializationVersion.datastack_id == _dsid(s, datastack)))}
    # left by a materialization killed more than a day ago: its temporary folder, or its folder renamed to
    # v<N>-… whose catalog row was never committed
    if remote:
        _remove_stale_remote(base, listed)
    else:
        for old in [*base.glob("tmp-*"), *(p for p in base.glob("v*-*") if p.name not in listed)]:
            try:
                if old.stat().st_mtime < dt.datetime.now().timestamp() - 86400:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
    from neurolake.jobs.records import start_job

    j = start_job(lake, "materialize", datastack=datastack, target=",".join(names) or "(no tables)", user=author,
                  scheduler=scheduler or "in-process")
    # on object storage there is no rename: the files are written in their final folder ``w-<uid>`` (unlisted
    # until the catalog row is committed; the row's commit makes the version)
    tmp = base / (f"w-{uuid.uuid4().hex[:12]}" if remote else f"tmp-{uuid.uuid4().hex[:12]}")
    if not remote:
        tmp.mkdir()
    done = False
    meta: dict[str, Any] = {}
    total = 0
    try:
        counts = None
        if scheduler is not None:
            from neurolake.materialize.tasks import materialize_on_dask

            counts = materialize_on_dask(lake, datastack, tabs, delta_versions, ts, seg, tmp, batch_rows, scheduler,
                                         job=j, progress=progress, empty_of=_empty_table)
        else:
            progress = j.progress(progress)
        for i, t in enumerate(tabs):
            if counts is not None:
                rows = counts[t.name]
            else:
                rows = _write_table(lake, datastack, t, delta_versions[t.name], ts, seg, tmp, batch_rows)
            meta[t.name] = {"rows": rows, "schema": t.schema.name, "delta_version": delta_versions[t.name],
                            "voxel_size_nm": list(t.voxel_size_nm), "description": t.description,
                            "segmentation_layer": t.segmentation_layer}
            total += rows
            if progress and counts is None:
                progress("materialize", i + 1, len(tabs))
        seg_info = None
        if seg is not None:
            st = seg.state()
            seg_info = {"layer": seg._row().layer, "operation_id": st.seq_at(ts)}
        expires_on = None
        if expires_in is not None:
            delta = expires_in if isinstance(expires_in, dt.timedelta) else dt.timedelta(days=float(expires_in))
            expires_on = now + delta
        with lake.catalog.session() as s:
            dsid = _dsid(s, datastack)
            n = (s.scalar(select(func.max(MaterializationVersion.version))
                          .where(MaterializationVersion.datastack_id == dsid)) or 0) + 1
            if remote:
                final = tmp
            else:
                final = base / f"v{n}-{uuid.uuid4().hex[:8]}"
                os.replace(tmp, final)
                for f in final.iterdir():
                    f.chmod(0o444)
            prov = record("materialize", inputs={"datastack": datastack, "tables": {
                k: {"delta_version": v["delta_version"]} for k, v in meta.items()}, "segmentation": seg_info},
                params={"timestamp": ts.isoformat()}, user=author)
            row = MaterializationVersion(datastack_id=dsid, version=n, time_stamp=ts, expires_on=expires_on,
                                         valid=True, status="AVAILABLE", created=now,
                                         path=relative(final, lake.root), tables=meta, rows=total,
                                         provenance=prov)
            s.add(row)
            s.flush()
            out = {**_vdict(row), "reused": False}
        done = True
        j.finish()
        return {**out, "job": j.id}
    except BaseException as exc:
        with contextlib.suppress(Exception):  # never hide the error behind a catalog error
            j.finish(exc)
        raise
    finally:
        if remote:
            if not done:
                remove_tree(tmp)
        elif tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_remote(base, listed: set[str]) -> None:
    """On object storage: delete the folders under ``base`` that no catalog row lists and whose newest object
    is more than a day old (left by a materialization killed before its catalog row was committed)."""
    try:
        entries = base.fs.ls(base.path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    limit = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    for e in entries:
        name = str(e).rstrip("/").rsplit("/", 1)[-1]
        if name in listed or not (name.startswith(("tmp-", "w-")) or (name.startswith("v") and "-" in name)):
            continue
        try:
            found = base.fs.find(str(e), detail=True)
            newest = max((f.get("LastModified") for f in found.values() if f.get("LastModified")), default=None)
        except OSError:
            continue
        if newest is not None and newest < limit:
            remove_tree(base / name)


def _empty_table(t) -> pa.Table:
    """The stored (empty) table of annotation table ``t`` in a version where it has no valid row."""
    empty = _uint64_ids(t, t.arrow_schema.empty_table())
    for p in t.schema.points:
        c = f"{p}_root_id"
        if c in empty.column_names:
            empty = empty.set_column(empty.column_names.index(c), c, pa.array([], pa.uint64()))
    return empty


def _write_table(lake, datastack: str, t, delta_version: int, ts: dt.datetime, seg, tmp: Path,
                 batch_rows: int) -> int:
    """Write ``<tmp>/<t.name>.parquet`` here, in this process: the rows valid at ``ts`` bound to the roots at
    ``ts``, one row group per run of about ``batch_rows`` rows. Returns the number of rows."""
    from neurolake.annotations.table import prefetch

    writer = None
    rows = 0
    target_schema = None
    # reading and binding the next runs of rows (a background thread; pyarrow and numpy release the GIL)
    # overlaps writing this one (the Parquet encoder is single-threaded and the largest cost)
    bound = (_uint64_ids(t, bind_roots(lake, datastack, t, run, ts, seg=seg))
             for run in _valid_runs(t, delta_version, ts, batch_rows))
    for tab in prefetch(bound, 2):
        if writer is None:
            target_schema = tab.schema
            # no dictionary for the unique ids (a wasted hash table: ~12 % of the encoding time)
            where, fs = arrow_source(tmp / f"{t.name}.parquet")
            writer = pq.ParquetWriter(where, target_schema, compression="zstd", filesystem=fs,
                                      use_dictionary=[c for c in target_schema.names if c != "id"])
        writer.write_table(tab.cast(target_schema), row_group_size=max(len(tab), 1))
        rows += tab.num_rows
    if writer is None:
        where, fs = arrow_source(tmp / f"{t.name}.parquet")
        pq.write_table(_empty_table(t), where, compression="zstd", filesystem=fs)
    else:
        writer.close()
    return rows


def _same_version(lake, datastack: str, ts: dt.datetime, delta_versions: dict[str, int], seg) -> dict | None:
    """The valid version frozen at ``ts`` from exactly these table Delta versions and segmentation
    operation (what :func:`materialize` would write again), or None."""
    seg_info = {"layer": seg._row().layer, "operation_id": seg.state().seq_at(ts)} if seg is not None else None
    inputs = {"tables": {k: {"delta_version": v} for k, v in delta_versions.items()}, "segmentation": seg_info}
    with lake.catalog.session() as s:
        rows = s.scalars(select(MaterializationVersion).where(
            MaterializationVersion.datastack_id == _dsid(s, datastack), MaterializationVersion.valid.is_(True))
            .order_by(MaterializationVersion.version)).all()
        for r in rows:
            got = (r.provenance or {}).get("inputs") or {}
            if (as_utc(r.time_stamp) == ts and got.get("tables") == inputs["tables"]
                    and got.get("segmentation") == inputs["segmentation"]
                    and (lake.root / r.path).is_dir()):
                return _vdict(r)
    return None


def versions(lake, datastack: str, expired: bool = False) -> list[dict[str, Any]]:
    """Versions of ``datastack`` (oldest first); only valid ones unless ``expired``."""
    lake.datastack(datastack)
    _expire_due(lake, datastack)
    with lake.catalog.session() as s:
        q = select(MaterializationVersion).where(MaterializationVersion.datastack_id == _dsid(s, datastack))
        if not expired:
            q = q.where(MaterializationVersion.valid.is_(True))
        return [_vdict(r) for r in s.scalars(q.order_by(MaterializationVersion.version))]


def _expire_due(lake, datastack: str) -> None:
    """Expire versions whose ``expires_on`` passed (never the newest valid one, never one a production query
    run pinned: those stay valid until the runs are deleted or the version is expired with ``force``)."""
    from neurolake.provenance.runs import protecting_runs

    now = utcnow()
    with lake.catalog.session() as s:
        rows = s.scalars(select(MaterializationVersion).where(
            MaterializationVersion.datastack_id == _dsid(s, datastack),
            MaterializationVersion.valid.is_(True)).order_by(MaterializationVersion.version)).all()
        due = [r.version for r in rows[:-1] if r.expires_on is not None and as_utc(r.expires_on) <= now]
        due = [v for v in due if not protecting_runs(lake, PINNING_KINDS, datastack, None, v, session=s)]
    for v in due:
        with contextlib.suppress(VersionExpired, Conflict):  # expired or pinned meanwhile by another process
            expire(lake, datastack, v)


def get_version(lake, datastack: str, version: int | None = None, allow_expired: bool = True) -> dict[str, Any]:
    """Metadata of ``version`` (None = the newest valid one). Raises NotFound; VersionExpired when the
    version is expired and ``allow_expired`` is false."""
    lake.datastack(datastack)
    with lake.catalog.session() as s:
        dsid = _dsid(s, datastack)
        if version is None:
            row = s.scalar(select(MaterializationVersion).where(
                MaterializationVersion.datastack_id == dsid, MaterializationVersion.valid.is_(True))
                .order_by(MaterializationVersion.version.desc()).limit(1))
            if row is None:
                raise NotFound(f"datastack {datastack!r} has no materialization version yet; run "
                               f"`neurolake materialize {datastack}`", datastack=datastack)
        else:
            v = whole(version, "version", 0, INT64_MAX)
            row = s.scalar(select(MaterializationVersion).where(MaterializationVersion.datastack_id == dsid,
                                                                MaterializationVersion.version == v))
            if row is None:
                known = s.scalars(select(MaterializationVersion.version).where(
                    MaterializationVersion.datastack_id == dsid).order_by(MaterializationVersion.version)).all()
                raise NotFound(f"version {v} of datastack {datastack!r} does not exist (versions: {list(known)})",
                               datastack=datastack, version=v)
        d = _vdict(row)
    if not allow_expired and not d["valid"]:
        raise VersionExpired(f"version {d['version']} of datastack {datastack!r} is expired; use a valid version "
                             f"(`neurolake versions {datastack}`)", datastack=datastack, version=d["version"])
    return d


def expire(lake, datastack: str, version: int, force: bool = False) -> dict[str, Any]:
    """Expire ``version``: mark it invalid and delete its files. The newest valid version cannot be
    expired (InvalidArgument). A version a production query run pinned (one of its tables or its connectome,
    :func:`neurolake.provenance.runs.protecting_runs`) is refused with Conflict naming the runs, unless
    ``force``; the dict returned has ``"broken_runs"``: the ids of the production runs this made
    irreproducible (empty without a pin). Raises NotFound; VersionExpired when already expired."""
    from neurolake.provenance.runs import protecting_runs, short_ids

    version = whole(version, "version", 0, INT64_MAX)
    with lake.catalog.session() as s:
        dsid = _dsid(s, datastack)
        row = s.scalar(select(MaterializationVersion).where(MaterializationVersion.datastack_id == dsid,
                                                            MaterializationVersion.version == version)
                       .with_for_update())
        if row is None:
            raise NotFound(f"version {version} of datastack {datastack!r} does not exist", datastack=datastack,
                           version=int(version))
        if not row.valid:
            raise VersionExpired(f"version {version} of datastack {datastack!r} is already expired",
                                 datastack=datastack, version=int(version))
        newest = s.scalar(select(func.max(MaterializationVersion.version)).where(
            MaterializationVersion.datastack_id == dsid, MaterializationVersion.valid.is_(True)))
        if newest == row.version:
            raise InvalidArgument(f"version {version} is the newest valid version of {datastack!r}; it cannot be "
                                  "expired (materialize a newer one first)", field="version", value=int(version))
        broken = protecting_runs(lake, PINNING_KINDS, datastack, None, row.version, session=s)
        if broken and not force:
            n = len(broken)
            raise Conflict(f"version {version} of datastack {datastack!r} is pinned by {n} production query "
                           f"run{'s' if n > 1 else ''} ({short_ids(broken)}); expiring it would make "
                           f"{'them' if n > 1 else 'it'} irreproducible; pass force=True (`--force`) to expire "
                           "anyway", datastack=datastack, version=int(version), runs=broken)
        row.valid = False
        row.status = "EXPIRED"
        row.expires_on = min(as_utc(row.expires_on), utcnow()) if row.expires_on else utcnow()
        path = lake.root / row.path
        out = {**_vdict(row), "broken_runs": broken}
    remove_tree(path)
    return out


def version_tables(lake, datastack: str, version: int) -> list[str]:
    """Names of the tables frozen in ``version``. Raises NotFound, VersionExpired."""
    return sorted(get_version(lake, datastack, version, allow_expired=False)["tables"])


def root_columns(lake, datastack: str, version: int | None, table: str) -> list[str]:
    """The ``*_root_id`` columns of ``table`` in materialization ``version`` (None = newest valid).
    Raises NotFound, VersionExpired."""
    v, path = _table_file(lake, datastack, version, table)
    with _expiring(lake, datastack, v["version"]):
        return [c for c in pq.read_schema(open_input(path)).names if c.endswith("_root_id")]


@contextlib.contextmanager
def _expiring(lake, datastack: str, version: int):
    """Reading the files of ``version``: when they vanish under the reader because :func:`expire` ran
    meanwhile (in another thread or process), raise VersionExpired (410) instead of the I/O error."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        try:
            get_version(lake, datastack, version, allow_expired=False)
        except VersionExpired as gone:  # expire() commits the row before it deletes the files
            raise gone from exc
        raise


def _table_file(lake, datastack: str, version: int, table: str) -> tuple[dict, Path]:
    v = get_version(lake, datastack, version, allow_expired=False)
    if table not in v["tables"]:
        raise NotFound(f"table {table!r} is not in version {v['version']} of {datastack!r} "
                       f"(tables: {sorted(v['tables'])})", datastack=datastack, version=v["version"], table=table)
    return v, lake.root / v["path"] / f"{table}.parquet"


def filter_expression(schema: pa.Schema, filter_in: dict | None = None, filter_equal: dict | None = None,
                      filter_not_in: dict | None = None, filter_greater: dict | None = None,
                      filter_less: dict | None = None, filter_spatial: dict | None = None, table: str = "",
                      filter_greater_equal: dict | None = None, filter_less_equal: dict | None = None):
    """A pyarrow filter from CAVE-style filter dicts ``{column: value(s)}``; ``filter_spatial`` is
    ``{point: [[x0, y0, z0], [x1, y1, z1]]}`` in stored voxels (half-open). Raises InvalidArgument."""
    names = schema.names
    expr = None

    def conj(e):
        nonlocal expr
        expr = e if expr is None else expr & e

    def col(c):
        if c not in names:
            raise InvalidArgument(f"column {c!r} is not in table {table!r}; columns: {names}", field="filters",
                                  value=c, allowed=names)
        return pc.field(c), schema.field(c).type

    def lit(v, typ):
        try:
            return pa.array(list(v) if isinstance(v, list | tuple | set | np.ndarray) else [v]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(f"filter value {v!r} does not fit column type {typ}", field="filters") from exc

    for c, v in (filter_in or {}).items():
        f, typ = col(c)
        conj(f.isin(lit(v, typ)))
    for c, v in (filter_not_in or {}).items():
        f, typ = col(c)
        conj(~f.isin(lit(v, typ)))
    for c, v in (filter_equal or {}).items():
        f, typ = col(c)
        conj(f == lit(v, typ)[0]) if v is not None else conj(f.is_null())
    for c, v in (filter_greater or {}).items():
        f, typ = col(c)
        conj(f > lit(v, typ)[0])
    for c, v in (filter_less or {}).items():
        f, typ = col(c)
        conj(f < lit(v, typ)[0])
    for c, v in (filter_greater_equal or {}).items():
        f, typ = col(c)
        conj(f >= lit(v, typ)[0])
    for c, v in (filter_less_equal or {}).items():
        f, typ = col(c)
        conj(f <= lit(v, typ)[0])
    for point, box in (filter_spatial or {}).items():
        try:
            lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
            assert lo.shape == (3,) and hi.shape == (3,)
        except (TypeError, ValueError, IndexError, AssertionError):
            raise InvalidArgument(f"spatial filter of {point!r} must be [[x0, y0, z0], [x1, y1, z1]], got {box!r}",
                                  field="filter_spatial") from None
        for i, a in enumerate("xyz"):
            f, _ = col(f"{point}_position_{a}")
            conj((f >= float(lo[i])) & (f < float(hi[i])))
    return expr


def _window(offset: Any, limit: Any) -> tuple[int, int | None]:
    """(offset, limit) of a row query: whole numbers >= 0 (limit None: all rows; 0: none, the schema only);
    InvalidArgument naming the field otherwise."""
    return (whole(offset or 0, "offset", 0, INT64_MAX),
            None if limit is None else whole(limit, "limit", 0, INT64_MAX))


def query_version(lake, datastack: str, version: int | None, table: str, *, filter_in: dict | None = None,
                  filter_equal: dict | None = None, filter_not_in: dict | None = None,
                  filter_greater: dict | None = None, filter_less: dict | None = None,
                  filter_spatial: dict | None = None, filter_greater_equal: dict | None = None,
                  filter_less_equal: dict | None = None, columns: list[str] | None = None, offset: int = 0,
                  limit: int | None = None) -> Result:
    """Rows of ``table`` in materialization ``version`` (None = newest valid), sorted by id, as a
    :class:`~neurolake.base.results.Result` (metadata: datastack, table, version, its timestamp, filters).

    Filters as in :func:`filter_expression`; ``columns`` selects columns. Raises NotFound, VersionExpired,
    InvalidArgument.
    """
    _window(offset, limit)  # InvalidArgument before any reading
    v, path = _table_file(lake, datastack, version, table)
    with _expiring(lake, datastack, v["version"]):
        where, fs = arrow_source(path)
        ds = pads.dataset(where, format="parquet", filesystem=fs)
        expr = filter_expression(ds.schema, filter_in, filter_equal, filter_not_in, filter_greater, filter_less,
                                 filter_spatial, table, filter_greater_equal, filter_less_equal)
        if columns is not None:
            bad = [c for c in columns if c not in ds.schema.names]
            if bad:
                raise InvalidArgument(f"columns {bad} are not in table {table!r}; columns: {ds.schema.names}",
                                      field="select_columns", value=bad)
        tab = ds.to_table(filter=expr, columns=list(columns) if columns else None)
    if "id" in tab.column_names and len(tab) > 1:
        tab = tab.take(pc.sort_indices(tab, [("id", "ascending")]))
    if offset or limit is not None:
        tab = tab.slice(*_window(offset, limit))
    filters = {k: val for k, val in {"filter_in": filter_in, "filter_equal": filter_equal,
                                     "filter_not_in": filter_not_in, "filter_greater": filter_greater,
                                     "filter_less": filter_less, "filter_spatial": filter_spatial,
                                     "filter_greater_equal": filter_greater_equal,
                                     "filter_less_equal": filter_less_equal}.items() if val}
    return Result(tab, {"datastack": datastack, "table": table, "version": v["version"],
                        "timestamp": v["timestamp"], "filters": filters or None})


def live_query(lake, datastack: str, table: str, timestamp: Any = None, *, filter_in: dict | None = None,
               filter_equal: dict | None = None, filter_not_in: dict | None = None,
               filter_spatial: dict | None = None, columns: list[str] | None = None, offset: int = 0,
               limit: int | None = None) -> Result:
    """Rows of annotation ``table`` valid at ``timestamp`` (None = now), bound to root ids at that time —
    the same answer a version materialized at ``timestamp`` would give, computed on the fly — as a
    :class:`~neurolake.base.results.Result` (metadata: datastack, table, timestamp, filters)."""
    from neurolake.annotations import get_table

    _window(offset, limit)  # InvalidArgument before any reading
    t = get_table(lake, datastack, table)
    ts = parse_timestamp(timestamp) or utcnow()
    ds = t.dataset()
    expr = filter_expression(ds.schema, filter_in, None, filter_not_in, None, None, filter_spatial, table)
    root_filters = {}
    eq = dict(filter_equal or {})
    # filters on root ids must be applied after binding
    for k in list(filter_in or {}):
        if k.endswith("_root_id"):
            root_filters[k] = filter_in[k]
    if root_filters:
        expr = filter_expression(ds.schema, {k: v for k, v in (filter_in or {}).items() if k not in root_filters},
                                 None, filter_not_in, None, None, filter_spatial, table)
    root_eq = {k: v for k, v in eq.items() if k.endswith("_root_id")}
    rest_eq = {k: v for k, v in eq.items() if k not in root_eq}
    if rest_eq:
        e2 = filter_expression(ds.schema, None, rest_eq, table=table)
        expr = e2 if expr is None else expr & e2
    full = _valid_filter(ts) if expr is None else (_valid_filter(ts) & expr)
    tab = ds.to_table(filter=full)
    tab = _uint64_ids(t, bind_roots(lake, datastack, t, tab, ts))
    post = filter_expression(tab.schema, root_filters or None, root_eq or None, table=table)
    if post is not None:
        tab = tab.filter(post)
    if "id" in tab.column_names and len(tab) > 1:
        tab = tab.take(pc.sort_indices(tab, [("id", "ascending")]))
    if columns is not None:
        bad = [c for c in columns if c not in tab.column_names]
        if bad:
            raise InvalidArgument(f"columns {bad} are not in table {table!r}; columns: {tab.column_names}",
                                  field="select_columns", value=bad)
        tab = tab.select(list(columns))
    if offset or limit is not None:
        tab = tab.slice(*_window(offset, limit))
    filters = {k: val for k, val in {"filter_in": filter_in, "filter_equal": filter_equal,
                                     "filter_not_in": filter_not_in, "filter_spatial": filter_spatial}.items()
               if val}
    return Result(tab, {"datastack": datastack, "table": table, "timestamp": ts.isoformat(),
                        "filters": filters or None})
