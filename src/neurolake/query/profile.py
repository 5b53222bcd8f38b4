"""Explain and profile SQL queries: plan, estimated rows and bytes, runtime class, layout report, and
DuckDB's JSON profile normalised across DuckDB 1.x and 2.x, with a plain-words bottleneck hint.

Everything here works on a ready DuckDB connection ``con`` (duckdb 1.4 Python API) in which the
query's tables already exist as views over Parquet files (``CREATE VIEW … AS SELECT * FROM
read_parquet([...])``), and on the query's *inputs* (dicts, see ``docs/query.md``), of which this
module reads ``name`` (the view's name in SQL; ``view`` when given takes precedence) and ``files``
(the Parquet files the view reads, absolute paths).

- :func:`estimate`: before running. ``EXPLAIN (FORMAT json)`` gives the plan and DuckDB's estimated
  cardinality per operator; the Parquet footers of the inputs' files (pyarrow) give the compressed
  bytes of the columns each scan reads, after dropping the row groups whose min/max statistics the
  scan's pushed-down filters exclude; a small cost model (constants measured on a 2-core machine,
  see ``COST``) turns bytes and cardinalities into predicted seconds and a runtime class.
- :func:`layout_report`: per filter column of each scan, whether the table's layout (sort order,
  hive partitioning, plain statistics) serves it, the measured fraction of row groups it prunes, and
  what layout would serve it.
- :func:`explain`: both (what ``neurolake explain SQL`` prints).
- :func:`normalize_profile`: DuckDB's JSON profile (``SET enable_profiling='json'``) → one shape.
- :func:`bottleneck_hint`: one sentence naming where the time went and why.

Errors: :class:`neurolake.errors.InvalidArgument` for SQL DuckDB cannot plan, malformed inputs or
profiles, bad numbers; :class:`neurolake.errors.NotFound` for an input file that does not exist.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from neurolake.errors import InvalidArgument, NotFound

# Runtime classes: upper bounds in seconds (the last class has none).
CLASSES = (("interactive", 1.0), ("short", 60.0), ("batch", 3600.0))

# Cost model (CPU seconds, then ÷ PARALLELISM for wall seconds):
#   seconds ≈ base + Σ scans (rows_kept × scan_row_s + rows_kept × columns × decode_s_per_value)
#           + Σ operators (per-row rates below × rows; rows from DuckDB's estimates corrected by a sample)
# Measured on this project's 2-core machine (DuckDB 1.4.4, 2 threads, files in the page cache, the
# machine shared with other sessions: load average 3-5) with 11 calibration queries on a 10⁷-row,
# 8-column synthetic synapse table (4 zstd Parquet files, 4096-row groups, ~480 MB): each operator's
# ``operator_timing`` from the JSON profile divided by its rows (docs/query-profile.md lists the
# queries). E.g. sum(id), sum(size) over 10⁷ rows: scan 2.4 CPU-s; GROUP BY id % 3·10⁶: 7.2 CPU-s;
# a 10⁷ × 6·10⁶ id join: 4.7 CPU-s; ORDER BY 2 keys of 3·10⁶ rows: 0.42 CPU-s.
COST = {
    "base_s": 0.005,                 # planning + footers + result set-up (wall)
    "scan_row_s": 2.5e-8,            # per row of the kept row groups (small row groups cost per row)
    "decode_s_per_value": 5.0e-8,    # per value (row × column read) of the kept row groups
    "row_s": 8.0e-9,                 # FILTER / PROJECTION / other streaming operator, per row
    "agg_in_s": 1.0e-8,              # ungrouped aggregate, per input row
    "group_in_s": 5.0e-8,            # hash aggregate, per input row
    "group_s": 1.5e-6,               # hash aggregate, per group (hash table growth, cache misses)
    "join_build_s": 4.0e-7,          # hash join, per build-side row
    "join_probe_s": 6.0e-8,          # hash join, per probe-side row
    "join_out_s": 1.2e-8,            # hash join, per output row
    "sort_s": 3.0e-9,                # ORDER BY: per row × log2(rows) × keys^1.5
    "window_s": 1.0e-8,              # window: per row × log2(rows)
    "topn_s": 2.0e-8,                # TOP_N, per input row
    "result_s_per_value": 2.0e-8,    # fetching a result value (row × column) to the client (Arrow)
    "dynamic_filter_fraction": 0.1,  # share of non-filter columns decoded under a TOP_N's dynamic filter
    "parallelism": 1.9,              # CPU seconds (summed operator timings) per wall second, 2 threads
}

_SCAN_FUNCTIONS = ("READ_PARQUET", "PARQUET_SCAN")
_OPS = (">=", "<=", "!=", "<>", "=", ">", "<")
_POSITION_RE = re.compile(r"^(?P<point>.+)_position_[xyz]$")
_HIVE_RE = re.compile(r"^([^=/\\]+)=([^/\\]*)$")


class Calibration:
    """The cost model's scale on this machine now, learnt from the process's own runs: the median ratio
    of measured to modelled seconds over the last ``window`` runs that took at least ``min_seconds``
    (below that, fixed costs dominate). Until ``min_runs`` such runs were seen the factor is 1 (the
    constants in :data:`COST`). Machines differ, and so does one machine shared with other work; the
    engine keeps one per lake (``Lake.state``) and records the factor it used in each manifest."""

    def __init__(self, window: int = 50, min_runs: int = 5, min_seconds: float = 0.05) -> None:
        import collections
        import threading

        self._ratios: collections.deque = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.min_runs, self.min_seconds = min_runs, min_seconds

    def factor(self) -> float:
        with self._lock:
            r = list(self._ratios)
        return float(np.median(r)) if len(r) >= self.min_runs else 1.0

    def observe(self, modelled_seconds: float | None, measured_seconds: float) -> None:
        if modelled_seconds and modelled_seconds > 0 and measured_seconds >= self.min_seconds:
            with self._lock:
                self._ratios.append(float(measured_seconds) / float(modelled_seconds))


def runtime_class(seconds: float) -> str:
    """The runtime class of a duration in seconds: ``"interactive"`` (< 1 s), ``"short"`` (< 1 min),
    ``"batch"`` (< 1 h) or ``"long"``. Raises InvalidArgument for a negative or non-finite number."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        s = float("nan")
    if not math.isfinite(s) or s < 0:
        raise InvalidArgument(f"seconds must be a finite number >= 0, got {seconds!r}",
                              field="seconds", value=repr(seconds)[:100])
    for name, bound in CLASSES:
        if s < bound:
            return name
    return "long"


# ---------------------------------------------------------------------------------------------
# Parquet footers


def _to_key(v: Any) -> Any:
    """A comparable key of a statistics value or literal: float for numbers, times (epoch seconds,
    naive = UTC) and dates; str for strings/bytes; None when not comparable."""
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v.timestamp()
    if isinstance(v, dt.date):
        return float((v - dt.date(1970, 1, 1)).days * 86400)
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return None
    if isinstance(v, str):
        return v
    return None


