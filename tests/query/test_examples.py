"""The analysts' examples of issue 12 (point 9), run as a user runs them: each ``examples/NN_*.py`` in its own
Python process on a fresh lake, their printed results checked against the same numbers computed with pandas
from the raw files in ``data/`` (MICrONS pinky100, the C. elegans NeuronConnect release of Varshney et al.
2011, the hemibrain table of Schlegel et al. 2024).

Examples 01 and 03 share a pinky100 lake, 02 and 04 a C. elegans lake; the two chains run side by side. The
processes share a byte-code cache in the test's temporary folder (most of a bare start is compiling imports
when ``PYTHONDONTWRITEBYTECODE`` is set).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
import _data  # noqa: E402

STEPS = [("01_synapses_with_features.py", "03_download_version_parquet.py"),
         ("02_celltype_connectivity.py", "04_varshney_reproduce.py")]


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-2000:]
    return {**json.loads(lines[0][len("RESULT "):]), "stdout": proc.stdout}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Every example run once: ``{script name: its RESULT dict (+ stdout)}``."""
    base = tmp_path_factory.mktemp("examples")
    lakes = [base / "pinky", base / "celegans"]
    out: dict[str, dict] = {}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    for step in range(2):
        procs = {}
        for chain, lake in zip(STEPS, lakes, strict=True):
            script = chain[step]
            procs[script] = subprocess.Popen([sys.executable, str(EXAMPLES / script), str(lake)], cwd=ROOT, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for script, p in procs.items():
            stdout, stderr = p.communicate(timeout=300)
            out[script] = _result(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _env(lake: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(lake).parent / "pycache")
    return env


def _lake(path: str):
    import neurolake

    return neurolake.open_lake(path)


def test_synapses_joined_with_two_feature_tables(runs):
    r = runs["01_synapses_with_features.py"]
    syn = pd.read_csv(_data.PINKY / "synapses.csv")
    somas = _data.pinky_somas().astype({"root_id": np.int64}).set_index("root_id")
    # the default cells: the three with the most output synapses (ties by root id)
    counts = syn.groupby("pre").size().reset_index(name="n").sort_values(["n", "pre"], ascending=[False, True])
    assert r["roots"] == counts["pre"].head(3).tolist()
    want = syn.assign(synapse_id=np.arange(1, len(syn) + 1))
    want = want[want["pre"].isin(r["roots"])]
    pre, post = somas.loc[want["pre"]], somas.loc[want["post"]]
    want = want.assign(pre_axon_len_um=pre["axon_len"].to_numpy(), post_dendrite_len_um=post["dendrite_len"].to_numpy(),
                       soma_distance_um=np.sqrt(((pre[["x_nm", "y_nm", "z_nm"]].to_numpy()
                                                  - post[["x_nm", "y_nm", "z_nm"]].to_numpy()) ** 2).sum(1)) / 1000)
    assert r["rows"] == len(want) == 209
    with _lake(r["lake"]) as lake:
        run = lake.run(r["run_id"])
        got = lake.sql("SELECT 1 AS x").df()  # the lake still answers queries after the example
        assert got["x"].tolist() == [1]
        facet = run["manifest"]["run"]["facets"]["neurolake"]
        assert facet["mode"] == "production" and facet["result_sha256"] == r["sha256"]
        kinds = sorted((i["name"], i["kind"]) for i in facet["inputs"])
        assert kinds == [("features.pinky100.cell_morphology", "feature"), ("features.pinky100.soma_distance", "feature"),
                         ("pinky100.v1.synapses", "version_table")]
        assert all(i["pin"]["fingerprint"]["kind"] == "parquet_sha256" for i in facet["inputs"] if i["kind"] == "feature")
        rerun = lake.sql(facet["sql"], facet["params"], mode="production")
    assert rerun.sha256 == r["sha256"]
    df = rerun.df()
    assert df["synapse_id"].tolist() == want["synapse_id"].tolist()
    assert df["pre"].astype(np.int64).tolist() == want["pre"].tolist()
    assert df["post"].astype(np.int64).tolist() == want["post"].tolist()
    for c in ("pre_axon_len_um", "post_dendrite_len_um", "soma_distance_um"):
        np.testing.assert_allclose(df[c].to_numpy(), want[c].to_numpy(), rtol=1e-12)


def test_celltype_matrix_equals_pandas_on_the_raw_file(runs):
    r = runs["02_celltype_connectivity.py"]
    w = _data.celegans_wiring()
    s = w[w["Type"].isin(["S", "Sp"])]
    pre_c = s["Neuron 1"].str.upper().map(_data.neuron_class)
    post_c = s["Neuron 2"].str.upper().map(_data.neuron_class)
    pair = s.assign(pre=s["Neuron 1"].str.upper(), post=s["Neuron 2"].str.upper(), pre_class=pre_c,
                    post_class=post_c).groupby(["pre", "post", "pre_class", "post_class"], as_index=False)["Nbr"].sum()
    pair = pair[pair["Nbr"] > 0]  # a neuron pair whose rows all say 0 synapses is no connection
    want = pair.groupby(["pre_class", "post_class"], as_index=False).agg(synapses=("Nbr", "sum"),
                                                                         connections=("Nbr", "size"))
    got = pq.read_table(r["matrix"]).to_pandas()
    assert got[["pre_class", "post_class"]].values.tolist() == want[["pre_class", "post_class"]].values.tolist()
    assert got["synapses"].tolist() == want["synapses"].tolist()
    assert got["connections"].tolist() == want["connections"].tolist()
    assert got["synapses"].sum() == 6394 and r["rows"] == len(want)
    assert b"openlineage" in pq.read_schema(r["matrix"]).metadata
    # the PIVOT of the locomotion classes is the same numbers
    piv = {row["pre_class"]: row for row in r["pivot"]}
    sub = want.set_index(["pre_class", "post_class"])["synapses"]
    for (a, b), n in sub.items():
        if a in piv and b in piv[a]:
            assert piv[a][b] == n, (a, b)
    assert piv["AVA"]["VA"] == sub[("AVA", "VA")] > 0
    # hemibrain: the pivot's cells add up to the table's presynapse counts per class
    meta = _data.hemibrain_meta()
    by_class = meta.assign(cell_class=meta["cell_class"].fillna("(none)")).groupby("cell_class")["pre"].sum()
    fly = {row["cell_class"]: row for row in r["hemibrain"]}
    assert set(fly) == set(by_class.index)
    for c, total in by_class.items():
        assert sum(v for k, v in fly[c].items() if k != "cell_class") == pytest.approx(total), c


def test_version_downloaded_as_parquet_with_its_manifest(runs):
    from neurolake.query.manifest import result_sha256, validate_event

    r = runs["03_download_version_parquet.py"]
    path = Path(r["file"])
    table = pq.read_table(path)
    syn = pd.read_csv(_data.PINKY / "synapses.csv")
    assert table.num_rows == r["rows"] == len(syn) == 1981
    df = table.to_pandas()
    assert df["id"].tolist() == list(range(1, 1982))
    assert df["pre_pt_root_id"].astype(np.int64).tolist() == syn["pre"].tolist()
    assert df["post_pt_root_id"].astype(np.int64).tolist() == syn["post"].tolist()
    manifest = json.loads(pq.read_schema(path).metadata[b"openlineage"])
    assert json.loads(Path(str(path) + ".manifest.json").read_text()) == manifest
    validate_event(manifest)
    facet = manifest["run"]["facets"]["neurolake"]
    assert manifest["run"]["runId"] == r["run_id"] and facet["rows"] == 1981
    assert [i["name"] for i in facet["inputs"]] == ["pinky100.v1.synapses"]
    assert result_sha256(table) == facet["result_sha256"] == r["sha256"] == r["file_sha256"]
    assert r["sidecar_equal"] is True and r["reproduce"] == "identical"


def test_published_counts_reproduced_with_one_command(runs):
    r = runs["04_varshney_reproduce.py"]
    assert r["ok"] is True and r["reproduce"] == ["identical", "identical"]
    w = _data.celegans_wiring()
    ej = w[w["Type"] == "EJ"]
    self_ej = ej["Neuron 1"] == ej["Neuron 2"]
    # computed here from the raw file, independently of the lake
    assert r["counts"]["chemical_synapses"] == w.loc[w["Type"].isin(["S", "Sp"]), "Nbr"].sum() == 6394
    assert r["counts"]["chemical_synapses_postsynaptic_rows"] == w.loc[w["Type"].isin(["R", "Rp"]), "Nbr"].sum()
    assert r["counts"]["gap_junctions"] == ej.loc[~self_ej, "Nbr"].sum() // 2 + ej.loc[self_ej, "Nbr"].sum()
    # the release's stated numbers: these three match exactly, the chemical synapses differ by one
    assert {k: r["counts"][k] for k in ("neurons", "gap_junctions", "neuromuscular_junctions")} == \
        {"neurons": 280, "gap_junctions": 890, "neuromuscular_junctions": 1410}
    assert r["stated"]["chemical_synapses"] == 6393
    assert "differs by +1" in r["stdout"]
    # the figure carries both runs' manifests
    svg = ET.parse(r["figure"]).getroot()
    meta = svg.find("{http://www.w3.org/2000/svg}metadata")
    ids = [m["run"]["runId"] for m in json.loads(meta.text)]
    assert ids == [r["run_id"], r["degrees_run_id"]]
    assert len(svg.findall("{http://www.w3.org/2000/svg}rect")) > 20
    # one command, from a shell
    cli = Path(sys.executable).with_name("neurolake")
    proc = subprocess.run([str(cli), "reproduce", r["run_id"], "--lake", r["lake"]], capture_output=True, text=True,
                          timeout=120, env=_env(r["lake"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"identical \(sha256 {r['sha256']}\)", proc.stdout)


def test_neuron_class_rule():
    """The class rule of example 02 on names of each kind (White et al. 1986 naming)."""
    cases = {"AVL": "AVL", "DVA": "DVA", "PVR": "PVR", "RID": "RID", "DA01": "DA", "VC06": "VC", "VD13": "VD",
             "ADAL": "ADA", "AVDR": "AVD", "ADLL": "ADL", "IL1DL": "IL1", "IL1L": "IL1", "IL2VR": "IL2",
             "CEPVR": "CEP", "OLQDL": "OLQ", "RMDDL": "RMD", "RMDL": "RMD", "RMED": "RME", "RMEV": "RME",
             "SABD": "SAB", "SABVL": "SAB", "SMDVR": "SMD", "URYDL": "URY", "avfl": "AVF", "PVDL": "PVD"}
    assert {n: _data.neuron_class(n) for n in cases} == cases
    neurons = _data.celegans_neurons()
    assert len(neurons) == 280 and neurons["name"].is_unique
    sizes = neurons.groupby("cell_class").size()
    assert sizes["IL1"] == 6 and sizes["RMD"] == 6 and sizes["CEP"] == 4 and sizes["VD"] == 13 and sizes["DD"] == 6
