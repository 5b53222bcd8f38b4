"""Re-running the watershed is idempotent (issue 11, finding 8), on a crop of the real Gerhard et al. 2013
labels: the same inputs and parameters do nothing (the old code failed with AlreadyExists after
recomputing everything); other parameters or a re-ingested boundary layer are refused before any work
unless --overwrite; an interrupted run resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurolake import init_lake, open_lake
from neurolake.errors import AlreadyExists, NotReady
from neurolake.segment import watershed_layer

DATA = Path(__file__).resolve().parents[2] / "data"
MEMBRANE = (0, 32, 64, 96, 128)


@pytest.fixture(scope="module")
def crop_lake(tmp_path_factory):
    """Sections 0-3, a 256 x 256 crop of the real label images, ingested; supervoxels by the CLI with --init."""
    files = sorted((DATA / "gerhard2013" / "labels").glob("*.png"))[:4]
    labels = np.stack([np.array(Image.open(f))[256:512, 256:512] for f in files]).astype(np.uint32)
    d = tmp_path_factory.mktemp("wsrerun")
    np.save(d / "labels.npy", labels)
    lake = init_lake(d / "lake")
    lake.ingest(str(d / "labels.npy"), "g", "labels", voxel_size=(4.6, 4.6, 50), layer_type="segmentation",
                scheduler="threads")
    lake.close()
    return d, labels


def _ws(d: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEUROLAKE_LAKE": str(d / "lake")}
    return subprocess.run([sys.executable, "-m", "neurolake.cli", "segment", "watershed", "-d", "g",
                           "--boundary-layer", "labels", "--boundary-values", ",".join(map(str, MEMBRANE)),
                           *extra], capture_output=True, text=True, env=env, timeout=300)


def _state(lake, name: str):
    la = lake.layer("g", name)
    return la.root, la.created, la.cutout(x=(0, 256), y=(0, 256), z=(0, 4))


def test_watershed_twice_is_a_noop(crop_lake):
    d, _ = crop_lake
    r = _ws(d, "--output", "sv", "--min-distance", "6", "--init")
    assert r.returncode == 0, r.stderr
    lake = open_lake(d / "lake")
    root, created, sv = _state(lake, "sv")
    prov = lake.layer("g", "sv").provenance["watershed"]
    assert prov["key"]["params"]["min_distance"] == 6 and prov["key"]["params"]["boundary_values"] == list(MEMBRANE)
    lake.close()
    # the same command again (boundary values in another order, --init again): nothing to do, no error
    r = _ws(d, "--output", "sv", "--min-distance", "6", "--init", "--boundary-values", "128,96,64,32,0")
    assert r.returncode == 0, r.stderr
    assert "already derived" in r.stderr and "already proofreadable" in r.stderr, r.stderr
    lake = open_lake(d / "lake")
    root2, created2, sv2 = _state(lake, "sv")
    assert (root2, created2) == (root, created) and np.array_equal(sv, sv2)
    # the whole box given explicitly is the same derivation
    said = []
    la = watershed_layer(lake, "g", "labels", "sv", boundary_values=MEMBRANE, min_distance=6, x=(0, 256),
                         y=(0, 256), z=(0, 4), say=said.append)
    assert la.created == created and "already derived" in said[0]
    lake.close()


def test_other_parameters_refused_then_overwrite(crop_lake):
    d, _ = crop_lake
    lake = open_lake(d / "lake")
    watershed_layer(lake, "g", "labels", "sv2", boundary_values=MEMBRANE, min_distance=6)
    root, created, sv = _state(lake, "sv2")
    with pytest.raises(AlreadyExists, match=r"min_distance: 6 → 3.*overwrite"):
        watershed_layer(lake, "g", "labels", "sv2", boundary_values=MEMBRANE, min_distance=3,
                        progress=lambda *a: pytest.fail("the watershed ran before the refusal"))
    with pytest.raises(AlreadyExists, match=r"box:"):
        watershed_layer(lake, "g", "labels", "sv2", boundary_values=MEMBRANE, min_distance=6, z=(0, 2))
    lake.close()
    r = _ws(d, "--output", "sv2", "--min-distance", "3")
    assert r.returncode == 2 and "already_exists" in r.stderr and "min_distance: 6 → 3" in r.stderr, r.stderr
    lake = open_lake(d / "lake")
    assert _state(lake, "sv2")[:2] == (root, created)
    lake.close()
    r = _ws(d, "--output", "sv2", "--min-distance", "3", "--overwrite")
    assert r.returncode == 0, r.stderr
    lake = open_lake(d / "lake")
    _, created3, sv3 = _state(lake, "sv2")
    assert created3 > created and len(np.unique(sv3)) > len(np.unique(sv))  # smaller seed spacing: more fragments
    assert lake.layer("g", "sv2").provenance["watershed"]["key"]["params"]["min_distance"] == 3
    lake.close()
    r = _ws(d, "--output", "sv2", "--min-distance", "3")
    assert r.returncode == 0 and "already derived" in r.stderr, r.stderr


def test_reingested_boundary_layer_is_a_changed_input(crop_lake):
    d, _ = crop_lake
    lake = open_lake(d / "lake")
    lake.ingest(str(d / "labels.npy"), "g", "labels_b", layer_type="segmentation", scheduler="threads")
    watershed_layer(lake, "g", "labels_b", "sv3", boundary_values=MEMBRANE, min_distance=6)
    lake.ingest(str(d / "labels.npy"), "g", "labels_b", layer_type="segmentation", scheduler="threads",
                overwrite=True)
    with pytest.raises(AlreadyExists, match="labels_b was re-ingested or overwritten since"):
        watershed_layer(lake, "g", "labels_b", "sv3", boundary_values=MEMBRANE, min_distance=6)
    watershed_layer(lake, "g", "labels_b", "sv3", boundary_values=MEMBRANE, min_distance=6, overwrite=True)
    said = []
    watershed_layer(lake, "g", "labels_b", "sv3", boundary_values=MEMBRANE, min_distance=6, say=said.append)
    assert "already derived" in said[0]
    lake.close()


def test_interrupted_watershed_resumes(crop_lake):
    d, _ = crop_lake
    lake = open_lake(d / "lake")

    def stop(phase, done, total):
        if phase == "mip0":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        watershed_layer(lake, "g", "labels", "sv4", boundary_values=MEMBRANE, min_distance=6, progress=stop)
    assert lake.layer("g", "sv4").status == "ingesting"
    said = []
    la = watershed_layer(lake, "g", "labels", "sv4", boundary_values=MEMBRANE, min_distance=6, say=said.append)
    assert la.status == "ready" and any("resuming" in m for m in said), said
    # the resumed layer equals an uninterrupted run
    ref = watershed_layer(lake, "g", "labels", "sv_ref", boundary_values=MEMBRANE, min_distance=6)
    assert np.array_equal(_state(lake, "sv4")[2], _state(lake, "sv_ref")[2])
    assert ref.status == "ready"
    # an interrupted ingest of something else under the output name is refused before any work
    with pytest.raises(RuntimeError, match="killed"):
        lake.ingest(str(d / "labels.npy"), "g", "sv6", layer_type="segmentation", scheduler="threads",
                    progress=stop)
    with pytest.raises(NotReady, match="interrupted ingest of something else"):
        watershed_layer(lake, "g", "labels", "sv6", boundary_values=MEMBRANE, min_distance=6,
                        progress=lambda *a: pytest.fail("the watershed ran before the refusal"))
    la = watershed_layer(lake, "g", "labels", "sv6", boundary_values=MEMBRANE, min_distance=6, overwrite=True)
    assert np.array_equal(_state(lake, "sv6")[2], _state(lake, "sv_ref")[2]) and la.status == "ready"
    lake.close()
