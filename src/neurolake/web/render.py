"""Shared machinery of the web UI: templates, page context, CSRF, Plotly figures, static files.

- :func:`page` renders a template of ``web/templates`` with the common context: ``nav`` (the explorers),
  ``user`` (the principal's name, or None when a token is needed), ``auth`` (server under ``--auth``),
  ``csrf`` (the token forms must echo), ``request``, ``nl_version``, ``crumbs`` (``[(label, href|None)]``
  breadcrumbs shown above the page when given);
- :func:`check_csrf` refuses a state-changing form whose ``csrf`` field does not match the request's CSRF
  cookie (double-submit cookie: the cookie is ``SameSite=Strict``, so another site can neither read it
  nor send it) — 403;
- :func:`figure` turns a Plotly figure into an HTML ``<div>`` (plotly.js is loaded once by the base
  template from ``/ui/static/plotly.min.js``, served from the installed ``plotly`` package: no CDN);
- :class:`PageRoute`: the route class of page routers (``APIRouter(route_class=PageRoute)``): an error
  of a page (401 without a token, 403, 404, 400 of a malformed query parameter) is answered as an HTML
  page with the same status, and under ``--auth`` a missing or refused token redirects to
  ``/ui/login?next=<the page>`` (303); API routes keep their JSON errors;
- ``/ui/static/{name}``: files of ``web/static``, ``plotly.min.js`` (from the ``plotly`` package) and the
  Swagger UI / ReDoc assets of ``/docs`` and ``/redoc`` (from the ``fastapi-offline`` package).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from neurolake import __version__
from neurolake.errors import NeurolakeError, NotFound, PermissionDenied, Unauthorized
from neurolake.server.access import Need, request_principal
from neurolake.server.routing import APIRouter

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CSRF_COOKIE = "neurolake_csrf"
NAV = [("Home", "/ui"), ("Image", "/ui/image"), ("Graph", "/ui/graph"), ("Vectors", "/ui/vectors"),
       ("Query", "/ui/query"), ("Features", "/ui/features"), ("Runs", "/ui/runs"), ("API", "/docs")]

DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def wants_html(request: Request) -> bool:
    """Is an error of this request answered as an HTML page: a page under ``/ui``, or a request whose
    ``Accept`` header asks for ``text/html`` (a browser); API clients keep the JSON error body."""
    return request.url.path.startswith("/ui") or "text/html" in request.headers.get("accept", "")


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the login page, coming back to this page (path and query) after logging in."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/ui/login?next=" + quote(here, safe=""), status_code=303)


async def error_page(request: Request, exc: Exception) -> Response:
    """The HTML answer of a page's error (see :class:`PageRoute`)."""
    from starlette.concurrency import run_in_threadpool

    from neurolake.server.errors import public_error_async

    if isinstance(exc, RequestValidationError):
        errs = [{"field": ".".join(str(p) for p in e.get("loc", [])[1:]) or "request", "message": e.get("msg")}
                for e in exc.errors()]
        code, status = "invalid_argument", 400
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errs) or "invalid request"
    else:
        if isinstance(exc, Unauthorized) and getattr(request.app.state, "auth", False):
            return login_redirect(request)
        exc = await public_error_async(request, exc)  # names and folders the requester may see
        code, status, message = exc.code, exc.http_status, exc.message
    titles = {400: "Bad request", 401: "Log in", 403: "Not allowed", 404: "Not found", 409: "Conflict",
              410: "Gone", 413: "Too large", 429: "Too many requests"}
    return await run_in_threadpool(page, request, "browse_error.html", status,
                                   title=titles.get(status, "Error"), error_code=code, status=status,
                                   message=message)


