"""OCP-compatible cutout service (NeuroData's Open Connectome Project URL scheme).

- ``GET  /ocp/ca/{ds}/{layer}/{fmt}/{mip}/{x0},{x1}/{y0},{y1}/{z0},{z1}/`` with fmt npz, blosc, raw,
  tiff → the (z, y, x) cutout (blosc/raw carry ``X-Neurolake-Dtype`` and ``X-Neurolake-Shape`` = z,y,x);
- ``POST`` the same URL with an npz or blosc body → writes the box (and updates coarser mips), 201;
- ``GET  /ocp/ca/{ds}/{layer}/xy/{mip}/{x0},{x1}/{y0},{y1}/{z}/`` → PNG of one plane; likewise
  ``xz/{mip}/{x0},{x1}/{y}/{z0},{z1}/`` and ``yz/{mip}/{x}/{y0},{y1}/{z0},{z1}/``
  (the shape of the classic ``/ocp/ca/kasthuri11/image/xy/0/9000,9500/12000,12500/50/``).
"""

from __future__ import annotations

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake.base.integers import parse_int, parse_range
from neurolake.errors import InvalidArgument
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.deps import get_lake
from neurolake.server.models import Created, CutoutBody
from neurolake.server.routing import APIRouter
from neurolake.volumes.formats import CUTOUT_FORMATS, UPLOAD_FORMATS, encode_plane

router = APIRouter(prefix="/ocp/ca", tags=["ocp"])
PLANES = ("xy", "xz", "yz")


def _box(fmt: str, a: str, b: str, c: str):
    """(x, y, z) ranges of a request; planes give a single index on their normal axis."""
    if fmt == "xy":
        z = parse_int("z", c)
        return parse_range("x", a), parse_range("y", b), (z, z + 1)
    if fmt == "xz":
        y = parse_int("y", b)
        return parse_range("x", a), (y, y + 1), parse_range("z", c)
    if fmt == "yz":
        x = parse_int("x", a)
        return (x, x + 1), parse_range("y", b), parse_range("z", c)
    return parse_range("x", a), parse_range("y", b), parse_range("z", c)


def _check_fmt(fmt: str, allowed) -> None:
    if fmt not in allowed:
        raise InvalidArgument(f"format {fmt!r} is not allowed here; use one of {', '.join(allowed)}",
                              field="format", value=fmt, allowed=list(allowed))


@router.get("/{datastack}/{layer}/{fmt}/{mip}/{a}/{b}/{c}/", access=Need.read(),
            summary="Cutout or plane image")
def get_cutout(datastack: str, layer: str, fmt: str, mip: str, a: str, b: str, c: str, request: Request,
               roots: bool = False, timestamp: str | None = None, lake: Lake = Depends(get_lake)) -> CutoutBody:
    _check_fmt(fmt, CUTOUT_FORMATS + PLANES)
    la = cutouts.layer_of(request, datastack, layer)
    m = parse_int("mip", mip)
    # ?roots=true[&timestamp=T]: supervoxels remapped to proofread root ids (issue 5)
    arr = cutouts.read(request, la, *_box(fmt, a, b, c), m, roots=roots, timestamp=timestamp)
    if fmt in PLANES:
        plane = arr[0] if fmt == "xy" else (arr[:, 0, :] if fmt == "xz" else arr[:, :, 0])
        return Response(encode_plane(plane, la.layer_type, "png"), media_type="image/png")
    return cutouts.response(arr, fmt)


@router.post("/{datastack}/{layer}/{fmt}/{mip}/{a}/{b}/{c}/", access=Need.write(),
             status_code=201, summary="Write a cutout")
async def post_cutout(datastack: str, layer: str, fmt: str, mip: str, a: str, b: str, c: str, request: Request,
                      lake: Lake = Depends(get_lake)) -> Created:
    _check_fmt(fmt, UPLOAD_FORMATS)
    la = await run_in_threadpool(cutouts.layer_of, request, datastack, layer)  # catalog read: off the event loop
    m = parse_int("mip", mip)
    await cutouts.write(request, la, *_box(fmt, a, b, c), m, fmt)
    return Response(status_code=201)
