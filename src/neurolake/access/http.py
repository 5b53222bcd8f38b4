"""The one global HTTP mechanism of ``neurolake serve --auth``: authenticate, authorise, meter.

:class:`AuthMiddleware` (pure ASGI, installed by ``create_app(lake, auth=True)``) runs before every
route of every router, so the routers of the other protocols need no change:

1. **Authenticate.** The token comes from ``Authorization: Bearer <t>`` or ``Authorization: Token <t>``
   (BossDB/intern style) or the ``?token=<t>`` query parameter (for clients that cannot set headers; the
   answer then sets an ``HttpOnly; SameSite=Strict`` cookie ``neurolake_token`` that later requests of a
   browser page — e.g. the viewer's assets and data fetches — present instead).
   Missing/unknown/expired/revoked → 401 (``WWW-Authenticate: Bearer``). Exempt: ``/data/…`` (signed
   URLs carry their own credential, checked by :mod:`neurolake.server.data`), ``/docs``,
   ``/openapi.json`` and ``/docs/oauth2-redirect`` (API description only), CORS preflights.
2. **Authorise.** The request maps to ``(datastack, read|write)``: the datastack is the first path
   segment equal to the name of a datastack of the lake (``/ocp/ca/{ds}/…``, ``/precomputed/{ds}/…``,
   ``/zarr/{ds}/…``, ``/v1/cutout/{ds}/…``, ``/catmaid/{ds}/…``, ``/api/v1/datastacks/{ds}``, …);
   GET/HEAD are reads, except :data:`WRITE_GETS`; other methods are writes, except the query-style
   POSTs in :data:`READ_POSTS`. A read needs *viewer* (or a public datastack), a write *editor*; a write
   outside any datastack needs a lake admin. ``/api/v1/features…`` and ``/api/v1/usage`` check roles
   themselves (the datastack is in the body or the entry).
3. **Meter.** Quotas are checked before the route runs (429 with limit, usage and reset time, plus
   ``Retry-After``) and every request plus its response body bytes is counted after it
   (:class:`~neurolake.access.quotas.Quotas`).

The principal is put in ``request.state.principal`` for routers that want it
(:func:`neurolake.server.deps.principal_of`).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from neurolake.access.core import access
from neurolake.errors import NeurolakeError, PermissionDenied, QuotaExceeded

EXEMPT = re.compile(r"^/(data/|docs$|docs/|openapi\.json$|redoc$)")
SELF_CHECKED = re.compile(r"^/api/v1/(features|usage|audit)(/|$)")
READ_POSTS = re.compile(r"(/query/?$|/query/|roots_binary|lineage_graph|/leaves|/api/v1/sql|/api/v1/query"
                        r"|is_latest_roots|root_timestamps|past_id_mapping|^/segmentation/api/v1/table/[^/]+/roots$)")
WRITE_GETS = re.compile(r"^/v1/reserve/")


COOKIE = "neurolake_token"


def _token(scope: Scope) -> tuple[str | None, str]:
    """``(token, where)`` with ``where`` one of header, query, cookie, none."""
    cookie = None
    for k, v in scope.get("headers") or []:
        if k == b"authorization":
            text = v.decode("latin-1").strip()
            scheme, _, rest = text.partition(" ")
            if scheme.lower() in ("bearer", "token") and rest.strip():
                return rest.strip(), "header"
            return (text or None), "header"
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                if name == COOKIE and val:
                    cookie = val
    qs = scope.get("query_string") or b""
    if b"token=" in qs:
        vals = parse_qs(qs.decode("latin-1")).get("token")
        if vals:
            return vals[0], "query"
    if cookie:
        return cookie, "cookie"
    return None, "none"


async def _send_error(send: Send, scope: Scope, exc: NeurolakeError, headers: list | None = None) -> None:
    if scope["path"].startswith("/v1/"):  # BossDB clients expect BossDB's error body
        body = {"status": exc.http_status, "code": {401: 3001, 403: 3002, 429: 3003}.get(exc.http_status, 9000),
                "message": exc.message}
    else:
        body = exc.to_dict()
    data = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())] + (headers or [])
    await send({"type": "http.response.start", "status": exc.http_status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})


class AuthMiddleware:
    """See the module docstring. ``app.state.quotas`` must hold the app's :class:`Quotas`."""

    def __init__(self, app: ASGIApp, lake, quotas) -> None:
        self.app = app
        self.lake = lake
        self.access = access(lake)
        self.quotas = quotas

    def _authorise(self, scope: Scope):
        p = self.access.authenticate(_token(scope)[0])
        path, method = scope["path"], scope["method"]
        if SELF_CHECKED.match(path):
            self.quotas.check(p)
            return p
        write = (method not in ("GET", "HEAD") and not READ_POSTS.search(path)) or bool(WRITE_GETS.match(path))
        known = self.access.public_datastacks()
        ds = next((seg for seg in path.split("/") if seg in known), None)
        need = "editor" if write else "viewer"
        if ds is None and write:
            need = "admin"
        if not self.access.allowed(p, ds, need):
            have = p.role_on(ds) or "none"
            where = f"datastack {ds!r}" if ds else "this lake"
            raise PermissionDenied(f"user {p.name!r} has role {have} on {where}; {method} {path} needs {need}",
                                   user=p.name, datastack=ds, role=have, required=need)
        self.quotas.check(p)
        return p

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or EXEMPT.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            p = await anyio.to_thread.run_sync(self._authorise, scope)
        except QuotaExceeded as exc:
            await _send_error(send, scope, exc, [(b"retry-after", str(exc.detail.get("retry_after_s", 1)).encode())])
            return
        except NeurolakeError as exc:
            extra = [(b"www-authenticate", b'Bearer realm="neurolake"')] if exc.http_status == 401 else []
            await _send_error(send, scope, exc, extra)
            return
        scope.setdefault("state", {})["principal"] = p
        sent = 0
        token, where = _token(scope)
        set_cookie = where == "query"  # a browser opened ?token=…: later requests of the page carry a cookie

        async def counting_send(message) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif set_cookie and message["type"] == "http.response.start":
                cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if self.quotas.add(p, 1, sent, flush=False):  # counting is in memory; the catalog write is not
                await anyio.to_thread.run_sync(self.quotas.flush)
