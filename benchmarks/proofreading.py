"""Proofreading benchmark: edits, root lookups and materialization on a generated supervoxel graph.

Graph: an L x L x L lattice of supervoxels (6-neighbour RAG, affinities uniform in [0.5, 1]),
agglomerated into B x B x B blocks ("neurons", from a mapping table). Measured, with the same
work done by a networkx / scipy / pandas baseline in the same run:

- merge latency (two neurons joined across a block face; full edit = catalog transaction + state)
  vs networkx: add the edge, recompute the component (``nx.node_connected_component``);
- split latency (a false merge split again: sources in one block, sinks in the other, minimum cut)
  vs networkx: ``nx.minimum_cut`` on the root's subgraph (capacity = affinity) + components;
- ``Segmentation.roots`` lookups/s for 10^6 random supervoxels, now and at a past timestamp,
  vs a Python dict ``{supervoxel: root}``;
- materialization of S synapses (3 points each, bound to roots at T, written as Parquet) in rows/s
  vs pandas (read the Delta table, filter rows valid at T, map supervoxel → root, write Parquet).

Usage: ``python benchmarks/proofreading.py [--lattice 100] [--block 10] [--edits 200] [--synapses 2000000]``
Writes ``benchmarks/results/proofreading.json`` and ``.md`` (``--out NAME`` for another name; the
big-root run: ``--block 50 --edits 4 --synapses 0 --out proofreading_big_roots``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def lattice(L: int, B: int, seed: int = 0):
    n = L**3
    idx = np.arange(n, dtype=np.int64).reshape(L, L, L)
    pairs = [np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1), np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
             np.stack([idx[:, :, :-1].ravel(), idx[:, :, 1:].ravel()], 1)]
    e = np.concatenate(pairs)
    rng = np.random.default_rng(seed)
    aff = rng.uniform(0.5, 1.0, len(e)).astype(np.float32)
    z, y, x = np.unravel_index(np.arange(n), (L, L, L))
    nb = L // B
    block = (z // B) * nb * nb + (y // B) * nb + (x // B)
    sv = np.arange(1, n + 1, dtype=np.uint64)  # supervoxel ids 1..n
    return sv, e + 1, aff, block


def pct(a, q):
    return float(np.percentile(np.asarray(a) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lattice", type=int, default=100, help="L: L^3 supervoxels")
    ap.add_argument("--block", type=int, default=10, help="B: neurons are B^3 blocks")
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=1_000_000)
    ap.add_argument("--synapses", type=int, default=2_000_000)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", default="proofreading", help="results file name (without extension)")
    args = ap.parse_args()

    from neurolake import init_lake
    from neurolake.proofreading import create_segmentation

    L, B = args.lattice, args.block
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-pr-"))
    res: dict = {"sizes": {"supervoxels": L**3, "block": B, "neurons": (L // B) ** 3, "edits": args.edits,
                           "lookups": args.lookups, "synapses": args.synapses},
                 "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                 "date": dt.datetime.now(dt.UTC).isoformat()}
    try:
        sv, e, aff, block = lattice(L, B)
        lake = init_lake(tmp / "lake")
        lake.create_datastack("bench", (8, 8, 40))
        t = time.perf_counter()
        seg = create_segmentation(lake, "bench", supervoxels=sv, edges=e, affinities=aff,
                                  mapping=pd.DataFrame({"sv": sv, "obj": block}), agglomeration="mapping")
        st = seg.state()
        res["create_s"] = time.perf_counter() - t
        print(f"graph: {L**3} supervoxels, {len(e)} edges, {(L // B) ** 3} neurons; created+loaded in "
              f"{res['create_s']:.1f} s")
        # pairs of adjacent supervoxels in different blocks (block faces along x)
        rng = np.random.default_rng(1)
        cross = np.flatnonzero(block[e[:, 0] - 1] != block[e[:, 1] - 1])
        picks = rng.choice(cross, size=args.edits * 3, replace=False)
        merge_t, merge_c, split_t, split_c, pairs = [], [], [], [], []
        used_blocks: set = set()
        for p in picks:
            a, b = int(e[p, 0]), int(e[p, 1])
            ba, bb = int(block[a - 1]), int(block[b - 1])
            if ba in used_blocks or bb in used_blocks:
                continue  # keep every merge between two fresh neurons (1000 + 1000 supervoxels)
            used_blocks |= {ba, bb}
            ra, rb = seg.roots([a, b])
            t = time.perf_counter()
            plan = st.plan([(a - 1, b - 1, 1.0, True)], merge_only=True)
            merge_c.append(time.perf_counter() - t)
            t = time.perf_counter()
            seg.merge(a, b, author="bench", roots=[ra, rb])
            merge_t.append(time.perf_counter() - t)
            pairs.append((a, b, ba, bb))
            if len(pairs) >= args.edits:
                break
        del plan
        for a, b, ba, bb in pairs:
            # sources: a and another supervoxel of its block; sinks: b and one of its block
            src = [a, int(np.flatnonzero(block == ba)[0]) + 1]
            snk = [b, int(np.flatnonzero(block == bb)[-1]) + 1]
            root = seg.root(a)
            t = time.perf_counter()
            cut = st.min_cut(root, st.index(src), st.index(snk))
            st.plan(cut, merge_only=False)
            split_c.append(time.perf_counter() - t)
            t = time.perf_counter()
            op = seg.split(src, snk, author="bench", roots=[root])
            split_t.append(time.perf_counter() - t)
            assert len(op["new_roots"]) == 2
        res["merge_ms"] = {"p50": pct(merge_t, 50), "p99": pct(merge_t, 99), "compute_p50": pct(merge_c, 50),
                           "compute_p99": pct(merge_c, 99), "n": len(merge_t), "target_p99": 100}
        res["split_ms"] = {"p50": pct(split_t, 50), "p99": pct(split_t, 99), "compute_p50": pct(split_c, 50),
                           "compute_p99": pct(split_c, 99), "n": len(split_t), "target_p99": 500,
                           "root_supervoxels": 2 * B**3}
        print(f"merge  p50 {res['merge_ms']['p50']:.2f} ms  p99 {res['merge_ms']['p99']:.2f} ms (target < 100)  "
              f"[graph work only: p50 {res['merge_ms']['compute_p50']:.2f} ms]")
        print(f"split  p50 {res['split_ms']['p50']:.2f} ms  p99 {res['split_ms']['p99']:.2f} ms (target < 500)  "
              f"[min cut + components: p50 {res['split_ms']['compute_p50']:.2f} ms]")
        # lookups
        q = rng.integers(1, L**3 + 1, args.lookups).astype(np.uint64)
        seg.roots(q[:10])
        t = time.perf_counter()
        roots_now = seg.roots(q)
        dt_now = time.perf_counter() - t
        past = seg.operations()[len(pairs) // 2]["timestamp"]
        seg.roots(q[:10], timestamp=past)
        t = time.perf_counter()
        seg.roots(q, timestamp=past)
        dt_past = time.perf_counter() - t
        # the same lookups through the general path (hash index), as for non-contiguous supervoxel ids
        st.dense = False
        t = time.perf_counter()
        assert (seg.roots(q) == roots_now).all()
        dt_sparse = time.perf_counter() - t
        st.dense = True
        res["get_roots_per_s"] = {"latest": args.lookups / dt_now, "latest_sparse_ids": args.lookups / dt_sparse,
                                  "past": args.lookups / dt_past, "target": 1e6}
        print(f"get_roots: {args.lookups / dt_now:,.0f} /s at the latest time (contiguous ids; "
              f"{args.lookups / dt_sparse:,.0f} /s through the general path for arbitrary ids), "
              f"{args.lookups / dt_past:,.0f} /s at a past time (target >= 1,000,000/s)")

        # -- baselines ------------------------------------------------------------------------------
        if not args.no_baseline:
            import networkx as nx

            t = time.perf_counter()
            d = dict(zip(sv.tolist(), st.cur_root.tolist(), strict=True))
            ql = q.tolist()
            t = time.perf_counter()
            out = [d[x] for x in ql]
            dt_dict = time.perf_counter() - t
            assert out[:100] == roots_now[:100].tolist()
            res["baseline_get_roots_per_s"] = args.lookups / dt_dict
            print(f"  baseline dict lookups: {args.lookups / dt_dict:,.0f} /s  -> neurolake x{dt_dict / dt_now:.1f}")
            # networkx graph of the active (agglomeration) edges of the initial state
            t = time.perf_counter()
            act = block[e[:, 0] - 1] == block[e[:, 1] - 1]
            G = nx.Graph()
            G.add_nodes_from(sv.tolist())
            G.add_weighted_edges_from(zip(e[act, 0].tolist(), e[act, 1].tolist(), aff[act].tolist(), strict=True),
                                      weight="capacity")
            res["baseline_build_s"] = time.perf_counter() - t
            bm, bs = [], []
            for a, b, _, _ in pairs[: min(len(pairs), 50)]:
                t = time.perf_counter()
                G.add_edge(a, b, capacity=1.0)
                comp = nx.node_connected_component(G, a)
                bm.append(time.perf_counter() - t)
                t = time.perf_counter()
                H = G.subgraph(comp)
                _, (S, T) = nx.minimum_cut(H.to_directed(), a, b, capacity="capacity")
                cut = [(u, v) for u, v in H.edges if (u in S) != (v in S)]
                G.remove_edges_from(cut)
                list(nx.connected_components(G.subgraph(comp)))
                bs.append(time.perf_counter() - t)
            res["baseline_merge_ms"] = {"p50": pct(bm, 50), "p99": pct(bm, 99), "n": len(bm)}
            res["baseline_split_ms"] = {"p50": pct(bs, 50), "p99": pct(bs, 99), "n": len(bs)}
            print(f"  baseline networkx merge p50 {pct(bm, 50):.2f} ms p99 {pct(bm, 99):.2f} ms (in memory, no "
                  f"log, no persistence); split p50 {pct(bs, 50):.1f} ms p99 {pct(bs, 99):.1f} ms")
            print(f"  -> split: neurolake (with persistence) x{pct(bs, 50) / res['split_ms']['p50']:.1f} "
                  f"faster at p50; graph work only x{pct(bs, 50) / res['split_ms']['compute_p50']:.1f}")
            del G

        # -- materialization --------------------------------------------------------------------------
        if args.synapses:
            from neurolake.annotations import create_table, get_table
            from neurolake.materialize import materialize

            S = args.synapses
            tab = create_table(lake, "bench", "synapses", "synapse")
            chunk = 500_000
            t = time.perf_counter()
            for start in range(0, S, chunk):
                n = min(chunk, S - start)
                pre = rng.integers(1, L**3 + 1, n)
                post = rng.integers(1, L**3 + 1, n)
                pos = rng.uniform(0, 1000, (n, 3)).round()
                df = pd.DataFrame({"pre_pt_position_x": pos[:, 0], "pre_pt_position_y": pos[:, 1],
                                   "pre_pt_position_z": pos[:, 2], "post_pt_position_x": pos[:, 0] + 1,
                                   "post_pt_position_y": pos[:, 1], "post_pt_position_z": pos[:, 2],
                                   "ctr_pt_position_x": pos[:, 0], "ctr_pt_position_y": pos[:, 1],
                                   "ctr_pt_position_z": pos[:, 2], "pre_pt_supervoxel_id": pre,
                                   "post_pt_supervoxel_id": post, "ctr_pt_supervoxel_id": pre,
                                   "size": rng.uniform(10, 500, n)})
                tab.append(df, bind=False, author="bench")
            res["synapse_load_s"] = time.perf_counter() - t
            T = dt.datetime.now(dt.UTC)
            t = time.perf_counter()
            v = materialize(lake, "bench", timestamp=T)
            dt_mat = time.perf_counter() - t
            assert v["rows"] == S
            res["materialize"] = {"rows": S, "seconds": dt_mat, "rows_per_s": S / dt_mat}
            print(f"materialize {S:,} synapses: {dt_mat:.1f} s = {S / dt_mat:,.0f} rows/s "
                  f"(loading them through the annotation API took {res['synapse_load_s']:.1f} s)")
            if not args.no_baseline:
                from deltalake import DeltaTable

                t = time.perf_counter()
                path = get_table(lake, "bench", "synapses").path
                df = DeltaTable(str(path)).to_pandas()
                ts = pd.Timestamp(T)
                df = df[(df["created"] <= ts) & (df["deleted"].isna() | (df["deleted"] > ts))]
                m = pd.Series(st.cur_root, index=sv)
                for p in ("pre_pt", "post_pt", "ctr_pt"):
                    df[f"{p}_root_id"] = df[f"{p}_supervoxel_id"].map(m).to_numpy()
                df.to_parquet(tmp / "baseline.parquet")
                dt_base = time.perf_counter() - t
                res["baseline_materialize"] = {"seconds": dt_base, "rows_per_s": S / dt_base}
                print(f"  baseline pandas: {dt_base:.1f} s = {S / dt_base:,.0f} rows/s -> neurolake "
                      f"x{dt_base / dt_mat:.2f}")
        lake.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps(res, indent=2))
    md = ["# Proofreading benchmark", "", f"Run {res['date']} (Python {res['machine']['python']}, "
          f"{res['machine']['cpus']} CPUs shared with other jobs).", "",
          f"Sizes: {res['sizes']}", "", "| measure | neurolake | baseline | target |", "|---|---|---|---|",
          f"| merge p50 / p99 (ms, full edit incl. catalog commit) | {res['merge_ms']['p50']:.2f} / "
          f"{res['merge_ms']['p99']:.2f} | {res.get('baseline_merge_ms', {}).get('p50', float('nan')):.2f} / "
          f"{res.get('baseline_merge_ms', {}).get('p99', float('nan')):.2f} (networkx, in memory only) | p99 < 100 |",
          f"| split p50 / p99 (ms, full edit) | {res['split_ms']['p50']:.2f} / {res['split_ms']['p99']:.2f} | "
          f"{res.get('baseline_split_ms', {}).get('p50', float('nan')):.1f} / "
          f"{res.get('baseline_split_ms', {}).get('p99', float('nan')):.1f} (networkx minimum_cut) | p99 < 500 |",
          f"| get_roots /s (latest) | {res['get_roots_per_s']['latest']:,.0f} | "
          f"{res.get('baseline_get_roots_per_s', float('nan')):,.0f} (dict) | >= 1,000,000 |",
          f"| get_roots /s (latest, general path for arbitrary ids) | "
          f"{res['get_roots_per_s']['latest_sparse_ids']:,.0f} | | >= 1,000,000 |",
          f"| get_roots /s (past timestamp) | {res['get_roots_per_s']['past']:,.0f} | | |"]
    if "materialize" in res:
        md.append(f"| materialize rows/s ({res['materialize']['rows']:,} synapses) | "
                  f"{res['materialize']['rows_per_s']:,.0f} | "
                  f"{res.get('baseline_materialize', {}).get('rows_per_s', float('nan')):,.0f} (pandas) | report |")
    (out / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / (args.out + '.json')}")


if __name__ == "__main__":
    main()
