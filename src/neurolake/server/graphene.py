"""Graphene for cloud-volume: ``graphene://http://HOST/segmentation/table/{ds}`` opens in unmodified
cloud-volume (12.15.2), the URL ``caveclient``'s ``info.segmentation_source()`` returns.

What cloud-volume's graphene frontend (``cloudvolume/frontends/graphene.py``,
``datasource/graphene/metadata.py``, ``datasource/graphene/mesh/unsharded.py``) reads, and where:

- ``GET /segmentation/table/{ds}/info`` (:mod:`neurolake.server.cave`, built by :func:`segmentation_info`):
  the precomputed scales of the supervoxel layer as **uint64** ``compressed_segmentation``, ``graph``
  (``chunk_size``, ``n_layers``, ``spatial_bit_masks``, ``cv_mip``, ``n_bits_for_layer_id``),
  ``chunks_start_at_voxel_offset``, ``app.supported_api_versions`` (``[0, 1]``: legacy and ``v1``),
  ``mesh`` / ``mesh_metadata`` and ``data_dir``: where the supervoxel chunks and mesh fragments are read;
- ``data_dir`` = ``{base}/graphene/{ds}/{expires}/{user}/{signature}`` (this router): cloud-volume reads it
  with plain HTTP (cloud-files' ``HttpInterface``), which sends no token, so the path carries an HMAC
  signature (:class:`neurolake.storage.signing.Signer` under the lake's signing key, over ``graphene:{ds}``,
  the user and the expiry, :data:`DATA_DIR_SECONDS` after the info was read). Under ``serve --auth`` the
  user must still exist, be enabled and may read the datastack (as for ``/data`` signed URLs); a changed
  or expired path → 403. Below it: ``info``, ``{scale key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` (supervoxel ids
  as uint64), ``mesh/info`` and ``mesh/{fragment}``;
- chunkedgraph calls (:mod:`neurolake.server.cave`): ``POST …/roots_binary?timestamp=<unix s>`` and
  ``GET …/node/{root}/leaves?bounds=…``;
- ``GET /meshing/api/v1/table/{ds}/manifest/{root}:{lod}`` → ``{"fragments": [...]}``: the fragment keys
  of the root's supervoxels (:func:`neurolake.meshes.root_fragments`, ``"{sv}:0:{bx}_{by}_{bz}"``), read
  from ``data_dir/mesh/{key}`` (:func:`neurolake.meshes.fragment_bytes`: legacy precomputed mesh fragments,
  not Draco, vertices in nm); ``?return_seg_ids=1`` adds ``seg_ids``.

Tokens: cloud-volume sends ``Authorization: Bearer <token>`` from ``secrets=`` or
``~/.cloudvolume/secrets/[{host}-]cave-secret.json``, but refuses client-side any token that is not hex or
standard base64 — neurolake's ``nl_…`` tokens are neither. :class:`HexToken` (installed by
:func:`install` under ``--auth``) therefore also accepts the token's UTF-8 bytes as hex
(``token.encode().hex()``) and passes the token itself on. Without ``--auth`` any placeholder works.
"""

from __future__ import annotations

import binascii
import hmac
import json
import time
from typing import Any

import numpy as np
from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from neurolake.errors import NotFound, PermissionDenied
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need, request_principal
from neurolake.server.deps import get_lake
from neurolake.server.http import bytes_response
from neurolake.server.models import ChunkBody, GrapheneManifest, GrapheneMeshInfo, PrecomputedInfo
from neurolake.server.routing import APIRouter
from neurolake.volumes import precomputed as pc

router = APIRouter(tags=["graphene"])
GET = ["GET", "HEAD"]
DATA_DIR_SECONDS = 24 * 3600  # how long the signed data_dir of one info read works (re-open the volume after)
N_LAYERS = 2  # layer 1 supervoxels, layer 2 roots: neurolake has no chunk hierarchy in between
GRAPH_CHUNK_XYZ = [256, 256, 512]
LOCAL_USER = "local"  # the user named in data_dir paths of a server without --auth
ENCODING = "compressed_segmentation"
DATA = "/graphene/{table_id}/{expires}/{user}/{signature}"


# -- info ------------------------------------------------------------------------------------------
def _signer(lake: Lake):
    from neurolake.storage.signing import Signer, lake_key

    return lake.state("graphene.signer", lambda: Signer(lake_key(lake)))


