"""Edit latency benchmark (issue 19, part 3): merge / split at 10⁶ supervoxels on SQLite, full edit vs graph work.

Graph: the lattice of benchmarks/proofreading.py — an L x L x L lattice of supervoxels (6-neighbour RAG,
affinities uniform in [0.5, 1]) agglomerated into B x B x B blocks ("neurons" of B³ supervoxels), created
through ``create_segmentation`` in a lake on local disk (SQLite catalog, WAL). Each repeat merges ``--edits``
pairs of fresh neurons across a block face (``Segmentation.merge`` with the roots the editor saw) and splits
each again (``Segmentation.split``: minimum cut between two supervoxels of each neuron). For every edit it
also times the graph work alone on the same state: ``GraphState.plan`` (merge) and ``min_cut`` + ``plan``
(split: ``GraphState.split_plan``, min cut + components, what the edit runs); the difference is what
persistence costs (one catalog transaction: 4 statements + commit). Each figure is given as wall-clock time
and as CPU time of the calling thread (``time.thread_time``): on a shared machine the wall clock includes
waiting for a CPU, which the load average printed with the results shows.

Reference on the same machine and disk, same run: the same transaction (UPDATE the graph row, INSERT the
operation row with the same JSON, INSERT the root rows, UPDATE next_root, COMMIT) through Python's ``sqlite3``
alone — the floor any SQLite-backed edit log pays. Both commit modes are measured:
``synchronous=NORMAL`` (neurolake's edits: durable against a killed process, not against power loss) and
``FULL`` (fsync of the WAL at every commit; durable against power loss). docs/proofreading.md, "Durability".

Figures per repeat: p50 and p90 in ms; across ``--repeat`` repeats (≥ 3) the min and the median of those.
Targets: merge p50 ≤ 5 ms, split p50 ≤ 10 ms. Writes ``benchmarks/results/edits.{json,md}``.
Usage: ``python benchmarks/edits.py [--lattice 100] [--block 10] [--edits 60] [--repeat 3]``
(about 1 minute at the defaults; the lake lives in a temporary folder on the same disk as /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_results  # noqa: E402
from benchmarks.proofreading import lattice  # noqa: E402


def ms(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def timed(wall: list, cpu: list, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, appending its wall-clock and calling-thread CPU seconds."""
    c, t = time.thread_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    wall.append(time.perf_counter() - t)
    cpu.append(time.thread_time() - c)
    return out


def summary(runs: list[dict]) -> dict:
    """min and median over repeats of each per-repeat figure."""
    keys = runs[0].keys()
    return {k: {"min": min(r[k] for r in runs), "median": statistics.median(r[k] for r in runs)} for k in keys}


