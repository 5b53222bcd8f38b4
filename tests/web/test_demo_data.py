"""The demo's connectomes (:mod:`neurolake.connectome.demo`, issue 13 point 10) on a fresh lake, compared with
counts computed by pandas straight from the shipped CSVs:

- ``data/pinky100/synapses.csv`` (MICrONS pinky100, MicronsBinder): one row per synapse, pre/post root ids;
- ``data/celegans/NeuronConnect.csv`` (Varshney et al. 2011): S/Sp rows = chemical synapses (``Nbr`` each),
  EJ rows = gap junctions listed from both sides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from neurolake import init_lake
    from neurolake.connectome.demo import demo_connectomes

    path = tmp_path_factory.mktemp("demo-data") / "lake"
    lake = init_lake(path)
    said: list[str] = []
    demo_connectomes(lake, said.append)
    yield lake, said
    lake.close()


def test_the_demo_runs_the_step():
    from neurolake.demo import STEPS

    assert any(s.__name__ == "_connectome_step" for s in STEPS)


def test_pinky100_connectome_equals_the_csv(built):
    lake, said = built
    syn = pd.read_csv(DATA / "pinky100" / "synapses.csv")
    soma = pd.read_csv(DATA / "pinky100" / "soma.csv")
    ds = lake["pinky100"]
    assert ds.tables() == ["somas", "synapses"] and ds.table("somas").schema.name == "nucleus"
    assert [v["version"] for v in ds.versions.list()] == [1]
    s = ds.connectome().summary()
    assert s["edges"] == len(syn.drop_duplicates()) == 1752
    assert s["nodes"] == len(set(syn["pre"]) | set(syn["post"])) > 0
    assert s["synapses"] == len(syn) == 1981
    somas = ds.table("somas").query().df()
    assert len(somas) == len(soma) == 363
    assert set(somas["pt_root_id"].astype("uint64")) == set(soma["segment_id"].astype("uint64"))
    assert any(m.startswith("pinky100:") and "1752 connections" in m for m in said), said


def test_celegans_connectome_equals_the_csv(built):
    lake, said = built
    w = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str})
    w["a"], w["b"] = w["Neuron 1"].str.upper(), w["Neuron 2"].str.upper()
    chem = w[w["Type"].isin(["S", "Sp"]) & (w["Nbr"] > 0)]
    ds = lake["celegans"]
    assert ds.tables() == ["chemical", "electrical", "neurons", "wiring"]
    assert [v["version"] for v in ds.versions.list()] == [1]
    s = ds.connectome().summary()  # the default: the only synapse table, ``chemical``
    assert s["edges"] == len(chem[["a", "b"]].drop_duplicates()) > 2000
    assert s["nodes"] == len(set(chem["a"]) | set(chem["b"])) == 279  # VC06 makes only a neuromuscular junction
    assert s["synapses"] == int(chem["Nbr"].sum()) == 6394
    c = ds.connectome(cell_type_table="neurons")  # with cell classes: every neuron is a node
    # named nodes and cell classes: the neurons table maps every root id to a name and a class
    neurons = ds.table("neurons").query().df()
    names = (set(w["a"]) | set(w["b"])) - {"NMJ"}
    assert len(neurons) == len(names) == 280 and set(neurons["name"]) == names
    by_name = neurons.set_index("name")
    assert by_name.loc["ADAL", "cell_type"] == "ADA" and by_name.loc["DA01", "cell_type"] == "DA"
    assert len(c.nodes) == 280 and c.nodes["cell_type"].notna().all()
    ava = int(by_name.loc["AVAL", "pt_root_id"])
    up = c.upstream(ava).df()
    exp = chem[chem["b"] == "AVAL"].groupby("a")["Nbr"].sum()
    assert len(up) == len(exp) and int(up["n_synapses"].sum()) == int(exp.sum())
    # gap junctions: each listed once from each side (self junctions once) → 890
    ej = w[w["Type"] == "EJ"]
    assert len(ds.table("electrical").query().df()) == int(ej[ej["a"] <= ej["b"]]["Nbr"].sum()) == 890
    assert len(ds.table("wiring").query().df()) == len(w)
    assert any(m.startswith("celegans:") and f"{s['edges']} connections" in m for m in said), said


def test_rerun_is_a_no_op(built):
    from neurolake.connectome.demo import demo_connectomes

    lake, _ = built
    before = {(ds, t): lake[ds].table(t).version for ds in ("pinky100", "celegans") for t in lake[ds].tables()}
    said: list[str] = []
    demo_connectomes(lake, said.append)
    after = {(ds, t): lake[ds].table(t).version for ds in ("pinky100", "celegans") for t in lake[ds].tables()}
    assert after == before
    assert [v["version"] for v in lake["pinky100"].versions.list()] == [1]
    assert [v["version"] for v in lake["celegans"].versions.list()] == [1]
    assert said == ["pinky100: connectome tables already there (version 1)",
                    "celegans: connectome tables already there (version 1)"]


def test_cli_connectome_summary(built):
    from typer.testing import CliRunner

    from neurolake.cli import app

    lake, _ = built
    r = CliRunner().invoke(app, ["connectome", "summary", "-d", "pinky100", "--lake", str(lake.root)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["nodes"], out["edges"], out["synapses"]) == (335, 1752, 1981)
