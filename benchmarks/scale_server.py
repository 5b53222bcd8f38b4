"""Throughput of ``neurolake serve --workers 1`` vs ``--workers 2`` on loopback (issue 14, part 3).

A lake on a throw-away PostgreSQL catalog (``--workers > 1`` needs one) holding the real Gerhard et al. 2013
ssTEM stack (20 x 1024 x 1024 uint8, ``data/gerhard2013/raw``) is served with ``--auth`` (one admin token,
no quota) by one and then by two worker processes. One asyncio client with a bounded pool of ``CLIENTS``
keep-alive connections (``httpx.AsyncClient``) sends a mixed load back to back for ``seconds``:

- 60 % Neuroglancer precomputed raw chunks of ``image`` at mip 0 (random chunk of the grid, (z, y, x) bytes);
- 15 % CATMAID 512 x 512 JPEG tiles at mip 0 (random section and tile; rendered once, then from the cache);
- 25 % JSON API calls: the datastack list, one datastack, the layer's precomputed ``info``.

Reported per server: requests/s, MB/s of bodies, p50 / p99 latency, errors, and where the CPU time goes
(server processes, the client, PostgreSQL) per request and as a share of the machine's cores. The client
runs on the same machine (2 cores here): it costs CPU that the server processes then lack, so the ratio
is what this machine shows, not what two free cores would give.

When ``wrk`` is installed (``scripts/setup.sh`` installs it), the same mix is sent again by ``wrk`` (C, one
thread, ``CLIENTS`` connections, the URL sequence replayed by a Lua script): a client that needs ~0.07 ms of
CPU per request, so the ratio shows what the server processes do with the cores.

Usage: ``python benchmarks/scale_server.py [seconds]``; writes ``benchmarks/results/scale_server.{json,md}``.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Server, free_port, write_results  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

CLIENTS = 16
DS = "gerhard2013"
WARMUP_S = 2.0


# -- PostgreSQL and the lake ----------------------------------------------------------------------------
class Postgres:
    """A throw-away PostgreSQL cluster on a loopback port (the recipe of tests/conftest.py)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries are missing: run scripts/setup.sh")
        self.bin = bins[-1].parent
        self.base = Path(f"/tmp/neurolake-bench-pg-{uuid.uuid4().hex[:8]}")
        self.data, sock = self.base / "data", self.base / "sock"
        port = free_port()
        as_root = os.geteuid() == 0
        self.run = (lambda *a: ["runuser", "-u", "postgres", "--", *a]) if as_root else (lambda *a: list(a))
        sock.mkdir(parents=True)
        if as_root:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        subprocess.run(self.run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                "-E", "UTF8", "--no-instructions"), check=True, capture_output=True)
        subprocess.run(self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                                "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"),
                       check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"),
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def build_lake(path: Path, database_url: str) -> str:
    """The lake: gerhard2013/image on the PostgreSQL catalog; returns an admin token."""
    from neurolake import init_lake
    from neurolake.demo import GERHARD_VOXEL

    lake = init_lake(path, database_url=database_url)
    lake.create_datastack(DS, GERHARD_VOXEL)
    lake.ingest(str(ROOT / "data" / "gerhard2013" / "raw"), DS, "image", voxel_size=GERHARD_VOXEL,
                scheduler="threads")
    lake.access.add_user("bench", admin=True)
    token = lake.access.create_token("bench")["token"]
    lake.close()
    return token


# -- the load -------------------------------------------------------------------------------------------
def urls(base: str, token: str) -> tuple[list[str], list[str], list[str]]:
    """(chunk URLs, tile URLs, JSON URLs) of the mixed load."""
    import httpx

    info = httpx.get(f"{base}/precomputed/{DS}/image/info", headers={"Authorization": f"Bearer {token}"}).json()
    s = info["scales"][0]
    (sx, sy, sz), (cx, cy, cz) = s["size"], s["chunk_sizes"][0]
    chunks = [f"/precomputed/{DS}/image/{s['key']}/{x}-{min(x + cx, sx)}_{y}-{min(y + cy, sy)}_{z}-{min(z + cz, sz)}"
              for x in range(0, sx, cx) for y in range(0, sy, cy) for z in range(0, sz, cz)]
    tiles = [f"/catmaid/{DS}/image/xy/{z}/{r}_{c}_0.jpg" for z in range(sz) for r in range(2) for c in range(2)]
    js = ["/api/v1/datastacks", f"/api/v1/datastacks/{DS}", f"/precomputed/{DS}/image/info"]
    return chunks, tiles, js


def pick(rng: random.Random, chunks, tiles, js) -> tuple[str, str]:
    u = rng.random()
    if u < 0.60:
        return "chunk", rng.choice(chunks)
    if u < 0.75:
        return "tile", rng.choice(tiles)
    return "json", rng.choice(js)


