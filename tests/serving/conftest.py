"""Serving tests: a throw-away HOME for intern / cloud-volume (they write under ~) and a writable server."""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="nl-serving-home-")
os.environ["HOME"] = _HOME  # before intern / cloudvolume are imported by the tests
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"

MAX_CUTOUT = 600_000  # bytes: small enough to test BossDB's 413, large enough for the test boxes


@pytest.fixture(scope="module")
def gala_lake_path(tmp_path_factory):
    """A writable lake holding the real gala FIB-SEM crop (image uint8, segmentation uint32)."""
    from neurolake import init_lake
    from neurolake.demo import GALA_VOXEL

    path = tmp_path_factory.mktemp("gala") / "lake"
    lake = init_lake(path)
    lake.create_datastack("gala", GALA_VOXEL)
    lake.ingest(str(DATA / "gala_fibsem/train-image.h5:/stack"), "gala", "image", voxel_size=GALA_VOXEL,
                layer_type="image", scheduler="threads")
    lake.ingest(str(DATA / "gala_fibsem/train-gt.lzf.h5:/stack"), "gala", "segmentation", voxel_size=GALA_VOXEL,
                layer_type="segmentation", scheduler="threads")
    lake.close()
    return path


@pytest.fixture(scope="module")
def gala_server(serve_lake, gala_lake_path):
    return serve_lake(gala_lake_path, env={"NEUROLAKE_MAX_CUTOUT_BYTES": str(MAX_CUTOUT),
                                           "NEUROLAKE_TILE_PREFETCH_DEPTH": "4"})


@pytest.fixture(scope="module")
def gala_lake(gala_lake_path):
    from neurolake import open_lake

    lake = open_lake(gala_lake_path)
    yield lake
    lake.close()
