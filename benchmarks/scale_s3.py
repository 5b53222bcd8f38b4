"""A lake on S3-compatible object storage (issue 14): cutout throughput, ingest requests, serving over HTTP.

Set-up (all on loopback, started and stopped here): a moto S3 server process behind a WSGI wrapper that counts
the requests it serves by kind (``_common.CountingS3``: the counts are the server's, whatever the client), a
throw-away PostgreSQL cluster for the lake's catalog (``_common.Postgres``), and a uint8 image volume of
``--z`` × ``--xy`` × ``--xy`` voxels (default 64 × 2048 × 2048 = 268 MB) tiled from the real Gerhard et al. 2013
ssTEM sections (each tile flipped per position: content and compressibility of real EM), ingested from a
``.npy`` file into ``s3://<bucket>/lake`` and into a local lake folder (the same code, ``scheduler="threads"``).

Figures (``measure() -> dict``; ``__main__`` writes ``benchmarks/results/scale_s3.{json,md}``):

a. ``Layer.cutout`` MB/s (uncompressed voxels) from the S3 lake vs tensorstore reading the same S3 arrays
   directly with the same spec and context (``array_spec``, ``make_context(cache, storage)``), for several box
   sizes, cold (a new lake / context per round and boxes not read before) and warm (the same boxes again); target
   ratio >= 0.9. Also the S3 requests one cold cutout makes for each reader, and the per-read fixed costs of the
   Layer (its generation check and after-read check, catalog queries on object storage).
b. Ingest: S3 requests per GB of voxels by kind (PUT / GET / LIST / HEAD / DELETE / POST) vs the minimum: one PUT
   per shard object written (every mip) plus one per ``zarr.json``.
c. Through the server (``neurolake serve`` processes of the S3 lake and of the local lake): BossDB/OCP blosc
   cutout MB/s over HTTP, cold (first read of a box) and warm.

Usage: ``python benchmarks/scale_s3.py [--z 64] [--xy 2048] [--repeat 8]`` (cold rounds per box size; HTTP uses
half as many boxes). Takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CountingS3,
    Postgres,
    Server,
    boxes_for,
    em_volume_slab,
    gerhard_stack,
    median,
    write_results,
)

BOXES = ((512, 512, 16), (256, 256, 64), (1024, 1024, 32))  # x, y, z
HTTP_BOXES = ((512, 512, 16), (256, 256, 64))
VOXEL = (4.0, 4.0, 40.0)


def make_npy(path: Path, shape_zyx: tuple[int, int, int]) -> None:
    src = gerhard_stack()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape_zyx)
    for z0 in range(0, shape_zyx[0], 16):
        z1 = min(shape_zyx[0], z0 + 16)
        arr[z0:z1] = em_volume_slab(src, z0, z1, shape_zyx[1], shape_zyx[2])
    arr.flush()
    del arr



def catalog_statements(lake, fn, n: int) -> float:
    """SQL statements sent to ``lake``'s catalog per call of ``fn`` (``n`` calls; SQLAlchemy's
    ``before_cursor_execute`` event: the pool's pre-ping and reset round trips come on top)."""
    from sqlalchemy import event

    seen = [0]

    def count(*_a) -> None:
        seen[0] += 1

    event.listen(lake.catalog.engine, "before_cursor_execute", count)
    try:
        for _ in range(n):
            fn()
    finally:
        event.remove(lake.catalog.engine, "before_cursor_execute", count)
    return seen[0] / n


def _requests(c: dict) -> dict:
    return {k: v for k, v in sorted(c.items()) if k != "bytes in"}


