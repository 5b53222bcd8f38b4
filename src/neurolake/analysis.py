"""Summaries of a table of vectors: per-column statistics, histograms, correlation, PCA (issue 13, point 4).

The vector explorer (:mod:`neurolake.web.vectors`) shows these for any table the SQL engine reads or an
uploaded CSV; they are plain functions of a :class:`pandas.DataFrame` (rows = observations, columns =
variables), usable from Python too.

- :func:`summarize`: per column its type, count, nulls, distinct values, min/max, mean, standard deviation
  and quartiles (numeric columns) or most frequent values (text, booleans);
- :func:`histograms`: bin counts of numeric columns (numpy ``histogram_bin_edges``), value counts of the others;
- :func:`correlation`: Pearson correlation of the numeric columns (pandas ``DataFrame.corr``);
- :func:`pca`: principal components of the standardised numeric columns (scikit-learn
  ``sklearn.decomposition.PCA``; rows with a null dropped and counted, constant columns dropped and named);
- :func:`sample`: a deterministic (seeded) sample of a large table, so plots stay responsive;
- :func:`read_table_upload`: an uploaded CSV/TSV file as a DataFrame, with clear errors for empty, binary,
  malformed or oversized files.

Units are those of the data (the functions do not convert). Types: ``numeric`` (integers, floats),
``bool``, ``datetime``, ``text`` (everything else: strings, categories, mixed objects).
Errors: :class:`~neurolake.errors.InvalidArgument` (a column that does not exist, too few rows or
columns for PCA, an unreadable upload), :class:`~neurolake.errors.TooLarge` (an upload over the cap).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from neurolake.errors import InvalidArgument, TooLarge

MAX_ROWS = 100_000          # tables above this are sampled (deterministically) before analysis
SEED = 0                    # the sampling seed (numpy default_rng)
MAX_UPLOAD_BYTES = 64 * 2**20
TOP_VALUES = 5


def column_type(s: pd.Series) -> str:
    """``numeric``, ``bool``, ``datetime`` or ``text`` for a column."""
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return "text"


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Names of the numeric (not boolean) columns of ``df``, in order."""
    return [str(c) for c in df.columns if column_type(df[c]) == "numeric"]


