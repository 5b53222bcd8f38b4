"""`neurolake estimate` of a lake on S3 (a moto server process, catalog on PostgreSQL): the same content —
the Gerhard ssTEM stack ingested as a volume and the navis DA1 synapse sites as an annotation table — in a local
lake and in an S3 lake gives the same files, bytes and uncompressed bytes per category; the S3 walk lists the
prefix once (sizes from the listing, no HEAD per object) and reads only metadata and Parquet footers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from neurolake import estimate as est
from neurolake import init_lake
from neurolake.annotations import create_table
from neurolake.errors import NotFound
from neurolake.storage.config import split_s3, storage_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "annotations"))
from annotations_data import SITE_PROPS, navis_sites  # noqa: E402

from tests.conftest import DATA  # noqa: E402

COMPARED = ("volumes", "annotation tables")


def _fill(lake) -> None:
    lake.ingest(str(DATA / "gerhard2013" / "raw"), "gerhard", "em", voxel_size=(4.6, 4.6, 45), scheduler="threads")
    lake.create_datastack("hemibrain", (8, 8, 8), description="Janelia hemibrain")
    sites = create_table(lake, "hemibrain", "da1_sites", "point", properties=SITE_PROPS)
    sites.append(navis_sites())


@pytest.fixture(scope="module")
def lakes(_s3_lake_factory, tmp_path_factory):
    """(s3 url, local lake folder) holding the same volume and annotation table."""
    url, db = _s3_lake_factory()
    local = tmp_path_factory.mktemp("s3estimate") / "lake"
    for where, kw in ((url, {"database_url": db}), (local, {})):
        lake = init_lake(where, **kw)
        try:
            _fill(lake)
        finally:
            lake.close()
    return url, local


def _objects(url: str) -> dict[str, int]:
    """key (relative to the lake prefix) → size of every object under the lake's prefix, via boto3."""
    bucket, prefix = split_s3(url)
    pages = storage_config().boto3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                                        Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:]: o["Size"] for p in pages for o in p.get("Contents", [])}


def _local_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_s3_usage_equals_the_local_lakes(lakes):
    url, local = lakes
    s3, loc = est.lake_usage(url), est.lake_usage(local)
    assert s3.root == url and loc.root == str(local)
    a, b = ({c.category: c for c in u.categories} for u in (s3, loc))
    objs, files = _objects(url), _local_files(local)
    # every object under the prefix is in exactly one category, with its listed size
    assert s3.total_bytes == sum(objs.values()) and sum(c.files for c in s3.categories) == len(objs)
    assert loc.total_bytes == sum(files.values())
    # volumes: the same Zarr objects, byte for byte the same sizes, hence the same figures
    vol = "datastacks/gerhard/volumes/"
    assert {k: v for k, v in objs.items() if k.startswith(vol)} == {k: v for k, v in files.items() if k.startswith(vol)}
    assert (a["volumes"].files, a["volumes"].bytes, a["volumes"].uncompressed_bytes) \
        == (b["volumes"].files, b["volumes"].bytes, b["volumes"].uncompressed_bytes)
    assert a["volumes"].by_datastack == b["volumes"].by_datastack == {"gerhard": a["volumes"].bytes}
    assert a["volumes"].uncompressed_bytes > 20 * 1024 * 1024  # the 20 x 1024 x 1024 uint8 stack at mip 0 alone
    # annotation tables: the same Parquet files (names hold a random uuid) of the same sizes; the Delta log
    # commits differ by a few bytes (they record the table's location, file:///tmp/... vs s3://..., and the
    # write's execution_time_ms), and are counted as stored, so the Parquet part of each figure is compared
    tab = "datastacks/hemibrain/tables/da1_sites/"
    t3, tl = ({k: v for k, v in d.items() if k.startswith(tab)} for d in (objs, files))
    pq3, pql = (sorted(v for k, v in t.items() if k.endswith(".parquet")) for t in (t3, tl))
    assert pq3 == pql and len(pq3) >= 1
    logs = sorted(k for k in t3 if "/_delta_log/" in k)
    assert logs == sorted(k for k in tl if "/_delta_log/" in k) and len(t3) == len(pq3) + len(logs)
    log3, logl = sum(t3[k] for k in logs), sum(tl[k] for k in logs)
    ta, tb = a["annotation tables"], b["annotation tables"]
    assert ta.files == tb.files == len(t3) and ta.by_datastack == {"hemibrain": ta.bytes}
    assert ta.bytes - log3 == tb.bytes - logl == sum(pq3)
    assert ta.uncompressed_bytes - log3 == tb.uncompressed_bytes - logl > sum(pq3)  # column data from the footers
    # the catalog: a local SQLite file is counted; on S3 only marker files are stored, the database is on
    # PostgreSQL, its size reported apart (a note), not priced
    assert loc.catalog_database_bytes is None and b["catalog"].bytes >= (local / "catalog.sqlite").stat().st_size
    assert s3.catalog_database_bytes > 0 and "catalog.sqlite" not in objs
    assert a["catalog"].files == sum(1 for k in objs if "/" not in k and (k == "lake.json" or k.startswith("catalog.")))
    assert any("PostgreSQL" in n and f"{s3.catalog_database_bytes:,} bytes" in n for n in s3.notes)


