"""Annotation table schemas: typed columns, bound points and batch validation.

A schema names the *bound points* of a row (CAVE's ``BoundSpatialPoint``: a position plus the
segment under it) and its typed fields. Schemas follow CAVE's EM annotation schemas
(https://github.com/CAVEconnectome/EMAnnotationSchemas): ``synapse`` (pre_pt, post_pt, ctr_pt, size),
``cell_type`` (pt, cell_type, classification_system), ``nucleus`` (pt, volume), ``bound_tag``
(pt, tag), plus generic ``point`` / ``line`` / ``box`` tables whose extra columns are free-form
properties declared when the table is created.

Stored columns (one Delta Lake table per annotation table):

- ``id`` (uint64, stable; stored as Delta ``long`` so ids must be < 2**63),
  ``created`` / ``deleted`` (UTC timestamps, µs; ``deleted`` null while the row is valid),
  ``superceded_id`` (id of the row that replaced this one on update; CAVE's spelling),
  ``author``, ``confidence`` (float), ``status`` (str), ``metadata`` (JSON object as text);
- per bound point ``P``: ``P_position_x``, ``P_position_y``, ``P_position_z`` (float64, **voxels at
  the table's voxel resolution**, x, y, z; multiply by the table's ``voxel_size_nm`` for nm — the names
  caveclient gives split positions), ``P_supervoxel_id`` (uint64, looked up on write) and
  ``P_root_id`` (uint64, optional, e.g. when the source already knows the proofread object);
- the schema's fields and the table's declared properties.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from neurolake.errors import InvalidArgument

# value types a field/property may have -> stored Arrow type
TYPES: dict[str, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "uint64": pa.int64(),  # segment ids: stored as Delta long, returned as uint64
    "str": pa.string(),
    "bool": pa.bool_(),
}
UINT64_MAX_STORED = 2**63 - 1
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Field:
    """A typed column. ``type`` is one of ``float``, ``int``, ``uint64``, ``str``, ``bool``."""

    name: str
    type: str
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Schema:
    """A table schema: bound points, typed fields, and the point drawn by viewers (``primary``)."""

    name: str
    points: tuple[str, ...]
    fields: tuple[Field, ...] = ()
    primary: str = ""
    annotation_type: str = "POINT"  # Neuroglancer precomputed geometry: POINT, LINE, AXIS_ALIGNED_BOUNDING_BOX
    optional_points: tuple[str, ...] = ()
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "points": list(self.points), "primary_point": self.primary,
                "optional_points": list(self.optional_points), "annotation_type": self.annotation_type,
                "fields": [{"name": f.name, "type": f.type, "required": f.required, "description": f.description}
                           for f in self.fields],
                "description": self.description}


COMMON = (
    Field("author", "str", description="who made the annotation"),
    Field("confidence", "float", description="confidence in [0, 1] or a detector score"),
    Field("status", "str", description="free-form status, e.g. 'proofread'"),
    Field("metadata", "str", description="key-value metadata (a JSON object)"),
)
SYSTEM = ("id", "created", "deleted", "superceded_id")

SCHEMAS: dict[str, Schema] = {s.name: s for s in [
    Schema("synapse", ("pre_pt", "post_pt", "ctr_pt"),
           (Field("size", "float", description="synapse size (detector units, e.g. voxels)"),),
           primary="ctr_pt", optional_points=("pre_pt", "post_pt"),
           description="a synapse: presynaptic, postsynaptic and centre points, size (CAVE 'synapse')"),
    Schema("cell_type", ("pt",),
           (Field("cell_type", "str", required=True),
            Field("classification_system", "str", description="the naming scheme of cell_type")),
           primary="pt", description="a cell type assigned to the object under pt (CAVE 'cell_type_local')"),
    Schema("nucleus", ("pt",), (Field("volume", "float", description="nucleus volume in µm³"),),
           primary="pt", description="a soma/nucleus centre (CAVE 'nucleus_detection')"),
    Schema("bound_tag", ("pt",), (Field("tag", "str", required=True),), primary="pt",
           description="a text tag on the object under pt (CAVE 'bound_tag')"),
    Schema("point", ("pt",), primary="pt", description="a point with free-form properties"),
    Schema("line", ("start_pt", "end_pt"), primary="start_pt", annotation_type="LINE",
           description="a line segment with free-form properties"),
    Schema("box", ("min_pt", "max_pt"), primary="min_pt", annotation_type="AXIS_ALIGNED_BOUNDING_BOX",
           description="an axis-aligned box (corners min_pt, max_pt) with free-form properties"),
]}


def get_schema(name: str) -> Schema:
    """The built-in schema ``name``. Raises InvalidArgument naming the known schemas."""
    try:
        return SCHEMAS[name]
    except (KeyError, TypeError):
        raise InvalidArgument(f"schema {name!r} is unknown; known schemas: {', '.join(SCHEMAS)}",
                              field="schema", value=repr(name), allowed=list(SCHEMAS)) from None


def position_columns(point: str) -> list[str]:
    return [f"{point}_position_{a}" for a in AXES]


def id_columns(schema: Schema, properties: dict[str, str] | None = None) -> list[str]:
    """Columns holding uint64 ids (returned as uint64, stored as int64)."""
    cols = ["id", "superceded_id"]
    for p in schema.points:
        cols += [f"{p}_supervoxel_id", f"{p}_root_id"]
    cols += [f.name for f in schema.fields if f.type == "uint64"]
    cols += [k for k, t in (properties or {}).items() if t == "uint64"]
    return cols


def check_properties(schema: Schema, properties: dict[str, str] | None) -> dict[str, str]:
    """Validate declared free-form properties ``{name: type}``; names may not shadow schema columns."""
    props = dict(properties or {})
    taken = set(arrow_schema(schema, {}).names)
    for name, typ in props.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidArgument(f"property name {name!r} must be an identifier (letters, digits, _)",
                                  field="properties", value=repr(name))
        if name in taken:
            raise InvalidArgument(f"property {name!r} is already a column of schema {schema.name!r}",
                                  field="properties", value=name)
        if typ not in TYPES:
            raise InvalidArgument(f"property {name!r} has type {typ!r}; allowed: {', '.join(TYPES)}",
                                  field="properties", value=repr(typ), allowed=list(TYPES))
    return props


def arrow_schema(schema: Schema, properties: dict[str, str] | None) -> pa.Schema:
    """The stored Arrow schema of a table with ``schema`` and declared ``properties``."""
    cols: list[pa.Field] = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("created", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("deleted", pa.timestamp("us", tz="UTC")),
        pa.field("superceded_id", pa.int64()),
    ]
    for p in schema.points:
        cols += [pa.field(c, pa.float64()) for c in position_columns(p)]
        cols += [pa.field(f"{p}_supervoxel_id", pa.int64()), pa.field(f"{p}_root_id", pa.int64())]
    for f in COMMON + schema.fields:
        cols.append(pa.field(f.name, TYPES[f.type]))
    for name, typ in (properties or {}).items():
        cols.append(pa.field(name, TYPES[typ]))
    return pa.schema(cols)


def user_columns(schema: Schema, properties: dict[str, str] | None) -> list[str]:
    """Columns a writer may give (everything but created/deleted/superceded_id)."""
    return [n for n in arrow_schema(schema, properties).names if n not in ("created", "deleted", "superceded_id")]


# -- validation ----------------------------------------------------------------------------------
def _rows(mask: np.ndarray, limit: int = 10) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:limit]]


def _fmt_rows(rows: list[int], total: int) -> str:
    more = f" and {total - len(rows)} more" if total > len(rows) else ""
    return str(rows) + more


def _to_number(col: str, series: pd.Series, kind: str) -> np.ndarray:
    """Convert a column to float64 (kind float) or to exact integers as float64/object; name bad rows."""
    if pd.api.types.is_bool_dtype(series.dtype):
        raise InvalidArgument(f"column {col!r} must be {kind}, got booleans", field=col, expected=kind)
    num = pd.to_numeric(series, errors="coerce")
    bad = num.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        rows = _rows(bad)
        raise InvalidArgument(
            f"column {col!r} must be {kind}; rows {_fmt_rows(rows, int(bad.sum()))} hold "
            f"{', '.join(repr(series.iloc[r]) for r in rows[:3])}", field=col, rows=rows, expected=kind)
    return num


def _split_point_lists(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Accept ``P_position`` as a 3-element list column (caveclient's unsplit form): split it."""
    for p in schema.points:
        col = f"{p}_position"
        if col in df.columns and not any(c in df.columns for c in position_columns(p)):
            vals = df[col].tolist()
            bad = [i for i, v in enumerate(vals) if not (v is None or (hasattr(v, "__len__") and len(v) == 3))]
            if bad:
                raise InvalidArgument(f"column {col!r} must hold [x, y, z] lists; rows {bad[:10]} do not",
                                      field=col, rows=bad[:10])
            arr = np.array([[np.nan] * 3 if v is None else list(v) for v in vals], dtype=object)
            df = df.drop(columns=[col])
            for i, c in enumerate(position_columns(p)):
                df[c] = arr[:, i] if len(arr) else []
    return df


