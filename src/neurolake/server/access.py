"""Access needs declared per route: what a request must hold to reach a handler under ``serve --auth``.

Every route of every router declares a :class:`Need` on its decorator
(``@router.post(path, access=Need.write("datastack"))``; :class:`neurolake.server.routing.APIRouter`
takes the keyword). The router adds :func:`check_route_access` as the first dependency of the route; it
reads the need from the route that matched (``request.scope["route"]``), never from the URL text, so a
datastack, layer or table *named* ``query`` or ``roots`` cannot turn a write into a read.

Needs:

- ``Need.read(ds)`` (role *viewer* on the datastack, or a public datastack), ``Need.write(ds)`` (*editor*),
  ``Need.admin(ds=None)`` (admin of the datastack; without ``ds`` a lake admin). ``ds`` names the path
  parameter holding the datastack (``"datastack"``, BossDB's ``"c"``, CAVE's ``"table_id"``) or is a
  callable of the path parameters (e.g. :func:`before_at` for the viewer's ``{ds}@zarr3`` tokens).
- ``Need.authenticated()``: any valid token (lake-wide metadata, ``/api/v1/usage``).
- ``Need.self_checked(why)``: any valid token; the handler authorises itself (feature-registry routes
  take the datastack from the body and call the registry as the principal).
- ``Need.public(why)``: no token (the API description, ``/data`` signed URLs that check their signature).

Authentication happens in :class:`neurolake.access.http.AuthMiddleware`, which leaves the principal (or
the 401/429 error it found) in ``request.state``; this check raises that error unless the route is
public, then the role check raises :class:`~neurolake.errors.PermissionDenied` (403; detail user, role,
datastack, required), or :class:`~neurolake.errors.NotFound` for a datastack that does not exist.
Without ``--auth`` the principal is the local user, who has every right. :func:`check_app_routes`
(called by ``create_app``) refuses an app with a route that declares no need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request

from neurolake.access.core import RANK
from neurolake.errors import PermissionDenied, Unauthorized

ROLES = ("viewer", "editor", "admin")
KINDS = (*ROLES, "authenticated", "self", "public")
DatastackOf = str | Callable[[Mapping[str, str]], str | None] | None


@dataclass(frozen=True)
class Need:
    """What a route needs: ``role`` one of viewer, editor, admin, authenticated, self, public; ``datastack``
    the path parameter (or a callable of the path parameters) giving the datastack the role applies to;
    ``why`` the reason a route is public or checks itself. Raises ValueError for a malformed need."""

    role: str
    datastack: DatastackOf = None
    why: str = ""

    def __post_init__(self) -> None:
        if self.role not in KINDS:
            raise ValueError(f"access need {self.role!r} is not one of {', '.join(KINDS)}")
        if self.role in ("viewer", "editor") and not self.datastack:
            raise ValueError(f"a {self.role} need must say where the datastack is (path parameter or callable)")
        if self.role in ("public", "self") and not self.why:
            raise ValueError(f"a {self.role} route must say why (Need.{'public' if self.role == 'public' else 'self_checked'}(why))")

    @classmethod
    def read(cls, datastack: DatastackOf = "datastack") -> Need:
        """Role viewer on the datastack (or the datastack is public)."""
        return cls("viewer", datastack)

    @classmethod
    def write(cls, datastack: DatastackOf = "datastack") -> Need:
        """Role editor on the datastack."""
        return cls("editor", datastack)

    @classmethod
    def admin(cls, datastack: DatastackOf = None) -> Need:
        """Admin of the datastack; without one, a lake admin."""
        return cls("admin", datastack)

    @classmethod
    def authenticated(cls) -> Need:
        """Any valid token."""
        return cls("authenticated")

    @classmethod
    def self_checked(cls, why: str) -> Need:
        """Any valid token; the handler authorises the principal itself."""
        return cls("self", why=why)

    @classmethod
    def public(cls, why: str) -> Need:
        """No token needed."""
        return cls("public", why=why)

    def datastack_of(self, path_params: Mapping[str, str]) -> str | None:
        """The datastack of a request with these path parameters (None when the need has none)."""
        if self.datastack is None:
            return None
        if callable(self.datastack):
            return self.datastack(path_params)
        return path_params.get(self.datastack)

    def describe(self) -> str:
        where = self.datastack if isinstance(self.datastack, str) else getattr(self.datastack, "__name__", "")
        return self.role + (f"({where})" if where else "")


def before_at(param: str) -> Callable[[Mapping[str, str]], str | None]:
    """The datastack of path parameter ``param`` holding a viewer token, ``ds`` or ``ds@zarr3``:
    ``Need.read(before_at("token"))``."""

    def datastack(path_params: Mapping[str, str]) -> str | None:
        value = path_params.get(param)
        return value.partition("@")[0] if value else None

    datastack.__name__ = f"{param}_before_at"
    return datastack


def _deny(p, ds: str | None, need: str, request: Request) -> PermissionDenied:
    have = p.role_on(ds) or "none"
    where = f"datastack {ds!r}" if ds else "this lake"
    return PermissionDenied(f"user {p.name!r} has role {have} on {where}; {request.method} {request.url.path} "
                            f"needs {need}", user=p.name, datastack=ds, role=have, required=need)


def _allowed_slow(lake, p, ds: str, role: str) -> bool:
    """:meth:`Access.allowed` plus NotFound for a datastack that does not exist (catalog I/O: off the loop)."""
    acc = lake.access
    if ds not in acc.public_datastacks():
        lake.datastack(ds)  # raises NotFound naming the known datastacks; a brand-new one is not public yet
        have = p.roles.get(ds)
        return have is not None and RANK[have] >= RANK[role]
    return acc.allowed(p, ds, role)


async def check_route_access(request: Request) -> None:
    """The dependency every route of :class:`neurolake.server.routing.APIRouter` runs first: enforce the
    :class:`Need` of the matched route for the request's principal. Raises Unauthorized (401),
    QuotaExceeded (429), PermissionDenied (403), NotFound (404, unknown datastack)."""
    route = request.scope.get("route")
    need = getattr(route, "access_need", None)
    if not isinstance(need, Need):  # fail closed; create_app refuses such apps anyway
        raise PermissionDenied(f"route {getattr(route, 'path', request.url.path)!r} declares no access need",
                               path=request.url.path)
    if need.role == "public":
        return
    state = request.scope.get("state") or {}
    p = state.get("principal")
    if p is None:
        err = state.get("auth_error")
        if err is not None:
            raise err
        if getattr(request.app.state, "auth", False):  # --auth without the middleware's verdict: refuse
            raise Unauthorized("no authenticated principal for this request")
        return  # no --auth: the local user, who has every right
    if need.role in ROLES and not p.is_admin:
        ds = need.datastack_of(request.path_params)
        role = need.role
        if ds is None:
            role = "admin"  # no datastack to hold a role on: only lake admins
            ok = False
        else:
            have = p.roles.get(ds)
            ok = have is not None and RANK[have] >= RANK[role]
            if not ok:
                ok = await anyio.to_thread.run_sync(_allowed_slow, request.app.state.lake, p, ds, role)
        if not ok:
            raise _deny(p, ds, role, request)
    quota_error = state.get("quota_error")
    if quota_error is not None:
        raise quota_error


def _walk(routes) -> Iterator[Any]:
    for r in routes:
        inner = getattr(r, "original_router", None)  # FastAPI 0.16x keeps included routers as routes
        if inner is not None:
            yield from _walk(inner.routes)
            yield from _walk(getattr(inner, "_low_priority_routes", ()) or ())
        else:
            yield r


def app_routes(app) -> list[Any]:
    """Every route of ``app``, included routers flattened."""
    return list(_walk(app.router.routes))


def check_app_routes(app) -> None:
    """Mark FastAPI's own API-description routes public and refuse (RuntimeError) any route that
    declares no :class:`Need`, or a non-public route that would not run :func:`check_route_access`."""
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    bad = []
    for r in app_routes(app):
        path = getattr(r, "path", repr(r))
        if getattr(r, "access_need", None) is None and path in docs and not hasattr(r, "dependant"):
            r.access_need = Need.public("the API description")
        need = getattr(r, "access_need", None)
        checked = any(getattr(d, "call", None) is check_route_access
                      for d in getattr(getattr(r, "dependant", None), "dependencies", ()))
        if not isinstance(need, Need):
            bad.append(f"{sorted(getattr(r, 'methods', None) or [])} {path}: no access need declared")
        elif need.role != "public" and not checked:
            bad.append(f"{path}: need {need.describe()} but the route does not run check_route_access")
    if bad:
        raise RuntimeError("routes without a declared access need (add access=Need... to the decorator): "
                           + "; ".join(bad))
