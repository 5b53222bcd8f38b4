"""The graph explorer (see :mod:`neurolake.web`): a materialization version's connectome or an uploaded edge list.

Routes (every choice is in the query string, so a URL reopens the same view):

- ``GET /ui/graph?ds=&version=&syn=&ct=&min_synapses=&method=leiden|louvain&resolution=&seed=&order=
  community|cell_type|degree&node=&partners_min=`` — or ``?upload=<sha256 prefix>&…`` for an uploaded graph:
  statistics (``id="graph-stats"``), degree and synapse-weight distributions, an ordered adjacency heatmap,
  a network drawing (≤ 300 nodes), communities (method, resolution, seed shown), a neuron's ranked
  partners and download links. ``syn`` defaults to the version's only synapse table, ``ct`` to its only
  cell-type table (``ct=none``: no cell types); ``version`` to the newest valid one (links then pin it).
- ``POST /ui/graph/upload`` (multipart ``file`` = CSV or GraphML, ``csrf``): analysed at once and kept in
  the server's memory (``lake.state("web.graph.uploads")``, the last :data:`MAX_UPLOADS`, keyed by the SHA-256
  of the bytes) → 303 to ``/ui/graph?upload=<prefix>``; that URL works while the server runs.
- ``GET /ui/graph/download?<same query>&format=csv|parquet|graphml``: the edges at the threshold (Parquet
  with the version and parameters in its key-value metadata; GraphML with node attributes and community).

Analysis is :mod:`neurolake.connectome.analysis`. Under ``--auth`` the datastack (a query parameter, so
the route needs ``Need.authenticated()``) is checked here: the principal must be able to read it
(:func:`neurolake.server.access.may_read`) and the synapse and cell-type tables
(:func:`neurolake.server.deps.check_readable`); else 403.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from neurolake.errors import InvalidArgument, NeurolakeError, NotFound, PermissionDenied, TooLarge
from neurolake.server.access import Need, may_read, request_principal, visible_datastacks
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute, check_csrf, figure, page

router = APIRouter(route_class=PageRoute)

MAX_UPLOADS = 16
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
PREFIX = 16  # hex digits of the SHA-256 in an upload's URL
PARTNERS_SHOWN = 50
FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "graphml": "application/graphml+xml"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


class Notice(Exception):
    """A state of the lake that leaves nothing to draw (no version, no synapse table): shown, status 200."""


class Uploads:
    """The last ``MAX_UPLOADS`` uploaded graphs of this server, by SHA-256 (thread-safe, oldest dropped)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, sha: str, item: dict) -> None:
        with self._lock:
            self._items[sha] = item
            self._items.move_to_end(sha)
            while len(self._items) > MAX_UPLOADS:
                self._items.popitem(last=False)

    def get(self, prefix: str) -> dict:
        p = (prefix or "").strip().lower()
        if len(p) < 8 or any(ch not in "0123456789abcdef" for ch in p):
            raise InvalidArgument(f"upload {prefix!r} must be a hex SHA-256 prefix of at least 8 digits",
                                  field="upload", value=prefix)
        with self._lock:
            hits = [v for k, v in self._items.items() if k.startswith(p)]
        if not hits:
            raise NotFound(f"no uploaded graph {prefix!r} on this server (uploads are kept in memory, the last "
                           f"{MAX_UPLOADS}, until the server stops): upload the file again", field="upload",
                           value=prefix)
        return hits[0]


def _uploads(lake) -> Uploads:
    return lake.state("web.graph.uploads", Uploads)


# -- loading ------------------------------------------------------------------------------------------
def _cache(lake) -> OrderedDict:
    return lake.state("web.graph.connectomes", OrderedDict)


def _check_datastack(request: Request, lake, ds: str) -> None:
    p = request_principal(request)
    if p is not None and not may_read(lake, p, ds):
        readable = visible_datastacks(request)
        raise PermissionDenied(f"user {p.name!r} may not read datastack {ds!r} (or there is no such datastack); "
                               f"datastacks user {p.name!r} may read: {', '.join(readable) or 'none'}",
                               user=p.name, datastack=ds, required="viewer")
    lake.datastack(ds)  # NotFound for an unknown datastack


