"""Serving benchmark (issue 19: serve at the speed of the disk), through real server processes on loopback.

Same data, same run, every figure repeated (``--repeat``, default 5) with min and median:

1. cloud-volume reading ``precomputed://http://…/precomputed/bench/em`` from ``neurolake serve`` vs the same
   client reading the same volume as a local ``file://`` precomputed folder (raw chunks written from the
   layer), and vs the same folder served by Starlette ``StaticFiles`` (an HTTP ceiling); boxes 512 x 512 x 16
   and 256^3, cold (a new client, a box never read before in this run) and warm (the same client reading the
   same box again). Ratio neurolake / file:// (target >= 0.7).
2. tensorstore ``zarr3`` over ``/zarr/bench/em/0/`` vs the same Zarr array opened locally (``file`` kvstore),
   and vs StaticFiles serving the layer folder (HTTP ceiling); the same boxes, cold (a new context and a new
   box) and warm (the same store, the same box). Ratio neurolake / local >= 0.7.
3. Server CPU per MB served (user + system time of the server process, /proc) during the cloud-volume reads:
   neurolake (which cuts every chunk from the sharded Zarr layer) vs StaticFiles sending the raw chunk files
   (target <= 1.5x).
4. Tiles (512 x 512 JPEG, CATMAID ``xy``) while scrolling: frames of 2 x 2 tiles fetched on 4 keep-alive
   connections, one section per frame. Warm: every tile cached, vs StaticFiles sending the same JPEG bytes
   with the same client (target >= 0.7). Cold with prefetch: sections never read before, vs the machine's
   JPEG encode rate of the same tiles with the server's encoder on all cores (target >= 0.7).

The volume is 256 x 2048 x 2048 (z, y, x) uint8 = 1.07 GB of real ssTEM content (Gerhard et al. 2013, tiled
and flipped by ``_common.em_volume_slab``), ingested as a normal layer. The OS page cache is not dropped
(shared machine): "cold" means cold for the client and for the server's caches.

Usage: ``python benchmarks/serving.py [--sections 256] [--size 2048] [--repeat 5] [--workdir DIR]``
(a kept ``--workdir`` skips building the volume next time).
"""

from __future__ import annotations

import argparse
import json
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
CHUNK = (16, 128, 128)  # z, y, x: the layer's inner chunk = the precomputed chunk