class Footer:
    """What a Parquet file's footer says, per row group: rows, and per column (parsed on first use)
    the compressed size and min/max keys: ``column(name)`` → ``(size, lo, hi)`` arrays, ``lo``/``hi``
    float64 with NaN, or object with None, where unknown."""

    def __init__(self, path: str) -> None:
        md = pq.read_metadata(path)
        self.metadata = md
        self.path = path
        self.num_row_groups = md.num_row_groups
        self.num_rows = md.num_rows
        self.columns = list(md.schema.names)
        self.rows = np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64)
        self._leaves: dict[str, list[int]] = {}
        if md.num_row_groups:
            rg = md.row_group(0)
            for ci in range(rg.num_columns):
                self._leaves.setdefault(rg.column(ci).path_in_schema.split(".")[0], []).append(ci)
        self._cols: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if name in self._cols:
            return self._cols[name]
        if name not in self._leaves:
            return None
        n = self.num_row_groups
        size = np.zeros(n, dtype=np.int64)
        lo: list = [None] * n
        hi: list = [None] * n
        single = len(self._leaves[name]) == 1
        for r in range(n):
            rg = self.metadata.row_group(r)
            for ci in self._leaves[name]:
                col = rg.column(ci)
                size[r] += col.total_compressed_size
                st = col.statistics if single else None
                if st is not None and st.has_min_max:
                    lo[r], hi[r] = _to_key(st.min), _to_key(st.max)
        vals = [v for v in lo + hi if v is not None]
        if vals and all(isinstance(v, float) for v in vals):
            out = (size, np.array([np.nan if v is None else v for v in lo], dtype=np.float64),
                   np.array([np.nan if v is None else v for v in hi], dtype=np.float64))
        else:
            out = (size, np.array(lo, dtype=object), np.array(hi, dtype=object))
        self._cols[name] = out
        return out


@functools.lru_cache(maxsize=512)
def _footer_cached(path: str, mtime_ns: int, size: int) -> Footer:
    return Footer(path)


def footer(path: str) -> Footer:
    """The parsed footer of a local Parquet file, cached per (path, mtime, size). Raises NotFound."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise NotFound(f"input file {path!r} does not exist or cannot be read ({e.strerror})",
                       file=path) from None
    try:
        return _footer_cached(path, st.st_mtime_ns, st.st_size)
    except (OSError, ValueError) as e:  # pyarrow: not a Parquet file (ArrowInvalid is a ValueError)
        raise InvalidArgument(f"input file {path!r} is not a readable Parquet file: {e}", file=path) from None


def _hive(path: str) -> dict[str, str]:
    """Hive partition values in a file path (``…/cell_type=L5/part.parquet`` → {"cell_type": "L5"})."""
    out = {}
    for part in re.split(r"[/\\]", path)[:-1]:
        m = _HIVE_RE.match(part)
        if m:
            out[m.group(1)] = m.group(2)
    return out


class _Table:
    """One input as seen by the planner: its view name, files, footers and columns."""

    def __init__(self, inp: dict) -> None:
        if not isinstance(inp, dict):
            raise InvalidArgument(f"an input must be a dict with 'name' and 'files', got {type(inp).__name__}",
                                  field="inputs", value=repr(inp)[:200])
        name = inp.get("view") or inp.get("name")
        files = inp.get("files")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"input has no 'name': {inp!r}"[:300], field="inputs.name", value=repr(name))
        if not isinstance(files, (list, tuple)) or not all(isinstance(f, str) for f in files):
            raise InvalidArgument(f"input {name!r}: 'files' must be a list of Parquet file paths, got {files!r}"[:300],
                                  field="inputs.files", value=repr(files)[:200])
        self.name = name
        self.files = list(files)
        local = [f for f in self.files if "://" not in f]  # s3:// files: no footers, no bytes
        self.footers = [footer(f) for f in local]
        self.hive = [_hive(f) for f in local]
        self.partition_columns = sorted(set().union(*[_hive(f) for f in self.files]))
        cols: list[str] = []
        for ft in self.footers[:1]:
            cols = list(ft.columns)
        self.columns = cols + [c for c in self.partition_columns if c not in cols]
        self.row_groups = sum(ft.num_row_groups for ft in self.footers)
        self.rows = sum(ft.num_rows for ft in self.footers)

    def keep(self, terms: list[tuple]) -> list[np.ndarray]:
        """Per footer, a boolean mask of the row groups the conjunction ``terms`` may match."""
        masks = []
        for ft, hv in zip(self.footers, self.hive, strict=True):
            m = np.ones(ft.num_row_groups, dtype=bool)
            for col, op, vals in terms:
                if col in hv:
                    if not _match_value(_literal_key(hv[col]), op, vals):
                        m[:] = False
                    continue
                st = ft.column(col)
                if st is None:
                    continue
                m &= _keep_mask(st[1], st[2], op, vals)
            masks.append(m)
        return masks


def _literal_key(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _match_value(v: Any, op: str, vals: list) -> bool:
    """Whether one known value ``v`` (a hive partition value) satisfies ``v op vals``."""
    try:
        if op == "in":
            return any(v == x or str(v) == str(x) for x in vals)
        x = vals[0]
        if isinstance(v, (int, float)) != isinstance(x, (int, float)):
            v, x = str(v), str(x)
        return {"=": v == x, "!=": v != x, ">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]
    except (TypeError, KeyError):
        return True


def _keep_mask(lo: np.ndarray, hi: np.ndarray, op: str, vals: list) -> np.ndarray:
    """Row groups whose [lo, hi] may hold a value satisfying ``op vals`` (unknown stats: kept)."""
    n = len(lo)
    if op in ("isnull", "notnull"):
        return np.ones(n, dtype=bool)
    if lo.dtype == object:
        out = np.ones(n, dtype=bool)
        for i in range(n):
            a, b = lo[i], hi[i]
            if a is None or b is None:
                continue
            try:
                out[i] = _range_may_match(a, b, op, vals)
            except TypeError:
                pass
        return out
    if not all(isinstance(v, (int, float)) for v in vals):
        return np.ones(n, dtype=bool)
    vals = [float(v) for v in vals]  # monotone rounding: never prunes a row group that may match
    unknown = np.isnan(lo) | np.isnan(hi)
    with np.errstate(invalid="ignore"):
        if op == "in":
            m = np.zeros(n, dtype=bool)
            for v in vals:
                m |= (lo <= v) & (hi >= v)
        else:
            v = vals[0]
            m = {"=": (lo <= v) & (hi >= v), "!=": ~((lo == v) & (hi == v)), ">": hi > v, ">=": hi >= v,
                 "<": lo < v, "<=": lo <= v}[op]
    return m | unknown


def _range_may_match(a: Any, b: Any, op: str, vals: list) -> bool:
    if op == "in":
        return any(a <= v <= b for v in vals)
    v = vals[0]
    return {"=": a <= v <= b, "!=": not (a == v == b), ">": b > v, ">=": b >= v, "<": a < v, "<=": a <= v}[op]


# ---------------------------------------------------------------------------------------------
# Filters in DuckDB's plan


def _split_and(text: str) -> list[str]:
    """Split ``a AND b AND c`` at the top level (outside quotes and parentheses)."""
    parts, depth, quote, cur, i = [], 0, False, [], 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if not quote and depth == 0 and text.startswith(" AND ", i):
            parts.append("".join(cur))
            cur, i = [], i + 5
            continue
        cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_literal(text: str) -> Any:
    """A DuckDB plan literal (``5``, ``1.5``, ``'abc'``, ``'2024-01-01'::DATE``) → comparable key."""
    text = text.strip()
    cast = None
    m = re.match(r"^(.*)::([A-Z][A-Z_ ]*(?:\(\d+(?:,\s*\d+)?\))?)$", text, re.S)
    if m:
        text, cast = m.group(1).strip(), m.group(2)
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        s = text[1:-1].replace("''", "'")
        if cast and (cast.startswith("TIMESTAMP") or cast == "DATE"):
            from neurolake.base.time import parse_timestamp
            from neurolake.errors import InvalidArgument as _Bad

            try:  # a DATE literal is its midnight UTC, the key a date statistic gets in _to_key
                return _to_key(parse_timestamp(s))
            except _Bad:
                return None
        return s
    if re.match(r"^-?\d+$", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None


def _split_list(text: str) -> list[str]:
    out, quote, cur = [], False, []
    for ch in text:
        if ch == "'":
            quote = not quote
        if ch == "," and not quote:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [o.strip() for o in out if o.strip()]


def parse_filter(term: str, columns: list[str]) -> tuple[str, str, list] | None:
    """One conjunct of a scan's filter → ``(column, op, [values])`` with op one of
    ``= != < <= > >= in isnull notnull``; None when it is not a simple comparison on a known column.
    Column names are matched against ``columns`` (DuckDB prints them unquoted, spaces included)."""
    t = term.strip()
    if t.startswith("optional: "):
        t = t[len("optional: "):].strip()
    while t.startswith("(") and t.endswith(")"):
        t = t[1:-1].strip()
    # CAST(col AS UBIGINT) = 5: the views cast id columns; a widening cast keeps the order
    m = re.match(r'^CAST\((.+?) AS [A-Z][A-Z0-9_ ]*\)\s*(.*)$', t, re.S)
    if m and m.group(1).strip('"') in columns:
        t = f"{m.group(1)}{m.group(2) if m.group(2)[:1] in ('=', '<', '>', '!') else ' ' + m.group(2)}"
    for col in sorted(columns, key=len, reverse=True):
        for quoted in (f'"{col}"', col):
            if not t.startswith(quoted):
                continue
            rest = t[len(quoted):].strip()
            if rest.upper() == "IS NULL":
                return col, "isnull", []
            if rest.upper() == "IS NOT NULL":
                return col, "notnull", []
            m = re.match(r"^IN\s*\((.*)\)$", rest, re.S)
            if m:
                vals = [_parse_literal(v) for v in _split_list(m.group(1))]
                return (col, "in", vals) if vals and all(v is not None for v in vals) else None
            for op in _OPS:
                if rest.startswith(op):
                    val = _parse_literal(rest[len(op):])
                    if val is None:
                        return None
                    return col, "!=" if op == "<>" else op, [val]
    return None


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    return [str(x) for x in v]


# ---------------------------------------------------------------------------------------------
# The plan


def _plan(con: Any, sql: str, duckdb_text: bool, params: Any = None) -> tuple[list[dict], str]:
    """The JSON plan and a text plan: DuckDB's box drawing when ``duckdb_text`` (a second EXPLAIN,
    which re-reads the Parquet footers), else an indented rendering of the JSON tree."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgument("sql must be a non-empty SQL string", field="sql", value=repr(sql)[:200])
    import duckdb

    try:
        rows = con.execute("EXPLAIN (FORMAT json) " + sql, params).fetchall()
        text_rows = con.execute("EXPLAIN " + sql, params).fetchall() if duckdb_text else None
    except duckdb.Error as e:
        raise InvalidArgument(f"DuckDB cannot plan this SQL: {e}", field="sql", value=sql[:500]) from None
    plan = json.loads(rows[0][1])
    if text_rows is not None:
        return plan, "\n".join(r[1] for r in text_rows)
    lines: list[str] = []
    for root in plan:
        nodes: list = []
        _walk(root, nodes)
        for node, depth in nodes:
            info = node.get("extra_info") or {}
            card = info.get("Estimated Cardinality")
            detail = _short(info, "")
            lines.append("  " * depth + node.get("name", "?").strip() + (f" ~{card} rows" if card else "")
                         + (f" ({detail})" if detail else ""))
    return plan, "\n".join(lines)


