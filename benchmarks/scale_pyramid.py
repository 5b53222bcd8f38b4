"""Pyramid scaling benchmark (issue 14): wall time of ``build_pyramid`` on a real Dask cluster of 1 vs 2 worker
processes, and where the time goes.

Data: a uint8 image layer of ``--z`` × ``--xy`` × ``--xy`` voxels (default 32 × 4096 × 4096 = 537 MB) tiled from
the real Gerhard et al. 2013 ssTEM sections (data/gerhard2013/raw: 20 × 1024 × 1024; each tile flipped per
position, so content and compressibility are those of real EM — the shipped stack alone is 21 MB, too small to
show scaling), stored as neurolake stores layers (Zarr v3, sharded 16 × 1024 × 1024, chunks 16 × 128 × 128, zstd).

Cluster: as tests/jobs/conftest.py — a ``dask scheduler`` process and N ``dask worker --nthreads 1 --no-nanny``
processes on 127.0.0.1 (started once per N; start-up reported apart). The pyramid (mips 1..n, one task per
output shard, level by level) is built ``--repeat`` times per N after one untimed warm-up build; the mips are rewritten each time. The worker
processes' CPU time (user + system, psutil) per build gives the cores they kept busy.

Where time goes: the wall time per level (from ``on_level``), and one mip-1 task split into read (mip 0 block,
decode), downsample (numpy mean over 2 × 2 windows) and write (encode + shard file), measured in this process.

Writes ``benchmarks/results/scale_pyramid.{json,md}``. Usage: ``python benchmarks/scale_pyramid.py [--repeat 3]
[--xy 4096] [--z 32]``. ``measure(**options) -> dict`` runs it without writing files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import em_volume_slab, free_port, gerhard_stack, median, write_results  # noqa: E402

DASK = str(Path(sys.executable).parent / "dask")


class Cluster:
    """``dask scheduler`` + ``n`` ``dask worker`` processes (1 thread each, no nanny) on loopback."""

    def __init__(self, n: int, tmp: Path) -> None:
        self.n, self.tmp = n, tmp
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        log = open(self.tmp / f"dask-{self.n}-{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}))

    def __enter__(self) -> Cluster:
        from distributed import Client

        t = time.perf_counter()
        self._start("scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1], "--no-dashboard")
        for _ in range(self.n):
            self.workers.append(None)
            self._start("worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host",
                        "127.0.0.1", "--local-directory", str(self.tmp / "workers"))
            self.workers[-1] = self.procs[-1]
        end = time.monotonic() + 60
        while True:
            try:
                with Client(self.address, timeout="5s") as c:
                    c.wait_for_workers(self.n, timeout=max(1.0, end - time.monotonic()))
                    break
            except (OSError, TimeoutError):
                if time.monotonic() > end:
                    raise
        self.startup = time.perf_counter() - t
        return self

    def cpu(self) -> float:
        """CPU seconds (user + system) the worker processes used so far."""
        import psutil

        return sum(sum(psutil.Process(w.pid).cpu_times()[:2]) for w in self.workers)

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _machine_busy() -> float:
    """CPU seconds every process of the machine used so far (all cores; from /proc/stat via psutil)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def _warm() -> None:
    import neurolake.volumes.downsample  # noqa: F401
    import neurolake.volumes.pyramid  # noqa: F401


def make_layer(root: Path, z: int, xy: int):
    """The tiled real-EM layer at ``root`` (mip 0 written, mips > 0 empty); returns its LayerSpec."""
    from neurolake.volumes.spec import LayerSpec
    from neurolake.volumes.store import create_arrays, make_context

    src = gerhard_stack()
    spec = LayerSpec(layer_type="image", dtype="uint8", size_xyz=(xy, xy, z), voxel_size_nm=(4.6, 4.6, 50),
                     chunk_zyx=(16, 128, 128), shard_zyx=(16, 1024, 1024))
    arrays = create_arrays(root, spec, "em", make_context(1 << 26))
    for z0 in range(0, z, 16):
        arrays[0][z0:min(z, z0 + 16)].write(em_volume_slab(src, z0, min(z, z0 + 16), xy, xy)).result()
    return spec


