"""The image explorer (see :mod:`neurolake.web`): a light 2-D pan/zoom view over the tile route, and links into
Neuroglancer at the same position.

Routes (HTML):

- ``GET /ui/image``: every readable datastack with its ready image and segmentation layers (size per mip,
  voxel size, dtype), each linking to its 2-D view and to Neuroglancer;
- ``GET /ui/image/{ds}?layer=&x=&y=&z=&mip=``: the 2-D view of ``layer`` (default the main image layer:
  ``image``, else the first image, else the first layer) centred on mip-0 voxel (``x``, ``y``) of section
  ``z`` (defaults: the volume centre) with tiles of ``mip`` (default the coarsest mip whose x/y fits a
  1024-pixel view). The page draws 512 x 512 tiles of ``/catmaid/{ds}/{layer}/xy/{z}/{row}_{col}_{mip}.jpg``
  (:mod:`neurolake.server.tiles`; ``z`` in mip-0 voxels, ``row``/``col`` tiles at ``mip``) in plain JS
  (``/ui/static/image.js``): drag or touch to pan, wheel / pinch / buttons to zoom across mips, the
  ``z-slider`` or keys to change section; it keeps ``x, y, z, mip`` in the URL (``history.replaceState``),
  so a shared link reopens the same view, and links to ``/viewer/{ds}?position=x,y,z``.

Errors: 404 for an unknown datastack or layer (a layer not ready counts as unknown), 400 for ``x``, ``y``,
``z`` or ``mip`` that are not whole numbers inside the layer.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from neurolake.errors import InvalidArgument, NotFound
from neurolake.server.access import Need, visible_datastacks
from neurolake.server.routing import APIRouter
from neurolake.volumes.tiles import TILE
from neurolake.web.render import PageRoute, page

router = APIRouter(route_class=PageRoute)
VIEW_PX = 1024  # the default mip is the finest whose x/y extent fits this many pixels
LAYER_TYPES = ("image", "segmentation")
MAIN_IMAGE = ("image", "em", "raw")


def _ready_layers(lake, ds: str) -> list[Any]:
    return [la for la in lake.layers(ds) if la.status == "ready" and la.layer_type in LAYER_TYPES]


def _main_layer(layers: list[Any]) -> Any | None:
    by_name = {la.name: la for la in layers}
    for n in MAIN_IMAGE:
        if n in by_name and by_name[n].layer_type == "image":
            return by_name[n]
    images = [la for la in layers if la.layer_type == "image"]
    return (images or layers or [None])[0]


def _int_param(name: str, value: str | None, lo: int, hi: int) -> int | None:
    """``value`` as a whole number in ``[lo, hi]`` (None when absent). Raises InvalidArgument."""
    if value is None or value == "":
        return None
    v = value.strip()
    if not (v.isascii() and v.lstrip("-").isdigit()):
        raise InvalidArgument(f"{name} must be a whole number, got {value!r}", field=name, value=value)
    n = int(v)
    if not lo <= n <= hi:
        raise InvalidArgument(f"{name} must be between {lo} and {hi} for this layer, got {n}", field=name,
                              value=value, allowed=[lo, hi])
    return n


def _layer_summary(ds: str, la: Any) -> dict[str, Any]:
    sizes = [list(la.size(m)) for m in range(la.num_mips)]
    return {"name": la.name, "type": la.layer_type, "dtype": str(la.dtype),
            "voxel_size": list(la.voxel_size), "sizes": sizes, "mips": la.num_mips,
            "view": f"/ui/image/{ds}?layer={la.name}", "api": f"/api/v1/datastacks/{ds}/layers/{la.name}"}


@router.get("/ui/image", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def image_index(request: Request) -> HTMLResponse:
    """The datastacks the user may read, with their image and segmentation layers."""
    lake = request.app.state.lake
    stacks = []
    for ds in visible_datastacks(request):
        layers = _ready_layers(lake, ds)
        if layers:
            stacks.append({"name": ds, "layers": [_layer_summary(ds, la) for la in layers]})
    return page(request, "image_index.html", title="Image explorer", stacks=stacks,
                crumbs=[("Home", "/ui"), ("image", None)])


@router.get("/ui/image/{datastack}", access=Need.read(), include_in_schema=False, response_class=HTMLResponse)
def image_view(datastack: str, request: Request, layer: str | None = None, x: str | None = None,
               y: str | None = None, z: str | None = None, mip: str | None = None) -> HTMLResponse:
    """The 2-D view (see the module docstring for the parameters)."""
    lake = request.app.state.lake
    lake.datastack(datastack)  # NotFound for an unknown datastack
    layers = _ready_layers(lake, datastack)
    if layer:
        la = next((la for la in layers if la.name == layer), None)
        if la is None:
            raise NotFound(f"datastack {datastack!r} has no ready image or segmentation layer {layer!r}; layers: "
                           f"{', '.join(la.name for la in layers) or 'none'}", field="layer", value=layer,
                           allowed=[la.name for la in layers])
    else:
        la = _main_layer(layers)
        if la is None:
            raise NotFound(f"datastack {datastack!r} has no image or segmentation layer to show", field="layer")
    sx, sy, sz = la.size(0)
    sizes = [list(la.size(m)) for m in range(la.num_mips)]
    default_mip = next((m for m, s in enumerate(sizes) if max(s[0], s[1]) <= VIEW_PX), len(sizes) - 1)
    state = {
        "x": _int_param("x", x, 0, sx - 1), "y": _int_param("y", y, 0, sy - 1),
        "z": _int_param("z", z, 0, sz - 1), "mip": _int_param("mip", mip, 0, len(sizes) - 1),
    }
    state = {"x": sx // 2 if state["x"] is None else state["x"], "y": sy // 2 if state["y"] is None else state["y"],
             "z": sz // 2 if state["z"] is None else state["z"],
             "mip": default_mip if state["mip"] is None else state["mip"]}
    tile_url = f"/catmaid/{datastack}/{la.name}/xy/{{z}}/{{row}}_{{col}}_{{mip}}.jpg"
    config = {"datastack": datastack, "layer": la.name, "type": la.layer_type, "tile": TILE,
              "tileUrl": tile_url, "sizes": sizes, "voxel": list(la.voxel_size), **state,
              "viewer": f"/viewer/{datastack}", "page": f"/ui/image/{datastack}"}
    return page(request, "image_view.html", title=f"{datastack}/{la.name}", config=config, tile_url=tile_url,
                ds=datastack, layer=la.name, layers=[_layer_summary(datastack, m) for m in layers], sizes=sizes,
                state=state, api=f"/api/v1/datastacks/{datastack}/layers/{la.name}",
                crumbs=[("Home", "/ui"), ("image", "/ui/image"), (datastack, f"/ui/datastacks/{datastack}"),
                        (la.name, None)])
