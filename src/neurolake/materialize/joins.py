"""Join queries across the annotation tables of one materialization version (CAVE's ``join_query``).

``join_version(lake, ds, version, [("synapses", "post_pt_root_id"), ("cell_types", "pt_root_id")])``
is the inner join ``synapses.post_pt_root_id == cell_types.pt_root_id`` of the two tables frozen in
``version``, each filtered first by its own CAVE-style filters (see
:func:`neurolake.materialize.versions.filter_expression`). Column naming follows CAVE's
MaterializationEngine (``QueryManager.execute_query``, https://github.com/CAVEconnectome/MaterializationEngine):
a column selected from both tables gets the table's suffix appended — ``id`` → ``id_pre``, a position
``pre_pt_position_x`` → ``pre_pt_position_pre_x`` — with suffixes from ``suffixes`` (default ``"x"``,
``"y"`` as the engine's ``DEFAULT_SUFFIX_LIST``); ``deleted`` and ``superceded_id`` are dropped
(every row of a version is valid). Rows are sorted by the first table's ``id``, then the second's.

Each table is read once and filtered with pyarrow; the join is an Arrow (Acero) hash join of the key
columns and row numbers, after which both tables are gathered once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neurolake.base.results import Result
from neurolake.errors import InvalidArgument
from neurolake.storage.config import is_s3
from neurolake.storage.files import write_text_atomic

DEFAULT_SUFFIXES = ("x", "y", "z", "xx", "yy", "zz")  # CAVE's DEFAULT_SUFFIX_LIST
FILTERS = ("filter_in", "filter_equal", "filter_not_in", "filter_greater", "filter_less", "filter_greater_equal",
           "filter_less_equal", "filter_spatial")
CRUD = ("deleted", "superceded_id")  # dropped from join answers, as CAVE does


def _base(col: str) -> str:
    """The CAVE column a stored column belongs to: ``P_position_x`` → ``P_position`` (one geometry column)."""
    if "_position_" in col and col[-2:] in ("_x", "_y", "_z"):
        return col[:-2]
    return col


def _renamed(col: str, suffix: str) -> str:
    if "_position_" in col and col[-2:] in ("_x", "_y", "_z"):
        return f"{col[:-2]}{suffix}{col[-2:]}"
    return col + suffix


def join_specs(tables: Any) -> list[tuple[str, str]]:
    """``tables`` as ``[(table, join column), (table, join column)]``; InvalidArgument (field ``tables``)
    unless it is exactly two ``[name, column]`` pairs naming two different tables."""
    ok = isinstance(tables, list | tuple) and all(
        isinstance(t, list | tuple) and len(t) == 2 and all(isinstance(s, str) and s for s in t) for t in tables)
    if not ok:
        raise InvalidArgument("tables must be a list of [table, join column] pairs, e.g. "
                              "[['synapses', 'post_pt_root_id'], ['cell_types', 'pt_root_id']]", field="tables")
    if len(tables) != 2:
        raise InvalidArgument(f"a join query joins exactly 2 tables (as CAVE's), got {len(tables)}", field="tables",
                              value=len(tables))
    if tables[0][0] == tables[1][0]:
        raise InvalidArgument(f"a join query needs two different tables, got {tables[0][0]!r} twice",
                              field="tables", value=tables[0][0])
    return [(str(t), str(c)) for t, c in tables]


def _suffixes(names: list[str], suffixes: Any) -> dict[str, str]:
    if suffixes is None:
        out = dict(zip(names, DEFAULT_SUFFIXES, strict=False))
    elif isinstance(suffixes, dict):
        bad = [k for k in suffixes if k not in names]
        if bad or not all(isinstance(v, str) for v in suffixes.values()):
            raise InvalidArgument(f"suffix_map must map the joined tables {names} to text suffixes, got "
                                  f"{suffixes!r}"[:300], field="suffix_map")
        out = {n: suffixes.get(n, d) for n, d in zip(names, DEFAULT_SUFFIXES, strict=False)}
    elif isinstance(suffixes, list | tuple) and all(isinstance(s, str) for s in suffixes):
        if len(suffixes) < len(names):
            raise InvalidArgument(f"suffixes must give one suffix per table ({len(names)}), got {suffixes!r}",
                                  field="suffixes")
        out = dict(zip(names, suffixes, strict=False))
    else:
        raise InvalidArgument("suffixes must be a list of texts (one per table) or {table: suffix}",
                              field="suffixes")
    if len(set(out.values())) != len(out):
        raise InvalidArgument(f"the tables need different suffixes, got {out}", field="suffixes")
    return out


def join_version(lake, datastack: str, version: int | None, tables: Sequence[Sequence[str]], *,
                 filters: dict[str, dict[str, Any]] | None = None,
                 select_columns: dict[str, list[str]] | list[str] | None = None,
                 suffixes: list[str] | dict[str, str] | None = None, offset: int = 0, limit: int | None = None,
                 desired_resolution: Sequence[float] | None = None) -> Result:
    """The inner join of two tables of materialization ``version`` (None = newest valid) as a
    :class:`~neurolake.base.results.Result` (Arrow; id columns uint64).

    - ``tables``: ``[(table1, column1), (table2, column2)]``: rows where ``table1.column1 == table2.column2``;
    - ``filters``: ``{table: {"filter_in": {column: [values]}, "filter_equal": ..., "filter_not_in": ...,
      "filter_greater": ..., "filter_less": ..., "filter_greater_equal": ..., "filter_less_equal": ...,
      "filter_spatial": {point: [[x0, y0, z0], [x1, y1, z1]]}}}`` applied to each table before the join
      (spatial boxes in that table's stored voxels, half-open);
    - ``select_columns``: ``{table: [columns]}`` (CAVE's ``select_column_map``; positions as their stored
      ``P_position_x|y|z`` columns or the CAVE name ``P_position``), or a list of column names each taken
      from the first table having it (CAVE's deprecated ``select_columns``); default every column;
    - ``suffixes``: a list (one per table, in order) or ``{table: suffix}`` for the columns both tables have;
    - ``offset`` / ``limit``: a window of the sorted join;
    - ``desired_resolution``: ``(x, y, z)`` nm per voxel of the positions returned (default: the first
      table's ``voxel_size_nm``); each table's positions are scaled from its own voxel size.

    Metadata: datastack, version, its timestamp, tables, ``dataframe_resolution`` (x, y, z nm).
    Raises InvalidArgument (tables, columns, filters, suffixes, offset/limit), NotFound (version, table),
    VersionExpired.
    """
    from neurolake.materialize.versions import _window, query_version

    specs = join_specs([list(t) for t in tables] if isinstance(tables, list | tuple) else tables)
    names = [t for t, _ in specs]
    offset, limit = _window(offset, limit)
    sfx = _suffixes(names, suffixes)
    filters = dict(filters or {})
    unknown = [t for t in filters if t not in names]
    if unknown:
        raise InvalidArgument(f"filters name tables {unknown} that are not joined ({names})", field="filters",
                              value=unknown)
    if isinstance(select_columns, dict):
        bad = [t for t in select_columns if t not in names]
        if bad:
            raise InvalidArgument(f"select_column_map names tables {bad} that are not joined ({names})",
                                  field="select_column_map", value=bad)
    # read each table once, filtered, with every column (the selection needs the join keys)
    parts, meta = {}, None
    for t in names:
        f = filters.get(t) or {}
        bad = [k for k in f if k not in FILTERS]
        if bad:
            raise InvalidArgument(f"unknown filters {bad} for table {t!r}; allowed: {list(FILTERS)}",
                                  field="filters", value=bad)
        r = query_version(lake, datastack, version, t, **{k: v for k, v in f.items() if v})
        parts[t] = r.arrow()
        meta = meta or r.metadata
    from neurolake.materialize.versions import get_version

    v = get_version(lake, datastack, meta["version"], allow_expired=False)
    res = {t: np.asarray(v["tables"][t].get("voxel_size_nm") or v["tables"][t]["voxel_resolution_nm"], float)
           for t in names}
    for t, c in specs:
        if c not in parts[t].column_names:
            raise InvalidArgument(f"join column {c!r} is not a column of table {t!r}; columns: "
                                  f"{parts[t].column_names}", field="tables", value=c)
    # the columns selected per table (stored names), CAVE names accepted for positions
    chosen: dict[str, list[str]] = {}
    for t in names:
        cols = [c for c in parts[t].column_names if c not in CRUD]
        if isinstance(select_columns, dict):
            want = select_columns.get(t)
            if want is None:
                chosen[t] = []
                continue
            chosen[t] = _expand(want, parts[t].column_names, t)
        elif isinstance(select_columns, list | tuple):
            chosen[t] = []
        else:
            chosen[t] = cols
    if isinstance(select_columns, list | tuple):
        for c in select_columns:
            home = next((t for t in names if _expand([c], parts[t].column_names, t, strict=False)), None)
            if home is None:
                raise InvalidArgument(f"column {c!r} is in none of the joined tables {names}",
                                      field="select_columns", value=c)
            chosen[home] += _expand([c], parts[home].column_names, home)
    elif select_columns is not None and not isinstance(select_columns, dict):
        raise InvalidArgument("select_columns must be {table: [columns]} or a list of columns",
                              field="select_columns")
    counts: dict[str, int] = {}
    for t in names:
        for b in dict.fromkeys(_base(c) for c in chosen[t]):
            counts[b] = counts.get(b, 0) + 1
    dup = {b for b, n in counts.items() if n > 1}
    # desired resolution: positions of every table scaled to it
    if desired_resolution is None:
        target = res[names[0]]
    else:
        try:
            target = np.asarray([float(x) for x in desired_resolution], float)
            assert target.shape == (3,) and np.all(target > 0) and np.all(np.isfinite(target))
        except (TypeError, ValueError, AssertionError):
            raise InvalidArgument("desired_resolution must be 3 positive numbers (x, y, z nm)",
                                  field="desired_resolution") from None
    # rename (suffixes), keep the join keys under private names
    prepared = {}
    for i, (t, key) in enumerate(specs):
        tab = parts[t]
        cols, out_names = [], []
        for c in chosen[t]:
            col = tab.column(c)
            if "_position_" in c and c[-2:] in ("_x", "_y", "_z"):
                scale = res[t]["xyz".index(c[-1])] / target["xyz".index(c[-1])]
                if scale != 1:
                    col = pc.multiply(col.cast(pa.float64()), float(scale))
            cols.append(col)
            out_names.append(_renamed(c, sfx[t]) if _base(c) in dup else c)
        cols.append(tab.column(key))
        out_names.append(f"__key{i}")
        prepared[i] = pa.Table.from_arrays(cols, names=out_names)
    seen = [n for i in prepared for n in prepared[i].column_names if not n.startswith("__")]
    clash = sorted({n for n in seen if seen.count(n) > 1})
    if clash:
        raise InvalidArgument(f"columns {clash} come from both tables after adding suffixes {sfx}; choose other "
                              "suffixes", field="suffixes", value=clash)
    a, b = prepared[0], prepared[1]
    ka, kb = a.schema.field("__key0").type, b.schema.field("__key1").type
    if ka != kb:
        common = _common_type(ka, kb)
        if common is None:
            raise InvalidArgument(f"join columns {specs[0][1]!r} ({ka}) and {specs[1][1]!r} ({kb}) have types that "
                                  "cannot be compared", field="tables")
        a = a.set_column(a.column_names.index("__key0"), "__key0", a.column("__key0").cast(common))
        b = b.set_column(b.column_names.index("__key1"), "__key1", b.column("__key1").cast(common))
    # the join on the keys and row numbers only (Acero hash join), sorted by (row of t1, row of t2) — the rows
    # are in id order — windowed, then both tables gathered once
    left = pa.table({"k": a.column("__key0"), "r0": pa.array(np.arange(len(a), dtype=np.int64))})
    right = pa.table({"k": b.column("__key1"), "r1": pa.array(np.arange(len(b), dtype=np.int64))})
    left = left.filter(pc.is_valid(left.column("k")))  # null keys never match (SQL's inner join)
    right = right.filter(pc.is_valid(right.column("k")))
    pairs = left.join(right, keys="k", join_type="inner", use_threads=True)
    if len(pairs) > 1:
        pairs = pairs.take(pc.sort_indices(pairs, [("r0", "ascending"), ("r1", "ascending")]))
    if offset or limit is not None:
        pairs = pairs.slice(offset, limit)
    ka = [n for n in a.column_names if not n.startswith("__")]
    kb = [n for n in b.column_names if not n.startswith("__")]
    ta = a.select(ka).take(pairs.column("r0"))
    tb = b.select(kb).take(pairs.column("r1"))
    out = pa.Table.from_arrays([*ta.columns, *tb.columns], names=[*ka, *kb])
    return Result(out, {"datastack": datastack, "version": meta["version"], "timestamp": meta["timestamp"],
                        "tables": [{"table": t, "join_column": c, "suffix": sfx[t]} for t, c in specs],
                        "dataframe_resolution": [float(x) for x in target]})


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.uint64() if pa.types.is_unsigned_integer(a) or pa.types.is_unsigned_integer(b) else pa.int64()
    if (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return pa.float64()
    text = (pa.string(), pa.large_string())
    if a in text and b in text:
        return pa.large_string()
    return None


def _expand(want: Any, columns: list[str], table: str, strict: bool = True) -> list[str]:
    """Requested columns as stored columns: ``P_position`` → its three ``_x|_y|_z`` columns."""
    if not isinstance(want, list | tuple) or not all(isinstance(c, str) for c in want):
        raise InvalidArgument(f"selected columns of {table!r} must be a list of column names",
                              field="select_column_map")
    out: list[str] = []
    for c in want:
        if c in columns:
            out.append(c)
        elif all(f"{c}_{a}" in columns for a in "xyz") and c.endswith("_position"):
            out += [f"{c}_{a}" for a in "xyz"]
        elif strict:
            raise InvalidArgument(f"column {c!r} is not in table {table!r}; columns: {columns}",
                                  field="select_column_map", value=c)
    return list(dict.fromkeys(out))


# -------------------------------------------------------------------------------------------------
# views: named joins (CAVE's views, as saved join definitions evaluated on any materialization version)
# -------------------------------------------------------------------------------------------------
def _views_dir(lake, datastack: str):
    lake.datastack(datastack)  # NotFound for an unknown datastack
    return lake.root / "datastacks" / datastack / "views"


def define_view(lake, datastack: str, name: str, tables: Sequence[Sequence[str]], *,
                suffixes: list[str] | dict[str, str] | None = None,
                select_columns: dict[str, list[str]] | None = None, description: str = "",
                owner: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Save the join ``tables`` (as in :func:`join_version`) as view ``name`` of ``datastack``: CAVE's
    ``query_view`` then answers it on any materialization version. Stored as
    ``<lake>/datastacks/<ds>/views/<name>.json`` (written atomically). Returns the view's metadata.
    Raises InvalidArgument (name, tables, suffixes), NotFound (datastack, annotation table), AlreadyExists
    (unless ``overwrite``)."""
    import json

    from neurolake.annotations import get_table
    from neurolake.base.names import check_name
    from neurolake.base.time import isoformat
    from neurolake.db.base import utcnow
    from neurolake.errors import AlreadyExists
    from neurolake.provenance import current_user

    check_name("view", name)
    specs = join_specs([list(t) for t in tables] if isinstance(tables, list | tuple) else tables)
    names = [t for t, _ in specs]
    sfx = _suffixes(names, suffixes)
    tabs = [get_table(lake, datastack, t) for t in names]  # NotFound for unknown tables
    for t, (_, col) in zip(tabs, specs, strict=True):
        if col not in t.arrow_schema.names:
            raise InvalidArgument(f"join column {col!r} is not a column of table {t.name!r}; columns: "
                                  f"{t.arrow_schema.names}", field="tables", value=col)
    if select_columns is not None:
        if not isinstance(select_columns, dict) or any(t not in names for t in select_columns):
            raise InvalidArgument(f"select_columns must be {{table: [columns]}} for the tables {names}",
                                  field="select_columns")
        for t in tabs:
            if t.name in select_columns:
                _expand(select_columns[t.name], t.arrow_schema.names, t.name)
    folder = _views_dir(lake, datastack)
    path = folder / f"{name}.json"
    if path.exists() and not overwrite:
        raise AlreadyExists(f"view {name!r} of datastack {datastack!r} already exists (overwrite=True replaces it)",
                            datastack=datastack, view=name)
    doc = {"name": name, "description": description, "tables": [list(s) for s in specs], "suffixes": sfx,
           "select_columns": select_columns, "owner": owner or current_user(), "created": isoformat(utcnow()),
           "voxel_size_nm": list(tabs[0].voxel_size_nm)}
    if not is_s3(folder):
        folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(doc, indent=1))
    return doc


def list_views(lake, datastack: str) -> list[str]:
    """Names of the views of ``datastack``, sorted. Raises NotFound (datastack)."""
    folder = _views_dir(lake, datastack)
    if is_s3(folder):
        try:
            names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in folder.fs.ls(folder.path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def get_view(lake, datastack: str, name: str) -> dict[str, Any]:
    """The definition of view ``name`` (see :func:`define_view`). Raises NotFound naming the known views."""
    import json

    from neurolake.base.names import not_found

    folder = _views_dir(lake, datastack)
    path = folder / f"{name}.json"
    if not isinstance(name, str) or "/" in name or name.startswith(".") or not path.is_file():
        raise not_found("view", name, list_views(lake, datastack), within=("datastack", datastack))
    return json.loads(path.read_text())


def query_view(lake, datastack: str, version: int | None, name: str, *, filters: dict[str, Any] | None = None,
               columns: list[str] | None = None, offset: int = 0, limit: int | None = None,
               desired_resolution: Sequence[float] | None = None) -> Result:
    """Rows of view ``name`` in materialization ``version`` (None = newest valid): its join
    (:func:`join_version`), then ``filters`` on the view's own columns — ``{"filter_in": {column: [values]},
    "filter_equal", "filter_not_in", "filter_greater", "filter_less", "filter_greater_equal",
    "filter_less_equal", "filter_spatial": {position column: [[x0, y0, z0], [x1, y1, z1]]}}`` (boxes in the
    answer's voxels, half-open; the position column named as in the answer, e.g. ``pt_position_site``) —
    ``columns`` (view columns; positions by their CAVE name), then the window. Raises InvalidArgument,
    NotFound (view, version, table), VersionExpired."""
    from neurolake.materialize.versions import _window, filter_expression

    offset, limit = _window(offset, limit)
    v = get_view(lake, datastack, name)
    r = join_version(lake, datastack, version, v["tables"], select_columns=v.get("select_columns"),
                     suffixes=v.get("suffixes"), desired_resolution=desired_resolution)
    tab = r.arrow()
    f = dict(filters or {})
    bad = [k for k in f if k not in FILTERS]
    if bad:
        raise InvalidArgument(f"unknown filters {bad}; allowed: {list(FILTERS)}", field="filters", value=bad)
    spatial = f.pop("filter_spatial", None) or {}
    expr = filter_expression(tab.schema, **{k: val for k, val in f.items() if val}, table=name)
    for key, box in spatial.items():
        cols = next((c for c in ([f"{key}_{a}" for a in "xyz"], [f"{key}_position_{a}" for a in "xyz"])
                     if all(x in tab.column_names for x in c)), None)
        if cols is None:
            raise InvalidArgument(f"spatial filter column {key!r} is not a position of view {name!r}",
                                  field="filter_spatial", value=key)
        try:
            lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
            assert lo.shape == (3,) and hi.shape == (3,)
        except (TypeError, ValueError, IndexError, AssertionError):
            raise InvalidArgument(f"spatial filter of {key!r} must be [[x0, y0, z0], [x1, y1, z1]], got {box!r}"[:300],
                                  field="filter_spatial") from None
        for i, c in enumerate(cols):
            e = (pc.field(c) >= float(lo[i])) & (pc.field(c) < float(hi[i]))
            expr = e if expr is None else expr & e
    if expr is not None:
        tab = tab.filter(expr)
    if columns is not None:
        tab = tab.select(_expand(list(columns), tab.column_names, name))
    if offset or limit is not None:
        tab = tab.slice(offset, limit)
    return Result(tab, {**r.metadata, "view": name})
