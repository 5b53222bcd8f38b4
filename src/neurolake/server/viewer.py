"""Neuroglancer, served offline: ``GET /viewer/{ds}`` opens the datastack's layers.

The PyPI ``neuroglancer`` wheel bundles a built viewer (``neuroglancer/static/client/``). That build
is the one that talks to neuroglancer's own Python server: it must be loaded from ``…/v/{token}/``
and takes its state from a server-sent-event stream ``…/events/{token}`` (messages
``{"k": "s"|"c", "s": state, "g": generation}``), posting the user's changes to ``…/state/{token}``.
This module answers that small protocol itself, with the datastack name as token, so no Python
viewer process is needed:

- ``GET /viewer/{ds}`` → redirect to ``/viewer/v/{ds}/`` (the bundled ``index.html`` and assets);
  ``GET /viewer/{ds}?source=zarr3`` → ``/viewer/v/{ds}@zarr3/``, the same view read from the stored
  OME-Zarr (``zarr3://{origin}/zarr/{ds}/{layer}/``); ``?position=x,y,z`` (mip-0 voxels) →
  ``/viewer/v/{ds}@x,y,z/``, the view opened there;
- ``GET /viewer/events/{ds}`` → the initial state: one layer per volume layer of the datastack,
  sources ``precomputed://{origin}/precomputed/{ds}/{layer}`` on this server's origin (see
  :func:`viewer_state` for what is visible and where it opens); the stream is then kept open with keep-alive comments;
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from neurolake.errors import InvalidArgument, NotFound
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


def _token(token: str) -> tuple[str, str, list[float] | None]:
    """``{ds}``, ``{ds}@zarr3``, ``{ds}@{x},{y},{z}`` or ``{ds}@zarr3@{x},{y},{z}`` → (datastack, source format,
    position in mip-0 voxels or None); the datastack comes from the same parser as the access check
    (:func:`neurolake.server.access.split_at`). Raises NotFound (unknown format), InvalidArgument (position)."""
    ds, suffix = split_at(token)
    fmt, position = "precomputed", None
    for part in suffix.split("@") if suffix else []:
        if "," in part:
            position = parse_position(part)
        elif part in SOURCES:
            fmt = part
        else:
            raise NotFound(f"viewer source format {part!r} is unknown; use one of {', '.join(SOURCES)}", value=part)
    return ds, fmt, position


def parse_position(text: str) -> list[float]:
    """``"x,y,z"`` (mip-0 voxels, decimals allowed) → ``[x, y, z]``. Raises InvalidArgument."""
    import math

    try:
        xyz = [float(v) for v in text.split(",")]
    except ValueError:
        xyz = []
    if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
        raise InvalidArgument(f"position {text!r} must be three numbers x,y,z (mip-0 voxels)", field="position",
                              value=text)
    return xyz


MAIN_IMAGE = ("image", "em", "raw")  # the image layer shown when a datastack has several


def _shown_segmentation(lake: Lake, datastack: str, names: list[str]) -> str | None:
    """The segmentation layer shown by default: the proofreadable one if the datastack has one, else the
    first by name (the others are listed, hidden)."""
    if not names:
        return None
    try:
        from neurolake.proofreading.service import segmentation

        layer = segmentation(lake, datastack).layer
        if layer in names:
            return layer
    except Exception:  # noqa: BLE001 - no proofreading (or an unreadable one): fall back to the first
        pass
    return sorted(names)[0]


def _synapse_position(lake: Lake, datastack: str, voxel: tuple[float, float, float], centre: list[float],
                      table_ok: Callable[[str], bool] | None = None) -> list[float] | None:
    """A synapse to open at, in datastack voxels: from the first synapse table with centre points, the
    synapse nearest the volume centre in x/y within the section holding the most synapses (so the xy panel
    shows many and the xz/yz panels show that one). None when there is none. Reads at most 100,000 rows;
    skips tables for which ``table_ok(name)`` is false (tables the requester may not read)."""
    from neurolake.annotations.table import get_table, list_tables

    for name in list_tables(lake, datastack):
        if table_ok is not None and not table_ok(name):
            continue
        try:
            t = get_table(lake, datastack, name)
            if t.schema.name != "synapse":
                continue
            cols = ["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]
            df = t.query(columns=cols, desired_resolution=voxel, limit=100_000).df()[cols].dropna()
        except Exception:  # noqa: BLE001 - a table that cannot be read only loses the default position
            continue
        if df.empty:
            continue
        xyz = df.to_numpy(float)
        section = np.floor(xyz[:, 2])
        values, counts = np.unique(section, return_counts=True)
        rows = xyz[section == values[np.argmax(counts)]]
        best = rows[np.argmin((rows[:, 0] - centre[0]) ** 2 + (rows[:, 1] - centre[1]) ** 2)]
        return [float(v) for v in best]
    return None


def _annotation_centre(lake: Lake, datastack: str, voxel: tuple[float, float, float],
                       table_ok: Callable[[str], bool] | None = None) -> list[float] | None:
    """The median primary point of the first table with positions, in datastack voxels (for datastacks
    without volume layers, e.g. a connectome's soma table); None when no table has positions."""
    from neurolake.annotations.table import get_table, list_tables

    for name in list_tables(lake, datastack):
        if table_ok is not None and not table_ok(name):
            continue
        try:
            t = get_table(lake, datastack, name)
            cols = [f"{t.schema.primary}_position_{a}" for a in "xyz"]
            df = t.query(columns=cols, desired_resolution=voxel, limit=100_000).df()[cols].dropna()
        except Exception:  # noqa: BLE001 - a table that cannot be read only loses the default position
            continue
        if not df.empty:
            return [float(v) for v in df.median().to_numpy()]
    return None


def viewer_state(lake: Lake, datastack: str, origin: str, layout: str = "4panel", source: str = "precomputed",
                 position: list[float] | None = None, table_ok: Callable[[str], bool] | None = None) -> dict:
    """Neuroglancer state (JSON) showing every ready layer of ``datastack`` from ``origin``.

    ``source`` ``precomputed`` reads ``precomputed://{origin}/precomputed/{ds}/{layer}``; ``zarr3``
    reads the stored OME-Zarr itself, ``zarr3://{origin}/zarr/{ds}/{layer}/``. ``dimensions`` are the
    mip-0 voxel size in metres (x, y, z). Readable by default: images first, only the main one visible
    (``image``, else the first); segmentations above them, one visible (the proofreadable one, else the
    first) with segment colours at alpha 0.2 so the EM shows through, the others listed but hidden;
    annotation tables last, all visible. ``position`` (mip-0 voxels) defaults to a synapse (see
    :func:`_synapse_position`: synapses show in every panel), else the volume centre (voxel centres, +0.5);
    the zoom fits the volume's x/y extent into a ~512-pixel panel. ``table_ok(name)``: may the default
    position come from annotation table ``name`` (default: every table)?
    """
    ds = lake.datastack_info(datastack)
    layers = [la for la in lake.layers(datastack) if la.status == "ready"]
    vx, vy, vz = ds.get("voxel_size_nm") or (layers[0].voxel_size if layers else (1, 1, 1))
    sizes = [la.size(0) for la in layers] or [(1, 1, 1)]
    extent = [max(s[i] for s in sizes) for i in range(3)]
    centre = [float(np.floor(extent[i] / 2) + 0.5) for i in range(3)]
    images = sorted((la for la in layers if la.layer_type == "image"), key=lambda la: la.name)
    main_image = next((la.name for n in MAIN_IMAGE for la in images if la.name == n),
                      images[0].name if images else None)
    shown_seg = _shown_segmentation(lake, datastack, [la.name for la in layers if la.layer_type == "segmentation"])
    ng_layers = []
    order = {"image": 0, "segmentation": 1}
    for la in sorted(layers, key=lambda la: (order.get(la.layer_type, 2), la.name != main_image, la.name)):
        url = (f"precomputed://{origin.rstrip('/')}/precomputed/{datastack}/{la.name}" if source == "precomputed"
               else f"zarr3://{origin.rstrip('/')}/zarr/{datastack}/{la.name}/")
        entry = {"type": la.layer_type, "name": la.name, "source": url}
        if la.layer_type == "image":
            entry["visible"] = la.name == main_image
        elif la.layer_type == "segmentation":
            entry["selectedAlpha"] = 0.2  # the EM stays readable under the segment colours
            entry["notSelectedAlpha"] = 0.0
            entry["visible"] = la.name == shown_seg
        ng_layers.append(entry)
    from neurolake.annotations.precomputed import viewer_layers  # annotation tables, e.g. synapses (issue 4)

    ng_layers += viewer_layers(lake, datastack, origin)
    if position is None:
        position = (_synapse_position(lake, datastack, (vx, vy, vz), centre, table_ok)
                    or (None if layers else _annotation_centre(lake, datastack, (vx, vy, vz), table_ok)) or centre)
    fit = max(extent[0], extent[1]) / 512
    reach = max(extent[0], extent[1] * vy / vx, extent[2] * vz / vx)
    return {"dimensions": {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]},
            "position": [float(v) for v in position], "crossSectionScale": max(0.25, fit),
            "projectionScale": max(64.0, 1.5 * reach),
            "layers": ng_layers, "selectedLayer": {"layer": ng_layers[0]["name"] if ng_layers else None},
            "layout": layout}


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _readable_by(request: Request, datastack: str) -> Callable[[str], bool]:
    """``name -> bool``: may the request's principal read annotation table ``name`` of ``datastack``?"""
    from neurolake.errors import PermissionDenied
    from neurolake.server.deps import annotation_table

    lake = request.app.state.lake

    def ok(name: str) -> bool:
        try:
            annotation_table(request, lake, datastack, name)
            return True
        except (PermissionDenied, NotFound):
            return False

    return ok


