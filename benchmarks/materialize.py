"""Materialization benchmark (issue 19 part 5): binding a synapse table to root ids vs pandas, Polars, DuckDB.

One proofreadable segmentation (an L x L x L lattice of supervoxels agglomerated into B x B x B blocks, then
``--merges`` merges so that roots differ from the initial agglomeration) and one synapse annotation table of
``--synapses`` rows (pre/post/ctr supervoxels drawn at random; ``--deletes`` rows soft-deleted before T).
Each repeat (interleaved, ``--repeats``, min and median) does the same binding at the same time T:

- neurolake: ``materialize(lake, ds, timestamp=T + i µs)`` (a new version each time: rows valid at T from the
  table's Delta version, every ``<point>_root_id`` = root of ``<point>_supervoxel_id`` at T, ids as uint64, one
  zstd Parquet file, catalog row and provenance);
- pandas: ``DeltaTable(path).to_pandas()``, filter ``created <= T and (deleted is null or deleted > T)``,
  ``merge`` with the (supervoxel, root) table once per point, ``to_parquet`` (zstd);
- Polars: ``scan_parquet(files)`` of the same Delta files, the same filter, a left ``join`` per point,
  ``sink_parquet`` (zstd);
- DuckDB: ``COPY (SELECT … FROM read_parquet(files) LEFT JOIN roots …) TO … (COMPRESSION zstd)``.

The baselines are given the (supervoxel → root at T) table ready-made (``Segmentation.roots(all supervoxels, T)``,
outside their timing); neurolake computes the roots at T inside its time. Every output has the same rows and the
same root ids (checked). Ratio = best baseline time / neurolake time (> 1 = neurolake faster; target >= 1.0).

Usage: ``python benchmarks/materialize.py [--synapses 2000000] [--lattice 50] [--repeats 3]``; writes
``benchmarks/results/materialize.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

POINTS = ("pre_pt", "post_pt", "ctr_pt")


def lattice(L: int, B: int, seed: int = 0):
    n = L**3
    idx = np.arange(n, dtype=np.int64).reshape(L, L, L)
    e = np.concatenate([np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1),
                        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                        np.stack([idx[:, :, :-1].ravel(), idx[:, :, 1:].ravel()], 1)])
    aff = np.random.default_rng(seed).uniform(0.5, 1.0, len(e)).astype(np.float32)
    z, y, x = np.unravel_index(np.arange(n), (L, L, L))
    nb = L // B
    block = (z // B) * nb * nb + (y // B) * nb + (x // B)
    return np.arange(1, n + 1, dtype=np.uint64), e + 1, aff, block


def build(tmp: Path, L: int, B: int, S: int, merges: int, deletes: int):
    """The lake: segmentation, ``merges`` merges, an ``S``-row synapse table with ``deletes`` deleted rows."""
    from neurolake import init_lake
    from neurolake.annotations import create_table
    from neurolake.proofreading import create_segmentation

    sv, e, aff, block = lattice(L, B)
    lake = init_lake(tmp / "lake")
    lake.create_datastack("bench", (8, 8, 40))
    seg = create_segmentation(lake, "bench", supervoxels=sv, edges=e, affinities=aff,
                              mapping=pd.DataFrame({"sv": sv, "obj": block}), agglomeration="mapping")
    rng = np.random.default_rng(1)
    cross = np.flatnonzero(block[e[:, 0] - 1] != block[e[:, 1] - 1])
    done = 0
    for p in rng.permutation(cross):
        a, b = int(e[p, 0]), int(e[p, 1])
        if seg.root(a) != seg.root(b):
            seg.merge(a, b, author="bench")
            done += 1
            if done == merges:
                break
    t = create_table(lake, "bench", "synapses", "synapse")
    n = L**3
    chunk = 1_000_000
    for start in range(0, S, chunk):
        m = min(chunk, S - start)
        pos = rng.integers(0, 1000, (m, 3)).astype(np.float64)
        cols = {}
        for p, d in (("pre_pt", -1), ("post_pt", 1), ("ctr_pt", 0)):
            cols[f"{p}_position_x"] = pos[:, 0] + d
            cols[f"{p}_position_y"] = pos[:, 1]
            cols[f"{p}_position_z"] = pos[:, 2]
        pre, post = rng.integers(1, n + 1, m), rng.integers(1, n + 1, m)
        cols |= {"pre_pt_supervoxel_id": pre, "post_pt_supervoxel_id": post, "ctr_pt_supervoxel_id": pre,
                 "size": rng.uniform(10, 500, m).round(), "confidence": rng.uniform(0, 1, m).round(3)}
        t.append(pa.table(cols), bind=False, author="bench")
    if deletes:
        t.delete(rng.choice(np.arange(1, S + 1), deletes, replace=False).tolist(), author="bench")
    time.sleep(0.01)
    T = dt.datetime.now(dt.UTC)
    return lake, seg, t, sv, T


def check(out: Path, rows: int, want: dict[str, int]) -> None:
    import pyarrow.parquet as pq

    tab = pq.read_table(out, columns=[f"{p}_root_id" for p in POINTS])
    assert tab.num_rows == rows, (out, tab.num_rows, rows)
    got = {c: int(np.asarray(tab.column(c).to_numpy(zero_copy_only=False)).astype(np.uint64).sum(dtype=np.uint64))
           for c in tab.column_names}
    assert got == want, (out, got, want)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synapses", type=int, default=2_000_000)
    ap.add_argument("--lattice", type=int, default=50, help="L: L^3 supervoxels")
    ap.add_argument("--block", type=int, default=5, help="B: neurons are B^3 blocks")
    ap.add_argument("--merges", type=int, default=200)
    ap.add_argument("--deletes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--note", default="", help="a sentence on the conditions, added to the results")
    args = ap.parse_args()

    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    from neurolake.materialize import materialize

    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-mat-"))
    results: dict = {"sizes": vars(args), "load_average_start": os.getloadavg()}
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        lake, seg, table, sv, T = build(tmp, args.lattice, args.block, args.synapses, args.merges, args.deletes)
        results["setup_s"] = time.perf_counter() - t0
        S = args.synapses - args.deletes
        files = [f.removeprefix("file://") for f in DeltaTable(str(table.path)).file_uris()]
        roots = seg.roots(sv, T)
        mapping = pd.DataFrame({"sv": sv.view(np.int64), "root": roots})
        mapping_pl = pl.from_pandas(mapping)
        print(f"setup {results['setup_s']:.1f} s: {len(sv):,} supervoxels, {args.merges} merges, "
              f"{args.synapses:,} synapses ({args.deletes:,} deleted), {len(files)} files", flush=True)
        ts = pd.Timestamp(T)
        out = tmp / "out"
        out.mkdir()

        def run_neurolake(i: int) -> Path:
            v = materialize(lake, "bench", timestamp=T + dt.timedelta(microseconds=i + 1))
            assert not v["reused"] and v["rows"] == S
            return lake.root / v["path"] / "synapses.parquet"

        def run_pandas(i: int) -> Path:
            df = DeltaTable(str(table.path)).to_pandas()
            df = df[(df["created"] <= ts) & (df["deleted"].isna() | (df["deleted"] > ts))]
            for p in POINTS:
                m = mapping.rename(columns={"sv": f"{p}_supervoxel_id", "root": f"{p}_root_id"})
                df = df.drop(columns=[f"{p}_root_id"]).merge(m, on=f"{p}_supervoxel_id", how="left")
            f = out / f"pandas{i}.parquet"
            df.to_parquet(f, compression="zstd", index=False)
            return f

        def run_polars(i: int) -> Path:
            lf = pl.scan_parquet(files).filter((pl.col("created") <= T) & (pl.col("deleted").is_null()
                                                                           | (pl.col("deleted") > T)))
            for p in POINTS:
                m = mapping_pl.rename({"sv": f"{p}_supervoxel_id", "root": f"{p}_root_id"}).lazy()
                lf = lf.drop(f"{p}_root_id").join(m, on=f"{p}_supervoxel_id", how="left")
            f = out / f"polars{i}.parquet"
            lf.sink_parquet(f, compression="zstd")
            return f

        con = duckdb.connect()
        con.execute("SET threads TO 2")
        con.register("roots_df", mapping)
        con.execute("CREATE TABLE roots AS SELECT * FROM roots_df")
        sel = ", ".join(f"r{k}.root AS {p}_root_id" for k, p in enumerate(POINTS))
        joins = " ".join(f"LEFT JOIN roots r{k} ON s.{p}_supervoxel_id = r{k}.sv" for k, p in enumerate(POINTS))

        def run_duckdb(i: int) -> Path:
            f = out / f"duckdb{i}.parquet"
            con.execute(f"COPY (SELECT s.* EXCLUDE ({', '.join(f'{p}_root_id' for p in POINTS)}), {sel} "
                        f"FROM read_parquet({files!r}) s {joins} WHERE s.created <= ? AND "
                        f"(s.deleted IS NULL OR s.deleted > ?)) TO '{f}' (FORMAT parquet, COMPRESSION zstd)",
                        [T, T])
            return f

        runners = {"neurolake": run_neurolake, "pandas": run_pandas, "polars": run_polars, "duckdb": run_duckdb}
        times: dict[str, list[float]] = {k: [] for k in runners}
        cpu: dict[str, list[float]] = {k: [] for k in runners}
        want = None
        for i in range(args.repeats):
            for name, fn in runners.items():
                os.sync()
                c0, t0 = time.process_time(), time.perf_counter()
                f = fn(i)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                if want is None:
                    import pyarrow.parquet as pq

                    tab = pq.read_table(f, columns=[f"{p}_root_id" for p in POINTS])
                    want = {c: int(np.asarray(tab.column(c).to_numpy(zero_copy_only=False)).astype(np.uint64)
                                   .sum(dtype=np.uint64)) for c in tab.column_names}
                check(f, S, want)
                if name != "neurolake":
                    f.unlink()
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        con.close()
        lake.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = {k: {"min": min(v), "median": statistics.median(v), "all": v} for k, v in times.items()}
    best = min(("pandas", "polars", "duckdb"), key=lambda k: stats[k]["median"])
    best_min = min(("pandas", "polars", "duckdb"), key=lambda k: stats[k]["min"])
    results |= {"rows": S, "seconds": stats, "cpu_seconds": {k: {"median": statistics.median(v), "all": v}
                                                              for k, v in cpu.items()},
                "best_baseline": best, "ratio_vs_best_median": stats[best]["median"] / stats["neurolake"]["median"],
                "ratio_vs_best_min": stats[best_min]["min"] / stats["neurolake"]["min"],
                "ratios_median": {k: stats[k]["median"] / stats["neurolake"]["median"]
                                  for k in ("pandas", "polars", "duckdb")},
                "load_average_end": os.getloadavg(), "run_seconds": time.perf_counter() - started}
    la0, la1 = results["load_average_start"][0], results["load_average_end"][0]
    lines = [f"Synapse table of {args.synapses:,} rows ({args.deletes:,} soft-deleted before T: {S:,} rows bound), "
             f"3 points each; segmentation of {args.lattice**3:,} supervoxels in {(args.lattice // args.block) ** 3:,} "
             f"blocks, {args.merges} merges. {args.repeats} interleaved repeats; {os.cpu_count()} cores shared with "
             f"other work (load average {la0:.1f} at the start, {la1:.1f} at the end; whole run "
             f"{results['run_seconds'] / 60:.1f} min). {args.note}".strip(), "",
             "| binding | wall s min / median | CPU s median | rows/s (median) | ratio (its time / neurolake's) |",
             "|---|---|---|---|---|"]
    for k in runners:
        s = stats[k]
        lines.append(f"| {k} | {s['min']:.2f} / {s['median']:.2f} | {results['cpu_seconds'][k]['median']:.2f} | "
                     f"{S / s['median']:,.0f} | {s['median'] / stats['neurolake']['median']:.2f} |")
    lines += ["", f"**Ratio vs the best baseline ({best}), target >= 1.0: {results['ratio_vs_best_median']:.2f}** "
              f"(medians; on the minima vs {best_min}: {results['ratio_vs_best_min']:.2f}).", "",
              "neurolake: `materialize(lake, ds, timestamp=T)` — the whole version (rows valid at T, roots at T "
              "computed from the segmentation's edit history, uint64 ids, one zstd Parquet file, catalog row, "
              "provenance). Baselines: the same Delta files, the same filter, a left join per point with a "
              "ready-made (supervoxel, root at T) table, zstd Parquet out; same rows and root ids (checked)."]
    write_results("materialize", results, lines)


if __name__ == "__main__":
    main()
