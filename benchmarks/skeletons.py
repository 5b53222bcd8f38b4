"""Skeletonizing benchmark (issue 17): voxels/s of ``neurolake.skeletons.skeletonize_layer`` against kimimaro run
directly on the same labels, and how close the skeletons are.

Data (real segmentations): the gala FIB-SEM neurons (200 × 100 × 50 voxels of 8 nm, 87 segments; data/gala_fibsem)
and the Gerhard et al. 2013 tissue labels at mip ``--gerhard-mip`` (mip 2: 256 × 256 × 20 voxels of
18.4 × 18.4 × 50 nm; data/gerhard2013/labels), each ingested into a fresh lake.

- **kimimaro**: ``kimimaro.skeletonize`` on the whole in-memory (x, y, z) array, one process (``parallel=1``),
  kimimaro's defaults — what a user runs by hand; no reading, no writing;
- **neurolake (threads)** / **neurolake (local)**: the whole batch job — bounding-box pass, kimimaro per task,
  precomputed files, the Delta skeleton table, provenance — on an in-process Dask cluster of threads and on a
  ``LocalCluster`` of one worker process per core. The cluster is started once (its start-up time is reported
  apart) and each repeat rebuilds with ``overwrite=True``.

Reported: min and median seconds of ``--repeat`` runs, voxels/s of the median, the ratio neurolake / kimimaro,
and the largest relative difference of a skeleton's cable length from kimimaro's. Writes
``benchmarks/results/skeletons.{json,md}``.

Usage: ``python benchmarks/skeletons.py [--repeat 3] [--gerhard-mip 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, segmentation_lake, timed, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gerhard-mip", type=int, default=2)
    args = ap.parse_args()

    import kimimaro

    from neurolake.jobs import dask_client
    from neurolake.process.jobs import read_layer
    from neurolake.skeletons import skeleton, skeletonize_layer
    from neurolake.skeletons.build import kimimaro_version

    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-skel-"))
    lake = segmentation_lake(tmp)
    cases = [("gala FIB-SEM neurons", "gala", "segmentation", 0),
             ("Gerhard 2013 labels", "gerhard2013", "labels", args.gerhard_mip)]

    results: dict = {"kimimaro": kimimaro_version(), "repeat": args.repeat, "cases": []}
    clusters = {}
    for mode in ("threads", "local"):
        t = time.perf_counter()
        cm = dask_client(mode)
        client = cm.__enter__()
        clusters[mode] = (cm, client, time.perf_counter() - t)
    try:
        for title, ds, layer, mip in cases:
            labels = read_layer(lake, ds, layer, mip)
            aniso = tuple(lake.layer(ds, layer).spec.mips[mip].voxel_size_nm)
            xyz = np.asfortranarray(labels.T)
            voxels = int(labels.size)
            ref: dict = {}

            def direct(xyz=xyz, aniso=aniso, ref=ref):
                ref.clear()
                ref.update(kimimaro.skeletonize(xyz, anisotropy=aniso, progress=False, parallel=1))

            k_times = timed(direct, args.repeat)
            case = {"title": title, "datastack": ds, "layer": layer, "mip": mip, "shape_zyx": list(labels.shape),
                    "voxels": voxels, "skeletons": len(ref),
                    "kimimaro": {"min_s": min(k_times), "median_s": median(k_times),
                                 "voxels_per_s": voxels / median(k_times)}}
            for mode, (_, client, _) in clusters.items():
                def ours(ds=ds, layer=layer, mip=mip, client=client):
                    skeletonize_layer(lake, ds, layer, mip=mip, client=client, overwrite=True)

                times = timed(ours, args.repeat)
                worst = max(abs(skeleton(lake, ds, layer, sid).cable_length() / sk.cable_length() - 1)
                            for sid, sk in ref.items())
                case[mode] = {"min_s": min(times), "median_s": median(times), "voxels_per_s": voxels / median(times),
                              "ratio_vs_kimimaro": median(k_times) / median(times),
                              "max_cable_length_difference": float(worst)}
            results["cases"].append(case)
            print(title, {k: v for k, v in case.items() if k in ("kimimaro", "threads", "local")}, flush=True)
    finally:
        for cm, _, _ in clusters.values():
            cm.__exit__(None, None, None)
    results["cluster_start_s"] = {m: c[2] for m, c in clusters.items()}
    lake.close()

    lines = [f"Skeletonizing whole segmentation layers: `neurolake.skeletons.skeletonize_layer` (kimimaro "
             f"{results['kimimaro']} on Dask, bounding-box pass, precomputed files, Delta table, provenance) against "
             "`kimimaro.skeletonize` on the whole in-memory array (one process, kimimaro's defaults). "
             f"{args.repeat} repeats each, min and median seconds; ratio = kimimaro's median time / neurolake's "
             f"(above 1: neurolake faster). Machine: {os.cpu_count()} cores shared with other jobs.", "",
             "| data | voxels | skeletons | kimimaro s (min / median) | kimimaro voxels/s | neurolake threads s "
             "(min / median) | voxels/s | ratio | neurolake local cluster s (min / median) | voxels/s | ratio | "
             "max cable-length difference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cases"]:
        k, t, loc = c["kimimaro"], c["threads"], c["local"]
        lines.append(f"| {c['title']} (mip {c['mip']}, {' × '.join(map(str, c['shape_zyx'][::-1]))}) | "
                     f"{c['voxels']:,} | {c['skeletons']} | {k['min_s']:.2f} / {k['median_s']:.2f} | "
                     f"{k['voxels_per_s']:,.0f} | {t['min_s']:.2f} / {t['median_s']:.2f} | {t['voxels_per_s']:,.0f} | "
                     f"{t['ratio_vs_kimimaro']:.2f} | {loc['min_s']:.2f} / {loc['median_s']:.2f} | "
                     f"{loc['voxels_per_s']:,.0f} | {loc['ratio_vs_kimimaro']:.2f} | "
                     f"{max(t['max_cable_length_difference'], loc['max_cable_length_difference']):.2%} |")
    lines += ["", f"Cluster start-up (once, not in the times): threads {results['cluster_start_s']['threads']:.1f} s, "
              f"local {results['cluster_start_s']['local']:.1f} s.", "",
              "The job reads the labels from the lake, makes one pass for bounding boxes and writes every skeleton "
              "and the table; kimimaro alone does none of that. Segments touching the volume border are "
              "skeletonized with the whole volume when it is small (below `max_task_voxels`), so every skeleton "
              "equals kimimaro's (the last column)."]
    write_results("skeletons", results, lines)


if __name__ == "__main__":
    main()
