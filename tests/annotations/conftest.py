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

import numpy as np
import pandas as pd
import pytest

_HOME = tempfile.mkdtemp(prefix="nl-ann-home-")
os.environ["HOME"] = _HOME  # cloud-volume writes under ~
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NAVIS = SHARED / "synapses_hemibrain_da1_pn_navis" / "synapses"
SCHLEGEL = SHARED / "annotations_flywire_hemibrain_meta_schlegel2024" / "Supplemental_file5_hemibrain_meta.csv"
PINKY = SHARED / "connectome_microns_pinky100_pyc"
SITE_PROPS = {"body_id": "uint64", "connector_id": "int", "node_id": "int", "type": "str", "roi": "str"}


def navis_sites() -> pd.DataFrame:
    """All three navis CSVs as one frame in the ``point`` schema (8 nm voxels)."""
    frames = []
    for f in sorted(NAVIS.glob("*.csv")):
        df = pd.read_csv(f)
        body = int(f.stem)
        frames.append(pd.DataFrame({
            "pt_position_x": df.x, "pt_position_y": df.y, "pt_position_z": df.z, "pt_root_id": body,
            "body_id": body, "connector_id": df.connector_id, "node_id": df.node_id, "type": df["type"],
            "roi": df.roi, "confidence": df.confidence}))
    return pd.concat(frames, ignore_index=True)


def schlegel_cell_types() -> pd.DataFrame:
    meta = pd.read_csv(SCHLEGEL, low_memory=False)
    meta = meta[meta.somaLocation.notna() & meta.type.notna()]
    xyz = meta.somaLocation.str.split(",", expand=True).astype(np.int64)
    return pd.DataFrame({"pt_position_x": xyz[0].to_numpy(), "pt_position_y": xyz[1].to_numpy(),
                         "pt_position_z": xyz[2].to_numpy(), "pt_root_id": meta.bodyId.to_numpy(),
                         "cell_type": meta.type.to_numpy(), "classification_system": "hemibrain v1.2 type",
                         "cell_class": meta.cell_class.to_numpy()})


def pinky_somas() -> pd.DataFrame:
    soma = pd.read_csv(PINKY / "soma.csv")
    xyz = soma["loc"].str.strip("[]").str.split(expand=True).astype(np.int64)
    return pd.DataFrame({"pt_position_x": xyz[0], "pt_position_y": xyz[1], "pt_position_z": xyz[2],
                         "pt_root_id": soma.segment_id, "manual_id": soma.manual_id, "axon_len": soma.axon_len,
                         "dendrite_len": soma.dendrite_len})


@pytest.fixture(scope="session")
def ann_lake_path(demo_lake_path, tmp_path_factory) -> Path:
    from neurolake import open_lake
    from neurolake.annotations import create_table
    from neurolake.annotations.detect import detect_synapses

    path = tmp_path_factory.mktemp("ann") / "lake"
    shutil.copytree(demo_lake_path, path)
    lake = open_lake(path)
    detect_synapses(lake, "gerhard2013", "labels", 223, "synapses", segmentation_layer="labels")
    lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain (Scheffer et al. 2020)")
    create_table(lake, "hemibrain", "da1_sites", "point", properties=SITE_PROPS,
                 description="navis sample: synapse sites of 3 DA1 PNs").append(navis_sites())
    create_table(lake, "hemibrain", "cell_types", "cell_type", properties={"cell_class": "str"},
                 description="Schlegel et al. 2024, hemibrain meta").append(schlegel_cell_types())
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100")
    create_table(lake, "pinky100", "somas", "nucleus", voxel_resolution=(1, 1, 1),
                 properties={"manual_id": "int", "axon_len": "float", "dendrite_len": "float"}).append(pinky_somas())
    syn = pd.read_csv(PINKY / "synapses.csv")
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"]).append(
        pd.DataFrame({"pre_pt_root_id": syn.pre, "post_pt_root_id": syn.post}))
    lake.close()
    return path


@pytest.fixture(scope="session")
def ann_lake(ann_lake_path):
    from neurolake import open_lake

    lake = open_lake(ann_lake_path)
    yield lake
    lake.close()


@pytest.fixture(scope="session")
def ann_server(serve_lake, ann_lake_path) -> str:
    return serve_lake(ann_lake_path)