def _card(node: dict) -> int | None:
    v = (node.get("extra_info") or {}).get("Estimated Cardinality")
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _walk(node: dict, out: list, depth: int = 0) -> None:
    out.append((node, depth))
    for c in node.get("children", []):
        _walk(c, out, depth + 1)


def _referenced_names(sql: str) -> set[str]:
    import duckdb

    try:
        names = duckdb.get_table_names(sql, qualified=True)
    except Exception:  # noqa: BLE001 - a parse failure only loses the hint
        return set()
    out = set()
    for n in names:
        n = re.sub(r"\s+AS\s+.*$", "", n, flags=re.I | re.S).replace('"', "")  # "syn AS a" → syn
        out.add(n)
        out.add(n.split(".")[-1])
    return out


def _match_scans(plan: list[dict], tables: list[_Table], sql: str) -> list[tuple[dict, _Table | None]]:
    """Each Parquet scan node of the plan with the input it reads (by columns, referenced names, order)."""
    scans = []
    for root in plan:
        nodes: list = []
        _walk(root, nodes)
        for node, _ in nodes:
            info = node.get("extra_info") or {}
            fn = str(info.get("Function", node.get("name", ""))).strip().upper()
            if fn in _SCAN_FUNCTIONS or node.get("name", "").strip().upper() in _SCAN_FUNCTIONS:
                scans.append(node)
    referenced = _referenced_names(sql)
    preferred = [t for t in tables if t.name in referenced or t.name.split(".")[-1] in referenced] or tables
    used: dict[str, int] = {}
    out = []
    for node in scans:
        info = node.get("extra_info") or {}
        proj = set(_as_list(info.get("Projections")))
        cands = [t for t in preferred if proj <= set(t.columns)] or [t for t in tables if proj <= set(t.columns)]
        if len(cands) > 1:
            # several inputs share these columns: prefer one whose row count matches the scan's
            # estimate when it has no filter, else the least used so far (self-joins use one twice)
            if not info.get("Filters") and _card(node):
                exact = [t for t in cands if t.rows == _card(node)]
                cands = exact or cands
            cands.sort(key=lambda t: used.get(t.name, 0))
        t = cands[0] if cands else None
        if t is not None:
            used[t.name] = used.get(t.name, 0) + 1
        out.append((node, t))
    return out