async def load(base: str, token: str, seconds: float, seed: int = 0) -> dict:
    import httpx

    chunks, tiles, js = urls(base, token)
    rng = random.Random(seed)
    lat: list[float] = []
    kinds: dict[str, int] = {}
    nbytes = errors = 0
    samples: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def worker(stop_at: float, record: bool, delay: float = 0.0) -> None:
            nonlocal nbytes, errors
            await asyncio.sleep(delay)
            while time.perf_counter() < stop_at:
                kind, url = pick(rng, chunks, tiles, js)
                t = time.perf_counter()
                try:
                    r = await client.get(url)
                    ok = r.status_code == 200
                    if not ok and len(samples) < 3:
                        samples.append(f"{r.status_code} {url}: {r.text[:200]}")
                    size = len(r.content)
                except httpx.HTTPError as exc:
                    ok, size = False, 0
                    if len(samples) < 3:
                        samples.append(f"{type(exc).__name__} {url}")
                if record:
                    lat.append(time.perf_counter() - t)
                    kinds[kind] = kinds.get(kind, 0) + 1
                    nbytes += size
                    errors += not ok

        # clients arrive one by one (as independent viewers do), not in one burst: a burst of connects is
        # accepted by whichever worker wakes first, often all of them by one (see docs/scaling.md)
        await asyncio.gather(*(worker(time.perf_counter() + WARMUP_S, False, i * WARMUP_S / 2 / CLIENTS)
                               for i in range(CLIENTS)))
        spread = connections_per_process(int(base.rsplit(":", 1)[1]))
        cpu = cpu_now()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds, True) for _ in range(CLIENTS)))
        wall = time.perf_counter() - t0
        cpu_after = cpu_now()
    lat.sort()
    n = len(lat)
    return {"requests": n, "wall_s": round(wall, 3), "rps": round(n / wall, 1), "mb_per_s": round(nbytes / wall / 1e6, 1),
            "p50_ms": round(lat[n // 2] * 1e3, 2) if n else None,
            "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1e3, 2) if n else None,
            "mix": kinds, "connections_per_process": spread, "errors": errors, "error_samples": samples, "_cpu": (cpu, cpu_after)}


def wrk_load(base: str, token: str, seconds: float, workdir: Path, seed: int = 0) -> dict:
    """The same mix sent by ``wrk`` (one thread, ``CLIENTS`` keep-alive connections; C, epoll): a client that
    needs far less CPU per request than the Python one, so the server processes get the cores. The URL
    sequence is drawn by :func:`pick` beforehand and replayed in order by a Lua script."""
    import resource

    chunks, tiles, js = urls(base, token)
    rng = random.Random(seed)
    paths = [pick(rng, chunks, tiles, js)[1] for _ in range(20000)]
    script = workdir / "mix.lua"
    script.write_text("local paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
                      "local i = 0\n"
                      f'local headers = {{["Authorization"] = "Bearer {token}"}}\n'
                      "request = function()\n  i = i + 1\n"
                      "  return wrk.format(\"GET\", paths[(i % #paths) + 1], headers)\nend\n")
    cmd = ["wrk", "-t1", f"-c{CLIENTS}", "--latency", "-s", str(script)]
    subprocess.run([*cmd, f"-d{WARMUP_S:.0f}s", base], check=True, capture_output=True)  # warm-up
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_now()
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, f"-d{seconds:.0f}s", base], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    spread = connections_per_process(int(base.rsplit(":", 1)[1]))
    text = proc.communicate()[0]
    wall = time.perf_counter() - t0
    cpu_after = cpu_now()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {text}")
    cpu_after["client"] = cpu["client"] + (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)

    def field(label: str) -> str:
        line = next((x for x in text.splitlines() if x.strip().startswith(label)), "")
        return line.split()[-1] if line else ""

    def ms(v: str) -> float | None:
        for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
            if v.endswith(unit):
                return round(float(v[: -len(unit)]) * f, 2)
        return None

    total = next(x for x in text.splitlines() if " requests in " in x)
    n = int(total.split()[0])
    rps = float(field("Requests/sec:"))
    non2xx = field("Non-2xx or 3xx responses:")
    errors = int(non2xx) if non2xx else 0
    sock = next((x for x in text.splitlines() if "Socket errors" in x), "")
    if sock:
        errors += sum(int(part.split()[-1]) for part in sock.split(":", 1)[1].split(","))
    tr = field("Transfer/sec:")
    mult = {"KB": 1e-3, "MB": 1.0, "GB": 1e3}
    mb = next((float(tr[:-2]) * f for u, f in mult.items() if tr.endswith(u)), 0.0)
    return {"requests": n, "wall_s": round(wall, 3), "rps": round(rps, 1), "mb_per_s": round(mb, 1),
            "p50_ms": ms(field("50%")), "p99_ms": ms(field("99%")), "mix": None, "connections_per_process": spread,
            "errors": errors, "error_samples": [], "_cpu": (cpu, cpu_after)}


_WATCH: dict[str, list] = {"server": [], "pg": []}


def connections_per_process(port: int) -> list[int]:
    """How the client's open connections are spread over the server processes (counts, largest first)."""
    import collections

    import psutil

    c = collections.Counter(x.pid for x in psutil.net_connections("tcp")
                            if x.laddr and x.raddr and x.laddr.port == port and x.pid)
    return sorted(c.values(), reverse=True)


def _proc_cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for q in procs:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def cpu_now() -> dict[str, float]:
    """CPU seconds used so far by the server processes, this client process and PostgreSQL."""
    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    return {"server": _proc_cpu(_WATCH["server"]), "client": time.process_time(), "pg": _proc_cpu(_WATCH["pg"]),
            "all": busy}


def run_one(lake: Path, token: str, workers: int, seconds: float, pg: Postgres, log: Path,
            client: str = "httpx") -> dict:
    import psutil

    srv = Server(lake, "--auth", "--workers", str(workers), log=log, timeout=120)
    try:
        _wait_workers(srv, token, workers)
        _WATCH["server"], _WATCH["pg"] = [srv.proc.pid], [pg.pid()]
        out = (wrk_load(srv.base, token, seconds, log.parent) if client == "wrk"
               else asyncio.run(load(srv.base, token, seconds)))
        before, after = out.pop("_cpu")
        used = {k: after[k] - before[k] for k in before}
        n, wall = out["requests"], out["wall_s"]
        machine = used.pop("all")
        used["other"] = max(0.0, machine - sum(used.values()))  # other processes on the machine (other work)
        out["cpu_s"] = {k: round(v, 2) for k, v in used.items()}
        out["cpu_ms_per_request"] = {k: round(v / n * 1e3, 3) for k, v in used.items()} if n else {}
        cores = psutil.cpu_count() or 1
        out["machine_busy"] = round(machine / (wall * cores), 2)  # share of all cores, every process
        out["ours_busy"] = round((machine - used["other"]) / (wall * cores), 2)  # server + client + PostgreSQL
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
        out["server_cores"] = round(used["server"] / wall, 2)  # cores' worth the server processes used
        out["workers"] = workers
        return out
    finally:
        srv.stop()


def _wait_workers(srv: Server, token: str, workers: int, timeout: float = 120) -> None:
    """Until every worker process answers (each uvicorn worker imports and warms up on its own): groups of
    new connections opened together, each mapped to the pid that owns its server side."""
    import threading

    import httpx
    import psutil

    seen: set[int] = set()
    deadline = time.time() + timeout
    while len(seen) < workers and time.time() < deadline:
        def one() -> None:
            with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                r = c.get("/api/v1/datastacks")
                if r.status_code == 200:
                    cport = r.extensions["network_stream"].get_extra_info("client_addr")[1]
                    for conn in psutil.net_connections("tcp"):
                        if conn.laddr and conn.raddr and conn.laddr.port == srv.port and conn.pid \
                                and conn.raddr.port == cport:
                            seen.add(conn.pid)

        threads = [threading.Thread(target=one) for _ in range(4 * workers)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if len(seen) < workers:
            time.sleep(0.5)
    if len(seen) < workers:
        raise TimeoutError(f"{workers} workers did not start ({len(seen)} answered): {srv.tail()}")
    time.sleep(1.0)


def measure(seconds: float = 10) -> dict:
    """Requests/s of ``serve --workers 1`` and ``--workers 2`` under the same mixed load for ``seconds``
    each (after a 2 s warm-up); ``{"workers_1": {...}, "workers_2": {...}, "ratio": rps2 / rps1, ...}``."""
    pg = Postgres()
    tmp = Path(tempfile.mkdtemp(prefix="nl-scale-"))
    try:
        t = time.perf_counter()
        token = build_lake(tmp / "lake", pg.url)
        build_s = time.perf_counter() - t
        res = {f"workers_{w}": run_one(tmp / "lake", token, w, seconds, pg, tmp / f"server{w}.log")
               for w in (1, 2)}
        res["ratio"] = round(res["workers_2"]["rps"] / res["workers_1"]["rps"], 2)
        if shutil.which("wrk"):
            res["wrk"] = {f"workers_{w}": run_one(tmp / "lake", token, w, seconds, pg, tmp / f"server{w}-wrk.log",
                                                  client="wrk") for w in (1, 2)}
            res["wrk"]["ratio"] = round(res["wrk"]["workers_2"]["rps"] / res["wrk"]["workers_1"]["rps"], 2)
        cores = os.cpu_count() or 1
        srv_ms = min(res[f"workers_{w}"]["cpu_ms_per_request"]["server"] for w in (1, 2))
        cli_ms = min(res[f"workers_{w}"]["cpu_ms_per_request"]["client"] for w in (1, 2))
        both = cores * 1e3 / (srv_ms + cli_ms)  # server and client share the cores
        res["ceiling_rps"] = {"workers_1": round(min(1e3 / srv_ms, both)), "workers_2": round(min(2e3 / srv_ms, both))}
        res.update(clients=CLIENTS, seconds=seconds, lake_build_s=round(build_s, 1), cores=os.cpu_count())
        return res
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summary(res: dict) -> list[str]:
    lines = [f"`neurolake serve --auth --workers N` on a PostgreSQL catalog, loopback, one asyncio httpx client "
             f"with {res['clients']} keep-alive connections, {res['seconds']} s per server after a "
             f"{WARMUP_S:.0f} s warm-up; mix 60 % raw precomputed chunks (gerhard2013/image mip 0), 15 % JPEG "
             "tiles, 25 % JSON API calls. Machine: "
             f"{res['cores']} cores shared by the client, the server processes and PostgreSQL.", "",
             "| workers | req/s | MB/s | p50 ms | p99 ms | errors | server CPU (cores) | CPU ms/request server / "
             "client / PostgreSQL | cores used by server+client+PG / by other work | load avg 1 min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in (1, 2):
        r = res[f"workers_{w}"]
        c = r["cpu_ms_per_request"]
        lines.append(f"| {w} | {r['rps']} | {r['mb_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                     f"{r['server_cores']} | {c['server']} / {c['client']} / {c['pg']} | "
                     f"{r['ours_busy'] * res['cores']:.2f} / {r['cpu_s']['other'] / r['wall_s']:.2f} | "
                     f"{r['load_avg_1m']} |")
    w1, w2 = res["workers_1"], res["workers_2"]
    lines += ["", f"**Ratio workers 2 / workers 1: {res['ratio']}x**", "",
              f"The {res['clients']} connections were spread over the two workers as "
              f"{w2['connections_per_process']}: they are opened one after another during the warm-up (one "
              f"every {WARMUP_S / 2 / CLIENTS * 1e3:.0f} ms); a new connection goes to whichever worker accepts it "
              "first and a keep-alive connection stays with its worker.", "",
              f"Where the time goes (CPU seconds per second of the run): one worker used {w1['server_cores']} "
              f"cores, the client {w1['cpu_s']['client'] / w1['wall_s']:.2f}, other work on the machine "
              f"{w1['cpu_s']['other'] / w1['wall_s']:.2f}; two workers used {w2['server_cores']}, the client "
              f"{w2['cpu_s']['client'] / w2['wall_s']:.2f}, other work {w2['cpu_s']['other'] / w2['wall_s']:.2f} "
              f"(of {res['cores']} cores). Server CPU per request: {w1['cpu_ms_per_request']['server']} ms (1 worker) "
              f"vs {w2['cpu_ms_per_request']['server']} ms (2 workers); the client costs about as much per request "
              "again, on the same cores. PostgreSQL is nearly idle (tokens and metadata are cached per process; "
              "no quota on this user).", "",
              f"What these CPU costs allow on {res['cores']} otherwise idle cores (a bound, not a measurement): "
              f"one worker at most {res['ceiling_rps']['workers_1']} req/s (one process's event loop and GIL: "
              f"~1 core, and the client needs its share), two workers at most {res['ceiling_rps']['workers_2']} "
              "req/s (server and client together fill both cores). With a client on another machine the second "
              "worker would roughly double the server's ceiling."]
    for r in (w1, w2):
        if r["error_samples"]:
            lines.append(f"errors (workers {r['workers']}): {r['error_samples']}")
    wrk = res.get("wrk")
    if wrk:
        lines += ["", f"## The same mix from `wrk` (one thread, {res['clients']} connections)", "",
                  "`wrk` (C, epoll) needs a fraction of the Python client's CPU per request, so the server processes "
                  "get most of the cores.", "",
                  "| workers | req/s | MB/s | p50 ms | p99 ms | errors | server CPU (cores) | CPU ms/request server / "
                  "client / PostgreSQL | connections per process |", "|---|---|---|---|---|---|---|---|---|"]
        for w in (1, 2):
            r = wrk[f"workers_{w}"]
            c = r["cpu_ms_per_request"]
            lines.append(f"| {w} | {r['rps']} | {r['mb_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                         f"{r['server_cores']} | {c['server']} / {c['client']} / {c['pg']} | "
                         f"{r['connections_per_process']} |")
        lines += ["", f"**Ratio workers 2 / workers 1 with wrk: {wrk['ratio']}x**"]
    return lines


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    out = measure(secs)
    write_results("scale_server", out, summary(out))
