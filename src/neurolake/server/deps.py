"""Shared request plumbing for routers: the open lake, the request's principal, the author rule, size limits
and bodies. URL number parsing lives in :mod:`neurolake.base.integers` (shared with the command line)."""

from __future__ import annotations

import numpy as np
from fastapi import Request

from neurolake.access.core import Principal, local_principal
from neurolake.errors import InvalidArgument, NotFound, TooLarge, Unauthorized
from neurolake.lake import Lake
from neurolake.volumes.layer import Layer


def get_lake(request: Request) -> Lake:
    return request.app.state.lake


def principal_of(request: Request) -> Principal:
    """The authenticated principal (set by the ``--auth`` middleware) or, without ``--auth``, the local user
    (every right). Raises Unauthorized under ``--auth`` when the request has no principal."""
    p = getattr(request.state, "principal", None)
    if p is None:
        if getattr(request.app.state, "auth", False):  # --auth: never fall back to the local user
            raise Unauthorized("a token is required: send `Authorization: Bearer <token>`")
        p = local_principal(request.app.state.lake.settings.user)
    return p


def author_of(request: Request, given: str | None = None) -> str:
    """Who an edit is recorded as — the one rule of every write route: the authenticated user (``--auth``
    servers; only an admin may name someone else with ``given``), else ``given`` (``author`` in the body),
    else the ``X-Neurolake-User`` header, else the server's user (``NEUROLAKE_USER``)."""
    p = principal_of(request)
    if not p.local:
        return given if (given and p.is_admin) else p.name
    return given or request.headers.get("x-neurolake-user") or p.name


def annotation_table(request: Request, lake: Lake, datastack: str, name: str, need: str = "read"):
    """The annotation table ``datastack/name`` after checking its own read/write permission (``need``)
    for the request's principal (:meth:`neurolake.access.core.Access.require_table`). Raises NotFound,
    PermissionDenied."""
    from neurolake.annotations import get_table  # the annotation stack (deltalake) only when used

    t = get_table(lake, datastack, name)
    lake.access.require_table(principal_of(request), t, need)
    return t


def check_readable(request: Request, lake: Lake, datastack: str, *tables: str | None) -> None:
    """Each named annotation table's own read permission, which also covers its frozen copies in
    materialization versions and the connectome built from them; a name that is not a live table is left
    to the query to report. Raises PermissionDenied."""
    for name in tables:
        if name:
            try:
                annotation_table(request, lake, datastack, name)
            except NotFound:
                pass


def check_size(request: Request, layer: Layer, shape_zyx, what: str = "cutout") -> None:
    """Refuse (413) a box whose uncompressed size exceeds the server's ``max_cutout_bytes``."""
    limit = request.app.state.max_cutout_bytes
    nbytes = int(np.prod(shape_zyx)) * layer.dtype.itemsize
    if nbytes > limit:
        raise TooLarge(f"{what} of {nbytes} bytes (box {list(shape_zyx)} z, y, x of {layer.dtype}) exceeds the "
                       f"limit of {limit} bytes; request smaller boxes", limit=limit, size=nbytes)


async def read_body(request: Request, limit: int | None = None, what: str = "request body") -> bytes:
    """The request body, read as it arrives and refused (413 TooLarge) as soon as it exceeds ``limit`` bytes
    — before reading anything when ``Content-Length`` already announces more. ``limit`` defaults to the
    server's ``max_body_bytes`` (``NEUROLAKE_MAX_BODY_BYTES``); a route passes its own (a cutout upload: the
    box's size plus format overhead) to raise or lower it for this request, also for
    :class:`neurolake.server.bodies.BodyLimitMiddleware`. Nothing is decompressed here: a
    ``Content-Encoding`` of the request is not decoded by the server."""
    from neurolake.server.bodies import BODY_LIMIT_KEY, too_large

    if limit is None:
        limit = request.app.state.max_body_bytes
    request.scope[BODY_LIMIT_KEY] = limit
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, what, int(declared))
    parts, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_large(limit, what)
        parts.append(chunk)
    body = b"".join(parts)
    request._body = body  # what Starlette's Request.body() caches: a later body()/json() reuses it
    return body


async def read_json(request: Request, limit: int | None = None, empty=None):
    """The request body parsed as JSON (``empty`` when there is no body), read with :func:`read_body`.
    Raises TooLarge (413), InvalidArgument (not JSON)."""
    import json

    body = await read_body(request, limit)
    if not body:
        return empty
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidArgument("the request body is not valid JSON", field="body") from None
