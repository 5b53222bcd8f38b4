"""Format detection, schema detection, row counts, sizes and content fingerprints of external tables.

Formats and what is read (nothing is copied):

- ``parquet``: one ``.parquet`` file or a folder of them (Hive ``key=value`` sub-folders become
  partition columns). Schema from the footers (pyarrow.dataset), rows from the footers' row counts;
  fingerprint ``parquet_sha256``: SHA-256 over the sorted ``(path, size, sha256 of content)`` of all files.
- ``delta``: a folder with ``_delta_log/`` (deltalake / delta-rs). Fingerprint ``delta_version``: the
  table version; files, sizes and rows from that version's add actions; partition columns from the
  table metadata; snapshot time = that commit's timestamp.
- ``iceberg``: a table folder with ``metadata/*.metadata.json`` (pyiceberg ``StaticTable``; the
  metadata file with the highest sequence number is current). Fingerprint ``iceberg_snapshot``: the
  current snapshot id; partition fields with their transforms (``bucket[16]`` …) as hash functions.
- ``lance``: a folder with ``_versions/`` (pylance). Fingerprint ``lance_version``.

Errors: :class:`~neurolake.errors.NotFound` (nothing at the location),
:class:`~neurolake.errors.InvalidArgument` (declared format does not match what is there),
:class:`~neurolake.errors.CorruptData` (the format is right but the table cannot be read).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from neurolake.errors import CorruptData, InvalidArgument, NotFound
from neurolake.storage import filesystem, iceberg_properties, is_s3, lance_storage_options, storage_options

FORMATS = ("parquet", "delta", "iceberg", "lance")
HASH_CHUNK = 8 * 2**20


@dataclass
class Inspection:
    """What was found at a location (see module docstring)."""

    format: str
    schema: list[dict[str, Any]]
    row_count: int | None
    size_bytes: int
    fingerprint: dict[str, Any]
    files: list[dict[str, Any]]
    partition_columns: list[str] = field(default_factory=list)
    hash_functions: dict[str, Any] = field(default_factory=dict)
    snapshot_time: dt.datetime | None = None


def _info(fs, path):
    import pyarrow.fs as pafs

    return fs.get_file_info(path), pafs


def _list(fs, path) -> list[tuple[str, int]]:
    """``[(relative path, size)]`` of every file under folder ``path`` (recursive, sorted)."""
    import pyarrow.fs as pafs

    out = []
    for fi in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        if fi.type == pafs.FileType.File:
            out.append((fi.path[len(path.rstrip("/")) + 1:], fi.size))
    return sorted(out)


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def exists(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    fi = fs.get_file_info(path)
    if fi.type != pafs.FileType.NotFound:
        return True
    return bool(is_s3(location) and _list(fs, path))


def detect_format(location: str) -> str | None:
    """The format of the table at ``location`` or None (see module docstring for the markers)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    fi = fs.get_file_info(path)
    if fi.type == pafs.FileType.File:
        return "parquet" if path.endswith(".parquet") else None
    names = {fi.base_name for fi in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))}
    if "_delta_log" in names:
        return "delta"
    if "_versions" in names:
        return "lance"
    if "metadata" in names and any(f.base_name.endswith(".metadata.json") for f in fs.get_file_info(
            pafs.FileSelector(path + "/metadata", allow_not_found=True))):
        return "iceberg"
    files = [r for r, _ in _list(fs, path) if not _hidden(r)]
    if files and all(f.endswith(".parquet") for f in files):
        return "parquet"
    return None


