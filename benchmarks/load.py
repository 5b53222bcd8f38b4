"""Loopback load test (issue 11): many concurrent clients on a real ``neurolake serve`` process.

Prints and writes ``benchmarks/results/load.{json,md}``. For each route family and each concurrency
(``--clients``, default 8, 16, 32 clients, each one keep-alive connection of one ``httpx.AsyncClient``
with a bounded pool) the clients send requests back to back for ``--duration`` seconds (and at most
``--max-requests`` per client); per family: requests, requests/s, MB/s of response bodies, p50 / p99 /
max latency, errors (non-2xx other than the 409s of edit conflicts, which are counted apart; timeouts and
connection errors) with the first error samples (status, body) and the server log excerpt.

Route families, all on the demo datastack ``gerhard2013`` (real ssTEM, Gerhard et al. 2013, 20 x 1024 x
1024 uint8; the demo's 50 synapses; the demo's watershed supervoxels made proofreadable):

- ``ocp_npz``: OCP cutouts ``/ocp/ca/…/npz/0/…``, random 256 x 256 x 8 (x, y, z) boxes of ``image``;
- ``boss_blosc``: BossDB cutouts ``/v1/cutout/…`` (blosc), random 256 x 256 x 8 boxes;
- ``tiles_warm``: CATMAID 512 x 512 JPEG tiles at mip 0 (xy, xz and yz planes) already in the tile cache
  (that server prefetches neighbouring sections in the background, as it does for a browser);
- ``tiles_cold``: other tiles of the same kind on a second server with the tile cache and prefetch off
  (``NEUROLAKE_TILE_CACHE_BYTES=0``, ``NEUROLAKE_TILE_PREFETCH_DEPTH=0``): every tile is rendered again
  (from the server's chunk cache, which the capture pass warmed: render cost, not disk reads);
- ``precomputed``: Neuroglancer precomputed raw chunks (128 x 128 x 16) of ``image`` at mip 0;
- ``annotations``: ``GET …/tables/synapses/rows?bbox=…&units=voxels`` on random 256 x 256 x 8 boxes (JSON);
- ``edits``: proofreading merge then undo of the merge, each client its own pair of adjacent supervoxels
  (four roots no other client touches); 409 (conflict) answers are counted apart from errors.

Every family except ``edits`` draws its requests from a pool of ``--pool`` URLs; the exact response
bodies of that pool are written to files first, and the same clients at the same concurrency then
request those files from Starlette's ``StaticFiles`` in a separate uvicorn process: the static ratio
is the family's requests/s (and MB/s) divided by the static server's.

Client and server share the machine (2 cores here, shared with other work): the one-process async client
itself costs CPU, so the static baseline is bounded by the client too; figures vary between runs.

Usage: ``python benchmarks/load.py [--clients 8,16,32] [--duration 10] [--lake PATH] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, write_results  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

DS = "gerhard2013"
BOX = (256, 256, 8)  # x, y, z
FAMILIES = ("ocp_npz", "boss_blosc", "tiles_warm", "tiles_cold", "precomputed", "annotations", "edits")
STATIC_APP = '''
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/", app=StaticFiles(directory={root!r}))])
'''


def neurolake_server(lake: Path, log: Path, env: dict[str, str] | None = None) -> Server:
    return Server(lake, env=env, log=log, timeout=120)


def static_server(root: Path, log: Path) -> Server:
    (root.parent / "static_app.py").write_text(STATIC_APP.format(root=str(root)))
    return Server(None, cmd=[sys.executable, "-m", "uvicorn", "static_app:app", "--app-dir", str(root.parent),
                             "--log-level", "warning"], log=log, timeout=120)


# -- the lake -----------------------------------------------------------------------------------------
def build_lake(path: Path) -> Path:
    """The demo lake (``neurolake.demo.run_demo``: gerhard2013 image, labels, membrane, watershed
    supervoxels made proofreadable, the 50 detected synapses; gala_fibsem) at ``path``, or reused."""
    from neurolake import init_lake
    from neurolake.demo import run_demo

    lake = init_lake(path)
    try:
        run_demo(lake, lambda s: print("  " + s), scheduler="threads")
    finally:
        lake.close()
    return path


def edit_pairs(lake_path: Path, n: int, seed: int = 11) -> list[tuple[int, int]]:
    """``n`` pairs of adjacent supervoxels (neighbours along x in ``supervoxels``) whose roots are
    all different: two roots per pair, no root shared between pairs, so the clients' edits never touch
    the same root."""
    from neurolake import open_lake

    lake = open_lake(lake_path)
    try:
        vol = lake.layer(DS, "supervoxels").cutout(x=(0, 1024), y=(0, 1024), z=(0, 4))  # (z, y, x)
        seg = lake.datastack(DS).segmentation
        a, b = vol[:, :, :-1].ravel(), vol[:, :, 1:].ravel()
        keep = (a != 0) & (b != 0) & (a != b)
        pairs = np.unique(np.stack([a[keep], b[keep]], 1), axis=0)
        rng = np.random.default_rng(seed)
        pairs = pairs[rng.permutation(len(pairs))]
        roots = seg.roots(pairs.ravel()).reshape(-1, 2)
        used: set[int] = set()
        out = []
        for (sa, sb), (ra, rb) in zip(pairs.tolist(), roots.tolist(), strict=True):
            if ra == rb or ra in used or rb in used:
                continue
            used.update((ra, rb))
            out.append((int(sa), int(sb)))
            if len(out) == n:
                return out
    finally:
        lake.close()
    raise RuntimeError(f"only {len(out)} independent supervoxel pairs found, {n} wanted")


# -- requests -------------------------------------------------------------------------------------------
def url_pools(base_info: dict, pool: int, seed: int = 3) -> dict[str, list[str]]:
    """Per family, ``pool`` paths (random boxes, tiles and chunks within the volume)."""
    rng = random.Random(seed)
    sx, sy, sz = base_info["size"]
    bx, by, bz = BOX

    def box():
        x, y, z = rng.randrange(0, sx - bx + 1), rng.randrange(0, sy - by + 1), rng.randrange(0, sz - bz + 1)
        return x, y, z

    out: dict[str, list[str]] = {f: [] for f in FAMILIES if f != "edits"}
    for _ in range(pool):
        x, y, z = box()
        out["ocp_npz"].append(f"/ocp/ca/{DS}/image/npz/0/{x},{x + bx}/{y},{y + by}/{z},{z + bz}/")
        x, y, z = box()
        out["boss_blosc"].append(f"/v1/cutout/{DS}/{DS}/image/0/{x}:{x + bx}/{y}:{y + by}/{z}:{z + bz}/")
        x, y, z = box()
        out["annotations"].append(f"/api/v1/datastacks/{DS}/tables/synapses/rows?units=voxels&bbox="
                                  f"{x},{y},{z},{x + bx},{y + by},{z + bz}")
        cx, cy, cz = base_info["chunk"]
        i, j, k = rng.randrange(0, -(-sx // cx)), rng.randrange(0, -(-sy // cy)), rng.randrange(0, -(-sz // cz))
        out["precomputed"].append(f"/precomputed/{DS}/image/{base_info['key']}/{i * cx}-{min(sx, (i + 1) * cx)}_"
                                  f"{j * cy}-{min(sy, (j + 1) * cy)}_{k * cz}-{min(sz, (k + 1) * cz)}")
    tiles = set()
    while len(tiles) < 2 * pool:  # xy: 20 sections x 2 x 2; xz / yz: 1024 planes x 1 row (20 z) x 2
        plane = rng.choice(("xy", "xz", "yz"))
        if plane == "xy":
            tiles.add(f"/catmaid/{DS}/image/xy/{rng.randrange(sz)}/{rng.randrange(2)}_{rng.randrange(2)}_0.jpg")
        else:
            tiles.add(f"/catmaid/{DS}/image/{plane}/{rng.randrange(sy)}/0_{rng.randrange(2)}_0.jpg")
    tiles = sorted(tiles)
    rng.shuffle(tiles)
    out["tiles_warm"], out["tiles_cold"] = tiles[:pool], tiles[pool:]
    return out


def volume_info(base: str) -> dict:
    import httpx

    info = httpx.get(f"{base}/precomputed/{DS}/image/info", timeout=30).json()
    s = info["scales"][0]
    return {"size": s["size"], "chunk": s["chunk_sizes"][0], "key": s["key"]}


def capture(base: str, paths: list[str], folder: Path) -> list[str]:
    """GET every path once (must be 200), write the body to ``folder``; returns the static file names."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for i, p in enumerate(paths):
            r = c.get(p)
            if r.status_code != 200:
                raise RuntimeError(f"GET {p} -> {r.status_code}: {r.text[:500]}")
            (folder / f"{i}.bin").write_bytes(r.content)
            names.append(f"/{folder.name}/{i}.bin")
    return names


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.nbytes = 0
        self.errors = 0
        self.conflicts = 0
        self.samples: list[dict] = []

    def error(self, **what) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what)


