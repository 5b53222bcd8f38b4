"""The one global HTTP mechanism of ``neurolake serve --auth``: authenticate and meter.

:class:`AuthMiddleware` (pure ASGI, installed by ``create_app(lake, auth=True)``) runs before every
route of every router:

1. **Authenticate.** The token comes from ``Authorization: Bearer <t>`` or ``Authorization: Token <t>``
   (BossDB/intern style) or the ``?token=<t>`` query parameter (for clients that cannot set headers; the
   answer then sets an ``HttpOnly; SameSite=Strict`` cookie ``neurolake_token`` that later requests of a
   browser page — e.g. the viewer's assets and data fetches — present instead). The principal goes to
   ``request.state.principal``; a missing/unknown/expired/revoked token leaves the 401 error in
   ``request.state.auth_error`` instead.
2. **Authorise: not here.** Each route declares its need (``access=Need...`` on its decorator, see
   :mod:`neurolake.server.access`) and the route's own dependency checks it against the principal, after
   routing, from the route that matched — never from the text of the URL. That check raises the 401 left
   here unless the route is public (``/data`` signed URLs, ``/docs``, ``/openapi.json``); this middleware
   adds ``WWW-Authenticate: Bearer`` to the 401 answer (and ``Retry-After`` to a 429).
3. **Meter.** Quotas are checked before the route runs (a used-up quota leaves a
   :class:`~neurolake.errors.QuotaExceeded` in ``request.state.quota_error``, raised by the route's check
   after the role check: 429 with limit, usage and reset time, plus ``Retry-After``) and every request
   plus its response body bytes is counted after it (:class:`~neurolake.access.quotas.Quotas`), except
   on public routes (``/data`` meters the signing user itself).

CORS preflights (``OPTIONS``) are answered by the outer CORS middleware and never reach this one.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from neurolake.errors import NeurolakeError, QuotaExceeded

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


class AuthMiddleware:
    """See the module docstring. ``quotas`` is the app's :class:`~neurolake.access.quotas.Quotas`."""

    def __init__(self, app: ASGIApp, lake, quotas) -> None:
        self.app = app
        self.lake = lake
        self.access = lake.access
        self.quotas = quotas

    def _authenticate(self, token: str | None):
        """``(principal, auth_error, quota_error)``: one of the first two is None."""
        try:
            p = self.access.authenticate(token)
        except NeurolakeError as exc:
            return None, exc, None
        try:
            self.quotas.check(p)
        except QuotaExceeded as exc:
            return p, None, exc
        return p, None, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        token, where = _token(scope)
        if token is None:  # no I/O: no thread hop
            p, auth_error, quota_error = self._authenticate(None)
        else:
            p, auth_error, quota_error = await anyio.to_thread.run_sync(self._authenticate, token)
        state = scope.setdefault("state", {})
        state["principal"], state["auth_error"], state["quota_error"] = p, auth_error, quota_error
        sent = 0
        set_cookie = p is not None and where == "query"  # a browser opened ?token=…: later requests carry a cookie

        async def guarded_send(message) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                extra = []
                if message["status"] == 401 and auth_error is not None:
                    extra.append((b"www-authenticate", b'Bearer realm="neurolake"'))
                elif message["status"] == 429 and quota_error is not None:
                    extra.append((b"retry-after", str(quota_error.detail.get("retry_after_s", 1)).encode()))
                if set_cookie:
                    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")
                    extra.append((b"set-cookie", cookie))
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            need = getattr(scope.get("route"), "access_need", None)
            if p is not None and getattr(need, "role", None) != "public":
                if self.quotas.add(p, 1, sent, flush=False):  # counting is in memory; the catalog write is not
                    await anyio.to_thread.run_sync(self.quotas.flush)
            elif p is not None and quota_error is None:
                self.quotas.release(p)  # PostgreSQL: check() counted it; public routes are not metered
