"""Feature-registry benchmark (issue 6 targets).

Prints and writes ``benchmarks/results/registry.{json,md}``:

1. Register + validate time of a ``--rows`` (default 10^7) row feature table stored as Parquet (one
   file, hashed for the fingerprint) and as Delta Lake (fingerprint = version; no hashing).
2. Signed-URL issue rate: HMAC-SHA256 URL signing alone, ``FeatureRegistry.signed_urls`` (catalog
   lookup + audit event per grant) and ``POST /api/v1/features/{name}/signed-urls`` on a real server
   process, as URLs/s and grants/s. Target >= 2,000 URLs/s.
3. Parquet scan throughput through signed URLs served by a real ``neurolake serve`` process on
   loopback vs reading the local file, with the same engine (DuckDB, Polars), the same full-scan query.
   Target ratio >= 0.8.
4. Requests/s of an ordinary JSON route with and without ``--auth`` (the cost of the global check).

The table is a synthetic bouton-feature table built on the real hemibrain neuron list (Schlegel et al.
2024, 25,397 body ids and their cell types): ``root_id`` (a hemibrain bodyId), ``bouton_id``,
``size_nm3`` (log-normal), ``distance_to_soma_nm``, ``cell_type`` (that body's type).

Usage: ``python benchmarks/registry.py [--rows 10000000] [--workdir DIR [--reuse]] [--grants 300] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, median, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEMI = ROOT.parent / "shared" / "data" / "annotations_flywire_hemibrain_meta_schlegel2024" / \
    "Supplemental_file5_hemibrain_meta.csv"
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def build_table(rows: int):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    meta = pcsv.read_csv(HEMI)
    body = meta.column("bodyId").to_numpy()
    types = meta.column("type").to_pylist()
    rng = np.random.default_rng(6)
    idx = rng.integers(0, len(body), rows)
    cats = sorted({t or "unknown" for t in types})
    code = {c: i for i, c in enumerate(cats)}
    tcode = np.array([code[t or "unknown"] for t in types], dtype=np.int32)
    return pa.table({
        "root_id": pa.array(body[idx].astype(np.int64)),
        "bouton_id": pa.array(np.arange(rows, dtype=np.int64)),
        "size_nm3": pa.array(rng.lognormal(17.0, 0.8, rows).astype(np.float32)),
        "distance_to_soma_nm": pa.array(rng.gamma(2.0, 40_000.0, rows).astype(np.float32)),
        "cell_type": pa.DictionaryArray.from_arrays(pa.array(tcode[idx]), pa.array(cats)),
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--grants", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="reuse tables already built in --workdir")
    args = ap.parse_args()

    import duckdb
    import duckdb_ext
    import httpx
    import polars as pl
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from neurolake import init_lake
    from neurolake.catalog import FeatureRegistry
    from neurolake.storage.signing import Signer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="nl-registry-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"rows": args.rows}
    lines = [f"Feature table: {args.rows:,} rows x 5 columns (root_id, bouton_id, size_nm3, distance_to_soma_nm, "
             "cell_type) on the real hemibrain body ids / cell types.", ""]

    t = time.perf_counter()
    pq_path = work / "boutons.parquet"
    delta_path = work / "boutons_delta"
    if args.reuse and pq_path.exists() and delta_path.exists() and pq.ParquetFile(pq_path).metadata.num_rows == args.rows:
        table = None
    else:
        table = build_table(args.rows)
    if table is not None:
        pq.write_table(table, pq_path, row_group_size=1_000_000, compression="snappy")
        if delta_path.exists():
            shutil.rmtree(delta_path)
        parts = 8  # a Delta table written by 8 appends: 8 data files, version 7
        step = -(-args.rows // parts)
        for i in range(parts):
            write_deltalake(str(delta_path), table.slice(i * step, step), mode="append")
        del table
    res["build_s"] = round(time.perf_counter() - t, 2)
    res["parquet_bytes"] = pq_path.stat().st_size
    print(f"built tables in {res['build_s']} s; parquet {res['parquet_bytes'] / 1e6:.1f} MB")

    lake_path = work / "lake"
    if lake_path.exists():
        shutil.rmtree(lake_path)
    lake = init_lake(lake_path)
    lake.create_datastack("hemibrain", (8, 8, 8))
    reg = FeatureRegistry(lake)
    # 1. register + validate
    t = time.perf_counter()
    e = reg.register(name="boutons", datastack="hemibrain", location=str(pq_path), tags=["boutons"])
    res["register_parquet_s"] = round(time.perf_counter() - t, 3)
    assert e["row_count"] == args.rows
    t = time.perf_counter()
    e = reg.register(name="boutons_delta", datastack="hemibrain", location=str(delta_path))
    res["register_delta_s"] = round(time.perf_counter() - t, 3)
    assert e["row_count"] == args.rows
    delta_files = e["file_count"]
    lines += ["## Register + validate", "",
              f"- Parquet ({res['parquet_bytes'] / 1e6:.0f} MB, SHA-256 of every file for the fingerprint): "
              f"**{res['register_parquet_s']} s**",
              f"- Delta ({delta_files} file(s); fingerprint = version): **{res['register_delta_s']} s**", ""]

    # 2. signed URL issue rate
    signer = Signer(b"k" * 32)
    n = 100_000
    t = time.perf_counter()
    for i in range(n):
        signer.prefix(1, "/data/boutons.parquet", "alice", 1_900_000_000 + i)
    res["hmac_urls_per_s"] = round(n / (time.perf_counter() - t))
    t = time.perf_counter()
    urls = 0
    for _ in range(args.grants):
        urls += len(reg.signed_urls("boutons_delta", expires_in_s=600)["urls"])
    dt_ = time.perf_counter() - t
    res["python_grants_per_s"] = round(args.grants / dt_, 1)
    res["python_urls_per_s"] = round(urls / dt_, 1)
    lake.close()

    server = Server(lake_path)
    try:
        with httpx.Client(base_url=server.base, timeout=60) as c:
            for _ in range(10):
                c.post("/api/v1/features/boutons_delta/signed-urls", json={})
            t = time.perf_counter()
            urls = 0
            for _ in range(args.grants):
                r = c.post("/api/v1/features/boutons_delta/signed-urls", json={"expires_in_s": 600})
                urls += len(r.json()["urls"])
            dt_ = time.perf_counter() - t
            res["http_grants_per_s"] = round(args.grants / dt_, 1)
            res["http_urls_per_s"] = round(urls / dt_, 1)
            grant = c.post("/api/v1/features/boutons/signed-urls", json={"expires_in_s": 3600}).json()
        lines += ["## Signed-URL issue rate (target >= 2,000 URLs/s)", "",
                  f"- HMAC-SHA256 signing alone: **{res['hmac_urls_per_s']:,} URLs/s**",
                  f"- `FeatureRegistry.signed_urls` (catalog read + audit event per grant, {delta_files} file(s) per "
                  f"grant): {res['python_grants_per_s']} grants/s = {res['python_urls_per_s']} URLs/s",
                  f"- `POST /api/v1/features/{{name}}/signed-urls` on a server process: {res['http_grants_per_s']} "
                  f"grants/s = {res['http_urls_per_s']} URLs/s", ""]

        # 3. scan throughput: same engine, same query, local file vs signed URL
        url = grant["urls"][0]
        local = str(pq_path)
        q = ("select count(*), sum(size_nm3), sum(distance_to_soma_nm), sum(root_id), sum(bouton_id), "
             "count(distinct cell_type) from read_parquet($1)")
        con = duckdb_ext.init(duckdb.connect())
        con.execute("SET enable_http_metadata_cache = false")
        try:  # DuckDB >= 1.3 caches remote file blocks; measure the transfer every time
            con.execute("SET enable_external_file_cache = false")
        except duckdb.Error:
            pass
        a = con.execute(q, [local]).fetchall()
        b = con.execute(q, [url]).fetchall()
        assert _same(a[0], b[0]), (a, b)

        def pl_query(src):
            return pl.scan_parquet(src).select(pl.len(), pl.col("size_nm3").sum(), pl.col("distance_to_soma_nm").sum(),
                                               pl.col("root_id").sum(), pl.col("bouton_id").sum(),
                                               pl.col("cell_type").n_unique()).collect()

        assert _same(pl_query(local).row(0), pl_query(url).row(0))
        size = res["parquet_bytes"]
        con8 = duckdb_ext.init(duckdb.connect())
        con8.execute("SET enable_http_metadata_cache = false")
        con8.execute("SET enable_external_file_cache = false")
        con8.execute("SET threads = 8")  # DuckDB's advice for remote files; same setting for the local read
        engines = (("duckdb", lambda s: con.execute(q, [s]).fetchall()), ("polars", pl_query),
                   ("duckdb_threads8", lambda s: con8.execute(q, [s]).fetchall()))
        for engine, fn in engines:
            fn(local), fn(url)  # warm both (page cache, connections)
            tl, tu = [], []
            for _ in range(args.repeat):  # interleaved, so that load changes hit both sides alike
                tl.append(_t(fn, local))
                tu.append(_t(fn, url))
            tl, tu = median(tl), median(tu)
            res[f"{engine}_local_s"], res[f"{engine}_signed_s"] = round(tl, 3), round(tu, 3)
            res[f"{engine}_local_MBps"] = round(size / tl / 1e6, 1)
            res[f"{engine}_signed_MBps"] = round(size / tu / 1e6, 1)
            res[f"{engine}_ratio"] = round(tl / tu, 3)
        lines += ["## Parquet scan through signed URLs vs the local file (target ratio >= 0.8)", "",
                  "Full scan of all five columns (count, sums, distinct), median of "
                  f"{args.repeat}; MB/s of Parquet file bytes.", "",
                  "| engine | local s | local MB/s | signed URL s | signed URL MB/s | ratio |", "|---|---|---|---|---|---|"]
        for engine in ("duckdb", "polars", "duckdb_threads8"):
            lines.append(f"| {engine} | {res[engine + '_local_s']} | {res[engine + '_local_MBps']} | "
                         f"{res[engine + '_signed_s']} | {res[engine + '_signed_MBps']} | **{res[engine + '_ratio']}** |")
        # where the time goes: raw transfer of the same URL by the server vs by DuckDB's own HTTP client
        def curl(u):
            subprocess.run(["curl", "-s", "-o", os.devnull, u], check=True)

        def blob(u):
            con.execute("select sum(octet_length(content)) from read_blob($1)", [u]).fetchall()

        if shutil.which("curl"):
            res["curl_download_MBps"] = round(size / median([_t(curl, url) for _ in range(3)]) / 1e6, 1)
        res["duckdb_read_blob_MBps"] = round(size / median([_t(blob, url) for _ in range(3)]) / 1e6, 1)
        lines += ["", f"Transfer of the same signed URL: curl {res.get('curl_download_MBps', 'n/a')} MB/s (what the "
                  f"server sends), DuckDB `read_blob` {res['duckdb_read_blob_MBps']} MB/s (DuckDB's HTTP client). "
                  "The scan ratio is bounded by the client's HTTP read speed and by client and server sharing the "
                  "same cores."]
    finally:
        server.stop()
    # 4. cost of `--auth` (token check, role check, quota accounting) on an ordinary route
    from neurolake import open_lake
    from neurolake.access import access

    lk = open_lake(lake_path)
    acc = access(lk)
    if not any(u["name"] == "bench" for u in acc.users()):
        acc.add_user("bench")
        acc.grant("bench", "hemibrain", "viewer")
    token = acc.create_token("bench")["token"]
    lk.close()
    rates = {}
    for mode, extra, headers in (("no_auth", (), {}), ("auth", ("--auth",), {"Authorization": f"Bearer {token}"})):
        srv = Server(lake_path, *extra)
        try:
            with httpx.Client(base_url=srv.base, headers=headers) as c:
                for _ in range(20):
                    assert c.get("/api/v1/datastacks/hemibrain").status_code == 200
                n = 500
                t = time.perf_counter()
                for _ in range(n):
                    c.get("/api/v1/datastacks/hemibrain")
                rates[mode] = round(n / (time.perf_counter() - t), 1)
        finally:
            srv.stop()
    res["route_rps_no_auth"], res["route_rps_auth"] = rates["no_auth"], rates["auth"]
    lines += ["", "## Cost of `--auth` on other routes", "",
              f"`GET /api/v1/datastacks/hemibrain`, one keep-alive client: {rates['no_auth']} requests/s without "
              f"auth, {rates['auth']} requests/s with `--auth` (token, role and quota checks, usage counting)."]
    lines += ["", f"Machine: {os.cpu_count()} CPUs shared with other work; server and client on the same host."]
    write_results("registry", res, lines)


def _same(a, b) -> bool:
    """Equal rows; float (float32) sums may differ in the last digits (summation order of parallel scans)."""
    import math

    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5) if isinstance(x, float) else x == y
                                    for x, y in zip(a, b, strict=True))


def _t(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