def sample(df: pd.DataFrame, max_rows: int = MAX_ROWS, seed: int = SEED) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``df`` itself when it has at most ``max_rows`` rows, else ``max_rows`` rows drawn without replacement
    with ``numpy.random.default_rng(seed)`` (kept in their original order): the same table and seed give
    the same sample. Returns ``(frame, info)`` with ``info = {"rows": n, "used": m, "sampled": bool,
    "seed": seed|None}``."""
    n = len(df)
    if n <= max_rows:
        return df, {"rows": n, "used": n, "sampled": False, "seed": None}
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    return df.iloc[idx], {"rows": n, "used": max_rows, "sampled": True, "seed": seed}


def _scalar(v: Any) -> Any:
    """A JSON-able Python scalar (numpy → int/float, timestamps → ISO text, NaN/NaT → None)."""
    if v is None or (pd.api.types.is_scalar(v) and not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return v


def summarize(df: pd.DataFrame, top: int = TOP_VALUES) -> list[dict[str, Any]]:
    """One dict per column of ``df`` (in order):

    ``name``, ``type`` (see the module docstring), ``dtype`` (pandas), ``count`` (non-null values),
    ``nulls``, ``distinct`` (distinct non-null values), ``min``, ``max`` (numeric and datetime columns;
    None otherwise), ``mean``, ``std`` (sample standard deviation, ddof = 1, as pandas), ``q25``, ``q50``,
    ``q75`` (linear-interpolated quartiles, as pandas ``quantile``) for numeric columns, and ``top``:
    ``[(value, count), …]`` the ``top`` most frequent values for text and boolean columns. Statistics are
    floats in the column's own unit; None where undefined (an all-null column, std of one value).
    """
    out = []
    for c in df.columns:
        s = df[c]
        kind = column_type(s)
        nn = s.dropna()
        try:
            distinct = int(nn.nunique())
        except TypeError:  # unhashable values (lists, dicts): count their text
            distinct = int(nn.astype(str).nunique())
        row: dict[str, Any] = {"name": str(c), "type": kind, "dtype": str(s.dtype), "count": int(len(nn)),
                               "nulls": int(len(s) - len(nn)), "distinct": distinct, "min": None, "max": None,
                               "mean": None, "std": None, "q25": None, "q50": None, "q75": None, "top": []}
        if kind == "numeric" and len(nn):
            x = nn.astype("float64")
            q = x.quantile([0.25, 0.5, 0.75])
            row.update(min=_scalar(nn.min()), max=_scalar(nn.max()), mean=float(x.mean()),
                       std=_scalar(x.std()), q25=float(q.iloc[0]), q50=float(q.iloc[1]), q75=float(q.iloc[2]))
        elif kind == "datetime" and len(nn):
            row.update(min=_scalar(nn.min()), max=_scalar(nn.max()))
        elif kind in ("text", "bool") and len(nn):
            try:
                vc = nn.value_counts()
            except TypeError:
                vc = nn.astype(str).value_counts()
            row["top"] = [(_scalar(k), int(v)) for k, v in vc.head(top).items()]
        out.append(row)
    return out


def histograms(df: pd.DataFrame, bins: int = 30, columns: list[str] | None = None,
               top: int = 20) -> list[dict[str, Any]]:
    """Per column (``columns``, default all): numeric → ``{"name", "type": "numeric", "edges": [bins+1
    floats], "counts": [bins ints]}`` (numpy ``histogram`` over the non-null finite values; edges in the
    column's unit); other columns → ``{"name", "type", "values": [top labels], "counts": [...]}`` (the
    ``top`` most frequent values). All-null columns give empty lists. Raises InvalidArgument for
    ``bins`` outside 1…1000 or an unknown column."""
    if not isinstance(bins, int) or not 1 <= bins <= 1000:
        raise InvalidArgument(f"bins {bins!r} must be an integer from 1 to 1000", field="bins", value=bins)
    cols = _check_columns(df, columns) if columns is not None else [str(c) for c in df.columns]
    out = []
    for c in cols:
        s = df[c].dropna()
        kind = column_type(df[c])
        if kind == "numeric":
            x = s.to_numpy(dtype="float64")
            x = x[np.isfinite(x)]
            if len(x):
                counts, edges = np.histogram(x, bins=bins)
                out.append({"name": c, "type": kind, "edges": edges.tolist(), "counts": counts.tolist()})
            else:
                out.append({"name": c, "type": kind, "edges": [], "counts": []})
        else:
            vc = s.astype(str).value_counts().head(top)
            out.append({"name": c, "type": kind, "values": list(vc.index), "counts": [int(v) for v in vc]})
    return out


def _check_columns(df: pd.DataFrame, columns: list[str]) -> list[str]:
    have = [str(c) for c in df.columns]
    for c in columns:
        if c not in have:
            raise InvalidArgument(f"no column {c!r}; the table has: {', '.join(have)}", field="columns", value=c,
                                  allowed=have)
    return list(columns)


def correlation(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Pearson correlation matrix (k × k, unitless, −1…1; pairwise-complete observations, as pandas
    ``DataFrame.corr``) of the numeric columns of ``df`` (or of ``columns``, which must be numeric).
    Constant columns give NaN rows. Raises InvalidArgument for an unknown or non-numeric column."""
    cols = numeric_columns(df) if columns is None else _numeric(df, columns)
    return df[cols].astype("float64").corr(method="pearson")


def _numeric(df: pd.DataFrame, columns: list[str]) -> list[str]:
    _check_columns(df, columns)
    bad = [c for c in columns if column_type(df[c]) != "numeric"]
    if bad:
        raise InvalidArgument(f"column(s) {', '.join(map(repr, bad))} are not numeric; numeric columns: "
                              f"{', '.join(numeric_columns(df))}", field="columns", value=bad[0],
                              allowed=numeric_columns(df))
    return list(columns)