def _signature(lake: Lake, ds: str, user: str, expires: int) -> str:
    return _signer(lake).signature(0, f"graphene:{ds}", user, expires)


def data_dir(request: Request, lake: Lake, ds: str) -> str:
    """The signed ``data_dir`` URL of datastack ``ds`` for the requester (see module docstring)."""
    from urllib.parse import quote

    p = request_principal(request)
    user = LOCAL_USER if p is None else p.name
    expires = int(time.time()) + DATA_DIR_SECONDS
    base = str(request.base_url).rstrip("/")
    return f"{base}/graphene/{quote(ds, safe='')}/{expires}/{quote(user, safe='')}/{_signature(lake, ds, user, expires)}"


def segmentation_info(request: Request, lake: Lake, ds: str) -> dict[str, Any]:
    """The chunkedgraph ``info`` of datastack ``ds`` in the shape cloud-volume's graphene frontend reads
    (keys listed in the module docstring) plus ``neurolake`` (:meth:`Segmentation.info`). Raises NotFound
    (no datastack, no proofreadable segmentation)."""
    seg = lake.datastack(ds).segmentation
    info = seg.info()
    vs = lake.datastack_info(ds)["voxel_size_nm"]
    out: dict[str, Any] = {
        "@type": "neuroglancer_multiscale_volume", "app": {"supported_api_versions": [0, 1]},
        "chunks_start_at_voxel_offset": True, "data_dir": None, "type": "segmentation",
        "graph": {"chunk_size": GRAPH_CHUNK_XYZ, "n_layers": N_LAYERS, "cv_mip": 0, "n_bits_for_layer_id": 8,
                  "fan_out": 2, "spatial_bit_masks": {str(i): 10 for i in range(1, N_LAYERS + 1)}},
        "verify_mesh": False, "mesh": None, "mesh_metadata": None, "num_channels": 1, "data_type": "uint64",
        "scales": [], "voxel_size_nm": vs, "neurolake": info}
    if info["layer"]:
        la = lake.layer(ds, info["layer"])
        out["scales"] = pc.info(la, ENCODING)["scales"]
        out["data_dir"] = data_dir(request, lake, ds)
        out["mesh"] = "mesh"
        out["mesh_metadata"] = {"max_meshed_layer": N_LAYERS}  # no draco: legacy precomputed fragments
    return out


# -- tokens ----------------------------------------------------------------------------------------
def _unhex(value: bytes) -> bytes | None:
    """``Bearer <hex of an nl_ token>`` → ``Bearer <token>``; None for anything else."""
    from neurolake.access.core import TOKEN_PREFIX

    scheme, _, rest = value.decode("latin-1").strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() != "bearer" or not rest or len(rest) % 2:
        return None
    try:
        text = binascii.unhexlify(rest).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return f"Bearer {text}".encode("latin-1") if text.startswith(TOKEN_PREFIX) else None


