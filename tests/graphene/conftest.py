"""Fixtures of the graphene tests: the real gala FIB-SEM ground truth as the supervoxel layer of a
proofreadable segmentation ("each" supervoxel its own root), a viewer token, and a throw-away HOME
(cloud-volume reads and writes ``~/.cloudvolume``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="nl-graphene-home-")
os.environ["HOME"] = _HOME  # before cloud-volume is imported: it fixes ~/.cloudvolume at import
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

DATA = Path(__file__).resolve().parents[2] / "data"
GALA_GT = str(DATA / "gala_fibsem" / "train-gt.lzf.h5") + ":/stack"


@pytest.fixture(scope="session")
def graphene_lake(tmp_path_factory) -> dict:
    """A template lake (copy it before editing): ``{"path", "token", "hex_token", "outsider_hex"}``."""
    from neurolake import init_lake
    from neurolake.proofreading import create_segmentation

    path = tmp_path_factory.mktemp("graphene") / "lake"
    lake = init_lake(path)
    lake.create_datastack("gala", (8, 8, 8), public=False)  # under --auth only users with a role read it
    lake.ingest(GALA_GT, "gala", "segmentation", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    acc = lake.access
    acc.add_user("vera")
    acc.grant("vera", "gala", "viewer")
    acc.add_user("olga")  # no role on gala
    token = acc.create_token("vera")["token"]
    outsider = acc.create_token("olga")["token"]
    lake.close()
    return {"path": path, "token": token, "hex_token": token.encode().hex(), "outsider_hex": outsider.encode().hex()}
