"""Serving benchmark (issue 3 targets), measured through a real ``neurolake serve`` process on loopback.

Prints and writes ``benchmarks/results/serving.{json,md}``:

1. Tiles while scrolling through z: 1024 x 1024 frames (2 x 2 tiles of 512 x 512 at mip 0, fetched
   concurrently on 4 keep-alive connections like a browser), the client scrolling one section per
   frame as fast as the server answers.
   - cold with prefetch: a fresh server process (empty tile cache and chunk cache; the OS page cache
     is not dropped), frames/s after the first frame. Target >= 30 frames/s.
   - cold without prefetch (``NEUROLAKE_TILE_PREFETCH_DEPTH=0``), for comparison.
   - warm: the same scroll again on the same server (every tile cached). Target >= 60 frames/s
     (240 tiles/s); plus tiles/s of cached tiles with 8 concurrent connections.
2. Read throughput of intern (BossDB API, blosc) and cloud-volume (precomputed, raw chunks) vs
   neurolake's own Python ``Layer.cutout`` on the same boxes (MB/s of uncompressed voxels; ratios).

The volume is real ssTEM content (Gerhard et al. 2013) tiled to ``--sections`` x ``--size`` x
``--size`` (z, y, x) uint8 by ``_common.em_volume_slab`` and ingested as a normal layer.

Usage: ``python benchmarks/serving.py [--sections 64] [--size 2048] [--format jpg] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, em_volume_slab, gerhard_stack, median, write_results  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


class TileServer(Server):
    """The benchmark's server, with its tile-cache counters."""

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.base + "/api/v1/stats").json()["tiles"]