class PageRoute(APIRoute):
    """Route class of page routers: errors become HTML pages (:func:`error_page`) for requests that
    :func:`wants_html`; a 401 under ``--auth`` redirects to ``/ui/login?next=…``."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except (NeurolakeError, RequestValidationError) as exc:
                if not wants_html(request):
                    raise
                return await error_page(request, exc)

        return wrapped


router = APIRouter(route_class=PageRoute)


@functools.lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
    env.filters.update(num=_num, size=_size, when=_when)
    return env


def _num(v: Any) -> str:
    """``1981`` → ``"1,981"``; floats to 4 significant digits; None → ``"–"``."""
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def _size(n: Any) -> str:
    """Bytes as text: ``23241`` → ``"22.7 KiB"``."""
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(v: Any) -> str:
    """An ISO-8601 time as ``2026-11-30 22:55:26 UTC`` (text that is no time unchanged; None → ``"–"``)."""
    import datetime as dt

    from neurolake.base.time import parse_timestamp
    from neurolake.errors import InvalidArgument

    if v is None or v == "":
        return "–"
    if isinstance(v, int | float) or (isinstance(v, str) and not v[:4].isdigit()):
        return str(v)
    try:
        t = parse_timestamp(v)  # naive = UTC, as everywhere in neurolake
    except InvalidArgument:
        return str(v)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie, or a new one (set on the response by :func:`page`)."""
    tok = request.cookies.get(CSRF_COOKIE)
    if not tok:
        tok = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(24)
        request.state.new_csrf = tok
    return tok


def check_csrf(request: Request, given: str | None) -> None:
    """Raise PermissionDenied (403) unless ``given`` (the form's ``csrf`` field) equals the CSRF cookie."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not given or not secrets.compare_digest(cookie, str(given)):
        raise PermissionDenied("the form's CSRF token is missing or does not match; reload the page and retry",
                               field="csrf")


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the common context plus ``context``."""
    p = request_principal(request)
    lake = request.app.state.lake
    ctx = {"request": request, "nav": NAV, "user": None if p is None else p.name,
           "auth": bool(getattr(request.app.state, "auth", False)), "csrf": csrf_token(request),
           "lake": lake, "nl_version": __version__, "crumbs": None, **context}
    html = environment().get_template(template).render(**ctx)
    resp = HTMLResponse(html, status_code=status_code)
    new = getattr(request.state, "new_csrf", None)
    if new:
        resp.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", path="/")
    return resp


def figure(fig, height: int | None = None) -> str:
    """A Plotly figure as an HTML ``<div>`` (plotly.js comes from the base template)."""
    if height is not None:
        fig.update_layout(height=height)
    return fig.to_html(include_plotlyjs=False, full_html=False, config={"responsive": True})


@functools.lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


@router.get("/ui/static/{name}", access=Need.public("static assets of the web UI"), include_in_schema=False)
def static(name: str) -> Response:
    if name == "plotly.min.js":
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
    if name in DOCS_ASSETS:  # /docs and /redoc, offline
        return Response(_docs_asset(name), media_type=_media(name), headers={"Cache-Control": "public, max-age=86400"})
    base = STATIC
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        raise NotFound(f"no static file {name!r}", field="name", value=name)
    return Response(path.read_bytes(), media_type=_media(name), headers={"Cache-Control": "public, max-age=3600"})


def _media(name: str) -> str:
    return {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}.get(
        Path(name).suffix, "application/octet-stream")


REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"  # ReDoc's sidebar logo: fetched from a CDN


@functools.lru_cache(maxsize=len(DOCS_ASSETS))
def _docs_asset(name: str) -> bytes:
    """A Swagger UI / ReDoc file of the installed ``fastapi-offline`` package. ReDoc's bundle would fetch
    its sidebar logo from a CDN: that URL becomes an empty inline SVG, so the page makes no outside request."""
    import fastapi_offline

    data = (Path(fastapi_offline.__file__).resolve().parent / "static" / name).read_bytes()
    if name == "redoc.standalone.js":
        data = data.replace(REDOC_LOGO, b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E")
    return data
