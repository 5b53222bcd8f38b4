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
datastack, required). A datastack the principal may not read (no role, not public) and a datastack that
does not exist get the *same* 403 (the message says "or there is no such datastack" and lists the
datastacks the principal may read), so a request never confirms that a private datastack exists; lake
admins get the 404 of an unknown datastack from the handler. Routes that list datastack names filter
them with :func:`visible_datastacks`.
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


def split_at(value: str) -> tuple[str, str]:
    """``"ds@suffix"`` → ``("ds", "suffix")`` (``("ds", "")`` without ``@``): THE parser of path parameters
    that embed a datastack (the viewer's ``{ds}@zarr3`` tokens). The access check (:func:`before_at`) and
    the handler (``neurolake.server.viewer``) both use it, so the datastack checked is the one served."""
    ds, _, suffix = value.partition("@")
    return ds, suffix


def before_at(param: str) -> Callable[[Mapping[str, str]], str | None]:
    """The datastack of path parameter ``param`` holding a viewer token, ``ds`` or ``ds@zarr3``:
    ``Need.read(before_at("token"))``."""

    def datastack(path_params: Mapping[str, str]) -> str | None:
        value = path_params.get(param)
        return split_at(value)[0] if value else None

    datastack.__name__ = f"{param}_before_at"
    return datastack


def may_read(lake, p, datastack: str) -> bool:
    """May principal ``p`` (None: no ``--auth``, the local user) read ``datastack``: a lake admin, a role
    on it, or a public datastack. An unknown datastack is readable by nobody but lake admins."""
    return p is None or p.is_admin or p.roles.get(datastack) is not None or lake.access.allowed(p, datastack, "viewer")


def request_principal(request: Request):
    """The principal the ``--auth`` middleware found for ``request`` (None without ``--auth``)."""
    return (request.scope.get("state") or {}).get("principal")


def visible_datastacks(request: Request, names: list[str] | None = None) -> list[str]:
    """The datastacks (of ``names``, default every datastack of the lake) that the request's principal may
    read (:func:`may_read`): all of them without ``--auth`` and for lake admins. Every route that lists
    datastack names answers through this."""
    lake = request.app.state.lake
    names = lake.datastacks() if names is None else list(names)
    p = request_principal(request)
    return names if p is None or p.is_admin else [n for n in names if may_read(lake, p, n)]


def _deny(p, ds: str | None, need: str, request: Request, readable: list[str] | None = None) -> PermissionDenied:
    """403 for ``p``. ``readable`` (the datastacks ``p`` may read) is given when ``ds`` is not one of them:
    the answer is then the same whether ``ds`` exists or not (it never confirms a private datastack)."""
    have = p.role_on(ds) or "none"
    where = f"datastack {ds!r}" if ds else "this lake"
    msg = f"user {p.name!r} has role {have} on {where}"
    if readable is not None:
        msg += " (or there is no such datastack)"
    msg += f"; {request.method} {request.url.path} needs {need}"
    if readable is not None:
        msg += f"; datastacks user {p.name!r} may read: {', '.join(readable) or 'none'}"
    return PermissionDenied(msg, user=p.name, datastack=ds, role=have, required=need)


def _check_slow(lake, p, ds: str, role: str) -> tuple[bool, list[str] | None]:
    """``(allowed, readable)`` for a principal whose roles do not settle it (catalog I/O: off the loop):
    :meth:`Access.allowed` (public datastacks); ``readable`` lists the datastacks ``p`` may read when ``ds``
    is not one of them — whether or not it exists, so the 403 is the same for both."""
    if lake.access.allowed(p, ds, role):
        return True, None
    if may_read(lake, p, ds):
        return False, None
    return False, [n for n in lake.datastacks() if may_read(lake, p, n)]


async def check_route_access(request: Request) -> None:
    """The dependency every route of :class:`neurolake.server.routing.APIRouter` runs first: enforce the
    :class:`Need` of the matched route for the request's principal. Raises Unauthorized (401),
    QuotaExceeded (429), PermissionDenied (403, also for a datastack that does not exist)."""
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
        readable = None
        if ds is not None:
            have = p.roles.get(ds)
            ok = have is not None and RANK[have] >= RANK[role]
            if not ok:
                ok, readable = await anyio.to_thread.run_sync(_check_slow, request.app.state.lake, p, ds, role)
        if not ok:
            raise _deny(p, ds, role, request, readable)
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
