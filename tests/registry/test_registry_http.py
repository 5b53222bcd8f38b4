"""A real `neurolake serve --auth` process: tokens on every route, roles, quotas, signed URLs read by
DuckDB, Polars and pyarrow, expiry and tampering, audit."""

from __future__ import annotations

import datetime as dt
import time

import duckdb
import duckdb_ext
import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable


@pytest.fixture(scope="module")
def auth_env(tmp_path_factory, feature_files, serve_lake):
    from neurolake import init_lake
    from neurolake.catalog import FeatureRegistry

    path = tmp_path_factory.mktemp("authlake") / "lake"
    lake = init_lake(path)
    lake.create_datastack("hemibrain", (8, 8, 8), public=False)
    lake.create_datastack("open_ds", (8, 8, 8), public=True)
    reg = FeatureRegistry(lake)
    reg.register(name="cell_types", datastack="hemibrain", location=str(feature_files["cell_types"]),
                 tags=["cells"])
    reg.register(name="synapse_counts", datastack="hemibrain", location=str(feature_files["synapse_counts"]),
                 status="published")
    reg.register(name="roi_counts", datastack="open_ds", location=str(feature_files["roi_counts"]))
    acc = lake.access
    tokens = {}
    acc.add_user("boss", admin=True)
    acc.add_user("ed")
    acc.grant("ed", "hemibrain", "editor")
    acc.add_user("vi")
    acc.grant("vi", "hemibrain", "viewer")
    acc.add_user("out")
    acc.add_user("q", quota_requests=5, quota_period_s=3600)
    acc.grant("q", "hemibrain", "viewer")
    acc.add_user("qb", quota_bytes=100_000, quota_period_s=3600)
    acc.grant("qb", "hemibrain", "editor")
    for u in ("boss", "ed", "vi", "out", "q", "qb"):
        tokens[u] = acc.create_token(u, "test")["token"]
    tokens["expired"] = acc.create_token("ed", "short", expires_in_s=0.5)["token"]
    lake.close()
    base = serve_lake(path, "--auth")
    return {"base": base, "tokens": tokens, "path": path, "files": feature_files}


def _h(tok: str, scheme: str = "Bearer") -> dict:
    return {"Authorization": f"{scheme} {tok}"}


def test_registry_tokens_required_on_every_route(auth_env):
    base, tok = auth_env["base"], auth_env["tokens"]
    for path in ("/api/v1/features", "/api/v1/datastacks", "/api/v1/datastacks/hemibrain",
                 "/ocp/ca/hemibrain/em/npy/0/0,8/0,8/0,1/", "/precomputed/hemibrain/em/info",
                 "/zarr/hemibrain/em/zarr.json", "/api/v1/usage", "/"):
        r = httpx.get(base + path)
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["access-control-allow-origin"] == "*"
    r = httpx.get(base + "/v1/collection/")  # BossDB body for BossDB routes
    assert r.status_code == 401 and r.json()["status"] == 401 and "message" in r.json()
    assert httpx.request("OPTIONS", base + "/api/v1/features").status_code == 204  # CORS preflight
    assert httpx.get(base + "/api/v1/features", headers=_h("nl_wrong")).status_code == 401
    time.sleep(0.6)
    r = httpx.get(base + "/api/v1/features", headers=_h(tok["expired"]))
    assert r.status_code == 401 and "expired" in r.json()["message"]
    # all three ways of presenting a token
    for r in (httpx.get(base + "/api/v1/features", headers=_h(tok["ed"])),
              httpx.get(base + "/api/v1/features", headers=_h(tok["ed"], "Token")),
              httpx.get(base + "/api/v1/features", params={"token": tok["ed"]})):
        assert r.status_code == 200 and r.json()["count"] == 3
    # BossDB (intern sends `Authorization: Token`): listing collections is a read, allowed
    assert httpx.get(base + "/v1/collection/", headers=_h(tok["vi"], "Token")).status_code == 200


