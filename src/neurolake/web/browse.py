"""Home and browse pages (see :mod:`neurolake.web`): the lake at a glance, datastacks, annotation tables,
materialization versions, the edit log, feature tables, query runs, and logging in under ``--auth``.

Routes (HTML; each page links to its API URL and, where there is one, to Neuroglancer):

- ``GET /ui``: explorers, the datastacks the user may read (cards), recent query runs;
- ``GET /ui/login`` / ``POST /ui/login`` (form field ``token``) / ``POST /ui/logout``: under ``--auth`` the
  API token is kept in the ``neurolake_token`` cookie (:mod:`neurolake.access.http` reads it); every
  other page sends a browser without a valid token to the login page;
- ``GET /ui/datastacks/{ds}``: layers, annotation tables, versions, segmentation;
  ``…/tables/{t}?offset=&limit=&version=``: schema, Delta history, rows (live, or of a materialization
  version); ``…/versions``; ``…/edits?author=&since=&until=``: the edit log;
- ``GET /ui/features?q=&tag=&column=&datastack=`` and ``/ui/features/{ds}/{name}``: the feature registry
  as the request's principal;
- ``GET /ui/runs?user=&datastack=&mode=`` and ``/ui/runs/{run_id}``: recorded query runs (a user who is not
  a lake admin sees only their own, as ``/api/v1/runs`` does).

Pages only translate: every number comes from the core (Lake, Datastack, Table, Versions, Segmentation,
FeatureRegistry, provenance.runs). Under ``--auth`` they show what the principal may read.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from neurolake.access.http import COOKIE
from neurolake.errors import NeurolakeError, NotFound, PermissionDenied
from neurolake.server.access import Need, request_principal, visible_datastacks
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute, check_csrf, page

router = APIRouter(route_class=PageRoute)
THUMB_PX = 256  # thumbnails come from the coarsest mip at most this wide/high (or the coarsest mip)
MAX_ROWS = 500  # rows per page of a table page
EXPLORERS = [
    ("Image", "/ui/image", "2-D pan/zoom over the tile route, and Neuroglancer"),
    ("Graph", "/ui/graph", "connectome of a version or an uploaded edge list: statistics, communities, partners"),
    ("Vectors", "/ui/vectors", "a table or a CSV: column summaries, histograms, PCA"),
    ("Query console", "/ui/query", "SQL over every table, with the run's manifest"),
    ("Features", "/ui/features", "registered feature tables: search, metadata, lineage"),
    ("Runs", "/ui/runs", "recorded query runs and their manifests"),
]


# -------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------
def _lake(request: Request):
    return request.app.state.lake


def _principal_for_core(request: Request):
    """The principal to hand to core calls: None without ``--auth`` (the local user, every right)."""
    return request_principal(request)


def _readable_tables(request: Request, ds: str) -> list[Any]:
    """The annotation tables of ``ds`` whose own read permission admits the principal (Table objects)."""
    from neurolake.annotations import get_table, list_tables

    lake, p = _lake(request), request_principal(request)
    out = []
    for name in list_tables(lake, ds):
        t = get_table(lake, ds, name)
        if p is not None:
            try:
                lake.access.require_table(p, t, "read")
            except PermissionDenied:
                continue
        out.append(t)
    return out


def _table(request: Request, ds: str, name: str):
    """The annotation table after its own read permission (NotFound, PermissionDenied)."""
    from neurolake.annotations import get_table

    lake, p = _lake(request), request_principal(request)
    t = get_table(lake, ds, name)
    if p is not None:
        lake.access.require_table(p, t, "read")
    return t


def _thumbnail(ds: str, layer: str, info: dict[str, Any]) -> dict[str, Any] | None:
    """``{"url", "mip", "z"}`` of a PNG plane (``/ocp/ca/…/xy/…``) of the middle z of the finest mip no
    larger than :data:`THUMB_PX` in x and y (else the coarsest mip); None when the layer has no mips."""
    mips = info.get("mips") or []
    if not mips:
        return None
    pick = next((m for m in mips if max(m["size_xyz"][:2]) <= THUMB_PX), mips[-1])
    f = pick.get("downsample_factor_xyz") or [1, 1, 1]
    b = info.get("bounds") or {}
    x0, y0, z0 = (int((b.get(a) or [0])[0]) // int(f[i]) for i, a in enumerate("xyz"))
    sx, sy, sz = (int(v) for v in pick["size_xyz"])
    z = z0 + sz // 2
    return {"url": f"/ocp/ca/{ds}/{layer}/xy/{pick['mip']}/{x0},{x0 + sx}/{y0},{y0 + sy}/{z}/",
            "mip": pick["mip"], "z": z}


def _visible_versions(versions: list[dict[str, Any]], tables: set[str]) -> list[dict[str, Any]]:
    """Versions with only the frozen tables the principal may read (``tables``), rows summed over them."""
    out = []
    for v in versions:
        tabs = {k: t for k, t in (v.get("tables") or {}).items() if k in tables}
        out.append({**v, "tables": tabs, "rows": sum(int(t.get("rows") or 0) for t in tabs.values())})
    return out


def _runs_of(request: Request, *, user: str | None = None, datastack: str | None = None,
             mode: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recorded runs the principal may see (their own unless lake admin or local), as ``/api/v1/runs``."""
    from neurolake.provenance.runs import list_runs
    from neurolake.server.deps import principal_of
    from neurolake.server.query import _public

    lake = _lake(request)
    p = principal_of(request)
    if not (p.is_admin or p.local):
        if user is not None and user != p.name:
            lake.access.require(p, None, "admin", "listing another user's query runs")
        user = p.name
    return _public(request, list_runs(lake, user=user, datastack=datastack, mode=mode, limit=limit))


