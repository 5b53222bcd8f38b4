"""Synapse detection checked against scipy's labelling, and the ``neurolake annotations`` CLI
(load CSV/Parquet atomically, refuse truncated files, detect) run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotations_data import NAVIS, SITE_PROPS
from scipy import ndimage

from neurolake.annotations import create_table, get_table
from neurolake.annotations.detect import components


def test_detected_gerhard_synapses_match_scipy(ann_lake):
    vol = ann_lake.layer("gerhard2013", "labels")[:, :, :]
    mask = vol == 223
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert n == 50
    idx = np.arange(1, n + 1)
    cz, cy, cx = np.array(ndimage.center_of_mass(mask, lab, idx)).T
    sizes = ndimage.sum_labels(mask, lab, idx)
    t = get_table(ann_lake, "gerhard2013", "synapses")
    got = t.query().df()
    assert len(got) == 50 and t.schema.name == "synapse" and t.voxel_size_nm == (4.6, 4.6, 50.0)
    want = pd.DataFrame({"x": cx, "y": cy, "z": cz, "size": sizes}).sort_values(["z", "y", "x"]).reset_index()
    np.testing.assert_allclose(got["ctr_pt_position_x"], want.x, atol=1e-9)
    np.testing.assert_allclose(got["ctr_pt_position_z"], want.z, atol=1e-9)
    np.testing.assert_array_equal(got["size"], want["size"])
    np.testing.assert_allclose(got["size_nm3"], want["size"] * 4.6 * 4.6 * 50.0)
    boxes = ndimage.find_objects(lab)
    for _, row in got.head(10).iterrows():
        k = int(lab[int(row.bbox_min_z):int(row.bbox_max_z), int(row.bbox_min_y):int(row.bbox_max_y),
                    int(row.bbox_min_x):int(row.bbox_max_x)].max())
        assert boxes[k - 1] == (slice(row.bbox_min_z, row.bbox_max_z), slice(row.bbox_min_y, row.bbox_max_y),
                                slice(row.bbox_min_x, row.bbox_max_x))
    # supervoxels looked up under each centroid in the labels layer
    sv = vol[got.ctr_pt_position_z.astype(int), got.ctr_pt_position_y.astype(int), got.ctr_pt_position_x.astype(int)]
    assert got["ctr_pt_supervoxel_id"].to_numpy(dtype=np.uint64).tolist() == sv.tolist()


def test_components_connectivity():
    m = np.zeros((3, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # diagonal neighbours: one component at 26, two at 6
    assert len(components(m, 26)) == 1 and len(components(m, 6)) == 2
    assert len(components(m, 6, min_size=2)) == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolake.cli", "annotations", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_load_detect_and_refuse_truncated(ann_lake, ann_lake_path, tmp_path):
    lk = ["--lake", str(ann_lake_path), "--datastack", "hemibrain"]
    r = _cli("create", *lk, "--table", "cli_sites", "--schema", "point",
             *sum((["--property", f"{k}:{v}"] for k, v in SITE_PROPS.items() if k != "body_id"), []))
    assert r.returncode == 0, r.stderr
    src = NAVIS / "722817260.csv"
    ren = ["--rename", "x=pt_position_x", "--rename", "y=pt_position_y", "--rename", "z=pt_position_z"]
    r = _cli("load", str(src), *lk, "--table", "cli_sites", *ren, "--batch-rows", "1000")
    assert r.returncode == 0, r.stderr
    t = get_table(ann_lake, "hemibrain", "cli_sites")
    df = pd.read_csv(src)
    got = t.query().df()
    assert len(got) == len(df) and got["pt_position_y"].tolist() == df.y.astype(float).tolist()
    assert got["roi"].fillna("").tolist() == df.roi.fillna("").tolist()
    assert t.history()[0]["neurolake_action"] == "append" and t.version == 1  # 4 batches, one commit
    version = t.version
    # a CSV cut in the middle of a row
    text = src.read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: len(text) // 2 + 7])
    r = _cli("load", str(cut), *lk, "--table", "cli_sites", *ren, "--batch-rows", "500")
    assert r.returncode == 2 and "cut.csv" in r.stderr and "corrupt" in r.stderr.lower(), r.stderr
    # a Parquet file cut short
    pq.write_table(pa.Table.from_pandas(df.rename(columns={"x": "pt_position_x", "y": "pt_position_y",
                                                           "z": "pt_position_z"})), tmp_path / "s.parquet")
    raw = (tmp_path / "s.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(raw[: len(raw) - 100])
    r = _cli("load", str(tmp_path / "cut.parquet"), *lk, "--table", "cli_sites")
    assert r.returncode == 2 and "cut.parquet" in r.stderr, r.stderr
    # a bad row deep in the file: the earlier batches are not committed either
    bad = df.copy()
    bad["confidence"] = bad["confidence"].astype(object)
    bad.loc[2500, "confidence"] = "high"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = _cli("load", str(tmp_path / "bad.csv"), *lk, "--table", "cli_sites", *ren, "--batch-rows", "1000")
    assert r.returncode == 2 and "rows [2500]" in r.stderr and "confidence" in r.stderr, r.stderr
    assert t.version == version and t.count() == len(df)
    # the whole Parquet file loads
    r = _cli("load", str(tmp_path / "s.parquet"), *lk, "--table", "cli_sites", "--batch-rows", "1000")
    assert r.returncode == 0 and t.count() == 2 * len(df), r.stderr
    r = _cli("history", *lk, "--table", "cli_sites")
    assert [h["neurolake_action"] for h in json.loads(r.stdout)[:2]] == ["append", "append"]


def test_cli_detect(ann_lake, ann_lake_path, tmp_path):
    r = _cli("detect", "--lake", str(ann_lake_path), "--datastack", "gala_fibsem", "--mask", "segmentation",
             "--value", "1", "--table", "gala_seg1")
    assert r.returncode == 0, r.stderr
    vol = ann_lake.layer("gala_fibsem", "segmentation")[:, :, :]
    _, n = ndimage.label(vol == 1, structure=np.ones((3, 3, 3)))
    t = get_table(ann_lake, "gala_fibsem", "gala_seg1")
    assert t.count() == n >= 1 and t.query().df()["size"].sum() == (vol == 1).sum()
    r = _cli("detect", "--lake", str(ann_lake_path), "--datastack", "gala_fibsem", "--mask", "segmentation",
             "--value", "-3", "--table", "gala_bad")
    assert r.returncode == 2 and "does not fit" in r.stderr
    r = _cli("query", "--lake", str(ann_lake_path), "--datastack", "gala_fibsem", "--table", "gala_seg1",
             "-o", str(tmp_path / "q.parquet"))
    assert r.returncode == 0 and len(pd.read_parquet(tmp_path / "q.parquet")) == n


def test_create_table_refuses_unknown_optional_point(ann_lake):
    with pytest.raises(Exception, match="optional point"):
        create_table(ann_lake, "hemibrain", "x_opt", "synapse", optional_points=["middle_pt"])
