"""Meshes from a real ``neurolake serve`` process, read by cloud-volume (unmodified) and plain HTTP.

cloud-volume reads the legacy format (``mesh``: manifests ``{id}:0`` + fragments) and, after a build with
``--draco``, the multi-resolution Draco format (``mesh_draco``); both must give the neuron's voxel bounds
in nm. Proofread roots are read from ``/precomputed-roots/``: after a merge the root's mesh covers both
neurons, after the undo the new root's mesh covers one."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
from mesh_data import bbox_nm

DS, LAYER = "gala_fibsem", "segmentation"


@pytest.fixture(scope="module")
def served(gala_mesh_path, tmp_path_factory, serve_lake):
    """A served private copy of the meshed gala lake (this module edits it): (base URL, lake path)."""
    path = tmp_path_factory.mktemp("gala-http") / "lake"
    shutil.copytree(gala_mesh_path, path)
    return serve_lake(path), path


def _cv(url):
    from cloudvolume import CloudVolume

    return CloudVolume(url, use_https=False, progress=False, cache=False)


def _one(meshes, sid):
    return meshes[sid] if isinstance(meshes, dict) else meshes


def _largest(vol, k=2):
    ids, counts = np.unique(vol, return_counts=True)
    keep = ids != 0
    return [int(i) for i in ids[keep][np.argsort(counts[keep])[::-1][:k]]]


def test_cloudvolume_reads_legacy_meshes(served, gala_volume):
    base, _ = served
    url = f"precomputed://{base}/precomputed/{DS}/{LAYER}"
    vol = _cv(url)
    assert vol.info["mesh"] == "mesh"
    for sid in _largest(gala_volume, 3) + [int(np.unique(gala_volume)[5])]:
        m = _one(vol.mesh.get(sid), sid)
        lo, hi = bbox_nm(gala_volume, sid, 8.0)
        np.testing.assert_array_equal(m.vertices.min(axis=0), lo)
        np.testing.assert_array_equal(m.vertices.max(axis=0), hi)
        assert len(m.faces) > 0
    r = httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh/{10**9}:0")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh/1:0:77_0_0").status_code == 404
    assert httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh/abc:0").status_code == 404
    assert httpx.get(f"{base}/precomputed/{DS}/nope/mesh/info").status_code == 404
    # chunks of the layer are still served (the mesh routes come first but only claim mesh/ and mesh_draco/)
    info = httpx.get(f"{base}/precomputed/{DS}/{LAYER}/info").json()
    scale = info["scales"][0]
    (cx, cy, cz), (sx, sy, sz) = scale["chunk_sizes"][0], scale["size"]
    chunk = f"0-{min(cx, sx)}_0-{min(cy, sy)}_0-{min(cz, sz)}"
    assert httpx.get(f"{base}/precomputed/{DS}/{LAYER}/{scale['key']}/{chunk}").status_code == 200


def test_cloudvolume_reads_draco_meshes(served, gala_volume):
    from neurolake import open_lake
    from neurolake.meshes import build_meshes

    base, path = served
    lake = open_lake(path)
    try:
        s = build_meshes(lake, DS, LAYER, block=(64, 48, 20), draco=True, scheduler="threads")
    finally:
        lake.close()
    assert s["meshed_blocks"] == 0  # same blocks: only the info changes
    vol = _cv(f"precomputed://{base}/precomputed/{DS}/{LAYER}")
    assert vol.info["mesh"] == "mesh_draco"
    sid = _largest(gala_volume, 1)[0]
    lo, hi = bbox_nm(gala_volume, sid, 8.0)
    m = _one(vol.mesh.get(sid), sid)
    tol = (hi - lo).max() / (2**16 - 1)  # 16-bit positions over the object's box
    np.testing.assert_allclose(m.vertices.min(axis=0), lo, atol=tol)
    np.testing.assert_allclose(m.vertices.max(axis=0), hi, atol=tol)
    raw = sum(len(httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh/{k}").content)
              for k in httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh/{sid}:0").json()["fragments"])
    draco = len(httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh_draco/{sid}").content)
    assert draco * 5 < raw, (draco, raw)
    assert httpx.get(f"{base}/precomputed/{DS}/{LAYER}/mesh_draco/{10**9}.index").status_code == 404


def test_root_meshes_follow_merge_and_undo(served, gala_volume):
    from neurolake import open_lake

    base, path = served
    a, b = _largest(gala_volume, 2)
    lo_a, hi_a = bbox_nm(gala_volume, a, 8.0)
    lo_b, hi_b = bbox_nm(gala_volume, b, 8.0)
    lake = open_lake(path)
    try:
        seg = lake.datastack(DS).segmentation
        op = seg.merge(a, b, author="test")
        (root,) = op["new_roots"]
        url = f"precomputed://{base}/precomputed-roots/{DS}/{LAYER}"
        vol = _cv(url)
        m = _one(vol.mesh.get(root), root)
        np.testing.assert_allclose(m.vertices.min(axis=0), np.minimum(lo_a, lo_b), atol=0.1)
        np.testing.assert_allclose(m.vertices.max(axis=0), np.maximum(hi_a, hi_b), atol=0.1)
        legacy = httpx.get(f"{base}/precomputed-roots/{DS}/{LAYER}/mesh/{root}:0").json()["fragments"]
        assert {k.split(":")[0] for k in legacy} == {str(a), str(b)}
        undo = seg.undo(op["operation_id"], author="test")
        now_a = seg.root(a)
        assert now_a in undo["new_roots"]
        m = _one(_cv(url).mesh.get(now_a), now_a)
        np.testing.assert_allclose(m.vertices.min(axis=0), lo_a, atol=0.1)
        np.testing.assert_allclose(m.vertices.max(axis=0), hi_a, atol=0.1)
        # the merged root is expired but immutable: its mesh at the time of the merge is still served
        r = httpx.get(f"{base}/precomputed-roots/{DS}/{LAYER}@{op['timestamp']}/mesh/{root}:0")
        assert r.status_code == 200 and r.json()["fragments"] == legacy
    finally:
        lake.close()
    assert httpx.get(f"{base}/precomputed-roots/{DS}/{LAYER}/mesh/12345:0").status_code == 404
    assert httpx.get(f"{base}/precomputed-roots/{DS}/{LAYER}@yesterday-ish/mesh/info").status_code == 400
