"""One storage configuration rendered for every library that touches bytes, each checked against a real
S3-compatible server (moto): tensorstore, delta-rs, s3fs (fsspec), DuckDB httpfs, boto3 and pyarrow."""

from __future__ import annotations

import duckdb
import duckdb_ext
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorstore as ts
from deltalake import DeltaTable, write_deltalake

from neurolake.errors import InvalidArgument
from neurolake.storage.config import StorageConfig, is_s3, split_s3, storage_config

BUCKET = "storage-config"


@pytest.fixture(scope="module")
def st(s3_endpoint) -> StorageConfig:
    cfg = storage_config()
    cfg.boto3_client().create_bucket(Bucket=BUCKET)
    return cfg


def test_from_env_reads_the_standard_aws_variables():
    cfg = StorageConfig.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1",
                                  "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                                  "NEUROLAKE_S3_CONCURRENCY": "8"})
    assert (cfg.endpoint_url, cfg.region, cfg.access_key_id, cfg.concurrency) == ("http://127.0.0.1:9000",
                                                                                  "eu-west-1", "k", 8)
    assert cfg.plain_http
    assert StorageConfig.from_env({"AWS_ENDPOINT_URL_S3": "https://s3.x", "AWS_ENDPOINT_URL": "http://y"}
                                  ).endpoint_url == "https://s3.x"
    with pytest.raises(ValueError, match="NEUROLAKE_S3_CONCURRENCY"):
        StorageConfig.from_env({"NEUROLAKE_S3_CONCURRENCY": "many"})
    # a local path renders to the file driver and no options
    assert cfg.kvstore("/data/lake/x") == {"driver": "file", "path": "/data/lake/x/"}
    assert cfg.delta_options("/data/lake/t") == {}


def test_bad_urls_get_clear_errors():
    assert is_s3("s3://bucket/key") and not is_s3("/tmp/x") and not is_s3("file:///tmp/x")
    for bad in ("s3:///key", "s3://ab/key", "http://bucket/key"):
        with pytest.raises(InvalidArgument):
            split_s3(bad)


def test_tensorstore_reads_what_it_wrote(st):
    spec = {"driver": "zarr3", "kvstore": st.kvstore(f"s3://{BUCKET}/arrays/a"),
            "metadata": {"shape": [64, 64], "data_type": "uint16",
                         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [32, 32]}}},
            "create": True, "delete_existing": True}
    ctx = ts.Context(st.tensorstore_context())
    arr = ts.open(spec, context=ctx).result()
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    arr.write(data).result()
    again = ts.open({k: v for k, v in spec.items() if k not in ("metadata", "create", "delete_existing")},
                    context=ctx).result()
    np.testing.assert_array_equal(again.read().result(), data)
    # the chunk objects are where the spec says, seen by boto3
    keys = {o["Key"] for o in st.boto3_client().list_objects_v2(Bucket=BUCKET, Prefix="arrays/a/")["Contents"]}
    assert "arrays/a/zarr.json" in keys and len(keys) == 5


def test_delta_rs_duckdb_pyarrow_and_s3fs_read_one_table(st):
    table = pa.table({"id": pa.array(range(1000), pa.int64()), "x": pa.array(np.linspace(0, 1, 1000))})
    url = f"s3://{BUCKET}/tables/t"
    write_deltalake(url, table, storage_options=st.delta_options(url))
    write_deltalake(url, table.slice(0, 10), mode="append", storage_options=st.delta_options(url))
    dt = DeltaTable(url, storage_options=st.delta_options(url))
    assert dt.version() == 1 and dt.to_pyarrow_table().num_rows == 1010
    con = duckdb_ext.init(duckdb.connect())
    con.execute(st.duckdb_secret())
    assert con.execute(f"SELECT count(*), sum(id) FROM delta_scan('{url}')").fetchone() == (1010, 499500 + 45)
    fs, path = st.pyarrow_fs(url)
    files = list(dt.file_uris())
    assert pq.read_table(files[0].split("://", 1)[1], filesystem=fs).num_columns == 2
    p = st.path(url)
    assert (p / "_delta_log" / "00000000000000000001.json").exists()
    assert sorted(x.rsplit("/", 1)[-1] for x in p.fs.ls(f"{p.path}/_delta_log", detail=False))[:2] == [
        "00000000000000000000.json", "00000000000000000001.json"]


def test_boto3_presigned_url_is_readable_over_http(st):
    client = st.boto3_client()
    client.put_object(Bucket=BUCKET, Key="signed/hello.txt", Body=b"hello lake")
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "signed/hello.txt"},
                                        ExpiresIn=60)
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"hello lake"
