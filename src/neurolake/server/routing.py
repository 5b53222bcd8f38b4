"""``APIRouter`` for every router of the server: FastAPI's, plus declared access needs and a literal-prefix
check before matching.

Every route declares its access need on its decorator, ``@router.get(path, access=Need.read("datastack"))``
(:class:`neurolake.server.access.Need`; ``get``/``post``/``put``/``patch``/``delete``/``api_route``/
``add_api_route`` take ``access=`` and do not pass it to FastAPI). The need is kept on the route
(``route.access_need``) and :func:`neurolake.server.access.check_route_access` is the route's first
dependency; a route declared without a need gets the check too, which refuses every request to it, and
``create_app`` refuses to build an app that has one.

FastAPI (0.16x) tries each included router in turn, and each router tries the regex of every one of
its routes (about 3 µs each); with ~140 routes a request for a route near the end paid ~0.4 ms before
its handler ran (``benchmarks/registry.py``). This router first compares the request path with the
literal prefixes of its routes (the part of each path before its first ``{``) and answers "no match"
at once when none fits; otherwise FastAPI's own matching runs unchanged (405, path parameters, etc.).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi
from fastapi import Depends
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope

from neurolake.server.access import Need, check_route_access
from neurolake.server.models import ErrorBody, error_responses, response_options

ACCESS_CHECK = Depends(check_route_access)


class APIRouter(fastapi.APIRouter):
    """:class:`fastapi.APIRouter` that skips its routes for paths outside their literal prefixes."""

    _prefix_cache: tuple[int, tuple[str, ...]] = (-1, ())

    def add_api_route(self, path: str, endpoint: Callable[..., Any], *, access: Need | None = None,
                      **kw: Any) -> None:
        """FastAPI's ``add_api_route`` plus ``access``: the route's :class:`Need` (ValueError when it names
        a datastack path parameter the path does not have)."""
        if access is not None and not isinstance(access, Need):
            raise TypeError(f"access= of {path!r} must be a neurolake.server.access.Need, not {access!r}")
        kw["dependencies"] = [ACCESS_CHECK, *(kw.get("dependencies") or [])]
        kw = response_options(endpoint, kw)  # answers as returned; binary media types in OpenAPI (server.models)
        # the error statuses of every route (400/401/403/404/409/410/413/422/429) with their body schema:
        # {"error", "message", "detail"}, or the route class's own (BossDB's {"status", "code", "message"})
        errors = error_responses(getattr(kw.get("route_class_override") or self.route_class, "error_model", ErrorBody))
        kw["responses"] = {**errors, **(kw.get("responses") or {})}
        super().add_api_route(path, endpoint, **kw)
        route = self.routes[-1]
        if access is not None and isinstance(access.datastack, str) and access.datastack not in getattr(
                route, "param_convertors", {}):
            self.routes.pop()
            raise ValueError(f"access need of {route.path!r} reads the datastack from path parameter "
                             f"{access.datastack!r}, which the path does not have")
        route.access_need = access

    def api_route(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        def decorator(func: Callable) -> Callable:
            self.add_api_route(path, func, access=access, **kw)
            return func

        return decorator

    def get(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        return self.api_route(path, access=access, methods=["GET"], **kw)

    def post(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        return self.api_route(path, access=access, methods=["POST"], **kw)

    def put(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        return self.api_route(path, access=access, methods=["PUT"], **kw)

    def patch(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        return self.api_route(path, access=access, methods=["PATCH"], **kw)

    def delete(self, path: str, *, access: Need | None = None, **kw: Any) -> Callable:
        return self.api_route(path, access=access, methods=["DELETE"], **kw)

    def _literal_prefixes(self) -> tuple[str, ...]:
        n, prefixes = self._prefix_cache
        if n != len(self.routes):  # routes are added by decorators after construction
            paths = [getattr(r, "path", None) for r in self.routes]
            if any(p is None for p in paths):
                prefixes = ("",)  # a route without a path (mount, host): never skip
            else:
                prefixes = tuple(sorted({p.split("{", 1)[0] for p in paths}))
            self._prefix_cache = (len(self.routes), prefixes)
        return prefixes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("type") in ("http", "websocket") and not get_route_path(scope).startswith(
                self._literal_prefixes()):
            return Match.NONE, {}
        return super().matches(scope)


# -- fast paths ------------------------------------------------------------------------------------------
FAST_ATTR = "__neurolake_fast_path__"


def fast_path(endpoint: Callable) -> Callable:
    """Mark an ``async`` endpoint whose parameters are only path parameters (``str``) and ``request``: when the
    server runs without ``--auth``, :class:`FastRoutes` calls it directly for a request that it alone matches,
    skipping FastAPI's per-request dependency solving (about 0.13 ms of the 0.18 ms of CPU a 150 kB Zarr range
    request took). Put it *below* the route decorator."""
    setattr(endpoint, FAST_ATTR, True)
    return endpoint


class FastRoutes:
    """Pure-ASGI middleware: hot data routes (chunks, shard ranges, tiles: endpoints marked :func:`fast_path`)
    without FastAPI's per-request machinery, with exactly FastAPI's answer.

    A request takes the fast path only when (1) the app runs without ``--auth`` (under ``--auth`` every
    request goes through the access check of its route), (2) the request's path and method are matched by
    the marked route's own regex and methods, and by *no other route of the app* (so route order can never
    make the fast path answer for a route FastAPI would have chosen; otherwise FastAPI routes as usual), and
    (3) the path parameters are converted by the route's own convertors (``app.state.fast_routes = False``
    turns it off). Errors raised by the endpoint are
    answered by the app's own exception handlers (the same JSON bodies); anything else propagates as before.
    """

    def __init__(self, app, fastapi_app) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._table: tuple[int, list] | None = None

    def _build(self) -> list:
        import inspect

        from neurolake.server.access import app_routes

        routes = app_routes(self.fastapi_app)
        if any(getattr(r, "path_regex", None) is None for r in routes):
            return []  # a route we cannot match (host, …): never take the fast path
        out = []
        for r in routes:
            endpoint = getattr(r, "endpoint", None)
            if not getattr(endpoint, FAST_ATTR, False) or not inspect.iscoroutinefunction(endpoint):
                continue
            params = list(inspect.signature(endpoint).parameters)
            if "request" not in params or set(params) - {"request"} != set(r.param_convertors):
                continue
            prefix = r.path.split("{", 1)[0]
            rivals = [o for o in routes if o is not r and (o.path.split("{", 1)[0].startswith(prefix)
                                                          or prefix.startswith(o.path.split("{", 1)[0]))]
            out.append((prefix, r, endpoint, rivals))
        return out

    def _table_now(self) -> list:
        n = len(self.fastapi_app.router.routes)
        if self._table is None or self._table[0] != n:
            self._table = (n, self._build())
        return self._table[1]

    async def __call__(self, scope, receive, send) -> None:
        state = self.fastapi_app.state
        if scope["type"] != "http" or getattr(state, "auth", False) or not getattr(state, "fast_routes", True):
            await self.app(scope, receive, send)
            return
        path, method = get_route_path(scope), scope["method"]
        for prefix, route, endpoint, rivals in self._table_now():
            if not path.startswith(prefix) or method not in route.methods:
                continue
            m = route.path_regex.match(path)
            if m is None:
                continue
            if any((o.path_regex.match(path) is not None
                    and (getattr(o, "methods", None) is None or method in o.methods)) for o in rivals):
                break  # another route answers this path too: FastAPI decides
            await self._call(scope, receive, send, route, endpoint, m)
            return
        await self.app(scope, receive, send)

    async def _call(self, scope, receive, send, route, endpoint, m) -> None:
        from starlette.requests import Request

        params = {k: route.param_convertors[k].convert(v) for k, v in m.groupdict().items()}
        scope = {**scope, "path_params": params, "route": route, "endpoint": endpoint}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(**params, request=request)
        except Exception as exc:
            handlers = self.fastapi_app.exception_handlers
            handler = next((handlers[c] for c in type(exc).__mro__[:-2] if c in handlers), None)  # not Exception
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect_awaitable(response):
                response = await response
        await response(scope, receive, send)


def inspect_awaitable(obj: Any) -> bool:
    import inspect

    return inspect.isawaitable(obj)
