"""Shared helpers of the examples: the real datasets of ``data/`` loaded into a lake through neurolake's API.

- ``pinky100`` — MICrONS phase-1 layer 2/3 pyramidal cells (``data/pinky100``; MicronsBinder, Turner et al.,
  Cell 2022): ``synapses`` (synapse table, 1,981 rows, one per synapse, pre/post root ids given, no positions)
  and ``somas`` (nucleus table, 363 rows, soma position in nm, the cell's root id, ``manual_id``);
- ``celegans`` — the C. elegans hermaphrodite somatic wiring of Varshney, Chen, Paniagua, Hall & Chklovskii
  (PLoS Comput Biol 7:e1001066, 2011), file ``NeuronConnect.csv`` (the release's ``NeuronConnect.xls`` as CSV,
  see ``data/celegans/SOURCE.md``): ``neurons`` (cell_type table: one row per neuron, ``cell_type`` = its
  class, see :func:`neuron_class`), ``chemical`` (synapse table: one row per chemical synapse, from the
  presynaptic ``S``/``Sp`` rows) and ``wiring`` (point table: the file's rows as published);
- ``hemibrain`` — the hemibrain neuron table of Schlegel et al. (Nature 2024), ``data/hemibrain_meta``
  (cell_type table: type, class, soma side, per-neuron pre/post synapse counts; the 2,693 neurons without a
  type get ``cell_type`` "(untyped)", as the schema requires one).

Every builder is idempotent: it creates what a lake lacks and reuses what it has, so examples can share a lake.
Each example takes the lake folder as its first argument (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PINKY = DATA / "pinky100"
CELEGANS = DATA / "celegans"
HEMIBRAIN = DATA / "hemibrain_meta"


def lake_from_args(doc: str, configure=None):
    """Parse ``[LAKE] [--out DIR]`` (plus what ``configure(parser)`` adds) and open (creating it) the lake;
    returns ``(lake, out_dir, args)``. Without LAKE a new temporary folder is used; ``--out`` defaults to
    ``<LAKE>/example-results``."""
    import neurolake

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lake", nargs="?", default=None, help="lake folder (default: a new temporary folder)")
    ap.add_argument("--out", default=None, help="folder for result files (default: LAKE/example-results)")
    if configure is not None:
        configure(ap)
    a = ap.parse_args()
    path = Path(a.lake) if a.lake else Path(tempfile.mkdtemp(prefix="neurolake-example-")) / "lake"
    lake = neurolake.open_lake(path, create=True)
    out = Path(a.out) if a.out else path / "example-results"
    out.mkdir(parents=True, exist_ok=True)
    print(f"lake: {path}")
    return lake, out, a


def report(**fields) -> None:
    """The example's machine-readable summary: one line ``RESULT {json}`` (read by tests/query/test_examples.py)."""
    print("RESULT " + json.dumps(fields, default=str))


# -------------------------------------------------------------------------------------------------
# pinky100 and C. elegans: the demo's own loaders (one copy of the logic, in the package)
# -------------------------------------------------------------------------------------------------
from neurolake.connectome.demo import (  # noqa: E402,F401 - re-exported for the examples and their tests
    celegans_neurons,
    celegans_wiring,
    ensure_celegans,
    ensure_pinky,
    neuron_class,
    pinky_somas,
    pinky_synapses,
)


# -------------------------------------------------------------------------------------------------
# hemibrain (Schlegel et al. 2024)
# -------------------------------------------------------------------------------------------------
def hemibrain_meta() -> pd.DataFrame:
    return pd.read_csv(HEMIBRAIN / "Supplemental_file5_hemibrain_meta.csv", low_memory=False)


def ensure_hemibrain(lake) -> int:
    """Datastack ``hemibrain`` (8 nm voxels) with ``neurons`` (cell_type table: ``cell_type`` = hemibrain type,
    ``cell_class``, ``side``, ``pre``/``post`` synapse counts; soma position where known) and its first
    materialization version; returns that version's number."""
    if "hemibrain" not in lake:
        lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain neurons (Schlegel et al. 2024)")
    ds = lake["hemibrain"]
    if "neurons" not in ds.tables():
        m = hemibrain_meta()
        xyz = m["somaLocation"].fillna("").str.split(",", expand=True).replace("", np.nan).astype(float)
        ds.create_table("neurons", "cell_type", optional_points=["pt"],
                        properties={"cell_class": "str", "side": "str", "pre": "float", "post": "float"},
                        description="hemibrain neuron types (Schlegel et al. 2024, Supplemental file 5)").append(
            pd.DataFrame({"pt_root_id": m["bodyId"].astype(np.uint64), "cell_type": m["type"].fillna("(untyped)"),
                          "classification_system": "hemibrain type (neuPrint)",
                          "pt_position_x": xyz[0], "pt_position_y": xyz[1], "pt_position_z": xyz[2],
                          "cell_class": m["cell_class"], "side": m["side"], "pre": m["pre"], "post": m["post"]}))
    versions = ds.versions.list()
    return versions[0]["version"] if versions else ds.versions.create()["version"]