class HexToken:
    """ASGI middleware: ``Authorization: Bearer <hex>`` whose hex decodes to a neurolake token is passed on
    as ``Bearer <token>`` (cloud-volume's graphene frontend accepts only hex or base64 tokens)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            for i, (k, v) in enumerate(headers):
                if k == b"authorization":
                    new = _unhex(v)
                    if new is not None:
                        scope = {**scope, "headers": [*headers[:i], (k, new), *headers[i + 1:]]}
                    break
        await self.app(scope, receive, send)


def install(app, auth: bool) -> None:
    """Include :data:`router`; under ``auth`` add :class:`HexToken` (call after the auth middleware is added,
    so that it runs first)."""
    app.include_router(router)
    if auth:
        app.add_middleware(HexToken)


# -- data_dir --------------------------------------------------------------------------------------
def _grant(request: Request, table_id: str, expires: str, user: str, signature: str) -> Any:
    """Check a signed data_dir path: the signature, the expiry and (``--auth``) the user; returns the principal
    (None without --auth). Raises PermissionDenied."""
    lake = request.app.state.lake
    try:
        exp = int(expires)
    except ValueError:
        raise PermissionDenied("graphene data path is malformed: expiry is not a Unix time", expires=expires) from None
    if not hmac.compare_digest(_signature(lake, table_id, user, exp), signature):
        raise PermissionDenied("graphene data path signature does not match (tampered, for another datastack or "
                               "user, or the signing key was rotated); re-open the volume", datastack=table_id)
    if time.time() >= exp:
        raise PermissionDenied(f"graphene data path expired at Unix time {exp}; re-open the volume (its info "
                               "gives a new one)", expires=exp)
    if not getattr(request.app.state, "auth", False):
        return None
    from neurolake.server.data import data_state

    p = data_state(request).principal(user, table_id, True)
    request.app.state.quotas.check(p)
    return p


def _count(request: Request, p: Any, resp: Response) -> Response:
    if p is not None:
        request.app.state.quotas.add(p, 1, len(resp.body))
    return resp


def _sv_layer(request: Request, lake: Lake, ds: str):
    from neurolake.proofreading import segmentation

    name = segmentation(lake, ds).layer
    if name is None:
        raise NotFound(f"the segmentation of {ds!r} has no supervoxel layer", datastack=ds)
    return cutouts.layer_of(request, ds, name)


@router.api_route(DATA + "/info", access=Need.public("signed data_dir: the signature is the credential"),
                  methods=GET, summary="graphene data_dir: precomputed info of the supervoxels (uint64)")
def data_info(table_id: str, expires: str, user: str, signature: str, request: Request,
              lake: Lake = Depends(get_lake)) -> PrecomputedInfo:
    p = _grant(request, table_id, expires, user, signature)
    doc = pc.info(_sv_layer(request, lake, table_id), ENCODING)
    doc["data_type"] = "uint64"
    return _count(request, p, bytes_response(request, json.dumps(doc).encode(), "application/json"))


@router.api_route(DATA + "/mesh/info", access=Need.public("signed data_dir: the signature is the credential"),
                  methods=GET, summary="graphene data_dir: mesh info (legacy, unsharded)")
def mesh_info(table_id: str, expires: str, user: str, signature: str, request: Request) -> GrapheneMeshInfo:
    p = _grant(request, table_id, expires, user, signature)
    doc = {"@type": "neuroglancer_legacy_mesh", "spatial_index": None}
    return _count(request, p, bytes_response(request, json.dumps(doc).encode(), "application/json"))


@router.api_route(DATA + "/mesh/{fragment}", access=Need.public("signed data_dir: the signature is the credential"),
                  methods=GET, summary="graphene data_dir: one mesh fragment")
def mesh_fragment(table_id: str, expires: str, user: str, signature: str, fragment: str, request: Request,
                  lake: Lake = Depends(get_lake)) -> ChunkBody:
    p = _grant(request, table_id, expires, user, signature)
    from neurolake.meshes import fragment_bytes

    body = fragment_bytes(lake, table_id, fragment)  # keys are "{sv}:0:{bx}_{by}_{bz}": URL-safe
    return _count(request, p, bytes_response(request, body, "application/octet-stream"))


@router.api_route(DATA + "/{key}/{chunk}", access=Need.public("signed data_dir: the signature is the credential"),
                  methods=GET, summary="graphene data_dir: a chunk of supervoxel ids (uint64 compressed_segmentation)")
def data_chunk(table_id: str, expires: str, user: str, signature: str, key: str, chunk: str, request: Request,
               lake: Lake = Depends(get_lake)) -> ChunkBody:
    p = _grant(request, table_id, expires, user, signature)
    la = _sv_layer(request, lake, table_id)
    mip = pc.mip_of_key(la, key)
    x, y, z = pc.parse_chunk_name(la, mip, chunk)
    arr = cutouts.read(request, la, x, y, z, mip, what="graphene chunk")
    body = pc.encode_chunk(arr.astype(np.uint64, copy=False), ENCODING)
    return _count(request, p, bytes_response(request, body, "application/octet-stream"))


# -- meshing ---------------------------------------------------------------------------------------
@router.get("/meshing/api/v1/table/{table_id}/manifest/{spec}", access=Need.read("table_id"),
            summary="graphene meshing: fragments of a root's mesh")
async def manifest(table_id: str, spec: str, request: Request, return_seg_ids: str | None = None,
                   lake: Lake = Depends(get_lake)) -> GrapheneManifest:
    from neurolake.base.integers import UINT64_MAX, whole

    root_text, _, _lod = spec.partition(":")
    root = whole(root_text, "root_id", 0, UINT64_MAX)

    def run() -> dict:
        from neurolake.meshes import root_fragments

        names = root_fragments(lake, table_id, root)
        out: dict[str, Any] = {"fragments": names}
        if return_seg_ids not in (None, "", "0", "false", "False"):
            out["seg_ids"] = [root] * len(names)
        return out

    return await run_in_threadpool(run)
