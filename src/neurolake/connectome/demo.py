"""Demo connectomes: real wiring shipped in ``data/`` loaded into a lake through the public API.

Two datastacks without image layers, each with annotation tables and materialization version 1, so that
``connectome summary``, the graph explorer and partner tables show real numbers:

- ``pinky100`` (voxels 4 x 4 x 40 nm) — MICrONS phase-1 layer 2/3 pyramidal cells, ``data/pinky100``
  (``soma.csv``, ``synapses.csv`` from GitHub AllenInstitute/MicronsBinder; Turner et al., "Reconstruction of
  neocortex: organelles, compartments, cells, circuits, and activity", Cell 2022; Allen Institute Software
  License, see ``data/pinky100/SOURCE.md``):

  - ``synapses`` (synapse schema): 1,981 rows, one per synapse, pre/post root ids given, no positions;
    its connectome has 363-ish nodes and 1,752 edges (distinct (pre, post) pairs);
  - ``somas`` (nucleus schema): 363 rows, soma position in nm (``voxel_size_nm`` (1, 1, 1)), the cell's
    root id, property ``manual_id``.

- ``celegans`` (voxels 1 x 1 x 1 nm; no positions are known, points are empty) — the C. elegans
  hermaphrodite somatic wiring of Varshney, Chen, Paniagua, Hall & Chklovskii (PLoS Comput Biol
  7:e1001066, 2011), ``data/celegans/NeuronConnect.csv`` (from the OpenWorm ``cect`` package, MIT; see
  ``data/celegans/SOURCE.md``). Neuron ids 1…280 (the names sorted, upper-cased) stand in for root ids:

  - ``neurons`` (cell_type schema): one row per neuron, ``cell_type`` = its class (:func:`neuron_class`),
    property ``name`` = the neuron's name (so a graph can be labelled by name or grouped by class);
  - ``chemical`` (synapse schema, the datastack's only synapse table, so the default connectome): one row
    per chemical synapse, from the presynaptic ``S``/``Sp`` rows (6,394 synapses);
  - ``electrical`` (line schema: ``start_pt_root_id``, ``end_pt_root_id``): one row per gap junction, each
    unordered pair once (from the ``EJ`` rows with name 1 <= name 2), 890 junctions;
  - ``wiring`` (point schema): the file's 6,417 rows as published (``neuron_1``, ``neuron_2``, ``type``,
    ``nbr``).

Every builder is idempotent: it creates what the lake lacks and reuses what it has (tables by name, the
first materialization version). The same tables are what ``examples/`` build (``examples/_data.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PINKY = "pinky100"
CELEGANS = "celegans"
PINKY_VOXEL = (4.0, 4.0, 40.0)
CELEGANS_VOXEL = (1.0, 1.0, 1.0)


def _data(sub: str) -> Path:
    """``<demo data>/{sub}``: ``NEUROLAKE_DEMO_DATA`` or ``<repo>/data`` (as :func:`neurolake.demo.data_dir`).
    Raises NotFound naming the folders searched."""
    from neurolake.base.settings import settings
    from neurolake.errors import NotFound

    env = settings().demo_data
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parents[3] / "data"]
    for c in candidates:
        if (c / sub).is_dir():
            return c / sub
    raise NotFound(f"demo data {sub!r} not found; set NEUROLAKE_DEMO_DATA to the repository's data/ folder",
                   searched=[str(c) for c in candidates])


# -------------------------------------------------------------------------------------------------
# pinky100
# -------------------------------------------------------------------------------------------------
def pinky_somas() -> pd.DataFrame:
    """``soma.csv`` with ``loc`` split (363 rows): root_id (uint64), manual_id, x_nm, y_nm, z_nm, axon_len,
    dendrite_len. ``loc`` is read as nm (see data/pinky100/SOURCE.md)."""
    s = pd.read_csv(_data(PINKY) / "soma.csv")
    xyz = s["loc"].str.strip("[]").str.split(expand=True).astype(np.int64)
    return pd.DataFrame({"root_id": s["segment_id"].astype(np.uint64), "manual_id": s["manual_id"],
                         "x_nm": xyz[0], "y_nm": xyz[1], "z_nm": xyz[2], "axon_len": s["axon_len"],
                         "dendrite_len": s["dendrite_len"]})


def pinky_synapses() -> pd.DataFrame:
    """``synapses.csv`` (1,981 rows): one row per synapse, ``pre`` and ``post`` root ids (uint64)."""
    return pd.read_csv(_data(PINKY) / "synapses.csv").astype(np.uint64)


def _first_version(ds) -> tuple[int, bool]:
    versions = ds.versions.list()
    if versions:
        return versions[0]["version"], False
    return ds.versions.create()["version"], True


def ensure_pinky(lake: Any) -> int:
    """Datastack ``pinky100`` with tables ``synapses`` and ``somas`` and its first materialization version;
    returns that version's number."""
    return _ensure_pinky(lake)[0]


