"""Meshes of real segmentations (neurolake.meshes): geometry against the voxels, closure, fragments, roots.

Gala FIB-SEM neurons (8 nm isotropic, meshed in 36 blocks of 64 × 48 × 20 so neurons are cut into pieces)
and the Gerhard et al. 2013 labels (4.6 × 4.6 × 50 nm). Every object is closed (the volume's faces are
padded with background), so every mesh must be watertight once its block pieces are joined."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import trimesh
from mesh_data import bbox_nm

from neurolake import meshes as M
from neurolake import open_lake
from neurolake.errors import InvalidArgument, NotFound

DS, LAYER = "gala_fibsem", "segmentation"


@pytest.fixture(scope="module")
def gala(gala_mesh_path):
    lake = open_lake(gala_mesh_path)
    yield lake
    lake.close()


@pytest.fixture
def gala_copy(gala_mesh_path, tmp_path):
    """A private copy of the gala lake (edits, on-demand meshing) with its mesh blocks removed (the mesh
    record stays: block size 64 × 48 × 20)."""
    shutil.copytree(gala_mesh_path, tmp_path / "lake")
    lake = open_lake(tmp_path / "lake")
    shutil.rmtree(lake.layer(DS, LAYER).root / "mesh" / "blocks")
    yield lake
    lake.close()


def _ids(vol):
    ids = np.unique(vol)
    return [int(i) for i in ids if i]


def test_every_gala_neuron_matches_its_voxels_and_is_watertight(gala, gala_volume):
    ids = _ids(gala_volume)
    assert len(ids) == 87
    pieces = 0
    for sid in ids:
        keys = M.segment_fragments(gala, DS, LAYER, sid)
        pieces += len(keys) > 1
        v, f = M.segment_mesh(gala, DS, LAYER, sid)
        lo, hi = bbox_nm(gala_volume, sid, 8.0)
        np.testing.assert_array_equal(v.min(axis=0), lo)  # the voxel faces, in nm: exact
        np.testing.assert_array_equal(v.max(axis=0), hi)
        mesh = trimesh.Trimesh(v, f, process=False)
        assert mesh.is_watertight, f"neuron {sid} ({len(keys)} fragments) is not closed"
        assert mesh.is_winding_consistent
        # the enclosed volume is that of the voxels up to the corners marching cubes cuts
        n = int((gala_volume == sid).sum())
        assert (0.6 if n > 1000 else 0.1) * n * 512 < mesh.volume <= n * 512  # outward normals: positive
    assert pieces > 40, "most neurons should span several blocks"


def test_gerhard_labels_meshes(gerhard_labels_path):
    lake = open_lake(gerhard_labels_path)
    try:
        vol = lake.layer("gerhard2013", "labels").cutout((0, 1024), (0, 1024), (0, 20))
        res = np.array([4.6, 4.6, 50.0])
        for sid in (159, 191, 223):  # glia, mitochondria, synapses: many separate bodies each
            v, f = M.segment_mesh(lake, "gerhard2013", "labels", sid)
            lo, hi = bbox_nm(vol, sid, res)
            np.testing.assert_allclose(v.min(axis=0), lo, atol=1e-3)
            np.testing.assert_allclose(v.max(axis=0), hi, atol=1e-3)
            mesh = trimesh.Trimesh(v, f, process=False)
            assert mesh.is_watertight
            # each connected body of voxels is at least one closed shell
            assert len(mesh.split(only_watertight=False)) > 10
        meta = M.mesh_info(lake, "gerhard2013", "labels")
        assert meta["complete"] and meta["provenance"]["action"] == "mesh"
        assert meta["provenance"]["params"]["mesher"] == "zmesh"
        assert meta["provenance"]["inputs"][0]["layer"] == "labels"
    finally:
        lake.close()


def test_fragment_format_round_trip(gala):
    sid = 7 if 7 in M._index(gala, gala.layer(DS, LAYER)).seg else int(M._index(gala, gala.layer(DS, LAYER)).seg[0])
    key = M.segment_fragments(gala, DS, LAYER, sid)[0]
    data = M.layer_fragment(gala, DS, LAYER, key)
    v, f = M.decode_fragment(data)
    assert M.encode_fragment(v, f) == data
    (n,) = np.frombuffer(data[:4], "<u4")
    assert n == len(v) and len(data) == 4 + 12 * n + 12 * len(f) and f.max() < n
    with pytest.raises(InvalidArgument):
        M.decode_fragment(data[:-2])


def test_errors_are_clear(gala, tmp_path):
    with pytest.raises(NotFound, match="has no mesh"):
        M.segment_fragments(gala, DS, LAYER, 10**12)
    with pytest.raises(NotFound, match="not a mesh fragment key"):
        M.layer_fragment(gala, DS, LAYER, "../../catalog.sqlite")
    with pytest.raises(NotFound, match="does not exist"):
        M.layer_fragment(gala, DS, LAYER, "1:0:99_0_0")
    with pytest.raises(NotFound):
        M.build_meshes(gala, DS, "nope")
    with pytest.raises(InvalidArgument, match="block"):
        M.build_meshes(gala, DS, LAYER, block=(0, 1, 2))
    with pytest.raises(InvalidArgument, match="simplify"):
        M.build_meshes(gala, DS, LAYER, block=(64, 48, 20), simplify=-3)
    with pytest.raises(InvalidArgument, match="segment_id"):
        M.segment_fragments(gala, DS, LAYER, -1)
    with pytest.raises(NotFound):
        M.root_fragments(gala, DS, 12345)  # not a root id


def test_build_is_resumable_and_recorded(gala_copy):
    lake = gala_copy
    first = M.build_meshes(lake, DS, LAYER, block=(64, 48, 20), scheduler="threads")
    assert first["meshed_blocks"] == 36 and first["objects"] == 87
    blocks = lake.layer(DS, LAYER).root / "mesh" / "blocks"
    (blocks / "1_1_1.parquet").unlink()  # as if the job was killed before that block landed
    again = M.build_meshes(lake, DS, LAYER, block=(64, 48, 20), scheduler="threads")
    assert again["meshed_blocks"] == 1 and again["fragments"] == first["fragments"]
    assert again["bytes"] == first["bytes"]
    meta = json.loads((blocks.parent / "meta.json").read_text())
    assert meta["progress"] == {"blocks": 36, "done": 36} and meta["provenance"]["result"]["objects"] == 87


def _bounds(v):
    return v.min(axis=0), v.max(axis=0)


def test_root_mesh_follows_merge_and_undo_meshing_only_missing_blocks(gala_copy, gala_volume, gala_mesh_path):
    lake = gala_copy
    seg = lake.datastack(DS).segmentation
    ids = _ids(gala_volume)
    sizes = {i: int((gala_volume == i).sum()) for i in ids}
    a, b = sorted(ids, key=sizes.get)[-1], sorted(ids, key=sizes.get)[-2]  # two large neurons
    ra, rb = seg.root(a), seg.root(b)
    blocks = lake.layer(DS, LAYER).root / "mesh" / "blocks"

    keys_a = M.root_fragments(lake, DS, ra)  # nothing meshed yet: the blocks holding neuron a are meshed now
    built_a = len(list(blocks.glob("*.parquet")))
    assert 0 < built_a < 36
    va, _ = M.root_mesh(lake, DS, ra)
    np.testing.assert_array_equal(np.stack(_bounds(va)), np.stack(bbox_nm(gala_volume, a, 8.0)))
    # the same fragments, byte for byte, as the whole-layer build (same blocks, same overlap)
    full = open_lake(gala_mesh_path)
    try:
        assert keys_a == sorted(M.segment_fragments(full, DS, LAYER, a))
        for k in keys_a:
            assert M.fragment_bytes(lake, DS, k) == M.layer_fragment(full, DS, LAYER, k)
    finally:
        full.close()

    M.root_fragments(lake, DS, rb)
    built_ab = len(list(blocks.glob("*.parquet")))
    op = seg.merge(a, b, author="test")
    (root,) = op["new_roots"]
    keys = M.root_fragments(lake, DS, root)
    assert len(list(blocks.glob("*.parquet"))) == built_ab, "a merge of meshed supervoxels meshes nothing new"
    assert set(keys) == set(keys_a) | set(M.root_fragments(lake, DS, rb))
    v, f = M.root_mesh(lake, DS, root)
    lo_a, hi_a = bbox_nm(gala_volume, a, 8.0)
    lo_b, hi_b = bbox_nm(gala_volume, b, 8.0)
    np.testing.assert_array_equal(v.min(axis=0), np.minimum(lo_a, lo_b))
    np.testing.assert_array_equal(v.max(axis=0), np.maximum(hi_a, hi_b))
    assert len(v) > len(va)

    undo = seg.undo(op["operation_id"], author="test")
    now_a = seg.root(a)
    assert now_a in undo["new_roots"] and now_a != root
    v2, _ = M.root_mesh(lake, DS, now_a)
    np.testing.assert_array_equal(np.stack(_bounds(v2)), np.stack([lo_a, hi_a]))
    assert sorted(M.root_fragments(lake, DS, now_a)) == sorted(keys_a)
    # the merged root keeps its mesh (root ids are immutable): a view at the time of the merge still works
    assert M.root_fragments(lake, DS, root, timestamp=op["timestamp"]) == keys
