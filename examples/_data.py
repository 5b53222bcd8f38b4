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
import re
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
# pinky100
# -------------------------------------------------------------------------------------------------
def pinky_somas() -> pd.DataFrame:
    """``soma.csv`` with ``loc`` split: root_id, manual_id, x_nm, y_nm, z_nm, axon_len, dendrite_len.
    ``loc`` is read as nm (see data/pinky100/SOURCE.md)."""
    s = pd.read_csv(PINKY / "soma.csv")
    xyz = s["loc"].str.strip("[]").str.split(expand=True).astype(np.int64)
    return pd.DataFrame({"root_id": s["segment_id"].astype(np.uint64), "manual_id": s["manual_id"],
                         "x_nm": xyz[0], "y_nm": xyz[1], "z_nm": xyz[2], "axon_len": s["axon_len"],
                         "dendrite_len": s["dendrite_len"]})


def pinky_synapses() -> pd.DataFrame:
    """``synapses.csv``: one row per synapse, ``pre`` and ``post`` root ids (uint64)."""
    return pd.read_csv(PINKY / "synapses.csv").astype(np.uint64)


def ensure_pinky(lake) -> int:
    """Datastack ``pinky100`` (voxels 4 × 4 × 40 nm) with ``synapses`` and ``somas``, and its first
    materialization version; returns that version's number."""
    if "pinky100" not in lake:
        lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100 L2/3 pyramidal cells")
    ds = lake["pinky100"]
    if "synapses" not in ds.tables():
        syn = pinky_synapses()
        ds.create_table("synapses", "synapse", optional_points=["ctr_pt"],
                        description="pinky100 synapses between the 363 pyramidal cells (MicronsBinder synapses.csv)"
                        ).append(pd.DataFrame({"pre_pt_root_id": syn["pre"], "post_pt_root_id": syn["post"]}))
    if "somas" not in ds.tables():
        s = pinky_somas()
        ds.create_table("somas", "nucleus", voxel_size_nm=(1, 1, 1), properties={"manual_id": "int"},
                        description="pinky100 somata (MicronsBinder soma.csv), positions in nm").append(
            pd.DataFrame({"pt_position_x": s["x_nm"], "pt_position_y": s["y_nm"], "pt_position_z": s["z_nm"],
                          "pt_root_id": s["root_id"], "manual_id": s["manual_id"]}))
    versions = ds.versions.list()
    return versions[0]["version"] if versions else ds.versions.create()["version"]


# -------------------------------------------------------------------------------------------------
# C. elegans (Varshney et al. 2011)
# -------------------------------------------------------------------------------------------------
def celegans_wiring() -> pd.DataFrame:
    """NeuronConnect (6,417 rows): ``Neuron 1``, ``Neuron 2``, ``Type`` (S, Sp, R, Rp, EJ, NMJ), ``Nbr``."""
    return pd.read_csv(CELEGANS / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str, "Type": str})


def neuron_class(name: str) -> str:
    """The class of a C. elegans neuron from its name (White et al. 1986 naming): three-letter names are
    their own class (AVL, DVA, PVR, RID …); numbered motor neurons drop the number (DA01 → DA, VC06 → VC);
    otherwise a final L/R (left/right) is dropped and then, for names still longer than three letters, a
    final D/V (dorsal/ventral) too (ADAL → ADA, IL1DL → IL1, CEPVR → CEP, RMED → RME, SABD → SAB)."""
    n = name.upper()
    if len(n) <= 3:
        return n
    m = re.fullmatch(r"([A-Z]+)\d+", n)
    if m:
        return m.group(1)
    if n[-1] in "LR":
        n = n[:-1]
    if len(n) > 3 and n[-1] in "DV":
        n = n[:-1]
    return n


def celegans_neurons() -> pd.DataFrame:
    """The 280 neurons of the file (names upper-cased: one row writes ``avfl``/``avfr``), sorted, with
    ``neuron_id`` 1… (the root id used in the lake) and ``cell_class``."""
    w = celegans_wiring()
    names = sorted((set(w["Neuron 1"].str.upper()) | set(w["Neuron 2"].str.upper())) - {"NMJ"})
    return pd.DataFrame({"neuron_id": np.arange(1, len(names) + 1, dtype=np.uint64), "name": names,
                         "cell_class": [neuron_class(n) for n in names]})


def ensure_celegans(lake) -> int:
    """Datastack ``celegans`` with ``neurons``, ``chemical`` and ``wiring`` and its first materialization
    version; returns that version's number. No positions are known: the points are left empty and the
    neurons' ids are given as root ids."""
    if "celegans" not in lake:
        lake.create_datastack("celegans", (1, 1, 1), description="C. elegans somatic wiring, Varshney et al. 2011")
    ds = lake["celegans"]
    neurons = celegans_neurons()
    ids = dict(zip(neurons["name"], neurons["neuron_id"], strict=True))
    if "neurons" not in ds.tables():
        ds.create_table("neurons", "cell_type", optional_points=["pt"], properties={"name": "str"},
                        description="C. elegans neurons of NeuronConnect; cell_type = neuron class").append(
            pd.DataFrame({"pt_root_id": neurons["neuron_id"], "cell_type": neurons["cell_class"],
                          "classification_system": "White et al. 1986 neuron classes (name rule: examples/_data.py)",
                          "name": neurons["name"]}))
    w = celegans_wiring()
    if "chemical" not in ds.tables():
        s = w[w["Type"].isin(["S", "Sp"])]
        rep = s.loc[s.index.repeat(s["Nbr"])]  # one row per synapse
        ds.create_table("chemical", "synapse", optional_points=["ctr_pt"],
                        description="C. elegans chemical synapses (NeuronConnect S/Sp rows, one row per synapse)"
                        ).append(pd.DataFrame({
                            "pre_pt_root_id": rep["Neuron 1"].str.upper().map(ids).to_numpy(np.uint64),
                            "post_pt_root_id": rep["Neuron 2"].str.upper().map(ids).to_numpy(np.uint64)}))
    if "wiring" not in ds.tables():
        ds.create_table("wiring", "point", optional_points=["pt"],
                        properties={"neuron_1": "str", "neuron_2": "str", "type": "str", "nbr": "int"},
                        description="NeuronConnect as published: one row per (Neuron 1, Neuron 2, Type)").append(
            pd.DataFrame({"neuron_1": w["Neuron 1"], "neuron_2": w["Neuron 2"], "type": w["Type"], "nbr": w["Nbr"]}))
    versions = ds.versions.list()
    return versions[0]["version"] if versions else ds.versions.create()["version"]


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
