"""``/api/v1/features…``, ``/api/v1/usage``, ``/api/v1/audit``: the feature registry over HTTP.

Routes translate to :class:`neurolake.catalog.FeatureRegistry` calls made as the request's principal
(the token's user under ``--auth``, otherwise the single local user).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from neurolake.catalog.registry import FeatureRegistry
from neurolake.errors import InvalidArgument
from neurolake.server.access import Need
from neurolake.server.deps import principal_of
from neurolake.server.models import (
    AuditLog,
    Count,
    CrawlReport,
    FeatureEntry,
    FeatureSearch,
    Limit,
    Model,
    SignedUrls,
    Usage,
    Verification,
)
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/api/v1", tags=["features"])


def _reg(request: Request) -> FeatureRegistry:
    return FeatureRegistry(request.app.state.lake, principal_of(request))


async def _run(fn, *a, **kw):
    return await anyio.to_thread.run_sync(lambda: fn(*a, **kw))


@router.get("/features", access=Need.self_checked("the feature registry authorises the principal per entry"),
            summary="Search feature tables")
async def search(request: Request, name: str | None = None, tag: str | None = None, datastack: str | None = None,
                 version: Count | None = Query(None, description="materialization version"),
                 status: str | None = None, owner: str | None = None, column: str | None = None,
                 q: str | None = Query(None, description="words searched in names, descriptions, columns, tags"),
                 limit: Limit = 100, offset: Count = 0) -> FeatureSearch:
    items = await _run(_reg(request).search, name=name, tag=tag, datastack=datastack, version=version, status=status,
                       owner=owner, column=column, q=q, limit=limit, offset=offset)
    return {"count": len(items), "features": items}


@router.post("/features", access=Need.self_checked("the feature registry authorises the principal per entry"),
             status_code=201, summary="Register (and validate) a feature table")
async def register(request: Request, spec: dict[str, Any] = Body(...)) -> FeatureEntry:
    return await _run(_reg(request).register, spec)


@router.post("/features/crawl", access=Need.self_checked("the feature registry authorises the principal per entry"), summary="Find tables under a folder or s3:// prefix and register drafts")
async def crawl_(request: Request, body: dict[str, Any] = Body(...)) -> CrawlReport:
    from neurolake.catalog.crawler import crawl

    allowed = {"prefix", "datastack", "tags", "dry_run"}
    unknown = sorted(set(body) - allowed)
    if unknown or not isinstance(body.get("prefix"), str) or not isinstance(body.get("datastack"), str):
        raise InvalidArgument(f"body must be {{prefix, datastack, tags?, dry_run?}}; unknown: {unknown}",
                              field=(unknown or ["prefix"])[0], allowed=sorted(allowed))
    return await _run(crawl, request.app.state.lake, body["prefix"], body["datastack"],
                      principal=principal_of(request), tags=body.get("tags"), dry_run=bool(body.get("dry_run")))


@router.get("/features/{name}", access=Need.self_checked("the feature registry authorises the principal per entry"), summary="One feature table")
async def get(request: Request, name: str, datastack: str | None = None, files: bool = False) -> FeatureEntry:
    return await _run(_reg(request).get, name, datastack, with_files=files)


@router.patch("/features/{name}", access=Need.self_checked("the feature registry authorises the principal per entry"), summary="Change a feature table (status, lineage, or any field of a draft)")
async def update(request: Request, name: str, changes: dict[str, Any] = Body(...),
                 datastack: str | None = None) -> FeatureEntry:
    changes = dict(changes)
    ds = changes.pop("datastack", None) or datastack
    return await _run(_reg(request).update, name, ds, **changes)


@router.delete("/features/{name}", access=Need.self_checked("the feature registry authorises the principal per entry"), status_code=204, summary="Delete a draft feature table")
async def delete(request: Request, name: str, datastack: str | None = None) -> None:
    await _run(_reg(request).delete, name, datastack)


@router.get("/features/{name}/verify", access=Need.self_checked("the feature registry authorises the principal per entry"), summary="Compare the data with the registered fingerprint")
async def verify(request: Request, name: str, datastack: str | None = None) -> Verification:
    return await _run(_reg(request).verify, name, datastack)


@router.post("/features/{name}/signed-urls", access=Need.self_checked("the feature registry authorises the principal per entry"), summary="Temporary signed URLs for the table's files")
async def signed_urls(request: Request, name: str, body: dict[str, Any] | None = Body(None),
                      datastack: str | None = None) -> SignedUrls:
    body = dict(body or {})
    unknown = sorted(set(body) - {"expires_in_s", "datastack"})
    if unknown:
        raise InvalidArgument(f"unknown field(s) {unknown}; allowed: expires_in_s, datastack", field=unknown[0],
                              allowed=["expires_in_s", "datastack"])
    base = str(request.base_url).rstrip("/")
    reg, ds = _reg(request), body.get("datastack") or datastack
    args = (name, ds)
    kw = {"expires_in_s": body.get("expires_in_s", 3600), "base_url": base}
    # with the entry cached a grant does no catalog I/O (one stat for Parquet): run it inline, no thread hop
    grant = reg.signed_urls(*args, **kw) if reg.grant_cached(name, ds) else await _run(reg.signed_urls, *args, **kw)
    return JSONResponse(grant)  # plain JSON types already: skip FastAPI's jsonable_encoder


class SimilarAnswer(Model):
    """The answer of ``POST /api/v1/features/{name}/similar``."""

    table: str
    datastack: str
    count: int = Field(description="rows returned (k per query, fewer when fewer rows match)")
    columns: list[str] = Field(description="the table's columns, then _distance (and _query first for a batch)")
    rows: list[dict[str, Any]] = Field(description="nearest first per query; _distance: cosine 1 - cos, l2 "
                                                   "Euclidean, dot -x·q")
    metadata: dict[str, Any] = Field(description="fingerprint, metric, model_version, embeds, dimension, k, filter, "
                                                 "search (ann|exact), index (parameters or 'exact'), query, "
                                                 "index_stale?, warnings?, seconds")


SIMILAR_FIELDS = ("vector", "id", "k", "filter", "exact", "refine", "nprobe", "column", "columns", "id_column",
                  "datastack", "rebuild", "save_as")


@router.post("/features/{name}/similar",
             access=Need.self_checked("the feature registry authorises the principal per entry (viewer, as reading "
                                      "the table; editor with rebuild or save_as)"),
             summary="The k rows whose vectors are nearest to a vector or to a row (similarity search)")
async def similar(request: Request, name: str, body: dict[str, Any] = Body(...),
                  datastack: str | None = None) -> SimilarAnswer:
    """Body: ``{"vector": [d numbers] | [[...], ...], "id": key, "k": 10, "filter": "SQL predicate",
    "exact": false, "refine": 10, "nprobe": n, "column": "emb", "columns": [...], "id_column": "...",
    "datastack": "...", "rebuild": false, "save_as": "name"}`` (one of ``vector`` / ``id``; ``save_as`` registers
    the result as a feature table, reachable in SQL as ``features.<name>``). Answer: ``{"table", "datastack",
    "count", "columns", "rows": [{…, "_distance"}], "metadata": {fingerprint, index, metric, model_version, …}}``
    (see ``FeatureRegistry.similar``)."""
    from neurolake.server.query import json_rows

    unknown = sorted(set(body) - set(SIMILAR_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {unknown}; allowed: {', '.join(SIMILAR_FIELDS)}", field=unknown[0],
                              allowed=list(SIMILAR_FIELDS))
    kw = {k: body[k] for k in SIMILAR_FIELDS if k in body and k != "datastack"}
    for f, typ in (("exact", bool), ("rebuild", bool), ("columns", list), ("save_as", str)):
        if f in kw and not isinstance(kw[f], typ):
            raise InvalidArgument(f"{f} must be a {typ.__name__}", field=f, value=repr(kw[f])[:100])
    res = await _run(_reg(request).similar, name, datastack=body.get("datastack") or datastack, **kw)
    table = res.arrow()
    return JSONResponse({"table": res.metadata["table"], "datastack": res.metadata["datastack"],
                         "count": table.num_rows, "columns": table.column_names,
                         "rows": json_rows(table), "metadata": res.metadata})


class VectorIndex(Model):
    """A vector column's ANN index (``FeatureRegistry.index`` / ``index_info``)."""

    table: str
    datastack: str
    column: str
    index: dict[str, Any] | None = Field(description="index.json: library, factory, kind, nlist, m, nbits, nprobe, "
                                                      "refine, metric, fingerprint, rows, build_seconds, built_at …; "
                                                      "null when there is none")
    stale: list[str] = Field(description="why the index no longer describes the registered table (empty: fresh)")
    built: bool | None = Field(None, description="POST: whether this request built it (a fresh one is kept)")