def _pick(names: list[str], schema: str, given: str | None, kind: str, ds: str, version: int) -> str | None:
    if given:
        if given not in names:
            raise NotFound(f"version {version} of {ds!r} has no table {given!r}; its {kind} tables: "
                           f"{', '.join(names) or 'none'}", field="syn" if kind == "synapse" else "ct", value=given)
        return given
    return names[0] if len(names) == 1 else None


def _datastack_graph(request: Request, q: dict) -> tuple[Any, dict]:
    """(Connectome, source description) of a datastack's materialization version."""
    from neurolake.connectome import Connectome
    from neurolake.materialize import get_version, query_version
    from neurolake.server.deps import check_readable

    lake = request.app.state.lake
    ds = q["ds"]
    _check_datastack(request, lake, ds)
    dstack = lake[ds]
    if not dstack.versions.list():
        raise Notice(f"Datastack {ds!r} has no materialization version yet, so there is no connectome to show. "
                     f"Create one with `neurolake materialize {ds}` (or `lake[{ds!r}].versions.create()`).")
    v = get_version(lake, ds, q["version"], allow_expired=False)
    version = int(v["version"])
    tables = dstack.versions.tables(version)
    schemas = {}
    for t in tables:
        try:
            schemas[t] = dstack.table(t).schema.name
        except NotFound:
            schemas[t] = None
    syns = [t for t in tables if schemas[t] == "synapse"]
    cts = [t for t in tables if schemas[t] == "cell_type"]
    syn = _pick(syns, "synapse", q["syn"], "synapse", ds, version)
    if syn is None:
        if not syns:
            raise Notice(f"Version {version} of {ds!r} has no synapse table (tables: {', '.join(tables) or 'none'}): "
                         "the connectome is built from a table of the synapse schema with pre- and post-synaptic "
                         "root ids.")
        raise Notice(f"Version {version} of {ds!r} has several synapse tables ({', '.join(syns)}): choose one "
                     "with the synapse table field (syn=).")
    ct = None if (q["ct"] or "").lower() == "none" else _pick(cts, "cell_type", q["ct"], "cell_type", ds, version)
    check_readable(request, lake, ds, syn, ct)
    key = (ds, version, syn, ct)
    cache = _cache(lake)
    c = cache.get(key)
    if c is None:
        c = Connectome.from_version(lake, ds, version, syn, cell_type_table=ct)
        if ct:
            cols = query_version(lake, ds, version, ct, limit=0).arrow().column_names
            if "name" in cols:
                names = query_version(lake, ds, version, ct, columns=["pt_root_id", "name"]).df()
                names = names.astype({"pt_root_id": "uint64"}).drop_duplicates("pt_root_id").set_index("pt_root_id")
                c = c.with_nodes(names[["name"]])
        cache[key] = c
        while len(cache) > 8:
            cache.popitem(last=False)
    q.update(version=version, syn=syn, ct=ct or ("none" if q["ct"] else None))
    source = {"kind": "datastack", "datastack": ds, "version": version, "timestamp": v["timestamp"],
              "synapse_table": syn, "cell_type_table": ct, "synapse_tables": syns, "cell_type_tables": cts}
    return c, source


def _load(request: Request, q: dict) -> tuple[Any, dict]:
    if q["upload"]:
        item = _uploads(request.app.state.lake).get(q["upload"])
        q["upload"] = item["sha256"][:PREFIX]
        return item["connectome"], {"kind": "upload", "filename": item["filename"], "sha256": item["sha256"],
                                    "bytes": item["bytes"], "format": item["connectome"].meta.get("format")}
    return _datastack_graph(request, q)