async def _get_loop(client, paths: list[str], stop: float, max_requests: int, st: Stats, rng: random.Random):
    import httpx

    for _ in range(max_requests):
        if time.perf_counter() >= stop:
            return
        p = rng.choice(paths)
        t = time.perf_counter()
        try:
            r = await client.get(p)
        except httpx.HTTPError as exc:
            st.error(route=p, status=None, body=f"{type(exc).__name__}: {exc}")
            continue
        st.lat.append(time.perf_counter() - t)
        st.nbytes += len(r.content)
        if r.status_code != 200:
            st.error(route=p, status=r.status_code, body=r.text[:300])


async def _edit_loop(client, pair: tuple[int, int], stop: float, max_requests: int, st: Stats):
    import httpx

    url = f"/api/v1/datastacks/{DS}/segmentation"
    op = None  # the merge to undo next, or None: merge next
    for _ in range(max_requests):
        if time.perf_counter() >= stop and op is None:  # finish a started pair so the lake ends as it began
            return
        if time.perf_counter() >= stop + 30:
            return
        route, body = ((f"{url}/merge", {"supervoxels": list(pair), "author": "load"}) if op is None else
                       (f"{url}/operations/{op}/undo", {"author": "load"}))
        t = time.perf_counter()
        try:
            r = await client.post(route, json=body)
        except httpx.HTTPError as exc:
            st.error(route=route, status=None, body=f"{type(exc).__name__}: {exc}")
            continue
        st.lat.append(time.perf_counter() - t)
        st.nbytes += len(r.content)
        if r.status_code == 409:
            st.conflicts += 1
        elif r.status_code != 200:
            st.error(route=route, status=r.status_code, body=r.text[:300])
            if op is not None and r.status_code == 400:
                op = None  # nothing to undo any more
        else:
            op = r.json()["operation_id"] if op is None else None