def _ensure_pinky(lake: Any) -> tuple[int, list[str]]:
    made = []
    if PINKY not in lake:
        lake.create_datastack(PINKY, PINKY_VOXEL, description="MICrONS pinky100 L2/3 pyramidal cells "
                              "(MicronsBinder; Turner et al., Cell 2022)")
        made.append("datastack")
    ds = lake[PINKY]
    tables = ds.tables()
    if "synapses" not in tables:
        syn = pinky_synapses()
        ds.create_table("synapses", "synapse", optional_points=["ctr_pt"],
                        description="pinky100 synapses between the 363 pyramidal cells (MicronsBinder synapses.csv)"
                        ).append(pd.DataFrame({"pre_pt_root_id": syn["pre"], "post_pt_root_id": syn["post"]}))
        made.append("synapses")
    if "somas" not in tables:
        s = pinky_somas()
        ds.create_table("somas", "nucleus", voxel_size_nm=(1, 1, 1), properties={"manual_id": "int"},
                        description="pinky100 somata (MicronsBinder soma.csv), positions in nm").append(
            pd.DataFrame({"pt_position_x": s["x_nm"], "pt_position_y": s["y_nm"], "pt_position_z": s["z_nm"],
                          "pt_root_id": s["root_id"], "manual_id": s["manual_id"]}))
        made.append("somas")
    v, new = _first_version(ds)
    if new:
        made.append(f"version {v}")
    return v, made


# -------------------------------------------------------------------------------------------------
# C. elegans (Varshney et al. 2011)
# -------------------------------------------------------------------------------------------------
def celegans_wiring() -> pd.DataFrame:
    """NeuronConnect (6,417 rows): ``Neuron 1``, ``Neuron 2``, ``Type`` (S, Sp, R, Rp, EJ, NMJ), ``Nbr``."""
    return pd.read_csv(_data(CELEGANS) / "NeuronConnect.csv",
                       dtype={"Neuron 1": str, "Neuron 2": str, "Type": str})


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


def celegans_neurons(wiring: pd.DataFrame | None = None) -> pd.DataFrame:
    """The 280 neurons of the file (names upper-cased: one row writes ``avfl``/``avfr``), sorted, with
    ``neuron_id`` 1… (uint64, the root id used in the lake) and ``cell_class``."""
    w = celegans_wiring() if wiring is None else wiring
    names = sorted((set(w["Neuron 1"].str.upper()) | set(w["Neuron 2"].str.upper())) - {"NMJ"})
    return pd.DataFrame({"neuron_id": np.arange(1, len(names) + 1, dtype=np.uint64), "name": names,
                         "cell_class": [neuron_class(n) for n in names]})


