"""Concurrent writers on object storage: S3 has no read-modify-write of one object, so two processes writing
disjoint boxes of one shard would silently lose one of the writes; the layer's writers take turns under a
PostgreSQL advisory lock (``Layer.write``). Here two real processes released together by a barrier write, many
times over, disjoint boxes of the one shard of a layer; every write must land, at mip 0 and in the pyramid.
A writer that cannot get the lock in time gets a retryable Conflict and writes nothing."""

from __future__ import annotations

import functools
import multiprocessing as mp
import threading

import numpy as np
import pytest

from neurolake.errors import Conflict
from neurolake.volumes.downsample import downsample

# One shard per mip (16 × 1024 × 1024 voxels) of real EM, which compresses little: each shard object is ~13 MB,
# so a read-modify-write of it takes long enough that unserialised writers overlap (and lose writes) reliably.
SHAPE_ZYX = (16, 1024, 1024)
REPS = 12
BLOCK_ZYX = (8, 16, 64)  # writer p, repetition r: z 0:8, y 16 r : +16, x 512 p : +64


def value(p: int, r: int) -> int:
    return 1 + p * 100 + r


def box(p: int, r: int) -> tuple[int, int, int]:
    """(x0, y0, z0) of writer ``p``'s block in repetition ``r``."""
    return 512 * p, 16 * r, 0


def _writer(url: str, p: int, barrier, errors) -> None:
    """One writer process: ``REPS`` writes, each released together with the other writer's by ``barrier``."""
    from neurolake import open_lake

    try:
        lake = open_lake(url)
        la = lake.layer("ds", "em")
        for r in range(REPS):
            x0, y0, z0 = box(p, r)
            barrier.wait(120)
            la.write(np.full(BLOCK_ZYX, value(p, r), np.uint8), x0=x0, y0=y0, z0=z0)
        lake.close()
    except BaseException as exc:  # reported to the test, which fails with it
        errors.put(f"writer {p}: {type(exc).__name__}: {exc}")
        barrier.abort()
        raise


@pytest.fixture
def s3_layer(new_s3_lake, tmp_path):
    """A new S3 lake holding ``ds/em``: real EM voxels (the Gerhard stack's corner), one shard per mip."""
    import tifffile

    from neurolake import open_lake
    from tests.conftest import DATA

    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))[:SHAPE_ZYX[0]]
    vol = np.stack([tifffile.imread(f)[:SHAPE_ZYX[1], :SHAPE_ZYX[2]] for f in files])
    np.save(tmp_path / "em.npy", vol)
    url, _db = new_s3_lake()
    lake = open_lake(url)
    lake.create_datastack("ds", (4.6, 4.6, 45.0))
    la = lake.ingest(str(tmp_path / "em.npy"), "ds", "em", voxel_size=(4.6, 4.6, 45.0), scheduler="threads")
    assert la.num_mips >= 2
    for m in la.spec.mips:  # every write of the test lands in the one shard of each mip
        assert all(s >= n for s, n in zip(m.shard_zyx, m.shape_zyx, strict=True)), m
    yield url, lake, vol
    lake.close()