def _scan_info(node: dict, table: _Table | None) -> dict:
    """A scan's table, columns, filters, row groups (all / kept) and bytes to read."""
    info = node.get("extra_info") or {}
    proj = _as_list(info.get("Projections"))
    filters = _as_list(info.get("Filters"))
    file_filters = _as_list(info.get("File Filters"))
    cols = table.columns if table is not None else proj
    terms, per_col = [], {}
    for f in filters + file_filters:
        for part in _split_and(f):
            p = parse_filter(part, cols)
            if p is None:
                continue
            terms.append(p)
            per_col.setdefault(p[0], []).append(part[len("optional: "):] if part.startswith("optional: ") else part)
    read_cols = list(dict.fromkeys(proj + list(per_col)))
    out = {"table": table.name if table else str(info.get("Function", "?")).strip(), "columns": read_cols,
           "filters": filters + file_filters, "row_groups": 0, "row_groups_kept": 0, "bytes": 0,
           "rows_kept": 0, "estimated_rows": _card(node) or 0, "_masks": [], "_terms": terms, "_per_col": per_col,
           "_table": table}
    if table is None:
        return out
    masks = table.keep(terms)
    out["_masks"] = masks
    for ft, m in zip(table.footers, masks, strict=True):
        out["row_groups"] += ft.num_row_groups
        out["row_groups_kept"] += int(m.sum())
        out["rows_kept"] += int(ft.rows[m].sum())
        for c in read_cols:
            st = ft.column(c)
            if st is not None:
                out["bytes"] += int(st[0][m].sum())
    return out


def _public_scan(s: dict) -> dict:
    return {k: v for k, v in s.items() if not k.startswith("_")}


SAMPLE_ROW_GROUPS = 16  # row groups read per scan to estimate filter selectivity, join sizes, groups


def _primitive(arr: Any, dtype: Any) -> np.ndarray:
    """A fixed-width pyarrow Array's values as float64 (NaN for nulls), read from its buffers (pyarrow's
    to_numpy imports pandas, which costs more than the whole estimate)."""
    bufs = arr.buffers()
    n, off = len(arr), arr.offset
    vals = np.frombuffer(bufs[1], dtype=dtype, count=n + off)[off:].astype(np.float64)
    if arr.null_count and bufs[0] is not None:
        valid = np.unpackbits(np.frombuffer(bufs[0], np.uint8), bitorder="little")[off:off + n].astype(bool)
        vals[~valid] = np.nan
    return vals


def _sample_values(col: Any) -> np.ndarray:
    """A pyarrow column → numpy array of comparable keys: float64 (NaN = null; timestamps and dates as
    epoch seconds), int64 for integers without nulls (root ids exceed float precision), objects for
    the rest (strings)."""
    import pyarrow as pa

    t = col.type
    chunks = col.chunks if hasattr(col, "chunks") else [col]
    if not chunks:
        return np.zeros(0)
    if pa.types.is_integer(t) and t.bit_width == 64 and col.null_count == 0:
        dt_ = np.uint64 if pa.types.is_unsigned_integer(t) else np.int64
        parts = [np.frombuffer(c.buffers()[1], dtype=dt_, count=len(c) + c.offset)[c.offset:] for c in chunks]
        out = np.concatenate(parts)
        return out.astype(np.int64) if dt_ is np.int64 or (out < 2**63).all() else out.astype(np.float64)
    if pa.types.is_timestamp(t):
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
        return np.concatenate([_primitive(c, np.int64) for c in chunks]) / scale
    if pa.types.is_date32(t):
        return np.concatenate([_primitive(c, np.int32) for c in chunks]) * 86400.0
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and t.bit_width in (8, 16, 32, 64):
        kind = "f" if pa.types.is_floating(t) else ("u" if pa.types.is_unsigned_integer(t) else "i")
        dtype = np.dtype(f"{kind}{t.bit_width // 8}")
        return np.concatenate([_primitive(c, dtype) for c in chunks])
    return np.asarray(col.to_pylist(), dtype=object)


def _term_mask(v: np.ndarray, op: str, vals: list) -> np.ndarray:
    try:
        if op == "isnull":
            if v.dtype.kind == "f":  # nulls were read as NaN (e.g. the views' "deleted IS NULL")
                return np.isnan(v)
            if v.dtype.kind in "iub":
                return np.zeros(len(v), dtype=bool)
            return np.array([x is None or (isinstance(x, float) and np.isnan(x)) for x in v], dtype=bool)
        if op == "notnull":
            return ~_term_mask(v, "isnull", vals)
        if op == "in":
            m = np.zeros(len(v), dtype=bool)
            for x in vals:
                m |= v == x
            return m
        x = vals[0]
        with np.errstate(invalid="ignore"):
            return np.asarray({"=": v == x, "!=": v != x, ">": v > x, ">=": v >= x, "<": v < x,
                               "<=": v <= x}[op], dtype=bool)
    except TypeError:
        return np.ones(len(v), dtype=bool)


@functools.lru_cache(maxsize=256)
def _read_sample(path: str, mtime_ns: int, row_groups: tuple, columns: tuple) -> Any:
    return pq.ParquetFile(path, metadata=footer(path).metadata).read_row_groups(list(row_groups),
                                                                               columns=list(columns))


def _sample_scan(s: dict, need_keys: bool = True) -> None:
    """Read up to SAMPLE_ROW_GROUPS evenly spaced kept row groups of a scan's columns, apply its simple
    filters, and set ``_sample`` (column → values of the passing rows), ``_sample_rows`` (rows read)
    and ``est_rows`` (rows_kept × passing fraction)."""
    table: _Table | None = s["_table"]
    s["_sample"], s["_sample_rows"] = {}, 0
    if table is None or not table.footers or s["rows_kept"] == 0:
        return
    picks = [(fi, int(r)) for fi, m in enumerate(s["_masks"]) for r in np.flatnonzero(m)]
    if not picks:
        return
    idx = np.unique(np.linspace(0, len(picks) - 1, min(SAMPLE_ROW_GROUPS, len(picks))).round().astype(int))
    by_file: dict[int, list[int]] = {}
    for i in idx:
        fi, r = picks[i]
        by_file.setdefault(fi, []).append(r)
    # filter columns always (selectivity); the others only when a join, group-by or DISTINCT may use them
    cols = [c for c in s["columns"] if c in table.footers[0].columns and (need_keys or c in s["_per_col"])]
    if not cols:
        return
    parts: dict[str, list] = {c: [] for c in cols}
    n = 0
    for fi, rgs in by_file.items():
        path = table.footers[fi].path
        tab = _read_sample(path, os.stat(path).st_mtime_ns, tuple(rgs), tuple(cols))
        n += tab.num_rows
        for c in cols:
            parts[c].append(_sample_values(tab.column(c)))
    vals = {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}
    keep = np.ones(n, dtype=bool)
    for col, op, v in s["_terms"]:
        if col in vals:
            keep &= _term_mask(vals[col], op, v)
    s["_sample"] = {c: v[keep] for c, v in vals.items()}
    s["_sample_rows"] = n
    s["est_rows"] = int(round(s["rows_kept"] * keep.sum() / n)) if n else s["rows_kept"]