# -- the query string -----------------------------------------------------------------------------------
def _query(ds, version, syn, ct, min_synapses, method, resolution, seed, order, node, partners_min, upload) -> dict:
    return {"ds": ds or None, "version": version, "syn": syn or None, "ct": ct or None,
            "min_synapses": min_synapses, "method": method, "resolution": resolution, "seed": seed,
            "order": order, "node": (node or "").strip() or None, "partners_min": partners_min,
            "upload": upload or None}


def _url(path: str, q: dict, **change: Any) -> str:
    d = {**q, **change}
    keys = ("upload",) if d.get("upload") else ("ds", "version", "syn", "ct")
    keys += ("min_synapses", "method", "resolution", "seed", "order", "node", "partners_min", "format")
    return path + "?" + urlencode({k: d[k] for k in keys if d.get(k) is not None})


# -- figures --------------------------------------------------------------------------------------------
def _labels(c) -> dict:
    names = c.nodes["name"] if "name" in c.nodes.columns else None
    out = {}
    for n in c.nodes.index:
        nm = None if names is None else names.get(n)
        out[n] = str(nm) if isinstance(nm, str) and nm else str(n)
    if len(set(out.values())) < len(out):
        out = {n: str(n) for n in c.nodes.index}
    return out


def _degree_fig(dd) -> str:
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(x=dd["in"]["degree"], y=dd["in"]["count"], name="in-degree", marker_color=PALETTE[1]),
                     go.Bar(x=dd["out"]["degree"], y=dd["out"]["count"], name="out-degree", marker_color=PALETTE[0])])
    fig.update_layout(barmode="group", title="Degree distribution (distinct partners)", xaxis_title="degree",
                      yaxis_title="nodes", margin=dict(l=50, r=10, t=60, b=40),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"))
    return figure(fig, height=340)


def _weight_fig(wd) -> str:
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(x=wd["n_synapses"], y=wd["connections"], marker_color=PALETTE[2], name="connections")])
    fig.update_layout(title="Synapses per connection", xaxis_title="synapses (n_synapses)",
                      yaxis_title="connections", yaxis_type="log", margin=dict(l=50, r=10, t=40, b=40))
    return figure(fig, height=340)


def _adjacency_fig(adj, labels: dict) -> str:
    import numpy as np
    import plotly.graph_objects as go

    names = [labels.get(n, str(n)) for n in adj["order"]]
    m = adj["matrix"]
    z = np.where(m > 0, m, np.nan).astype(np.float32)  # NaN: no connection (blank); a float32 typed array: small
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Viridis", zmin=1,
                               zmax=float(np.nanpercentile(z, 99)) if np.isfinite(z).any() else 1,
                               colorbar=dict(title="synapses"),
                               hovertemplate="%{y} → %{x}: %{z} synapses<extra></extra>"))
    shapes = []
    n = len(names)
    for _, start, _stop in adj["boundaries"][1:] if len(adj["boundaries"]) <= 40 else []:  # readable lines only
        for axis in ("x", "y"):
            p = start - 0.5
            shapes.append(dict(type="line", xref="x", yref="y", line=dict(color="#d62728", width=0.6),
                               **({"x0": p, "x1": p, "y0": -0.5, "y1": n - 0.5} if axis == "x" else
                                  {"y0": p, "y1": p, "x0": -0.5, "x1": n - 0.5})))
    fig.update_layout(title=f"Adjacency (pre rows → post columns), ordered by {adj['order_by'].replace('_', ' ')}",
                      shapes=shapes, margin=dict(l=60, r=10, t=40, b=60),
                      xaxis=dict(type="category", showticklabels=n <= 120, title="post", range=[-0.5, n - 0.5]),
                      yaxis=dict(type="category", showticklabels=n <= 120, title="pre", range=[n - 0.5, -0.5]))
    return figure(fig, height=640)