def _safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site): default ``/ui``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


def _qs(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


# -------------------------------------------------------------------------------------------------
# home, login
# -------------------------------------------------------------------------------------------------
def home_page(request: Request) -> HTMLResponse:
    """The home page (also ``/`` for browsers: :func:`neurolake.server.app.create_app`)."""
    lake = _lake(request)
    names = visible_datastacks(request)
    infos = {i["name"]: i for i in lake.datastack_infos()}
    cards = []
    for n in names:
        info = infos.get(n) or lake.datastack_info(n)
        ds = lake[n]
        cards.append({"name": n, "description": info.get("description") or "",
                      "voxel_size_nm": info.get("voxel_size_nm"), "public": info.get("public"),
                      "layers": len(ds.layers()), "tables": len(_readable_tables(request, n)),
                      "versions": len(ds.versions.list()), "segmentation": ds.has_segmentation(),
                      "ephys": len(ds.ephys.tables())})
    runs = _runs_of(request, limit=8)
    return page(request, "home.html", title="Home", explorers=EXPLORERS, cards=cards, runs=runs)


@router.get("/ui", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    return home_page(request)


@router.get("/ui/login", access=Need.public("the login form: it takes the API token"),
            include_in_schema=False, response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    state = request.scope.get("state") or {}
    refused = state.get("auth_error") if request.cookies.get(COOKIE) else None
    return page(request, "browse_login.html", title="Log in", next=_safe_next(next),
                error=None if refused is None else f"your saved token was refused: {refused.message}")


@router.post("/ui/login", access=Need.public("checks the token it is given"), include_in_schema=False)
def login(request: Request, token: str = Form(""), csrf: str = Form(""), next: str = Form("/ui")) -> Response:
    """Check ``token`` (the API token of ``neurolake token create``); on success keep it in the
    ``neurolake_token`` cookie (HttpOnly, SameSite=Strict) and go to ``next``; else the form again (401)."""
    check_csrf(request, csrf)
    lake = _lake(request)
    token = token.strip()
    try:
        if not token:
            raise PermissionDenied("give your API token")
        lake.access.authenticate(token)
    except NeurolakeError as exc:
        return page(request, "browse_login.html", status_code=401, title="Log in", next=_safe_next(next),
                    error=f"the token was refused: {exc.message}")
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https")
    return resp


@router.post("/ui/logout", access=Need.public("forgets the browser's token"), include_in_schema=False)
def logout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


# -------------------------------------------------------------------------------------------------
# datastacks
# -------------------------------------------------------------------------------------------------
@router.get("/ui/datastacks", access=Need.authenticated(), include_in_schema=False)
def datastacks(request: Request) -> Response:
    return RedirectResponse("/ui#datastacks", status_code=307)


@router.get("/ui/datastacks/{datastack}", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def datastack_page(datastack: str, request: Request) -> HTMLResponse:
    lake = _lake(request)
    ds = lake[datastack]  # NotFound for an unknown datastack (lake admins; others get the access 403)
    info = ds.info()
    layers = []
    for la in info.get("layers") or []:
        li = lake.layer(datastack, la["name"]).info()
        layers.append({**li, "thumb": _thumbnail(datastack, la["name"], li)})
    tables = []
    for t in _readable_tables(request, datastack):
        m = t.metadata()
        tables.append({"name": t.name, "schema_type": m.get("schema_type"), "description": m.get("description"),
                       "rows": t.count(), "delta_version": m.get("version"), "columns": len(m.get("columns") or []),
                       "read_permission": m.get("read_permission")})
    names = {t["name"] for t in tables}
    versions = _visible_versions(ds.versions.list(expired=True), names)
    seg = ds.segmentation.info() if ds.has_segmentation() else None
    return page(request, "browse_datastack.html", title=datastack, ds=info, dsname=datastack, layers=layers, tables=tables,
                versions=versions, seg=seg, ephys=ds.ephys.tables(), crumbs=[("Home", "/ui"), (datastack, None)])


@router.get("/ui/datastacks/{datastack}/tables/{table}", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def table_page(datastack: str, table: str, request: Request,
               offset: int = Query(0, ge=0, description="first row shown"),
               limit: int = Query(50, ge=1, le=MAX_ROWS, description="rows per page"),
               version: int | None = Query(None, ge=1, description="rows of this materialization version")
               ) -> HTMLResponse:
    from neurolake.server.query import json_rows

    lake = _lake(request)
    ds = lake[datastack]
    t = _table(request, datastack, table)
    meta = t.metadata()
    if version is None:
        total = t.count()
        res = t.query(limit=limit, offset=offset)
        source = f"live rows (Delta version {t.version})"
    else:
        v = ds.versions.get(version)  # NotFound, names the versions
        if table not in (v.get("tables") or {}):
            raise NotFound(f"table {table!r} is not frozen in version {version} of {datastack!r}; tables there: "
                           f"{', '.join(sorted(v.get('tables') or {})) or 'none'}", field="version", value=version)
        total = int(v["tables"][table]["rows"])
        res = ds.versions.query(table, version=version, limit=limit, offset=offset)
        source = f"materialization version {version} ({v['timestamp']})"
    tab = res.arrow()
    rows = json_rows(tab)
    schema = [{"name": f.name, "type": str(f.type)} for f in tab.schema]  # as queries return them (ids uint64)
    versions = [v for v in ds.versions.list(expired=True) if table in (v.get("tables") or {})]
    pages = {"prev": _qs(offset=max(0, offset - limit), limit=limit, version=version) if offset > 0 else None,
             "next": _qs(offset=offset + limit, limit=limit, version=version) if offset + limit < total else None}
    api = f"/api/v1/datastacks/{datastack}/tables/{table}"
    api_rows = api + "/rows?" + _qs(limit=limit, offset=offset)
    return page(request, "browse_table.html", title=f"{datastack}.{table}", ds=datastack, table=table, meta=meta,
                schema=schema, total=total, rows=rows, columns=tab.column_names, offset=offset, limit=limit,
                version=version, source=source, history=t.history(50), versions=versions, pages=pages,
                api=api, api_rows=api_rows,
                crumbs=[("Home", "/ui"), (datastack, f"/ui/datastacks/{datastack}"), (table, None)])


@router.get("/ui/datastacks/{datastack}/versions", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def versions_page(datastack: str, request: Request) -> HTMLResponse:
    ds = _lake(request)[datastack]
    names = {t.name for t in _readable_tables(request, datastack)}
    versions = _visible_versions(ds.versions.list(expired=True), names)
    return page(request, "browse_versions.html", title=f"{datastack} versions", ds=datastack, dsname=datastack,
                versions=versions,
                crumbs=[("Home", "/ui"), (datastack, f"/ui/datastacks/{datastack}"), ("versions", None)])


@router.get("/ui/datastacks/{datastack}/edits", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def edits_page(datastack: str, request: Request, author: str | None = None, since: str | None = None,
               until: str | None = None, limit: int = Query(500, ge=1, le=100_000, description="newest shown")
               ) -> HTMLResponse:
    ds = _lake(request)[datastack]
    seg = ds.segmentation  # NotFound when the datastack has no proofreadable segmentation
    author, since, until = (v.strip() or None if v else None for v in (author, since, until))
    ops = seg.operations(author=author, since=since, until=until)  # InvalidArgument for a bad time
    matching = len(ops)
    ops = ops[::-1][:limit]  # newest first
    api = f"/api/v1/datastacks/{datastack}/segmentation/operations?" + _qs(author=author, since=since, until=until)
    return page(request, "browse_edits.html", title=f"{datastack} edits", ds=datastack, seg=seg.info(), ops=ops,
                matching=matching, limit=limit, all_url="?" + _qs(author=author, since=since, until=until,
                                                                  limit=min(matching, 100_000)),
                author=author or "", since=since or "", until=until or "", api=api,
                crumbs=[("Home", "/ui"), (datastack, f"/ui/datastacks/{datastack}"), ("edit log", None)])


# -------------------------------------------------------------------------------------------------
# feature tables
# -------------------------------------------------------------------------------------------------
def _registry(request: Request):
    from neurolake.catalog.registry import FeatureRegistry

    return FeatureRegistry(_lake(request), _principal_for_core(request))


@router.get("/ui/features", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def features_page(request: Request, q: str | None = None, tag: str | None = None, column: str | None = None,
                  datastack: str | None = None, status: str | None = None) -> HTMLResponse:
    q, tag, column, datastack, status = (v.strip() or None if v else None for v in (q, tag, column, datastack, status))
    found = _registry(request).search(q=q, tag=tag, column=column, datastack=datastack, status=status, limit=500)
    api = "/api/v1/features?" + _qs(q=q, tag=tag, column=column, datastack=datastack, status=status)
    return page(request, "browse_features.html", title="Feature tables", found=found, q=q or "", tag=tag or "",
                column=column or "", datastack=datastack or "", status=status or "",
                datastacks=visible_datastacks(request), api=api, crumbs=[("Home", "/ui"), ("feature tables", None)])


@router.get("/ui/features/{datastack}/{name}", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def feature_page(datastack: str, name: str, request: Request) -> HTMLResponse:
    reg = _registry(request)
    f = reg.get(name, datastack)
    # tables that name this one in derived_from (the other direction of the lineage)
    children = [c["name"] for c in reg.search(datastack=datastack, limit=10000) if name in (c.get("derived_from") or [])]
    schema = f.get("schema")
    if isinstance(schema, dict):
        schema = [{"name": k, "type": v} for k, v in schema.items()]
    return page(request, "browse_feature.html", title=f"{datastack}.{name}", f=f, schema=schema or [],
                children=children, api=f"/api/v1/features/{name}?datastack={datastack}",
                crumbs=[("Home", "/ui"), ("feature tables", "/ui/features"), (f"{datastack}.{name}", None)])


# -------------------------------------------------------------------------------------------------
# query runs
# -------------------------------------------------------------------------------------------------
@router.get("/ui/runs", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def runs_page(request: Request, user: str | None = None, datastack: str | None = None,
              mode: str | None = Query(None, pattern="^(exploratory|production)$"),
              limit: int = Query(100, ge=1, le=1000)) -> HTMLResponse:
    user, datastack = (v.strip() or None if v else None for v in (user, datastack))
    runs = _runs_of(request, user=user, datastack=datastack, mode=mode, limit=limit)
    api = "/api/v1/runs?" + _qs(user=user, datastack=datastack, mode=mode, limit=limit)
    return page(request, "browse_runs.html", title="Query runs", runs=runs, user_filter=user or "",
                datastack=datastack or "", mode=mode or "", limit=limit, api=api,
                crumbs=[("Home", "/ui"), ("query runs", None)])


@router.get("/ui/runs/{run_id}", access=Need.authenticated(), include_in_schema=False,
            response_class=HTMLResponse)
def run_page(run_id: str, request: Request) -> HTMLResponse:
    from neurolake.server.query import _own_run, _public

    rec = _public(request, _own_run(request, _lake(request), run_id))
    for i in rec.get("inputs") or []:  # "delta_version 1; committed 2026-…" (None parts left out)
        pin = i.get("pin") or {}
        i["pin_text"] = "; ".join(f"{k} {json.dumps(v, default=str) if isinstance(v, dict | list) else v}"
                                  for k, v in sorted(pin.items()) if v is not None)
    facet = ((rec.get("manifest") or {}).get("run") or {}).get("facets", {}).get("neurolake") or {}
    profile = facet.get("profile") or {}
    console = "/ui/query?" + urlencode({"sql": rec["sql"]})
    return page(request, "browse_run.html", title=f"run {rec['run_id'][:8]}", run=rec, facet=facet,
                runtime=facet.get("runtime_class") or {}, profile=profile,
                raw=json.dumps(rec.get("manifest"), indent=2, default=str), console=console,
                api=f"/api/v1/runs/{rec['run_id']}",
                crumbs=[("Home", "/ui"), ("query runs", "/ui/runs"), (rec["run_id"][:8], None)])