def bench_ingest(s3: CountingS3, lake, npy: Path, nbytes: int) -> dict:
    s3.reset()
    t = time.perf_counter()
    la = lake.ingest(str(npy), "big", "image", voxel_size=VOXEL, scheduler="threads")
    wall = time.perf_counter() - t
    counts = s3.counts()
    # what was stored: every object under the layer (one LIST, not counted above)
    fs, root = la.root.fs, la.root.path
    objects = fs.find(root)
    shards = [o for o in objects if "/c/" in o]
    metadata = [o for o in objects if o.endswith("zarr.json")]
    minimum = len(shards) + len(metadata)
    gb = nbytes / 1e9
    total = sum(v for k, v in counts.items() if k != "bytes in")
    return {"seconds": wall, "mb_per_s": nbytes / wall / 1e6, "voxel_bytes": nbytes,
            "objects": len(objects), "shard_objects": len(shards), "metadata_objects": len(metadata),
            "stored_bytes": sum(fs.size(o) for o in shards),
            "requests": _requests(counts), "requests_total": total, "requests_per_gb": total / gb,
            "puts_per_gb": (counts.get("PUT", 0) + counts.get("PUT (part)", 0)) / gb,
            "minimum_requests": minimum, "minimum_per_gb": minimum / gb, "ratio_to_minimum": total / minimum,
            "bytes_uploaded": counts.get("bytes in", 0)}


def bench_cutouts(s3: CountingS3, url: str, repeat: int) -> dict:
    import tensorstore as ts

    from neurolake import open_lake
    from neurolake.volumes.store import array_spec, make_context

    res = {}
    rng = np.random.default_rng(0)
    for box in BOXES:
        mb = float(np.prod(box)) / 1e6
        t_nl, t_ts = [], []
        for i in range(repeat):  # cold: a new lake and a new tensorstore context per round, boxes never read
            lake = open_lake(url)
            la = lake.layer("big", "image")
            la.array(0)  # both readers open their array before the clock starts
            ctx = make_context(lake.settings.cache_bytes, lake.storage)
            arr = ts.open(array_spec(la.root, 0, lake.storage), context=ctx, open=True).result()
            (x0, x1), (y0, y1), (z0, z1) = b = boxes_for(la.shape(0), box, 1, rng)[0]

            def one_nl(la=la, b=b, t_nl=t_nl):
                t = time.perf_counter()
                out = la.cutout(x=b[0], y=b[1], z=b[2])
                t_nl.append(time.perf_counter() - t)
                return out

            def one_ts(arr=arr, z0=z0, z1=z1, y0=y0, y1=y1, x0=x0, x1=x1, t_ts=t_ts):
                t = time.perf_counter()
                out = arr[z0:z1, y0:y1, x0:x1].read().result()
                t_ts.append(time.perf_counter() - t)
                return out

            first, second = (one_nl, one_ts) if i % 2 == 0 else (one_ts, one_nl)
            a, c = first(), second()
            assert np.array_equal(a, c), "the two readers disagree"
            lake.close()
        # requests of one cold cutout of the same new box, each reader with its own empty cache
        lake = open_lake(url)
        la = lake.layer("big", "image")
        la.array(0)
        ctx = make_context(lake.settings.cache_bytes, lake.storage)
        arr = ts.open(array_spec(la.root, 0, lake.storage), context=ctx, open=True).result()
        b = boxes_for(la.shape(0), box, 1, rng)[0]
        s3.reset()
        la.cutout(x=b[0], y=b[1], z=b[2])
        req_nl = _requests(s3.counts())
        s3.reset()
        arr[b[2][0]:b[2][1], b[1][0]:b[1][1], b[0][0]:b[0][1]].read().result()
        req_ts = _requests(s3.counts())
        # warm: the same boxes again (chunk caches filled)
        warm = boxes_for(la.shape(0), box, 2, rng)
        for (x0, x1), (y0, y1), (z0, z1) in warm:
            la.cutout(x=(x0, x1), y=(y0, y1), z=(z0, z1))
            arr[z0:z1, y0:y1, x0:x1].read().result()
        w_nl, w_ts, w_own = [], [], []  # own: the Layer's own tensorstore array, read without the Layer's checks
        own_arr = la.array(0)
        for i in range(40):  # alternating which reader goes first (the second reuses the first's freed buffer)
            for (x0, x1), (y0, y1), (z0, z1) in warm:
                reads = [(w_nl, lambda b=((x0, x1), (y0, y1), (z0, z1)), la=la: la.cutout(x=b[0], y=b[1], z=b[2])),
                         (w_ts, lambda s=np.s_[z0:z1, y0:y1, x0:x1], a=arr: a[s].read().result()),
                         (w_own, lambda s=np.s_[z0:z1, y0:y1, x0:x1], a=own_arr: a[s].read().result())]
                for times, read in (reads if i % 2 == 0 else reads[::-1]):
                    t = time.perf_counter()
                    read()
                    times.append(time.perf_counter() - t)
        s3.reset()
        la.cutout(x=warm[0][0], y=warm[0][1], z=warm[0][2])
        req_warm = _requests(s3.counts())
        lake.close()
        res["x".join(map(str, box))] = {
            "box_xyz": list(box), "mb_per_box": mb,
            "cold": {"neurolake_mb_s": mb / median(t_nl), "tensorstore_mb_s": mb / median(t_ts),
                     "ratio": median(t_ts) / median(t_nl)},
            "warm": {"neurolake_mb_s": mb / median(w_nl), "tensorstore_mb_s": mb / median(w_ts),
                     "ratio": median(w_ts) / median(w_nl), "layer_array_mb_s": mb / median(w_own),
                     "layer_checks_ms": (median(w_nl) - median(w_own)) * 1e3},
            "s3_requests_one_cold_cutout": {"neurolake": req_nl, "tensorstore": req_ts},
            "s3_requests_one_warm_cutout_neurolake": req_warm,
        }
    # fixed costs per Layer read on object storage (catalog queries, no S3 request)
    lake = open_lake(url)
    la = lake.layer("big", "image")
    la.cutout(x=(0, 8), y=(0, 8), z=(0, 1))
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        la.generation()
    gen_ms = (time.perf_counter() - t) / n * 1e3
    t = time.perf_counter()
    for _ in range(n):
        la.cutout(x=(0, 8), y=(0, 8), z=(0, 1))
    tiny_ms = (time.perf_counter() - t) / n * 1e3
    s3.reset()
    la.cutout(x=(0, 8), y=(0, 8), z=(0, 1))
    tiny_req = _requests(s3.counts())
    tx = catalog_statements(lake, lambda: la.cutout(x=(0, 8), y=(0, 8), z=(0, 1)), 20)
    lake.close()
    res["fixed_costs"] = {"generation_ms": gen_ms, "tiny_cached_cutout_ms": tiny_ms,
                          "s3_requests_tiny_cached_cutout": tiny_req, "catalog_statements_per_cutout": tx}
    return res