def celegans_chemical(wiring: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per chemical synapse (``S``/``Sp`` rows repeated ``Nbr`` times): ``pre``, ``post`` (names)."""
    w = celegans_wiring() if wiring is None else wiring
    s = w[w["Type"].isin(["S", "Sp"])]
    rep = s.loc[s.index.repeat(s["Nbr"])]
    return pd.DataFrame({"pre": rep["Neuron 1"].str.upper().to_numpy(), "post": rep["Neuron 2"].str.upper().to_numpy()})


def celegans_electrical(wiring: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per gap junction (``EJ`` rows with name 1 <= name 2 repeated ``Nbr`` times; each junction is
    listed from both sides, a neuron's junction with itself once): ``a``, ``b`` (names). 890 rows."""
    w = celegans_wiring() if wiring is None else wiring
    e = w[w["Type"] == "EJ"]
    a, b = e["Neuron 1"].str.upper(), e["Neuron 2"].str.upper()
    e = e[(a <= b).to_numpy()]
    rep = e.loc[e.index.repeat(e["Nbr"])]
    return pd.DataFrame({"a": rep["Neuron 1"].str.upper().to_numpy(), "b": rep["Neuron 2"].str.upper().to_numpy()})


def ensure_celegans(lake: Any) -> int:
    """Datastack ``celegans`` with ``neurons``, ``chemical``, ``electrical`` and ``wiring`` and its first
    materialization version; returns that version's number."""
    return _ensure_celegans(lake)[0]


def _ensure_celegans(lake: Any) -> tuple[int, list[str]]:
    made = []
    if CELEGANS not in lake:
        lake.create_datastack(CELEGANS, CELEGANS_VOXEL,
                              description="C. elegans somatic wiring, Varshney et al. 2011 (PLoS Comput Biol)")
        made.append("datastack")
    ds = lake[CELEGANS]
    tables = ds.tables()
    w = celegans_wiring()
    neurons = celegans_neurons(w)
    ids = dict(zip(neurons["name"], neurons["neuron_id"], strict=True))
    if "neurons" not in tables:
        ds.create_table("neurons", "cell_type", optional_points=["pt"], properties={"name": "str"},
                        description="C. elegans neurons of NeuronConnect; cell_type = neuron class, name = neuron"
                        ).append(pd.DataFrame({
                            "pt_root_id": neurons["neuron_id"], "cell_type": neurons["cell_class"],
                            "classification_system": "White et al. 1986 neuron classes "
                                                     "(name rule: neurolake.connectome.demo.neuron_class)",
                            "name": neurons["name"]}))
        made.append("neurons")
    if "chemical" not in tables:
        c = celegans_chemical(w)
        ds.create_table("chemical", "synapse", optional_points=["ctr_pt"],
                        description="C. elegans chemical synapses (NeuronConnect S/Sp rows, one row per synapse)"
                        ).append(pd.DataFrame({"pre_pt_root_id": c["pre"].map(ids).to_numpy(np.uint64),
                                               "post_pt_root_id": c["post"].map(ids).to_numpy(np.uint64)}))
        made.append("chemical")
    if "electrical" not in tables:
        e = celegans_electrical(w)
        ds.create_table("electrical", "line", optional_points=["start_pt", "end_pt"],
                        description="C. elegans gap junctions (NeuronConnect EJ rows, one row per junction, "
                                    "undirected: start/end are the two neurons)"
                        ).append(pd.DataFrame({"start_pt_root_id": e["a"].map(ids).to_numpy(np.uint64),
                                               "end_pt_root_id": e["b"].map(ids).to_numpy(np.uint64)}))
        made.append("electrical")
    if "wiring" not in tables:
        ds.create_table("wiring", "point", optional_points=["pt"],
                        properties={"neuron_1": "str", "neuron_2": "str", "type": "str", "nbr": "int"},
                        description="NeuronConnect as published: one row per (Neuron 1, Neuron 2, Type)").append(
            pd.DataFrame({"neuron_1": w["Neuron 1"], "neuron_2": w["Neuron 2"], "type": w["Type"], "nbr": w["Nbr"]}))
        made.append("wiring")
    v, new = _first_version(ds)
    if new:
        made.append(f"version {v}")
    return v, made


def demo_connectomes(lake: Any, say: Callable[[str], None]) -> None:
    """Demo step: ``pinky100`` and ``celegans`` with their tables and version 1 (idempotent: a second run
    says "already there"); prints each connectome's size."""
    for name, build in ((PINKY, _ensure_pinky), (CELEGANS, _ensure_celegans)):
        v, made = build(lake)
        if not made:
            say(f"{name}: connectome tables already there (version {v})")
            continue
        s = lake[name].connectome(version=v).summary()
        say(f"{name}: {', '.join(made)} written; connectome of version {v}: {s['nodes']} neurons, "
            f"{s['edges']} connections, {s['synapses']} synapses")


def example_urls(base: str) -> list[tuple[str, str]]:
    return [
        ("pinky100 synapses (JSON)", f"{base}/api/v1/datastacks/{PINKY}/tables/synapses/rows?limit=5"),
        ("C. elegans neurons (JSON)", f"{base}/api/v1/datastacks/{CELEGANS}/tables/neurons/rows?limit=5"),
    ]
