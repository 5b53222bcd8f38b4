"""Open-fast benchmark (issue 19): fresh processes, measured from outside, same data, same run.

Prints and writes ``benchmarks/results/open.{json,md}``:

1. A fresh Python process that opens the lake, gets the layer and reads the first 64^3 cutout
   (``neurolake.open_lake(p).layer(ds, name).cutout(...)``) vs a fresh process doing the same read with
   tensorstore alone (``ts.open`` of the layer's mip-0 Zarr array + the same read): wall time and CPU (user +
   system of the child). Ratio tensorstore / neurolake (target >= 0.5). Also the first open after the layer
   was (re)written, when the layer-row file is not there yet and the catalog is read.
2. ``python -c "import neurolake"`` and ``neurolake --help``: CPU of the child (targets <= 0.5 s and <= 1 s),
   with a bare ``python -c pass`` for the interpreter's own start-up.

Each figure ``--repeat`` times (default 5): min and median. The volume is 64 x 1024 x 1024 (z, y, x) uint8
of real ssTEM content (Gerhard et al. 2013, tiled by ``_common.em_volume_slab``).

Usage: ``python benchmarks/open.py [--repeat 5] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import em_volume_slab, gerhard_stack, median, write_results  # noqa: E402

NEUROLAKE = """
import sys, neurolake
lake = neurolake.open_lake(sys.argv[1])
a = lake.layer("bench", "em").cutout(x=(0, 64), y=(0, 64), z=(0, 64))
assert a.shape == (64, 64, 64)
"""
TENSORSTORE = """
import sys, tensorstore as ts
arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": sys.argv[1]}}, open=True).result()
a = arr[0:64, 0:64, 0:64].read().result()
assert a.shape == (64, 64, 64)
"""


def build(workdir: Path) -> Path:
    from neurolake import init_lake

    lake_path = workdir / "lake"
    if (lake_path / "datastacks" / "bench" / "volumes" / "em").exists():
        return lake_path
    src = gerhard_stack()
    npy = workdir / "em.npy"
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(64, 1024, 1024))
    for z0 in range(0, 64, 16):
        arr[z0:z0 + 16] = em_volume_slab(src, z0, z0 + 16, 1024, 1024)
    arr.flush()
    del arr
    lake = init_lake(lake_path)
    lake.create_datastack("bench", (4.6, 4.6, 50.0), exist_ok=True)
    lake.ingest(str(npy), "bench", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image", scheduler="threads")
    lake.close()
    npy.unlink()
    return lake_path


def child(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed: {p.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(args: list[str], repeat: int, before=None) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        if before:
            before()
        w, c = child(args)
        walls.append(w)
        cpus.append(c)
    return {"wall_s": {"min": min(walls), "median": median(walls), "all": walls},
            "cpu_s": {"min": min(cpus), "median": median(cpus), "all": cpus}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nl-bench-open-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lake_path = build(workdir)
    from neurolake.lake import LAYER_CACHE

    py = sys.executable
    array0 = str(lake_path / "datastacks" / "bench" / "volumes" / "em" / "0") + "/"
    child([py, "-c", NEUROLAKE, str(lake_path)])  # writes the layer-row file; page cache warm for both
    child([py, "-c", TENSORSTORE, array0])
    res: dict = {"load_average_1min_start": os.getloadavg()[0], "repeat": args.repeat}
    rows = {}  # interleaved, so that load changes hit both alike
    for _ in range(args.repeat):
        for name, a in (("tensorstore", [py, "-c", TENSORSTORE, array0]),
                        ("neurolake", [py, "-c", NEUROLAKE, str(lake_path)])):
            w, c = child(a)
            rows.setdefault(name, {"wall": [], "cpu": []})
            rows[name]["wall"].append(w)
            rows[name]["cpu"].append(c)
    for name, r in rows.items():
        res[name] = {"wall_s": {"min": min(r["wall"]), "median": median(r["wall"]), "all": r["wall"]},
                     "cpu_s": {"min": min(r["cpu"]), "median": median(r["cpu"]), "all": r["cpu"]}}
    res["neurolake_first_open"] = measure([py, "-c", NEUROLAKE, str(lake_path)], args.repeat,
                                          before=lambda: (lake_path / LAYER_CACHE).unlink(missing_ok=True))
    for k in ("wall_s", "cpu_s"):
        res[f"ratio_{k[:-2]}"] = res["tensorstore"][k]["median"] / res["neurolake"][k]["median"]
    res["python_pass"] = measure([py, "-c", "pass"], args.repeat)
    res["import_neurolake"] = measure([py, "-c", "import neurolake"], args.repeat)
    res["help"] = measure([py, "-m", "neurolake.cli", "--help"], args.repeat)
    res["load_average_1min_end"] = os.getloadavg()[0]

    def mm(d):
        return f"{d['min']:.3f} / {d['median']:.3f}"

    lines = [f"Fresh processes on {os.cpu_count()} shared cores (load average {res['load_average_1min_start']:.1f} "
             f"at start, {res['load_average_1min_end']:.1f} at end); volume 64 x 1024 x 1024 uint8 of real ssTEM "
             f"content; each figure {args.repeat} times, **min / median**; CPU = user + system of the child.", "",
             "| process | wall s | CPU s |", "|---|---|---|",
             f"| tensorstore: `ts.open` + first 64^3 read | {mm(res['tensorstore']['wall_s'])} | "
             f"{mm(res['tensorstore']['cpu_s'])} |",
             f"| neurolake: `open_lake` + `layer` + first 64^3 cutout | {mm(res['neurolake']['wall_s'])} | "
             f"{mm(res['neurolake']['cpu_s'])} |",
             f"| neurolake, first open after a layer change (catalog read) | "
             f"{mm(res['neurolake_first_open']['wall_s'])} | {mm(res['neurolake_first_open']['cpu_s'])} |",
             f"| `python -c pass` (interpreter start-up) | {mm(res['python_pass']['wall_s'])} | "
             f"{mm(res['python_pass']['cpu_s'])} |",
             f"| `import neurolake` (target CPU <= 0.5 s) | {mm(res['import_neurolake']['wall_s'])} | "
             f"{mm(res['import_neurolake']['cpu_s'])} |",
             f"| `neurolake --help` (target CPU <= 1 s) | {mm(res['help']['wall_s'])} | {mm(res['help']['cpu_s'])} |",
             "", f"Ratio tensorstore / neurolake (medians; target >= 0.5): wall **{res['ratio_wall']:.2f}**, "
             f"CPU **{res['ratio_cpu']:.2f}**."]
    write_results("open", res, lines)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