INDEX_FIELDS = ("column", "kind", "nlist", "m", "nbits", "nprobe", "refine", "train_rows", "rebuild", "datastack")


@router.get("/features/{name}/index",
            access=Need.self_checked("the feature registry authorises the principal per entry (viewer)"),
            summary="A vector column's ANN index and whether it is stale")
async def index_info(request: Request, name: str, column: str | None = None,
                     datastack: str | None = None) -> VectorIndex:
    return await _run(_reg(request).index_info, name, column, datastack)


@router.post("/features/{name}/index",
             access=Need.self_checked("the feature registry authorises the principal per entry (editor)"),
             summary="Build a vector column's ANN index (kept when fresh unless rebuild or parameters are given)")
async def build_index(request: Request, name: str, body: dict[str, Any] | None = Body(None),
                      datastack: str | None = None) -> VectorIndex:
    body = dict(body or {})
    unknown = sorted(set(body) - set(INDEX_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {unknown}; allowed: {', '.join(INDEX_FIELDS)}", field=unknown[0],
                              allowed=list(INDEX_FIELDS))
    kw = {k: body[k] for k in INDEX_FIELDS if k in body and k not in ("column", "datastack")}
    if not isinstance(kw.get("rebuild", False), bool) or not isinstance(kw.get("kind", "auto"), str):
        bad = "rebuild" if not isinstance(kw.get("rebuild", False), bool) else "kind"
        raise InvalidArgument(f"{bad} must be a {'boolean' if bad == 'rebuild' else 'string'}", field=bad,
                              value=repr(kw[bad])[:100])
    reg = _reg(request)
    ds = body.get("datastack") or datastack
    meta = await _run(reg.index, name, body.get("column"), ds, **kw)
    return {"table": meta["table"], "datastack": meta["datastack"], "column": meta["column"],
            "index": {k: v for k, v in meta.items() if k not in ("built", "stale")}, "stale": meta["stale"],
            "built": meta["built"]}


@router.get("/usage", access=Need.authenticated(),
            summary="Requests and bytes served in the current quota window")
async def usage(request: Request, user: str | None = None) -> Usage:
    p = principal_of(request)
    quotas = request.app.state.quotas
    if user and user != p.name:
        request.app.state.lake.access.require(p, None, "admin", "reading another user's usage")
        p = await _run(request.app.state.lake.access.principal, user)
    return await _run(quotas.usage, p)


@router.get("/audit", access=Need.self_checked("lake admins see every event, others their own"),
            summary="Audit log (lake admins; others see their own events)")
async def audit(request: Request, action: str | None = None, datastack: str | None = None, user: str | None = None,
                limit: Limit = 200) -> AuditLog:
    p = principal_of(request)
    acc = request.app.state.lake.access
    if not p.is_admin:
        user = p.name
    await _run(getattr(request.app.state, "data_state", None).flush) if getattr(
        request.app.state, "data_state", None) else None
    events = await _run(acc.audit_log, user=user, action=action, datastack=datastack, limit=limit)
    return {"count": len(events), "events": events}


def install(app, lake, auth: bool = False) -> None:
    """Wire the registry, ``/data`` and access control into ``app`` (called by ``create_app``).

    Always: the ``/api/v1/features…``, ``/api/v1/usage``, ``/api/v1/audit`` and ``/data/…`` routes,
    ``app.state.quotas`` and ``app.state.auth``. With ``auth``: :class:`neurolake.access.http.AuthMiddleware`
    (authentication and quotas) on every request; each route's declared need is checked by the route itself
    (:mod:`neurolake.server.access`), which refuses every non-public route when ``app.state.auth`` is set
    and the middleware left no principal. Call it before the CORS middleware is added, so that CORS stays
    the outermost layer.
    """
    from neurolake.access.quotas import Quotas
    from neurolake.server import data

    app.state.quotas = Quotas(lake)
    app.state.auth = bool(auth)
    app.include_router(router)
    app.include_router(data.router)
    if auth:
        from neurolake.access.http import AuthMiddleware
        from neurolake.storage.signing import lake_key

        lake_key(lake)  # at start: moves a key an older version kept in the catalog out; Conflict on a key mismatch

        app.add_middleware(AuthMiddleware, lake=lake, quotas=app.state.quotas)
