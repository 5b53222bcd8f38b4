"""Skeleton tests: one writable lake with the real gala FIB-SEM neurons and the Gerhard et al. 2013 labels,
skeletonized once per module by the real batch job; a throw-away HOME for cloud-volume (it writes under ~)."""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="nl-skeletons-home-")
os.environ["HOME"] = _HOME  # before cloudvolume is imported by the tests
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
GERHARD_MIP = 2  # 256 x 256 x 20 voxels of 18.4 x 18.4 x 50 nm: the full field of view, a few seconds of kimimaro


@pytest.fixture(scope="session")
def skel_lake_path(tmp_path_factory):
    """A lake with ``gala/segmentation`` (uint32 neurons, 8 nm voxels) skeletonized at mip 0 on threads and
    ``gerhard2013/labels`` (uint8 tissue classes) skeletonized at mip 2 on a LocalCluster of processes."""
    from neurolake import init_lake
    from neurolake.demo import GALA_VOXEL, GERHARD_VOXEL
    from neurolake.skeletons import skeletonize_layer

    path = tmp_path_factory.mktemp("skeletons") / "lake"
    lake = init_lake(path)
    lake.create_datastack("gala", GALA_VOXEL)
    lake.ingest(str(DATA / "gala_fibsem/train-gt.lzf.h5:/stack"), "gala", "segmentation", voxel_size=GALA_VOXEL,
                layer_type="segmentation", scheduler="threads")
    lake.ingest(str(DATA / "gala_fibsem/train-image.h5:/stack"), "gala", "image", voxel_size=GALA_VOXEL,
                layer_type="image", scheduler="threads")
    lake.create_datastack("gerhard2013", GERHARD_VOXEL)
    lake.ingest(str(DATA / "gerhard2013/labels"), "gerhard2013", "labels", voxel_size=GERHARD_VOXEL,
                layer_type="segmentation", scheduler="threads")
    phases: list[tuple[str, int, int]] = []
    skeletonize_layer(lake, "gala", "segmentation", scheduler="threads", ids_per_task=8,
                      progress=lambda *a: phases.append(a))
    skeletonize_layer(lake, "gerhard2013", "labels", mip=GERHARD_MIP, scheduler="local")
    (path / "gala-progress.txt").write_text(repr(phases))
    lake.close()
    return path


@pytest.fixture(scope="session")
def skel_lake(skel_lake_path):
    from neurolake import open_lake

    lake = open_lake(skel_lake_path)
    yield lake
    lake.close()


@pytest.fixture(scope="session")
def skel_server(serve_lake, skel_lake_path):
    return serve_lake(skel_lake_path)
