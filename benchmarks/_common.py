"""Helpers shared by the benchmark scripts: timing, results files, real EM content at any size."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def gerhard_stack() -> np.ndarray:
    """The Gerhard et al. 2013 ssTEM stack (20, 1024, 1024) uint8 from data/."""
    import tifffile

    files = sorted((ROOT / "data" / "gerhard2013" / "raw").glob("*.tif"))
    return np.stack([tifffile.imread(f) for f in files])


def em_volume_slab(src: np.ndarray, z0: int, z1: int, y: int, x: int) -> np.ndarray:
    """Sections z0..z1 of a large volume tiled from real EM sections (each tile flipped/rolled per
    position so neighbouring tiles differ; content and compressibility stay those of real EM)."""
    sz, sy, sx = src.shape
    out = np.empty((z1 - z0, y, x), dtype=src.dtype)
    for z in range(z0, z1):
        sec = src[z % sz]
        for ty in range(0, y, sy):
            for tx in range(0, x, sx):
                t = sec
                k = (z // sz + ty // sy * 3 + tx // sx * 7) % 4
                if k & 1:
                    t = t[::-1]
                if k & 2:
                    t = t[:, ::-1]
                out[z - z0, ty:ty + sy, tx:tx + sx] = t[: min(sy, y - ty), : min(sx, x - tx)]
    return out


def boxes_for(shape_zyx, box_xyz, n: int, rng) -> list:
    """``n`` random boxes of size ``box_xyz`` (x, y, z voxels) inside a volume of ``shape_zyx``, as
    ``((x0, x1), (y0, y1), (z0, z1))`` half-open ranges."""
    bx, by, bz = box_xyz
    out = []
    for _ in range(n):
        z0 = int(rng.integers(0, shape_zyx[0] - bz + 1))
        y0 = int(rng.integers(0, shape_zyx[1] - by + 1))
        x0 = int(rng.integers(0, shape_zyx[2] - bx + 1))
        out.append(((x0, x0 + bx), (y0, y0 + by), (z0, z0 + bz)))
    return out


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs):
    return statistics.median(xs)


def write_results(name: str, results: dict, summary_lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}, **results}
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join([f"# {name}", "", *summary_lines, ""]))
    print("\n".join(summary_lines))
    print(f"\nwritten: {RESULTS / (name + '.json')}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on loopback: ``Server(lake, *cli_args, env={...})`` runs ``neurolake serve`` on the
    lake; ``Server(None, cmd=[...])`` any other server taking ``--host``/``--port`` (e.g. uvicorn). With
    ``log`` its output goes to that file (``tail()`` reads it for error reports)."""

    def __init__(self, lake: Path | None, *extra: str, env: dict[str, str] | None = None, timeout: float = 90,
                 cmd: list[str] | None = None, log: Path | None = None) -> None:
        import os
        import subprocess
        import sys

        import httpx

        os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        cmd = cmd or [sys.executable, "-m", "neurolake.cli", "serve", "--lake", str(lake)]
        self.proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(self.port), *extra],
                                     env={**os.environ, **(env or {})}, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                httpx.get(self.base + "/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server did not start: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        """The last ``n`` bytes of the server's log ("" without a log)."""
        if self.log is None:
            return ""
        if not self._out.closed:
            self._out.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.log is not None:
            self._out.close()


def segmentation_lake(tmp: Path):
    """A new lake under ``tmp`` with the real segmentations of ``data/``: ``gala/segmentation`` (the gala
    FIB-SEM neurons) and ``gerhard2013/labels`` (Gerhard et al. 2013 labels), ingested as the demo does."""
    from neurolake import init_lake
    from neurolake.demo import GALA_VOXEL, GERHARD_VOXEL

    data = ROOT / "data"
    lake = init_lake(tmp / "lake")
    lake.create_datastack("gala", GALA_VOXEL)
    lake.ingest(str(data / "gala_fibsem/train-gt.lzf.h5:/stack"), "gala", "segmentation", voxel_size=GALA_VOXEL,
                layer_type="segmentation", scheduler="threads")
    lake.create_datastack("gerhard2013", GERHARD_VOXEL)
    lake.ingest(str(data / "gerhard2013/labels"), "gerhard2013", "labels", voxel_size=GERHARD_VOXEL,
                layer_type="segmentation", scheduler="threads")
    return lake


# -- object storage (moto S3 server) and PostgreSQL for the S3 benchmarks ------------------------------------
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}

