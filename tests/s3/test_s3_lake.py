"""A lake on S3-compatible object storage (moto server) with its catalog on PostgreSQL: the volume core."""

from __future__ import annotations

import numpy as np
import pytest

from neurolake import init_lake, open_lake
from neurolake.errors import InvalidArgument, NotFound


def test_init_needs_postgres_and_an_existing_bucket(s3_endpoint, postgres_url, monkeypatch):
    monkeypatch.delenv("NEUROLAKE_DATABASE_URL", raising=False)
    with pytest.raises(InvalidArgument, match="PostgreSQL"):
        init_lake("s3://some-bucket/lake")
    with pytest.raises(InvalidArgument, match="PostgreSQL"):
        init_lake("s3://some-bucket/lake", database_url="sqlite:///x.db")
    with pytest.raises(NotFound, match="bucket"):
        init_lake("s3://no-such-bucket-here/lake", database_url=postgres_url)
    with pytest.raises(NotFound, match="no lake"):
        open_lake("s3://no-such-bucket-here/lake")


def test_ingest_cutout_write_and_reopen(new_s3_lake, gerhard_source, tmp_path):
    url, _db = new_s3_lake()
    lake = open_lake(url)
    assert lake.remote and lake.url == url
    la = lake.ingest(str(tmp_path.parent.parent / "x") if False else _stack_dir(), "gerhard", "em",
                     voxel_size=(4.6, 4.6, 45), scheduler="threads")
    assert la.status == "ready" and la.size(0) == (1024, 1024, 20)
    np.testing.assert_array_equal(la.cutout(x=(0, 1024), y=(0, 1024), z=(0, 20)), gerhard_source)
    mip1 = la.cutout(x=(0, 512), y=(0, 512), z=(0, 20), mip=1)
    assert mip1.shape == (20, 512, 512)
    # the same objects exist under the prefix: zarr.json and shard objects of mip 0
    keys = [o["Key"] for o in _s3().list_objects_v2(Bucket=url[5:].split("/")[0])["Contents"]]
    assert any(k.endswith("volumes/em/zarr.json") for k in keys)
    # a write lands, updates the pyramid and is seen by another Lake object (another process's view)
    block = np.full((4, 64, 64), 7, np.uint8)
    la.write(block, x0=100, y0=200, z0=3)
    other = open_lake(url)
    got = other.layer("gerhard", "em")
    np.testing.assert_array_equal(got.cutout(x=(100, 164), y=(200, 264), z=(3, 7)), block)
    assert (got.cutout(x=(50, 82), y=(100, 132), z=(3, 7), mip=1) == 7).all()
    assert not got.pending_updates()
    other.close()
    lake.close()


def _stack_dir() -> str:
    from tests.conftest import DATA

    return str(DATA / "gerhard2013" / "raw")


def _s3():
    from neurolake.storage.config import storage_config

    return storage_config().boto3_client()


def test_failed_write_is_repaired_by_the_next_coarse_read_and_overwrite_conflicts_old_readers(
        new_s3_lake, gerhard_source):
    from neurolake.errors import Conflict

    url, _db = new_s3_lake()
    lake = open_lake(url)
    la = lake.ingest(_stack_dir(), "gerhard", "em", voxel_size=(4.6, 4.6, 45), scheduler="threads",
                     shard=(4, 256, 256), chunk=(4, 64, 64))
    calls = {"n": 0}
    real = type(la)._update_pyramid

    def fail_once(self, mip, region):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("connection reset (injected)")
        return real(self, mip, region)

    type(la)._update_pyramid = fail_once
    try:
        with pytest.raises(OSError, match="injected"):
            la.write(np.full((4, 64, 64), 9, np.uint8), x0=0, y0=0, z0=0)
        # mip 0 landed, the pyramid did not: the layer's token stays pending and the entry is kept
        assert la.generation().startswith("p") and len(la.pending_updates()) == 1
        other = open_lake(url).layer("gerhard", "em", finish_pending=False)
        assert (other.cutout(x=(0, 32), y=(0, 32), z=(0, 4), mip=1) == 9).all()  # repaired before the read
        assert not other.pending_updates() and not other.generation().startswith("p")
    finally:
        type(la)._update_pyramid = real
    # an overwrite swaps the layer; a reader holding the old object gets a Conflict, not stale bytes
    old = lake.layer("gerhard", "em")
    lake.ingest(_stack_dir(), "gerhard", "em", voxel_size=(4.6, 4.6, 45), scheduler="threads", overwrite=True)
    with pytest.raises(Conflict, match="replaced or deleted"):
        old.cutout(x=(0, 8), y=(0, 8), z=(0, 1))
    np.testing.assert_array_equal(lake.layer("gerhard", "em").cutout(x=(0, 64), y=(0, 64), z=(0, 4)),
                                  gerhard_source[:4, :64, :64])
    lake.close()


