"""Electrophysiology ETL benchmark (issue 18 "Must show").

(a) **ABF ingest with features** — ``neurolake.ephys.etl.ingest`` of the shipped ABF files (data/ephys/abf: 14
    ABF1/ABF2 files, 14.4 MB) into a fresh lake: read (pyabf), stimulus classes, QC, eFEL features, traces to
    Zarr, Delta tables — files/s and MB/s; against the reference on the same sweeps in the same run: pyabf reading
    every file plus eFEL called directly (``neurolake.ephys.features.efel_direct``: the same feature list and
    settings, no bookkeeping). Overhead = ingest time / reference time (target ≤ 1.3×). Each side ``--repeat``
    times; min and median reported.
(b) **MEA spike-list ingest** — a generated Axion-format spike list of ``--mea-spikes`` rows (default 10⁸; 48
    wells × 16 electrodes, Poisson-ish trains with bursts, settings block in columns 1–2 like AxIS exports)
    ingested in a child process: rows/s and the child's peak RSS (``resource.getrusage(RUSAGE_CHILDREN)``;
    target: streaming, peak RSS < 1 GB), next to pandas ``read_csv`` of the same file's columns 3–5 (the
    in-memory way; its peak RSS measured the same way, only when ``--pandas`` is given: it needs ~10 GB at 10⁸).

Writes ``benchmarks/results/ephys.{json,md}``. Usage:
``python benchmarks/ephys.py [--repeat 3] [--mea-spikes 100000000] [--workdir DIR] [--pandas]``.
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
from _common import ROOT, median, write_results  # noqa: E402

ABF_DIR = ROOT / "data" / "ephys" / "abf"


def reference_pass(files: list[Path]) -> int:
    """pyabf reading + eFEL directly on every current-clamp sweep (via neurolake's readers' Sweep objects is
    NOT used here: pyabf alone reads, our stimulus classes give eFEL the same window)."""
    from neurolake.ephys import abf, features, stimulus

    n = 0
    for f in files:
        rec = abf.read(f)
        stims = [stimulus.classify(s) for s in rec.sweeps]
        n += len(features.efel_direct(rec.sweeps, stims, None))
    return n


def abf_ingest(workdir: Path, repeat: int) -> dict:
    from neurolake import open_lake
    from neurolake.ephys import etl

    files = sorted(ABF_DIR.glob("*.abf"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    ours, ref = [], []
    reference_pass(files[:1])  # warm-up: imports, eFEL's first call
    for i in range(repeat):
        lake = open_lake(workdir / f"abf-{i}", create=True)
        t = time.perf_counter()
        report = etl.ingest(lake, "bench", ABF_DIR)
        ours.append(time.perf_counter() - t)
        assert not report.errors, report.errors
        lake.close()
        t = time.perf_counter()
        reference_pass(files)
        ref.append(time.perf_counter() - t)
    return {"files": len(files), "mb": round(mb, 2),
            "ingest_s": {"min": min(ours), "median": median(ours)},
            "reference_s": {"min": min(ref), "median": median(ref)},
            "files_per_s": len(files) / median(ours), "mb_per_s": mb / median(ours),
            "overhead_min": min(ours) / min(ref), "overhead_median": median(ours) / median(ref),
            "target_overhead": 1.3}


SETTINGS = [("Investigator", ""), ("Recording Name", "bench"), ("Description", ""), ("", ""),
            ("Sampling Frequency", "12500 Hz"), ("Voltage Scale", "6.5E-08 V/sample"),
            ("Plate Type", "Maestro 48-Well (Transparent)"), ("AxIS Version", "2.0.3.3"),
            ("Recording Offset from File Start", "0s"), ("Method", "Adaptive Threshold Crossing"),
            ("Threshold", "7")]


def generate_spike_list(path: Path, n: int, seed: int = 0) -> float:
    """Write an Axion-format spike list of ``n`` spikes sorted by time (columns: Investigator, blank, Time (s),
    Electrode, Amplitude(mV); the settings block in columns 1–2 of the first rows). Returns its duration, s."""
    rng = np.random.default_rng(seed)
    wells = [f"{r}{c}" for r in "ABCDEF" for c in range(1, 9)]
    electrodes = np.array([f"{w}_{i}{j}" for w in wells for i in range(1, 5) for j in range(1, 5)])
    rate = 10.0  # Hz per electrode
    duration = n / (rate * len(electrodes))
    chunk = 5_000_000
    t0 = 0.0
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = pa.array(electrodes)
    with open(path, "wb") as fh:
        fh.write(b"Investigator,,Time (s),Electrode,Amplitude(mV)\n")
        written = 0
        while written < n:
            m = min(chunk, n - written)
            t = t0 + np.cumsum(rng.exponential(1.0 / (rate * len(electrodes)), m))
            t0 = float(t[-1])
            k1 = [None] * m
            k2 = [None] * m
            if written == 0:
                for i, (k, v) in enumerate(SETTINGS[:m]):
                    k1[i], k2[i] = k, v
            tab = pa.table({"a": pa.array(k1, pa.string()), "b": pa.array(k2, pa.string()),
                            "t": pa.array(np.round(t, 5)), "e": names.take(pa.array(rng.integers(0, len(electrodes), m))),
                            "amp": pa.array(np.round(rng.normal(0.03, 0.01, m), 4))})
            pacsv.write_csv(tab, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
            written += m
    return duration


CHILD = """
import resource, sys, time
from neurolake import open_lake
from neurolake.ephys import etl
lake = open_lake(sys.argv[1], create=True)
t = time.perf_counter()
r = etl.ingest(lake, "bench", sys.argv[2])
dt = time.perf_counter() - t
assert not r.errors, r.errors
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PANDAS_CHILD = """
import resource, sys, time
import pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], usecols=[2, 3, 4])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(df))
"""