def pca(df: pd.DataFrame, color: str | None = None, n_components: int = 2,
        columns: list[str] | None = None) -> dict[str, Any]:
    """Principal component analysis of the numeric columns of ``df`` (or ``columns``).

    Columns with no finite value are left out (named in ``null_columns``); then rows with a null (or
    non-finite value) in any used column are dropped (counted in ``dropped_rows``); constant columns are dropped (named in ``dropped_columns``: they have no variance to standardise);
    each remaining column is standardised to mean 0, standard deviation 1 (population, ddof = 0, as
    scikit-learn's ``StandardScaler``), then ``sklearn.decomposition.PCA(n_components)`` is fitted.

    Returns ``{"columns": used columns, "n_components": k, "rows": rows used, "dropped_rows": int,
    "dropped_columns": [...], "null_columns": [...], "explained_variance_ratio": [k floats], "loadings": {column: [k floats]},
    "scores": ndarray (rows, k) — unitless, "index": the kept rows' index labels, "color": name or None,
    "color_values": list (the color column on the kept rows) or None}``.

    Raises InvalidArgument: unknown ``color``/columns, fewer than 2 usable columns or rows, or
    ``n_components`` outside 1…min(rows, columns).
    """
    from sklearn.decomposition import PCA

    if color is not None:
        _check_columns(df, [color])
    cols = numeric_columns(df) if columns is None else _numeric(df, columns)
    x = df[cols].astype("float64")
    ok = np.isfinite(x.to_numpy())
    empty = [c for i, c in enumerate(cols) if not ok[:, i].any()]
    cols = [c for c in cols if c not in empty]
    x = x[cols]
    finite = np.isfinite(x.to_numpy()).all(axis=1)
    kept = x[finite]
    dropped_rows = int(len(x) - len(kept))
    std = kept.std(ddof=0)
    constant = [c for c in cols if not (std[c] > 0)]
    use = [c for c in cols if c not in constant]
    if len(use) < 2:
        raise InvalidArgument(f"PCA needs at least 2 numeric, non-constant columns; usable: "
                              f"{', '.join(use) or 'none'}" + (f" (constant: {', '.join(constant)})" if constant else "")
                              + (f" (all null: {', '.join(empty)})" if empty else ""), field="columns", value=cols)
    if len(kept) < 2:
        raise InvalidArgument(f"PCA needs at least 2 rows without nulls; {len(kept)} of {len(x)} rows are "
                              "complete", field="rows", value=len(kept))
    kmax = min(len(kept), len(use))
    if not isinstance(n_components, int) or not 1 <= n_components <= kmax:
        raise InvalidArgument(f"n_components {n_components!r} must be from 1 to {kmax}", field="n_components",
                              value=n_components)
    z = (kept[use] - kept[use].mean()) / kept[use].std(ddof=0)
    model = PCA(n_components=n_components)
    scores = model.fit_transform(z.to_numpy())
    return {"columns": use, "n_components": n_components, "rows": int(len(kept)), "dropped_rows": dropped_rows,
            "dropped_columns": constant, "null_columns": empty, "explained_variance_ratio": [float(v) for v in model.explained_variance_ratio_],
            "loadings": {c: [float(v) for v in model.components_[:, i]] for i, c in enumerate(use)},
            "scores": scores, "index": list(kept.index), "color": color,
            "color_values": [_scalar(v) for v in df.loc[kept.index, color]] if color is not None else None}


def read_table_upload(data: bytes, filename: str, max_bytes: int = MAX_UPLOAD_BYTES) -> pd.DataFrame:
    """Parse an uploaded table: ``.tsv``/``.tab`` files tab-separated, anything else comma-separated
    (UTF-8, a header row). Raises TooLarge (over ``max_bytes``), InvalidArgument: empty file, binary
    content (NUL bytes or not UTF-8 text), a malformed CSV (pandas' parser message, with the line), a
    file with a header but no rows, or duplicate column names."""
    name = filename or "upload"
    if len(data) > max_bytes:
        raise TooLarge(f"{name} is {len(data):,} bytes; uploads are limited to {max_bytes:,} bytes",
                       field="file", value=len(data), limit=max_bytes)
    if not data.strip():
        raise InvalidArgument(f"{name} is empty", field="file", value=name)
    head = data[:65536]
    if b"\x00" in head:
        raise InvalidArgument(f"{name} is a binary file, not a CSV text file", field="file", value=name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{name} is not UTF-8 text (byte {exc.start}): upload a CSV file", field="file",
                              value=name) from exc
    sep = "\t" if name.lower().endswith((".tsv", ".tab")) else ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        msg = str(exc).strip().replace("\n", " ")
        raise InvalidArgument(f"{name} is not a well-formed CSV file: {msg}", field="file", value=name) from exc
    if len(df) == 0:
        raise InvalidArgument(f"{name} has a header ({len(df.columns)} columns) but no rows", field="file",
                              value=name)
    import csv

    header = next(csv.reader(io.StringIO(text.lstrip("\r\n").split("\n", 1)[0]), delimiter=sep))
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InvalidArgument(f"{name} has duplicate column names ({', '.join(map(str, dup))})", field="file",
                              value=name)
    return df
