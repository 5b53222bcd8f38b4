"""Shared fixtures: the real demo data, a lake built from it, a real server process, PostgreSQL.

- ``demo_lake_path``: a lake (session-scoped, built once) holding the demo datastacks
  ``gerhard2013`` (image, labels) and ``gala_fibsem`` (image, segmentation). **Read-only**: tests that
  write must use ``fresh_lake`` or make their own layers.
- ``fresh_lake``: an empty lake in a temporary folder.
- ``serve_lake``: a factory starting ``neurolake serve`` as a real uvicorn process on loopback;
  ``serve_lake(path, *extra_args, env=...)`` returns the base URL; processes stop at session end.
- ``demo_server``: the demo lake served once per session (read-only).
- ``postgres_url``: a throw-away PostgreSQL cluster on a loopback port (started with the server
  binaries of the Debian package that ``scripts/setup.sh`` installs); each call of the
  ``new_pg_database`` factory gives a new empty database URL.
- ``s3_endpoint``: an S3-compatible server (moto, a separate process) on a loopback port; the session's
  environment points the AWS settings at it (so servers and Dask workers started by tests use it too).
- ``new_s3_lake``: factory of empty lakes on ``s3://<new bucket>/lake`` with a new PostgreSQL catalog;
  ``s3_demo_lake``: the demo datastacks ingested into one such lake (session-scoped, read-only).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"  # real datasets beside the project (tests may use them)

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def gerhard_source() -> np.ndarray:
    """The Gerhard et al. ssTEM stack read straight from the TIFFs, (20, 1024, 1024) uint8."""
    import tifffile

    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))
    return np.stack([tifffile.imread(f) for f in files])


@pytest.fixture(scope="session")
def demo_lake_path(tmp_path_factory) -> Path:
    from neurolake import init_lake
    from neurolake.demo import ingest_demo_layers

    path = tmp_path_factory.mktemp("demo") / "lake"
    lake = init_lake(path)
    ingest_demo_layers(lake, lambda m: None, scheduler="threads")
    lake.close()
    return path


@pytest.fixture(scope="session")
def demo_lake(demo_lake_path):
    from neurolake import open_lake

    lake = open_lake(demo_lake_path)
    yield lake
    lake.close()


@pytest.fixture
def fresh_lake(tmp_path):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    yield lake
    lake.close()


@pytest.fixture(scope="session")
def serve_lake(tmp_path_factory):
    procs: list[subprocess.Popen] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(lake_path, *extra: str, env: dict | None = None) -> str:
        port = free_port()
        log = open(logs / f"server-{port}.log", "wb")
        cmd = [sys.executable, "-m", "neurolake.cli", "serve", "--lake", str(lake_path), "--host", "127.0.0.1",
               "--port", str(port), *extra]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/", proc)
        return base

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="session")
def demo_server(serve_lake, demo_lake_path) -> str:
    return serve_lake(demo_lake_path)


def _pg_bin() -> Path | None:
    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return cands[-1].parent if cands else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """URL of a running throw-away PostgreSQL server (admin database ``postgres``)."""
    pgbin = _pg_bin()
    if pgbin is None:
        pytest.fail("PostgreSQL server binaries are missing: run scripts/setup.sh")
    base = Path(f"/tmp/neurolake-pg-{uuid.uuid4().hex[:8]}")
    data, sock = base / "data", base / "sock"
    port = free_port()
    as_root = os.geteuid() == 0
    run = (lambda *a: ["runuser", "-u", "postgres", "--", *a]) if as_root else (lambda *a: list(a))
    base.mkdir(parents=True)
    sock.mkdir()
    if as_root:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    subprocess.run(run(str(pgbin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-instructions"), check=True, capture_output=True)
    subprocess.run(run(str(pgbin / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o",
                       f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"),
                   check=True, capture_output=True)
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(run(str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"), capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def new_pg_database(postgres_url):
    """Factory: a new empty database on the test server; returns its SQLAlchemy URL."""
    import psycopg

    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")

    def make() -> str:
        name = f"nl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return postgres_url.rsplit("/", 1)[0] + f"/{name}"

    return make


CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--window-size=1000,800"]


@pytest.fixture
def chromium():
    """A selenium driver of headless Debian Chromium (WebGL through SwiftShader), quit after the test."""
    chromium_bin, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium_bin or not driver_bin:
        pytest.fail("chromium / chromium-driver are missing: run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_bin
    for a in CHROME_ARGS:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server process on 127.0.0.1 (a separate process: delta-rs blocks while holding the
    GIL, which would stall an in-process server). Sets ``AWS_ENDPOINT_URL`` and test credentials in
    ``os.environ`` for the session."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc)
    env = S3_ENV | {"AWS_ENDPOINT_URL": url}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    proc.terminate()
    proc.wait(10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def _s3_lake_factory(s3_endpoint, postgres_url):
    import psycopg

    from neurolake.storage.config import storage_config

    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")

    def make() -> tuple[str, str]:
        tag = uuid.uuid4().hex[:10]
        storage_config().boto3_client().create_bucket(Bucket=f"lake-{tag}")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "nl_{tag}"')
        return f"s3://lake-{tag}/lake", postgres_url.rsplit("/", 1)[0] + f"/nl_{tag}"

    return make


@pytest.fixture
def new_s3_lake(_s3_lake_factory):
    """Factory: ``make() -> (url, database_url)`` of a new empty lake on S3 with a PostgreSQL catalog
    (already initialised: open it with ``open_lake(url)`` — its ``lake.json`` names the database)."""
    from neurolake import init_lake

    made = []

    def make() -> tuple[str, str]:
        url, db = _s3_lake_factory()
        made.append(init_lake(url, database_url=db))
        return url, db

    yield make
    for lk in made:
        lk.close()


@pytest.fixture(scope="module", params=["local", "s3"])
def demo_location(request):
    """For a module whose tests run twice, on the local demo lake (a folder, SQLite) and again on the demo lake
    on S3 (moto, PostgreSQL catalog): the lake's folder or URL. A module opts in by overriding ``demo_lake``
    and/or ``demo_server`` with :func:`demo_lake_both` / :func:`demo_server_both` (same tests, same asserts)."""
    return request.getfixturevalue("demo_lake_path" if request.param == "local" else "s3_demo_lake_url")


@pytest.fixture(params=["local", "s3"])
def fresh_lake_both(request, tmp_path):
    """A new empty lake: a folder with SQLite, then (second run of the test) ``s3://<new bucket>/lake`` with a new
    PostgreSQL catalog. A module opts in by overriding ``fresh_lake`` with it."""
    from neurolake import init_lake, open_lake

    if request.param == "local":
        lake = init_lake(tmp_path / "lake")
    else:
        lake = open_lake(request.getfixturevalue("new_s3_lake")()[0])
    yield lake
    lake.close()


@pytest.fixture(scope="module")
def demo_lake_both(demo_location):
    from neurolake import open_lake

    lake = open_lake(demo_location)
    yield lake
    lake.close()


@pytest.fixture(scope="module")
def demo_server_both(request, demo_location) -> str:
    return request.getfixturevalue("demo_server" if isinstance(demo_location, Path) else "s3_demo_server")


def on_local_and_s3(name: str):
    """A fixture named ``name`` (``demo_lake``, ``demo_server`` or ``fresh_lake``) for a module to assign at its
    top (``demo_lake = on_local_and_s3("demo_lake")``): it overrides the plain one there, so every test of the
    module that uses it runs on a local lake and again on a lake on S3 (moto, PostgreSQL catalog)."""
    if name == "demo_lake":
        def both(demo_lake_both):
            return demo_lake_both
    elif name == "demo_server":
        def both(demo_server_both):
            return demo_server_both
    elif name == "fresh_lake":
        def both(fresh_lake_both):
            return fresh_lake_both
    else:
        raise ValueError(f"no local-and-S3 variant of fixture {name!r}")
    return pytest.fixture(scope="function" if name == "fresh_lake" else "module", name=name)(both)


@pytest.fixture(scope="session")
def s3_demo_server(serve_lake, s3_demo_lake_url) -> str:
    """``neurolake serve --lake s3://…`` of :func:`s3_demo_lake_url`."""
    return serve_lake(s3_demo_lake_url)


@pytest.fixture(scope="session")
def s3_demo_lake_url(_s3_lake_factory) -> str:
    """An S3 lake (PostgreSQL catalog) holding the demo datastacks, built once per session. Read-only."""
    from neurolake import init_lake
    from neurolake.demo import ingest_demo_layers

    url, db = _s3_lake_factory()
    lake = init_lake(url, database_url=db)
    ingest_demo_layers(lake, lambda m: None, scheduler="threads")
    lake.close()
    return url