def bench_http(s3_url: str, local: Path, shape: tuple[int, int, int], repeat: int, log_dir: Path) -> dict:
    import blosc
    import httpx

    servers = {"s3": Server(s3_url, log=log_dir / "server-s3.log"), "local": Server(local, log=log_dir / "server-local.log")}
    out = {}
    try:
        with httpx.Client(timeout=300) as client:
            rng = np.random.default_rng(3)
            for box in HTTP_BOXES:
                mb = float(np.prod(box)) / 1e6
                boxes = boxes_for(shape, box, repeat, rng)
                entry = {"box_xyz": list(box)}
                bodies = {}
                for name, srv in servers.items():
                    def get(b, base=srv.base):
                        (x0, x1), (y0, y1), (z0, z1) = b
                        r = client.get(f"{base}/ocp/ca/big/image/blosc/0/{x0},{x1}/{y0},{y1}/{z0},{z1}/")
                        r.raise_for_status()
                        return blosc.decompress(r.content)
                    cold = []
                    for b in boxes:
                        t = time.perf_counter()
                        bodies.setdefault(b, []).append(get(b))
                        cold.append(time.perf_counter() - t)
                    warm = []
                    for _ in range(3):
                        for b in boxes:
                            t = time.perf_counter()
                            get(b)
                            warm.append(time.perf_counter() - t)
                    entry[name] = {"cold_mb_s": mb / median(cold), "warm_mb_s": mb / median(warm)}
                assert all(v[0] == v[1] for v in bodies.values()), "the two servers disagree"
                entry["ratio_cold"] = entry["s3"]["cold_mb_s"] / entry["local"]["cold_mb_s"]
                entry["ratio_warm"] = entry["s3"]["warm_mb_s"] / entry["local"]["warm_mb_s"]
                out["x".join(map(str, box))] = entry
    finally:
        for srv in servers.values():
            srv.stop()
    return out