def first_edit(base: str, pair: tuple[int, int]) -> list[float]:
    """Merge ``pair`` then undo it, once (the first edit of a server process loads the segmentation
    state); returns both latencies in ms."""
    import httpx

    url = f"{base}/api/v1/datastacks/{DS}/segmentation"
    out = []
    with httpx.Client(timeout=120) as c:
        t = time.perf_counter()
        r = c.post(f"{url}/merge", json={"supervoxels": list(pair), "author": "load"})
        out.append(round(1000 * (time.perf_counter() - t), 1))
        if r.status_code != 200:
            raise RuntimeError(f"warm-up merge {pair} -> {r.status_code}: {r.text[:500]}")
        t = time.perf_counter()
        r = c.post(f"{url}/operations/{r.json()['operation_id']}/undo", json={"author": "load"})
        out.append(round(1000 * (time.perf_counter() - t), 1))
        if r.status_code != 200:
            raise RuntimeError(f"warm-up undo -> {r.status_code}: {r.text[:500]}")
    return out


def drive(base: str, clients: int, duration: float, max_requests: int, paths: list[str] | None = None,
          pairs: list[tuple[int, int]] | None = None, seed: int = 0) -> dict:
    """``clients`` concurrent request loops for ``duration`` s on one AsyncClient (pool of ``clients``
    connections, 60 s timeout); GETs of random ``paths``, or merge/undo of ``pairs`` (one per client)."""
    import httpx

    async def run() -> tuple[Stats, float]:
        st = Stats()
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            t = time.perf_counter()
            stop = t + duration
            if pairs is not None:
                loops = [_edit_loop(client, pairs[k], stop, max_requests, st) for k in range(clients)]
            else:
                loops = [_get_loop(client, paths, stop, max_requests, st, random.Random(seed * 1000 + k))
                         for k in range(clients)]
            await asyncio.wait_for(asyncio.gather(*loops), duration + 120)
            return st, time.perf_counter() - t

    st, elapsed = asyncio.run(run())
    lat = np.array(st.lat) if st.lat else np.array([np.nan])
    n = len(st.lat)
    return {"clients": clients, "seconds": elapsed, "requests": n, "requests_per_s": n / elapsed,
            "mb_per_s": st.nbytes / 1e6 / elapsed, "mean_body_kb": st.nbytes / 1e3 / max(n, 1),
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "max_ms": 1000 * float(lat.max()), "errors": st.errors, "conflicts_409": st.conflicts,
            "error_samples": st.samples}


