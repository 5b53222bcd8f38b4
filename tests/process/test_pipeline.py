"""The documented chain of docs/processing.md, run with the real CLI on the gala FIB-SEM crop: from the raw EM
layer to an evaluated, proofreadable segmentation, each step a job with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurolake import open_lake
from neurolake.cli import app
from neurolake.errors import AlreadyExists

DATA = Path(__file__).resolve().parents[2] / "data" / "gala_fibsem"
DS = "gala"


def _run(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "lake"
    lake = open_lake(path, create=True)
    lake.create_datastack(DS, (8, 8, 8))
    lake.ingest(f"{DATA}/train-image.h5:/stack", DS, "image", voxel_size=(8, 8, 8), layer_type="image",
                scheduler="threads")
    lake.ingest(f"{DATA}/train-gt.lzf.h5:/stack", DS, "truth", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    lake.close()
    return path


def test_raw_em_to_evaluated_segmentation(lake_path):
    L = ["--lake", str(lake_path), "-d", DS]
    classes = json.dumps({"boundary": [0], "cell": "*"})
    meta = json.loads(_run("process", "train", *L, "--image", "image", "--labels", "truth", "--name", "boundary",
                           "--classes", classes, "--sections", "0-24", "--test-sections", "25-49",
                           "--n-estimators", "30", "--samples-per-class", "2000"))
    assert meta["classes"]["cell"] and 0 not in meta["classes"]["cell"]  # '*' = every other label present
    assert meta["held_out"]["sections"] == list(range(25, 50)) and meta["held_out"]["f1"]["boundary"] > 0.4  # measured 0.49 (thin boundaries)
    _run("process", "classify", *L, "--image", "image", "--model", "boundary", "--output-prefix", "p",
         "--classes", "boundary")
    _run("process", "supervoxels", *L, "--boundary", "p_boundary", "--output", "sv")
    _run("process", "agglomerate", *L, "--supervoxels", "sv", "--boundary", "p_boundary", "--output", "seg",
         "--threshold", "0.3")
    plain = json.loads(_run("evaluate", "sv", *L, "--truth", "truth"))
    agglo = json.loads(_run("evaluate", "seg", *L, "--truth", "truth"))
    # the agglomeration must improve VI over the plain watershed (issue 16), mostly by removing splits
    assert agglo["vi"]["total"] < plain["vi"]["total"], (plain["vi"], agglo["vi"])
    assert agglo["vi"]["split"] < plain["vi"]["split"]
    assert agglo["adapted_rand"]["error"] < plain["adapted_rand"]["error"]
    print(f"\ngala, whole crop (classifier trained on z 0-24): plain watershed VI {plain['vi']}, ARE "
          f"{plain['adapted_rand']['error']:.3f}; agglomerated VI {agglo['vi']}, ARE {agglo['adapted_rand']['error']:.3f}")
    # every step is recorded: the segmentation knows its inputs, and its evaluation is stored with it
    with open_lake(lake_path) as lake:
        seg = lake.layer(DS, "seg")
        prov = seg.provenance
        assert prov["process.agglomerate"]["params"]["threshold"] == 0.3
        assert {i["layer"] for i in prov["process.agglomerate"]["inputs"]} == {"sv", "p_boundary"}
        stored = prov["evaluations"][-1]
        assert stored["truth"]["layer"] == "truth" and stored["vi"]["total"] == pytest.approx(agglo["vi"]["total"])
        assert lake.layer(DS, "p_boundary").provenance["process.classify"]
    # run again: nothing to do
    r = CliRunner().invoke(app, ["process", "agglomerate", *L, "--supervoxels", "sv", "--boundary", "p_boundary",
                                 "--output", "seg", "--threshold", "0.3"])
    assert r.exit_code == 0 and "already derived" in r.output
    r = CliRunner().invoke(app, ["process", "agglomerate", *L, "--supervoxels", "sv", "--boundary", "p_boundary",
                                 "--output", "seg", "--threshold", "0.5"])
    assert r.exit_code != 0 and isinstance(r.exception, AlreadyExists)  # `neurolake` prints it and exits 2
    _run("process", "initial-roots", *L, "--supervoxels", "sv", "--segmentation", "seg")
    with open_lake(lake_path) as lake:
        assert lake[DS].has_segmentation()
