"""The neurolake command, and the catalog on SQLite and on a real PostgreSQL server."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from sqlalchemy import inspect

from neurolake import init_lake, open_lake
from neurolake.errors import InvalidArgument, NotFound
from tests.conftest import DATA


def nl(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "neurolake.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"neurolake {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def test_cli_init_ingest_info_cutout(tmp_path, gerhard_source):
    lake = tmp_path / "lake"
    nl("init", "--lake", lake)
    nl("ingest", DATA / "gerhard2013" / "raw", "--lake", lake, "--datastack", "g", "--layer", "image",
       "--voxel-size", "4.6,4.6,50", "--scheduler", "threads")
    info = json.loads(nl("info", "--lake", lake, "-d", "g", "--layer", "image").stdout)
    assert info["status"] == "ready" and info["bounds"]["z"] == [0, 20] and len(info["mips"]) == 5
    nl("cutout", "--lake", lake, "-d", "g", "--layer", "image", "--x", "10,50", "--y", "0,30", "--z", "2,5", "-o", tmp_path / "c.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), gerhard_source[2:5, 0:30, 10:50])
    nl("cutout", "--lake", lake, "-d", "g", "--layer", "image", "--x", "0,64", "--y", "0,64", "--z", "0,4", "--mip", "1",
       "-o", tmp_path / "c.tif")
    ref = np.rint(gerhard_source[:4, :128, :128].astype(float).reshape(4, 64, 2, 64, 2).mean(axis=(2, 4)))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), ref)


def test_cli_errors_are_clear_and_exit_nonzero(tmp_path):
    lake = tmp_path / "lake"
    nl("init", "-l", lake)
    p = nl("ingest", tmp_path / "missing", "--lake", lake, "--datastack", "g", "--layer", "x", "--voxel-size", "1,1,1",
           check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = nl("ingest", DATA / "gerhard2013" / "raw", "--lake", lake, "--datastack", "g", "--layer", "x",
           "--voxel-size", "1,1", check=False)
    assert p.returncode == 2 and "three numbers" in p.stderr
    p = nl("info", "--lake", tmp_path / "nolake", check=False)
    assert p.returncode == 2 and "neurolake init" in p.stderr


def test_open_lake_errors(tmp_path):
    with pytest.raises(NotFound, match="neurolake init"):
        open_lake(tmp_path / "none")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidArgument, match="not a folder"):
        init_lake(tmp_path / "f")
    lake = init_lake(tmp_path / "l")
    with pytest.raises(InvalidArgument, match="name 'a b'"):
        lake.create_datastack("a b", (1, 1, 1))
    with pytest.raises(InvalidArgument, match="voxel size"):
        lake.create_datastack("ok", (1, 0, 1))


def test_catalog_on_postgresql(tmp_path, new_pg_database, gerhard_source):
    url = new_pg_database()
    lake = init_lake(tmp_path / "pg", database_url=url)
    assert lake.catalog.engine.dialect.name == "postgresql"
    tables = set(inspect(lake.catalog.engine).get_table_names())
    assert {"datastacks", "layers", "alembic_version"} <= tables
    lake.ingest(str(DATA / "gerhard2013" / "raw"), "g", "image", voxel_size=(4.6, 4.6, 50), scheduler="threads")
    lake.close()
    # reopening (and migrating again) is idempotent; the env var selects the database too
    os.environ["NEUROLAKE_DATABASE_URL"] = url
    try:
        again = open_lake(tmp_path / "pg")
        assert again.catalog.url == url
        np.testing.assert_array_equal(again.layer("g", "image")[10], gerhard_source[10])
        assert again.datastack("g").info()["layers"][0]["status"] == "ready"
        again.close()
    finally:
        del os.environ["NEUROLAKE_DATABASE_URL"]
