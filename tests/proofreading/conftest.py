"""Fixtures of the proofreading tests: the gala segmentation, proofreadable, with annotation tables.

Synapse annotations are placed at real contact sites of the gala ground-truth neurons (a voxel of
neuron A, one background voxel, a voxel of neuron B along x): the segmentation is real, the synapse
placement is derived from it (the gala data carry no synapses).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_HOME = tempfile.mkdtemp(prefix="nl-proofreading-home-")
os.environ["HOME"] = _HOME  # caveclient writes under ~ ; a throw-away HOME
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

DATA = Path(__file__).resolve().parents[2] / "data"
GALA_GT = str(DATA / "gala_fibsem" / "train-gt.lzf.h5") + ":/stack"


def contact_sites(vol: np.ndarray, n: int, seed: int = 0) -> pd.DataFrame:
    """Synapse-like rows at contacts a | 0 | b along x of a (z, y, x) label volume."""
    a, gap, b = vol[:, :, :-2], vol[:, :, 1:-1], vol[:, :, 2:]
    m = (a != 0) & (b != 0) & (a != b) & (gap == 0)
    z, y, x = np.nonzero(m)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(z), size=min(n, len(z)), replace=False)
    z, y, x = z[pick], y[pick], x[pick]
    flip = rng.random(len(z)) < 0.5  # direction pre -> post at random
    pre_x = np.where(flip, x + 2, x)
    post_x = np.where(flip, x, x + 2)
    return pd.DataFrame({
        "pre_pt_position": [[int(px), int(yy), int(zz)] for px, yy, zz in zip(pre_x, y, z, strict=True)],
        "post_pt_position": [[int(px), int(yy), int(zz)] for px, yy, zz in zip(post_x, y, z, strict=True)],
        "ctr_pt_position": [[int(xx) + 1, int(yy), int(zz)] for xx, yy, zz in zip(x, y, z, strict=True)],
        "size": rng.integers(10, 200, len(z)).astype(float),
    })


def build_gala_lake(path: Path, database_url: str | None = None) -> dict:
    """gala: segmentation layer, proofreadable ("each"), tables synapses + cell_types, version 1."""
    from neurolake import init_lake
    from neurolake.annotations import create_table
    from neurolake.materialize import materialize
    from neurolake.proofreading import create_segmentation

    lake = init_lake(path, database_url=database_url)
    lake.ingest(GALA_GT, "gala", "segmentation", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    seg = create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    vol = lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    syn = create_table(lake, "gala", "synapses", "synapse", segmentation_layer="segmentation")
    syn.append(contact_sites(vol, 400), author="test")
    # cell types: one point per neuron (its first voxel), type by size class (large / small)
    ids, first, counts = np.unique(vol, return_index=True, return_counts=True)
    keep = ids != 0
    ids, first, counts = ids[keep], first[keep], counts[keep]
    z, y, x = np.unravel_index(first, vol.shape)
    med = np.median(counts)
    ct = create_table(lake, "gala", "cell_types", "cell_type", segmentation_layer="segmentation")
    ct.append(pd.DataFrame({"pt_position": [[int(a), int(b), int(c)] for a, b, c in zip(x, y, z, strict=True)],
                            "cell_type": np.where(counts >= med, "large", "small")}), author="test")
    time.sleep(0.01)
    v1 = materialize(lake, "gala")
    out = {"path": path, "v1": v1, "seg_info": seg.info()}
    lake.close()
    return out


@pytest.fixture(scope="session")
def gala_annotated(tmp_path_factory) -> dict:
    """A template lake (do not edit: copy it with ``gala_copy``)."""
    return build_gala_lake(tmp_path_factory.mktemp("gala-annotated") / "lake")


@pytest.fixture
def gala_copy(gala_annotated, tmp_path):
    from neurolake import open_lake

    dst = tmp_path / "lake"
    shutil.copytree(gala_annotated["path"], dst)
    lake = open_lake(dst)
    yield lake
    lake.close()


@pytest.fixture
def gala_builder():
    """The builder itself, for tests that need their own catalog (e.g. PostgreSQL)."""
    return build_gala_lake
