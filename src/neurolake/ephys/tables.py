"""The ephys tables of a datastack: Delta Lake tables under ``<lake>/datastacks/<ds>/ephys/<table>/``.

Every table but ``errors`` is keyed by ``file_sha256`` (the SHA-256 of the source file's bytes). The ``files``
table is written **last** for each batch of files: a file is loaded when, and only when, its row is in
``files``. A process killed mid-batch leaves rows of other tables whose file has no ``files`` row: readers
(:func:`read`, the SQL views) only return rows of loaded files, and the next ingest deletes them
(:func:`remove_orphans`). Each write is one Delta commit; Delta time travel gives every earlier version.

Units are in the column names (``_mv``, ``_pa``, ``_s``, ``_ms``, ``_hz``, ``_um``, ``_mohm``); times of
spikes are seconds from the sweep start (patch clamp) or the recording start (MEA). The columns of each
table are :data:`SCHEMAS` (docs/ephys.md lists them with their meaning).

On a lake on object storage the tables live under its ``s3://`` prefix (delta-rs with the lake's
``storage_options``) and writers of a datastack are serialised by a database lock instead of a file lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from neurolake.base.names import not_found
from neurolake.storage.config import is_s3, storage_config

_str, _f64, _i64, _bool = pa.string(), pa.float64(), pa.int64(), pa.bool_()
_ts = pa.timestamp("us", tz="UTC")
_strs = pa.list_(pa.string())

SCHEMAS: dict[str, pa.Schema] = {
    "files": pa.schema([
        ("file_sha256", _str), ("path", _str), ("name", _str), ("format", _str), ("format_version", _str),
        ("bytes", _i64), ("recorded_at", _ts), ("protocol", _str), ("lab", _str), ("cell", _str),
        ("conditions", _str), ("n_sweeps", _i64), ("n_channels", _i64), ("n_spikes", _i64), ("flags", _strs),
        ("metadata", _str), ("ingested_at", _ts), ("ingested_by", _str), ("neurolake_version", _str),
        ("git_commit", _str)]),
    "sweeps": pa.schema([
        ("file_sha256", _str), ("cell", _str), ("sweep", _i64), ("channel", _i64), ("clamp_mode", _str),
        ("stimulus_class", _str), ("stimulus_amplitude_pa", _f64), ("stimulus_amplitude_mv", _f64),
        ("holding_pa", _f64), ("holding_mv", _f64), ("stimulus_start_s", _f64), ("stimulus_end_s", _f64),
        ("stimulus_rule", _str), ("sampling_rate_hz", _f64), ("n_samples", _i64), ("duration_s", _f64),
        ("start_s", _f64), ("response_unit", _str), ("command_unit", _str), ("label", _str),
        ("qc_passed", _bool), ("qc_reasons", _strs), ("qc_measures", _str), ("qc_thresholds_version", _str),
        ("qc_thresholds", _str), ("flags", _strs)]),
    "spikes": pa.schema([
        ("file_sha256", _str), ("cell", _str), ("sweep", _i64), ("channel", _i64), ("spike", _i64),
        ("threshold_time_s", _f64), ("threshold_mv", _f64), ("peak_time_s", _f64), ("peak_mv", _f64),
        ("trough_time_s", _f64), ("trough_mv", _f64), ("width_ms", _f64), ("upstroke_mv_per_ms", _f64),
        ("downstroke_mv_per_ms", _f64)]),
    "sweep_features": pa.schema([
        ("file_sha256", _str), ("cell", _str), ("sweep", _i64), ("channel", _i64), ("feature", _str),
        ("value", _f64), ("status", _str), ("library", _str), ("library_version", _str), ("settings", _str)]),
    "cell_features": pa.schema([
        ("file_sha256", _str), ("cell", _str), ("channel", _i64), ("feature", _str), ("value", _f64),
        ("status", _str), ("stimulus_class", _str), ("n_sweeps", _i64), ("library", _str),
        ("library_version", _str), ("settings", _str)]),
    "mea_spikes": pa.schema([
        ("file_sha256", _str), ("plate", _str), ("well", _str), ("electrode", _str), ("time_s", _f64),
        ("amplitude_mv", _f64)]),
    "mea_electrodes": pa.schema([
        ("file_sha256", _str), ("plate", _str), ("well", _str), ("electrode", _str), ("x_um", _f64),
        ("y_um", _f64), ("n_spikes", _i64), ("firing_rate_hz", _f64), ("active", _bool), ("isi_mean_s", _f64),
        ("isi_median_s", _f64), ("isi_cv", _f64), ("n_bursts", _i64), ("burst_rate_per_min", _f64),
        ("burst_duration_mean_s", _f64), ("spikes_per_burst_mean", _f64), ("pct_spikes_in_bursts", _f64)]),
    "mea_wells": pa.schema([
        ("file_sha256", _str), ("plate", _str), ("well", _str), ("treatment", _str), ("dose", _f64),
        ("dose_unit", _str), ("div", _i64), ("n_electrodes", _i64), ("n_active_electrodes", _i64),
        ("n_spikes", _i64), ("firing_rate_hz", _f64), ("well_firing_rate_hz", _f64), ("n_bursts", _i64),
        ("burst_rate_per_min", _f64), ("pct_spikes_in_bursts", _f64), ("n_network_bursts", _i64),
        ("network_burst_rate_per_min", _f64), ("duration_s", _f64), ("burst_params", _str)]),
    "mea_network_bursts": pa.schema([
        ("file_sha256", _str), ("plate", _str), ("well", _str), ("start_s", _f64), ("end_s", _f64),
        ("n_spikes", _i64), ("n_electrodes", _i64)]),
    "errors": pa.schema([
        ("path", _str), ("file_sha256", _str), ("format", _str), ("error_code", _str), ("message", _str),
        ("at", _ts)]),
}
TABLES = tuple(SCHEMAS)
KEYED = tuple(t for t in TABLES if t not in ("files", "errors"))  # rows of loaded files only
ROW_GROUP_ROWS = 65_536
TARGET_FILE_BYTES = 32 << 20  # Parquet data files of ~32 MB: the writer's buffers stay small while streaming

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def root(lake, datastack: str) -> Path | Any:
    """``<lake>/datastacks/<ds>/ephys``: the tables and the ``traces/`` Zarr stores of a datastack (a Path, or a
    ``upath.UPath`` on a lake on object storage)."""
    return lake.root / "datastacks" / datastack / "ephys"


def _opts(path: Any) -> dict[str, str] | None:
    """delta-rs ``storage_options`` of the table at ``path`` (None for a local folder)."""
    return storage_config().delta_options(path) or None


def _table(path: Any, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(str(path), version=version, storage_options=_opts(path))


def table_path(lake, datastack: str, table: str) -> Path:
    """The Delta table folder of ``table``. Raises NotFound for a name that is not an ephys table."""
    if table not in SCHEMAS:
        raise not_found("ephys table", table, list(TABLES), field="table")
    return root(lake, datastack) / table


def exists(lake, datastack: str, table: str) -> bool:
    path = table_path(lake, datastack, table)
    if is_s3(path):
        try:
            return bool(path.fs.ls(f"{path.path}/_delta_log", detail=False, refresh=True))
        except (FileNotFoundError, NotADirectoryError):
            return False
    return (path / "_delta_log").is_dir()


@contextmanager
def write_lock(lake, datastack: str) -> Iterator[None]:
    """Serialise writers of one datastack's ephys tables: a thread lock plus an ``fcntl`` lock on
    ``ephys/.lock``, so two ingests (threads or processes) never interleave their batches. On object storage:
    the thread lock plus a database lock (:attr:`neurolake.lake.Lake.locks`), held by every process and machine."""
    folder = root(lake, datastack)
    key = str(folder)
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    if is_s3(folder):
        with lock, lake.locks.hold(f"ephys-write:{key}", timeout_s=3600, what=f"ephys ingest of {datastack}"):
            yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with lock, open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def to_arrow(table: str, rows: Iterable[dict[str, Any]] | pa.Table) -> pa.Table:
    """Rows (dicts, or an Arrow table with at least the table's columns) as an Arrow table of exactly
    :data:`SCHEMAS` [table] (missing columns null; extra keys dropped). Raises InvalidArgument on a value that
    does not convert."""
    from neurolake.errors import InvalidArgument

    schema = SCHEMAS[table]
    try:
        if isinstance(rows, pa.Table):
            cols = [rows.column(f.name).cast(f.type) if f.name in rows.column_names
                    else pa.nulls(rows.num_rows, f.type) for f in schema]
            return pa.Table.from_arrays(cols, schema=schema)
        return pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"ephys table {table}: a value does not fit its column ({exc})",
                              field=table) from exc


def append(lake, datastack: str, table: str, data: pa.Table | pa.RecordBatchReader, *,
           note: str = "") -> int | None:
    """Append ``data`` (already :func:`to_arrow`-shaped, or a RecordBatchReader of that schema: streamed, never
    held whole) to ``table`` in one Delta commit; the table is created on first write. Returns the new Delta
    version (None when there was nothing to write)."""
    from deltalake import CommitProperties, WriterProperties, write_deltalake

    if isinstance(data, pa.Table) and data.num_rows == 0:
        return None
    path = table_path(lake, datastack, table)
    if not is_s3(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), data, mode="append", schema_mode=None, target_file_size=TARGET_FILE_BYTES,
                    storage_options=_opts(path),
                    writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="ZSTD"),
                    commit_properties=CommitProperties(custom_metadata={"neurolake.operation": note or "ingest"}))
    return version(lake, datastack, table)


def delete_files(lake, datastack: str, table: str, shas: Iterable[str], *, note: str = "replace") -> None:
    """Delete the rows of the files ``shas`` from ``table`` (one Delta commit; nothing when none match)."""
    from deltalake import CommitProperties

    shas = sorted(set(shas))
    if not shas or not exists(lake, datastack, table):
        return
    lits = ", ".join("'" + s.replace("'", "''") + "'" for s in shas)
    _table(table_path(lake, datastack, table)).delete(
        f"file_sha256 IN ({lits})",
        commit_properties=CommitProperties(custom_metadata={"neurolake.operation": note}))


def version(lake, datastack: str, table: str) -> int | None:
    """The newest Delta version of ``table`` (None when it has never been written)."""
    if not exists(lake, datastack, table):
        return None
    return _table(table_path(lake, datastack, table)).version()


def read(lake, datastack: str, table: str, *, columns: list[str] | None = None, filter: Any = None,
         version: int | None = None, loaded_only: bool = True) -> pa.Table:
    """Rows of ``table`` (an empty table of the right schema when it was never written). ``filter``: a
    ``pyarrow.compute`` expression. ``loaded_only``: keep only rows of files that have a ``files`` row (the
    rows a killed ingest left behind are not returned)."""
    if not exists(lake, datastack, table):
        out = SCHEMAS[table].empty_table()
        return out.select(columns) if columns else out
    dt = _table(table_path(lake, datastack, table), version)
    ds = dt.to_pyarrow_dataset()
    cols = columns if columns is None or "file_sha256" in columns or not loaded_only else [*columns, "file_sha256"]
    out = ds.to_table(columns=cols, filter=filter)
    if loaded_only and table in KEYED:
        import pyarrow.compute as pc

        loaded = loaded_shas(lake, datastack, files_version_for(lake, datastack, table, version))
        out = out.filter(pc.is_in(out["file_sha256"], value_set=pa.array(sorted(loaded), pa.string())))
        if columns is not None and "file_sha256" not in columns:
            out = out.drop_columns(["file_sha256"])
    return out


def loaded_shas(lake, datastack: str, files_version: int | None = -1) -> set[str]:
    """SHA-256 of every loaded file (the ``files`` table's keys) at ``files_version`` (-1: the newest; None: no
    version, i.e. nothing loaded yet)."""
    if files_version is None or not exists(lake, datastack, "files"):
        return set()
    return set(read(lake, datastack, "files", columns=["file_sha256"],
                    version=None if files_version == -1 else files_version)["file_sha256"].to_pylist())


def _commit_ms(path: Path | Any) -> dict[int, int]:
    return {int(h["version"]): int(h["timestamp"]) for h in _table(path).history()
            if h.get("timestamp") is not None}


def files_version_for(lake, datastack: str, table: str, version: int | None) -> int | None:
    """The ``files`` version that says which rows of ``table`` at Delta ``version`` were loaded: -1 (the newest)
    for the newest version; otherwise the newest ``files`` version committed before ``table``'s next commit
    (an ingest commits the other tables first and ``files`` last, so that is the state the version belonged
    to); None when no ``files`` version is that old. Uses the Delta commit timestamps (ms)."""
    if version is None or table not in KEYED:
        return -1
    path = table_path(lake, datastack, table)
    commits = _commit_ms(path)
    if version >= max(commits):
        return -1
    nxt = commits.get(version + 1)
    if nxt is None or not exists(lake, datastack, "files"):
        return -1 if nxt is None else None
    before = [v for v, ms in _commit_ms(table_path(lake, datastack, "files")).items() if ms < nxt]
    return max(before) if before else None


def remove_orphans(lake, datastack: str) -> dict[str, int]:
    """Delete rows whose file has no ``files`` row (left by a process killed mid-batch). Returns the number of
    files cleaned per table. Call under :func:`write_lock`."""
    import pyarrow.compute as pc

    loaded = loaded_shas(lake, datastack)
    cleaned: dict[str, int] = {}
    for table in KEYED:
        if not exists(lake, datastack, table):
            continue
        shas = set(pc.unique(read(lake, datastack, table, columns=["file_sha256"], loaded_only=False)
                             ["file_sha256"]).to_pylist())
        orphans = shas - loaded
        if orphans:
            delete_files(lake, datastack, table, orphans, note="remove rows of a file whose load did not finish")
            cleaned[table] = len(orphans)
    return cleaned


def os_fsync_dir(path: Path) -> None:
    """fsync a folder (after a rename into it), so the rename survives a power cut. Nothing on object storage."""
    if is_s3(path):
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
