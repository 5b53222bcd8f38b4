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
