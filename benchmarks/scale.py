"""Beyond one machine (issue 14): the four figures, each against its reference, measured in one run.

1. cutout MB/s from an S3 lake vs tensorstore reading the same S3 arrays directly (target ratio ≥ 0.9);
2. ingest S3 requests per GB vs the minimum (one PUT per shard object);
3. pyramid wall time with 1 vs 2 Dask worker processes;
4. ``neurolake serve --workers 1`` vs ``--workers 2`` request throughput on loopback.

Each part is its own script (``scale_s3.py``, ``scale_pyramid.py``, ``scale_server.py``: run alone for the
details, each writes ``benchmarks/results/<name>.{md,json}``); this one runs them one after another, as
separate processes, and writes the summary to ``benchmarks/results/scale.{md,json}``.

    python benchmarks/scale.py                 # all three (about 5 minutes on 2 cores)
    python benchmarks/scale.py --only s3       # one part; the summary uses the others' last results
    python benchmarks/scale.py --summary       # only rebuild the summary from the last results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import RESULTS, write_results  # noqa: E402

PARTS = {"s3": "scale_s3.py", "pyramid": "scale_pyramid.py", "server": "scale_server.py"}


def _load(name: str) -> dict | None:
    try:
        return json.loads((RESULTS / f"scale_{name}.json").read_text())
    except (OSError, ValueError):
        return None


def summary() -> tuple[dict, list[str]]:
    s3, pyr, srv = _load("s3"), _load("pyramid"), _load("server")
    rows, out = [], {}
    if s3:
        cut = {k: v for k, v in s3["cutouts"].items() if isinstance(v, dict) and "cold" in v}
        cold = min(v["cold"]["ratio"] for v in cut.values())
        warm = min(v["warm"]["ratio"] for v in cut.values())
        big = max(cut.values(), key=lambda v: v["mb_per_box"])
        out["cutout_ratio"] = {"cold_min": cold, "warm_min": warm, "warm_largest_box": big["warm"]["ratio"],
                               "time": s3["time"]}
        rows.append(f"| cutout MB/s, S3 lake / tensorstore on the same S3 arrays | cold (every byte from S3): "
                    f"min {cold:.2f} over {len(cut)} box sizes; warm (chunk cache): min {warm:.2f}, "
                    f"{big['warm']['ratio']:.2f} for the {big['mb_per_box']:.0f} MB box | ≥ 0.9 | "
                    f"{'met' if cold >= 0.9 else 'not met'} cold, {'met' if warm >= 0.9 else 'not met'} warm |")
        ing = s3["ingest"]
        out["ingest"] = {k: ing[k] for k in ("requests_per_gb", "minimum_per_gb", "ratio_to_minimum", "requests")}
        rows.append(f"| ingest S3 requests per GB | {ing['requests_per_gb']:.0f} ({', '.join(f'{k} {v}' for k, v in ing['requests'].items())} "
                    f"for {ing['voxel_bytes'] / 1e6:.0f} MB) | minimum {ing['minimum_per_gb']:.0f} (one PUT per shard "
                    f"object and zarr.json) | {ing['ratio_to_minimum']:.2f}× the minimum; PUTs = the minimum |")
    if pyr:
        r, med = pyr["speedup_2_vs_1"], pyr["median_s"]
        out["pyramid"] = {"speedup": r, "median_s": med, "time": pyr["time"]}
        rows.append(f"| pyramid wall time, 1 vs 2 Dask worker processes | {med['1']:.2f} s vs {med['2']:.2f} s "
                    f"(medians, {pyr['volume']['bytes'] / 1e6:.0f} MB layer) | 2 workers faster | {r:.2f}× |")
    if srv:
        out["server"] = {"ratio": srv["ratio"], "rps_1": srv["workers_1"]["rps"], "rps_2": srv["workers_2"]["rps"],
                         "time": srv["time"]}
        rows.append(f"| `serve --workers 1` vs `2`, req/s on loopback, Python client | {srv['workers_1']['rps']} vs "
                    f"{srv['workers_2']['rps']} | 2 workers faster | {srv['ratio']}× (client on the same 2 cores) |")
        wrk = srv.get("wrk")
        if wrk:
            out["server"]["wrk"] = {"ratio": wrk["ratio"], "rps_1": wrk["workers_1"]["rps"],
                                    "rps_2": wrk["workers_2"]["rps"]}
            rows.append(f"| `serve --workers 1` vs `2`, req/s on loopback, `wrk` client | {wrk['workers_1']['rps']} vs "
                        f"{wrk['workers_2']['rps']} | 2 workers faster | {wrk['ratio']}× |")
    lines = ["| figure | measured | reference | result |", "|---|---|---|---|", *rows, "",
             "Details and where the time goes: [scale_s3.md](scale_s3.md), [scale_pyramid.md](scale_pyramid.md), "
             "[scale_server.md](scale_server.md)."]
    return out, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--summary", action="store_true", help="only rebuild the summary")
    args = ap.parse_args()
    todo = [] if args.summary else (args.only.split(",") if args.only else list(PARTS))
    took = {}
    for part in todo:
        t = time.perf_counter()
        print(f"== {part}: python benchmarks/{PARTS[part]}", flush=True)
        subprocess.run([sys.executable, str(HERE / PARTS[part])], check=True)
        took[part] = round(time.perf_counter() - t, 1)
    out, lines = summary()
    print("\n".join(lines))
    write_results("scale", {"parts_run_s": took, **out}, lines)


if __name__ == "__main__":
    main()
