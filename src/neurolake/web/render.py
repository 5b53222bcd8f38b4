"""Shared machinery of the web UI: templates, page context, CSRF, Plotly figures, static files.

- :func:`page` renders a template of ``web/templates`` with the common context: ``nav`` (the explorers),
  ``user`` (the principal's name, or None when a token is needed), ``auth`` (server under ``--auth``),
  ``csrf`` (the token forms must echo), ``request``;
- :func:`check_csrf` refuses a state-changing form whose ``csrf`` field does not match the request's CSRF
  cookie (double-submit cookie: the cookie is ``SameSite=Strict``, so another site can neither read it
  nor send it) — 403;
- :func:`figure` turns a Plotly figure into an HTML ``<div>`` (plotly.js is loaded once by the base
  template from ``/ui/static/plotly.min.js``, served from the installed ``plotly`` package: no CDN);
- ``/ui/static/{name}``: files of ``web/static``.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from neurolake.errors import NotFound, PermissionDenied
from neurolake.server.access import Need, request_principal
from neurolake.server.routing import APIRouter

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CSRF_COOKIE = "neurolake_csrf"
NAV = [("Home", "/ui"), ("Image", "/ui/image"), ("Graph", "/ui/graph"), ("Vectors", "/ui/vectors"),
       ("Query", "/ui/query"), ("Features", "/ui/features"), ("Runs", "/ui/runs"), ("API", "/docs")]

router = APIRouter()


@functools.lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
    return env


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
           "lake": lake, **context}
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
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise NotFound(f"no static file {name!r}", field="name", value=name)
    media = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}.get(
        path.suffix, "application/octet-stream")
    return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "public, max-age=3600"})
