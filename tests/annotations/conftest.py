"""Annotation test fixtures: a writable copy of the demo lake holding real annotation tables.

``ann_lake_path`` (session): the demo lake (gerhard2013, gala_fibsem) copied to a temporary folder,
plus
- ``gerhard2013/synapses``: synapses detected from the labels (value 223), bound to ``labels``;
- datastack ``hemibrain`` (8 nm voxels) with ``da1_sites`` (the navis hemibrain synapse sites of
  three DA1 projection neurons, ``pt_root_id`` = body id) and ``cell_types`` (Schlegel et al. 2024
  hemibrain meta table, neurons with a soma location);
- datastack ``pinky100`` with ``somas`` (nucleus; MICrONS soma.csv, positions in nm) and
  ``synapses`` (pre/post root ids only, no positions).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from annotations_data import PINKY, SITE_PROPS, navis_sites, pinky_somas, schlegel_cell_types

_HOME = tempfile.mkdtemp(prefix="nl-ann-home-")
os.environ["HOME"] = _HOME  # cloud-volume writes under ~
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def ann_lake_path(demo_lake_path, tmp_path_factory) -> Path:
    from neurolake import open_lake

    path = tmp_path_factory.mktemp("ann") / "lake"
    shutil.copytree(demo_lake_path, path)
    lake = open_lake(path)
    add_annotation_tables(lake)
    lake.close()
    return path


def add_annotation_tables(lake) -> None:
    """The tables of the module docstring, into ``lake`` (which holds the demo layers)."""
    from neurolake.annotations import create_table
    from neurolake.annotations.detect import detect_synapses

    detect_synapses(lake, "gerhard2013", "labels", 223, "synapses", segmentation_layer="labels")
    lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain (Scheffer et al. 2020)")
    create_table(lake, "hemibrain", "da1_sites", "point", properties=SITE_PROPS,
                 description="navis sample: synapse sites of 3 DA1 PNs").append(navis_sites())
    create_table(lake, "hemibrain", "cell_types", "cell_type", properties={"cell_class": "str"},
                 description="Schlegel et al. 2024, hemibrain meta").append(schlegel_cell_types())
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100")
    create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1),
                 properties={"manual_id": "int", "axon_len": "float", "dendrite_len": "float"}).append(pinky_somas())
    syn = pd.read_csv(PINKY / "synapses.csv")
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"]).append(
        pd.DataFrame({"pre_pt_root_id": syn.pre, "post_pt_root_id": syn.post}))


@pytest.fixture(scope="session")
def local_ann_lake(ann_lake_path):
    from neurolake import open_lake

    lake = open_lake(ann_lake_path)
    yield lake
    lake.close()


@pytest.fixture(scope="session")
def ann_lake(local_ann_lake):
    return local_ann_lake


@pytest.fixture(scope="session")
def s3_ann_lake(_s3_lake_factory):
    """The same lake on S3 (moto, PostgreSQL catalog): the demo layers ingested, then the same tables."""
    from neurolake import init_lake
    from neurolake.demo import ingest_demo_layers

    url, db = _s3_lake_factory()
    lake = init_lake(url, database_url=db)
    ingest_demo_layers(lake, lambda m: None, scheduler="threads")
    add_annotation_tables(lake)
    yield lake
    lake.close()


@pytest.fixture(scope="module", params=["local", "s3"])
def ann_lake_both(request):
    """The local annotation lake, then the same on S3. A module overrides ``ann_lake`` with it (``@pytest.fixture
    ann_lake(ann_lake_both)``) to run its tests on both."""
    return request.getfixturevalue("local_ann_lake" if request.param == "local" else "s3_ann_lake")


@pytest.fixture(scope="session")
def ann_server(serve_lake, ann_lake_path) -> str:
    return serve_lake(ann_lake_path)
