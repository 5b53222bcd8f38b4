"""Materialization on Dask: tasks aligned to output files, idempotent, committed by the client.

:func:`materialize_on_dask` freezes the same rows as the in-process path of
:func:`neurolake.materialize.versions.materialize`, in two sets of tasks on a Dask cluster:

1. **runs**: one task per run of whole row groups of a table's Delta files (the runs the in-process path
   reads, about ``batch_rows`` rows each). A task reads its row groups, keeps the rows valid at T, binds
   every ``<point>_root_id`` to the root at T and writes the run as ``parts/<table>/<k>.parquet`` (one
   row group) — in a folder written to a temporary name and renamed, so a file of that name is always whole;
   on object storage written as one object of that name (an upload becomes visible only once complete);
2. **tables**: one task per table concatenates its parts in run order into ``<table>.parquet`` (again
   temporary name + rename in a folder, one object on S3), so the version keeps one Parquet file per table,
   equal to the in-process one (same rows, order and row groups).

A task killed with its worker is re-run by the scheduler elsewhere and writes the same file name with the
same content; nothing else is written, so no row is lost or written twice. Only the client commits: once
every task finished it removes the parts and the roots snapshot, then (in
:func:`~neurolake.materialize.versions.materialize`) renames the temporary folder to ``v<N>-…`` and adds the
catalog row; on object storage there is no rename: the tasks write into the version's final prefix
``w-<uid>/``, which the catalog row's commit makes the version. The roots at T are computed once by the
client from the proofreading state and handed to the tasks as a file (``roots.npz``: the sorted supervoxel
ids and their roots at T), so workers never open the catalog.

Tasks receive locations as strings (a folder path or ``s3://bucket/key``) and reach an object store with the
settings of their own AWS environment (:func:`neurolake.storage.config.storage_config`), so workers of a lake
on S3 need the same ``AWS_*`` variables as the client; workers of a lake in a folder must see it at the same
path (one machine, or a shared file system).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neurolake.annotations.paths import open_input
from neurolake.storage.config import is_s3, storage_config

ROOTS_FILE = "roots.npz"
PARTS = "parts"


# -------------------------------------------------------------------------------------------------
# on the workers
# -------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _roots_table(path: str) -> tuple[np.ndarray, np.ndarray]:
    if is_s3(path):
        fs, key = storage_config().pyarrow_fs(path)
        with fs.open_input_stream(key) as f:
            path = io.BytesIO(f.read())
    with np.load(path) as z:
        return z["sv"], z["root"]


def roots_lookup(path: str | None, svs: np.ndarray) -> np.ndarray:
    """Root id at T of each supervoxel id in ``svs`` (uint64) from the snapshot at ``path`` (None: no
    segmentation, the supervoxel ids themselves); unknown ids give 0 (``Segmentation.roots(unknown="zero")``)."""
    if path is None:
        return svs
    sv, root = _roots_table(path)
    if len(sv) == 0:
        return np.zeros(len(svs), np.uint64)
    pos = np.searchsorted(sv, svs)
    np.minimum(pos, len(sv) - 1, out=pos)
    ok = sv[pos] == svs
    return np.where(ok, root[pos], np.uint64(0)).astype(np.uint64, copy=False)


def _u64(col) -> np.ndarray | None:
    if col.null_count == len(col):
        return None
    if col.null_count:
        col = pc.fill_null(col, 0)
    vals = np.asarray(col.to_numpy(zero_copy_only=False))
    return vals.view(np.uint64) if vals.dtype.itemsize == 8 and vals.dtype.kind in "iu" else vals.astype(np.uint64)


def bind(tab: pa.Table, plan: dict[str, Any]) -> pa.Table:
    """The root binding of :func:`neurolake.materialize.versions.bind_roots` from a task ``plan`` (points,
    the supervoxel layer to look points up in, the roots snapshot), then ids as uint64."""
    pending = []
    lookup = plan.get("lookup")  # {"spec": tensorstore spec JSON, "scale": (3,), "size_xyz": (3,)} or None
    for p in plan["points"]:
        rcol, scol = f"{p}_root_id", f"{p}_supervoxel_id"
        if rcol not in tab.column_names or scol not in tab.column_names:
            continue
        stored = _u64(tab.column(rcol))
        svs = _u64(tab.column(scol))
        if svs is None:
            svs = np.zeros(len(tab), np.uint64)
        if lookup is not None and len(tab):
            from neurolake.volumes.store import open_array_cached

            pos = np.stack([tab.column(f"{p}_position_{a}").to_numpy(zero_copy_only=False) for a in "xyz"], axis=1)
            ok = ~np.isnan(pos).any(axis=1)
            vox = np.clip(np.floor(pos[ok] * np.asarray(lookup["scale"])).astype(np.int64), 0,
                          np.asarray(lookup["size_xyz"]) - 1)[:, ::-1]
            svs = np.zeros(len(tab), np.uint64)
            if len(vox):
                arr = open_array_cached(lookup["spec"])
                svs[ok] = arr.vindex[vox[:, 0], vox[:, 1], vox[:, 2]].read().result().astype(np.uint64)
            tab = tab.set_column(tab.column_names.index(scol), scol, pa.array(svs.view(np.int64), pa.int64(), mask=~ok))
        pending.append((rcol, svs, stored))
    if pending:
        allsv = np.concatenate([x for _, x, _ in pending])
        roots = roots_lookup(plan.get("roots"), allsv)
        k = 0
        for rcol, svs, stored in pending:
            r = roots[k:k + len(svs)].astype(np.uint64, copy=False)
            if stored is not None:
                r = np.where(svs == 0, stored, r)
            k += len(svs)
            tab = tab.set_column(tab.column_names.index(rcol), rcol, pa.array(r, pa.uint64()))
    for name in plan["id_columns"]:
        if name in tab.column_names and tab.schema.field(name).type != pa.uint64():
            i = tab.column_names.index(name)
            c = tab.column(name)
            tab = tab.set_column(i, name, pa.chunked_array([ch.view(pa.uint64()) for ch in c.chunks], pa.uint64())
                                 if c.type == pa.int64() else c.cast(pa.uint64()))
    return tab


def _replace_into(path: Path, write) -> None:
    """``write(tmp)`` then rename to ``path``: a file of that name is always whole."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _put(url: str, write) -> None:
    """``write(where, filesystem)`` straight to the object ``url`` (``s3://…``): an upload becomes visible only
    once complete, so an object of that name is always whole; a re-run writes the same name again."""
    fs, key = storage_config().pyarrow_fs(url)
    write(key, fs)


