"""Query test fixtures: a small lake of real connectome tables, built once per session.

``query_lake_path`` (session, **read-only**: copy it to write): a fresh lake with

- datastack ``pinky100`` (private, 4 x 4 x 40 nm) holding the MICrONS pinky100 tables
  (``../shared/data/connectome_microns_pinky100_pyc``): ``synapses`` (1981 pre/post root-id pairs,
  read_permission PUBLIC) and ``somas`` (363 nuclei, positions in nm, owner ``ada``, read_permission
  PRIVATE), frozen as materialization version 1;
- datastack ``hemibrain`` (private, 8 nm) holding ``da1_sites``: the navis hemibrain synapse sites of three
  DA1 projection neurons (``../shared/data/synapses_hemibrain_da1_pn_navis``).

No users exist: tests that need ``--auth`` copy the lake and add theirs. ``pinky_tables`` gives the source
rows (``{"synapses": DataFrame, "somas": DataFrame}``) to compare query results with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PINKY = SHARED / "connectome_microns_pinky100_pyc"
NAVIS = SHARED / "synapses_hemibrain_da1_pn_navis" / "synapses"


def pinky_synapses() -> pd.DataFrame:
    syn = pd.read_csv(PINKY / "synapses.csv")
    return pd.DataFrame({"pre_pt_root_id": syn.pre, "post_pt_root_id": syn.post})


def pinky_somas() -> pd.DataFrame:
    soma = pd.read_csv(PINKY / "soma.csv")
    xyz = soma["loc"].str.strip("[]").str.split(expand=True).astype(np.int64)
    return pd.DataFrame({"pt_position_x": xyz[0], "pt_position_y": xyz[1], "pt_position_z": xyz[2],
                         "pt_root_id": soma.segment_id, "manual_id": soma.manual_id})


def navis_sites() -> pd.DataFrame:
    frames = []
    for f in sorted(NAVIS.glob("*.csv")):
        df = pd.read_csv(f)
        frames.append(pd.DataFrame({"pt_position_x": df.x, "pt_position_y": df.y, "pt_position_z": df.z,
                                    "pt_root_id": int(f.stem), "connector_id": df.connector_id, "type": df["type"]}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def pinky_tables() -> dict[str, pd.DataFrame]:
    return {"synapses": pinky_synapses(), "somas": pinky_somas()}


@pytest.fixture(scope="session")
def query_lake_path(tmp_path_factory) -> Path:
    from neurolake import init_lake
    from neurolake.annotations import create_table

    path = tmp_path_factory.mktemp("query") / "lake"
    lake = init_lake(path)
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100", public=False)
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"]).append(pinky_synapses())
    create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1), properties={"manual_id": "int"},
                 owner="ada", read_permission="PRIVATE").append(pinky_somas(), author="ada")
    lake["pinky100"].versions.create()
    lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain", public=False)
    create_table(lake, "hemibrain", "da1_sites", "point", properties={"connector_id": "int", "type": "str"}
                 ).append(navis_sites())
    lake.close()
    return path