def test_signing_key_of_an_s3_lake_stays_off_the_bucket(new_s3_lake, tmp_path, monkeypatch):
    """Anyone who can read the bucket could forge signed URLs with a key stored there: it is a file of the
    machine (mode 0600), and its id in the catalog makes a second machine without it refuse to sign."""
    import stat

    from neurolake.storage.signing import _load_key, key_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NEUROLAKE_SIGNING_KEY", raising=False)
    url, _db = new_s3_lake()
    lake = open_lake(url)
    key = _load_key(lake)
    path = key_path(lake)
    assert path.is_file() and str(path).startswith(str(tmp_path / "config"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and bytes.fromhex(path.read_text().strip()) == key
    assert not (lake.root / "signing.key").exists()
    assert _load_key(open_lake(url)) == key  # the same machine: the same key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-machine"))
    from neurolake.errors import Conflict

    with pytest.raises(Conflict, match="signing key"):
        _load_key(open_lake(url))
    lake.close()


def test_a_writer_kept_waiting_gets_a_retryable_409_over_http(new_s3_lake, serve_lake):
    """NEUROLAKE_WRITE_LOCK_TIMEOUT_S bounds how long a server's write waits for another writer of the layer
    (here: the test holding the layer's lock); the client gets 409 marked retryable and nothing is written."""
    import blosc
    import httpx

    url, _db = new_s3_lake()
    lake = open_lake(url)
    la = lake.ingest(_stack_dir(), "gerhard", "em", voxel_size=(4.6, 4.6, 45), scheduler="threads")
    before = la.cutout(x=(100, 164), y=(40, 72), z=(2, 3))
    base = serve_lake(url, env={"NEUROLAKE_WRITE_LOCK_TIMEOUT_S": "1"})
    body = blosc.compress(bytes([9]) * 64 * 32, typesize=1)
    with lake.locks.hold(f"layer-write:{la.root}"):
        r = httpx.post(f"{base}/ocp/ca/gerhard/em/blosc/0/100,164/40,72/2,3/", content=body, timeout=60)
        assert r.status_code == 409, r.text
        assert r.json().get("retryable") is True or "retry" in r.text
    np.testing.assert_array_equal(lake.layer("gerhard", "em").cutout(x=(100, 164), y=(40, 72), z=(2, 3)), before)
    r = httpx.post(f"{base}/ocp/ca/gerhard/em/blosc/0/100,164/40,72/2,3/", content=body, timeout=60)
    assert r.status_code == 201
    assert (lake.layer("gerhard", "em").cutout(x=(100, 164), y=(40, 72), z=(2, 3)) == 9).all()
    lake.close()


def test_a_warm_reader_checks_the_token_once_and_still_sees_every_landed_write(new_s3_lake, tmp_path):
    """Once a Layer's array is open, a cutout on an S3 lake reads first and checks the change token once after
    (not once before and once after). A write landed by another Lake object (another process's view) between two
    warm reads, a write left pending by a failure, and a mip-1 read of it must all still be seen."""
    import asyncio

    url, _db = new_s3_lake()
    vol = np.arange(8 * 128 * 128, dtype=np.uint32).reshape(8, 128, 128) % 251
    np.save(tmp_path / "v.npy", vol.astype(np.uint8))
    lake = open_lake(url)
    lake.create_datastack("ds", (4, 4, 40))
    reader = lake.ingest(str(tmp_path / "v.npy"), "ds", "em", voxel_size=(4, 4, 40), scheduler="threads",
                         shard=(8, 128, 128), chunk=(4, 32, 32))
    box = dict(x=(0, 64), y=(0, 64), z=(0, 4))
    reader.cutout(**box)
    reader.cutout(**box, mip=1)
    reads = []
    real_get = type(lake.tokens).get

    def counting_get(self, name):
        reads.append(name)
        return real_get(self, name)

    type(lake.tokens).get = counting_get
    try:
        np.testing.assert_array_equal(reader.cutout(**box), vol[:4, :64, :64].astype(np.uint8))
        assert len(reads) == 1  # warm: one token read
        writer_lake = open_lake(url)
        writer = writer_lake.layer("ds", "em")
        writer.write(np.full((4, 64, 64), 200, np.uint8), x0=0, y0=0, z0=0)
        reads.clear()
        assert (reader.cutout(**box) == 200).all()  # the token moved: the arrays were reopened and read again
        assert (asyncio.run(reader.cutout_async(x=(0, 32), y=(0, 32), z=(0, 4), mip=1)) == 200).all()
        # a write whose pyramid update fails leaves the token pending: the warm reader repairs before reading mip 1
        real_update = type(writer)._update_pyramid

        def fail(self, mip, region):
            raise OSError("connection reset (injected)")

        type(writer)._update_pyramid = fail
        try:
            with pytest.raises(OSError, match="injected"):
                writer.write(np.full((4, 64, 64), 17, np.uint8), x0=0, y0=0, z0=0)
        finally:
            type(writer)._update_pyramid = real_update
        assert (reader.cutout(x=(0, 32), y=(0, 32), z=(0, 4), mip=1) == 17).all()
        assert not reader.pending_updates()
        reader.cutout(**box)  # opens mip 0 again (the arrays were dropped when the token moved)
        reads.clear()
        assert (reader.cutout(**box) == 17).all()
        assert (asyncio.run(reader.cutout_async(**box)) == 17).all()
        assert len(reads) == 2  # warm again: one token read per cutout
        writer_lake.close()
    finally:
        type(lake.tokens).get = real_get
    lake.close()