def _writer_options(schema: pa.Schema) -> dict[str, Any]:
    # as the in-process path: zstd, no dictionary for the unique ids
    return {"compression": "zstd", "use_dictionary": [c for c in schema.names if c != "id"]}


def row_group_runs(md: pq.FileMetaData, rows: int) -> list[list[int]]:
    """Consecutive row groups of a Parquet file (its ``md``) in runs of about ``rows`` rows each (a run closes
    once it holds ``rows`` or more): the unit of work of a materialization task. Empty files give ``[]``."""
    groups: list[list[int]] = [[]]
    n = 0
    for g in range(md.num_row_groups):
        if n >= rows:
            groups.append([])
            n = 0
        groups[-1].append(g)
        n += md.row_group(g).num_rows
    return [gs for gs in groups if gs]


def rows_at(tab: pa.Table, schema: pa.Schema, t: pa.Scalar) -> pa.Table:
    """The rows of ``tab`` (read from an annotation table's files) live at time ``t``: created at or before
    ``t`` and not deleted by then, conformed to the stored ``schema`` (files written by MERGE may carry
    string_view/large types, or lack a column)."""
    tab = pa.Table.from_arrays(
        [tab.column(f.name).cast(f.type) if f.name in tab.column_names else pa.nulls(len(tab), f.type)
         for f in schema], schema=schema)
    created, deleted = tab.column("created"), tab.column("deleted")
    keep = pc.less_equal(created, t)
    if deleted.null_count < len(deleted):
        keep = pc.and_(keep, pc.or_kleene(pc.is_null(deleted), pc.greater(deleted, t)))
    return tab if pc.all(keep).as_py() else tab.filter(keep)


