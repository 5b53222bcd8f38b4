"""Shared request plumbing for routers: the open lake, the request's principal, size limits, coordinate
parsing."""

from __future__ import annotations

import numpy as np
from fastapi import Request

from neurolake.access.core import Principal, access, local_principal
from neurolake.errors import InvalidArgument, NotFound, TooLarge
from neurolake.lake import Lake
from neurolake.volumes.layer import Layer


def get_lake(request: Request) -> Lake:
    return request.app.state.lake


def principal_of(request: Request) -> Principal:
    """The authenticated principal (set by the ``--auth`` middleware) or the local user (every right)."""
    p = getattr(request.state, "principal", None)
    if p is None:
        p = local_principal(request.app.state.lake.settings.user)
    return p


def annotation_table(request: Request, lake: Lake, datastack: str, name: str, need: str = "read"):
    """The annotation table ``datastack/name`` after checking its own read/write permission (``need``)
    for the request's principal (:meth:`neurolake.access.core.Access.require_table`). Raises NotFound,
    PermissionDenied."""
    from neurolake.annotations import get_table  # the annotation stack (deltalake) only when used

    t = get_table(lake, datastack, name)
    access(lake).require_table(principal_of(request), t, need)
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


def parse_range(axis: str, text: str) -> tuple[int, int]:
    """Parse ``"start,stop"`` (OCP) or ``"start:stop"`` (BossDB) into ints; 400 on anything else."""
    sep = "," if "," in text else ":"
    parts = text.split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise InvalidArgument(f"{axis} range {text!r} is malformed; write it as start{sep}stop in voxels, "
                              f"e.g. 0{sep}512", field=axis, value=text) from None


def parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{name} {text!r} must be a whole number", field=name, value=text) from None


def check_size(request: Request, layer: Layer, shape_zyx, what: str = "cutout") -> None:
    """Refuse (413) a box whose uncompressed size exceeds the server's ``max_cutout_bytes``."""
    limit = request.app.state.max_cutout_bytes
    nbytes = int(np.prod(shape_zyx)) * layer.dtype.itemsize
    if nbytes > limit:
        raise TooLarge(f"{what} of {nbytes} bytes (box {list(shape_zyx)} z, y, x of {layer.dtype}) exceeds the "
                       f"limit of {limit} bytes; request smaller boxes", limit=limit, size=nbytes)