def mea_ingest(workdir: Path, n: int, with_pandas: bool) -> dict:
    folder = workdir / "mea"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "bench_plate1_DIV14_spike_list.csv"
    t = time.perf_counter()
    duration = generate_spike_list(csv, n)
    gen_s = time.perf_counter() - t
    out = subprocess.run([sys.executable, "-c", CHILD, str(workdir / "mea-lake"), str(folder)],
                         capture_output=True, text=True, check=True)
    secs, rss_kb = out.stdout.split()[-2:]
    res = {"spikes": n, "csv_bytes": csv.stat().st_size, "duration_s": duration, "generate_s": gen_s,
           "ingest_s": float(secs), "rows_per_s": n / float(secs), "peak_rss_mb": int(rss_kb) / 1024,
           "target_peak_rss_mb": 1024}
    if with_pandas:
        p = subprocess.run([sys.executable, "-c", PANDAS_CHILD, str(csv)], capture_output=True, text=True)
        if p.returncode == 0:
            s, kb, _ = p.stdout.split()[-3:]
            res["pandas_read_csv_s"], res["pandas_peak_rss_mb"] = float(s), int(kb) / 1024
        else:
            res["pandas_read_csv"] = f"failed ({p.returncode}): {p.stderr[-300:]}"
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mea-spikes", type=int, default=100_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--pandas", action="store_true", help="also measure pandas.read_csv of the whole list")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="neurolake-bench-ephys-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        a = abf_ingest(workdir, args.repeat)
        b = mea_ingest(workdir, args.mea_spikes, args.pandas)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    lines = [
        f"ABF ingest with features: {a['files']} files, {a['mb']} MB: {a['files_per_s']:.2f} files/s, "
        f"{a['mb_per_s']:.2f} MB/s (median of {args.repeat})",
        f"  vs pyabf + eFEL directly on the same sweeps: overhead {a['overhead_median']:.2f}× median, "
        f"{a['overhead_min']:.2f}× min (target ≤ {a['target_overhead']}×: "
        f"{'met' if a['overhead_median'] <= a['target_overhead'] else 'NOT met'})",
        f"  ingest {a['ingest_s']['median']:.2f} s, reference {a['reference_s']['median']:.2f} s",
        f"MEA spike list: {b['spikes']:,} spikes ({b['csv_bytes'] / 1e9:.2f} GB CSV): {b['rows_per_s']:,.0f} rows/s, "
        f"ingest {b['ingest_s']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB (target < 1024 MB: "
        f"{'met' if b['peak_rss_mb'] < 1024 else 'NOT met'})",
    ]
    if "pandas_peak_rss_mb" in b:
        lines.append(f"  pandas read_csv of the same columns: {b['pandas_read_csv_s']:.1f} s, peak RSS "
                     f"{b['pandas_peak_rss_mb']:.0f} MB")
    write_results("ephys", {"abf": a, "mea": b, "cpus": os.cpu_count(),
                            "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, lines)


if __name__ == "__main__":
    main()