def build_lake(workdir: Path, sections: int, size: int) -> Path:
    from neurolake import init_lake, open_lake

    lake_path = workdir / "lake"
    if (lake_path / "datastacks" / "bench" / "volumes" / "em").exists():
        return lake_path
    src = gerhard_stack()
    npy = workdir / "em.npy"
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(sections, size, size))
    for z0 in range(0, sections, 16):
        z1 = min(sections, z0 + 16)
        arr[z0:z1] = em_volume_slab(src, z0, z1, size, size)
    arr.flush()
    del arr
    lake = init_lake(lake_path) if not lake_path.exists() else open_lake(lake_path)
    lake.create_datastack("bench", (4.6, 4.6, 50.0), exist_ok=True)
    lake.ingest(str(npy), "bench", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image", scheduler="threads")
    lake.close()
    npy.unlink()
    return lake_path


def scroll(base: str, sections: int, fmt: str, frame_tiles: int = 2, connections: int = 4,
           paced_fps: float | None = None) -> dict:
    """Scroll z = 0..sections-1; each frame = frame_tiles x frame_tiles tiles fetched concurrently.

    Unpaced, the next frame is requested when the previous one arrived; paced, frame k is requested
    at k / paced_fps seconds (or when the previous one arrived, if later) and its latency is measured.
    """
    import httpx

    clients = [httpx.Client(timeout=60) for _ in range(connections)]
    tiles = [(r, c) for r in range(frame_tiles) for c in range(frame_tiles)]
    frame_times = []
    nbytes = 0

    def fetch(i_rc):
        i, (r, c) = i_rc
        resp = clients[i % connections].get(f"{base}/catmaid/bench/em/xy/{z}/{r}_{c}_0.{fmt}")
        resp.raise_for_status()
        return len(resp.content)

    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        for z in range(sections):
            if paced_fps and z:
                delay = start + z / paced_fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            t = time.perf_counter()
            nbytes += sum(pool.map(fetch, enumerate(tiles)))
            frame_times.append(time.perf_counter() - t)
    for c in clients:
        c.close()
    after_first = frame_times[1:]
    if paced_fps:
        budget = 1 / paced_fps
        return {"paced_fps": paced_fps, "frames": len(frame_times), "first_frame_s": frame_times[0],
                "median_latency_ms": 1000 * median(after_first),
                "p90_latency_ms": 1000 * float(np.percentile(after_first, 90)),
                "max_latency_ms": 1000 * max(after_first),
                "on_time_fraction": float(np.mean(np.array(after_first) <= budget))}
    return {"frames": len(frame_times), "tiles_per_frame": len(tiles), "first_frame_s": frame_times[0],
            "fps_after_first": len(after_first) / sum(after_first),
            "tiles_per_s_after_first": len(after_first) * len(tiles) / sum(after_first),
            "median_frame_ms": 1000 * median(after_first), "max_frame_ms": 1000 * max(after_first),
            "p90_frame_ms": 1000 * float(np.percentile(after_first, 90)), "mean_tile_bytes": nbytes / len(frame_times)
            / len(tiles)}


def hammer(base: str, sections: int, fmt: str, seconds: float = 5.0, connections: int = 8) -> float:
    """Cached-tile throughput: ``connections`` clients fetching cached tiles in a loop; tiles/s."""
    import httpx

    stop = time.perf_counter() + seconds

    def worker(k: int) -> int:
        n = 0
        with httpx.Client(timeout=60) as c:
            while time.perf_counter() < stop:
                z = (n * connections + k) % sections
                c.get(f"{base}/catmaid/bench/em/xy/{z}/{n % 2}_{k % 2}_0.{fmt}").raise_for_status()
                n += 1
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        total = sum(pool.map(worker, range(connections)))
    return total / (time.perf_counter() - t)


def read_throughput(lake_path: Path, base: str, boxes, repeat: int) -> list[dict]:
    """intern and cloud-volume vs Layer.cutout on the same boxes; MB/s of uncompressed voxels."""
    from cloudvolume import CloudVolume
    from intern.remote.boss import BossRemote

    from neurolake import open_lake

    rows = []
    rmt = BossRemote({"protocol": "http", "host": base.removeprefix("http://"), "token": "bench"})
    ch = rmt.get_channel("em", "bench", "bench")
    cv = CloudVolume(f"precomputed://{base}/precomputed/bench/em", progress=False, cache=False, parallel=1)
    for (x, y, z) in boxes:
        mb = (x[1] - x[0]) * (y[1] - y[0]) * (z[1] - z[0]) / 1e6
        lake = open_lake(lake_path)  # fresh chunk cache for the cold Python call
        layer = lake.layer("bench", "em")
        t = time.perf_counter()
        want = layer.cutout(x=x, y=y, z=z)
        py_cold = time.perf_counter() - t
        py_warm = []
        for _ in range(repeat):
            t = time.perf_counter()
            layer.cutout(x=x, y=y, z=z)
            py_warm.append(time.perf_counter() - t)
        it, ct = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            got = rmt.get_cutout(ch, 0, list(x), list(y), list(z), parallel=False)
            it.append(time.perf_counter() - t)
            assert np.array_equal(got, want)
            t = time.perf_counter()
            got = np.asarray(cv[x[0]:x[1], y[0]:y[1], z[0]:z[1]])
            ct.append(time.perf_counter() - t)
            assert np.array_equal(got[..., 0].T, want)
        lake.close()
        row = {"box_xyz": f"{x[1] - x[0]}x{y[1] - y[0]}x{z[1] - z[0]}", "mb": mb,
               "python_cold_mb_s": mb / py_cold, "python_warm_mb_s": mb / median(py_warm),
               "intern_mb_s": mb / median(it), "cloudvolume_mb_s": mb / median(ct)}
        row["intern_vs_python_warm"] = row["intern_mb_s"] / row["python_warm_mb_s"]
        row["cloudvolume_vs_python_warm"] = row["cloudvolume_mb_s"] / row["python_warm_mb_s"]
        row["intern_vs_python_cold"] = row["intern_mb_s"] / row["python_cold_mb_s"]
        row["cloudvolume_vs_python_cold"] = row["cloudvolume_mb_s"] / row["python_cold_mb_s"]
        rows.append(row)
        print(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", type=int, default=64, help="z sections of the benchmark volume")
    ap.add_argument("--size", type=int, default=2048, help="x and y size of the benchmark volume")
    ap.add_argument("--format", default="jpg", choices=["jpg", "png"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paced-fps", type=float, default=30.0, help="frame rate of the paced cold scrolls")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nl-bench-serving-"))
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    os.environ["HOME"] = str(home)  # intern and cloud-volume write under ~
    t = time.perf_counter()
    lake_path = build_lake(workdir, args.sections, args.size)
    print(f"volume ({args.sections}, {args.size}, {args.size}) z, y, x uint8 ready in {time.perf_counter() - t:.1f} s")
    env = {"NEUROLAKE_TILE_CACHE_BYTES": str(1 << 30)}
    results: dict = {"volume_zyx": [args.sections, args.size, args.size], "format": args.format, "tiles": {},
                     "load_average_1min_start": os.getloadavg()[0]}

    for depth in ("0", "8"):  # paced scrolls at the target frame rate, fresh server each
        srv = TileServer(lake_path, env={**env, "NEUROLAKE_TILE_PREFETCH_DEPTH": depth})
        try:
            name = "paced_cold_prefetch" if depth != "0" else "paced_cold_no_prefetch"
            results["tiles"][name] = scroll(srv.base, args.sections, args.format, paced_fps=args.paced_fps)
        finally:
            srv.stop()
    srv = TileServer(lake_path, env={**env, "NEUROLAKE_TILE_PREFETCH_DEPTH": "0"})
    try:
        results["tiles"]["cold_no_prefetch"] = scroll(srv.base, args.sections, args.format)
    finally:
        srv.stop()
    srv = TileServer(lake_path, env={**env, "NEUROLAKE_TILE_PREFETCH_DEPTH": "8"})
    try:
        results["tiles"]["cold_prefetch"] = scroll(srv.base, args.sections, args.format)
        time.sleep(1)
        results["tiles"]["cold_prefetch"]["stats"] = srv.stats()
        results["tiles"]["warm"] = scroll(srv.base, args.sections, args.format)
        results["tiles"]["warm_tiles_per_s_8_connections"] = hammer(srv.base, args.sections, args.format)
        results["tiles"]["stats_end"] = srv.stats()
        # 512 x 512 x 16 at the origin and 1024 x 1024 x 16 in the middle (smaller for small volumes)
        s, n = args.size, args.sections
        b, z0 = min(1024, s // 2), min(16, n // 2)
        boxes = [((0, min(512, s)), (0, min(512, s)), (0, min(16, n))),
                 ((s // 4, s // 4 + b), (s // 4, s // 4 + b), (z0, min(n, z0 + 16)))]
        results["reads"] = read_throughput(lake_path, srv.base, boxes, args.repeat)
    finally:
        srv.stop()

    results["load_average_1min_end"] = os.getloadavg()[0]
    tl = results["tiles"]
    lines = [f"Volume: {results['volume_zyx']} (z, y, x) uint8 tiled from real ssTEM sections (Gerhard et al. 2013); "
             f"{os.cpu_count()} cores shared with other work; one uvicorn server process on loopback; "
             f"tiles {args.format}, 512x512; a frame = 2x2 tiles (1024x1024) fetched on 4 connections; "
             "the client scrolls one section per frame as fast as the server answers. "
             f"Load average (1 min) {results['load_average_1min_start']:.1f} at start, "
             f"{results['load_average_1min_end']:.1f} at end: figures vary ~2x between runs on this machine.", "",
             "| scroll | first frame ms | frames/s after first (target) | tiles/s | median / p90 / max frame ms |",
             "|---|---|---|---|---|"]
    for name, target in (("cold_no_prefetch", "-"), ("cold_prefetch", ">= 30"), ("warm", ">= 60")):
        r = tl[name]
        lines.append(f"| {name} | {1000 * r['first_frame_s']:.0f} | {r['fps_after_first']:.1f} ({target}) | "
                     f"{r['tiles_per_s_after_first']:.0f} | {r['median_frame_ms']:.1f} / {r['p90_frame_ms']:.1f} / "
                     f"{r['max_frame_ms']:.1f} |")
    lines += ["", f"Paced cold scroll at {args.paced_fps:g} frames/s (frame k requested at k/{args.paced_fps:g} s; "
              "latency = request to last tile of the frame):", "",
              "| paced scroll | first frame ms | median / p90 / max latency ms | frames within budget |",
              "|---|---|---|---|"]
    for name in ("paced_cold_no_prefetch", "paced_cold_prefetch"):
        r = tl[name]
        lines.append(f"| {name} | {1000 * r['first_frame_s']:.0f} | {r['median_latency_ms']:.1f} / "
                     f"{r['p90_latency_ms']:.1f} / {r['max_latency_ms']:.1f} | {100 * r['on_time_fraction']:.0f}% |")
    st = tl["stats_end"]
    lines += ["", f"Cached tiles with 8 concurrent connections: {tl['warm_tiles_per_s_8_connections']:.0f} tiles/s "
              f"(target 240). Cache at the end: {st['entries']} tiles, {st['bytes'] / 1e6:.1f} MB, hits {st['hits']}, "
              f"misses {st['misses']}, prefetched {st['prefetched']}, prefetch hits {st['prefetch_hits']}, "
              f"prefetch dropped {st['prefetch_dropped']}.", "",
              "| box (x*y*z) | Python cutout cold / warm MB/s | intern MB/s (vs warm, vs cold) | "
              "cloud-volume MB/s (vs warm, vs cold) |", "|---|---|---|---|"]
    for r in results["reads"]:
        lines.append(f"| {r['box_xyz']} | {r['python_cold_mb_s']:.0f} / {r['python_warm_mb_s']:.0f} | "
                     f"{r['intern_mb_s']:.0f} ({r['intern_vs_python_warm']:.2f}, {r['intern_vs_python_cold']:.2f}) | "
                     f"{r['cloudvolume_mb_s']:.0f} ({r['cloudvolume_vs_python_warm']:.2f}, "
                     f"{r['cloudvolume_vs_python_cold']:.2f}) |")
    write_results("serving", results, lines)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