def task_breakdown(root: Path, spec, boxes: int = 3) -> dict:
    """Seconds of read / downsample / write of the first ``boxes`` mip-1 tasks, in this process."""
    from neurolake.volumes.downsample import downsample
    from neurolake.volumes.pyramid import _step_zyx, shard_boxes, source_box
    from neurolake.volumes.store import array_spec, open_array_cached

    m = spec.mips[1]
    src = open_array_cached(json.dumps(array_spec(root, 0)))
    dst = open_array_cached(json.dumps(array_spec(root, 1)))
    step = _step_zyx(spec, 1)
    out = {"read": 0.0, "downsample": 0.0, "write": 0.0}
    for b in shard_boxes(m.shape_zyx, m.shard_zyx)[:boxes]:
        sb = source_box(b, step, src.shape)
        t = time.perf_counter()
        block = src[sb[0][0]:sb[0][1], sb[1][0]:sb[1][1], sb[2][0]:sb[2][1]].read().result()
        t1 = time.perf_counter()
        res = downsample(block, step, spec.layer_type)
        t2 = time.perf_counter()
        dst[b[0][0]:b[0][1], b[1][0]:b[1][1], b[2][0]:b[2][1]].write(res).result()
        t3 = time.perf_counter()
        out["read"] += t1 - t
        out["downsample"] += t2 - t1
        out["write"] += t3 - t2
    total = sum(out.values())
    return {k: round(v, 3) for k, v in out.items()} | {"share": {k: round(v / total, 3) for k, v in out.items()},
                                                       "tasks": boxes}