STATIC_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
args = sys.argv[1:]
root = args[-1]
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
app = Starlette(routes=[Mount("/", StaticFiles(directory=root))])
uvicorn.run(app, host=host, port=port, log_level="warning")
"""


# -- data ---------------------------------------------------------------------------------------------
def build(workdir: Path, sections: int, size: int) -> tuple[Path, Path]:
    """The lake (layer bench/em) and a static tree ``static/precomputed/bench/em`` (info + raw mip-0 chunks)."""
    from neurolake import init_lake, open_lake

    lake_path, static = workdir / "lake", workdir / "static"
    pc = static / "precomputed" / "bench" / "em"
    if (pc / "info").exists():
        return lake_path, static
    src = gerhard_stack()
    npy = workdir / "em.npy"
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(sections, size, size))
    for z0 in range(0, sections, 16):
        arr[z0:z0 + 16] = em_volume_slab(src, z0, min(sections, z0 + 16), size, size)
    arr.flush()
    del arr
    lake = init_lake(lake_path) if not lake_path.exists() else open_lake(lake_path)
    lake.create_datastack("bench", (4.6, 4.6, 50.0), exist_ok=True)
    layer = lake.ingest(str(npy), "bench", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image",
                        scheduler="threads", overwrite=True)
    from neurolake.volumes import precomputed as pcm

    info = pcm.info(layer)
    info["scales"] = info["scales"][:1]  # mip 0 is what the benchmark reads
    key = info["scales"][0]["key"]
    (pc / key).mkdir(parents=True, exist_ok=True)
    data = np.load(npy, mmap_mode="r")
    cz, cy, cx = CHUNK
    for z0 in range(0, sections, cz):
        slab = np.ascontiguousarray(data[z0:z0 + cz])
        for y0 in range(0, size, cy):
            for x0 in range(0, size, cx):
                z1, y1, x1 = min(sections, z0 + cz), min(size, y0 + cy), min(size, x0 + cx)
                name = f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
                (pc / key / name).write_bytes(np.ascontiguousarray(slab[:, y0:y1, x0:x1]).tobytes())
    (pc / "info").write_text(json.dumps(info))
    lake.close()
    npy.unlink()
    return lake_path, static


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(xs: list[float]) -> dict:
    return {"min": min(xs), "median": median(xs), "all": xs}


# -- 1 + 3: cloud-volume ----------------------------------------------------------------------------
def boxes_for(kind: str, k: int, sections: int, size: int):
    """The k-th box of a kind, never the same region twice ((x0, x1), (y0, y1), (z0, z1))."""
    if kind == "512x512x16":
        per = size // 512
        i, j, z = k % per, (k // per) % per, (k // (per * per)) * 16 + 16 * 7
        return (512 * i, 512 * i + 512), (512 * j, 512 * j + 512), (z % sections, z % sections + 16)
    per = size // 256
    pos = (7 * k + 3) % (per * per)  # distinct for k modulo per^2
    i, j = pos % per, pos // per
    return (256 * i, 256 * i + 256), (256 * j, 256 * j + 256), (0, min(256, sections))


def cloudvolume_reads(urls: dict[str, str], pids: dict[str, int], repeat: int, sections: int, size: int,
                      want_of) -> dict:
    from cloudvolume import CloudVolume

    def open_cv(url):
        return CloudVolume(url, progress=False, cache=False, parallel=1, fill_missing=False)

    out: dict = {}
    k = 0
    for kind in ("512x512x16", "256x256x256"):
        res: dict = {}
        for name in urls:
            res[name] = {"cold_s": [], "warm_s": [], "cpu_s": 0.0, "mb": 0.0}
        for _ in range(repeat):
            box = boxes_for(kind, k, sections, size)
            k += 1
            want = want_of(box)
            for name, url in urls.items():
                (x0, x1), (y0, y1), (z0, z1) = box
                c0 = cpu_seconds(pids[name]) if name in pids else 0.0
                t = time.perf_counter()
                cv = open_cv(url)
                got = cv[x0:x1, y0:y1, z0:z1]
                res[name]["cold_s"].append(time.perf_counter() - t)
                assert np.array_equal(np.asarray(got)[..., 0].T, want), (name, box)
                cv[x0:x1, y0:y1, z0:z1]  # warm-up of this client on this box
                t = time.perf_counter()
                got = cv[x0:x1, y0:y1, z0:z1]
                res[name]["warm_s"].append(time.perf_counter() - t)
                if name in pids:
                    res[name]["cpu_s"] += cpu_seconds(pids[name]) - c0
                    res[name]["mb"] += 3 * want.nbytes / 1e6
        mb = int(np.prod([b - a for a, b in box])) / 1e6
        row = {"mb": mb}
        for name in urls:
            row[name] = {"cold_mb_s": stats([mb / s for s in res[name]["cold_s"]]),
                         "warm_mb_s": stats([mb / s for s in res[name]["warm_s"]])}
            if res[name]["mb"]:
                row[name]["server_cpu_ms_per_mb"] = 1000 * res[name]["cpu_s"] / res[name]["mb"]
        for w in ("cold", "warm"):
            row[f"ratio_{w}_neurolake_vs_file"] = (row["neurolake"][f"{w}_mb_s"]["median"]
                                                   / row["file"][f"{w}_mb_s"]["median"])
            row[f"ratio_{w}_static_vs_file"] = (row["static"][f"{w}_mb_s"]["median"]
                                                / row["file"][f"{w}_mb_s"]["median"])
        row["cpu_per_mb_neurolake_vs_static"] = (row["neurolake"]["server_cpu_ms_per_mb"]
                                                 / row["static"]["server_cpu_ms_per_mb"])
        out[kind] = row
        print("cloud-volume", kind, json.dumps({n: row[n] for n in row if n.startswith(("ratio", "cpu"))}))
    return out


# -- 2: tensorstore zarr3 -------------------------------------------------------------------------------
def tensorstore_reads(base: str, static_base: str, lake_path: Path, repeat: int, sections: int, size: int,
                      want_of) -> dict:
    import tensorstore as ts

    local = str(lake_path / "datastacks" / "bench" / "volumes" / "em" / "0") + "/"
    specs = {"neurolake": {"driver": "zarr3", "kvstore": f"{base}/zarr/bench/em/0/"},
             "file": {"driver": "zarr3", "kvstore": {"driver": "file", "path": local}},
             "static": {"driver": "zarr3", "kvstore": f"{static_base}/0/"}}
    out: dict = {}
    k = 100
    for kind in ("512x512x16", "256x256x256"):
        res = {n: {"cold_s": [], "warm_s": []} for n in specs}
        for _ in range(repeat):
            box = boxes_for(kind, k, sections, size)
            k += 1
            want = want_of(box)
            (x0, x1), (y0, y1), (z0, z1) = box
            for name, spec in specs.items():
                t = time.perf_counter()
                arr = ts.open(spec, context=ts.Context(), open=True).result()
                got = arr[z0:z1, y0:y1, x0:x1].read().result()
                res[name]["cold_s"].append(time.perf_counter() - t)
                assert np.array_equal(got, want), (name, box)
                arr[z0:z1, y0:y1, x0:x1].read().result()
                t = time.perf_counter()
                arr[z0:z1, y0:y1, x0:x1].read().result()
                res[name]["warm_s"].append(time.perf_counter() - t)
        mb = int(np.prod([b - a for a, b in box])) / 1e6
        row = {"mb": mb}
        for name in specs:
            row[name] = {"cold_mb_s": stats([mb / s for s in res[name]["cold_s"]]),
                         "warm_mb_s": stats([mb / s for s in res[name]["warm_s"]])}
        for w in ("cold", "warm"):
            for name in ("neurolake", "static"):
                row[f"ratio_{w}_{name}_vs_file"] = (row[name][f"{w}_mb_s"]["median"]
                                                    / row["file"][f"{w}_mb_s"]["median"])
        out[kind] = row
        print("tensorstore", kind, json.dumps({n: row[n] for n in row if n.startswith("ratio")}))
    return out


# -- 4: tiles -----------------------------------------------------------------------------------------
def scroll(base: str, z_range: range, fmt: str = "jpg", rows=(0, 1), cols=(0, 1), connections: int = 4) -> dict:
    """One frame per section of ``z_range``; a frame = the tiles rows x cols fetched concurrently."""
    import httpx

    clients = [httpx.Client(timeout=60) for _ in range(connections)]
    tiles = [(r, c) for r in rows for c in cols]
    frame_times, nbytes = [], 0

    def fetch(z_i_rc):
        z, i, (r, c) = z_i_rc
        resp = clients[i % connections].get(f"{base}/catmaid/bench/em/xy/{z}/{r}_{c}_0.{fmt}")
        resp.raise_for_status()
        return len(resp.content)

    with ThreadPoolExecutor(connections) as pool:
        for z in z_range:
            t = time.perf_counter()
            nbytes += sum(pool.map(fetch, [(z, i, rc) for i, rc in enumerate(tiles)]))
            frame_times.append(time.perf_counter() - t)
    for c in clients:
        c.close()
    after = frame_times[1:]
    return {"frames": len(frame_times), "first_frame_ms": 1000 * frame_times[0],
            "tiles_per_s": len(after) * len(tiles) / sum(after), "fps": len(after) / sum(after),
            "p90_frame_ms": 1000 * float(np.percentile(after, 90)), "bytes": nbytes}


def jpeg_encode_rate(lake_path: Path, z_range: range, rows=(0, 1), cols=(0, 1)) -> float:
    """Tiles/s of the server's own encoder (``encode_tile``) on the same 512 x 512 planes, one thread per core."""
    from neurolake import open_lake
    from neurolake.volumes.tiles import TILE, encode_tile

    lake = open_lake(lake_path)
    arr = lake.layer("bench", "em").cutout(x=(0, TILE * len(cols)), y=(0, TILE * len(rows)),
                                           z=(z_range.start, z_range.stop))
    lake.close()
    planes = [np.ascontiguousarray(arr[z, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE])
              for z in range(arr.shape[0]) for r in range(len(rows)) for c in range(len(cols))]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda p: encode_tile(p, "image", "jpg"), planes[:8]))
        t = time.perf_counter()
        list(pool.map(lambda p: encode_tile(p, "image", "jpg"), planes))
        return len(planes) / (time.perf_counter() - t)


