"""Re-running an ingest (issue 11, finding 8), on the real Gerhard et al. 2013 labels: a finished ingest
run again is refused (AlreadyExists naming --overwrite) and leaves the layer exactly as it was; an
interrupted one resumes after its last durable slab and ends equal to an uninterrupted ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolake.errors import AlreadyExists
from tests.conftest import on_local_and_s3

fresh_lake = on_local_and_s3("fresh_lake")  # every test using it runs on a local lake, then on S3

LABELS = Path(__file__).resolve().parents[2] / "data" / "gerhard2013" / "labels"


def test_ingest_rerun_is_refused_and_changes_nothing(fresh_lake):
    kw = dict(voxel_size=(4.6, 4.6, 50), layer_type="segmentation", scheduler="threads")
    la = fresh_lake.ingest(str(LABELS), "g", "labels", **kw)
    before = (la.root, la.created, la.provenance, la[:, :, :])
    with pytest.raises(AlreadyExists, match="already exists; use --overwrite"):
        fresh_lake.ingest(str(LABELS), "g", "labels", **kw)
    la = fresh_lake.layer("g", "labels")
    assert (la.root, la.created, la.provenance) == before[:3] and la.status == "ready"
    assert np.array_equal(la[:, :, :], before[3])


def test_interrupted_ingest_resumes(fresh_lake):
    kw = dict(voxel_size=(4.6, 4.6, 50), layer_type="segmentation", scheduler="threads")

    def stop(phase, done, total):
        if phase == "mip0" and done == 1:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        fresh_lake.ingest(str(LABELS), "g", "part", progress=stop, **kw)
    assert fresh_lake.layer("g", "part").status == "ingesting"
    said = []
    la = fresh_lake.ingest(str(LABELS), "g", "part", say=said.append, **kw)
    assert la.status == "ready" and any("resuming" in s and "1/2" in s for s in said), said
    ref = fresh_lake.ingest(str(LABELS), "g", "ref", **kw)
    assert np.array_equal(la[:, :, :], ref[:, :, :])
    assert np.array_equal(la.cutout(x=(0, 512), y=(0, 512), z=(0, 20), mip=1),
                          ref.cutout(x=(0, 512), y=(0, 512), z=(0, 20), mip=1))