def sqlite_floor(folder: Path, n: int, sync: str, edges_json: str, roots: int) -> list[float]:
    """The edit's transaction through plain sqlite3: one graph row bump, one operation row, root rows, commit."""
    db = folder / f"floor-{sync}.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute("CREATE TABLE IF NOT EXISTS g (id INTEGER PRIMARY KEY, last_seq INT, next_root INT)")
    con.execute("CREATE TABLE IF NOT EXISTS ops (id INTEGER PRIMARY KEY, graph_id INT, seq INT, kind TEXT, "
                "author TEXT, ts TEXT, old_roots TEXT, new_roots TEXT, edges TEXT, inputs TEXT, targets TEXT, "
                "undone_by INT, UNIQUE (graph_id, seq))")
    con.execute("CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, graph_id INT, root_id INT, "
                "created_seq INT, expired_seq INT, n INT, UNIQUE (graph_id, root_id))")
    con.execute("INSERT OR IGNORE INTO g VALUES (1, 0, 1000)")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        con.execute("BEGIN")
        seq, nr = con.execute("UPDATE g SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq, next_root"
                              ).fetchone()
        con.execute("INSERT INTO ops (graph_id, seq, kind, author, ts, old_roots, new_roots, edges, inputs, targets) "
                    "VALUES (1, ?, 'merge', 'bench', '2026-01-01T00:00:00', '[1, 2]', ?, ?, '{}', '[]')",
                    (seq, json.dumps([nr]), edges_json))
        con.executemany("INSERT INTO roots (graph_id, root_id, created_seq, expired_seq, n) VALUES (1, ?, ?, NULL, 1000)",
                        [(nr + i, seq) for i in range(roots)])
        con.execute("UPDATE g SET next_root = ? WHERE id = 1", (nr + roots,))
        con.execute("COMMIT")
        out.append(time.perf_counter() - t)
    con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lattice", type=int, default=100, help="L: L^3 supervoxels")
    ap.add_argument("--block", type=int, default=10, help="B: neurons are B^3 blocks")
    ap.add_argument("--edits", type=int, default=60, help="merges (and as many splits) per repeat and mode")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import neurolake.proofreading.service as S
    from neurolake import init_lake
    from neurolake.proofreading import create_segmentation

    L, B = args.lattice, args.block
    modes = ("NORMAL", "FULL")
    need = args.edits * args.repeat * len(modes) * 2
    if need > (L // B) ** 3:
        raise SystemExit(f"{need} fresh neurons needed, the lattice has {(L // B) ** 3}: lower --edits")
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-edits-"))
    res: dict = {"load_average_at_start": os.getloadavg(), "sizes": {"supervoxels": L**3, "neuron_supervoxels": B**3, "neurons": (L // B) ** 3,
                           "edits_per_repeat": args.edits, "repeats": args.repeat},
                 "catalog": "SQLite (WAL), lake on local disk", "targets_ms": {"merge_p50": 5, "split_p50": 10}}
    try:
        sv, e, aff, block = lattice(L, B)
        lake = init_lake(tmp / "lake")
        lake.create_datastack("bench", (8, 8, 40))
        t = time.perf_counter()
        seg = create_segmentation(lake, "bench", supervoxels=sv, edges=e, affinities=aff,
                                  mapping=pd.DataFrame({"sv": sv, "obj": block}), agglomeration="mapping")
        st = seg.state()
        res["create_s"] = time.perf_counter() - t
        print(f"graph: {L**3:,} supervoxels, {len(e):,} edges, {(L // B) ** 3} neurons of {B**3} supervoxels; "
              f"created + loaded in {res['create_s']:.1f} s")
        rng = np.random.default_rng(1)
        cross = rng.permutation(np.flatnonzero(block[e[:, 0] - 1] != block[e[:, 1] - 1]))
        first_of = {int(k): int(v) + 1 for k, v in zip(*np.unique(block, return_index=True), strict=True)}
        last_of = {int(k): L**3 - int(v) for k, v in zip(*np.unique(block[::-1], return_index=True), strict=True)}
        pairs, used = [], set()
        for p in cross:
            a, b = int(e[p, 0]), int(e[p, 1])
            ba, bb = int(block[a - 1]), int(block[b - 1])
            if ba not in used and bb not in used:
                used |= {ba, bb}
                pairs.append((a, b, ba, bb))
            if len(pairs) == need // 2:
                break
        # warm-up (first statements compile, caches fill): one merge + split outside the measurements
        a, b, ba, bb = pairs.pop()
        op = seg.merge(a, b, author="bench", roots=list(seg.roots([a, b])))
        seg.split([a, first_of[ba]], [b, last_of[bb]], author="bench", roots=op["new_roots"])
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        split_sizes = []
        for rep in range(args.repeat):
            for mode in modes:
                S.EDIT_SYNCHRONOUS = mode
                batch, pairs = pairs[: args.edits], pairs[args.edits:]
                mt, mc, stt, sc = [], [], [], []
                cpu = {"merge": [], "merge_graph": [], "split": [], "split_graph": []}
                for a, b, _, _ in batch:
                    ra, rb = (int(r) for r in seg.roots([a, b]))
                    timed(mc, cpu["merge_graph"], st.plan, [(a - 1, b - 1, 1.0, True)], merge_only=True)
                    timed(mt, cpu["merge"], seg.merge, a, b, author="bench", roots=[ra, rb])
                for a, b, ba, bb in batch:
                    src, snk = [a, first_of[ba]], [b, last_of[bb]]
                    root = int(seg.root(a))
                    timed(sc, cpu["split_graph"], st.split_plan, root, st.index(src), st.index(snk))
                    op = timed(stt, cpu["split"], seg.split, src, snk, author="bench", roots=[root])
                    split_sizes.append(len(op["new_roots"]))
                r = {"merge_p50": ms(mt, 50), "merge_p90": ms(mt, 90), "merge_graph_p50": ms(mc, 50),
                     "merge_graph_p90": ms(mc, 90), "split_p50": ms(stt, 50), "split_p90": ms(stt, 90),
                     "split_graph_p50": ms(sc, 50), "split_graph_p90": ms(sc, 90),
                     **{f"{k}_cpu_p50": ms(v, 50) for k, v in cpu.items()}}
                runs[mode].append(r)
                print(f"repeat {rep + 1} {mode:6s}: merge p50 {r['merge_p50']:.2f} p90 {r['merge_p90']:.2f} ms "
                      f"(graph {r['merge_graph_p50']:.2f}; CPU {r['merge_cpu_p50']:.2f}); split p50 "
                      f"{r['split_p50']:.2f} p90 {r['split_p90']:.2f} ms (graph {r['split_graph_p50']:.2f}; CPU "
                      f"{r['split_cpu_p50']:.2f})")
        S.EDIT_SYNCHRONOUS = "NORMAL"
        res["split_new_roots"] = sorted(set(split_sizes))
        res["operations"] = seg.info()["operations"]
        lake.close()
        # the reference: the same transaction through sqlite3 alone, same disk
        edges_json = json.dumps([[1, 2, 0.75, False]] * 100)  # a split's cut across a 10 x 10 face
        floor = {m: [] for m in modes}
        for _ in range(args.repeat):
            for m in modes:
                x = sqlite_floor(tmp, args.edits * 2, m, edges_json, roots=2)
                floor[m].append({"p50": ms(x, 50), "p90": ms(x, 90)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_average_at_end"] = os.getloadavg()
    res["runs"] = runs
    res["summary"] = {m: summary(runs[m]) for m in modes}
    res["sqlite3_floor"] = {m: summary(floor[m]) for m in modes}
    sm, fl = res["summary"], res["sqlite3_floor"]
    lines = [f"Sizes: {res['sizes']}; SQLite catalog (WAL) on local disk; {args.repeat} repeats of "
             f"{args.edits} merges + {args.edits} splits per commit mode; figures in ms, min / median over repeats.",
             "",
             f"Machine: {os.cpu_count()} CPUs shared with other jobs; load average (1 min) "
             f"{res['load_average_at_start'][0]:.1f} at the start, {res['load_average_at_end'][0]:.1f} at the end. "
             "Wall-clock figures include waiting for a CPU; the CPU-time rows show the work itself.", "",
             "| measure | NORMAL (default) min / median | FULL min / median | target |", "|---|---|---|---|"]
    for key, label, target in (("merge_p50", "merge p50, full edit", "≤ 5"), ("merge_p90", "merge p90", ""),
                               ("merge_graph_p50", "merge p50, graph work alone", ""),
                               ("split_p50", "split p50, full edit", "≤ 10"), ("split_p90", "split p90", ""),
                               ("split_graph_p50", "split p50, graph work alone (min cut + components)", ""),
                               ("merge_cpu_p50", "merge p50, CPU time of the calling thread", ""),
                               ("split_cpu_p50", "split p50, CPU time of the calling thread", ""),
                               ("split_graph_cpu_p50", "split p50, graph work alone, CPU time", "")):
        lines.append(f"| {label} | {sm['NORMAL'][key]['min']:.2f} / {sm['NORMAL'][key]['median']:.2f} | "
                     f"{sm['FULL'][key]['min']:.2f} / {sm['FULL'][key]['median']:.2f} | {target} |")
    lines.append(f"| reference: the same transaction in plain sqlite3, p50 | {fl['NORMAL']['p50']['min']:.2f} / "
                 f"{fl['NORMAL']['p50']['median']:.2f} | {fl['FULL']['p50']['min']:.2f} / "
                 f"{fl['FULL']['p50']['median']:.2f} | |")
    for m in modes:
        over = sm[m]["merge_p50"]["median"] - sm[m]["merge_graph_p50"]["median"]
        lines.append("")
        lines.append(f"{m}: merge = graph work {sm[m]['merge_graph_p50']['median']:.2f} ms + persistence "
                     f"{over:.2f} ms (plain sqlite3 floor {fl[m]['p50']['median']:.2f} ms: neurolake "
                     f"x{over / fl[m]['p50']['median']:.1f} of it); split = graph work "
                     f"{sm[m]['split_graph_p50']['median']:.2f} ms + "
                     f"{sm[m]['split_p50']['median'] - sm[m]['split_graph_p50']['median']:.2f} ms.")
    ok = sm["NORMAL"]["merge_p50"]["median"] <= 5 and sm["NORMAL"]["split_p50"]["median"] <= 10
    lines += ["", f"Targets (NORMAL, median of repeats): merge p50 ≤ 5 ms, split p50 ≤ 10 ms: "
              f"{'met' if ok else 'NOT met'}."]
    write_results("edits", res, lines)


if __name__ == "__main__":
    main()
