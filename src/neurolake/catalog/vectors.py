"""Vector (embedding) columns of registered feature tables: declarations, ANN indexes, similarity search.

A registered table (Parquet, Delta or Lance) may declare vector columns (``vectors=`` at registration)::

    {"emb": {"dimension": 128, "metric": "cosine", "embeds": "neuron connectivity",
             "model_version": "segclr-v2", "id_column": "root_id"}}

- the column holds fixed-size lists of float32 (``fixed_size_list<float>[d]``; Delta, which has no
  fixed-size list type, stores ``list<float>``: every non-null row must then hold exactly ``d`` values,
  checked by reading the column). ``metric``: ``cosine`` (distance ``1 - cos``), ``l2`` (Euclidean
  distance), ``dot`` (distance ``-x·q``); smaller is always closer. ``id_column`` (optional) names the
  key column used by ``similar(id=…)``. Declarations are kept with the table's ``schema`` entry of the
  column (``{"name", "type", …, "vector": {…}}``), no catalog column of their own.
- Rows whose vector is null (or holds a null/NaN value) are never indexed nor returned.

Indexes (:func:`build_index`) are FAISS (``faiss-cpu``) inverted-file indexes — ``ivf_pq`` (IVF with
product quantisation, ``IVF{nlist},PQ{m}x{nbits}``; Jégou, Douze & Schmid 2011, "Product quantization for
nearest neighbor search", IEEE TPAMI 33:117) or ``ivf_flat`` — written under the lake root at
``<lake>/features/_indexes/<datastack>/<table>/<column>/`` (``index.faiss`` + ``index.json``), never
beside the user's data. An index records the registered fingerprint of the table it was built from
(and, for local Parquet files, their sizes and modification times): when the registered fingerprint,
the vector declaration or the files change the index is *stale*; search then falls back to exact search
and says so in the result's metadata (``index_stale``), or rebuilds it when asked.

Search (:func:`search`): ANN candidates (``k × refine`` of them, from ``nprobe`` inverted lists) are
re-ranked by their exact distance to the query; exact search (FAISS brute force, ``faiss.knn``, over every
row) when asked, when there is no (fresh) index, or when a filter leaves few rows. Filters are
SQL predicates over the table's columns, parsed by DuckDB's own parser (``json_serialize_sql``); anything
that is not a single predicate (statements, sub-queries, ``LIMIT`` …) is refused, and the predicate runs
in a DuckDB connection without external access.

Errors: :class:`~neurolake.errors.InvalidArgument` (bad declaration, dimension, dtype, unknown column,
bad filter, bad query vector), :class:`~neurolake.errors.Unsupported` (Iceberg tables),
:class:`~neurolake.errors.NotFound` (``id`` not in the table), :class:`~neurolake.errors.CorruptData`
(the table's files changed since registration).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.base.trees import walk
from neurolake.errors import CorruptData, InvalidArgument, Unsupported

METRICS = ("cosine", "l2", "dot")
DECL_KEYS = ("dimension", "metric", "embeds", "model_version", "id_column")
INDEX_KINDS = ("auto", "ivf_pq", "ivf_flat")
INDEX_FORMAT = "neurolake-vector-index-v1"
DISTANCE = "_distance"
QUERY = "_query"
MAX_K = 10_000
MAX_DIMENSION = 65_536
# with a filter, exact search over the matching rows is used when they are at most this many (a brute force
# over that few rows is faster than an IVF scan, and exact)
EXACT_FILTER_ROWS = 50_000
CACHE_TABLES = 4
_BIG = np.iinfo(np.int64).max
_LIST_TYPE = re.compile(r"^(fixed_size_list|list|large_list)<[^:]+: ([a-z0-9_]+)>(?:\[(\d+)\])?$")


def _bad(field: str, value: Any, what: str, **extra) -> InvalidArgument:
    return InvalidArgument(f"{field} {value!r} is not allowed: {what}", field=field, value=repr(value)[:200], **extra)


# -- declarations --------------------------------------------------------------------------------------
def parse_declarations(value: Any) -> dict[str, dict[str, Any]]:
    """Shape check of a ``vectors`` field (no I/O): ``{column: {dimension, metric, embeds?, model_version?,
    id_column?}}`` or ``[{column, dimension, …}]`` → ``{column: cleaned declaration}``. Raises InvalidArgument
    naming the field (``vectors.<column>.<key>``)."""
    if isinstance(value, list):
        items = {}
        for d in value:
            if not isinstance(d, dict) or not isinstance(d.get("column"), str) or not d["column"]:
                raise _bad("vectors", d, 'each entry is {"column": name, "dimension": d, "metric": ...}')
            items[d["column"]] = {k: v for k, v in d.items() if k != "column"}
        value = items
    if not isinstance(value, dict):
        raise _bad("vectors", value, "give {column: {dimension, metric, embeds, model_version}}")
    out = {}
    for col, d in value.items():
        if not isinstance(col, str) or not col:
            raise _bad("vectors", col, "column names are non-empty strings")
        if not isinstance(d, dict):
            raise _bad(f"vectors.{col}", d, "give {dimension, metric, embeds, model_version, id_column?}")
        unknown = sorted(set(d) - set(DECL_KEYS))
        if unknown:
            raise InvalidArgument(f"vectors.{col}: unknown key(s) {unknown}; allowed: {', '.join(DECL_KEYS)}",
                                  field=f"vectors.{col}.{unknown[0]}", value=unknown, allowed=list(DECL_KEYS))
        dim = d.get("dimension")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIMENSION:
            raise _bad(f"vectors.{col}.dimension", dim, f"an integer 1 … {MAX_DIMENSION} is required")
        metric = str(d.get("metric") or "").lower()
        if metric not in METRICS:
            raise InvalidArgument(f"vectors.{col}.metric {d.get('metric')!r} is not allowed; use one of "
                                  f"{', '.join(METRICS)}", field=f"vectors.{col}.metric", value=d.get("metric"),
                                  allowed=list(METRICS))
        for k in ("embeds", "model_version", "id_column"):
            if d.get(k) is not None and not (isinstance(d[k], str) and d[k]):
                raise _bad(f"vectors.{col}.{k}", d[k], "must be a non-empty string")
        out[col] = {"dimension": dim, "metric": metric, "embeds": d.get("embeds") or "",
                    "model_version": d.get("model_version") or "", "id_column": d.get("id_column")}
    return out


def _list_type(type_str: str) -> tuple[str, str, int | None] | None:
    m = _LIST_TYPE.match(str(type_str).strip())
    if not m:
        return None
    return m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None


def validate_declarations(decls: dict[str, dict[str, Any]], schema: list[dict[str, Any]],
                          read_column) -> dict[str, dict[str, Any]]:
    """Check declarations against the detected ``schema`` (``[{name, type}]``) and the data: the column
    exists, holds lists of float32, of the declared dimension (from the type of a fixed-size list, else by
    reading the column with ``read_column(name) -> pyarrow array``); ``id_column`` exists and is not a list.
    Returns the declarations. Raises InvalidArgument naming ``vectors.<column>[.<key>]``."""
    by_name = {c["name"]: c for c in schema}
    for col, d in decls.items():
        c = by_name.get(col)
        if c is None:
            raise InvalidArgument(f"vectors: column {col!r} is not in the table (columns: {', '.join(by_name)})",
                                  field=f"vectors.{col}", value=col, allowed=list(by_name))
        lt = _list_type(c["type"])
        if lt is None:
            raise InvalidArgument(f"vectors.{col}: column {col!r} has type {c['type']!r}; a vector column holds "
                                  "fixed-size lists of float32 (fixed_size_list<float>[d]; list<float> for Delta)",
                                  field=f"vectors.{col}", value=c["type"], column=col)
        kind, item, size = lt
        if item != "float":
            raise InvalidArgument(f"vectors.{col}: column {col!r} holds {item} values ({c['type']}); vectors must "
                                  "be float32 (cast the column to float32)", field=f"vectors.{col}", value=c["type"],
                                  column=col, allowed=["float32"])
        if size is not None:
            if size != d["dimension"]:
                raise InvalidArgument(f"vectors.{col}.dimension {d['dimension']} does not match the column's "
                                      f"dimension {size} ({c['type']})", field=f"vectors.{col}.dimension",
                                      value=d["dimension"], detected=size, column=col)
        else:
            import pyarrow.compute as pc

            lens = pc.list_value_length(read_column(col))
            mm = pc.min_max(lens).as_py()
            if mm["min"] is not None and (mm["min"] != d["dimension"] or mm["max"] != d["dimension"]):
                bad = mm["min"] if mm["min"] != d["dimension"] else mm["max"]
                raise InvalidArgument(f"vectors.{col}.dimension {d['dimension']} does not match the data: rows hold "
                                      f"{mm['min']} … {mm['max']} values", field=f"vectors.{col}.dimension",
                                      value=d["dimension"], detected=bad, column=col)
        idc = d.get("id_column")
        if idc is not None:
            ic = by_name.get(idc)
            if ic is None:
                raise InvalidArgument(f"vectors.{col}.id_column {idc!r} is not in the table (columns: "
                                      f"{', '.join(by_name)})", field=f"vectors.{col}.id_column", value=idc,
                                      allowed=list(by_name))
            if _list_type(ic["type"]) is not None:
                raise _bad(f"vectors.{col}.id_column", idc, "the id column must hold scalar keys")
    return decls


def attach(schema: list[dict[str, Any]], decls: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``schema`` with each declared column's entry carrying ``"vector": declaration`` (others: none)."""
    out = []
    for c in schema:
        c = {k: v for k, v in c.items() if k != "vector"}
        d = decls.get(c["name"])
        if d is not None:
            c["vector"] = {"dimension": d["dimension"], "metric": d["metric"], "embeds": d.get("embeds") or "",
                           "model_version": d.get("model_version") or ""}
            if d.get("id_column"):
                c["vector"]["id_column"] = d["id_column"]
        out.append(c)
    return out


