"""Cutout and ingest benchmark (issue 2 targets).

Prints and writes ``benchmarks/results/cutout.{json,md}``:

1. neurolake ``Layer.cutout`` throughput (MB/s of uncompressed voxels) vs tensorstore reading the
   same Zarr v3 arrays directly, for 512x512x16 and 256x256x256 boxes (x, y, z), cold (a freshly
   opened lake / tensorstore context: empty chunk cache; the OS page cache is not dropped) and warm
   (the same boxes again). Target: ratio >= 0.9.
2. HTTP cutout throughput (npz and blosc, real uvicorn process on loopback) vs the Python call.
3. Ingest MB/s and peak resident memory (PSS summed over the ingest process and its Dask worker
   processes, sampled every 50 ms) for a generated volume of >= 2 GiB built from real EM sections. Target: RSS < 1.5 GB.

Usage: ``python benchmarks/cutout.py [--big-gib 2.0] [--repeat 5] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, boxes_for, em_volume_slab, gerhard_stack, median, timed, write_results  # noqa: E402


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children: the sum of PSS (proportional set size, so
    shared library pages count once, not once per worker process)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


def make_npy(path: Path, shape_zyx, src) -> None:
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape_zyx)
    for z0 in range(0, shape_zyx[0], 16):
        z1 = min(shape_zyx[0], z0 + 16)
        arr[z0:z1] = em_volume_slab(src, z0, z1, shape_zyx[1], shape_zyx[2])
    arr.flush()
    del arr


def bench_ingest(workdir: Path, src, gib: float) -> dict:
    side_y, side_x = 2048, 4096
    z = max(256, int(np.ceil(gib * 2**30 / (side_y * side_x))))  # >= 256 sections for 256^3 boxes
    npy = workdir / "big.npy"
    make_npy(npy, (z, side_y, side_x), src)
    nbytes = z * side_y * side_x
    lake = workdir / "biglake"
    code = ("from neurolake import init_lake\n"
            "if __name__ == '__main__':\n"
            f"    init_lake({str(lake)!r}).ingest({str(npy)!r}, 'big', 'image', voxel_size=(4,4,40))\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    peak = 0
    t0 = time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("ingest failed")
    stored = sum(f.stat().st_size for f in (lake / "datastacks").rglob("*") if f.is_file())
    npy.unlink()
    return {"shape_zyx": [z, side_y, side_x], "bytes": nbytes, "seconds": wall, "mb_per_s": nbytes / wall / 1e6,
            "peak_rss_bytes": peak, "stored_bytes_all_mips": stored, "lake": str(lake)}



def bench_cutouts(lake_path: Path, repeat: int) -> dict:
    import tensorstore as ts

    from neurolake import open_lake
    from neurolake.volumes.store import array_spec, make_context

    rng = np.random.default_rng(0)
    res = {}
    for box in ((512, 512, 16), (256, 256, 256)):
        lake = open_lake(lake_path)
        la = lake.layer("big", "image")
        shape = la.shape(0)
        boxes = boxes_for(shape, box, repeat, rng)
        mb = np.prod(box) / 1e6

        def nl_read(b, la=la):
            return la.cutout(x=b[0], y=b[1], z=b[2])

        ctx = make_context(lake.settings.cache_bytes)
        arr = ts.open(array_spec(la.root, 0), context=ctx, open=True).result()

        def ts_read(b, arr=arr):
            (x0, x1), (y0, y1), (z0, z1) = b
            return arr[z0:z1, y0:y1, x0:x1].read().result()

        # correctness first: both give the same voxels
        assert np.array_equal(nl_read(boxes[0]), ts_read(boxes[0]))
        # cold: new contexts and fresh boxes not read before, alternating order
        lake2 = open_lake(lake_path)
        la2 = lake2.layer("big", "image")
        ctx2 = make_context(lake.settings.cache_bytes)
        arr2 = ts.open(array_spec(la2.root, 0), context=ctx2, open=True).result()
        cold_boxes = boxes_for(shape, box, repeat, np.random.default_rng(1))
        t_nl, t_ts = [], []
        for i, b in enumerate(cold_boxes):
            (x0, x1), (y0, y1), (z0, z1) = b

            def one_nl(b=b, la2=la2, t_nl=t_nl):
                t = time.perf_counter()
                la2.cutout(x=b[0], y=b[1], z=b[2])
                t_nl.append(time.perf_counter() - t)

            def one_ts(z0=z0, z1=z1, y0=y0, y1=y1, x0=x0, x1=x1, arr2=arr2, t_ts=t_ts):
                t = time.perf_counter()
                arr2[z0:z1, y0:y1, x0:x1].read().result()
                t_ts.append(time.perf_counter() - t)

            # same box, own chunk caches; alternate who reads first (the second finds the file pages
            # in the OS page cache)
            for f in ((one_nl, one_ts) if i % 2 == 0 else (one_ts, one_nl)):
                f()
        # warm: the same boxes again, many times
        for b in boxes:
            nl_read(b)
            ts_read(b)
        w_nl = [median(timed(lambda b=b: nl_read(b), 3)) for b in boxes]
        w_ts = [median(timed(lambda b=b: ts_read(b), 3)) for b in boxes]
        key = "x".join(map(str, box))
        res[key] = {
            "box_xyz": list(box), "mb_per_box": mb,
            "cold": {"neurolake_mb_s": mb / median(t_nl), "tensorstore_mb_s": mb / median(t_ts),
                     "ratio": median(t_ts) / median(t_nl)},
            "warm": {"neurolake_mb_s": mb / median(w_nl), "tensorstore_mb_s": mb / median(w_ts),
                     "ratio": median(w_ts) / median(w_nl)},
        }
        lake.close()
        lake2.close()
    return res


def bench_http(lake_path: Path, repeat: int) -> dict:
    import io

    import blosc
    import httpx

    from neurolake import open_lake

    srv = Server(lake_path)
    base = srv.base
    try:
        la = open_lake(lake_path).layer("big", "image")
        rng = np.random.default_rng(2)
        out = {}
        for box in ((512, 512, 16), (256, 256, 256)):
            boxes = boxes_for(la.shape(0), box, repeat, rng)
            mb = np.prod(box) / 1e6
            for b in boxes:  # warm both sides
                la.cutout(x=b[0], y=b[1], z=b[2])
            t_py = median([median(timed(lambda b=b: la.cutout(x=b[0], y=b[1], z=b[2]), 2)) for b in boxes])
            entry = {"python_mb_s": mb / t_py}
            with httpx.Client(timeout=120) as client:
                for fmt in ("npz", "blosc"):
                    def get(b, fmt=fmt):
                        (x0, x1), (y0, y1), (z0, z1) = b
                        r = client.get(f"{base}/ocp/ca/big/image/{fmt}/0/{x0},{x1}/{y0},{y1}/{z0},{z1}/")
                        r.raise_for_status()
                        if fmt == "npz":
                            return np.load(io.BytesIO(r.content))["cutout"]
                        return np.frombuffer(blosc.decompress(r.content), np.uint8)
                    for b in boxes:
                        get(b)
                    t = median([median(timed(lambda b=b: get(b), 2)) for b in boxes])
                    entry[f"http_{fmt}_mb_s"] = mb / t
                    entry[f"http_{fmt}_vs_python"] = t_py / t
            out["x".join(map(str, box))] = entry
        return out
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-gib", type=float, default=2.0, help="size of the generated ingest volume (GiB)")
    ap.add_argument("--repeat", type=int, default=6, help="boxes per measurement")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = gerhard_stack()
        print(f"ingest: generating a {args.big_gib} GiB volume from the Gerhard et al. EM sections in {work}")
        ing = bench_ingest(work, src, args.big_gib)
        print(f"  {ing['bytes'] / 2**30:.2f} GiB in {ing['seconds']:.1f} s, peak RSS {ing['peak_rss_bytes'] / 1e9:.2f} GB")
        cut = bench_cutouts(Path(ing["lake"]), args.repeat)
        http = bench_http(Path(ing["lake"]), args.repeat)
        lines = [
            f"Volume: {ing['shape_zyx']} (z, y, x) uint8 tiled from real ssTEM sections; {os.cpu_count()} cores.",
            "",
            "| box (x*y*z) | cache | neurolake MB/s | tensorstore MB/s | ratio (target >= 0.9) |",
            "|---|---|---|---|---|",
        ]
        for k, v in cut.items():
            for c in ("cold", "warm"):
                lines.append(f"| {k} | {c} | {v[c]['neurolake_mb_s']:.0f} | {v[c]['tensorstore_mb_s']:.0f} | "
                             f"{v[c]['ratio']:.2f} |")
        lines += ["", "| box | Python call MB/s | HTTP npz MB/s (ratio) | HTTP blosc MB/s (ratio) |", "|---|---|---|---|"]
        for k, v in http.items():
            lines.append(f"| {k} | {v['python_mb_s']:.0f} | {v['http_npz_mb_s']:.0f} ({v['http_npz_vs_python']:.2f}) | "
                         f"{v['http_blosc_mb_s']:.0f} ({v['http_blosc_vs_python']:.2f}) |")
        lines += ["", f"Ingest (npy source, default LocalCluster pyramid): {ing['bytes'] / 2**30:.2f} GiB in "
                      f"{ing['seconds']:.1f} s = {ing['mb_per_s']:.0f} MB/s including all mips; peak RSS of the "
                      f"process tree {ing['peak_rss_bytes'] / 1e9:.2f} GB (target < 1.5 GB); stored "
                      f"{ing['stored_bytes_all_mips'] / 1e9:.2f} GB for all mips."]
        ing.pop("lake")
        write_results("cutout", {"ingest": ing, "cutout": cut, "http": http}, lines)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