def _ids(col: str, s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised uint64 id column → (int64 values, null mask); names bad rows."""
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() & s.notna().to_numpy()
        if bad.any():
            rows = _rows(bad)
            raise InvalidArgument(f"column {col!r} must hold non-negative whole numbers (uint64 ids); rows "
                                  f"{rows} hold {[s.iloc[r] for r in rows[:3]]}", field=col, rows=rows)
        s = num
    if pd.api.types.is_bool_dtype(s.dtype):
        raise InvalidArgument(f"column {col!r} must hold ids, got booleans", field=col)
    if isinstance(s.dtype, pd.ArrowDtype) or pd.api.types.is_extension_array_dtype(s.dtype):
        null = s.isna().to_numpy()
        s = s.astype("float64" if pd.api.types.is_float_dtype(s.dtype) else "Int64").fillna(0)
    else:
        null = s.isna().to_numpy()
    vals = s.to_numpy()
    if vals.dtype.kind == "f":
        vals = np.where(null, 0, vals)
        bad = (vals % 1 != 0) | (vals < 0) | (vals > UINT64_MAX_STORED)
        if bad.any():
            rows = _rows(bad)
            raise InvalidArgument(f"column {col!r} must hold whole numbers in 0..2**63-1; rows {rows} do not "
                                  f"({[vals[r] for r in rows[:3]]})", field=col, rows=rows)
        return vals.astype(np.int64), null
    if vals.dtype.kind == "u":
        bad = vals > UINT64_MAX_STORED
    elif vals.dtype.kind == "i":
        bad = vals < 0
    else:
        raise InvalidArgument(f"column {col!r} must hold whole numbers (uint64 ids), got {s.dtype}", field=col)
    if bad.any():
        rows = _rows(bad)
        raise InvalidArgument(f"column {col!r} must hold ids in 0..2**63-1; rows {rows} hold "
                              f"{[int(vals[r]) for r in rows[:3]]}", field=col, rows=rows)
    return vals.astype(np.int64), null


class _Columns:
    """The columns of a batch, from a DataFrame or an Arrow table: Arrow arrays where the input is Arrow
    (vectorised checks without pandas), pandas Series otherwise (and for values the Arrow checks leave to
    pandas: unusual types and any column that fails, so error messages are the same either way)."""

    def __init__(self, data: pd.DataFrame | pa.Table) -> None:
        self.data = data
        self.is_arrow = isinstance(data, pa.Table)
        self.names = list(data.column_names if self.is_arrow else data.columns)
        self._series: dict[str, pd.Series] = {}
        self._combined: dict[str, pa.Array] = {}

    def __contains__(self, col: str) -> bool:
        return col in self.names

    def arrow(self, col: str) -> pa.Array | None:
        """The column as one contiguous Arrow array (for numpy checks), None for a DataFrame."""
        if not self.is_arrow:
            return None
        c = self.data.column(col)
        if c.num_chunks == 1:
            return c.chunk(0)
        if col not in self._combined:
            self._combined[col] = c.combine_chunks()
        return self._combined[col]

    def keep(self, col: str, arr: pa.Array) -> pa.Array | pa.ChunkedArray:
        """``arr`` for the output; the input column itself (no copy) when ``arr`` is its contiguous form."""
        if self.is_arrow and self._combined.get(col) is arr:
            return self.data.column(col)
        return arr

    def series(self, col: str) -> pd.Series:
        if not self.is_arrow:
            return self.data[col]
        if col not in self._series:
            self._series[col] = self.data.column(col).to_pandas()
        return self._series[col]


def _arrow_float(arr: pa.Array | None) -> np.ndarray | None:
    """float64 values (nulls as NaN) of a numeric or all-null Arrow array; None for other types."""
    if arr is None:
        return None
    t = arr.type
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan)
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        return None
    if not pa.types.is_float64(t):
        arr = pc.cast(arr, pa.float64(), safe=False)
    if arr.null_count:
        arr = pc.fill_null(arr, np.nan)
    return arr.to_numpy(zero_copy_only=False)


def _arrow_ids(arr: pa.Array | None) -> pa.Array | None:
    """An integer (or all-null) Arrow id column as int64 when all its values lie in 0..2**63-1, else None
    (the pandas path then checks it and names the bad rows)."""
    if arr is None:
        return None
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.int64())
    if not pa.types.is_integer(t):
        return None
    if arr.null_count < len(arr):
        mm = pc.min_max(arr)
        if mm["min"].as_py() < 0 or mm["max"].as_py() > UINT64_MAX_STORED:
            return None
    return arr.cast(pa.int64()) if t != pa.int64() else arr


def validate(df: pd.DataFrame, schema: Schema, properties: dict[str, str] | None,
             required_points: tuple[str, ...] | None = None) -> pa.Table:
    """Check and normalise a batch of rows (one row per annotation) for a table.

    ``df``: a pandas DataFrame or an Arrow table (checked column by column with Arrow/numpy, without a
    pandas conversion, where its columns have numeric / string / boolean Arrow types).
    Returns an Arrow table with exactly the user columns of the table (missing optional columns are
    nulls) in stored types (positions float64 voxels; ids int64, must be < 2**63). Raises
    :class:`InvalidArgument` naming columns and the first bad rows (0-based positions in the batch)
    for: unknown or missing columns, values of the wrong type, NaN/infinite or partial positions,
    negative or too-large ids, a ``metadata`` that is not a JSON object. Nothing is written when it
    raises.
    """
    if isinstance(df, pa.Table):
        if any(f"{p}_position" in df.column_names for p in schema.points):
            df = df.to_pandas(split_blocks=True)  # list positions: split in pandas
    elif not isinstance(df, pd.DataFrame):
        raise InvalidArgument(f"rows must be a pandas DataFrame or Arrow table, got {type(df).__name__}",
                              field="rows")
    if isinstance(df, pd.DataFrame):
        if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1):
            df = df.reset_index(drop=True)
        df = _split_point_lists(df, schema)
    src = _Columns(df)
    props = properties or {}
    target = arrow_schema(schema, props)
    allowed = user_columns(schema, props)
    system = [c for c in src.names if c in ("created", "deleted", "superceded_id", "valid")]
    unknown = [c for c in src.names if c not in allowed and c not in system]
    if unknown:
        raise InvalidArgument(
            f"unknown columns {unknown} for a {schema.name!r} table; allowed: {allowed} (declare extra "
            "columns as properties when creating the table)", field="columns", value=unknown, allowed=allowed)
    if system:
        raise InvalidArgument(f"columns {system} are set by neurolake and may not be written",
                              field="columns", value=system)
    dup = sorted({c for c in src.names if src.names.count(c) > 1}, key=src.names.index)
    if dup:
        raise InvalidArgument(f"columns {dup} appear more than once", field="columns", value=dup)
    n = len(df)
    req_points = schema.points if required_points is None else required_points
    missing = []
    for p in req_points:
        missing += [c for c in position_columns(p) if c not in src]
    missing += [f.name for f in schema.fields if f.required and f.name not in src]
    if missing:
        raise InvalidArgument(f"missing required columns {missing} for a {schema.name!r} table",
                              field="columns", value=missing)

    out: dict[str, pa.Array] = {}
    types = {f.name: f.type for f in COMMON + schema.fields} | dict(props)
    for col in id_columns(schema, props):
        if col == "superceded_id":
            continue
        if col not in src:
            out[col] = pa.nulls(n, pa.int64())
            continue
        fast = _arrow_ids(src.arrow(col))
        if fast is not None:
            null = np.asarray(fast.is_null()) if fast.null_count else np.zeros(n, dtype=bool)
        else:
            vals, null = _ids(col, src.series(col))
        if col == "id" and null.any():
            rows = _rows(null)
            raise InvalidArgument(f"column 'id' is empty in rows {rows}; give every row an id or omit the column",
                                  field="id", rows=rows)
        out[col] = src.keep(col, fast) if fast is not None else pa.array(vals, pa.int64(),
                                                                         mask=null if null.any() else None)
    for p in schema.points:
        cols = position_columns(p)
        present = [c for c in cols if c in src]
        if present and len(present) < 3:
            raise InvalidArgument(f"point {p!r} needs all of {cols}; missing {sorted(set(cols) - set(present))}",
                                  field=p, value=present)
        if not present:
            for c in cols:
                out[c] = pa.array(np.full(n, np.nan), pa.float64())
            continue
        axes = []  # one contiguous float64 array per axis
        for c in cols:
            v = _arrow_float(src.arrow(c))
            if v is None:
                v = _to_number(c, src.series(c), "a number").to_numpy(dtype=np.float64, na_value=np.nan)
            axes.append(v)
        nan = [np.isnan(v) for v in axes]
        any_nan, all_nan = nan[0] | nan[1] | nan[2], nan[0] & nan[1] & nan[2]
        inf = np.isinf(axes[0]) | np.isinf(axes[1]) | np.isinf(axes[2])
        if inf.any():
            rows = _rows(inf)
            raise InvalidArgument(f"point {p!r} has infinite coordinates in rows {rows}", field=p, rows=rows)
        partial = any_nan & ~all_nan
        if partial.any():
            rows = _rows(partial)
            raise InvalidArgument(f"point {p!r} has NaN/missing coordinates in rows {rows} (x, y, z must all be "
                                  "given)", field=p, rows=rows)
        if p in req_points and any_nan.any():
            rows = _rows(any_nan)
            raise InvalidArgument(f"point {p!r} is required but its position is NaN/missing in rows "
                                  f"{_fmt_rows(rows, int(any_nan.sum()))}", field=p, rows=rows)
        for c, v in zip(cols, axes, strict=True):
            a = src.arrow(c)
            out[c] = (src.keep(c, a) if a is not None and a.type == pa.float64() and a.null_count == 0
                      else pa.array(v, pa.float64()))
    required = {f.name for f in schema.fields if f.required}
    for col, typ in types.items():
        if typ == "uint64":
            continue  # handled with the ids
        if col not in src:
            out[col] = pa.nulls(n, TYPES[typ])
            continue
        a = src.arrow(col)
        if a is not None and pa.types.is_null(a.type):
            out[col] = pa.nulls(n, TYPES[typ])
        elif typ == "float" and (v := _arrow_float(a)) is not None:
            bad = np.isinf(v)
            if bad.any():
                out[col] = _validate_column(col, typ, src.series(col))
            else:
                out[col] = src.keep(col, a) if a.type == pa.float64() and not np.isnan(v).any() else \
                    pa.array(v, pa.float64(), from_pandas=True)
        elif typ == "int" and a is not None and pa.types.is_integer(a.type) and (
                a.type != pa.uint64() or _arrow_ids(a) is not None):
            out[col] = a.cast(pa.int64())
        elif typ == "bool" and a is not None and pa.types.is_boolean(a.type):
            out[col] = a
        elif (typ == "str" and col != "metadata" and a is not None
              and (pa.types.is_string(a.type) or pa.types.is_large_string(a.type) or pa.types.is_string_view(a.type))):
            out[col] = a.cast(pa.string())
        else:
            out[col] = _validate_column(col, typ, src.series(col))
        if col in required and out[col].null_count:
            rows = _rows(np.asarray(out[col].is_null()))
            raise InvalidArgument(f"required column {col!r} is empty in rows {rows}", field=col, rows=rows)
    names = [c for c in target.names if c in out]
    return pa.Table.from_arrays([out[c] for c in names], schema=pa.schema([target.field(c) for c in names]))


def _validate_column(col: str, typ: str, s: pd.Series) -> pa.Array:
    """Check one field/property column given as a pandas Series; the stored Arrow array."""
    if typ == "float":
        vals = _to_number(col, s, "a number").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(vals).any():
            rows = _rows(np.isinf(vals))
            raise InvalidArgument(f"column {col!r} is infinite in rows {rows}", field=col, rows=rows)
        return pa.array(vals, pa.float64(), from_pandas=True)
    if typ == "int":
        num = _to_number(col, s, "a whole number")
        null = num.isna().to_numpy()
        vals = num.to_numpy(dtype=np.float64, na_value=0) if num.dtype.kind == "f" or null.any() \
            else num.to_numpy()
        if vals.dtype.kind == "f" and (vals % 1 != 0).any():
            rows = _rows(vals % 1 != 0)
            raise InvalidArgument(f"column {col!r} must hold whole numbers; rows {rows} do not",
                                  field=col, rows=rows)
        return pa.array(vals.astype(np.int64), pa.int64(), mask=null if null.any() else None)
    if typ == "bool":
        if pd.api.types.is_bool_dtype(s.dtype):
            return pa.array(s, pa.bool_(), from_pandas=True)
        mapping = {"true": True, "false": False, "True": True, "False": False, 1: True, 0: False}
        vals = [None if _isna(v) else mapping.get(v, "bad") for v in s.tolist()]
        bad = np.array([v == "bad" for v in vals], dtype=bool)
        if bad.any():
            rows = _rows(bad)
            raise InvalidArgument(f"column {col!r} must hold booleans; rows {rows} do not", field=col, rows=rows)
        return pa.array(vals, pa.bool_())
    # str
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype) and s.notna().any():
        raise InvalidArgument(f"column {col!r} must hold text, got {s.dtype} numbers", field=col, expected="str")
    if col == "metadata":
        s = s.map(_metadata_text)
        bad = np.array([v is _BAD for v in s.tolist()], dtype=bool)
        if bad.any():
            rows = _rows(bad)
            raise InvalidArgument(f"column 'metadata' must hold JSON objects (dicts); rows {rows} do not",
                                  field="metadata", rows=rows)
    if s.dtype == object:
        bad = np.array([not (_isna(v) or isinstance(v, str)) for v in s.tolist()], dtype=bool)
        if bad.any():
            rows = _rows(bad)
            raise InvalidArgument(f"column {col!r} must hold text; rows {rows} hold "
                                  f"{[s.iloc[r] for r in rows[:3]]}", field=col, rows=rows)
    return pa.array(s.astype(object).where(s.notna(), None), pa.string())


_BAD = object()


def _metadata_text(v: Any) -> Any:
    if _isna(v):
        return None
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str):
        try:
            obj = json.loads(v)
        except json.JSONDecodeError:
            return _BAD
        return v if isinstance(obj, dict) else _BAD
    return _BAD


def _isna(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and math.isnan(v)
