"""Meshing benchmark (issue 17): voxels/s of ``neurolake.meshes.build_meshes`` against zmesh called directly on
the same labels, root-mesh latency after a proofreading edit, and bytes per mesh with and without Draco.

Data (real segmentations, each ingested into a fresh lake): the gala FIB-SEM neurons (200 × 100 × 50 voxels of
8 nm, 87 segments; data/gala_fibsem) and the Gerhard et al. 2013 tissue labels (a 512 × 512 × 20 crop of
4.6 × 4.6 × 50 nm voxels by default, ``--gerhard-xy``; data/gerhard2013/labels).

- **zmesh**: ``zmesh.Mesher(res).mesh(labels)`` on the whole in-memory (x, y, z) array (padded with background,
  ``close=False``), then ``get(id, voxel_centered=True)`` for every id — the same marching cubes neurolake
  runs, no reading, no encoding, no writing;
- **neurolake**: the whole batch job (``build_meshes(..., overwrite=True)``): one block covering the volume
  (the same work as zmesh) read from the sharded Zarr layer, meshed, fragments encoded and written with their
  index and provenance — on an in-process Dask cluster of one thread (started once, its start-up reported
  apart), so the ratio is the job's overhead over zmesh; also the default blocks on 2 threads.
- **root-mesh latency**: on the proofreadable gala segmentation (meshed), merge two neurons, then time the new
  root's manifest (``root_fragments``) and its whole mesh (manifest + fragments read + joined,
  ``root_mesh``) — the first call after the edit; ``--repeat`` different pairs.
- **bytes per mesh**: legacy fragments (raw float32 vertices, uint32 triangles) vs the multi-resolution
  Draco mesh served at ``mesh_draco/{id}`` (16-bit positions, DracoPy compression level 7), per object; and the
  same with zmesh simplification (``simplify=8`` nm, timed once).

Reported: min and median seconds of ``--repeat`` runs (≥ 3), voxels/s of the median, ratios. Writes
``benchmarks/results/meshes.{json,md}``. Usage: ``python benchmarks/meshes.py [--repeat 3] [--gerhard-xy 512]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, segmentation_lake, timed, write_results  # noqa: E402


def zmesh_direct(vol_zyx: np.ndarray, res) -> int:
    import zmesh

    mesher = zmesh.Mesher(res)
    mesher.mesh(np.pad(vol_zyx, 1).T, close=False)
    n = 0
    for sid in mesher.ids():
        n += len(mesher.get(sid, normals=False, voxel_centered=True).faces)
    mesher.clear()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gerhard-xy", type=int, default=512)
    args = ap.parse_args()
    repeat = max(3, args.repeat)

    import zmesh
    from distributed import Client, LocalCluster

    from neurolake import meshes as M
    from neurolake.demo import GALA_VOXEL, GERHARD_VOXEL
    from neurolake.proofreading import create_segmentation

    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-mesh-"))
    lake = segmentation_lake(tmp)
    xy = args.gerhard_xy
    if xy < 1024:  # a crop as its own layer, so both sides mesh exactly the same voxels
        from neurolake.volumes.sources import NpyFile

        crop = lake.layer("gerhard2013", "labels").cutout((0, xy), (0, xy), (0, 20))
        np.save(tmp / "crop.npy", crop)
        lake.ingest(NpyFile(tmp / "crop.npy"), "gerhard2013", "crop", layer_type="segmentation",
                    scheduler="threads")
    layers = [("gala", "segmentation", GALA_VOXEL), ("gerhard2013", "crop" if xy < 1024 else "labels", GERHARD_VOXEL)]

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    client = Client(cluster)
    startup = time.perf_counter() - t0
    results: dict = {"repeat": repeat, "zmesh": getattr(zmesh, "__version__", "?"), "cluster_startup_s": startup,
                     "volumes": {}}
    lines = ["Meshing real segmentations: neurolake's batch job vs zmesh called directly (same voxels, same",
             f"marching cubes, unsimplified); {repeat} repeats, min / median seconds. Dask cluster of one thread",
             f"started once ({startup:.2f} s, not counted).", "",
             "| volume | voxels | zmesh min / median s | neurolake min / median s | neurolake / zmesh (median) | "
             "zmesh Mvox/s | neurolake Mvox/s | default blocks, 2 threads: median s |",
             "|---|---|---|---|---|---|---|---|"]
    for ds, layer, res in layers:
        la = lake.layer(ds, layer)
        sx, sy, sz = la.size(0)
        vol = la.cutout((0, sx), (0, sy), (0, sz))
        nvox = vol.size
        t_z, t_n = [], []
        for _ in range(repeat):  # interleaved: the shared machine's load hits both alike
            t_z += timed(lambda vol=vol, res=res: zmesh_direct(vol, res), 1)
            t_n += timed(lambda ds=ds, layer=layer, shape=(sx, sy, sz): M.build_meshes(
                lake, ds, layer, block=shape, overwrite=True, scheduler=cluster.scheduler_address), 1)
        t_b = timed(lambda ds=ds, layer=layer: M.build_meshes(lake, ds, layer, overwrite=True, scheduler="threads"),
                    repeat)
        ratio, ratio_min = median(t_n) / median(t_z), min(t_n) / min(t_z)
        results["volumes"][f"{ds}/{layer}"] = {"voxels": nvox, "zmesh_s": t_z, "neurolake_s": t_n,
                                               "neurolake_default_blocks_threads_s": t_b, "ratio": ratio,
                                               "ratio_of_min": ratio_min}
        lines.append(f"| {ds}/{layer} {sx}×{sy}×{sz} | {nvox:,} | {min(t_z):.2f} / {median(t_z):.2f} | "
                     f"{min(t_n):.2f} / {median(t_n):.2f} | **{ratio:.2f}×** ({ratio_min:.2f}× of min) | "
                     f"{nvox / median(t_z) / 1e6:.2f} | "
                     f"{nvox / median(t_n) / 1e6:.2f} | {median(t_b):.2f} |")
    client.close()
    cluster.close()

    # -- bytes per mesh, legacy vs Draco (gala, all objects; gerhard crop) ---------------------------------
    lines += ["", "Bytes per mesh (one object's whole mesh): legacy precomputed fragments (float32 nm vertices, "
              "uint32 triangles) vs the Draco multi-resolution mesh served at `mesh_draco/{id}` (16-bit positions).",
              "", "| volume | simplify | objects | legacy median B | Draco median B | legacy / Draco (total) | "
              "build s |", "|---|---|---|---|---|---|---|"]
    results["bytes"] = {}
    for ds, layer, _ in layers:
        for simplify in (None, 8.0):
            if simplify and ds != "gala":
                continue  # zmesh simplification is ~30x slower than meshing: once, on the small volume
            t = time.perf_counter()
            M.build_meshes(lake, ds, layer, overwrite=True, simplify=simplify, scheduler="threads")
            build_s = time.perf_counter() - t
            la = lake.layer(ds, layer)
            idx = M._index(lake, la)
            raw, dra = [], []
            for sid in np.unique(idx.seg):
                raw.append(int(idx.nbytes[idx.rows(int(sid))].sum()))
                man, d = M.segment_draco(lake, ds, layer, int(sid))
                dra.append(len(man) + len(d))
            ratio = sum(raw) / sum(dra)
            results["bytes"][f"{ds}/{layer}/simplify={simplify}"] = {"legacy": raw, "draco": dra, "ratio": ratio,
                                                                     "build_s": build_s}
            lines.append(f"| {ds}/{layer} | {simplify or '—'} | {len(raw)} | {int(np.median(raw)):,} | "
                         f"{int(np.median(dra)):,} | **{ratio:.1f}×** ({sum(raw):,} / {sum(dra):,}) | {build_s:.2f} |")

    # -- root-mesh latency after an edit (gala, proofread) -------------------------------------------------
    M.build_meshes(lake, "gala", "segmentation", overwrite=True, block=(64, 48, 20), scheduler="threads")
    seg = create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    vol = lake.layer("gala", "segmentation").cutout((0, 200), (0, 100), (0, 50))
    ids, counts = np.unique(vol, return_counts=True)
    big = [int(i) for i in ids[ids != 0][np.argsort(counts[ids != 0])[::-1]]]
    manifest_s, mesh_s, nfrag = [], [], []
    for i in range(repeat):
        a, b = big[2 * i], big[2 * i + 1]
        op = seg.merge(a, b, author="bench")
        root = op["new_roots"][0]
        t = time.perf_counter()
        keys = M.root_fragments(lake, "gala", root)
        manifest_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        M.root_mesh(lake, "gala", root)
        mesh_s.append(time.perf_counter() - t)
        nfrag.append(len(keys))
    results["root_latency"] = {"manifest_s": manifest_s, "mesh_s": mesh_s, "fragments": nfrag}
    lines += ["", "Root mesh after a merge (gala, 36 blocks of 64 × 48 × 20; two of the largest neurons merged each "
              "time; first call after the edit; nothing is re-meshed: the supervoxels' fragments exist):", "",
              "| | min ms | median ms |", "|---|---|---|",
              f"| manifest (`root_fragments`, {min(nfrag)}–{max(nfrag)} fragments) | {1e3 * min(manifest_s):.1f} | "
              f"{1e3 * median(manifest_s):.1f} |",
              f"| whole mesh (`root_mesh`: manifest + fragments read + joined) | {1e3 * min(mesh_s):.1f} | "
              f"{1e3 * median(mesh_s):.1f} |"]
    lake.close()
    write_results("meshes", results, lines)


if __name__ == "__main__":
    main()