def _schema(arrow_schema, partitions: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cols = [{"name": f.name, "type": str(f.type), "nullable": bool(f.nullable)} for f in arrow_schema]
    return cols


def _sha256(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while True:
            b = f.read(HASH_CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _hive_columns(rels: list[str]) -> list[str]:
    cols: list[str] = []
    for r in rels:
        for part in r.split("/")[:-1]:
            m = re.match(r"^([^=]+)=", part)
            if m and m.group(1) not in cols:
                cols.append(m.group(1))
    return cols


def inspect_parquet(location: str, hash_files: bool = True) -> Inspection:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = filesystem(location)
    fi = fs.get_file_info(path)
    if fi.type == pafs.FileType.File:
        base, files = path.rsplit("/", 1)[0], [(path.rsplit("/", 1)[1], fi.size)]
    else:
        base = path
        files = [(r, s) for r, s in _list(fs, path) if not _hidden(r)]
        files = [(r, s) for r, s in files if r.endswith(".parquet")]
    if not files:
        raise InvalidArgument(f"no .parquet files at {location!r}", field="location", value=location)
    rels = [r for r, _ in files]
    part_cols = _hive_columns(rels)
    try:
        ds = pads.dataset([f"{base}/{r}" for r in rels], format="parquet", filesystem=fs,
                          partitioning="hive" if part_cols else None, partition_base_dir=base)
        rows = 0
        for r in rels:
            with fs.open_input_file(f"{base}/{r}") as fh:
                rows += pq.ParquetFile(fh).metadata.num_rows
        schema = ds.schema
    except (OSError, ValueError, TypeError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise CorruptData(f"cannot read {location!r} as parquet: {exc}", location=location, format="parquet") from exc
    out_files = []
    digest = hashlib.sha256()
    for r, s in files:
        entry = {"path": r, "size": s}
        if hash_files:
            entry["sha256"] = _sha256(fs, f"{base}/{r}")
            digest.update(f"{r}\0{s}\0{entry['sha256']}\n".encode())
        out_files.append(entry)
    return Inspection("parquet", _schema(schema), rows, sum(s for _, s in files),
                      {"kind": "parquet_sha256", "value": digest.hexdigest() if hash_files else None},
                      out_files, part_cols)


def inspect_delta(location: str, version: int | None = None) -> Inspection:
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        t = DeltaTable(location, version=version, storage_options=storage_options(location) or None)
    except TableNotFoundError as exc:
        raise InvalidArgument(f"{location!r} is not a Delta table (no readable _delta_log): {exc}", field="format",
                              value="delta", location=location) from exc
    except (DeltaError, OSError, ValueError) as exc:
        raise CorruptData(f"cannot read Delta table {location!r}: {exc}", location=location, format="delta") from exc
    try:
        schema = pa.schema(t.schema().to_arrow())
        adds = pa.table(t.get_add_actions(flatten=True)).to_pylist()
        hist = t.history(1)
    except (DeltaError, OSError, ValueError) as exc:
        raise CorruptData(f"cannot read Delta table {location!r}: {exc}", location=location, format="delta") from exc
    # add-action paths are percent-encoded (RFC 3986) relative URIs: decode them to the stored names
    files = sorted(({"path": unquote(a["path"]), "size": int(a["size_bytes"])} for a in adds),
                   key=lambda f: f["path"])
    rows = None
    if adds and all(a.get("num_records") is not None for a in adds):
        rows = int(sum(a["num_records"] for a in adds))
    elif not adds:
        rows = 0
    ts = None
    if hist and hist[0].get("timestamp"):
        ts = dt.datetime.fromtimestamp(hist[0]["timestamp"] / 1000, dt.UTC)
    return Inspection("delta", _schema(schema), rows, sum(f["size"] for f in files),
                      {"kind": "delta_version", "value": t.version()}, files,
                      list(t.metadata().partition_columns), snapshot_time=ts)


def _iceberg_metadata(location: str) -> str:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    metas = [fi for fi in fs.get_file_info(pafs.FileSelector(path + "/metadata", allow_not_found=True))
             if fi.base_name.endswith(".metadata.json")]
    if not metas:
        raise InvalidArgument(f"{location!r} is not an Iceberg table (no metadata/*.metadata.json)", field="format",
                              value="iceberg", location=location)

    def seq(fi):
        m = re.match(r"^v?(\d+)", fi.base_name)
        return (int(m.group(1)) if m else -1, fi.mtime_ns or 0)

    best = max(metas, key=seq)
    return (location.rstrip("/") + "/metadata/" + best.base_name)


def inspect_iceberg(location: str) -> Inspection:
    from pyiceberg.table import StaticTable

    meta = _iceberg_metadata(location)
    fs, path = filesystem(location)
    try:
        t = StaticTable.from_metadata(meta, properties=iceberg_properties(location))
        schema = t.schema().as_arrow()
        snap = t.current_snapshot()
        rows, data_paths = 0, set()
        if snap is not None:
            for task in t.scan().plan_files():
                rows += task.file.record_count
                data_paths.add(task.file.file_path)
        spec_fields = []
        hashes = {}
        for pf in t.spec().fields:
            src = t.schema().find_field(pf.source_id).name
            spec_fields.append(pf.name)
            hashes[pf.name] = {"source": src, "transform": str(pf.transform)}
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptData(f"cannot read Iceberg table {location!r}: {exc}", location=location,
                          format="iceberg") from exc
    root = location.rstrip("/") + "/"
    rel_data = set()
    for p in data_paths:
        p = p[len("file://"):] if p.startswith("file://") else p
        if p.startswith(root):
            rel_data.add(p[len(root):])
    files = [{"path": r, "size": s, **({"data": True} if r in rel_data else {})} for r, s in _list(fs, path)]
    ts = dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC) if snap is not None else None
    return Inspection("iceberg", _schema(schema), rows, sum(f["size"] for f in files),
                      {"kind": "iceberg_snapshot", "value": snap.snapshot_id if snap else None,
                       "metadata": meta.rsplit("/", 1)[1]},
                      files, spec_fields, hashes, snapshot_time=ts)


def inspect_lance(location: str) -> Inspection:
    import lance

    fs, path = filesystem(location)
    try:
        ds = lance.dataset(location, storage_options=lance_storage_options(location) or None)
        schema, rows, version = ds.schema, ds.count_rows(), ds.version
        ts = None
        try:
            vs = [v for v in ds.versions() if v["version"] == version]
            if vs and isinstance(vs[0].get("timestamp"), dt.datetime):
                ts = vs[0]["timestamp"]
                ts = ts if ts.tzinfo else ts.astimezone(dt.UTC)
        except Exception:  # noqa: BLE001 - timestamps are optional metadata
            ts = None
    except (OSError, ValueError) as exc:
        raise CorruptData(f"cannot read Lance dataset {location!r}: {exc}", location=location, format="lance") from exc
    files = [{"path": r, "size": s} for r, s in _list(fs, path)]
    return Inspection("lance", _schema(schema), rows, sum(f["size"] for f in files),
                      {"kind": "lance_version", "value": version}, files, snapshot_time=ts)


def inspect(location: str, fmt: str | None = None, hash_files: bool = True) -> Inspection:
    """Inspect the table at ``location`` (normalised) in format ``fmt`` (detected when None).

    Raises NotFound when nothing exists there, InvalidArgument when ``fmt`` is not allowed or does not
    match the data, CorruptData when the table cannot be read.
    """
    if fmt is not None and fmt not in FORMATS:
        raise InvalidArgument(f"format {fmt!r} is not allowed; use one of {', '.join(FORMATS)}", field="format",
                              value=fmt, allowed=list(FORMATS))
    if not exists(location):
        raise NotFound(f"location {location!r} does not exist or is not readable", field="location", value=location)
    found = detect_format(location)
    if fmt is None:
        if found is None:
            raise InvalidArgument(f"cannot detect the format of {location!r}; declare one of {', '.join(FORMATS)}",
                                  field="format", location=location, allowed=list(FORMATS))
        fmt = found
    elif found != fmt and not (fmt == "parquet" and found is None):
        raise InvalidArgument(f"location {location!r} is not readable as {fmt}: it looks like "
                              f"{found or 'no known table format'}", field="format", value=fmt,
                              detected=found, location=location)
    if fmt == "parquet":
        return inspect_parquet(location, hash_files=hash_files)
    if fmt == "delta":
        return inspect_delta(location)
    if fmt == "iceberg":
        return inspect_iceberg(location)
    return inspect_lance(location)
