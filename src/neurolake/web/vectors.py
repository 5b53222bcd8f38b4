"""The vector explorer (issue 13, point 4): a table the SQL engine reads, or an uploaded CSV, summarised.

- ``GET /ui/vectors?table=NAME&color=COL&columns=a,b,c&bins=30``: ``NAME`` is any table name of
  docs/query.md (``ds.table``, ``ds."table@7"``, ``ds.v1.table``, ``features.name``); its rows are read with
  :func:`neurolake.query.engine.run` as the request's principal (access rules and pins apply; the run is
  recorded and linked). ``GET /ui/vectors?upload=PREFIX`` shows an uploaded file instead.
- ``POST /ui/vectors/upload`` (multipart ``file``, ``csrf``): parse the CSV
  (:func:`neurolake.analysis.read_table_upload`), keep it while the server runs in
  ``lake.state("web.vectors.uploads")`` keyed by its SHA-256, and redirect to ``/ui/vectors?upload=<16 hex>``.

The page shows the summary table (``#vector-summary``), histograms (``#vector-histograms``), a scatter
matrix of up to 6 columns (``#vector-splom``), the correlation heatmap (``#vector-corr``) and a PCA scatter
coloured by ``color`` (``#vector-pca``). Analysis is :mod:`neurolake.analysis`; tables over
:data:`LOAD_ROWS` rows are read up to that many rows, and over :data:`neurolake.analysis.MAX_ROWS` sampled
(seeded) — the page says so.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from neurolake import analysis
from neurolake.errors import InvalidArgument, NeurolakeError, NotFound, PermissionDenied
from neurolake.server.access import Need, request_principal, visible_datastacks
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute, check_csrf, figure, page

router = APIRouter(route_class=PageRoute)

LOAD_ROWS = 500_000         # rows read from a table at most (ORDER BY ALL LIMIT: the first rows in sort order)
PLOT_POINTS = 5_000         # points drawn in the scatter matrix and the PCA scatter
MAX_SPLOM = 6               # columns of the scatter matrix
MAX_HIST = 12               # histograms drawn
MAX_UPLOADS = 20            # uploads kept in memory (oldest dropped)
# a table name of docs/query.md: 2 or 3 dotted parts, each an identifier or a quoted "name@pin"
TABLE_NAME = re.compile(r'^[A-Za-z_][\w]*(\.([A-Za-z_][\w]*|"[^"\\;]{1,200}")){1,2}$')


class Uploads:
    """Uploaded tables kept in memory while the server runs: ``{sha256: {"name", "df", "bytes", "sha256",
    "owner", "time"}}`` (the newest :data:`MAX_UPLOADS`)."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.items[entry["sha256"]] = entry
            self.items.move_to_end(entry["sha256"])
            while len(self.items) > MAX_UPLOADS:
                self.items.popitem(last=False)

    def get(self, prefix: str, owner: str | None) -> dict[str, Any]:
        prefix = (prefix or "").strip().lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
            raise InvalidArgument(f"upload {prefix!r} must be 8 to 64 hex digits of the file's SHA-256",
                                  field="upload", value=prefix)
        with self.lock:
            hits = [e for h, e in self.items.items() if h.startswith(prefix)
                    and (owner is None or e["owner"] in (None, owner))]
        if len(hits) != 1:
            raise NotFound(f"no uploaded table {prefix!r} on this server (uploads are kept in memory while the "
                           "server runs; upload the file again)" if not hits else
                           f"upload prefix {prefix!r} is ambiguous; give more digits", field="upload", value=prefix)
        return hits[0]


def uploads(lake) -> Uploads:
    return lake.state("web.vectors.uploads", Uploads)


def _names(request: Request) -> list[str]:
    """Table names to suggest: the live and newest-version tables of the datastacks the user may read, and
    the feature tables the user may read (``features.DS.NAME``)."""
    lake = request.app.state.lake
    out: list[str] = []
    for ds in visible_datastacks(request):
        try:
            d = lake[ds]
            out += [f"{ds}.{t}" for t in d.tables()]
            vs = d.versions.list()
            if vs:
                v = max(int(x["version"]) for x in vs)
                out += [f"{ds}.v{v}.{t}" for t in d.versions.tables(v)]
        except NeurolakeError:
            continue
    try:
        from neurolake.catalog import FeatureRegistry

        out += [f"features.{e['datastack']}.{e['name']}"
                for e in FeatureRegistry(lake, request_principal(request)).search(limit=500)]
    except NeurolakeError:
        pass
    return out


