"""Meshes over HTTP, in the Neuroglancer precomputed mesh formats (core: :mod:`neurolake.meshes`).

Objects of a meshed segmentation layer (``neurolake mesh build``), under the layer's precomputed path:

- ``GET|HEAD /precomputed/{ds}/{layer}/mesh/info`` → ``{"@type": "neuroglancer_legacy_mesh"}``;
  ``…/mesh/{id}:0`` → manifest ``{"fragments": [...]}``; ``…/mesh/{id}:0:{bx}_{by}_{bz}`` → a fragment
  (uint32 n, n × 3 float32 x, y, z nm, uint32 triangle indices);
- ``GET|HEAD /precomputed/{ds}/{layer}/mesh_draco/info`` → ``neuroglancer_multilod_draco`` info;
  ``…/mesh_draco/{id}.index`` → manifest; ``…/mesh_draco/{id}`` → the Draco mesh.

Proofread roots, the same four under ``/precomputed-roots/{ds}/{layer}[@T]/``: a root's manifest lists
the fragments of its supervoxels (meshed on demand when missing); fragment names are those of the
supervoxel layer. The precomputed ``info`` names the mesh folder (``"mesh": "mesh"`` or ``"mesh_draco"``)
once the layer is meshed, so Neuroglancer and cloud-volume (``vol.mesh.get(id)``) find the meshes.
This router is included before the precomputed routers: ``mesh`` and ``mesh_draco`` are reserved scale keys.
Unknown ids and fragments answer 404 (a client reads that as no mesh).
"""

from __future__ import annotations

import json

from fastapi import Depends, Request, Response

from neurolake import meshes as core
from neurolake.errors import NotFound
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.deps import get_lake
from neurolake.server.http import bytes_response, count
from neurolake.server.models import MeshFragmentBody, PrecomputedMeshInfo, PrecomputedMeshManifest
from neurolake.server.routing import APIRouter

router = APIRouter(tags=["meshes"])
GET = ["GET", "HEAD"]
_OCTET = "application/octet-stream"


def _json(request: Request, doc: dict) -> Response:
    return bytes_response(request, json.dumps(doc).encode(), "application/json")


def _id(text: str) -> int:
    if not text.isdigit():
        raise NotFound(f"{text!r} is not a segment id", key=text)
    return int(text)


# -- layer meshes ------------------------------------------------------------------------------------
@router.api_route("/precomputed/{datastack}/{layer}/mesh/info", access=Need.read(), methods=GET,
                  summary="legacy mesh info")
def mesh_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> PrecomputedMeshInfo:
    core.mesh_info(lake, datastack, layer)
    return _json(request, core.legacy_info())


@router.api_route("/precomputed/{datastack}/{layer}/mesh/{segment_id}:0", access=Need.read(), methods=GET,
                  summary="legacy mesh manifest of one object")
def mesh_manifest(datastack: str, layer: str, segment_id: str, request: Request,
                  lake: Lake = Depends(get_lake)) -> PrecomputedMeshManifest:
    doc = {"fragments": core.segment_fragments(lake, datastack, layer, _id(segment_id))}
    count(request, "mesh_manifests")
    return _json(request, doc)


@router.api_route("/precomputed/{datastack}/{layer}/mesh/{key}", access=Need.read(), methods=GET,
                  summary="legacy mesh fragment")
def mesh_fragment(datastack: str, layer: str, key: str, request: Request,
                  lake: Lake = Depends(get_lake)) -> MeshFragmentBody:
    data = core.layer_fragment(lake, datastack, layer, key)
    count(request, "mesh_fragments")
    return bytes_response(request, data, _OCTET)


@router.api_route("/precomputed/{datastack}/{layer}/mesh_draco/info", access=Need.read(), methods=GET,
                  summary="multi-resolution Draco mesh info")
def draco_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> PrecomputedMeshInfo:
    core.mesh_info(lake, datastack, layer)
    return _json(request, core.draco_info())


@router.api_route("/precomputed/{datastack}/{layer}/mesh_draco/{name}", access=Need.read(), methods=GET,
                  summary="multi-resolution Draco manifest ({id}.index) or mesh ({id})")
def draco_file(datastack: str, layer: str, name: str, request: Request,
               lake: Lake = Depends(get_lake)) -> MeshFragmentBody:
    sid, index = (name[:-6], True) if name.endswith(".index") else (name, False)
    manifest, data = core.segment_draco(lake, datastack, layer, _id(sid))
    count(request, "mesh_manifests" if index else "mesh_fragments")
    return bytes_response(request, manifest if index else data, _OCTET)


# -- root meshes ---------------------------------------------------------------------------------------
def _roots(request: Request, datastack: str, layer: str):
    _, ts = cutouts.roots_layer(request, datastack, layer)  # the supervoxel layer, the time (or 404/400)
    return ts


@router.api_route("/precomputed-roots/{datastack}/{layer}/mesh/info", access=Need.read(), methods=GET,
                  summary="legacy mesh info of proofread roots")
def roots_mesh_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> PrecomputedMeshInfo:
    _roots(request, datastack, layer)
    return _json(request, core.legacy_info())


@router.api_route("/precomputed-roots/{datastack}/{layer}/mesh/{root_id}:0", access=Need.read(), methods=GET,
                  summary="legacy mesh manifest of a proofread root (its supervoxels' fragments)")
def roots_mesh_manifest(datastack: str, layer: str, root_id: str, request: Request,
                        lake: Lake = Depends(get_lake)) -> PrecomputedMeshManifest:
    ts = _roots(request, datastack, layer)
    doc = {"fragments": core.root_fragments(lake, datastack, _id(root_id), ts)}
    count(request, "mesh_manifests")
    return _json(request, doc)


@router.api_route("/precomputed-roots/{datastack}/{layer}/mesh/{key}", access=Need.read(), methods=GET,
                  summary="legacy mesh fragment of a supervoxel")
def roots_mesh_fragment(datastack: str, layer: str, key: str, request: Request,
                        lake: Lake = Depends(get_lake)) -> MeshFragmentBody:
    _roots(request, datastack, layer)
    data = core.fragment_bytes(lake, datastack, key)
    count(request, "mesh_fragments")
    return bytes_response(request, data, _OCTET)


@router.api_route("/precomputed-roots/{datastack}/{layer}/mesh_draco/info", access=Need.read(), methods=GET,
                  summary="multi-resolution Draco mesh info of proofread roots")
def roots_draco_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> PrecomputedMeshInfo:
    _roots(request, datastack, layer)
    return _json(request, core.draco_info())


@router.api_route("/precomputed-roots/{datastack}/{layer}/mesh_draco/{name}", access=Need.read(), methods=GET,
                  summary="multi-resolution Draco manifest ({id}.index) or mesh ({id}) of a proofread root")
def roots_draco_file(datastack: str, layer: str, name: str, request: Request,
                     lake: Lake = Depends(get_lake)) -> MeshFragmentBody:
    ts = _roots(request, datastack, layer)
    sid, index = (name[:-6], True) if name.endswith(".index") else (name, False)
    manifest, data = core.root_draco(lake, datastack, _id(sid), ts)
    count(request, "mesh_manifests" if index else "mesh_fragments")
    return bytes_response(request, manifest if index else data, _OCTET)