# -- main -----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="8,16,32", help="comma-separated concurrencies (8-32)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per family and concurrency")
    ap.add_argument("--max-requests", type=int, default=20_000, help="cap per client and run")
    ap.add_argument("--pool", type=int, default=128, help="distinct URLs per family (also the static files)")
    ap.add_argument("--lake", type=Path, default=None, help="a demo lake to reuse (built there if missing)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 clients, 2 s, pool 16 (load_quick.*)")
    ap.add_argument("--note", default="", help="a sentence on the conditions, added to the results")
    ap.add_argument("--name", default="load", help="results file name (benchmarks/results/NAME.{json,md})")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.duration, args.pool = "8", 2.0, 16
        if args.name == "load":
            args.name = "load_quick"  # a smoke run does not overwrite the real figures
    concurrencies = [int(c) for c in args.clients.split(",")]
    if any(not 1 <= c <= 64 for c in concurrencies):
        ap.error("--clients must be between 1 and 64")
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")

    workdir = Path(tempfile.mkdtemp(prefix="nl-bench-load-"))
    home = workdir / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    lake_path = args.lake or workdir / "lake"
    t = time.perf_counter()
    build_lake(lake_path)
    print(f"lake {lake_path} ready in {time.perf_counter() - t:.1f} s")
    pairs = edit_pairs(lake_path, max(concurrencies) + 1) if "edits" in families else None

    results: dict = {"datastack": DS, "box_xyz": list(BOX), "duration_s": args.duration, "pool": args.pool,
                     "quick": args.quick, "note": args.note, "load_average_1min_start": os.getloadavg()[0],
                     "runs": {}, "server_log_tail": {}}
    logs = workdir / "logs"
    logs.mkdir()
    warm = neurolake_server(lake_path, logs / "neurolake.log")
    cold = neurolake_server(lake_path, logs / "neurolake_cold.log",
                            env={"NEUROLAKE_TILE_CACHE_BYTES": "0", "NEUROLAKE_TILE_PREFETCH_DEPTH": "0"})
    static = None
    try:
        info = volume_info(warm.base)
        pools = url_pools(info, args.pool)
        static_root = workdir / "static" / "files"
        names = {}
        for fam in families:  # bodies of every pool URL, and the warm-up of the chunk and tile caches
            if fam == "edits":
                continue
            names[fam] = capture(cold.base if fam == "tiles_cold" else warm.base, pools[fam], static_root / fam)
        if pairs is not None:  # like the capture pass for the other families: the first edit loads the graph
            results["first_edit_ms"] = first_edit(warm.base, pairs.pop())
            print(f"first merge + undo after server start: {results['first_edit_ms']} ms")
        static = static_server(static_root, logs / "static.log")
        for c in concurrencies:
            for fam in families:
                key = f"{fam}@{c}"
                srv = cold if fam == "tiles_cold" else warm
                print(f"{key}: {args.duration:g} s ...", flush=True)
                if fam == "edits":
                    r = drive(srv.base, c, args.duration, args.max_requests, pairs=pairs)
                else:
                    r = drive(srv.base, c, args.duration, args.max_requests, paths=pools[fam], seed=c)
                    s = drive(static.base, c, args.duration, args.max_requests, paths=names[fam], seed=c)
                    r["static"] = {k: s[k] for k in ("requests", "requests_per_s", "mb_per_s", "p50_ms", "p99_ms",
                                                     "max_ms", "errors", "error_samples")}
                    r["static_ratio"] = r["requests_per_s"] / s["requests_per_s"] if s["requests_per_s"] else None
                    r["static_mb_ratio"] = r["mb_per_s"] / s["mb_per_s"] if s["mb_per_s"] else None
                results["runs"][key] = {"family": fam, **r}
                print(f"  {r['requests']} requests, {r['requests_per_s']:.0f}/s, {r['mb_per_s']:.1f} MB/s, "
                      f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}"
                      + (f", 409 {r['conflicts_409']}" if fam == "edits" else "")
                      + (f", static ratio {r['static_ratio']:.2f}" if r.get("static_ratio") else ""), flush=True)
                for e in r["error_samples"]:
                    print(f"  ERROR {e}")
        if warm.proc.poll() is not None or cold.proc.poll() is not None:
            print("a neurolake server process died during the run")
    finally:
        for name, p in (("neurolake", warm), ("neurolake_cold", cold), ("static", static)):
            if p is not None:
                alive = p.proc.poll() is None
                p.stop()
                results["server_log_tail"][name] = {"alive_at_end": alive, "log": p.tail(3000) if p.log.exists()
                                                    else ""}
    results["load_average_1min_end"] = os.getloadavg()[0]
    if any(r["errors"] for r in results["runs"].values()):
        for name, v in results["server_log_tail"].items():
            if v["log"]:
                print(f"--- {name} server log (tail) ---\n{v['log']}")

    lines = [f"Datastack `{DS}` of the demo lake (real ssTEM, Gerhard et al. 2013, 20 x 1024 x 1024 uint8; "
             f"the 50 demo synapses; the demo's proofreadable watershed supervoxels). One `neurolake serve` "
             "process (uvicorn, one worker) on 127.0.0.1; clients = concurrent request loops of one "
             "`httpx.AsyncClient` in one process with one keep-alive connection each, back to back, "
             f"{args.duration:g} s per family and concurrency; each family draws from {args.pool} distinct URLs "
             f"(cutouts: random {BOX[0]}x{BOX[1]}x{BOX[2]} (x, y, z) boxes at mip 0). Static = the exact same "
             "response bodies served as files by Starlette `StaticFiles` (separate uvicorn process), same client "
             f"and concurrency. {os.cpu_count()} cores shared by client, servers and other engineers' work: "
             f"load average (1 min) {results['load_average_1min_start']:.1f} at start, "
             f"{results['load_average_1min_end']:.1f} at end; figures are noisy (vary ~2x between runs)."
             + (" Quick smoke run." if args.quick else "") + (f" {args.note}" if args.note else ""), "",
             "Families: `ocp_npz` / `boss_blosc` cutouts of `image` (npz = deflate level 1, blosc); `tiles_warm` "
             "512x512 JPEG tiles (xy, xz, yz) from the tile cache (prefetch on); `tiles_cold` the same kind of tiles "
             "re-rendered on every request (second server, tile cache and prefetch off, chunk cache warm); "
             "`precomputed` raw 128x128x16 chunks; `annotations` bbox row queries on the 50 synapses (JSON); "
             "`edits` merge then undo of one pair of adjacent supervoxels per client (409 conflicts counted apart). "
             "Errors = non-2xx answers (other than edit 409s), timeouts and connection errors.", "",
             "| family | clients | requests | req/s | MB/s | p50 ms | p99 ms | max ms | errors | static req/s "
             "| ratio req/s (MB/s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"].values():
        st = r.get("static")
        err = str(r["errors"]) + (f" (+{r['conflicts_409']} 409)" if r["family"] == "edits" else "")
        lines.append(f"| {r['family']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.0f} | "
                     f"{r['mb_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {err} | "
                     + (f"{st['requests_per_s']:.0f} | {r['static_ratio']:.2f} ({r['static_mb_ratio']:.2f}) |"
                        if st else "- | - |"))
    if "first_edit_ms" in results:
        a, b = results["first_edit_ms"]
        lines += ["", f"Not in the table: the first merge after the server started took {a:.0f} ms (it loads the "
                  f"segmentation state), its undo {b:.0f} ms; the edit runs start after that warm-up."]
    errs = [(k, e) for k, r in results["runs"].items() for e in r["error_samples"]]
    errs += [(k + " static", e) for k, r in results["runs"].items() for e in (r.get("static") or {}).get(
        "error_samples", [])]
    lines += ["", "Errors: none." if not errs else "Errors (first samples per run):"]
    lines += [f"- {k}: {e['route']} -> {e['status']}: `{e['body'][:200]}`" for k, e in errs]
    write_results(args.name, results, lines)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