def measure(z: int = 64, xy: int = 2048, repeat: int = 8) -> dict:
    """Run the benchmark (see the module doc); returns the figures."""
    import os

    tmp = Path(tempfile.mkdtemp(prefix="nl-scale-s3-"))
    old_env = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                               "AWS_EC2_METADATA_DISABLED", "AWS_ENDPOINT_URL")}
    t_all = time.perf_counter()
    s3 = CountingS3(log=tmp / "moto.log")
    pg = Postgres()
    try:
        s3.activate()
        from neurolake import init_lake
        from neurolake.storage.config import storage_config

        phases = {}
        t = time.perf_counter()
        shape = (z, xy, xy)
        npy = tmp / "em.npy"
        make_npy(npy, shape)
        phases["make volume"] = time.perf_counter() - t
        nbytes = int(np.prod(shape))
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        storage_config().boto3_client().create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/lake"
        lake = init_lake(url, database_url=pg.new_database())
        lake.create_datastack("big", VOXEL)
        ingest = bench_ingest(s3, lake, npy, nbytes)
        lake.close()
        local = tmp / "local-lake"
        llake = init_lake(local)
        llake.create_datastack("big", VOXEL)
        t = time.perf_counter()
        llake.ingest(str(npy), "big", "image", voxel_size=VOXEL, scheduler="threads")
        ingest["local_seconds"] = time.perf_counter() - t
        llake.close()
        npy.unlink()
        phases["ingest S3 + local"] = ingest["seconds"] + ingest["local_seconds"]
        t = time.perf_counter()
        cutouts = bench_cutouts(s3, url, repeat)
        phases["cutouts"] = time.perf_counter() - t
        t = time.perf_counter()
        http = bench_http(url, local, shape, max(3, repeat // 2), tmp)
        phases["http (2 servers)"] = time.perf_counter() - t
        return {"shape_zyx": list(shape), "voxel_bytes": nbytes, "ingest": ingest, "cutouts": cutouts,
                "http": http, "phases_s": phases, "seconds_total": time.perf_counter() - t_all}
    finally:
        s3.stop()
        pg.stop()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def summary(r: dict) -> list[str]:
    ing, cut, http = r["ingest"], r["cutouts"], r["http"]
    z, y, x = r["shape_zyx"]
    lines = [f"Volume: [{z}, {y}, {x}] (z, y, x) uint8 = {r['voxel_bytes'] / 1e6:.0f} MB tiled from real ssTEM "
             "sections; S3 = a moto server process on loopback (requests counted server-side), catalog on "
             f"PostgreSQL; {__import__('os').cpu_count()} cores; total {r['seconds_total']:.0f} s.", "",
             "## a. Layer.cutout from the S3 lake vs tensorstore on the same S3 arrays (same spec and context)", "",
             "| box (x*y*z) | cache | neurolake MB/s | tensorstore MB/s | ratio (target >= 0.9) | the Layer's own array, "
             "unchecked, MB/s | Layer checks, ms per cutout |", "|---|---|---|---|---|---|---|"]
    for key, e in cut.items():
        if key == "fixed_costs":
            continue
        for cache in ("cold", "warm"):
            c = e[cache]
            own = (f"{c['layer_array_mb_s']:.0f} | {c['layer_checks_ms']:.2f}" if "layer_array_mb_s" in c
                   else "– | –")
            lines.append(f"| {key} | {cache} | {c['neurolake_mb_s']:.0f} | {c['tensorstore_mb_s']:.0f} | "
                         f"{c['ratio']:.2f} | {own} |")
    lines += ["", "S3 requests of one cold cutout (neurolake / tensorstore), and of a warm neurolake cutout:", ""]
    for key, e in cut.items():
        if key == "fixed_costs":
            continue
        q = e["s3_requests_one_cold_cutout"]
        lines.append(f"- {key}: neurolake {q['neurolake']}, tensorstore {q['tensorstore']}; warm neurolake "
                     f"{e['s3_requests_one_warm_cutout_neurolake'] or 'none'}")
    f = cut["fixed_costs"]
    lines += ["", f"Where the time goes: both readers make the same S3 requests (above: no metadata GET, LIST or HEAD "
              "per read); what a Layer adds on object storage is catalog reads instead of file stats — one read "
              "of the layer's change token per warm cutout (after the read: it confirms that no write started or "
              "landed since the caches were validated, and that the layer was not replaced; a moved token drops "
              "the arrays and reads again), two for the first read of an array (before and after), "
              "through one prepared autocommit connection per process "
              f"({f['catalog_statements_per_cutout']:.0f} statements through the SQLAlchemy pool): "
              f"`generation()` {f['generation_ms']:.2f} ms; a cached 8x8x1 cutout takes "
              f"{f['tiny_cached_cutout_ms']:.2f} ms with S3 requests {f['s3_requests_tiny_cached_cutout'] or 'none'}. "
              "Warm reads take about 1 ms, so that fixed cost and the noise of a shared 2-core machine (the column of "
              "the Layer's own array read without the checks: it is the same tensorstore array) decide the warm "
              "ratio; cold reads are bound by the S3 server.", "",
              "## b. Ingest into the S3 lake: requests per GB of voxels", "",
              f"{ing['voxel_bytes'] / 1e6:.0f} MB in {ing['seconds']:.1f} s = {ing['mb_per_s']:.0f} MB/s incl. all "
              f"mips (local lake, same code: {ing['local_seconds']:.1f} s); {ing['shard_objects']} shard objects "
              f"+ {ing['metadata_objects']} zarr.json ({ing['stored_bytes'] / 1e6:.0f} MB stored); "
              f"uploaded {ing['bytes_uploaded'] / 1e6:.0f} MB.", "",
              "| request | count | per GB |", "|---|---|---|"]
    gb = ing["voxel_bytes"] / 1e9
    for k, v in ing["requests"].items():
        lines.append(f"| {k} | {v} | {v / gb:.0f} |")
    lines += [f"| **total** | {ing['requests_total']} | {ing['requests_per_gb']:.0f} |",
              f"| minimum (1 PUT per shard object + zarr.json) | {ing['minimum_requests']} | "
              f"{ing['minimum_per_gb']:.0f} |", "",
              f"Ratio to the minimum: {ing['ratio_to_minimum']:.2f}.", "",
              "## c. Through the server: OCP blosc cutouts over HTTP, S3 lake vs local lake", "",
              "| box (x*y*z) | S3 cold MB/s | local cold MB/s | ratio | S3 warm MB/s | local warm MB/s | ratio |",
              "|---|---|---|---|---|---|---|"]
    for key, e in http.items():
        lines.append(f"| {key} | {e['s3']['cold_mb_s']:.0f} | {e['local']['cold_mb_s']:.0f} | {e['ratio_cold']:.2f} | "
                     f"{e['s3']['warm_mb_s']:.0f} | {e['local']['warm_mb_s']:.0f} | {e['ratio_warm']:.2f} |")
    lines += ["", "An OCP request served from the S3 lake makes 2 catalog queries when warm (the lake's change token to "
              "reuse the layer from memory, then the layer's after the read) where the local lake stats two small files. Cold S3 "
              "reads are bound by the S3 server (moto: a Python process on the same 2 shared cores)."]
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--z", type=int, default=64)
    ap.add_argument("--xy", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=8)
    a = ap.parse_args()
    res = measure(a.z, a.xy, a.repeat)
    write_results("scale_s3", res, summary(res))
