"""``APIRouter`` for every router of the server: FastAPI's, plus a literal-prefix check before matching.

FastAPI (0.16x) tries each included router in turn, and each router tries the regex of every one of
its routes (about 3 µs each); with ~140 routes a request for a route near the end paid ~0.4 ms before
its handler ran (``benchmarks/registry.py``). This router first compares the request path with the
literal prefixes of its routes (the part of each path before its first ``{``) and answers "no match"
at once when none fits; otherwise FastAPI's own matching runs unchanged (405, path parameters, etc.).
"""

from __future__ import annotations

import fastapi
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class APIRouter(fastapi.APIRouter):
    """:class:`fastapi.APIRouter` that skips its routes for paths outside their literal prefixes."""

    _prefix_cache: tuple[int, tuple[str, ...]] = (-1, ())

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