def _state_for(request: Request, ds: str, layout: str, fmt: str, position: list[float] | None) -> dict:
    """The initial state as the request's principal may see it (its default position from readable tables)."""
    return _for_requester(request, ds, viewer_state(request.app.state.lake, ds, _origin(request), layout, fmt,
                                                    position, table_ok=_readable_by(request, ds)))


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
def open_viewer(datastack: str, request: Request, source: str = "precomputed",
                position: str | None = None) -> RedirectResponse:
    """Redirect to the bundled viewer; ``source=zarr3`` reads the OME-Zarr layers instead of precomputed;
    ``position=x,y,z`` (mip-0 voxels) opens it there (e.g. from the 2-D image view)."""
    request.app.state.lake.datastack(datastack)  # 404 for an unknown datastack
    _token(f"{datastack}@{source}")
    token = datastack if source == "precomputed" else f"{datastack}@{source}"
    if position is not None:
        token += "@" + ",".join(f"{v:g}" for v in parse_position(position))
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
    ds, fmt, position = _token(token)
    return _state_for(request, ds, layout, fmt, position)


@router.get("/events/{token}", access=Need.read(before_at("token")), include_in_schema=False)
async def events(token: str, request: Request, layout: str = "4panel") -> Response:
    ds, fmt, position = _token(token)
    # catalog and annotation-table reads: in the thread pool, not on the event loop
    state = await run_in_threadpool(_state_for, request, ds, layout, fmt, position)
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