def _ndv(sample: np.ndarray, total: float) -> float:
    """Distinct values in ``total`` rows from a uniform sample: the larger of Haas & Stokes' Duj1 and
    Chao1 (Duj1 underestimates many rare keys, e.g. (pre, post) pairs; Chao1 catches them)."""
    n = len(sample)
    if n == 0 or total <= 0:
        return 0.0
    try:
        _, counts = np.unique(sample, return_counts=True)
    except TypeError:
        counts = np.array(list({repr(x): 0 for x in sample}.values())) + 1
    d, f1, f2 = len(counts), int((counts == 1).sum()), int((counts == 2).sum())
    if n >= total:
        return float(d)
    duj1 = n * d / max(n - f1 + f1 * n / total, 1e-9)
    chao1 = d + f1 * (f1 - 1) / (2 * (f2 + 1))  # bias-corrected Chao1: heavy tails of rare keys
    return float(min(total, max(duj1, chao1)))


def _combine(vals: list[np.ndarray]) -> np.ndarray:
    """One key per row from several key columns (a 64-bit mix for numbers, tuples' hashes otherwise)."""
    if len(vals) == 1:
        return vals[0]
    if all(v.dtype != object for v in vals):
        h = np.zeros(len(vals[0]), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for v in vals:
                bits = np.ascontiguousarray(v.astype(np.float64) if v.dtype.kind == "f" else v.astype(np.int64))
                h = h * np.uint64(0x9E3779B97F4A7C15) + bits.view(np.uint64)
        return h
    return np.array([hash(t) for t in zip(*[v.tolist() for v in vals], strict=True)], dtype=np.int64)


def _join_size(a: np.ndarray, na: float, b: np.ndarray, nb: float) -> float | None:
    """|A ⋈ B| on equal keys from samples ``a`` (of ``na`` rows) and ``b`` (of ``nb`` rows)."""
    if len(a) == 0 or len(b) == 0:
        return None
    try:
        ka, ca = np.unique(a, return_counts=True)
        kb, cb = np.unique(b, return_counts=True)
    except TypeError:
        return None
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    hits = float((ca[ia].astype(np.float64) * cb[ib]).sum())
    return hits * (na / len(a)) * (nb / len(b))


def _ref(expr: str, child_cols: list) -> Any:
    """What one projection/group expression passes through from its child: a column name or None."""
    e = expr.strip()
    m = re.match(r"^(?:__internal_(?:de)?compress_\w+\()?#(\d+)", e)
    if m:
        i = int(m.group(1))
        return child_cols[i] if i < len(child_cols) else None
    if e in child_cols:
        return e
    return None


def _cost(plan: list[dict], scans: list[dict]) -> tuple[float, list[dict]]:
    """Predicted seconds of a plan. Rows per operator: DuckDB's estimates, corrected where the data
    says better — scans by row-group pruning and a sample's filter selectivity, equi-joins by a sample
    of both keys, group-bys by a sample's distinct count (Duj1); other operators scale DuckDB's estimate
    by how much their inputs were corrected. Cost = BASE + CPU seconds / PARALLELISM, CPU seconds from
    per-row operator rates (COST)."""
    c = COST
    scan_by_id = {id(s["_node"]): s for s in scans}
    cpu = 0.0
    ops = []

    def rec(node: dict) -> tuple[float, float, list, dict]:
        """→ (rows, duckdb rows, output columns, {column: (sample values, rows they stand for)})."""
        nonlocal cpu
        kids = [rec(ch) for ch in node.get("children", [])]
        name = node.get("name", "").strip().upper()
        info = node.get("extra_info") or {}
        card = _card(node)
        n_in = sum(k[0] for k in kids)
        duck_in = sum(k[1] for k in kids)
        ratio = (n_in / duck_in) if duck_in > 0 else 1.0
        cols: list = kids[0][2] if kids else []
        samp: dict = kids[0][3] if kids else {}
        if id(node) in scan_by_id:
            s = scan_by_id[id(node)]
            rows = float(s.get("est_rows", min(card or s["rows_kept"], s["rows_kept"])))
            duck = float(card if card is not None else rows)
            cols = _as_list(info.get("Projections"))
            samp = {k: (v, rows) for k, v in s.get("_sample", {}).items()}
            # filter columns are decoded for every kept row; the others only for vectors (2048 rows)
            # in which some row passed the filters
            nf = len(s["_per_col"])
            other = max(len(s["columns"]) - nf, 0)
            sel = rows / s["rows_kept"] if s["rows_kept"] else 1.0
            frac = min(1.0, sel * 2048) if nf else 1.0
            if any("Dynamic Filter" in f for f in s["filters"]):
                frac = min(frac, c["dynamic_filter_fraction"])
            cost = s["rows_kept"] * (c["scan_row_s"] + (nf + other * frac) * c["decode_s_per_value"])
        elif "JOIN" in name or name == "CROSS_PRODUCT":
            probe, build = (kids[0][0] if kids else 0.0), (kids[1][0] if len(kids) > 1 else 0.0)
            duck = float(card if card is not None else max(probe, build))
            rows = duck * ratio
            conds = _as_list(info.get("Conditions"))
            if len(kids) == 2 and conds:
                m = re.match(r"^(.+?)\s*=\s*(.+)$", conds[0])
                if m:
                    left, right = m.group(1).strip(), m.group(2).strip()
                    a, b = kids[0][3].get(left), kids[1][3].get(right)
                    if a is None or b is None:
                        a, b = kids[0][3].get(right), kids[1][3].get(left)
                    if a is not None and b is not None:
                        est = _join_size(a[0], a[1], b[0], b[1])
                        if est is not None:
                            rows = est
            cols = kids[0][2] + (kids[1][2] if len(kids) > 1 else [])
            samp = {}
            cost = build * c["join_build_s"] + probe * c["join_probe_s"] + rows * c["join_out_s"]
        elif "GROUP_BY" in name:
            duck = float(card if card is not None else n_in)
            groups = [_ref(g, cols) for g in _as_list(info.get("Groups"))]
            gcols = [g for g in groups if g is not None]
            # keys that are expressions (floor(x / 1000) …): DuckDB's estimate is near the input
            # rows; binned keys have far fewer groups, so take its 3/4 power
            rows = min(duck * ratio, n_in) ** 0.75
            if groups and len(gcols) == len(groups) and all(g in samp for g in gcols):
                vals = [samp[g][0] for g in gcols]
                key = _combine(vals)
                rows = min(_ndv(key, samp[gcols[0]][1]), n_in)
            cols = gcols + _as_list(info.get("Aggregates"))
            samp = {}
            cost = n_in * c["group_in_s"] + rows * c["group_s"]
        elif name.endswith("AGGREGATE"):
            aggs = _as_list(info.get("Aggregates"))
            cost = n_in * c["agg_in_s"]
            for a in aggs:  # count(DISTINCT #0): a hash table of the distinct values
                m = re.search(r"DISTINCT\s+(#\d+|\w+)", a)
                if m:
                    ref = _ref(m.group(1), cols)
                    ndv = _ndv(samp[ref][0], samp[ref][1]) if ref in samp else n_in ** 0.75
                    cost += n_in * c["group_in_s"] + min(ndv, n_in) * c["group_s"]
            rows = duck = 1.0
            cols, samp = aggs, {}
        elif name == "ORDER_BY":
            rows, duck = n_in, duck_in
            width = len(_as_list(info.get("Order By"))) or len(cols) or 1
            nn = max(n_in, 1.0)
            cost = c["sort_s"] * nn * math.log2(nn + 1) * width ** 1.5
        elif name in ("WINDOW", "STREAMING_WINDOW"):
            rows, duck = n_in, duck_in
            nn = max(n_in, 1.0)
            cost = c["window_s"] * nn * math.log2(nn + 1)
        elif name == "TOP_N":
            try:
                top = float(info.get("Top", n_in))
            except (TypeError, ValueError):
                top = n_in
            rows, duck = min(top, n_in), min(top, duck_in)
            cost = n_in * c["topn_s"]
        else:
            duck = float(card if card is not None else duck_in)
            rows = min(duck * ratio, n_in) if kids else duck
            if name == "PROJECTION":
                proj = _as_list(info.get("Projections"))
                refs = [_ref(p, cols) for p in proj]
                samp = {r: samp[r] for r in refs if r is not None and r in samp}
                cols = [r if r is not None else p for r, p in zip(refs, proj, strict=True)]
            elif name == "FILTER":
                samp = {}
            cost = max(n_in, rows) * c["row_s"]
        cpu += cost
        ops.append({"operator": name, "estimated_rows": card, "rows": int(rows), "predicted_seconds": cost})
        return rows, duck, cols, samp

    top, width = 0.0, 1
    for root in plan:
        r = rec(root)
        top += r[0]
        width = max(width, len(r[2]))
    cpu += top * width * c["result_s_per_value"]
    return c["base_s"] + cpu / c["parallelism"], ops


def _analyze(con: Any, sql: str, inputs: list[dict], duckdb_text: bool = False, params: Any = None) -> dict:
    if not isinstance(inputs, (list, tuple)):
        raise InvalidArgument(f"inputs must be a list of input dicts, got {type(inputs).__name__}",
                              field="inputs", value=repr(inputs)[:200])
    tables = [_Table(i) for i in inputs]
    plan, text = _plan(con, sql, duckdb_text, params)
    for t in tables:
        if not t.columns:  # no local footer (s3:// files): the view's own columns
            try:
                quoted = ".".join('"' + p.replace('"', '""') + '"' for p in t.name.split("."))
                t.columns = [d[0] for d in con.execute(f"SELECT * FROM {quoted} LIMIT 0").description]
            except Exception:  # noqa: BLE001 - an unmatched input only loses its scan statistics
                pass
    need_keys = any(w in json.dumps(plan) for w in ('"Conditions"', '"Groups"', "DISTINCT"))
    scans = []
    for node, table in _match_scans(plan, tables, sql):
        s = _scan_info(node, table)
        s["_node"] = node
        _sample_scan(s, need_keys)
        scans.append(s)
    seconds, ops = _cost(plan, scans)
    est_rows = int(ops[-1]["rows"]) if ops else 0  # post-order: the last is the top operator
    return {"plan": plan, "plan_text": text, "scans": scans, "predicted_seconds": seconds,
            "operators": ops, "estimated_rows": est_rows}


def estimate(con: Any, sql: str, inputs: list[dict], *, layout: bool = False, params: Any = None) -> dict:
    """Before running ``sql`` on ``con``: its plan and what it will cost (``layout=True``: with the
    :func:`layout_report` as ``"layout"``, from the same planning pass, for :func:`bottleneck_hint`).

    ``inputs``: the input dicts of the tables the SQL reads (``name`` = the view's SQL name, or
    ``view`` when given; ``files`` = the view's Parquet files). Returns::

        {"plan": EXPLAIN (FORMAT json) tree (list of operator dicts), "plan_text": the tree as indented
         text (explain() gives DuckDB's own text plan instead),
         "estimated_rows": result rows: the top operator's, from DuckDB's Estimated Cardinality
                           corrected by pruning and a sample (see ``operators``),
         "estimated_bytes": compressed bytes the scans read (int),
         "scans": [{"table", "columns" (read: projected + filtered), "filters" (DuckDB's text),
                    "row_groups", "row_groups_kept" (after min/max pruning), "bytes", "rows_kept",
                    "estimated_rows"}],
         "operators": [{"operator", "estimated_rows" (DuckDB's, None where it gives none),
                        "rows" (corrected), "predicted_seconds"}] (post-order: the top one last),
         "predicted_seconds": float, "runtime_class": "interactive"|"short"|"batch"|"long"}

    Row groups are pruned with the scan's pushed-down simple filters (``col op constant``, ranges
    from BETWEEN, ``IN`` lists, hive ``File Filters``) against each row group's Parquet min/max; other
    filters (OR, functions of columns) keep every row group, as DuckDB does. Raises InvalidArgument
    when DuckDB cannot plan the SQL or an input is malformed, NotFound when an input file is missing.
    """
    a = _analyze(con, sql, inputs, params=params)
    scans = [_public_scan(s) for s in a["scans"]]
    out = {"plan": a["plan"], "plan_text": a["plan_text"], "estimated_rows": a["estimated_rows"],
           "estimated_bytes": int(sum(s["bytes"] for s in scans)), "scans": scans,
           "operators": a["operators"], "predicted_seconds": round(a["predicted_seconds"], 6),
           "runtime_class": runtime_class(a["predicted_seconds"])}
    if layout:
        out["layout"] = _layout(a["scans"])
    return out


# ---------------------------------------------------------------------------------------------
# Layout report


def _sortedness(table: _Table, col: str) -> tuple[bool, float]:
    """Whether ``col``'s row-group ranges are narrow (a sorted / clustered layout) and the median
    width of a row group's range relative to the column's whole range (0 = point, 1 = everything)."""
    los, his = [], []
    for ft in table.footers:
        st = ft.column(col)
        if st is not None:
            los.append(st[1])
            his.append(st[2])
    if not los:
        return False, 1.0
    lo, hi = np.concatenate(los), np.concatenate(his)
    if lo.dtype != object:
        ok = ~(np.isnan(lo) | np.isnan(hi))
        if ok.sum() < 2:
            return False, 1.0
        span = float(hi[ok].max() - lo[ok].min())
        if span <= 0:
            return True, 0.0
        rel = float(np.median((hi[ok] - lo[ok]) / span))
        return rel <= 0.5, rel
    # strings: sorted when consecutive row groups barely overlap
    pairs = [(a, b) for a, b in zip(lo, hi, strict=True) if a is not None and b is not None]
    if len(pairs) < 2:
        return False, 1.0
    ordered = sum(1 for (_, b0), (a1, _) in zip(pairs, pairs[1:], strict=False) if a1 >= b0)
    distinct = sum(1 for a, b in pairs if a == b)
    frac = max(ordered, distinct) / (len(pairs) - 1)
    return frac >= 0.8, 1.0 - frac


def _advice(table: _Table, col: str, terms: list[tuple], served: str, n: int, k: int) -> str:
    if served == "partition":
        return f"served: the files are partitioned by {col}; the filter skips {k} of {n} row groups"
    if served == "sort":
        return (f"served: {col} is sorted/clustered (narrow row-group min/max ranges); the filter skips "
                f"{k} of {n} row groups")
    m = _POSITION_RE.match(col)
    if m:
        p = m.group("point")
        return f"sort by {p} (Morton order on the position columns, as annotation tables are written)"
    equality = all(op in ("=", "in") for _, op, _ in terms)
    strings = any(isinstance(v, str) for _, _, vals in terms for v in vals)
    if equality and strings:
        return f"partition by {col} (one folder per value; hive partitioning prunes whole files)"
    return f"sort by {col} (or cluster rows by it) so row-group min/max ranges become narrow"


def _layout(scans: list[dict]) -> list[dict]:
    out = []
    for s in scans:
        table: _Table | None = s["_table"]
        if table is None or not table.footers:  # no local footers (s3://): nothing measured
            continue
        by_col: dict[str, list[tuple]] = {}
        for term in s["_terms"]:
            if term[1] not in ("isnull", "notnull"):  # e.g. the views' "deleted IS NULL"
                by_col.setdefault(term[0], []).append(term)
        for col, terms in by_col.items():
            masks = table.keep(terms)
            n = sum(len(m) for m in masks)
            k = n - int(sum(int(m.sum()) for m in masks))
            if col in table.partition_columns:
                served = "partition"
            else:
                narrow, _ = _sortedness(table, col)
                served = "sort" if narrow else ("statistics" if k > 0 else "none")
            advice = _advice(table, col, terms, served, n, k)
            if n <= 1:  # nothing to prune: a layout cannot help (or hurt) a one-row-group table
                served = "statistics"
                advice = "the table is a single row group: nothing to prune, its layout does not matter yet"
            out.append({"table": table.name, "column": col, "predicate": " AND ".join(s["_per_col"][col]),
                        "served_by": served, "row_groups": n, "pruned": k, "advice": advice})
    return out


def layout_report(con: Any, sql: str, inputs: list[dict]) -> list[dict]:
    """Per filter column of each Parquet scan in ``sql``'s plan: does the table's layout serve it?

    Returns ``[{"table", "column", "predicate" (DuckDB's pushed-down text), "served_by": "sort" |
    "partition" | "statistics" | "none", "row_groups": n, "pruned": k (row groups this column's
    filter alone excludes by min/max or partition value), "advice": str}]``. ``sort``: the column's
    row-group ranges are narrow (median range ≤ 50 % of the column's span: the file is sorted or
    clustered on it, e.g. Morton order on positions), so statistics prune well; ``partition``: a hive
    folder column; ``statistics``: not sorted, but min/max still prunes some row groups; ``none``: no
    row group pruned. Filters DuckDB cannot push into the scan (OR, functions) and ``IS [NOT] NULL``
    (e.g. the views' ``deleted IS NULL``) are not listed, nor tables whose files are not local (``s3://``).
    Errors as :func:`estimate`.
    """
    return _layout(_analyze(con, sql, inputs)["scans"])


def explain(con: Any, sql: str, inputs: list[dict]) -> dict:
    """:func:`estimate` plus ``"layout"``: the :func:`layout_report` (one planning pass)."""
    a = _analyze(con, sql, inputs, duckdb_text=True)
    scans = [_public_scan(s) for s in a["scans"]]
    return {"plan": a["plan"], "plan_text": a["plan_text"], "estimated_rows": a["estimated_rows"],
            "estimated_bytes": int(sum(s["bytes"] for s in scans)), "scans": scans,
            "operators": a["operators"], "predicted_seconds": round(a["predicted_seconds"], 6),
            "runtime_class": runtime_class(a["predicted_seconds"]), "layout": _layout(a["scans"])}


# ---------------------------------------------------------------------------------------------
# Profiles


def _num(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _short(info: dict, name: str) -> str:
    keys = ("Table", "Filters", "File Filters", "Join Type", "Conditions", "Groups", "Aggregates",
            "Order By", "Function")
    parts = []
    for k in keys:
        if k in info and info[k] not in ("", [], None):
            v = info[k]
            v = ", ".join(v) if isinstance(v, list) else str(v)
            parts.append(f"{k}: {v}")
    s = "; ".join(parts)
    return s if len(s) <= 160 else s[:157] + "…"


def _scan_table(info: dict, scans: list[dict] | None) -> str | None:
    if info.get("Table"):
        return str(info["Table"])
    proj = set(_as_list(info.get("Projections")))
    filters = _as_list(info.get("Filters")) + _as_list(info.get("File Filters"))
    for s in scans or []:
        if set(s.get("filters", [])) == set(filters) and proj <= set(s.get("columns", [])):
            return s["table"]
    for s in scans or []:
        if proj and proj <= set(s.get("columns", [])):
            return s["table"]
    fn = info.get("Function")
    return str(fn).strip() if fn else None


def normalize_profile(raw: dict, scans: list[dict] | None = None) -> dict:
    """DuckDB's JSON query profile → one shape, for DuckDB 1.x and 2.x.

    ``raw``: the parsed file written with ``SET enable_profiling='json'; SET profiling_output=…``.
    DuckDB 1.x (e.g. 1.4.4) puts flat metrics on the root (``latency``, ``cpu_time``,
    ``rows_returned``, ``total_bytes_read``, ``system_peak_buffer_memory``,
    ``cumulative_rows_scanned``) and on each node of ``children`` (``operator_type``,
    ``operator_timing``, ``operator_cardinality``, ``operator_rows_scanned``, ``extra_info``).
    DuckDB 2.x groups the root's metrics by section — ``query`` (``total_time``, ``cpu_time``,
    ``total_rows_scanned``, ``sql`` …), ``system`` (``peak_buffer_memory`` …), ``io``
    (``total_bytes_read`` …) — and gives the operator tree as ``operator: [ {type, timing,
    intermediate_rows, rows_scanned, extra_info, children} ]`` (rows returned = the top operator's
    ``intermediate_rows``). The 2.x layout follows DuckDB's source on main (Aug 2026):
    ``src/common/metrics.json`` (metric groups and names), ``src/main/query_profiler.cpp``
    (``ToResultTree``, ``OperatorMetrics::GetMetrics``, and ``ToLegacyResultTree`` mapping the new
    names back to the 1.x ones, e.g. ``query.total_time`` → ``latency``) and
    ``src/main/profiler/gathered_metrics.cpp`` (dotted names become nested objects).

    ``scans``: optionally :func:`estimate`'s ``scans``, to name the table of each scan operator
    (Parquet scans in a profile only say READ_PARQUET).

    Returns ``{"total_s", "cpu_s", "rows_returned", "rows_scanned", "bytes_read",
    "peak_memory_bytes", "operators": top 5 by time [{"operator", "seconds", "share" (of all
    operators' time, 0..1), "rows", "table" (scans: the view or table name, else None), "extra"}],
    "duckdb_layout": "1.x" | "2.x"}``. Raises InvalidArgument when ``raw`` is neither layout.
    """
    if not isinstance(raw, dict):
        raise InvalidArgument(f"profile must be a dict (DuckDB's JSON profile), got {type(raw).__name__}",
                              field="profile", value=repr(raw)[:200])
    if isinstance(raw.get("query"), dict) or isinstance(raw.get("operator"), list):
        layout = "2.x"
        q, sysm, io = raw.get("query") or {}, raw.get("system") or {}, raw.get("io") or {}
        tree = raw.get("operator") or []
        total = _num(q.get("total_time"))
        cpu = _num(q.get("cpu_time"))
        scanned = int(_num(q.get("total_rows_scanned")))
        read = int(_num(io.get("total_bytes_read")))
        peak = int(_num(sysm.get("peak_buffer_memory")))
        returned = int(_num(tree[0].get("intermediate_rows"))) if tree and isinstance(tree[0], dict) else 0
        keys = ("type", "timing", "intermediate_rows", "rows_scanned")
    elif "latency" in raw or "children" in raw:
        layout = "1.x"
        tree = raw.get("children") or []
        total = _num(raw.get("latency"))
        cpu = _num(raw.get("cpu_time"))
        scanned = int(_num(raw.get("cumulative_rows_scanned")))
        read = int(_num(raw.get("total_bytes_read")))
        peak = int(_num(raw.get("system_peak_buffer_memory")))
        returned = int(_num(raw.get("rows_returned")))
        keys = ("operator_type", "operator_timing", "operator_cardinality", "operator_rows_scanned")
    else:
        raise InvalidArgument("profile is neither DuckDB 1.x (latency, children) nor 2.x (query, operator) "
                              f"JSON; keys: {sorted(raw)[:20]}", field="profile", value=sorted(raw)[:20])
    ops: list[dict] = []

    def rec(node: Any) -> None:
        if not isinstance(node, dict):
            return
        name = str(node.get(keys[0]) or node.get("operator_name") or "?").strip()
        info = node.get("extra_info") or {}
        if not isinstance(info, dict):
            info = {}
        is_scan = "SCAN" in name.upper() or str(info.get("Function", "")).strip().upper() in _SCAN_FUNCTIONS
        ops.append({"operator": name, "seconds": _num(node.get(keys[1])),
                    "rows": int(_num(node.get(keys[2]))), "rows_scanned": int(_num(node.get(keys[3]))),
                    "table": _scan_table(info, scans) if is_scan else None, "extra": _short(info, name)})
        for ch in node.get("children") or []:
            rec(ch)

    for n in tree:
        rec(n)
    busy = sum(o["seconds"] for o in ops)
    for o in ops:
        o["share"] = round(o["seconds"] / busy, 4) if busy > 0 else 0.0
    top = sorted(ops, key=lambda o: -o["seconds"])[:5]
    return {"total_s": total, "cpu_s": cpu, "rows_returned": returned, "rows_scanned": scanned,
            "bytes_read": read, "peak_memory_bytes": peak,
            "operators": [{k: o[k] for k in ("operator", "seconds", "share", "rows", "table", "extra")}
                          for o in top],
            "duckdb_layout": layout}


QUICK_S = 0.05  # below this a bottleneck hint is noise: nothing a user would tune


def bottleneck_hint(profile: dict, layout: list[dict]) -> str:
    """One plain-words sentence on where a run's time went, from its normalised ``profile``
    (:func:`normalize_profile`) and the query's :func:`layout_report`.

    An operator with ≥ 50 % of the operators' time is named with its share, e.g. "87 % of time
    scanning gerhard2013.synapses: the box filter on ctr_pt_position_x is not on the table's spatial
    sort order (…)", "72 % of time in HASH_JOIN: …"; otherwise "no single bottleneck …".
    """
    if not isinstance(profile, dict) or not isinstance(profile.get("operators"), list):
        raise InvalidArgument("profile must be a normalised profile (normalize_profile's result)",
                              field="profile", value=repr(profile)[:200])
    ops = profile["operators"]
    if not ops:
        return "no operators were profiled"
    total = profile.get("total_s")
    if isinstance(total, int | float) and total < QUICK_S:
        return f"no bottleneck worth tuning: the query took {1000 * total:.1f} ms"
    top = ops[0]
    share = float(top.get("share") or 0.0)
    if share < 0.5:
        listed = ", ".join(f"{o['operator']} {round(100 * float(o.get('share') or 0))} %" for o in ops[:3])
        return f"no single bottleneck ({listed})"
    pct = round(100 * share)
    name = str(top.get("operator", "?"))
    table = top.get("table")
    if "SCAN" in name.upper() or table:
        t = table or "a table"
        mine = [e for e in layout or [] if e.get("table") == t] or [
            e for e in layout or [] if str(e.get("table", "")).split(".")[-1] == str(t).split(".")[-1]]
        bad = [e for e in mine if e.get("served_by") in ("none", "statistics")]
        good = [e for e in mine if e.get("served_by") in ("sort", "partition")]
        if bad:
            e = bad[0]
            pos = _POSITION_RE.match(str(e.get("column", "")))
            what = "the box filter" if pos else "the filter"
            order = "spatial sort order" if pos else "sort order or partitioning"
            return (f"{pct} % of time scanning {t}: {what} on {e['column']} is not on the table's {order} "
                    f"(it prunes {e.get('pruned', 0)} of {e.get('row_groups', 0)} row groups); {e.get('advice', '')}")
        if good:
            e = good[0]
            return (f"{pct} % of time scanning {t}: the filter on {e['column']} is served by the table's "
                    f"{e['served_by']} ({e.get('pruned', 0)} of {e.get('row_groups', 0)} row groups skipped); "
                    "the rows left to read dominate — narrow the filter or read fewer columns")
        return (f"{pct} % of time scanning {t}: a full scan (no filter reaches the scan); filter on a sorted "
                "or partitioned column, or read fewer columns")
    rows = top.get("rows", 0)
    up = name.upper()
    if "JOIN" in up:
        why = (f"the join produced {rows:,} rows; filter or aggregate the inputs before joining, "
               "and put the smaller table on the build side")
    elif "GROUP" in up or "AGGREGATE" in up:
        why = f"aggregating into {rows:,} groups; fewer or narrower grouping keys, or pre-filter the rows"
    elif up in ("ORDER_BY", "TOP_N"):
        why = (f"sorting {rows:,} rows (results come totally ordered: ORDER BY ALL unless the query orders); "
               "add LIMIT or order by fewer columns")
    elif "WINDOW" in up:
        why = f"a window function over {rows:,} rows; partition it more finely or pre-filter"
    else:
        why = f"{rows:,} rows through {name}"
    return f"{pct} % of time in {name}: {why}"