def measure(repeat: int = 3, xy: int = 4096, z: int = 32) -> dict:
    from distributed import Client

    from neurolake.volumes.pyramid import build_pyramid, shard_boxes

    tmp = Path(tempfile.mkdtemp(prefix="nl-scale-pyramid-"))
    try:
        root = tmp / "layer"
        t = time.perf_counter()
        spec = make_layer(root, z, xy)
        make_s = time.perf_counter() - t
        tasks = {m.mip: len(shard_boxes(m.shape_zyx, m.shard_zyx)) for m in spec.mips[1:]}
        runs: dict[int, list[float]] = {1: [], 2: []}
        levels: dict[int, list[dict[int, float]]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        machine: dict[int, list[float]] = {1: [], 2: []}
        startup = {}
        for n in (1, 2):
            with Cluster(n, tmp) as cl, Client(cl.address) as client:
                startup[n] = round(cl.startup, 2)
                client.run(_warm)  # imports in every worker, not timed
                build_pyramid(root, spec, client=client)  # warm-up (tensorstore contexts, page cache): not timed
                for _ in range(repeat):
                    marks: list[tuple[int, float]] = []
                    c0, m0 = cl.cpu(), _machine_busy()
                    t = time.perf_counter()
                    build_pyramid(root, spec, client=client,
                                  on_level=lambda mip, _n, marks=marks: marks.append((mip, time.perf_counter())))
                    end = time.perf_counter()
                    runs[n].append(end - t)
                    cpu[n].append(cl.cpu() - c0)
                    machine[n].append(_machine_busy() - m0)
                    times = [tm for _, tm in marks] + [end]
                    levels[n].append({mip: round(times[i + 1] - times[i], 3) for i, (mip, _) in enumerate(marks)})
        breakdown = task_breakdown(root, spec)
        med = {n: median(v) for n, v in runs.items()}
        return {"volume": {"size_zyx": [z, xy, xy], "bytes": z * xy * xy, "dtype": "uint8",
                           "source": "Gerhard et al. 2013 ssTEM sections tiled (data/gerhard2013/raw)",
                           "shard_zyx": [16, 1024, 1024], "chunk_zyx": [16, 128, 128], "write_mip0_s": round(make_s, 2)},
                "mips": len(spec.mips), "tasks_per_mip": tasks, "repeat": repeat,
                "wall_s": {n: [round(x, 3) for x in v] for n, v in runs.items()},
                "median_s": {n: round(v, 3) for n, v in med.items()},
                "speedup_2_vs_1": round(med[1] / med[2], 3),
                "mb_per_s": {n: round(z * xy * xy / 1e6 / v, 1) for n, v in med.items()},
                "levels_s": levels, "worker_cpu_s": {n: [round(x, 2) for x in v] for n, v in cpu.items()},
                "cores_busy": {n: round(median(cpu[n]) / med[n], 2) for n in med},
                "machine_cores_busy": {n: round(median(machine[n]) / med[n], 2) for n in med}, "startup_s": startup, "task_breakdown": breakdown,
                "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xy", type=int, default=4096)
    ap.add_argument("--z", type=int, default=32)
    a = ap.parse_args()
    r = measure(a.repeat, a.xy, a.z)
    v = r["volume"]
    bd = r["task_breakdown"]
    lv1, lv2 = r["levels_s"][1][-1], r["levels_s"][2][-1]
    lines = [
        f"Pyramid of a {v['size_zyx'][0]} × {v['size_zyx'][1]} × {v['size_zyx'][2]} uint8 image layer "
        f"({v['bytes'] / 1e6:.0f} MB; {v['source']}), {r['mips']} mips, one task per output shard "
        f"(tasks per mip {r['tasks_per_mip']}); real Dask cluster: `dask scheduler` + N `dask worker --nthreads 1 "
        f"--no-nanny` processes on 127.0.0.1; {r['repeat']} runs per N, {r['cpus']} cores shared with other work "
        f"(load average at the end {r['load_average'][0]}).",
        "",
        "| workers | wall s (runs) | median s | MB/s of mip 0 | worker CPU s (median) | cores busy: workers / "
        "whole machine | cluster start-up s |",
        "|---|---|---|---|---|---|---|",
        *(f"| {n} | {', '.join(f'{x:.2f}' for x in r['wall_s'][n])} | {r['median_s'][n]:.2f} | {r['mb_per_s'][n]} | "
          f"{median(r['worker_cpu_s'][n]):.2f} | {r['cores_busy'][n]} / {r['machine_cores_busy'][n]} | "
          f"{r['startup_s'][n]} |" for n in (1, 2)),
        "",
        f"**Speed-up of 2 workers over 1: {r['speedup_2_vs_1']:.2f}×** (medians). The workers' CPU time per build "
        f"is the same with 1 and 2 workers ({median(r['worker_cpu_s'][1]):.2f} s vs "
        f"{median(r['worker_cpu_s'][2]):.2f} s): spreading the tasks adds no work. On this shared 2-core machine "
        "the wall-time ratio measures the share of the cores the workers got from the other sessions' processes "
        "more than parallel efficiency: it moves with the load (0.84–1.67× in runs of this script the same day, "
        "load averages 2 to 14).",
        "",
        "Where time goes:",
        "",
        f"- per level (last run), 1 worker: {', '.join(f'mip {k}: {s:.2f} s' for k, s in lv1.items())}; "
        f"2 workers: {', '.join(f'mip {k}: {s:.2f} s' for k, s in lv2.items())} — mip 1 reads all of mip 0 and "
        "dominates; the small top levels have fewer tasks than workers (no speed-up there);",
        f"- inside a mip-1 task ({bd['tasks']} tasks timed in-process): read + decode {bd['share']['read']:.0%}, "
        f"downsample {bd['share']['downsample']:.0%}, encode + write {bd['share']['write']:.0%} "
        f"({bd['read']:.2f} / {bd['downsample']:.2f} / {bd['write']:.2f} s);",
        f"- cores: the worker processes kept {r['cores_busy'][1]} (1 worker) and {r['cores_busy'][2]} (2 workers) "
        "cores busy on average (a worker runs one task at a time; tensorstore decodes and encodes chunks on its own "
        f"threads). The whole machine ({r['cpus']} cores, shared with other sessions) was "
        f"{r['machine_cores_busy'][1]} / {r['machine_cores_busy'][2]} cores busy during the runs: a second worker "
        "can only add the machine's idle share, and each level has few tasks "
        f"({r['tasks_per_mip']}), so the last tasks of a level run alone.",
        "",
        "Writing mip 0 (not timed above) took "
        f"{v['write_mip0_s']} s. Reproduce: `python benchmarks/scale_pyramid.py`.",
    ]
    write_results("scale_pyramid", r, lines)


if __name__ == "__main__":
    main()