def tiles(lake_path: Path, workdir: Path, repeat: int, sections: int, env: dict) -> dict:
    import httpx

    per = max(16, min(64, sections // (repeat + 1)))
    ranges = [range(i * per, (i + 1) * per) for i in range(repeat)]
    srv = Server(lake_path, env={**env, "NEUROLAKE_TILE_PREFETCH_DEPTH": "8"}, log=workdir / "tiles-server.log")
    cold, warm, static_runs, encode = [], [], [], []
    tiles_dir = workdir / "static"
    static = None
    try:
        for zr in ranges:  # sections never read before by this server: cold, with prefetch
            cold.append(scroll(srv.base, zr))
            encode.append(jpeg_encode_rate(lake_path, zr))  # interleaved: load changes hit both alike
        time.sleep(1)
        # the same JPEG bytes as static files, same URLs
        with httpx.Client() as c:
            for z in ranges[0]:
                for r in (0, 1):
                    for col in (0, 1):
                        path = f"catmaid/bench/em/xy/{z}/{r}_{col}_0.jpg"
                        (tiles_dir / path).parent.mkdir(parents=True, exist_ok=True)
                        (tiles_dir / path).write_bytes(c.get(f"{srv.base}/{path}").content)
        static = Server(None, str(tiles_dir), cmd=[sys.executable, "-c", STATIC_APP])
        for _ in range(repeat):  # interleaved
            warm.append(scroll(srv.base, ranges[0]))
            static_runs.append(scroll(static.base, ranges[0]))
        st = httpx.get(srv.base + "/api/v1/stats").json()["tiles"]
    finally:
        srv.stop()
        if static is not None:
            static.stop()
    out = {"cold_prefetch_tiles_per_s": stats([r["tiles_per_s"] for r in cold]),
           "warm_tiles_per_s": stats([r["tiles_per_s"] for r in warm]),
           "static_tiles_per_s": stats([r["tiles_per_s"] for r in static_runs]),
           "jpeg_encode_tiles_per_s": stats(encode),
           "cold_first_frame_ms": stats([r["first_frame_ms"] for r in cold]),
           "cold_p90_frame_ms": stats([r["p90_frame_ms"] for r in cold]),
           "warm_p90_frame_ms": stats([r["p90_frame_ms"] for r in warm]),
           "frames_per_scroll": per, "cache_stats": st}
    out["ratio_warm_vs_static"] = out["warm_tiles_per_s"]["median"] / out["static_tiles_per_s"]["median"]
    out["ratio_cold_prefetch_vs_encode"] = (out["cold_prefetch_tiles_per_s"]["median"]
                                            / out["jpeg_encode_tiles_per_s"]["median"])
    print("tiles", json.dumps({k: v for k, v in out.items() if k.startswith("ratio")}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", type=int, default=256, help="z sections of the benchmark volume")
    ap.add_argument("--size", type=int, default=2048, help="x and y size of the benchmark volume")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nl-bench-serving-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    os.environ["HOME"] = str(workdir / "home")  # cloud-volume writes under ~
    t = time.perf_counter()
    lake_path, static_dir = build(workdir, args.sections, args.size)
    build_s = time.perf_counter() - t
    gb = args.sections * args.size * args.size / 1e9
    print(f"volume ({args.sections}, {args.size}, {args.size}) z, y, x uint8 = {gb:.2f} GB ready in {build_s:.0f} s")
    results: dict = {"volume_zyx": [args.sections, args.size, args.size], "volume_gb": gb, "repeat": args.repeat,
                     "build_s": build_s,
                     "load_average_1min_start": os.getloadavg()[0]}
    from neurolake import open_lake

    truth = open_lake(lake_path)
    truth_layer = truth.layer("bench", "em")

    def want_of(box):
        return truth_layer.cutout(*box)

    env = {"NEUROLAKE_TILE_CACHE_BYTES": str(1 << 30)}
    nl = Server(lake_path, env=env, log=workdir / "server.log")
    static = Server(None, str(static_dir), cmd=[sys.executable, "-c", STATIC_APP])
    static_zarr = Server(None, str(lake_path / "datastacks" / "bench" / "volumes" / "em"),
                         cmd=[sys.executable, "-c", STATIC_APP])  # the layer folder itself
    try:
        urls = {"neurolake": f"precomputed://{nl.base}/precomputed/bench/em",
                "file": f"precomputed://file://{static_dir}/precomputed/bench/em",
                "static": f"precomputed://{static.base}/precomputed/bench/em"}
        results["cloudvolume"] = cloudvolume_reads(urls, {"neurolake": nl.proc.pid, "static": static.proc.pid},
                                                   args.repeat, args.sections, args.size, want_of)
        results["tensorstore"] = tensorstore_reads(nl.base, static_zarr.base, lake_path, args.repeat, args.sections,
                                                   args.size, want_of)
    finally:
        nl.stop()
        static.stop()
        static_zarr.stop()
    truth.close()
    results["tiles"] = tiles(lake_path, workdir, args.repeat, args.sections, env)
    results["load_average_1min_end"] = os.getloadavg()[0]
    write_results("serving", results, summary(results, args))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _mm(s: dict, fmt: str = ".0f") -> str:
    return f"{s['min']:{fmt}} / {s['median']:{fmt}}"


def summary(res: dict, args) -> list[str]:
    z, y, x = res["volume_zyx"]
    lines = [f"Volume {z} x {y} x {x} (z, y, x) uint8 = {res['volume_gb']:.2f} GB of real ssTEM content (Gerhard et "
             f"al. 2013, tiled); {os.cpu_count()} cores shared with other sessions (load average "
             f"{res['load_average_1min_start']:.1f} at start, {res['load_average_1min_end']:.1f} at end); one "
             f"`neurolake serve` process and one Starlette StaticFiles process on loopback (volume, lake and chunk "
             f"files built in {res['build_s']:.0f} s); each figure "
             f"{args.repeat} times, **min / median**. Cold = a new client and a box never read before in this run "
             "(the OS page cache is not dropped); warm = the same client reading the same box again.", "",
             "## cloud-volume: precomputed over HTTP vs file://", "",
             "| box | file:// MB/s cold | neurolake MB/s cold | StaticFiles MB/s cold | file:// warm | neurolake warm "
             "| StaticFiles warm | neurolake / file:// cold, warm (target >= 0.7) |", "|---|---|---|---|---|---|---|---|"]
    for kind, r in res["cloudvolume"].items():
        lines.append(f"| {kind} | {_mm(r['file']['cold_mb_s'])} | {_mm(r['neurolake']['cold_mb_s'])} | "
                     f"{_mm(r['static']['cold_mb_s'])} | {_mm(r['file']['warm_mb_s'])} | "
                     f"{_mm(r['neurolake']['warm_mb_s'])} | {_mm(r['static']['warm_mb_s'])} | "
                     f"**{r['ratio_cold_neurolake_vs_file']:.2f}, {r['ratio_warm_neurolake_vs_file']:.2f}** |")
    lines += ["", "Server CPU per MB served during those reads (user + system of the server process):", "",
              "| box | neurolake ms CPU / MB | StaticFiles (raw chunk files) ms CPU / MB | ratio (target <= 1.5) |",
              "|---|---|---|---|"]
    for kind, r in res["cloudvolume"].items():
        lines.append(f"| {kind} | {r['neurolake']['server_cpu_ms_per_mb']:.2f} | "
                     f"{r['static']['server_cpu_ms_per_mb']:.2f} | **{r['cpu_per_mb_neurolake_vs_static']:.2f}** |")
    lines += ["", "## tensorstore zarr3: /zarr/ over HTTP vs the same arrays opened locally", "",
              "| box | local MB/s cold | neurolake MB/s cold | StaticFiles MB/s cold | local warm | neurolake warm | "
              "StaticFiles warm | neurolake / local cold, warm (target >= 0.7) | StaticFiles / local cold, warm |",
              "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in res["tensorstore"].items():
        lines.append(f"| {kind} | {_mm(r['file']['cold_mb_s'])} | {_mm(r['neurolake']['cold_mb_s'])} | "
                     f"{_mm(r['static']['cold_mb_s'])} | {_mm(r['file']['warm_mb_s'])} | "
                     f"{_mm(r['neurolake']['warm_mb_s'])} | {_mm(r['static']['warm_mb_s'])} | "
                     f"**{r['ratio_cold_neurolake_vs_file']:.2f}, {r['ratio_warm_neurolake_vs_file']:.2f}** | "
                     f"{r['ratio_cold_static_vs_file']:.2f}, {r['ratio_warm_static_vs_file']:.2f} |")
    t = res["tiles"]
    lines += ["", "## Tiles while scrolling (512 x 512 JPEG, frames of 2 x 2 tiles on 4 connections)", "",
              "| scroll | tiles/s min / median | compared with | its tiles/s | ratio (target >= 0.7) |",
              "|---|---|---|---|---|",
              f"| warm (cached) | {_mm(t['warm_tiles_per_s'])} | StaticFiles, same JPEG bytes, same client | "
              f"{_mm(t['static_tiles_per_s'])} | **{t['ratio_warm_vs_static']:.2f}** |",
              f"| cold, prefetch 8 | {_mm(t['cold_prefetch_tiles_per_s'])} | JPEG encode of the same tiles, "
              f"{os.cpu_count()} threads | {_mm(t['jpeg_encode_tiles_per_s'])} | "
              f"**{t['ratio_cold_prefetch_vs_encode']:.2f}** |", "",
              f"{t['frames_per_scroll']} frames per scroll; cold first frame {_mm(t['cold_first_frame_ms'])} ms, "
              f"cold p90 frame {_mm(t['cold_p90_frame_ms'])} ms, warm p90 frame {_mm(t['warm_p90_frame_ms'], '.1f')} ms."]
    return lines


if __name__ == "__main__":
    main()
