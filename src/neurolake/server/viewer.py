"""Neuroglancer, served offline: ``GET /viewer/{ds}`` opens the datastack's layers.

The PyPI ``neuroglancer`` wheel bundles a built viewer (``neuroglancer/static/client/``). That build
is the one that talks to neuroglancer's own Python server: it must be loaded from ``…/v/{token}/``
and takes its state from a server-sent-event stream ``…/events/{token}`` (messages
``{"k": "s"|"c", "s": state, "g": generation}``), posting the user's changes to ``…/state/{token}``.
This module answers that small protocol itself, with the datastack name as token, so no Python
viewer process is needed:

- ``GET /viewer/{ds}`` → redirect to ``/viewer/v/{ds}/`` (the bundled ``index.html`` and assets);
  ``GET /viewer/{ds}?source=zarr3`` → ``/viewer/v/{ds}@zarr3/``, the same view read from the stored
  OME-Zarr (``zarr3://{origin}/zarr/{ds}/{layer}/``);
- ``GET /viewer/events/{ds}`` → the initial state: one layer per volume layer of the datastack,
  sources ``precomputed://{origin}/precomputed/{ds}/{layer}`` on this server's origin, the position
  at the volume centre; the stream is then kept open with keep-alive comments;
- ``POST /viewer/state/{ds}`` → accepts the client's state changes (not persisted) and
  ``POST /viewer/action/{ds}`` → ignored; ``GET /viewer/state/{ds}`` → the initial state JSON (e.g.
  to open the same view in another Neuroglancer as ``https://…/#!`` + URL-encoded JSON).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import mimetypes
import time
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from neurolake.errors import NotFound
from neurolake.lake import Lake
from neurolake.server.access import Need, before_at, split_at
from neurolake.server.http import file_response
from neurolake.server.models import NeuroglancerState, ViewerAck
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/viewer", tags=["viewer"])
KEEPALIVE_S = 15.0
STREAM_MAX_S = 3600.0
_generation = itertools.count(1)


def client_dir() -> Path:
    """Folder of the built Neuroglancer client shipped in the ``neuroglancer`` wheel."""
    try:
        import neuroglancer
    except ImportError as exc:  # pragma: no cover - neuroglancer is a dependency of the viewer
        raise NotFound("the neuroglancer package is not installed; install it to serve the viewer") from exc
    return Path(neuroglancer.__file__).parent / "static" / "client"


SOURCES = ("precomputed", "zarr3")


def _token(token: str) -> tuple[str, str]:
    """``{ds}`` or ``{ds}@zarr3`` → (datastack, source format); the same parser as the access check
    (:func:`neurolake.server.access.split_at`)."""
    ds, fmt = split_at(token)
    fmt = fmt or "precomputed"
    if fmt not in SOURCES:
        raise NotFound(f"viewer source format {fmt!r} is unknown; use one of {', '.join(SOURCES)}", value=fmt)
    return ds, fmt


def viewer_state(lake: Lake, datastack: str, origin: str, layout: str = "4panel", source: str = "precomputed") -> dict:
    """Neuroglancer state (JSON) showing every ready layer of ``datastack`` from ``origin``.

    ``source`` ``precomputed`` reads ``precomputed://{origin}/precomputed/{ds}/{layer}``; ``zarr3``
    reads the stored OME-Zarr itself, ``zarr3://{origin}/zarr/{ds}/{layer}/``. ``dimensions`` are the
    mip-0 voxel size in metres (x, y, z); ``position`` is the volume centre in voxels. Images come
    first so segmentations draw on top.
    """
    ds = lake.datastack_info(datastack)
    layers = [la for la in lake.layers(datastack) if la.status == "ready"]
    vx, vy, vz = ds.get("voxel_size_nm") or (layers[0].voxel_size if layers else (1, 1, 1))
    sizes = [la.size(0) for la in layers] or [(1, 1, 1)]
    centre = [max(s[i] for s in sizes) / 2 for i in range(3)]
    ng_layers = []
    for la in sorted(layers, key=lambda la: la.layer_type != "image"):
        url = (f"precomputed://{origin.rstrip('/')}/precomputed/{datastack}/{la.name}" if source == "precomputed"
               else f"zarr3://{origin.rstrip('/')}/zarr/{datastack}/{la.name}/")
        entry = {"type": la.layer_type, "name": la.name, "source": url}
        if la.layer_type == "segmentation":
            entry["selectedAlpha"] = 0.3  # keep the EM readable under the segment colours
        ng_layers.append(entry)
    from neurolake.annotations.precomputed import viewer_layers  # annotation tables, e.g. synapses (issue 4)

    ng_layers += viewer_layers(lake, datastack, origin)
    return {"dimensions": {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]},
            "position": centre, "crossSectionScale": max(1.0, max(sizes[0][:2]) / 1024), "projectionScale": 2048,
            "layers": ng_layers, "selectedLayer": {"layer": ng_layers[0]["name"] if ng_layers else None},
            "layout": layout}


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _for_requester(request: Request, datastack: str, state: dict) -> dict:
    """``state`` without the annotation layers of tables the request's principal may not read (their
    own read permission: :func:`neurolake.server.deps.annotation_table`)."""
    from neurolake.errors import PermissionDenied
    from neurolake.server.deps import annotation_table

    lake = request.app.state.lake
    keep = []
    for la in state["layers"]:
        if la.get("type") == "annotation":
            try:
                annotation_table(request, lake, datastack, la["name"])
            except (PermissionDenied, NotFound):
                continue
        keep.append(la)
    return {**state, "layers": keep, "selectedLayer": {"layer": keep[0]["name"] if keep else None}}


@router.get("/{datastack}", access=Need.read(), summary="Open Neuroglancer on a datastack")
def open_viewer(datastack: str, request: Request, source: str = "precomputed") -> RedirectResponse:
    """Redirect to the bundled viewer; ``source=zarr3`` reads the OME-Zarr layers instead of precomputed."""
    request.app.state.lake.datastack(datastack)  # 404 for an unknown datastack
    _token(f"{datastack}@{source}")
    token = datastack if source == "precomputed" else f"{datastack}@{source}"
    return RedirectResponse(f"/viewer/v/{token}/", status_code=307)


@router.api_route("/v/{datastack}/{path:path}", access=Need.read(before_at("datastack")),
                  methods=["GET", "HEAD"], include_in_schema=False)
def static(datastack: str, path: str, request: Request) -> Response:
    root = client_dir()
    name = path or "index.html"
    target = (root / name).resolve()
    if root.resolve() not in target.parents or not target.is_file():
        raise NotFound(f"no viewer file {name!r}", path=name)
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".wasm":
        media = "application/wasm"
    return file_response(request, target, media)


@router.get("/state/{token}", access=Need.read(before_at("token")),
            summary="The viewer's initial Neuroglancer state")
def get_state(token: str, request: Request, layout: str = "4panel") -> NeuroglancerState:
    """``token`` is the datastack, or ``{ds}@zarr3`` for zarr3 sources."""
    ds, fmt = _token(token)
    return _for_requester(request, ds, viewer_state(request.app.state.lake, ds, _origin(request), layout, fmt))


@router.get("/events/{token}", access=Need.read(before_at("token")), include_in_schema=False)
async def events(token: str, request: Request, layout: str = "4panel") -> Response:
    ds, fmt = _token(token)
    # catalog and annotation-table reads: in the thread pool, not on the event loop
    state = await run_in_threadpool(lambda: _for_requester(
        request, ds, viewer_state(request.app.state.lake, ds, _origin(request), layout, fmt)))
    sent_before = request.query_params.get("gs") not in (None, "", "undefined")

    async def stream():
        gen = f"server/{next(_generation)}"
        yield f"data: {json.dumps({'k': 'c', 's': {}, 'g': gen})}\n\n"
        if not sent_before:  # a reconnecting client keeps its own (possibly edited) state
            yield f"data: {json.dumps({'k': 's', 's': state, 'g': gen})}\n\n"
        start = time.monotonic()
        while time.monotonic() - start < STREAM_MAX_S:
            for _ in range(int(KEEPALIVE_S * 4)):
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)
            yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/state/{datastack}", access=Need.read(before_at("datastack")), include_in_schema=False)
async def post_state(datastack: str, request: Request) -> ViewerAck:
    msg = json.loads(await request.body() or b"{}")
    return {"g": f"{msg.get('c', 'client')}/{msg.get('g', 0)}"}


@router.post("/action/{datastack}", access=Need.read(before_at("datastack")), include_in_schema=False)
async def post_action(datastack: str) -> Response:
    return Response(status_code=200)