def run_task(plan: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Materialize one run (task of set 1): ``run`` = ``{"k", "file", "groups"}`` (row groups of one Parquet
    file) or ``{"k", "delta": True}`` (a table read through a Delta dataset scan: deletion vectors or
    partitions). Writes ``<out>/parts/<table>/<k>.parquet`` when rows remain; returns ``{"table", "k",
    "rows", "file"}`` (file None without rows)."""
    from neurolake.base.time import parse_timestamp

    ts = parse_timestamp(plan["timestamp"])
    t = pa.scalar(ts, pa.timestamp("us", tz="UTC"))
    schema: pa.Schema = plan["schema"]
    if run.get("delta"):
        from deltalake import DeltaTable

        ds = DeltaTable(plan["table_path"], version=plan["delta_version"],
                        storage_options=storage_config().delta_options(plan["table_path"]) or None
                        ).to_pyarrow_dataset()
        flt = (pc.field("created") <= t) & (pc.field("deleted").is_null() | (pc.field("deleted") > t))
        batches = list(ds.to_batches(filter=flt, batch_size=plan["batch_rows"]))
        runs = []
        pending, n = [], 0
        for b in batches:  # the same runs as the in-process path
            pending.append(b)
            n += b.num_rows
            if n >= plan["batch_rows"]:
                runs.append(pa.Table.from_batches(pending).combine_chunks())
                pending, n = [], 0
        if n:
            runs.append(pa.Table.from_batches(pending).combine_chunks())
    else:
        pf = pq.ParquetFile(open_input(run["file"]), pre_buffer=False)
        tab = rows_at(pf.read_row_groups(run["groups"], use_threads=False), schema, t)
        runs = [tab] if len(tab) else []
    runs = [bind(r, plan) for r in runs]
    rows = sum(len(r) for r in runs)
    if not rows:
        return {"table": plan["table"], "k": run["k"], "rows": 0, "file": None}
    name = f"{PARTS}/{plan['table']}/{run['k']:06d}.parquet"

    def write(tmp: Path | str, filesystem=None) -> None:
        target = runs[0].schema
        with pq.ParquetWriter(tmp, target, filesystem=filesystem, **_writer_options(target)) as w:
            for r in runs:
                w.write_table(r.cast(target), row_group_size=max(len(r), 1))

    if is_s3(plan["out"]):
        url = f"{plan['out'].rstrip('/')}/{name}"
        _put(url, write)
        return {"table": plan["table"], "k": run["k"], "rows": rows, "file": url}
    out = Path(plan["out"]) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    _replace_into(out, write)
    return {"table": plan["table"], "k": run["k"], "rows": rows, "file": str(out)}


def table_task(out: str, table: str, parts: list[str], empty: pa.Table) -> dict[str, Any]:
    """Concatenate a table's ``parts`` (in run order) into ``<out>/<table>.parquet`` (task of set 2); without
    parts the table is written empty with the schema of ``empty``. ``out`` and ``parts`` are folder paths or
    ``s3://`` URLs. Returns ``{"table", "rows"}``."""
    rows = 0

    def write(tmp: Path | str, filesystem=None) -> None:
        nonlocal rows
        rows = 0
        if not parts:
            pq.write_table(empty, tmp, compression="zstd", filesystem=filesystem)
            return
        target = pq.read_schema(open_input(parts[0]))
        with pq.ParquetWriter(tmp, target, filesystem=filesystem, **_writer_options(target)) as w:
            for p in parts:
                pf = pq.ParquetFile(open_input(p))
                rows += pf.metadata.num_rows
                for g in range(pf.metadata.num_row_groups):
                    rg = pf.read_row_group(g)
                    w.write_table(rg.cast(target), row_group_size=max(len(rg), 1))

    if is_s3(out):
        _put(f"{out.rstrip('/')}/{table}.parquet", write)
    else:
        _replace_into(Path(out) / f"{table}.parquet", write)
    return {"table": table, "rows": rows}


# -------------------------------------------------------------------------------------------------
# on the client
# -------------------------------------------------------------------------------------------------
def write_roots_snapshot(seg, ts, path) -> str | None:
    """The roots at ``ts`` of every supervoxel of ``seg`` (a Segmentation, or None) as ``path`` (a Path, or a
    UPath on object storage; npz: ``sv`` sorted uint64 ids, ``root`` uint64); returns its path as a string
    (None without a segmentation)."""
    if seg is None:
        return None
    st = seg.state()
    with st.lock:
        seq = st.seq_at(ts)
        sv = np.asarray(st.sv_ids, np.uint64)
        root = st.roots_of_indices(np.arange(len(sv), dtype=np.int64), None if seq >= st.seq else seq)
    if is_s3(path):
        buf = io.BytesIO()
        np.savez(buf, sv=sv, root=np.asarray(root, np.uint64))
        path.write_bytes(buf.getvalue())
    else:
        np.savez(path, sv=sv, root=np.asarray(root, np.uint64))
    return str(path)


def plan_runs(table, delta_version: int, rows: int) -> list[dict[str, Any]]:
    """The runs of ``table`` at ``delta_version`` as the in-process path reads them (whole row groups of one
    file, about ``rows`` rows each), numbered ``k`` in reading order."""
    from deltalake import DeltaTable

    d = DeltaTable(str(table.path), version=delta_version,
                   storage_options=storage_config().delta_options(table.path) or None)
    if "deletionVectors" in (d.protocol().reader_features or []) or d.metadata().partition_columns:
        return [{"k": 0, "delta": True}]
    out = []
    for uri in d.file_uris():
        f = uri.removeprefix("file://")
        groups = row_group_runs(pq.ParquetFile(open_input(f)).metadata, rows)
        out += [{"k": len(out) + i, "file": f, "groups": gs} for i, gs in enumerate(groups)]
    return out


def materialize_on_dask(lake, datastack: str, tabs: list, delta_versions: dict[str, int], ts, seg, tmp,
                        batch_rows: int, scheduler: str | None, job=None, progress=None,
                        empty_of=None) -> dict[str, int]:
    """Write ``<tmp>/<table>.parquet`` for every table of ``tabs`` on a Dask cluster (module doc); returns
    ``{table: rows}``. ``tmp``: the temporary folder (Path), or on object storage the version's final prefix
    ``w-<uid>`` (UPath). ``empty_of(table)`` gives the empty Arrow table written for a table without rows.
    ``job``: the :class:`neurolake.jobs.records.Job` that counts the tasks; ``progress(phase, done, total)``
    after each task."""
    from neurolake.jobs import dask_client, run_tasks
    from neurolake.storage.files import remove_tree

    remote = is_s3(tmp)
    if not remote:
        tmp = Path(tmp)
    roots = write_roots_snapshot(seg, ts, tmp / ROOTS_FILE)
    sv_layer = seg._row().layer if seg is not None else None
    plans, args = {}, []
    for t in tabs:
        lookup = None
        if seg is not None and sv_layer is not None and t.segmentation_layer != sv_layer:
            from neurolake.volumes.store import task_spec

            layer = lake.layer(datastack, sv_layer)
            lookup = {"spec": task_spec(layer.root, 0),
                      "scale": (np.array(t.voxel_size_nm) / np.array(layer.voxel_size, dtype=np.float64)).tolist(),
                      "size_xyz": [int(s) for s in layer.size(0)]}
        plan = {"table": t.name, "table_path": str(t.path), "delta_version": delta_versions[t.name],
                "timestamp": ts.isoformat(), "schema": t.arrow_schema, "points": list(t.schema.points),
                "id_columns": list(t.id_columns), "roots": roots, "lookup": lookup, "out": str(tmp),
                "batch_rows": int(batch_rows)}
        plans[t.name] = plan
        args += [(plan, r) for r in plan_runs(t, delta_versions[t.name], batch_rows)]
    total = len(args) + len(tabs)
    done = {"n": 0}

    def tick(_res) -> None:
        done["n"] += 1
        if progress:
            progress("materialize", done["n"], total)

    def tick_table(res) -> None:
        if job is not None:
            job.done(phase="tables")
        tick(res)

    if job is not None:
        job.add(len(tabs), phase="tables")  # known from the start: the row's total does not jump later
    with dask_client(scheduler) as client:
        parts = run_tasks(client, run_task, args, tick, job=job)
        files: dict[str, list[tuple[int, str]]] = {t.name: [] for t in tabs}
        for p in parts:
            if p["file"]:
                files[p["table"]].append((p["k"], p["file"]))
        targs = [(str(tmp), t.name, [f for _, f in sorted(files[t.name])], empty_of(t)) for t in tabs]
        counted = run_tasks(client, table_task, targs, tick_table)
    if remote:  # no temporary objects on S3: only the parts and the snapshot to remove
        remove_tree(tmp / PARTS)
        (tmp / ROOTS_FILE).unlink(missing_ok=True)
        return {c["table"]: c["rows"] for c in counted}
    import shutil

    shutil.rmtree(tmp / PARTS, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (tmp / ROOTS_FILE).unlink()
    for left in tmp.glob(".*"):  # the temporary file of a table task killed with its worker (re-run since)
        with contextlib.suppress(FileNotFoundError):
            left.unlink()
    return {c["table"]: c["rows"] for c in counted}
