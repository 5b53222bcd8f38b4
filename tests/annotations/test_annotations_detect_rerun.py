"""Re-running a derivation is idempotent (issue 11, finding 8): synapse detection on the real Gerhard et al.
2013 labels (data/gerhard2013/labels) run twice keeps 50 rows; other parameters are refused unless
append/overwrite; overwrite replaces the derived rows in one commit with history kept; materialization
after a re-run has no duplicates, and an explicit-timestamp materialization is not duplicated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sqlalchemy import select

from neurolake import init_lake
from neurolake.annotations import create_table, get_table
from neurolake.annotations.detect import DETECT_PROPERTIES, components, derivations, detect_synapses
from neurolake.annotations.models import AnnotationTable
from neurolake.errors import AlreadyExists, InvalidArgument

DATA = Path(__file__).resolve().parents[2] / "data" / "gerhard2013" / "labels"
DS = "g"
SYNAPSE, MITO = 223, 191


@pytest.fixture(scope="module")
def rerun_lake(tmp_path_factory):
    """A lake holding the real Gerhard labels (20 x 1024 x 1024) as layer g/labels."""
    path = tmp_path_factory.mktemp("rerun") / "lake"
    lake = init_lake(path)
    lake.ingest(str(DATA), DS, "labels", voxel_size=(4.6, 4.6, 50), layer_type="segmentation", scheduler="threads")
    labels = lake.layer(DS, "labels")[:, :, :]
    yield path, lake, labels
    lake.close()


def _n_components(mask: np.ndarray, min_size: int = 1) -> int:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = ndimage.sum_labels(mask, lab, np.arange(1, n + 1))
    return int((sizes >= min_size).sum())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolake.cli", "annotations", *args], capture_output=True,
                          text=True, timeout=300)


def test_detect_twice_is_a_noop_and_materializes_once(rerun_lake):
    """The README command run twice: 50 rows, not 100 (the old code appended a second copy)."""
    path, lake, labels = rerun_lake
    cmd = ["detect", "--lake", str(path), "-d", DS, "--mask", "labels", "--value", str(SYNAPSE)]
    r = _cli(*cmd)
    assert r.returncode == 0, r.stderr
    t = get_table(lake, DS, "synapses")
    assert t.count() == 50 == _n_components(labels == SYNAPSE)
    version = t.version
    r = _cli(*cmd)
    assert r.returncode == 0, r.stderr
    assert "already derived" in r.stderr and "nothing to do" in r.stderr, r.stderr
    assert t.count() == 50 and t.version == version  # nothing written
    # the Python API agrees, and says so
    said = []
    detect_synapses(lake, DS, "labels", SYNAPSE, "synapses", say=said.append)
    assert t.count() == 50 and t.version == version and "already derived" in said[0] and "50 rows" in said[0]
    # the derivation is recorded with the rows (Delta commit) and in the catalog row
    (rec,) = derivations(t)
    assert rec["key"]["params"] == {"value": SYNAPSE, "connectivity": 26, "min_size": 1}
    assert rec["key"]["inputs"]["mask_layer"] == "labels" and rec["rows"] == 50 and rec["mode"] == "create"
    with lake.catalog.session() as s:
        prov = s.scalar(select(AnnotationTable.provenance).where(AnnotationTable.name == "synapses"))
    assert [d["digest"] for d in prov["derivations"]] == [rec["digest"]]
    # materialization after the re-run: 50 rows, no duplicated synapse
    v = lake[DS].versions.create(tables=["synapses"])
    assert v["tables"]["synapses"]["rows"] == 50
    got = pd.read_parquet(path / v["path"] / "synapses.parquet")
    pos = got[["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]]
    assert len(got) == 50 and not pos.duplicated().any() and got["id"].is_unique


def test_other_parameters_are_refused_and_nothing_changes(rerun_lake):
    path, lake, _ = rerun_lake
    t = detect_synapses(lake, DS, "labels", SYNAPSE, "refused")
    version, ids = t.version, t.query(columns=["id"]).df()["id"].tolist()
    with pytest.raises(AlreadyExists, match=r"value: 223 → 191.*--append.*--overwrite"):
        detect_synapses(lake, DS, "labels", MITO, "refused")
    with pytest.raises(AlreadyExists, match=r"min_size: 1 → 5"):
        detect_synapses(lake, DS, "labels", SYNAPSE, "refused", min_size=5)
    with pytest.raises(AlreadyExists, match=r"connectivity: 26 → 6"):
        detect_synapses(lake, DS, "labels", SYNAPSE, "refused", connectivity=6)
    with pytest.raises(InvalidArgument, match="not both"):
        detect_synapses(lake, DS, "labels", MITO, "refused", append=True, overwrite=True)
    r = _cli("detect", "--lake", str(path), "-d", DS, "--mask", "labels", "--value", str(MITO), "-t", "refused")
    assert r.returncode == 2 and "already_exists" in r.stderr and "223 → 191" in r.stderr, r.stderr
    assert t.version == version and t.query(columns=["id"]).df()["id"].tolist() == ids


def test_append_then_overwrite(rerun_lake):
    path, lake, labels = rerun_lake
    n_syn, n_mito = _n_components(labels == SYNAPSE), _n_components(labels == MITO)
    t = detect_synapses(lake, DS, "labels", SYNAPSE, "both")
    r = _cli("detect", "--lake", str(path), "-d", DS, "--mask", "labels", "--value", str(MITO), "-t", "both",
             "--append")
    assert r.returncode == 0 and "appended" in r.stderr, r.stderr
    assert t.count() == n_syn + n_mito and [d["mode"] for d in derivations(t)] == ["create", "append"]
    v_appended = t.version
    # both derivations are held: re-running either (even with --append) adds nothing
    said = []
    detect_synapses(lake, DS, "labels", MITO, "both", append=True, say=said.append)
    detect_synapses(lake, DS, "labels", SYNAPSE, "both", say=said.append)
    assert t.version == v_appended and t.count() == n_syn + n_mito
    assert all("already derived" in m for m in said) and "does not add the same derivation twice" in said[0]
    # a proofreader moves one detected synapse (update supersedes it) and adds one by hand
    first = int(t.query(columns=["id"]).df()["id"].min())
    (moved,) = t.update([{"id": first, "ctr_pt_position_x": 10.0}])
    (manual,) = t.append([{"ctr_pt_position_x": 5.0, "ctr_pt_position_y": 5.0, "ctr_pt_position_z": 1.0,
                           "size": 1.0}])
    before = t.history()[0]["timestamp"]
    v_before = t.version
    # overwrite with other parameters: the derived rows (and the row that superseded one) are soft-deleted
    # and the new ones added, in ONE commit; the hand-made row stays
    min_size = 1000
    n_new = _n_components(labels == SYNAPSE, min_size)
    assert 0 < n_new < n_syn
    r = _cli("detect", "--lake", str(path), "-d", DS, "--mask", "labels", "--value", str(SYNAPSE), "-t", "both",
             "--min-size", str(min_size), "--overwrite")
    assert r.returncode == 0 and f"replaced {n_syn + n_mito} derived rows with {n_new}" in r.stderr, r.stderr
    assert t.version == v_before + 1 and t.history()[0]["neurolake_action"] == "detect"
    now = t.query().df()
    assert len(now) == n_new + 1 and int(manual) in now["id"].tolist() and int(moved) not in now["id"].tolist()
    assert (now[now["id"] != int(manual)]["size"] >= min_size).all()
    # history kept: the old rows are readable at a time before the overwrite
    assert t.count(timestamp=before) == n_syn + n_mito + 1
    (rec,) = derivations(t)
    assert rec["mode"] == "overwrite" and rec["replaced"] == n_syn + n_mito and rec["rows"] == n_new
    # and the overwritten derivation is now the one held
    said = []
    detect_synapses(lake, DS, "labels", SYNAPSE, "both", min_size=min_size, say=said.append)
    assert t.version == v_before + 1 and "already derived" in said[0]
    v = lake[DS].versions.create(tables=["both"])
    assert v["tables"]["both"]["rows"] == n_new + 1


def test_table_written_by_old_code_needs_a_flag(rerun_lake):
    """A table holding rows without a derivation record (the 100 rows the old code left) is not touched
    without a flag; --overwrite replaces all its valid rows and records the derivation."""
    _, lake, labels = rerun_lake
    t = create_table(lake, DS, "legacy", "synapse", voxel_size_nm=(4.6, 4.6, 50), properties=DETECT_PROPERTIES)
    rows = components(labels == SYNAPSE)
    rows.insert(4, "size_nm3", rows["size"] * 4.6 * 4.6 * 50)
    t.append(rows)
    t.append(rows)  # the duplicate copy of the old re-run
    assert t.count() == 100
    with pytest.raises(AlreadyExists, match="100 rows not recorded as derived"):
        detect_synapses(lake, DS, "labels", SYNAPSE, "legacy")
    assert t.count() == 100
    said = []
    detect_synapses(lake, DS, "labels", SYNAPSE, "legacy", overwrite=True, say=said.append)
    assert t.count() == 50 and "replaced 100 derived rows with 50" in said[0]
    detect_synapses(lake, DS, "labels", SYNAPSE, "legacy", say=said.append)
    assert t.count() == 50 and "already derived" in said[1]


def test_reingested_layer_is_a_changed_input(rerun_lake, tmp_path):
    _, lake, labels = rerun_lake
    np.save(tmp_path / "crop.npy", labels[:, :512, :512])
    lake.ingest(str(tmp_path / "crop.npy"), DS, "crop", layer_type="segmentation", scheduler="threads")
    n = _n_components(labels[:, :512, :512] == SYNAPSE)
    t = detect_synapses(lake, DS, "crop", SYNAPSE, "crop_syn")
    assert t.count() == n
    lake.ingest(str(tmp_path / "crop.npy"), DS, "crop", layer_type="segmentation", scheduler="threads",
                overwrite=True)
    with pytest.raises(AlreadyExists, match="layer crop was re-ingested or overwritten since"):
        detect_synapses(lake, DS, "crop", SYNAPSE, "crop_syn")
    assert t.count() == n
    detect_synapses(lake, DS, "crop", SYNAPSE, "crop_syn", overwrite=True)
    assert t.count() == n and len(derivations(t)) == 1


def test_materialize_explicit_timestamp_is_not_duplicated(rerun_lake):
    _, lake, _ = rerun_lake
    t = detect_synapses(lake, DS, "labels", SYNAPSE, "mat")
    vs = lake[DS].versions
    ts = t.history()[0]["timestamp"]
    a = vs.create(ts, tables=["mat"])
    b = vs.create(ts, tables=["mat"])
    assert a["reused"] is False and b["reused"] is True and b["version"] == a["version"] and b["path"] == a["path"]
    assert b["tables"]["mat"]["rows"] == 50
    # another table set, or no timestamp (time moves on), makes a new version
    detect_synapses(lake, DS, "labels", MITO, "mat_other")
    c = vs.create(ts, tables=["mat", "mat_other"])
    d = vs.create(tables=["mat"])
    e = vs.create(tables=["mat"])
    assert len({a["version"], c["version"], d["version"], e["version"]}) == 4 and not (d["reused"] or e["reused"])
    # a table changed since (new Delta version): the same timestamp gets a new version
    detect_synapses(lake, DS, "labels", MITO, "mat", append=True)
    f = vs.create(ts, tables=["mat"])
    assert f["reused"] is False and f["version"] > e["version"] and f["tables"]["mat"]["rows"] == 50
    assert json.loads(json.dumps(f["provenance"]["inputs"]["tables"])) == {"mat": {"delta_version": t.version}}
    # an expired version is not reused
    vs.expire(a["version"])
    g = vs.create(ts, tables=["mat"])  # f matches (same Delta version) and is still valid
    assert g["version"] == f["version"] and g["reused"] is True


def test_records_survive_a_truncated_delta_log(rerun_lake):
    """After a checkpoint and removal of the older commit files the catalog copy supplies their records."""
    from deltalake import DeltaTable

    _, lake, labels = rerun_lake
    t = detect_synapses(lake, DS, "labels", SYNAPSE, "trunc")
    detect_synapses(lake, DS, "labels", MITO, "trunc", append=True)
    t.append([{"ctr_pt_position_x": 5.0, "ctr_pt_position_y": 5.0, "ctr_pt_position_z": 1.0, "size": 1.0}])
    n = t.count()
    DeltaTable(str(t.path)).create_checkpoint()
    for f in sorted((t.path / "_delta_log").glob("*.json"))[:-1]:
        f.unlink()
    t._dt = None  # reopen the log
    assert [h["version"] for h in t.history()] == [t.version] and t.version > 0
    assert [r["mode"] for r in derivations(t)] == ["create", "append"]
    said = []
    detect_synapses(lake, DS, "labels", MITO, "trunc", say=said.append)
    assert t.count() == n and "already derived" in said[0]
    with pytest.raises(AlreadyExists, match="value: 191 → 255"):
        detect_synapses(lake, DS, "labels", 255, "trunc")
