"""Error responses: every NeurolakeError becomes ``{"error", "message", "detail"}`` with its status.

Unhandled exceptions are answered 500 ``{"error": "internal", ...}`` by the outermost CORS middleware
(:class:`neurolake.server.http.CORSMiddleware`), so that they carry CORS headers too, and logged by the
server with their traceback. Under ``--auth`` every error answer passes :func:`public_error` first, which
keeps names the requester may not read and the lake's folder out of it."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurolake.base.names import not_found
from neurolake.errors import NeurolakeError, NotFound, PermissionDenied


def error_body(code: str, message: str, detail: dict | None = None) -> dict:
    return {"error": code, "message": message, "detail": detail or {}}


def _visible_names(lake, p, k) -> list[str]:
    """The names of ``k`` (:class:`neurolake.base.names.KnownNames`) that principal ``p`` may read."""
    from neurolake.server.access import may_read

    names = list(k.names)
    if k.kind == "datastack":
        return [n for n in names if may_read(lake, p, n)]
    ds = k.within[1] if k.within and k.within[0] in ("datastack", "collection") else k.detail.get("datastack")
    if ds is None:
        return names  # lists built for the principal already (feature tables of every datastack)
    if not may_read(lake, p, ds):
        return []
    if k.kind in ("annotation table", "table"):  # live tables and their frozen copies in versions
        from neurolake.annotations import get_table

        out = []
        for n in names:
            try:
                lake.access.require_table(p, get_table(lake, ds, n), "read")
            except PermissionDenied:
                continue
            except NotFound:
                pass  # not a live table: the datastack role decides
            out.append(n)
        return out
    return names


def _scrub(text: str, roots: list[str]) -> str:
    for r in roots:
        text = text.replace(r, "<lake>")
    return text


def public_error(request: Request, exc: NeurolakeError) -> NeurolakeError:
    """The error as the requester may see it — THE one place every error answer of an ``--auth`` server
    passes (this module's handler and BossDB's route class). For a principal who is not a lake admin:

    - an "unknown …; known: …" error (:func:`neurolake.base.names.not_found`, whose arguments the error
      keeps as ``.known``) is rebuilt with only the names the principal may read: datastacks they may
      read (:func:`neurolake.server.access.may_read`); names inside a datastack they may not read: none;
      annotation tables (and their frozen copies): those whose own read permission admits them;
    - the lake folder (as given and resolved) is replaced by ``<lake>`` in the message and detail.

    Without ``--auth`` (the local user) and for lake admins the error is unchanged. Does catalog I/O
    (call it off the event loop)."""
    p = (request.scope.get("state") or {}).get("principal")
    if p is None or p.is_admin or p.local:
        return exc
    lake = request.app.state.lake
    k = getattr(exc, "known", None)
    if k is not None:
        names = _visible_names(lake, p, k)
        if names != list(k.names):
            exc = not_found(k.kind, k.name, names, within=k.within, hint=k.hint, **k.detail)
    roots = sorted({str(lake.root), os.path.realpath(lake.root)}, key=len, reverse=True)
    text = json.dumps(exc.detail, default=str)
    if any(r in exc.message or r in text for r in roots):
        exc.message = _scrub(exc.message, roots)
        exc.args = (exc.message,)
        exc.detail = json.loads(_scrub(text, roots))
    return exc


def needs_redaction(request: Request, exc: NeurolakeError) -> bool:
    """Cheap test (no I/O): may :func:`public_error` change ``exc``?"""
    p = (request.scope.get("state") or {}).get("principal")
    return p is not None and not p.is_admin and not p.local


async def public_error_async(request: Request, exc: NeurolakeError) -> NeurolakeError:
    """:func:`public_error` in the thread pool (only when it may change anything)."""
    if not needs_redaction(request, exc):
        return exc
    return await run_in_threadpool(public_error, request, exc)


def install(app: FastAPI) -> None:
    @app.exception_handler(NeurolakeError)
    async def _neurolake(request: Request, exc: NeurolakeError):
        exc = await public_error_async(request, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = [{"field": ".".join(str(p) for p in e.get("loc", [])), "message": e.get("msg")} for e in exc.errors()]
        msg = "; ".join(f"{e['field']}: {e['message']}" for e in errs) or "invalid request"
        return JSONResponse(error_body("invalid_argument", msg, {"errors": errs}), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        msg = str(exc.detail) if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
        return JSONResponse(error_body(code, msg), status_code=exc.status_code, headers=getattr(exc, "headers", None))