def test_registry_roles_and_public_datastacks(auth_env, feature_files):
    base, tok = auth_env["base"], auth_env["tokens"]
    # the outsider sees only the public datastack
    r = httpx.get(base + "/api/v1/features", headers=_h(tok["out"]))
    assert [f["name"] for f in r.json()["features"]] == ["roi_counts"]
    assert httpx.get(base + "/api/v1/datastacks/hemibrain", headers=_h(tok["out"])).status_code == 403
    assert httpx.get(base + "/api/v1/datastacks/open_ds", headers=_h(tok["out"])).status_code == 200
    assert httpx.get(base + "/api/v1/features/cell_types", headers=_h(tok["out"])).status_code == 403
    # a viewer reads but cannot register, change or grant
    assert httpx.get(base + "/api/v1/features/cell_types", headers=_h(tok["vi"])).status_code == 200
    spec = {"name": "counts_lance", "datastack": "hemibrain", "location": str(feature_files["synapse_counts_lance"])}
    r = httpx.post(base + "/api/v1/features", json=spec, headers=_h(tok["vi"]))
    assert r.status_code == 403 and r.json()["detail"]["required"] == "editor"
    r = httpx.post(base + "/api/v1/features/cell_types/signed-urls", json={}, headers=_h(tok["vi"]))
    assert r.status_code == 403
    r = httpx.patch(base + "/api/v1/features/cell_types", json={"status": "published"}, headers=_h(tok["vi"]))
    assert r.status_code == 403
    r = httpx.get(base + "/api/v1/features", params={"name": "counts_lance"}, headers=_h(tok["boss"]))
    assert r.json()["count"] == 0  # nothing registered
    # writes to a datastack route need editor (the OCP write route)
    r = httpx.post(base + "/ocp/ca/hemibrain/em/npy/0/0,8/0,8/0,1/", content=b"", headers=_h(tok["vi"]))
    assert r.status_code == 403
    # the editor registers; a validation failure is a 400 naming the field and registers nothing
    bad = {**spec, "format": "delta"}
    r = httpx.post(base + "/api/v1/features", json=bad, headers=_h(tok["ed"]))
    assert r.status_code == 400 and r.json()["detail"]["field"] == "format"
    r = httpx.post(base + "/api/v1/features", json=spec, headers=_h(tok["ed"]))
    assert r.status_code == 201 and r.json()["format"] == "lance" and r.json()["registered_by"] == "ed"
    r = httpx.post(base + "/api/v1/features", json=spec, headers=_h(tok["ed"]))
    assert r.status_code == 409
    r = httpx.get(base + "/api/v1/features", params={"tag": "cells", "column": "bodyId"}, headers=_h(tok["vi"]))
    assert [f["name"] for f in r.json()["features"]] == ["cell_types"]
    r = httpx.patch(base + "/api/v1/features/synapse_counts", json={"description": "x"}, headers=_h(tok["ed"]))
    assert r.status_code == 409  # published: immutable


def test_registry_crawl_over_http(auth_env, feature_files):
    base, tok = auth_env["base"], auth_env["tokens"]
    body = {"prefix": str(feature_files["roi_counts"].parent), "datastack": "hemibrain", "dry_run": True}
    assert httpx.post(base + "/api/v1/features/crawl", json=body, headers=_h(tok["vi"])).status_code == 403
    r = httpx.post(base + "/api/v1/features/crawl", json=body, headers=_h(tok["ed"]))
    assert r.status_code == 200 and len(r.json()["found"]) == 5
    assert {x["location"] for x in r.json()["skipped"]} >= {str(feature_files["cell_types"])}
    r = httpx.post(base + "/api/v1/features/crawl", json={"prefix": "/x"}, headers=_h(tok["ed"]))
    assert r.status_code == 400