def test_two_processes_writing_one_shard_both_land(s3_layer):
    from neurolake import open_lake

    url, lake, vol = s3_layer
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, p, barrier, errors)) for p in (0, 1)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(300)
    msgs = []
    while not errors.empty():
        msgs.append(errors.get())
    assert not msgs and [pr.exitcode for pr in procs] == [0, 0], msgs
    # a fresh view (no cache of either writer): every block of both writers is there
    other = open_lake(url)
    la = other.layer("ds", "em")
    want = vol.copy()
    for p in (0, 1):
        for r in range(REPS):
            x0, y0, z0 = box(p, r)
            want[z0:z0 + BLOCK_ZYX[0], y0:y0 + BLOCK_ZYX[1], x0:x0 + BLOCK_ZYX[2]] = value(p, r)
    z, y, x = SHAPE_ZYX
    got = la.cutout(x=(0, x), y=(0, y), z=(0, z))
    lost = []
    for p in (0, 1):
        for r in range(REPS):
            x0, y0, z0 = box(p, r)
            if not (got[z0:z0 + BLOCK_ZYX[0], y0:y0 + BLOCK_ZYX[1], x0:x0 + BLOCK_ZYX[2]] == value(p, r)).all():
                lost.append((p, r))
    assert not lost, f"writes lost (writer, repetition): {lost}"
    np.testing.assert_array_equal(got, want)  # and nothing else changed
    # the pyramid followed every write: each coarser mip is the downsampled finer one
    assert not la.pending_updates()
    finer = got
    for m in la.spec.mips[1:]:
        sx, sy, sz = m.size_xyz
        coarse = la.cutout(x=(0, sx), y=(0, sy), z=(0, sz), mip=m.mip)
        np.testing.assert_array_equal(coarse, downsample(finer, m.step_xyz[::-1], "image"), err_msg=f"mip {m.mip}")
        finer = coarse
    other.close()


def test_a_writer_that_waits_past_the_lock_timeout_gets_a_conflict_and_writes_nothing(s3_layer, monkeypatch):
    from neurolake import open_lake

    url, lake, vol = s3_layer
    ctx = mp.get_context("spawn")
    holding, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(url, holding, done))
    holder.start()
    try:
        assert holding.wait(120), "the holder process did not get the write lock"
        la = lake.layer("ds", "em")
        before = la.generation()
        locks = lake.locks
        monkeypatch.setattr(locks, "hold", functools.partial(type(locks).hold, locks, timeout_s=1.0))
        with pytest.raises(Conflict) as err:
            la.write(np.full((4, 8, 8), 255, np.uint8), x0=10, y0=10, z0=2)
        assert err.value.http_status == 409 and err.value.detail.get("retryable") is True
        assert "being written" in str(err.value) and "retry" in str(err.value)
        # nothing was written or marked: voxels, pending entries and the change token are as before
        assert la.generation() == before and not la.pending_updates()
        fresh = open_lake(url)
        np.testing.assert_array_equal(fresh.layer("ds", "em").cutout(x=(0, 1024), y=(0, 1024), z=(0, 16)), vol)
        fresh.close()
    finally:
        done.set()
        holder.join(60)
    assert holder.exitcode == 0
    # once the lock is free the same write lands
    la = lake.layer("ds", "em")
    la.write(np.full((4, 8, 8), 255, np.uint8), x0=10, y0=10, z0=2)
    assert (la.cutout(x=(10, 18), y=(10, 18), z=(2, 6)) == 255).all()


def _hold_write_lock(url: str, holding, done) -> None:
    """Another process in the middle of a write: holds the layer's write lock until ``done``."""
    from neurolake import open_lake

    lake = open_lake(url)
    la = lake.layer("ds", "em")
    with la._writing():  # the lock Layer.write holds while it reads, modifies and writes shards
        holding.set()
        done.wait(120)
    lake.close()


def test_threads_of_one_process_take_turns_too(s3_layer):
    """A server process writes from many threads through one Layer object: the same lock serialises them."""
    url, lake, vol = s3_layer
    la = lake.layer("ds", "em")
    barrier = threading.Barrier(4)
    failures = []

    def write(p: int) -> None:
        try:
            barrier.wait(60)
            la.write(np.full((8, 16, 32), 200 + p, np.uint8), x0=32 * p, y0=200, z0=4)
        except Exception as exc:  # noqa: BLE001 — reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    from neurolake import open_lake

    fresh = open_lake(url)
    got = fresh.layer("ds", "em").cutout(x=(0, 128), y=(200, 216), z=(4, 12))
    for p in range(4):
        assert (got[:, :, 32 * p:32 * (p + 1)] == 200 + p).all(), p
    fresh.close()