# A moto S3 server (as ``python -m moto.server`` runs it) behind a WSGI wrapper that counts the requests it
# receives by kind; ``GET /__counts__`` returns them as JSON, ``DELETE /__counts__`` resets them.
_COUNTING_MOTO = r'''
import collections, json, sys, threading
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
counts = collections.Counter()
lock = threading.Lock()


def kind(env):
    m, q, path = env["REQUEST_METHOD"], env.get("QUERY_STRING", ""), env.get("PATH_INFO", "")
    bucket_level = path.strip("/").count("/") == 0
    if m == "GET" and bucket_level and ("list-type" in q or "prefix=" in q or "delimiter" in q or q == ""):
        return "LIST"
    if m == "GET":
        return "GET (range)" if env.get("HTTP_RANGE") else "GET"
    if m == "PUT":
        return "PUT (part)" if "partNumber" in q else "PUT"
    if m == "POST":
        return "POST (multi-delete)" if "delete" in q else "POST (multipart)"
    return m


def counting(env, start_response):
    if env.get("PATH_INFO") == "/__counts__":
        with lock:
            if env["REQUEST_METHOD"] == "DELETE":
                counts.clear()
            body = json.dumps(counts).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    k = kind(env)
    n = int(env.get("CONTENT_LENGTH") or 0)
    with lock:
        counts[k] += 1
        counts["bytes in"] += n
    return app(env, start_response)


make_server("127.0.0.1", int(sys.argv[1]), counting, threaded=True, request_handler=MotoRequestHandler).serve_forever()
'''


class CountingS3:
    """A moto S3 server process on loopback that counts the requests it serves (``counts()``, ``reset()``);
    ``env`` is the AWS environment pointing clients at it (also set in ``os.environ`` by :meth:`activate`)."""

    def __init__(self, log: Path | None = None) -> None:
        import os
        import subprocess
        import sys

        import httpx

        os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-c", _COUNTING_MOTO, str(self.port)], stdout=out,
                                     stderr=subprocess.STDOUT)
        self.env = S3_ENV | {"AWS_ENDPOINT_URL": self.url}
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}")
            try:
                httpx.get(self.url + "/__counts__", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("moto did not start")

    def activate(self) -> None:
        import os

        os.environ.update(self.env)

    def counts(self) -> dict[str, int]:
        import httpx

        return httpx.get(self.url + "/__counts__", timeout=10).json()

    def reset(self) -> None:
        import httpx

        httpx.delete(self.url + "/__counts__", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Postgres:
    """A throw-away PostgreSQL cluster on a loopback port (as tests/conftest.py starts one): ``url`` is the
    admin database's SQLAlchemy URL, ``new_database()`` the URL of a new empty database; ``stop()`` removes it."""

    def __init__(self) -> None:
        import os
        import shutil
        import subprocess
        import uuid

        cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not cands:
            raise RuntimeError("PostgreSQL server binaries are missing: run scripts/setup.sh")
        self.bin = cands[-1].parent
        self.base = Path(f"/tmp/neurolake-bench-pg-{uuid.uuid4().hex[:8]}")
        data, sock = self.base / "data", self.base / "sock"
        self.data = data
        self.base.mkdir(parents=True)
        sock.mkdir()
        as_root = os.geteuid() == 0
        self._run = (lambda *a: ["runuser", "-u", "postgres", "--", *a]) if as_root else (lambda *a: list(a))
        if as_root:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        port = free_port()
        subprocess.run(self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E",
                                 "UTF8", "--no-instructions"), check=True, capture_output=True)
        subprocess.run(self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.base / "server.log"), "-w",
                                 "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"),
                       check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def new_database(self) -> str:
        import uuid

        import psycopg

        name = f"nl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        import shutil
        import subprocess

        subprocess.run(self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"),
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