def test_registry_request_quota_429(auth_env):
    base, tok = auth_env["base"], auth_env["tokens"]
    codes = [httpx.get(base + "/api/v1/features", headers=_h(tok["q"])).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    r = httpx.get(base + "/api/v1/usage", headers=_h(tok["q"]))
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "quota_exceeded"
    d = body["detail"]
    assert d["quota"] == "requests" and d["limit"] == 5 and d["usage"] >= 5 and d["reset"]
    assert int(r.headers["retry-after"]) >= 1
    u = httpx.get(base + "/api/v1/usage", params={"user": "q"}, headers=_h(tok["boss"])).json()
    assert u["requests"] >= 5 and u["limits"]["requests"] == 5 and u["period_s"] == 3600
    assert httpx.get(base + "/api/v1/usage", params={"user": "q"}, headers=_h(tok["vi"])).status_code == 403


def _grant(base, tok, name, **body):
    r = httpx.post(base + f"/api/v1/features/{name}/signed-urls", json=body, headers=_h(tok))
    assert r.status_code == 200, r.text
    return r.json()


def test_registry_duckdb_polars_read_signed_urls(auth_env):
    base, tok, files = auth_env["base"], auth_env["tokens"], auth_env["files"]
    con = duckdb_ext.init(duckdb.connect())
    # Parquet
    g = _grant(base, tok["ed"], "cell_types", expires_in_s=600)
    assert g["scheme"] == "neurolake-signed-url-v1" and len(g["urls"]) == 1
    local = pq.read_table(files["cell_types"])
    q = "select count(*), count(distinct type), sum(bodyId) from read_parquet($1)"
    assert con.execute(q, [g["urls"]]).fetchone() == con.execute(q, [str(files["cell_types"])]).fetchone()
    df = pl.read_parquet(g["urls"][0])
    assert df.shape == (local.num_rows, local.num_columns)
    assert pl.scan_parquet(g["urls"][0]).filter(pl.col("type") == "DA1_lPN").select(pl.len()).collect().item() == \
        local.to_pandas().query("type == 'DA1_lPN'").shape[0]
    # Delta: the registered version's Parquet files, partition column from the Hive paths
    g = _grant(base, tok["ed"], "synapse_counts")
    truth = DeltaTable(str(files["synapse_counts"])).to_pyarrow_table()
    want = {r["side"]: r["pre_sum"] for r in truth.group_by("side").aggregate([("pre", "sum")]).to_pylist()}
    got = dict(con.execute("select side, sum(pre) from read_parquet($1, hive_partitioning=true) group by 1",
                           [g["urls"]]).fetchall())
    assert got == want
    pdf = pl.scan_parquet(g["urls"], hive_partitioning=True).group_by("side").agg(pl.col("pre").sum()).collect()
    assert dict(pdf.iter_rows()) == want
    assert g["fingerprint"] == {"kind": "delta_version", "value": 0}
    # the Delta log is readable through the prefix grant too
    log = httpx.get(g["prefix_url"] + "/_delta_log/00000000000000000000.json")
    assert log.status_code == 200 and b'"add"' in log.content


def test_registry_pyarrow_reads_signed_url(auth_env):
    import fsspec

    base, tok, files = auth_env["base"], auth_env["tokens"], auth_env["files"]
    g = _grant(base, tok["ed"], "cell_types")
    with fsspec.open(g["urls"][0], "rb") as f:  # fsspec HTTP: HEAD + ranged GETs
        t = pq.read_table(f)
    assert t.equals(pq.read_table(files["cell_types"]))


def test_registry_head_range_expiry_tamper(auth_env):
    base, tok, files = auth_env["base"], auth_env["tokens"], auth_env["files"]
    g = _grant(base, tok["ed"], "cell_types", expires_in_s=600)
    url = g["urls"][0]
    size = files["cell_types"].stat().st_size
    h = httpx.head(url)
    assert h.status_code == 200 and int(h.headers["content-length"]) == size and h.content == b""
    assert h.headers["accept-ranges"] == "bytes"
    r = httpx.get(url, headers={"Range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == b"PAR1" and r.headers["content-range"] == f"bytes 0-3/{size}"
    r = httpx.get(url, headers={"Range": "bytes=-4"})
    assert r.status_code == 206 and r.content == b"PAR1"
    r = httpx.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and len(r.content) == 10
    assert httpx.get(url, headers={"Range": f"bytes={size + 5}-"}).status_code == 416
    # tampering: any part of the URL
    prefix, fname = url.rsplit("/", 1)
    parts = prefix.split("/")  # ... data v1 id expires user sig
    sig = parts[-1]
    tampered = [
        "/".join(parts[:-1] + [("0" if sig[0] != "0" else "1") + sig[1:]]) + "/" + fname,
        "/".join(parts[:-3] + [str(int(parts[-3]) + 3600)] + parts[-2:]) + "/" + fname,
        "/".join(parts[:-2] + ["boss"] + parts[-1:]) + "/" + fname,
        "/".join(parts[:-4] + [str(int(parts[-4]) + 1)] + parts[-3:]) + "/" + fname,
    ]
    for t in tampered:
        r = httpx.get(t)
        assert r.status_code == 403, t
        assert r.json()["error"] == "permission_denied"
    # only files of that table: path traversal is refused
    r = httpx.get(prefix + "/%2e%2e/%2e%2e/catalog.sqlite")
    assert r.status_code == 403
    r = httpx.get(prefix + "/other.parquet")
    assert r.status_code == 403  # single-file table: only that file
    # expiry
    g = _grant(base, tok["ed"], "cell_types", expires_in_s=2)
    short = g["urls"][0]
    assert httpx.head(short).status_code == 200  # a URL lives at least expires_in_s (its expiry is rounded up)
    time.sleep(max(0.0, dt.datetime.fromisoformat(g["expires"]).timestamp() - time.time()) + 1.1)
    r = httpx.get(short)
    assert r.status_code == 403 and "expired" in r.json()["message"]
    # bad lifetimes are refused
    r = httpx.post(base + "/api/v1/features/cell_types/signed-urls", json={"expires_in_s": 0}, headers=_h(tok["ed"]))
    assert r.status_code == 400 and r.json()["detail"]["field"] == "expires_in_s"
    r = httpx.post(base + "/api/v1/features/cell_types/signed-urls", json={"expires_in": 5}, headers=_h(tok["ed"]))
    assert r.status_code == 400


def test_registry_bytes_quota_and_audit(auth_env):
    base, tok, files = auth_env["base"], auth_env["tokens"], auth_env["files"]
    size = files["cell_types"].stat().st_size
    assert size > 100_000
    url = _grant(base, tok["qb"], "cell_types")["urls"][0]
    assert httpx.get(url).status_code == 200  # crosses the 100 kB limit while being sent
    r = httpx.get(url, headers={"Range": "bytes=0-3"})
    assert r.status_code == 429
    d = r.json()["detail"]
    assert d["quota"] == "bytes" and d["limit"] == 100_000 and d["usage"] >= size and d["reset"]
    r = httpx.get(base + "/api/v1/usage", params={"user": "qb"}, headers=_h(tok["boss"]))
    assert r.json()["bytes"] >= size
    time.sleep(1.1)
    httpx.head(_grant(base, tok["ed"], "cell_types")["urls"][0])  # triggers the served-bytes audit flush
    ev = httpx.get(base + "/api/v1/audit", headers=_h(tok["boss"])).json()["events"]
    actions = {e["action"] for e in ev}
    assert {"feature.register", "feature.url_grant", "data.bytes_served"} <= actions
    served = [e for e in ev if e["action"] == "data.bytes_served" and e["user"] == "qb"]
    assert sum(e["detail"]["bytes"] for e in served) >= size
    grants = [e for e in ev if e["action"] == "feature.url_grant" and e["user"] == "qb"]
    assert grants and grants[0]["target"] == "cell_types"
    # a non-admin only sees their own events
    mine = httpx.get(base + "/api/v1/audit", headers=_h(tok["ed"])).json()["events"]
    assert {e["user"] for e in mine} == {"ed"}


def test_registry_tokens_stored_hashed(auth_env):
    import sqlite3

    con = sqlite3.connect(auth_env["path"] / "catalog.sqlite")
    hashes = [r[0] for r in con.execute("select token_hash from access_tokens")]
    dump = "\n".join(con.iterdump())
    for secret in auth_env["tokens"].values():
        assert secret not in dump
    import hashlib

    assert hashlib.sha256(auth_env["tokens"]["ed"].encode()).hexdigest() in hashes


def test_registry_embedded_default_no_auth(serve_lake, tmp_path, feature_files):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("hemibrain", (8, 8, 8))
    lake.close()
    base = serve_lake(tmp_path / "lake")
    spec = {"name": "synapse_counts", "datastack": "hemibrain", "location": str(feature_files["synapse_counts"])}
    r = httpx.post(base + "/api/v1/features", json=spec)
    assert r.status_code == 201
    g = httpx.post(base + "/api/v1/features/synapse_counts/signed-urls", json={"expires_in_s": 60}).json()
    assert g["urls"][0].startswith(base + "/data/v1/")
    n = duckdb_ext.init(duckdb.connect()).execute("select count(*) from read_parquet($1)", [g["urls"]]).fetchone()[0]
    assert n == 25397
    assert httpx.get(base + "/api/v1/usage").json()["bytes"] > 0
    # partition values that need percent-encoding in Delta paths (space, slash, non-ASCII)
    import pyarrow as pa
    from deltalake import write_deltalake

    odd = tmp_path / "odd_delta"
    write_deltalake(str(odd), pa.table({"n": [1, 2, 3], "side": ["a b", "c/d", "é"]}), partition_by=["side"])
    r = httpx.post(base + "/api/v1/features", json={"name": "odd", "datastack": "hemibrain", "location": str(odd)})
    assert r.status_code == 201, r.text
    g = httpx.post(base + "/api/v1/features/odd/signed-urls", json={}).json()
    got = {}
    for f in g["files"]:
        resp = httpx.get(f["url"])
        assert resp.status_code == 200, f
        got[f["partition"]["side"]] = pq.read_table(pa.BufferReader(resp.content)).column("n").to_pylist()
    assert got == {"a b": [1], "c/d": [2], "é": [3]}


def test_registry_server_on_postgres(serve_lake, tmp_path, feature_files, new_pg_database):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "pglake", database_url=new_pg_database())
    lake.create_datastack("hemibrain", (8, 8, 8), public=False)
    acc = lake.access
    acc.add_user("ed", quota_requests=50)
    acc.grant("ed", "hemibrain", "editor")
    tok = acc.create_token("ed")["token"]
    lake.close()
    base = serve_lake(tmp_path / "pglake", "--auth")
    h = _h(tok)
    r = httpx.post(base + "/api/v1/features", headers=h, json={
        "name": "cell_types", "datastack": "hemibrain", "location": str(feature_files["cell_types"]),
        "tags": ["cells"]})
    assert r.status_code == 201, r.text
    assert httpx.get(base + "/api/v1/features", params={"tag": "cells"}, headers=h).json()["count"] == 1
    g = _grant(base, tok, "cell_types")
    n = duckdb_ext.init(duckdb.connect()).execute("select count(*) from read_parquet($1)", [g["urls"]]).fetchone()[0]
    assert n == 25397
    assert httpx.get(base + "/api/v1/features", headers=_h("nl_bad")).status_code == 401
    time.sleep(0.6)
    u = httpx.get(base + "/api/v1/usage", headers=h).json()
    assert u["requests"] >= 3 and u["bytes"] > 0 and u["limits"]["requests"] == 50