def declared(schema: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``{column: declaration}`` of the vector columns recorded in a registered ``schema``."""
    return {c["name"]: dict(c["vector"]) for c in schema or [] if c.get("vector")}


# -- reading a registered table ------------------------------------------------------------------------
def read_table(entry: dict[str, Any], columns: list[str] | None = None):
    """The registered version of a table (``entry`` = registry entry with ``files``) as a pyarrow Table, rows
    in a fixed order (Parquet: the registered files in order; Delta: that version's files; Lance: that
    version's fragments). Local Parquet files whose size changed since registration raise CorruptData;
    Iceberg raises Unsupported."""
    import pyarrow.dataset as pads

    from neurolake.storage import filesystem, is_s3, lance_storage_options, storage_options

    loc, fmt, fp = entry["location"], entry["format"], entry.get("fingerprint") or {}
    if fmt == "lance":
        import lance

        v = fp.get("value") if isinstance(fp.get("value"), int) else None
        ds = lance.dataset(loc, version=v, storage_options=lance_storage_options(loc) or None)
        return ds.to_table(columns=columns)
    if fmt == "delta":
        from deltalake import DeltaTable

        t = DeltaTable(loc, version=fp.get("value"), storage_options=storage_options(loc) or None)
        return t.to_pyarrow_dataset().to_table(columns=columns)
    if fmt != "parquet":
        raise Unsupported(f"similarity search reads Parquet, Delta and Lance tables; {entry['name']!r} is {fmt}",
                          field="format", value=fmt, allowed=["parquet", "delta", "lance"])
    fs, path = filesystem(loc)
    import pyarrow.fs as pafs

    base = path.rsplit("/", 1)[0] if fs.get_file_info(path).type == pafs.FileType.File else path
    files = entry.get("files") or []
    if not is_s3(loc):
        for f, (size, _) in zip(files, _stat(entry), strict=True):
            if size != f["size"]:
                raise CorruptData(f"feature table {entry['name']!r} changed since registration: {f['path']} is "
                                  f"{'missing' if size is None else f'{size} bytes'} (registered {f['size']} bytes); "
                                  "update or re-register it", table=entry["name"], path=f["path"])
    ds = pads.dataset([f"{base}/{f['path']}" for f in files], format="parquet", filesystem=fs,
                      partitioning="hive" if entry.get("partition_columns") else None, partition_base_dir=base)
    return ds.to_table(columns=columns)


def _base_dir(loc: str) -> Path:
    p = Path(loc)
    return p.parent if p.is_file() else p


def _stat(entry: dict[str, Any]) -> list[tuple[int | None, int | None]]:
    """``[(size, mtime_ns)]`` of a local Parquet table's registered files (None for a missing file); [] else."""
    from neurolake.storage import is_s3

    if entry["format"] != "parquet" or is_s3(entry["location"]):
        return []
    base = _base_dir(entry["location"])
    out = []
    for f in entry.get("files") or []:
        try:
            st = (base / f["path"]).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((None, None))
    return out


@dataclass
class Loaded:
    """A table read into memory for search: ``table`` (every column), per vector column the float32 matrix
    ``(n, d)`` (zeros where the vector is missing; rows scaled to unit length for cosine) and its ``valid``
    mask."""

    table: Any
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, np.ndarray] = field(default_factory=dict)
    n_valid: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _con: Any = None
    _filters: OrderedDict = field(default_factory=OrderedDict)
    _views: dict = field(default_factory=dict)
    _keys: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def _matrix(arr, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 matrix (n, dim), valid mask)`` of a list / fixed-size-list array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(arr.type) and arr.null_count == 0 and arr.values.null_count == 0:
        vals = arr.values.slice(arr.offset * dim, n * dim)
        m = vals.to_numpy(zero_copy_only=False).reshape(n, dim)
    else:
        flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if flat.size != int(valid.sum()) * dim:
            raise CorruptData(f"a vector column holds rows whose length is not the declared dimension {dim}",
                              dimension=dim)
        m = np.zeros((n, dim), np.float32)
        if valid.any():
            m[valid] = flat.reshape(-1, dim)
    if m.dtype != np.float32:
        m = m.astype(np.float32)
    bad = ~np.isfinite(m).all(axis=1)
    if bad.any():
        m = m.copy() if not m.flags.writeable else m
        m[bad] = 0
        valid = valid & ~bad
    return m, valid


def load(lake, entry: dict[str, Any]) -> Loaded:
    """The table of ``entry`` read for search, cached per lake (the last :data:`CACHE_TABLES` tables) under
    its location, fingerprint and (local Parquet) file sizes and times."""
    static = entry.get("_vectors_key")
    if static is None:  # entries are cached dicts: the constant part of the key is computed once per entry
        static = entry["_vectors_key"] = (
            entry["id"], entry["location"], json.dumps(entry.get("fingerprint"), sort_keys=True, default=str),
            json.dumps(declared(entry.get("schema")), sort_keys=True, default=str))
    key = (static, tuple(_stat(entry)))
    cache: OrderedDict = lake.state("features.vectors.tables", OrderedDict)
    hit = cache.get(key)
    if hit is not None:
        return hit
    with lake.state("features.vectors.lock", threading.Lock):  # one load at a time (tables can be large)
        hit = cache.get(key)
        if hit is not None:
            return hit
        out = _read_for_search(entry)
        cache[key] = out
        while len(cache) > CACHE_TABLES:
            cache.popitem(last=False)
        return out


def _read_for_search(entry: dict[str, Any]) -> Loaded:
    decls = declared(entry.get("schema"))
    table = read_table(entry)
    for col in decls:  # one chunk per vector column (the matrix is then a view of it, not a second copy)
        c = table.column(col)
        if c.num_chunks != 1:
            table = table.set_column(table.schema.get_field_index(col), col, c.combine_chunks())
    out = Loaded(table)
    for col, d in decls.items():
        m, valid = _matrix(table.column(col), d["dimension"])
        if d["metric"] == "cosine":  # a unit copy (the table keeps the vectors as given)
            nrm = np.sqrt(np.einsum("ij,ij->i", m, m))
            valid = valid & (nrm > 0)  # a zero vector has no direction: never a result
            m = m / np.where(nrm > 0, nrm, 1)[:, None]
        out.vectors[col], out.valid[col] = np.ascontiguousarray(m, dtype=np.float32), valid
        out.n_valid[col] = int(valid.sum())
    return out


def rows_with(loaded: Loaded, column: str, value: Any) -> np.ndarray:
    """Row positions whose ``column`` equals ``value`` (a hash index of the column, built on first use)."""
    with loaded.lock:
        index = loaded._keys.get(column)
        if index is None:
            import pandas as pd

            index = loaded._keys[column] = pd.Index(loaded.table.column(column).to_numpy(zero_copy_only=False))
    got = index.get_indexer_for([value])
    return np.sort(got[got >= 0])


# -- filters -------------------------------------------------------------------------------------------
def check_filter(predicate: str, columns: list[str]) -> str:
    """Validate ``predicate`` as one SQL boolean expression over ``columns`` (DuckDB syntax) and return it.

    Parsed by DuckDB (``json_serialize_sql`` of ``SELECT * FROM t WHERE (predicate)``): refused when that is
    not exactly one plain SELECT with only this WHERE clause (statements, ``;``, ``UNION``, ``LIMIT``,
    ``ORDER BY`` …), when it holds a sub-query, or names a column the table does not have. Raises
    InvalidArgument (``field="filter"``)."""
    import duckdb

    if not isinstance(predicate, str) or not predicate.strip():
        raise _bad("filter", predicate, "give an SQL predicate such as \"cell_type = 'L2/3'\"")
    if len(predicate) > 10_000:
        raise _bad("filter", predicate[:50] + "…", "at most 10,000 characters")
    sql = f"SELECT * FROM t WHERE ({predicate}\n)"
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        ast = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    if ast.get("error"):
        raise InvalidArgument(f"filter {predicate!r} is not an SQL predicate: {ast.get('error_message')}",
                              field="filter", value=predicate)
    stmts = ast.get("statements") or []
    node = stmts[0].get("node", {}) if len(stmts) == 1 else {}
    plain = (node.get("type") == "SELECT_NODE" and not node.get("modifiers") and not (node.get("cte_map") or {})
             .get("map") and not node.get("group_expressions") and not node.get("having") and not node.get("qualify")
             and not node.get("sample") and (node.get("from_table") or {}).get("table_name") == "t"
             and [s.get("class") for s in node.get("select_list") or []] == ["STAR"])
    if not plain:
        raise InvalidArgument(f"filter {predicate!r} is not a single predicate (a boolean expression over the "
                              "table's columns, e.g. \"cell_type = 'L2/3' AND n_pre > 10\")", field="filter",
                              value=predicate)
    lower = {c.lower(): c for c in columns}
    for n in walk(node.get("where_clause")):
        if n.get("class") == "SUBQUERY" or n.get("type") in ("SELECT_NODE", "SET_OPERATION_NODE"):
            raise InvalidArgument(f"filter {predicate!r} holds a sub-query; give a predicate over the table's own "
                                  "columns", field="filter", value=predicate)
        if n.get("class") == "COLUMN_REF":
            name = (n.get("column_names") or [""])[-1]
            if name.lower() not in lower and len(n.get("column_names") or []) == 1:
                raise InvalidArgument(f"filter {predicate!r}: unknown column {name!r}; columns: {', '.join(columns)}",
                                      field="filter", value=name, allowed=columns)
    return predicate


def filter_mask(loaded: Loaded, predicate: str, skip: list[str]) -> np.ndarray:
    """Boolean mask ``(n,)`` of the rows satisfying ``predicate`` (already checked by :func:`check_filter`),
    evaluated by DuckDB over the table's columns except ``skip`` (the vector columns); NULL counts as false.
    The last 32 masks per table are cached."""
    import duckdb
    import pyarrow as pa

    with loaded.lock:
        got = loaded._filters.get(predicate)
        if got is not None:
            return got
        if loaded._con is None:
            t = loaded.table.drop_columns([c for c in skip if c in loaded.table.column_names])
            t = t.append_column("__row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
            con = duckdb.connect(config={"enable_external_access": False})
            con.register("t", t)
            con.execute("SET lock_configuration = true")
            loaded._con = con
        try:
            rows = loaded._con.execute(f"SELECT __row FROM t WHERE ({predicate}\n)").fetchnumpy()["__row"]
        except duckdb.Error as exc:
            raise InvalidArgument(f"filter {predicate!r} cannot be evaluated: {str(exc).splitlines()[0]}",
                                  field="filter", value=predicate) from None
        mask = np.zeros(loaded.num_rows, bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        loaded._filters[predicate] = mask
        while len(loaded._filters) > 32:
            loaded._filters.popitem(last=False)
        return mask


# -- exact search --------------------------------------------------------------------------------------
def exact(X: np.ndarray, Q: np.ndarray, k: int, metric: str,
          rows: np.ndarray | None = None) -> np.ndarray:
    """Exact k nearest rows of ``X (n, d)`` (unit rows for cosine) for queries ``Q (b, d)`` (unit for cosine),
    over ``rows`` (positions; None = all): FAISS brute force (``faiss.knn``: BLAS blocks and a heap per
    query; L2 for ``l2``, inner product for ``cosine``/``dot``). Returns ids ``(b, min(k, rows))``, best
    first (distances: :func:`final_distances`)."""
    faiss = _faiss()
    n = X.shape[0] if rows is None else len(rows)
    k = min(k, n)
    if k == 0:
        return np.zeros((Q.shape[0], 0), np.int64)
    base = X if rows is None else np.ascontiguousarray(X[rows])
    _, ids = faiss.knn(np.ascontiguousarray(Q, dtype=np.float32), base, k,
                       metric=faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    ids = ids.astype(np.int64, copy=False)
    if rows is not None:
        ids = np.where(ids < 0, -1, rows[np.maximum(ids, 0)])
    return ids


def rerank(X: np.ndarray, Q: np.ndarray, cand: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact re-ranking of ANN candidates ``cand (b, c)`` (-1 = none): distances computed in float64 from the
    vectors themselves → the best ``k`` ``(ids, distances)`` per query, ties by row position; missing
    entries have id -1 and distance NaN (last)."""
    return final_distances(X, Q, cand, metric, k)


# -- indexes -------------------------------------------------------------------------------------------
def index_dir(lake, datastack: str, table: str, column: str) -> Path:
    """``<lake>/features/_indexes/<datastack>/<table>/<column>``: where the index of a vector column lives (a
    ``upath.UPath`` on a lake on object storage: ``index.faiss`` first, ``index.json`` last, one PUT each)."""
    return lake.root / "features" / "_indexes" / datastack / table / column


def _index_path(lake, datastack: str, table: str, column: str) -> str:
    paths = lake.state("features.vectors.paths", dict)
    key = (datastack, table, column)
    got = paths.get(key)
    if got is None:
        got = paths[key] = str(index_dir(lake, datastack, table, column))
    return got


def _faiss():
    import faiss

    return faiss


def _auto_params(n: int, d: int, kind: str, nlist: int | None, m: int | None, nbits: int | None) -> dict:
    if kind == "auto":
        kind = "ivf_pq" if n >= 20_000 and d >= 8 else "ivf_flat"
    if nlist is None:
        nlist = max(1, min(int(round(math.sqrt(n))), n // 39 if n >= 39 else 1, 65_536))
    if not (isinstance(nlist, int) and 1 <= nlist <= n):
        raise _bad("nlist", nlist, f"an integer 1 … {n} (the indexed rows) is required")
    p: dict[str, Any] = {"kind": kind, "nlist": nlist}
    if kind == "ivf_pq":
        if m is None:
            m = next((d // s for s in (4, 2, 1) if d % s == 0 and d // s <= 256), d)
        if not (isinstance(m, int) and m >= 1 and d % m == 0):
            raise _bad("m", m, f"the number of PQ sub-quantisers must divide the dimension {d}")
        nbits = 8 if nbits is None else nbits
        if not (isinstance(nbits, int) and 1 <= nbits <= 12):
            raise _bad("nbits", nbits, "1 … 12 bits per sub-quantiser")
        p.update(m=m, nbits=nbits)
    elif kind != "ivf_flat":
        raise InvalidArgument(f"index kind {kind!r} is not allowed; use one of {', '.join(INDEX_KINDS)}",
                              field="kind", value=kind, allowed=list(INDEX_KINDS))
    return p


def build_index(lake, entry: dict[str, Any], column: str, loaded: Loaded, *, kind: str = "auto",
                nlist: int | None = None, m: int | None = None, nbits: int | None = None, nprobe: int | None = None,
                refine: int | None = None, train_rows: int | None = None, user: str = "", seed: int = 0,
                progress=None) -> dict[str, Any]:
    """Build (replace) the FAISS index of ``column`` and write it under :func:`index_dir`. Returns its metadata
    (``index.json``): kind, nlist, m, nbits, default nprobe and refine, metric, rows, fingerprint,
    build_seconds, library version…

    Cosine indexes hold normalised vectors with inner-product search. Training uses ``train_rows`` rows
    (default ``min(n, max(64·nlist, 10,000))``) drawn with ``seed``. Written to a temporary folder and
    moved into place, so a failed build leaves the old index."""
    faiss = _faiss()
    t0 = time.perf_counter()
    decl = declared(entry.get("schema"))[column]
    metric, d = decl["metric"], decl["dimension"]
    X, valid = loaded.vectors[column], loaded.valid[column]
    rows = np.flatnonzero(valid).astype(np.int64)
    n = len(rows)
    if n == 0:
        raise InvalidArgument(f"column {column!r} of {entry['name']!r} has no non-null vectors to index",
                              field="column", value=column)
    p = _auto_params(n, d, kind, nlist, m, nbits)
    nprobe = max(1, min(p["nlist"], int(math.ceil(p["nlist"] / 16)))) if nprobe is None else nprobe
    refine = 10 if refine is None else refine
    if not (isinstance(nprobe, int) and 1 <= nprobe <= p["nlist"]):
        raise _bad("nprobe", nprobe, f"1 … nlist ({p['nlist']})")
    _check_refine(refine)
    if train_rows is not None and (isinstance(train_rows, bool) or not isinstance(train_rows, int) or train_rows < 1):
        raise _bad("train_rows", train_rows, "an integer ≥ 1 (rows sampled to train the index)")
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    desc = f"IVF{p['nlist']},Flat" if p["kind"] == "ivf_flat" else f"IVF{p['nlist']},PQ{p['m']}x{p['nbits']}"
    # built with the constructors rather than index_factory, whose IVF-PQ also trains polysemous codes
    # (several times slower, used only by polysemous filtering, which search does not use)
    quantizer = faiss.IndexFlatL2(d) if fmetric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
    if p["kind"] == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], fmetric)
    else:
        index = faiss.IndexIVFPQ(quantizer, d, p["nlist"], p["m"], p["nbits"], fmetric)
        index.do_polysemous_training = False

    def prep(a: np.ndarray) -> np.ndarray:  # (cosine rows are unit already: Loaded)
        return np.ascontiguousarray(a, dtype=np.float32)

    ntrain = min(n, train_rows or max(64 * p["nlist"], 10_000))
    rng = np.random.default_rng(seed)
    sample = rows if ntrain >= n else np.sort(rng.choice(rows, ntrain, replace=False))
    if progress:
        progress("train", 0, 1)
    index.train(prep(X[sample]))
    t_train = time.perf_counter() - t0
    step = 100_000
    for s in range(0, n, step):
        r = rows[s:s + step]
        index.add_with_ids(prep(X[r]), r)
        if progress:
            progress("add", min(n, s + step), n)
    meta = {"format": INDEX_FORMAT, "library": "faiss-cpu", "library_version": faiss.__version__,
            "factory": desc, **p, "nprobe": nprobe, "refine": refine, "metric": metric,
            "faiss_metric": "l2" if fmetric == faiss.METRIC_L2 else "inner_product",
            "normalised": metric == "cosine", "dimension": d, "column": column, "table": entry["name"],
            "datastack": entry["datastack"], "table_id": entry["id"], "fingerprint": entry.get("fingerprint"),
            "files_stat": [list(s) for s in _stat(entry)], "declaration": decl, "rows": loaded.num_rows,
            "indexed_rows": n, "train_rows": int(len(sample)), "train_seconds": round(t_train, 3),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "built_at": dt.datetime.now(dt.UTC).isoformat(), "built_by": user, "seed": seed}
    target = index_dir(lake, entry["datastack"], entry["name"], column)
    from neurolake.storage.config import is_s3

    if is_s3(target):  # no rename: the metadata goes first and comes back last (readers see no index between)
        (target / "index.json").unlink(missing_ok=True)
        (target / "index.faiss").write_bytes(faiss.serialize_index(index).tobytes())
        (target / "index.json").write_text(json.dumps(meta, indent=2, default=str))
        meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        _index_cache(lake)[_index_path(lake, entry["datastack"], entry["name"], column)] = (
            _mtime(target), index, meta, time.monotonic())
        return meta
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{column}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        (tmp / "index.json").write_text(json.dumps(meta, indent=2, default=str))
        old = None
        if target.exists():
            old = target.parent / f".{column}.old-{os.getpid()}-{threading.get_ident()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["build_seconds"] = round(time.perf_counter() - t0, 3)
    _index_cache(lake)[_index_path(lake, entry["datastack"], entry["name"], column)] = (
        _mtime(target), index, meta, time.monotonic())
    return meta


def _mtime(target: Path | str) -> Any:
    from neurolake.storage.config import is_s3, storage_config

    if is_s3(target):  # the object's ETag (one HEAD)
        p = storage_config().path(str(target)) / "index.json"
        try:
            info = p.fs.info(p.path, refresh=True)
        except (FileNotFoundError, OSError):
            return None
        return info.get("ETag") or info.get("LastModified")
    try:
        return os.stat(os.path.join(target, "index.json")).st_mtime_ns
    except OSError:
        return None


def _index_cache(lake) -> dict:
    return lake.state("features.vectors.indexes", dict)


INDEX_RECHECK_SECONDS = 1.0


def open_index(lake, datastack: str, table: str, column: str) -> tuple[Any, dict[str, Any]] | None:
    """``(faiss index, metadata)`` of a column's index, or None when there is none (cached per lake; the index
    file's time is checked at most every :data:`INDEX_RECHECK_SECONDS`, so an index rebuilt or removed by
    another process is seen within that time; this process's builds replace the cache at once)."""
    target = _index_path(lake, datastack, table, column)
    cache = _index_cache(lake)
    hit = cache.get(target)
    now = time.monotonic()
    if hit is not None and now - hit[3] < INDEX_RECHECK_SECONDS:
        return hit[1], hit[2]
    mt = _mtime(target)
    if mt is None:
        cache.pop(target, None)
        return None
    if hit is not None and hit[0] == mt:
        cache[target] = (mt, hit[1], hit[2], now)
        return hit[1], hit[2]
    from neurolake.storage.config import is_s3, storage_config

    if is_s3(target):
        p = storage_config().path(target)
        meta = json.loads((p / "index.json").read_text())
        index = _faiss().deserialize_index(np.frombuffer((p / "index.faiss").read_bytes(), np.uint8))
        cache[target] = (mt, index, meta, now)
        return index, meta
    meta = json.loads(Path(target, "index.json").read_text())
    index = _faiss().read_index(os.path.join(target, "index.faiss"))
    cache[target] = (mt, index, meta, now)
    return index, meta


def index_meta(lake, datastack: str, table: str, column: str) -> dict[str, Any] | None:
    """The metadata of a column's index (``index.json``), or None."""
    p = index_dir(lake, datastack, table, column) / "index.json"
    return json.loads(p.read_text()) if p.exists() else None


def staleness(meta: dict[str, Any], entry: dict[str, Any], column: str) -> list[str]:
    """Why the index ``meta`` no longer describes the registered table (empty list: fresh)."""
    memo = entry.setdefault("_vectors_stale", {})
    mkey = (column, id(meta), meta.get("built_at"))
    why = memo.get(mkey)
    if why is None:
        why = memo[mkey] = _static_staleness(meta, entry, column)
    why = list(why)
    cur = [list(s) for s in _stat(entry)]
    if meta.get("files_stat") and cur and cur != meta["files_stat"]:
        why.append("the table's files were rewritten since the index was built")
    return why


def _static_staleness(meta: dict[str, Any], entry: dict[str, Any], column: str) -> list[str]:
    why = []
    fp = entry.get("fingerprint") or {}
    if json.dumps(meta.get("fingerprint"), sort_keys=True, default=str) != json.dumps(fp, sort_keys=True, default=str):
        why.append(f"the table's registered fingerprint is {fp.get('kind')}={str(fp.get('value'))[:16]}, the index "
                   f"was built for {str((meta.get('fingerprint') or {}).get('value'))[:16]}")
    if meta.get("table_id") != entry.get("id"):
        why.append("the table was registered anew since the index was built")
    decl = declared(entry.get("schema")).get(column)
    if decl != meta.get("declaration"):
        why.append(f"the declaration of column {column!r} changed since the index was built")
    return why


def _check_refine(refine: Any) -> int:
    if isinstance(refine, bool) or not isinstance(refine, int) or not 1 <= refine <= 1000:
        raise _bad("refine", refine, "an integer 1 … 1000 (candidates per result re-ranked exactly)")
    return refine


# -- search --------------------------------------------------------------------------------------------
def query_matrix(vector: Any, dim: int, metric: str) -> tuple[np.ndarray, bool]:
    """``(Q (b, dim) float32, batched)`` from one vector or a list of vectors; normalised for cosine.
    Raises InvalidArgument (``field="vector"``) for a wrong shape or non-finite values."""
    try:
        q = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _bad("vector", vector, f"a list of {dim} numbers (or a list of such lists) is required") from exc
    batched = q.ndim == 2
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
        raise InvalidArgument(f"vector has shape {tuple(np.shape(vector))}; the column's dimension is {dim} (give "
                              f"{dim} numbers, or a list of such vectors)", field="vector", value=str(np.shape(vector)),
                              dimension=dim)
    if not np.isfinite(q).all():
        raise _bad("vector", "…", "values must be finite numbers")
    if metric == "cosine":
        nrm = np.sqrt(np.einsum("ij,ij->i", q, q))
        if (nrm == 0).any():
            raise _bad("vector", "zeros", "a zero vector has no cosine distance")
        q = q / nrm[:, None]
    return np.ascontiguousarray(q), batched


@dataclass
class Hits:
    """``ids (b, k)`` row positions (-1 = none), ``distances (b, k)``, and how they were found."""

    ids: np.ndarray
    distances: np.ndarray
    mode: str
    detail: dict[str, Any]


def search(loaded: Loaded, column: str, decl: dict[str, Any], Q: np.ndarray, k: int, *, mask: np.ndarray | None,
           index: Any = None, nprobe: int | None = None, refine: int | None = None, exact_only: bool = False) -> Hits:
    """The ``k`` nearest rows to each query (see the module docstring). ``mask`` (n,) restricts the rows
    (a filter); ``index`` (a FAISS IVF index over the valid rows, ids = row positions) is used unless
    ``exact_only``. ``refine``: candidates per result re-ranked exactly (default 10)."""
    metric = decl["metric"]
    X, valid = loaded.vectors[column], loaded.valid[column]
    allowed = valid if mask is None else (valid & mask)
    n_allowed = loaded.n_valid[column] if mask is None else int(allowed.sum())
    detail: dict[str, Any] = {"rows_searched": n_allowed}
    use_index = index is not None and not exact_only
    if use_index and mask is not None and n_allowed <= EXACT_FILTER_ROWS:
        use_index = False
        detail["exact_reason"] = f"the filter leaves {n_allowed} rows (≤ {EXACT_FILTER_ROWS}): exact search is faster"
    if not use_index:
        rows = None if n_allowed == len(valid) else np.flatnonzero(allowed)
        ids, D = final_distances(X, Q, exact(X, Q, k, metric, rows), metric)
        return Hits(ids, D, "exact", detail)
    faiss = _faiss()
    refine = _check_refine(refine or 10)
    kk = min(n_allowed, k * refine)
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    if mask is not None:
        bits = np.packbits(allowed, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        params.sel = sel
    _, cand = index.search(Q, kk, params=params)
    ids, D = rerank(X, Q, cand, k, metric)
    detail.update(candidates=kk, nprobe=nprobe, refine=refine)
    short = (ids >= 0).sum(axis=1) < min(k, n_allowed)
    if short.any():  # an IVF scan of nprobe lists found fewer than k allowed rows: exact for those queries
        rows = None if n_allowed == len(valid) else np.flatnonzero(allowed)
        ei, ed = final_distances(X, Q[short], exact(X, Q[short], k, metric, rows), metric)
        ids2 = np.full((Q.shape[0], max(ids.shape[1], ei.shape[1])), -1, np.int64)
        D2 = np.full(ids2.shape, np.nan)
        ids2[:, :ids.shape[1]], D2[:, :ids.shape[1]] = ids, D
        ids2[short], D2[short] = -1, np.nan
        ids2[short, :ei.shape[1]], D2[short, :ei.shape[1]] = ei, ed
        ids, D = ids2, D2
        detail["exact_fallback_queries"] = int(short.sum())
    return Hits(ids, D, "ann", detail)


def final_distances(X: np.ndarray, Q: np.ndarray, ids: np.ndarray, metric: str,
                    k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances of the rows ``ids (b, c)`` (-1 = none) to the queries ``Q (b, d)``, computed from the vectors
    themselves with FAISS's ``fvec_L2sqr_by_idx`` / ``fvec_inner_products_by_idx`` (sums of squared
    differences, not the ``‖x‖² − 2x·q + ‖q‖²`` expansion used to rank many rows, which loses digits near
    0; OpenMP over the queries, no copy of the rows); the best ``k`` (default all) per query, sorted by
    distance, ties by row position; id -1 → NaN, last. Cosine expects unit rows and queries."""
    faiss = _faiss()
    b, c = ids.shape
    missing = ids < 0
    safe = np.ascontiguousarray(np.where(missing, 0, ids), dtype=np.int64)
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    out = np.empty((b, c), np.float32)
    if b and c:
        fn = faiss.fvec_L2sqr_by_idx if metric == "l2" else faiss.fvec_inner_products_by_idx
        fn(faiss.swig_ptr(out), faiss.swig_ptr(Q), faiss.swig_ptr(X), faiss.swig_ptr(safe), X.shape[1], b, c)
    D = out.astype(np.float64)
    if metric == "l2":
        D = np.sqrt(np.maximum(D, 0.0))
    elif metric == "cosine":
        D = 1.0 - D
    else:
        D = -D
    if missing.any():
        D[missing] = np.inf
    if b == 1:  # one query: a plain sort (the common interactive case, no axis bookkeeping)
        order = np.lexsort((np.where(missing[0], _BIG, ids[0]), D[0]))[:k]
        ids, D = ids[:, order], D[:, order]
    else:
        order = np.lexsort((np.where(missing, _BIG, ids), D), axis=1)[:, :k]
        ids, D = np.take_along_axis(ids, order, 1), np.take_along_axis(D, order, 1)
    if (ids < 0).any():
        D = np.where(ids < 0, np.nan, D)
    return ids, D


def result_table(loaded: Loaded, hits: Hits, batched: bool, columns: list[str] | None, skip: list[str]):
    """The rows found, best first per query, with ``_distance`` (and ``_query``, the query's position, for a
    batch), as a pyarrow Table. ``columns`` (None = every column but ``skip``) chooses the table's columns."""
    import pyarrow as pa

    t = loaded.table
    names = tuple(columns if columns is not None else [c for c in t.column_names if c not in skip])
    view = loaded._views.get(names)
    if view is None:
        view = loaded._views[names] = t.select(list(names)).combine_chunks()
    ok = hits.ids >= 0
    flat = hits.ids[ok]
    out = view.take(pa.array(flat))
    out = out.append_column(DISTANCE, pa.array(hits.distances[ok], pa.float64()))
    if batched:
        qpos = np.broadcast_to(np.arange(hits.ids.shape[0])[:, None], hits.ids.shape)[ok]
        out = out.add_column(0, QUERY, pa.array(qpos.astype(np.int32)))
    return out
