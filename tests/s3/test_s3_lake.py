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