def _network_fig(lay, labels: dict, membership, c) -> str:
    import plotly.graph_objects as go

    pos = {n: (x, y) for n, x, y in zip(lay["nodes"], lay["x"], lay["y"], strict=True)}
    import numpy as np

    k = len(lay["edges"])
    ex, ey = np.full(3 * k, np.nan, np.float32), np.full(3 * k, np.nan, np.float32)  # segments a → b separated by NaN gaps
    for i, (a, b) in enumerate(zip(lay["edges"]["pre"], lay["edges"]["post"], strict=True)):
        (ex[3 * i], ey[3 * i]), (ex[3 * i + 1], ey[3 * i + 1]) = pos[_py(a)], pos[_py(b)]
    comm = [int(membership.get(n, 0)) for n in lay["nodes"]] if membership is not None else [0] * len(lay["nodes"])
    ct = c.nodes["cell_type"] if "cell_type" in c.nodes.columns else None
    text = [f"{labels.get(n, n)} (id {n})<br>community {k}" + (f"<br>cell type {ct.get(n)}" if ct is not None else "")
            for n, k in zip(lay["nodes"], comm, strict=True)]
    fig = go.Figure([
        go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="rgba(120,120,120,0.35)", width=0.6),
                   hoverinfo="skip", name="connections"),
        go.Scatter(x=lay["x"], y=lay["y"], mode="markers", name="neurons", text=text,
                   hovertemplate="%{text}<extra></extra>",
                   marker=dict(size=8, color=[PALETTE[k % len(PALETTE)] for k in comm],
                               line=dict(width=0.5, color="white")))])
    fig.update_layout(title="Network (Fruchterman–Reingold layout; colour = community)", showlegend=False,
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"),
                      margin=dict(l=10, r=10, t=40, b=10))
    return figure(fig, height=600)


def _py(v):
    import numpy as np

    return int(v) if isinstance(v, np.integer) else v


# -- partners ---------------------------------------------------------------------------------------------
def _resolve_node(c, node: str):
    """A node id from the ``node`` parameter: an id, or a ``name`` attribute (e.g. C. elegans ``AVAL``)."""
    if "name" in c.nodes.columns:
        hit = c.nodes.index[c.nodes["name"].astype(str).str.upper() == node.upper()]
        if len(hit):
            return hit[0]
    try:
        return c._check_node(int(node))
    except (ValueError, NotFound, InvalidArgument):
        pass
    return c._check_node(node)


def _partners(c, node: str, min_synapses: int, labels: dict) -> dict:
    n = _resolve_node(c, node)
    out = {"node": _py(n), "label": labels.get(n, str(n)), "min_synapses": min_synapses}
    for side, col in (("upstream", "pre"), ("downstream", "post")):
        df = getattr(c, side)(n, min_synapses=min_synapses).df()
        rows = []
        for _, r in df.head(PARTNERS_SHOWN).iterrows():
            pid = _py(r[col])
            rows.append({"id": pid, "label": labels.get(pid, str(pid)), "n_synapses": int(r["n_synapses"]),
                         "cell_type": r.get("cell_type") if "cell_type" in df.columns and
                         isinstance(r.get("cell_type"), str) else ""})
        out[side] = rows
        out[side + "_total"] = int(len(df))
        out[side + "_synapses"] = int(df["n_synapses"].sum()) if len(df) else 0
    return out


