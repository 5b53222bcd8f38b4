"""Unmodified cloud-volume 12.15.2 opens ``graphene://`` (the URL caveclient's ``info.segmentation_source()``
gives) against a real ``neurolake serve`` process: cutouts of root ids now and at a time before a merge,
``get_roots``, ``get_leaves`` and meshes of roots, compared with the lake-side truth
(:class:`~neurolake.proofreading.Segmentation` roots, leaves and remapped cutouts; :mod:`neurolake.meshes`
fragments). With and without ``serve --auth``."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from neurolake import open_lake

BOX = (slice(0, 200), slice(0, 100), slice(0, 50))  # the whole gala crop (x, y, z voxels)


def _xyz_to_zyx(img) -> np.ndarray:
    return np.asarray(img)[..., 0].transpose(2, 1, 0)


def _truth(path, timestamp=None) -> tuple[np.ndarray, np.ndarray]:
    """(supervoxels, root ids at ``timestamp``) of the whole volume, (z, y, x), read in the lake."""
    lake = open_lake(path)
    try:
        sv = lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
        return sv, lake.datastack("gala").segmentation.remap_to_roots(sv, timestamp)
    finally:
        lake.close()


@pytest.fixture(scope="module")
def served(graphene_lake, serve_lake, tmp_path_factory):
    dst = tmp_path_factory.mktemp("graphene-open") / "lake"
    shutil.copytree(graphene_lake["path"], dst)
    return serve_lake(dst), dst


@pytest.fixture(scope="module")
def source(served) -> str:
    from caveclient import CAVEclient

    base, _ = served
    return CAVEclient("gala", server_address=base).info.segmentation_source()


def test_info_opens_in_cloudvolume(served, source):
    from cloudvolume import CloudVolume

    base, _ = served
    assert source == f"graphene://{base}/segmentation/table/gala"
    assert httpx.get(f"{base}/segmentation/table/gala/info", timeout=30).status_code == 200  # no --auth: no token
    # cloud-volume insists on *some* token; without --auth any placeholder does
    vol = CloudVolume(source, secrets="local", progress=False)
    assert vol.dtype == np.uint64 and vol.layer_type == "segmentation"
    assert list(vol.bounds.maxpt) == [200, 100, 50] and list(vol.resolution) == [8, 8, 8]
    assert vol.meta.n_layers == 2 and vol.meta.supports_api("v1")
    assert vol.meta.cloudpath.startswith(f"{base}/graphene/gala/")
    assert len(vol.meta.scales) == 3
    # the supervoxels themselves (agglomerate=False): the stored layer, uint64
    sv, _ = _truth(served[1])
    assert (_xyz_to_zyx(vol[BOX]) == sv).all()
    lo = CloudVolume(source, secrets="local", progress=False, mip=1)
    assert lo[0:100, 0:50, 0:25].shape == (100, 50, 25, 1)


def test_roots_leaves_and_cutouts_before_and_after_a_merge(served, source):
    from cloudvolume import CloudVolume

    base, path = served
    vol = CloudVolume(source, secrets="local", progress=False)
    sv, roots0 = _truth(path)
    got = vol.download(vol.bounds, agglomerate=True)
    assert got.dtype == np.uint64 and (_xyz_to_zyx(got) == roots0).all()
    ids = np.unique(sv[sv != 0])
    a, b = int(ids[0]), int(ids[1])
    ra, rb = (int(roots0[sv == a][0]), int(roots0[sv == b][0]))
    assert ra != rb
    assert vol.get_roots([a, b, 0]).tolist() == [ra, rb, 0]
    assert vol.get_leaves(ra, vol.bounds, 0).tolist() == [a]
    t_before = dt.datetime.now(dt.UTC)
    time.sleep(1.1)  # cloud-volume sends whole Unix seconds, rounded up
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge", json={"supervoxels": [a, b]}, timeout=30)
    assert r.status_code == 200, r.text
    merged = r.json()["new_roots"][0]
    _, roots_now = _truth(path)
    _, roots_then = _truth(path, t_before)
    assert (roots_then == roots0).all() and (roots_now != roots0).any()
    # now
    assert vol.get_roots([a, b]).tolist() == [merged, merged]
    assert (_xyz_to_zyx(vol.download(vol.bounds, agglomerate=True)) == roots_now).all()
    # before the merge: as a datetime, as Unix seconds, and as the volume's own timestamp with vol[...]
    assert vol.get_roots([a, b], timestamp=t_before).tolist() == [ra, rb]
    then = vol.download(vol.bounds, agglomerate=True, timestamp=t_before)
    assert (_xyz_to_zyx(then) == roots_then).all()
    then = vol.download(vol.bounds, agglomerate=True, timestamp=int(t_before.timestamp()))
    assert (_xyz_to_zyx(then) == roots_then).all()
    old = CloudVolume(source, secrets="local", progress=False, agglomerate=True, timestamp=t_before)
    assert (_xyz_to_zyx(old[BOX]) == roots_then).all()
    assert (_xyz_to_zyx(CloudVolume(source, secrets="local", progress=False, agglomerate=True)[BOX]) == roots_now).all()
    # leaves, whole volume and inside a box (only supervoxels whose bounding box meets it)
    lake = open_lake(path)
    seg = lake.datastack("gala").segmentation
    assert sorted(vol.get_leaves(merged, vol.bounds, 0).tolist()) == sorted([a, b]) == seg.leaves(merged).tolist()
    z, y, x = np.nonzero(sv == a)
    box = ((int(x.min()), int(x.max()) + 1), (int(y.min()), int(y.max()) + 1), (int(z.min()), int(z.max()) + 1))
    from cloudvolume import Bbox

    bb = Bbox([box[0][0], box[1][0], box[2][0]], [box[0][1], box[1][1], box[2][1]])
    assert vol.get_leaves(merged, bb, 0).tolist() == seg.leaves(merged, box).tolist()
    assert a in seg.leaves(merged, box).tolist()
    lake.close()
    # unknown root: 404
    with pytest.raises(Exception, match="404"):
        vol.get_leaves(123456789, vol.bounds, 0)


def _lake_mesh(path, root):
    """The root's mesh in the lake: its fragments decoded and joined (cloud-volume's Mesh)."""
    from cloudvolume import Mesh

    from neurolake.meshes import fragment_bytes, root_fragments

    lake = open_lake(path)
    try:
        frags = [Mesh.from_precomputed(fragment_bytes(lake, "gala", k)) for k in root_fragments(lake, "gala", root)]
    finally:
        lake.close()
    return Mesh.concatenate(*frags)


def _vertex_set(vertices) -> set:
    return {tuple(v) for v in np.round(np.asarray(vertices, dtype=np.float64), 3)}


def test_mesh_of_roots(served, source):
    from cloudvolume import CloudVolume

    base, path = served
    vol = CloudVolume(source, secrets="local", progress=False)
    sv, _ = _truth(path)
    c, d = (int(i) for i in np.unique(sv[sv != 0])[-2:])
    r = httpx.post(f"{base}/api/v1/datastacks/gala/segmentation/merge", json={"supervoxels": [c, d]}, timeout=30)
    assert r.status_code == 200, r.text
    merged = r.json()["new_roots"][0]  # its mesh: the fragments of both supervoxels
    sv, roots = _truth(path)
    counts = {int(r): int((roots == r).sum()) for r in np.unique(roots[roots != 0])}
    for root in [*sorted(counts, key=counts.get)[-2:], merged]:
        got = vol.mesh.get(root)[root]
        want = _lake_mesh(path, root)
        assert len(got.faces) == len(want.faces) > 0
        assert _vertex_set(got.vertices) == _vertex_set(want.vertices)
        # vertices span the voxel faces of the root's voxels, in nm
        z, y, x = np.nonzero(roots == root)
        lo = np.array([x.min(), y.min(), z.min()]) * 8.0
        hi = (np.array([x.max(), y.max(), z.max()]) + 1) * 8.0
        assert np.allclose(got.vertices.min(axis=0), lo) and np.allclose(got.vertices.max(axis=0), hi)
    # the manifest over HTTP; unknown roots and fragments are 404, never 500
    r = httpx.get(f"{base}/meshing/api/v1/table/gala/manifest/{root}:0", params={"return_seg_ids": 1}, timeout=60)
    assert r.status_code == 200 and len(r.json()["fragments"]) == len(r.json()["seg_ids"]) > 0
    assert httpx.get(f"{base}/meshing/api/v1/table/gala/manifest/99999999999:0", timeout=30).status_code == 404
    assert httpx.get(f"{base}/meshing/api/v1/table/gala/manifest/abc:0", timeout=30).status_code == 400
    assert httpx.get(f"{vol.meta.cloudpath}/mesh/1:0:99_99_99", timeout=30).status_code == 404
    assert httpx.get(f"{vol.meta.cloudpath}/mesh/nonsense", timeout=30).status_code == 404
    assert httpx.get(f"{vol.meta.cloudpath}/mesh/info", timeout=30).json()["@type"] == "neuroglancer_legacy_mesh"


def test_data_dir_is_signed(served, source):
    from cloudvolume import CloudVolume

    base, _ = served
    vol = CloudVolume(source, secrets="local", progress=False)
    d = vol.meta.cloudpath
    key = vol.meta.scales[0]["key"]
    chunk = f"0-{vol.meta.scales[0]['chunk_sizes'][0][0]}_0-{vol.meta.scales[0]['chunk_sizes'][0][1]}_0-" \
            f"{vol.meta.scales[0]['chunk_sizes'][0][2]}"
    ok = httpx.get(f"{d}/{key}/{chunk}", timeout=30)
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/octet-stream"
    head = httpx.head(f"{d}/{key}/{chunk}", timeout=30)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(ok.content)
    assert httpx.get(f"{d}/info", timeout=30).json()["data_type"] == "uint64"
    assert httpx.get(f"{d}/{key}/1-2_0-1_0-1", timeout=30).status_code == 404  # off the chunk grid
    prefix, sig = d.rsplit("/", 1)
    bad = httpx.get(f"{prefix}/{'0' * len(sig)}/{key}/{chunk}", timeout=30)
    assert bad.status_code == 403 and "signature" in bad.json()["message"]
    parts = d.split("/")
    parts[-3] = str(int(parts[-3]) + 1)  # a later expiry than was signed
    assert httpx.get("/".join(parts) + f"/{key}/{chunk}", timeout=30).status_code == 403
    other = d.replace("/graphene/gala/", "/graphene/nope/")
    assert httpx.get(f"{other}/{key}/{chunk}", timeout=30).status_code == 403


_SECRET_FILE_SCRIPT = """
import sys, numpy as np
from cloudvolume import CloudVolume
vol = CloudVolume(sys.argv[1], progress=False, agglomerate=True)
print(int(np.asarray(vol[0:200, 0:100, 0:50]).max()))
"""


def test_auth_tokens(graphene_lake, serve_lake, tmp_path):
    """``serve --auth``: cloud-volume with the hex form of a viewer's token (``secrets=`` or the
    ``cave-secret.json`` file a new user writes) reads roots, leaves and meshes; no token → 401;
    a user without a role → 403; the raw ``nl_`` token is refused by cloud-volume itself."""
    from cloudvolume import CloudVolume
    from cloudvolume.exceptions import AuthenticationError
    from requests import HTTPError

    dst = tmp_path / "lake"
    shutil.copytree(graphene_lake["path"], dst)
    base = serve_lake(dst, "--auth")
    src = f"graphene://{base}/segmentation/table/gala"
    assert httpx.get(f"{base}/segmentation/table/gala/info", timeout=30).status_code == 401
    assert httpx.get(f"{base}/meshing/api/v1/table/gala/manifest/1:0", timeout=30).status_code == 401
    with pytest.raises(AuthenticationError, match="not formatted correctly"):
        CloudVolume(src, secrets=graphene_lake["token"], progress=False)
    with pytest.raises(HTTPError, match="403"):
        CloudVolume(src, secrets=graphene_lake["outsider_hex"], progress=False)
    with pytest.raises(HTTPError, match="401"):
        CloudVolume(src, secrets="abcdef", progress=False)
    vol = CloudVolume(src, secrets=graphene_lake["hex_token"], progress=False)
    sv, roots = _truth(dst)
    assert (_xyz_to_zyx(vol.download(vol.bounds, agglomerate=True)) == roots).all()
    a = int(np.unique(sv[sv != 0])[0])
    ra = int(roots[sv == a][0])
    assert vol.get_roots([a]).tolist() == [ra] and vol.get_leaves(ra, vol.bounds, 0).tolist() == [a]
    mesh = vol.mesh.get(ra)[ra]
    assert len(mesh.faces) == len(_lake_mesh(dst, ra).faces) > 0
    # the signed data_dir carries the grant (cloud-files sends no token); the API calls need the token
    key = vol.meta.scales[0]["key"]
    assert httpx.get(f"{vol.meta.cloudpath}/info", timeout=30).status_code == 200
    assert httpx.get(f"{vol.meta.cloudpath}/{key}/0-1_0-1_0-1", timeout=30).status_code == 404
    assert httpx.post(f"{base}/segmentation/api/v1/table/gala/roots_binary", content=np.array([a], "<u8").tobytes(),
                      timeout=30).status_code == 401
    # a new user: the token in ~/.cloudvolume/secrets/{host}-cave-secret.json, nothing passed in code
    home = tmp_path / "home"
    secrets = home / ".cloudvolume" / "secrets"
    secrets.mkdir(parents=True)
    host = base.split("://", 1)[1]
    (secrets / f"{host}-cave-secret.json").write_text(json.dumps({"token": graphene_lake["hex_token"]}))
    env = {**os.environ, "HOME": str(home), "NO_PROXY": "127.0.0.1,localhost"}
    out = subprocess.run([sys.executable, "-c", _SECRET_FILE_SCRIPT, src], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == int(roots.max())
    # ... and without the file, cloud-volume stops before any request
    (secrets / f"{host}-cave-secret.json").unlink()
    out = subprocess.run([sys.executable, "-c", _SECRET_FILE_SCRIPT, src], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "AuthenticationError" in out.stderr
