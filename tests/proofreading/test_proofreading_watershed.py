"""Watershed supervoxels of the Gerhard et al. 2013 membrane labels, their RAG, and splits inside roots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from neurolake import init_lake, open_lake
from neurolake.proofreading import segmentation

DATA = Path(__file__).resolve().parents[2] / "data"
MEMBRANE = (0, 32, 64, 96, 128)


@pytest.fixture(scope="module")
def gerhard_crop(tmp_path_factory):
    """Sections 0-3, a 256 x 256 crop of the real label images, ingested; supervoxels by the CLI."""
    files = sorted((DATA / "gerhard2013" / "labels").glob("*.png"))[:4]
    labels = np.stack([np.array(Image.open(f))[256:512, 256:512] for f in files]).astype(np.uint32)
    d = tmp_path_factory.mktemp("gerhard")
    np.save(d / "labels.npy", labels)
    lake = init_lake(d / "lake")
    lake.ingest(str(d / "labels.npy"), "g", "labels", voxel_size=(4.6, 4.6, 50), layer_type="segmentation",
                scheduler="threads")
    lake.close()
    env = {**os.environ, "NEUROLAKE_LAKE": str(d / "lake")}
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "segment", "watershed", "-d", "g", "--boundary-layer",
                        "labels", "--boundary-values", ",".join(map(str, MEMBRANE)), "--output", "supervoxels",
                        "--min-distance", "6", "--init"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return d / "lake", labels


def test_supervoxels_respect_the_membranes(gerhard_crop):
    path, labels = gerhard_crop
    lake = open_lake(path)
    sv = lake.layer("g", "supervoxels").cutout(x=(0, 256), y=(0, 256), z=(0, 4))
    assert sv.shape == labels.shape and (sv > 0).all()  # every voxel belongs to a supervoxel
    interior = ~np.isin(labels, MEMBRANE)
    for z in range(sv.shape[0]):
        comp, n = ndi.label(interior[z])
        # no supervoxel spans two cell profiles: its interior voxels lie in one membrane-free component
        pairs = np.unique(np.stack([sv[z][comp > 0], comp[comp > 0]]), axis=1)
        ids, counts = np.unique(pairs[0], return_counts=True)
        assert (counts == 1).all()
        # over-segmentation: at least as many supervoxels as profiles
        assert len(np.unique(sv[z])) >= n
    # supervoxels are 2-D fragments: each lies in one section
    per = [set(np.unique(sv[z]).tolist()) for z in range(4)]
    assert all(per[i].isdisjoint(per[j]) for i in range(4) for j in range(i + 1, 4))
    lake.close()


def test_split_inside_a_watershed_root(gerhard_crop, tmp_path):
    import shutil

    path, _ = gerhard_crop
    dst = tmp_path / "lake"
    shutil.copytree(path, dst)
    lake = open_lake(dst)
    seg = segmentation(lake, "g")
    info = seg.info()
    assert info["layer"] == "supervoxels" and info["edges"] > info["supervoxels"]
    st = seg.state()
    # the largest root of the initial agglomeration
    roots, counts = np.unique(st.cur_root, return_counts=True)
    root = int(roots[np.argmax(counts)])
    leaves = seg.leaves(root)
    assert len(leaves) >= 3
    src, snk = int(leaves[0]), int(leaves[-1])
    op = seg.split([src], [snk], author="t", roots=[root])
    new = op["new_roots"]
    assert len(new) >= 2
    rs, rt = seg.roots([src, snk])
    assert rs != rt and {int(rs), int(rt)} <= set(new)
    # the pieces partition the old root
    parts = np.concatenate([seg.leaves(r) for r in new])
    assert sorted(parts.tolist()) == sorted(leaves.tolist())
    # the cut edges are recorded and are edges of the RAG
    cut = seg.operation(op["operation_id"])["edges"]
    assert cut and all(not e["active"] for e in cut)
    for e in cut:
        assert st.edge_id(*st.index([e["sv_a"], e["sv_b"]])) >= 0
    # merge back and undo
    m = seg.merge(src, snk, author="t")
    assert len(set(seg.roots([src, snk]).tolist())) == 1
    seg.undo(m["operation_id"], author="t")
    assert len(set(seg.roots([src, snk]).tolist())) == 2
    lake.close()