# -- routes ----------------------------------------------------------------------------------------------
@router.get("/ui/graph", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def graph_page(request: Request, ds: str | None = None, version: int | None = None, syn: str | None = None,
               ct: str | None = None, min_synapses: int = 1, method: str = "leiden", resolution: float = 1.0,
               seed: int = 0, order: str = "community", node: str | None = None, partners_min: int | None = None,
               upload: str | None = None) -> HTMLResponse:
    from neurolake.connectome import analysis as an

    t0 = time.perf_counter()
    q = _query(ds, version, syn, ct, min_synapses, method, resolution, seed, order, node, partners_min, upload)
    ctx: dict[str, Any] = {"q": q, "datastacks": visible_datastacks(request), "source": None, "message": None,
                           "error": None, "max_uploads": MAX_UPLOADS, "methods": an.METHODS, "orders": an.ORDERS}
    if not q["ds"] and not q["upload"]:
        return page(request, "graph_explore.html", title="Graph explorer", **ctx)
    status = 200
    try:
        c, source = _load(request, q)
        ctx["source"] = source
        _analyse(c, q, ctx)
    except Notice as e:
        ctx["message"] = str(e)
    except NeurolakeError as e:  # a clean page with the message (403 for a datastack the user may not read)
        ctx["error"] = e.message
        status = e.http_status
    ctx["url"] = lambda path="/ui/graph", **kw: _url(path, q, **kw)
    ctx["server_ms"] = round((time.perf_counter() - t0) * 1000)
    return page(request, "graph_explore.html", status_code=status, title="Graph explorer", **ctx)


def _analyse(c, q: dict, page_ctx: dict) -> None:
    """Fill ``page_ctx`` with the analyses, all or nothing (an error leaves it unchanged)."""
    from neurolake.connectome import analysis as an

    ctx: dict[str, Any] = {}

    ms = q["min_synapses"]
    ctx["stats"] = an.graph_stats(c, ms)
    com = an.communities(c, method=q["method"], resolution=q["resolution"], seed=q["seed"], min_synapses=ms)
    q["resolution"] = com["resolution"]
    ctx["communities"] = com
    labels = _labels(c)
    mem = com["membership"]
    rows = []
    deg = c._degrees(ms)
    tdeg = deg["in_degree"] + deg["out_degree"]
    ct = c.nodes["cell_type"] if "cell_type" in c.nodes.columns else None
    for k, size in enumerate(com["sizes"][:40]):
        members = mem.index[mem.to_numpy() == k]
        top = tdeg.reindex(members).sort_values(ascending=False, kind="stable").index[:12]
        types = ""
        if ct is not None:
            vc = ct.reindex(members).dropna().astype(str).value_counts().head(5)
            types = ", ".join(f"{t} ({n})" for t, n in vc.items())
        rows.append({"community": k, "size": size, "members": ", ".join(labels.get(n, str(n)) for n in top),
                     "cell_types": types})
    ctx["community_rows"] = rows
    dd = an.degree_distributions(c, ms)
    ctx["fig_degrees"] = _degree_fig(dd)
    ctx["fig_weights"] = _weight_fig(an.weight_distribution(c, ms))
    try:
        adj = an.adjacency(c, q["order"], ms, membership=mem)
        ctx["fig_adjacency"] = _adjacency_fig(adj, labels)
        ctx["adjacency_nodes"] = len(adj["order"])
    except (TooLarge, InvalidArgument) as e:
        if isinstance(e, InvalidArgument) and e.detail.get("field") != "order":
            raise
        ctx["adjacency_message"] = e.message
    try:
        lay = an.layout(c, ms, seed=q["seed"])
        ctx["fig_network"] = _network_fig(lay, labels, mem, c) if lay["nodes"] else None
    except TooLarge as e:
        ctx["network_message"] = e.message
    if q["node"]:
        pm = q["partners_min"] or ms
        try:
            ctx["partners"] = _partners(c, q["node"], pm, labels)
        except (NotFound, InvalidArgument) as e:
            ctx["partners_message"] = e.message
    ctx["top_nodes"] = [{"id": _py(n), "label": labels.get(n, str(n)), "degree": int(tdeg[n])}
                        for n in tdeg.sort_values(ascending=False, kind="stable").index[:10]]
    page_ctx.update(ctx)


@router.post("/ui/graph/upload", access=Need.authenticated(), include_in_schema=False)
async def graph_upload(request: Request, file: UploadFile = File(...), csrf: str = Form("")):
    from starlette.concurrency import run_in_threadpool

    from neurolake.connectome.analysis import read_edge_list

    check_csrf(request, csrf)
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    name = file.filename or "upload"
    q = _query(None, None, None, None, 1, "leiden", 1.0, 0, "community", None, None, None)
    try:
        if len(data) > MAX_UPLOAD_BYTES:
            raise TooLarge(f"{name!r} is larger than {MAX_UPLOAD_BYTES} bytes", limit=MAX_UPLOAD_BYTES)
        c = await run_in_threadpool(read_edge_list, data, name)
    except NeurolakeError as e:
        ctx = {"q": q, "datastacks": visible_datastacks(request), "source": None, "message": None,
               "error": f"Upload refused: {e.message}", "max_uploads": MAX_UPLOADS, "methods": ("leiden", "louvain"),
               "orders": ("community", "cell_type", "degree")}
        return page(request, "graph_explore.html", status_code=e.http_status, title="Graph explorer", **ctx)
    sha = hashlib.sha256(data).hexdigest()
    _uploads(request.app.state.lake).put(sha, {"connectome": c, "filename": name, "sha256": sha,
                                               "bytes": len(data)})
    return RedirectResponse(_url("/ui/graph", {**q, "upload": sha[:PREFIX]}), status_code=303)


@router.get("/ui/graph/download", access=Need.authenticated(), include_in_schema=False)
def graph_download(request: Request, format: str = "csv", ds: str | None = None, version: int | None = None,
                   syn: str | None = None, ct: str | None = None, min_synapses: int = 1, method: str = "leiden",
                   resolution: float = 1.0, seed: int = 0, order: str = "community", node: str | None = None,
                   partners_min: int | None = None, upload: str | None = None) -> Response:
    from neurolake.connectome import Connectome
    from neurolake.connectome import analysis as an

    if format not in FORMATS:
        raise InvalidArgument(f"format {format!r} must be one of {', '.join(FORMATS)}", field="format",
                              value=format, allowed=list(FORMATS))
    q = _query(ds, version, syn, ct, min_synapses, method, resolution, seed, order, node, partners_min, upload)
    if not q["ds"] and not q["upload"]:
        raise InvalidArgument("name a datastack (ds=) or an upload (upload=)", field="ds")
    try:
        c, source = _load(request, q)
    except Notice as e:
        raise NotFound(str(e)) from None
    e = an._edges(c, q["min_synapses"]).reset_index(drop=True)
    stem = (f"{source['datastack']}_v{source['version']}" if source["kind"] == "datastack"
            else f"upload_{source['sha256'][:PREFIX]}") + f"_min{q['min_synapses']}"
    params = {"min_synapses": q["min_synapses"], "source": source["kind"]}
    if source["kind"] == "datastack":
        params.update(datastack=source["datastack"], version=source["version"], timestamp=str(source["timestamp"]),
                      synapse_table=source["synapse_table"], cell_type_table=source["cell_type_table"])
    else:
        params.update(filename=source["filename"], sha256=source["sha256"])
    if format == "csv":
        body = e.to_csv(index=False).encode()
    elif format == "parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        com = an.communities(c, method=q["method"], resolution=q["resolution"], seed=q["seed"],
                             min_synapses=q["min_synapses"])
        meta = {**params, "communities": {"method": com["method"], "resolution": com["resolution"],
                                          "seed": com["seed"], "n_communities": com["n_communities"],
                                          "modularity": com["modularity"]}, "url": _url("/ui/graph", q)}
        tab = pa.Table.from_pandas(e, preserve_index=False)
        flat = {k.encode(): str(v).encode() for k, v in params.items()}
        tab = tab.replace_schema_metadata({**(tab.schema.metadata or {}), **flat,
                                           b"neurolake": json.dumps(meta, default=str).encode()})
        buf = io.BytesIO()
        pq.write_table(tab, buf)
        body = buf.getvalue()
    else:
        com = an.communities(c, method=q["method"], resolution=q["resolution"], seed=q["seed"],
                             min_synapses=q["min_synapses"])
        nodes = c.nodes.copy()
        nodes["community"] = com["membership"]
        sub = Connectome(e, nodes, c.meta)
        with tempfile.TemporaryDirectory() as d:
            body = sub.to_graphml(Path(d) / "graph.graphml").read_bytes()
    return Response(body, media_type=FORMATS[format],
                    headers={"Content-Disposition": f'attachment; filename="{stem}.{format}"'})