def load_table(request: Request, name: str) -> tuple[Any, dict[str, Any]]:
    """Rows of table ``name`` read through the SQL engine as the request's principal; returns ``(DataFrame,
    source)`` with the run id, rows read and whether the read was truncated at :data:`LOAD_ROWS`."""
    from neurolake.query.engine import run

    name = (name or "").strip()
    if not TABLE_NAME.match(name):
        raise InvalidArgument(f"table {name!r} is not a table name: use DS.TABLE, DS.\"TABLE@PIN\", DS.vN.TABLE "
                              "or features.NAME (docs/query.md)", field="table", value=name)
    res = run(request.app.state.lake, f"SELECT * FROM {name} ORDER BY ALL LIMIT {LOAD_ROWS + 1}",
              principal=request_principal(request), job="neurolake.web.vectors")
    df = res.df()
    truncated = len(df) > LOAD_ROWS
    if truncated:
        df = df.iloc[:LOAD_ROWS]
    return df, {"kind": "table", "name": name, "run_id": res.run_id, "sha256": res.sha256, "rows": len(df),
                "truncated": truncated, "inputs": res.run["inputs"]}


def _url(**q: Any) -> str:
    return "/ui/vectors?" + urlencode({k: v for k, v in q.items() if v not in (None, "")})


def _plots(df, info: dict[str, Any], color: str | None, columns: list[str], bins: int) -> dict[str, Any]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out: dict[str, Any] = {}
    filled = [c for c in columns if df[c].notna().any()]  # all-null columns have nothing to draw
    hist = analysis.histograms(df, bins=bins, columns=filled[:MAX_HIST])
    if hist:
        ncol = min(3, len(hist))
        nrow = -(-len(hist) // ncol)
        fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[h["name"] for h in hist])
        for i, h in enumerate(hist):
            r, c = i // ncol + 1, i % ncol + 1
            if h["type"] == "numeric":
                e = h["edges"]
                mids = [(a + b) / 2 for a, b in zip(e[:-1], e[1:], strict=True)]
                widths = [b - a for a, b in zip(e[:-1], e[1:], strict=True)]
                fig.add_trace(go.Bar(x=mids, y=h["counts"], width=widths, name=h["name"], showlegend=False), r, c)
            else:
                fig.add_trace(go.Bar(x=h["values"], y=h["counts"], name=h["name"], showlegend=False), r, c)
        fig.update_layout(height=260 * nrow, margin={"t": 40, "l": 40, "r": 10, "b": 30}, bargap=0)
        out["histograms"] = figure(fig)
    pts, _ = analysis.sample(df, PLOT_POINTS, analysis.SEED)
    num = [c for c in filled if analysis.column_type(df[c]) == "numeric"]
    if len(num) >= 2:
        sp = num[:MAX_SPLOM]
        fig = go.Figure(go.Splom(dimensions=[{"label": c, "values": pts[c].tolist()} for c in sp],
                                 marker={"size": 3, "opacity": 0.5}, diagonal_visible=False))
        fig.update_layout(height=140 * len(sp) + 120, margin={"t": 20, "l": 60, "r": 10, "b": 40})
        out["splom"] = figure(fig)
        out["splom_columns"] = sp
        corr = analysis.correlation(df, num)
        fig = go.Figure(go.Heatmap(z=corr.to_numpy().round(4).tolist(), x=list(corr.columns), y=list(corr.index),
                                   zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                                   colorbar={"title": "Pearson r"}))
        fig.update_layout(height=max(320, 40 * len(num) + 160), margin={"t": 20, "l": 120, "r": 10, "b": 100})
        out["corr"] = figure(fig)
        try:
            p = analysis.pca(df, color=color, columns=num)
        except InvalidArgument as exc:
            out["pca_error"] = exc.message
        else:
            out["pca"] = p
            out["pca_figure"] = figure(_pca_figure(p, PLOT_POINTS))
    return out


