"""Feature tables in an S3-compatible object store (moto server): registration, crawl, S3 presigned
URLs read by DuckDB and Polars, through a real server process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import duckdb
import duckdb_ext
import httpx
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

BUCKET = "features-bucket"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(feature_files):
    import subprocess
    import sys
    import time

    import boto3

    # a separate process: delta-rs (object_store) blocks while holding the GIL, which would stall an
    # in-process ThreadedMotoServer
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            break
        except httpx.HTTPError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for name, key in (("cell_types", "lab/cell_types.parquet"), ("synapse_counts", "lab/synapse_counts"),
                      ("synapse_counts_lance", "lab/synapse_counts.lance"), ("roi_counts", "lab/roi_counts")):
        src = Path(feature_files[name])
        files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        for f in files:
            rel = key if src.is_file() else f"{key}/{f.relative_to(src).as_posix()}"
            client.upload_file(str(f), BUCKET, rel)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(10)


def test_registry_s3_register_crawl_and_presigned_reads(s3, reg_lake, feature_files):
    from neurolake.catalog import FeatureRegistry, crawl

    reg = FeatureRegistry(reg_lake)
    e = reg.register(name="cell_types", datastack="hemibrain", location=f"s3://{BUCKET}/lab/cell_types.parquet/")
    assert (e["format"], e["row_count"], e["location"]) == ("parquet", 25397, f"s3://{BUCKET}/lab/cell_types.parquet")
    local_fp = reg.register(name="cell_types_local", datastack="hemibrain",
                            location=str(feature_files["cell_types"]))["fingerprint"]
    assert e["fingerprint"] == local_fp  # same bytes, same file name: same content fingerprint
    assert e["fingerprint"]["kind"] == "parquet_sha256"
    d = reg.register(name="synapse_counts", datastack="hemibrain", location=f"s3://{BUCKET}/lab/synapse_counts",
                     format="delta")
    assert (d["format"], d["row_count"], d["partition_columns"]) == ("delta", 25397, ["side"])
    ln = reg.register(name="counts_lance", datastack="hemibrain", location=f"s3://{BUCKET}/lab/synapse_counts.lance")
    assert (ln["format"], ln["row_count"]) == ("lance", 25397)
    with pytest.raises(Exception) as ei:
        reg.register(name="nothing", datastack="hemibrain", location=f"s3://{BUCKET}/lab/nothing_here")
    assert ei.value.code == "not_found"
    # crawler over the S3 prefix: only the table not yet registered is new
    res = crawl(reg_lake, f"s3://{BUCKET}/lab", "hemibrain")
    assert [(r["name"], r["format"], r["partition_columns"]) for r in res["registered"]] == \
        [("roi_counts", "parquet", ["type"])]
    assert len(res["skipped"]) == 3
    # S3 presigned URLs, read by DuckDB and Polars without any S3 configuration
    g = reg.signed_urls("synapse_counts", expires_in_s=300)
    assert g["scheme"] == "s3-presigned-sigv4" and g["prefix_url"] is None
    assert all("X-Amz-Signature=" in u and "X-Amz-Expires=300" in u for u in g["urls"])
    truth = DeltaTable(str(feature_files["synapse_counts"])).to_pyarrow_table()
    con = duckdb_ext.init(duckdb.connect())
    n, pre = con.execute("select count(*), sum(pre) from read_parquet($1)", [g["urls"]]).fetchone()
    assert (n, pre) == (truth.num_rows, pc.sum(truth.column("pre")).as_py())
    g = reg.signed_urls("cell_types", expires_in_s=300)
    df = pl.read_parquet(g["urls"][0])
    assert df.shape == (25397, 6)
    assert df["bodyId"].sum() == pq.read_table(feature_files["cell_types"]).column("bodyId").to_numpy().sum()


def test_registry_s3_through_server(s3, serve_lake, tmp_path, feature_files):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("hemibrain", (8, 8, 8), public=False)
    acc = lake.access
    acc.add_user("ed")
    acc.grant("ed", "hemibrain", "editor")
    tok = acc.create_token("ed")["token"]
    lake.close()
    base = serve_lake(tmp_path / "lake", "--auth", env=s3)
    h = {"Authorization": f"Bearer {tok}"}
    r = httpx.post(base + "/api/v1/features", headers=h, json={
        "name": "synapse_counts", "datastack": "hemibrain", "location": f"s3://{BUCKET}/lab/synapse_counts"})
    assert r.status_code == 201, r.text
    g = httpx.post(base + "/api/v1/features/synapse_counts/signed-urls", headers=h, json={"expires_in_s": 120}).json()
    assert g["scheme"] == "s3-presigned-sigv4" and len(g["urls"]) == 6
    con = duckdb_ext.init(duckdb.connect())
    # presigned URLs hide the Hive folders from the readers: the grant lists each file's partition values
    got: dict[str, int] = {}
    for f in g["files"]:
        n = con.execute("select count(*) from read_parquet($1)", [f["url"]]).fetchone()[0]
        got[f["partition"]["side"]] = got.get(f["partition"]["side"], 0) + n
    truth = DeltaTable(str(feature_files["synapse_counts"])).to_pyarrow_table()
    want = {r["side"]: r["side_count"] for r in truth.group_by("side").aggregate([("side", "count")]).to_pylist()}
    assert got == want
    lazy = pl.scan_parquet(g["urls"]).select(pl.len()).collect().item()
    assert lazy == truth.num_rows