def test_s3_walk_lists_once_and_reads_only_metadata_and_footers(lakes, monkeypatch):
    import s3fs

    url, _ = lakes
    calls: list[tuple[str, dict]] = []
    real = s3fs.S3FileSystem._call_s3

    async def spy(self, method, *args, **kwargs):
        calls.append((getattr(method, "__name__", str(method)), kwargs))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spy)
    est.lake_usage(url)
    methods = [m for m, _ in calls]
    objs = _objects(url)
    assert "head_object" not in methods, [(m, kw.get("Key")) for m, kw in calls][:12]
    assert methods.count("list_objects_v2") == -(-len(objs) // 1000)  # one LIST per 1,000 keys
    gets = [kw for m, kw in calls if m == "get_object"]
    meta = [k for k in objs if k.endswith("zarr.json") and "/volumes/" in k]
    parquet = [k for k in objs if k.endswith(".parquet")]
    keys = {kw["Key"].split("/", 1)[1] for kw in gets}
    assert keys == {"lake.json", *meta, *parquet}  # no shard, no Delta log, no other object is read
    fetched = sum(int(r[1]) - int(r[0]) + 1 for kw in gets if kw["Key"].endswith(".parquet")
                  for r in [kw["Range"].split("=")[1].split("-")])
    assert all("Range" in kw for kw in gets if kw["Key"].endswith(".parquet"))
    assert fetched <= sum(min(objs[k], 64 * 1024 + 8) for k in parquet)  # the tail of each file at most


def test_cli_estimate_of_an_s3_lake(lakes):
    url, _ = lakes
    usage = est.lake_usage(url)
    cmd = [sys.executable, "-m", "neurolake.cli", "estimate", "--lake", url]
    p = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["mode"] == "lake" and d["lake"]["root"] == url
    got = {c["category"]: c for c in d["lake"]["categories"]}
    for c in usage.categories:
        if c.category in COMPARED:
            assert (got[c.category]["files"], got[c.category]["bytes"], got[c.category]["uncompressed_bytes"]) \
                == (c.files, c.bytes, c.uncompressed_bytes)
    assert d["lake"]["total_bytes"] == usage.total_bytes and d["storage_gb"] == pytest.approx(usage.total_bytes / 1e9)
    assert d["lake"]["catalog_database_bytes"] > 0
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for s in (f"lake {url}", "volumes", "annotation tables", "uncompressed", "total per month", "pg_database_size"):
        assert s in p.stdout, s
    vol = next(c for c in usage.categories if c.category == "volumes")
    row = rf"^\W*volumes\W+{vol.files:,}\W+{re.escape(est._gb_text(Decimal(vol.bytes) / est.GB))}\W+" \
          rf"{re.escape(est._gb_text(Decimal(vol.uncompressed_bytes) / est.GB))}\W"
    assert re.search(row, p.stdout, re.M), p.stdout


def test_not_found_errors(new_s3_lake, tmp_path):
    url, _ = new_s3_lake()
    bucket = url[len("s3://"):].split("/")[0]
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' of lake .* does not exist"):
        est.lake_usage("s3://no-such-bucket-here/lake")
    for where in (f"s3://{bucket}", f"s3://{bucket}/other", f"{url}/datastacks"):
        with pytest.raises(NotFound, match="is not a lake \\(no lake.json under that prefix\\)"):
            est.lake_usage(where)
    with pytest.raises(NotFound, match="not a lake folder"):  # the local rule, unchanged
        est.lake_usage(tmp_path)
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "estimate", "--lake", f"s3://{bucket}/other"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "not_found" in p.stderr and "no lake.json" in p.stderr, p.stderr


def test_raw_sources_of_ephys_files_tables_on_s3(new_s3_lake):
    """The ephys ``files`` Delta tables under the prefix are read through delta-rs with the storage options:
    their ``bytes`` are the raw source files (a file listed in two datastacks counted once)."""
    import hashlib

    import pandas as pd
    from deltalake import write_deltalake

    url, _ = new_s3_lake()
    abf = sorted((DATA / "ephys" / "abf").glob("*.abf"))[:3]
    rows = [{"file_sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "name": f.name, "bytes": f.stat().st_size}
            for f in abf]
    for ds, part in (("gerhard", rows[:2]), ("hemibrain", rows[1:])):  # rows[1] in both
        uri = f"{url}/datastacks/{ds}/ephys/files"
        write_deltalake(uri, pd.DataFrame(part), storage_options=storage_config().delta_options(uri))
    u = est.lake_usage(url)
    raw = u.raw_sources
    assert raw.files == 3 and raw.bytes == sum(f.stat().st_size for f in abf)
    assert raw.by_datastack == {"gerhard": rows[0]["bytes"] + rows[1]["bytes"], "hemibrain": rows[2]["bytes"]}
    tables = next(c for c in u.categories if c.category == "ephys tables")
    objs = _objects(url)
    assert tables.bytes == sum(v for k, v in objs.items() if "/ephys/files/" in k) and tables.files == 4
    assert tables.uncompressed_bytes > 0 and [n for n in u.notes if "PostgreSQL" not in n] == []