def _pca_figure(p: dict[str, Any], max_points: int):
    import numpy as np
    import plotly.graph_objects as go

    scores = p["scores"]
    n = len(scores)
    idx = np.arange(n)
    if n > max_points:
        idx = np.sort(np.random.default_rng(analysis.SEED).choice(n, size=max_points, replace=False))
    evr = p["explained_variance_ratio"]
    xs, ys = scores[idx, 0], scores[idx, 1] if scores.shape[1] > 1 else np.zeros(len(idx))
    fig = go.Figure()
    cv = p.get("color_values")
    if cv is None:
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="markers", marker={"size": 4}, name="rows"))
    else:
        vals = [cv[i] for i in idx]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals if v is not None) \
                and len({v for v in vals if v is not None}) > 12:
            fig.add_trace(go.Scattergl(x=xs, y=ys, mode="markers", name=p["color"],
                                       marker={"size": 4, "color": [np.nan if v is None else v for v in vals],
                                               "colorscale": "Viridis", "colorbar": {"title": p["color"]}}))
        else:
            from collections import Counter

            keep = [k for k, _ in Counter(str(v) for v in vals).most_common(12)]
            labels = [str(v) if str(v) in keep else "other" for v in vals]
            for k in [*keep, "other"]:
                m = np.array([lab == k for lab in labels])
                if m.any():
                    fig.add_trace(go.Scattergl(x=xs[m], y=ys[m], mode="markers", marker={"size": 4}, name=k))
    fig.update_layout(height=480, margin={"t": 20, "l": 60, "r": 10, "b": 50},
                      xaxis_title=f"PC1 ({evr[0]:.1%} of variance)",
                      yaxis_title=f"PC2 ({evr[1]:.1%} of variance)" if len(evr) > 1 else "")
    return fig


@router.get("/ui/vectors", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def vectors(request: Request, table: str | None = None, upload: str | None = None, color: str | None = None,
            columns: str | None = None, bins: int = 30) -> HTMLResponse:
    lake = request.app.state.lake
    ctx: dict[str, Any] = {"table": table or "", "upload": upload or "", "color": color or "",
                           "columns_text": columns or "", "bins": bins, "names": []}
    p = request_principal(request)
    try:
        ctx["names"] = _names(request)
        if not table and not upload:
            return page(request, "vectors_page.html", title="Vector explorer", **ctx)
        t0 = time.perf_counter()
        if upload:
            e = uploads(lake).get(upload, None if p is None else p.name)
            df = e["df"]
            source = {"kind": "upload", "name": e["name"], "sha256": e["sha256"], "bytes": e["bytes"],
                      "rows": len(df), "truncated": False,
                      "url": _url(upload=e["sha256"][:16], color=color, columns=columns, bins=bins)}
        else:
            df, source = load_table(request, table)
            source["url"] = _url(table=table, color=color, columns=columns, bins=bins)
        data, info = analysis.sample(df, analysis.MAX_ROWS, analysis.SEED)
        all_cols = [str(c) for c in df.columns]
        chosen = [c.strip() for c in (columns or "").split(",") if c.strip()] or all_cols
        analysis._check_columns(df, chosen)
        if color:
            analysis._check_columns(df, [color])
        ctx.update(source=source, sample=info, summary=analysis.summarize(data), all_columns=all_cols,
                   chosen=chosen, **_plots(data, info, color or None, chosen, bins))
        ctx["seconds"] = round(time.perf_counter() - t0, 3)
        return page(request, "vectors_page.html", title=f"Vectors: {source['name']}", **ctx)
    except NeurolakeError as exc:
        return page(request, "vectors_page.html", title="Vector explorer", status_code=exc.http_status,
                    error=exc.message, **ctx)


@router.post("/ui/vectors/upload", access=Need.authenticated(), include_in_schema=False)
async def vectors_upload(request: Request, file: UploadFile = File(...), csrf: str | None = Form(None)) -> Response:
    lake = request.app.state.lake
    p = request_principal(request)
    try:
        check_csrf(request, csrf)
        data = await file.read(analysis.MAX_UPLOAD_BYTES + 1)
        df = analysis.read_table_upload(data, file.filename or "upload.csv", analysis.MAX_UPLOAD_BYTES)
    except NeurolakeError as exc:
        status = 403 if isinstance(exc, PermissionDenied) else exc.http_status
        return page(request, "vectors_page.html", title="Vector explorer: upload refused", status_code=status,
                    error=exc.message, table="", upload="", color="", columns_text="", bins=30, names=[])
    digest = hashlib.sha256(data).hexdigest()
    uploads(lake).put({"sha256": digest, "name": file.filename or "upload.csv", "df": df, "bytes": len(data),
                       "owner": None if p is None else p.name, "time": time.time()})
    return RedirectResponse(_url(upload=digest[:16]), status_code=303)
