"""Processing benchmark (issue 16 "Must show"): voxels/s of each step on one core and on the local cluster,
the voxel classifier's per-class F1 on the Gerhard sections, and segmentation quality on the gala crop.

Steps, each timed on the real Gerhard ssTEM sections (20 × 1024 × 1024 uint8; data/gerhard2013) per section:

- intensity: ``normalize_section`` (mean/std to a reference) and ``clahe_section`` (scikit-image CLAHE);
- alignment: ``estimate_rigid`` of neighbouring sections and ``warp_section``;
- voxel classification: ``predict_section`` with a forest trained on the even sections;
- segmentation (gala FIB-SEM crop, 50 × 100 × 200): 3-D watershed supervoxels and RAG agglomeration (whole volume);
- evaluation: VI and adapted Rand error of the watershed and the agglomeration against the ground truth.

"1 core" runs the per-section function in this process, one section after another; "cluster" maps it over the
sections with a ``distributed.LocalCluster`` of one single-threaded worker process per core
(:func:`neurolake.jobs.dask_client`), the way the layer jobs do with ``scheduler="local"``. Reported: voxels/s
(median of ``--repeat`` runs), the speed-up, and the quality figures. Writes ``benchmarks/results/processing.{json,md}``.

Usage: ``python benchmarks/processing.py [--sections 20] [--size 1024] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, gerhard_stack, median, write_results  # noqa: E402


def _time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return median(ts)


def _serial(fn, items):
    return [fn(*a) for a in items]


def _cluster(client, fn, items):
    futs = [client.submit(fn, *a, pure=False) for a in items]
    return client.gather(futs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gala-only", action="store_true", help="re-run only the gala segmentation part (keeps the rest "
                                                              "of benchmarks/results/processing.json)")
    args = ap.parse_args()
    if args.gala_only:
        import json

        from _common import RESULTS

        results = json.loads((RESULTS / "processing.json").read_text())
        results["gala"] = gala()
        _write(results, args.repeat)
        return

    from neurolake.jobs import dask_client
    from neurolake.process import align, classify, intensity

    stack = gerhard_stack()[: args.sections, : args.size, : args.size]
    nz, ny, nx = stack.shape
    vox = stack.size
    target = intensity.reference_target(stack, "meanstd")[1]  # (reference section, (mean, std))
    value_range = (0.0, 255.0)
    steps = {
        "intensity.normalize": (intensity.normalize_section, [(stack[z], target) for z in range(nz)], vox),
        "intensity.clahe": (intensity.clahe_section, [(stack[z], value_range) for z in range(nz)], vox),
        "align.estimate_rigid": (align.estimate_rigid, [(stack[z - 1], stack[z]) for z in range(1, nz)],
                                 vox * (nz - 1) // nz),
        "align.warp": (align.warp_section, [(stack[z], align.rigid_about_centre(1.0, 3.0, -2.0, (ny, nx)))
                                            for z in range(nz)], vox),
    }
    # the voxel classifier: trained on the even sections, F1 on the odd ones (helper in classify)
    t = time.perf_counter()
    bench = classify.gerhard_benchmark(ROOT / "data" / "gerhard2013", size=args.size,
                                       train_sections=range(0, args.sections, 2),
                                       test_sections=range(1, args.sections, 2))
    classify_s = time.perf_counter() - t
    model = bench.get("model")
    if model is not None:
        steps["classify.predict"] = (classify.predict_section, [(model, stack[z]) for z in range(nz)], vox)
    results: dict = {"sections": nz, "size": [ny, nx], "cpus": os.cpu_count(), "steps": {}}
    with dask_client("local") as client:
        for name, (fn, items, n) in steps.items():
            client.run(lambda: None)  # workers up
            serial = _time(lambda fn=fn, items=items: _serial(fn, items), args.repeat)
            dist = _time(lambda fn=fn, items=items: _cluster(client, fn, items), args.repeat)
            results["steps"][name] = {"voxels": n, "one_core_s": serial, "cluster_s": dist,
                                      "one_core_voxels_per_s": n / serial, "cluster_voxels_per_s": n / dist,
                                      "speedup": serial / dist}
    results["classifier"] = {k: v for k, v in bench.items() if k != "model"}
    results["classifier"]["wall_s"] = classify_s

    results["gala"] = gala()
    _write(results, args.repeat)


def gala() -> dict:
    """Segmentation on the gala crop with a three-way split along z: the boundary forest is trained on z 0–16,
    the agglomeration threshold chosen on z 17–32 (split + 2 × merge VI, :func:`choose_threshold`; choosing it on
    the forest's own training sections overfits: its boundaries are too confident there), and both the plain
    watershed and the agglomeration are evaluated on z 33–49."""
    import h5py

    from neurolake.process import agglomerate, classify, evaluate

    with h5py.File(ROOT / "data" / "gala_fibsem" / "train-image.h5") as f:
        img = f["stack"][:]
    with h5py.File(ROOT / "data" / "gala_fibsem" / "train-gt.lzf.h5") as f:
        gt = f["stack"][:]
    m = classify.train(img, gt, {"boundary": [0], "cell": "*"}, range(0, 17), n_estimators=30,
                       samples_per_class=2000, seed=0)
    prob = classify.predict(m, img)[list(m.classes).index("boundary")]
    gvox = img.size
    t = time.perf_counter()
    sv = agglomerate.watershed_supervoxels(prob)
    ws_s = time.perf_counter() - t
    thr = agglomerate.choose_threshold(sv[17:33], prob[17:33], gt[17:33])["threshold"]
    t = time.perf_counter()
    seg = agglomerate.agglomerate(sv, prob, thr)
    ag_s = time.perf_counter() - t
    test = slice(33, 50)
    q_ws = evaluate.evaluate(sv[test], gt[test])
    q_ag = evaluate.evaluate(seg[test], gt[test])
    return {"threshold": thr, "watershed_s": ws_s, "agglomerate_s": ag_s,
            "watershed_voxels_per_s": gvox / ws_s, "agglomerate_voxels_per_s": gvox / ag_s,
            "split": "forest z 0-16, threshold z 17-32, evaluation z 33-49",
            "watershed": {"vi": q_ws["vi"], "adapted_rand_error": q_ws["adapted_rand"]["error"]},
            "agglomerated": {"vi": q_ag["vi"], "adapted_rand_error": q_ag["adapted_rand"]["error"]}}


def _write(results: dict, repeat: int) -> None:
    nz, (ny, nx) = results["sections"], results["size"]
    vox = nz * ny * nx
    bench = results["classifier"]
    lines = [f"Gerhard ssTEM {nz} × {ny} × {nx} ({vox / 1e6:.0f} Mvoxels), {os.cpu_count()} cores; median of "
             f"{repeat}", "", "| step | 1 core (Mvoxels/s) | local cluster (Mvoxels/s) | speed-up |",
             "|---|---|---|---|"]
    for name, r in results["steps"].items():
        lines.append(f"| {name} | {r['one_core_voxels_per_s'] / 1e6:.2f} | {r['cluster_voxels_per_s'] / 1e6:.2f} | "
                     f"{r['speedup']:.2f}× |")
    f1 = {k: round(v["f1"], 3) for k, v in bench["scores"].items()}
    g = results["gala"]
    thr = g["threshold"]
    lines += ["", f"Voxel classifier (train even sections, test odd; {ny}² px): F1 {f1} (membrane "
                  f"{f1.get('membrane')})",
              "", f"gala FIB-SEM ({g['split']}): watershed VI {g['watershed']['vi']['total']:.3f} (split "
                  f"{g['watershed']['vi']['split']:.3f}, merge {g['watershed']['vi']['merge']:.3f}), ARE "
                  f"{g['watershed']['adapted_rand_error']:.3f}; agglomerated (threshold {thr}) VI "
                  f"{g['agglomerated']['vi']['total']:.3f} (split {g['agglomerated']['vi']['split']:.3f}, merge "
                  f"{g['agglomerated']['vi']['merge']:.3f}), ARE {g['agglomerated']['adapted_rand_error']:.3f}",
              f"  3-D watershed {g['watershed_voxels_per_s'] / 1e6:.2f} Mvoxels/s, agglomeration "
              f"{g['agglomerate_voxels_per_s'] / 1e6:.2f} Mvoxels/s (whole volume, 1 core)"]
    write_results("processing", results, lines)


if __name__ == "__main__":
    main()
