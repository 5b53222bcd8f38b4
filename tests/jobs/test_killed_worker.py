"""Dask jobs survive a killed worker: a pyramid built on a real cluster (scheduler + 2 worker processes) whose
worker is SIGKILLed mid-job completes, and every shard equals the one of a clean run.

Pyramid tasks write whole output shards (each shard file is replaced by a rename), so the tasks of the dead
worker are simply re-run by the scheduler on the other worker: nothing is lost or written twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from neurolake.volumes.pyramid import build_pyramid
from neurolake.volumes.spec import LayerSpec
from neurolake.volumes.store import create_arrays, make_context, open_array
from tests.conftest import DATA


def _labels() -> np.ndarray:
    from PIL import Image

    files = sorted((DATA / "gerhard2013" / "labels").glob("*.png"))
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.uint32)


def _layer(root: Path, vol: np.ndarray, layer_type: str) -> LayerSpec:
    z, y, x = vol.shape
    spec = LayerSpec(layer_type=layer_type, dtype=str(vol.dtype), size_xyz=(x, y, z), voxel_size_nm=(4.6, 4.6, 50),
                     chunk_zyx=(4, 64, 64), shard_zyx=(4, 128, 128))
    arrays = create_arrays(root, spec, root.name, make_context(1 << 26))
    arrays[0].write(vol).result()
    return spec


def _shards(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "/c/" in str(p.relative_to(root)) + "/"
            and not p.name.startswith(".")}


@pytest.mark.parametrize("kind", ["image", "segmentation"])
def test_pyramid_completes_after_a_worker_is_killed(dask_cluster, tmp_path, gerhard_source, kind):
    vol = gerhard_source if kind == "image" else _labels()
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    spec = _layer(clean, vol, kind)
    _layer(killed, vol, kind)
    build_pyramid(clean, spec, scheduler="threads")

    done = {"n": 0, "killed": None}

    def on_task(nbytes: int) -> None:
        done["n"] += 1
        if done["n"] == 3 and done["killed"] is None:  # mid-level: the other tasks are queued or running
            done["killed"] = dask_cluster.kill_worker(0)

    build_pyramid(killed, spec, scheduler=dask_cluster.address, on_task=on_task)
    n_tasks = done["n"]
    assert done["killed"] is not None, "the worker was not killed: the job ended too early"
    assert dask_cluster.workers[0].poll() is not None  # really dead
    ctx = make_context(1 << 26)
    for m in spec.mips:
        a = open_array(clean, m.mip, ctx).read().result()
        b = open_array(killed, m.mip, ctx).read().result()
        np.testing.assert_array_equal(a, b, err_msg=f"mip {m.mip}")
    # every shard file of every mip, byte for byte
    assert _shards(clean) == _shards(killed)
    assert n_tasks > 3  # tasks were still to run when the worker died


def _s3_shards(url: str) -> dict[str, str]:
    from neurolake.storage.config import storage_config

    p = storage_config().path(url)
    fs = p.fs
    return {k[len(p.path) + 1:]: hashlib.sha256(fs.cat_file(k)).hexdigest()
            for k in sorted(fs.find(p.path)) if "/c/" in k}


def test_pyramid_on_an_s3_lake_completes_after_a_worker_is_killed(s3_endpoint, dask_cluster, tmp_path,
                                                                  gerhard_source):
    """The same on object storage: the workers (separate processes, with the session's AWS environment) read
    and write shard objects of an s3:// prefix; every shard object equals the local clean run's."""
    from neurolake.storage.config import storage_config

    st = storage_config()
    bucket = f"pyr-{tmp_path.name[-8:].lower().replace('_', '-')}"
    st.boto3_client().create_bucket(Bucket=bucket)
    clean, remote = tmp_path / "clean", st.path(f"s3://{bucket}/layer")
    spec = _layer(clean, gerhard_source, "image")
    z, y, x = gerhard_source.shape
    arrays = create_arrays(remote, spec, "layer", make_context(1 << 26, st), st)
    arrays[0].write(gerhard_source).result()
    build_pyramid(clean, spec, scheduler="threads")

    done = {"n": 0, "killed": None}

    def on_task(nbytes: int) -> None:
        done["n"] += 1
        if done["n"] == 3 and done["killed"] is None:
            done["killed"] = dask_cluster.kill_worker(0)

    build_pyramid(remote, spec, scheduler=dask_cluster.address, on_task=on_task)
    assert done["killed"] is not None and dask_cluster.workers[0].poll() is not None
    assert done["n"] > 3
    ctx = make_context(1 << 26, st)
    for m in spec.mips:
        np.testing.assert_array_equal(open_array(clean, m.mip, make_context(1 << 26)).read().result(),
                                      open_array(remote, m.mip, ctx).read().result(), err_msg=f"mip {m.mip}")
    local = _shards(clean)
    assert local == _s3_shards(f"s3://{bucket}/layer") and len(local) > 10
