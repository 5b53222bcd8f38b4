"""Mesh tests: real segmentations (the gala FIB-SEM neurons, the Gerhard et al. 2013 labels) in throw-away lakes,
meshed with small blocks so objects are cut into several fragments. cloud-volume writes under ~: a temp HOME."""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="nl-meshes-home-")
os.environ["HOME"] = _HOME  # before cloudvolume is imported by the tests
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
GALA_BLOCK = (64, 48, 20)  # the 200 × 100 × 50 crop → 4 × 3 × 3 blocks: most neurons span several


@pytest.fixture(scope="session")
def gala_mesh_path(tmp_path_factory):
    """A lake with the real gala segmentation (uint32, 8 nm voxels), proofreadable (each label its own root),
    meshed in 36 blocks."""
    from neurolake import init_lake
    from neurolake.demo import GALA_VOXEL
    from neurolake.meshes import build_meshes
    from neurolake.proofreading import create_segmentation

    path = tmp_path_factory.mktemp("gala-meshes") / "lake"
    lake = init_lake(path)
    lake.create_datastack("gala_fibsem", GALA_VOXEL)
    lake.ingest(str(DATA / "gala_fibsem/train-gt.lzf.h5:/stack"), "gala_fibsem", "segmentation",
                voxel_size=GALA_VOXEL, layer_type="segmentation", scheduler="threads")
    create_segmentation(lake, "gala_fibsem", layer="segmentation", agglomeration="each")
    build_meshes(lake, "gala_fibsem", "segmentation", block=GALA_BLOCK, scheduler="threads")
    lake.close()
    return path


@pytest.fixture(scope="session")
def gala_volume(gala_mesh_path):
    """The gala segmentation as read back from the lake, (z, y, x) uint32."""
    from neurolake import open_lake

    lake = open_lake(gala_mesh_path)
    try:
        return lake.layer("gala_fibsem", "segmentation").cutout((0, 200), (0, 100), (0, 50))
    finally:
        lake.close()


@pytest.fixture(scope="session")
def gerhard_labels_path(tmp_path_factory):
    """A lake with the Gerhard et al. 2013 merged labels (1024 × 1024 × 20, 4.6 × 4.6 × 50 nm), meshed."""
    from neurolake import init_lake
    from neurolake.demo import GERHARD_VOXEL
    from neurolake.meshes import build_meshes

    path = tmp_path_factory.mktemp("gerhard-meshes") / "lake"
    lake = init_lake(path)
    lake.create_datastack("gerhard2013", GERHARD_VOXEL)
    lake.ingest(str(DATA / "gerhard2013/labels"), "gerhard2013", "labels", voxel_size=GERHARD_VOXEL,
                layer_type="segmentation", scheduler="threads")
    build_meshes(lake, "gerhard2013", "labels", block=(512, 512, 20), scheduler="threads")
    lake.close()
    return path


@pytest.fixture(scope="session")
def gerhard_proofread_path(gerhard_labels_path):
    """The Gerhard lake made proofreadable by the demo's own step (membrane map → seeded-watershed supervoxels →
    region graph, initial agglomeration at affinity ≥ 0.7): the demo's gerhard2013 roots. Supervoxels not meshed."""
    from neurolake import open_lake
    from neurolake.proofreading.demo import demo_step

    lake = open_lake(gerhard_labels_path)
    try:
        demo_step(lake, lambda m: None)
    finally:
        lake.close()
    return gerhard_labels_path
