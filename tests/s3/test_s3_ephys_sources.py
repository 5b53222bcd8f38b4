"""Ephys recordings read from ``s3://`` sources (moto server process, real shipped recordings).

The same recordings — ABF files, the NWB file, an Axion spike list with its plate log, a retinal-wave HDF5 file,
plus a hidden file and a README that are not recordings — are ingested from a local folder and from a bucket
prefix holding the same objects: every ephys table is equal but for the path column, which holds the
``s3://`` URL of each object; the SHA-256 is that of the bytes; a second ingest skips every object; objects
are downloaded one at a time and the spill folder is removed. Missing bucket, key or an empty prefix raise
NotFound and missing credentials PermissionDenied, before anything is written. The CLI command and the
Python API take the URL; on a real Dask cluster each task downloads its own object and the tables are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pytest

from neurolake import init_lake, open_lake
from neurolake.ephys import etl, sources, tables
from neurolake.errors import NotFound, PermissionDenied, Unsupported
from neurolake.jobs.records import list_jobs
from neurolake.storage.config import storage_config
from tests.conftest import DATA

EPHYS = DATA / "ephys"
DS = "lab"
# a small run: current-clamp steps (spikes, cell features), a ramp, a voltage-clamp file, a two-channel ABF1, the
# NWB file, the Axion spike list with its plate log, a retinal-wave HDF5; laid out in sub-folders
RUN = {
    "abf/17o05028_ic_steps.abf": EPHYS / "abf" / "17o05028_ic_steps.abf",
    "abf/17o05027_ic_ramp.abf": EPHYS / "abf" / "17o05027_ic_ramp.abf",
    "abf/171116sh_0014.abf": EPHYS / "abf" / "171116sh_0014.abf",
    "abf/day2/multichannelAbf1WithTags.abf": EPHYS / "abf" / "multichannelAbf1WithTags.abf",
    "nwb/99111002.nwb": EPHYS / "nwb" / "99111002.nwb",
    "mea/exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz":
        EPHYS / "mea_axion" / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz",
    "mea/exampleRecording_1012016_plate1_expLog.csv.gz":
        EPHYS / "mea_axion" / "exampleRecording_1012016_plate1_expLog.csv.gz",
    "mea/Demas2003_P15_DR_HL1_1A.h5": EPHYS / "mea_retinal_waves" / "Demas2003_P15_DR_HL1_1A.h5",
}
OTHER = {"README.txt": b"run 42, rig 2\n", "abf/.DS_Store": b"\x00\x00\x00\x01Bud1",
         "abf/._17o05028_ic_steps.abf": b"AppleDouble"}  # ignored / hidden, as in a local folder
VARYING = {"ingested_at", "at"}  # when the rows were written


def _dump(lake, drop=("path",)) -> dict[str, pd.DataFrame]:
    out = {}
    for t in tables.TABLES:
        df = tables.read(lake, DS, t).to_pandas()
        df = df.drop(columns=[c for c in df.columns if c in VARYING or c in drop])
        keys = [c for c in ("file_sha256", "name", "cell", "sweep", "channel", "well", "electrode", "time_s",
                            "feature", "spike", "stimulus_class", "message") if c in df.columns]
        out[t] = df.astype(str).sort_values(keys + [c for c in df.columns if c not in keys]).reset_index(drop=True)
    return out


def _folder(root: Path) -> Path:
    for rel, src in RUN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    for rel, data in OTHER.items():
        (root / rel).write_bytes(data)
    return root


def _bucket(prefix: str = "run42") -> tuple[str, str]:
    """A new bucket holding the run under ``prefix/`` (and a folder marker): ``(bucket, s3://bucket/prefix/)``."""
    s3 = storage_config().boto3_client()
    bucket = f"rec-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    for rel, src in RUN.items():
        s3.upload_file(str(src), bucket, f"{prefix}/{rel}")
    for rel, data in OTHER.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/empty-folder/", Body=b"")
    return bucket, f"s3://{bucket}/{prefix}/"


@pytest.fixture
def spill(tmp_path, monkeypatch) -> Path:
    """The temporary folder of this test (the spill folders of the downloads go there)."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_s3_prefix_equals_local_folder(s3_endpoint, tmp_path, spill, monkeypatch):
    bucket, url = _bucket()
    folder = _folder(tmp_path / "run42")
    held = []  # objects present in the spill folder after each download
    fetch = sources.Spool.fetch

    def counting(self, obj):
        sha = fetch(self, obj)
        held.append(len([p for p in spill.rglob("*") if p.is_file() and p.parent.name == "obj"]))
        return sha

    monkeypatch.setattr(sources.Spool, "fetch", counting)
    a, b = init_lake(tmp_path / "a"), init_lake(tmp_path / "b")
    try:
        ra = etl.ingest(a, DS, folder, lab="x", conditions={"rig": "2"})
        assert held == []  # a local folder downloads nothing
        rb = etl.ingest(b, DS, url, lab="x", conditions={"rig": "2"})
        assert len(ra.loaded) == len(RUN) and ra.errors == [] and rb.errors == []
        urls = sorted(f"s3://{bucket}/run42/{rel}" for rel in RUN)
        assert sorted(e["path"] for e in rb.loaded) == urls
        assert [(Path(e["path"]).relative_to(folder.resolve()).as_posix(), e["file_sha256"], e["format"], e.get("rows"))
                for e in sorted(ra.loaded, key=lambda e: e["path"])] == \
               [(e["path"].split("/run42/", 1)[1], e["file_sha256"], e["format"], e.get("rows"))
                for e in sorted(rb.loaded, key=lambda e: e["path"])]
        assert rb.ignored == [f"s3://{bucket}/run42/README.txt"]  # hidden objects are not even listed
        assert held and max(held) == 1 and len(held) == len(RUN)  # one object at a time, each downloaded once
        assert list(spill.iterdir()) == []  # the spill folder is gone
        da, db = _dump(a), _dump(b)
        for t in tables.TABLES:
            pd.testing.assert_frame_equal(da[t], db[t], obj=t)
        assert len(db["sweeps"]) > 50 and len(db["spikes"]) > 50 and len(db["mea_spikes"]) > 1000
        assert len(db["cell_features"]) > 0 and len(db["mea_wells"]) > 0
        files = tables.read(b, DS, "files").to_pandas()
        assert sorted(files["path"]) == urls
        for _, r in files.iterrows():  # the SHA-256 and size of the object's bytes, its own name
            data = RUN[r["path"].split("/run42/", 1)[1]].read_bytes()
            assert r["file_sha256"] == hashlib.sha256(data).hexdigest() and r["bytes"] == len(data)
            assert r["name"] == r["path"].rsplit("/", 1)[1]
        assert b[DS].ephys.trace("17o05028_ic_steps.abf", 10).df()["response"].size > 1000  # traces stored
        # again: nothing is analysed, every object is skipped as unchanged, no table gets a new version
        held.clear()
        again = etl.ingest(b, DS, url, lab="x", conditions={"rig": "2"})
        assert again.loaded == again.replaced == again.errors == []
        assert sorted((s["path"], s["reason"]) for s in again.skipped) == [(u, "unchanged") for u in urls]
        assert again.versions == rb.versions and max(held) == 1 and list(spill.iterdir()) == []
        # the same objects under another prefix are the same bytes: duplicates, as for local files
        s3 = storage_config().boto3_client()
        s3.copy_object(Bucket=bucket, Key="copy/x.abf",
                       CopySource={"Bucket": bucket, "Key": "run42/abf/17o05028_ic_steps.abf"})
        dup = etl.ingest(b, DS, f"s3://{bucket}/copy")
        assert [s["reason"] for s in dup.skipped] == [f"same bytes as s3://{bucket}/run42/abf/17o05028_ic_steps.abf"]
        # a changed object replaces its rows (one object named by its key)
        s3.upload_file(str(EPHYS / "abf" / "File_axon_5.abf"), bucket, "run42/abf/17o05027_ic_ramp.abf")
        changed = etl.ingest(b, DS, f"s3://{bucket}/run42/abf/17o05027_ic_ramp.abf")
        assert [e["path"] for e in changed.replaced] == [f"s3://{bucket}/run42/abf/17o05027_ic_ramp.abf"]
        assert tables.read(b, DS, "files").num_rows == len(RUN)
    finally:
        a.close()
        b.close()


def test_missing_sources_and_credentials_write_nothing(s3_endpoint, fresh_lake, tmp_path, monkeypatch):
    bucket, url = _bucket("run7")
    cases = [(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/run7/", "no bucket"),
             (f"s3://{bucket}/run7/abf/nope.abf", "no object"),
             (f"s3://{bucket}/empty/", "no object under"),
             (f"s3://{bucket}/run7/empty-folder/", "no object under"),  # only a folder marker
             (f"s3://{bucket}/run", "no object under")]  # a prefix is a folder, not the start of a name
    for source, message in cases:
        with pytest.raises(NotFound, match=message):
            etl.ingest(fresh_lake, DS, source)
    with pytest.raises(NotFound, match="no object"):  # a list holding a missing object
        etl.ingest(fresh_lake, DS, [url + "abf/17o05027_ic_ramp.abf", f"s3://{bucket}/run7/abf/nope.abf"])
    with pytest.raises(Unsupported, match="local files or s3:// URLs"):
        etl.ingest(fresh_lake, DS, "https://example.org/recordings/x.abf")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(PermissionDenied, match="no S3 credentials.*AWS_ACCESS_KEY_ID"):
        etl.ingest(fresh_lake, DS, url)
    assert DS not in fresh_lake.datastacks()  # nothing was written by any of these


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"])
def test_refused_credentials_are_permission_denied(code):
    """moto does not check credentials: the error bodies AWS answers a refused key with are given to the
    translation as botocore builds them."""
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "The AWS Access Key Id you provided does not exist"},
                       "ResponseMetadata": {"HTTPStatusCode": 403}}, "ListObjectsV2")
    err = sources._error(exc, "s3://lab-recordings/run42/")
    assert isinstance(err, PermissionDenied) and err.detail["s3_error"] == code
    assert "s3://lab-recordings/run42/" in err.message and "AWS_ACCESS_KEY_ID" in err.message


def test_python_api_and_cli_on_an_s3_lake(s3_endpoint, new_s3_lake, tmp_path):
    bucket, url = _bucket()
    lake_url, _db = new_s3_lake()
    lake = open_lake(lake_url)
    try:  # the Python API: one object of the bucket into an S3 lake
        one = f"s3://{bucket}/run42/abf/17o05028_ic_steps.abf"
        lake.create_datastack(DS, (1, 1, 1))
        r = lake[DS].ephys.ingest(one, lab="x")
        assert [e["path"] for e in r.loaded] == [one] and r.errors == []
        assert lake[DS].ephys.file("17o05028_ic_steps.abf")["path"] == one
    finally:
        lake.close()
    cli = [sys.executable, "-m", "neurolake.cli", "ephys", "ingest"]
    env = dict(os.environ)  # the AWS environment of the moto server
    done = subprocess.run([*cli, url + "abf/", "-d", DS, "--lake", lake_url, "--json"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert sorted(e["path"] for e in report["loaded"]) == sorted(f"s3://{bucket}/run42/{k}" for k in RUN
                                                                 if k.startswith("abf/") and "steps" not in k)
    assert [s["path"] for s in report["skipped"]] == [one]
    missing = subprocess.run([*cli, f"s3://{bucket}/nothing-here/", "-d", DS, "--lake", lake_url],
                             capture_output=True, text=True, env=env, timeout=600)
    assert missing.returncode == 2 and "not_found" in missing.stderr and "nothing-here" in missing.stderr


def test_s3_source_on_dask_equals_in_process(s3_endpoint, tmp_path, spill):
    from tests.jobs.conftest import Cluster

    cluster = Cluster(tmp_path)  # started after s3_endpoint: the workers inherit the AWS environment
    cluster.start(2)
    try:
        bucket, url = _bucket()
        a, b = init_lake(tmp_path / "a"), init_lake(tmp_path / "b")
        ra = etl.ingest(a, DS, _folder(tmp_path / "run42"), lab="x")
        rb = etl.ingest(b, DS, url, lab="x", scheduler=cluster.address)
        assert len(rb.loaded) == len(ra.loaded) == len(RUN) and rb.errors == []
        da, db = _dump(a), _dump(b)
        for t in tables.TABLES:
            pd.testing.assert_frame_equal(da[t], db[t], obj=t)
        (job,) = list_jobs(b, kind="ephys")
        n_pc = sum(1 for e in rb.loaded if e["format"] in etl.PATCH_CLAMP)
        assert job["status"] == "done" and job["tasks_done"] == job["tasks_total"] >= n_pc == 5
        assert list(spill.iterdir()) == []
        again = etl.ingest(b, DS, url, lab="x", scheduler=cluster.address)
        assert again.loaded == [] and len(again.skipped) == len(RUN)
        a.close()
        b.close()
    finally:
        cluster.stop()
