"""Real annotation tables for the tests, read from ``../shared/data`` (see each folder's SOURCE.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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
