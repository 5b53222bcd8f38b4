"""`neurolake serve --workers 4 --auth` on a PostgreSQL catalog: state shared across server processes.

A real multi-process server (uvicorn workers spawned by ``python -m neurolake.cli serve``) on a lake whose
catalog is a throw-away PostgreSQL database, holding the real gala FIB-SEM image and ground-truth
segmentation (Nunez-Iglesias et al. 2014). Which process answered a request is read from the operating
system (the pid owning the server side of the TCP connection), so each test shows that several processes
took part: quotas are exact across them, a role revoked elsewhere is refused by every one at its next
request, concurrent edits of the same roots give one 200 and one 409, and a write through one process is
served (new bytes, new ETag) by the others.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import DATA, free_port, wait_http

WORKERS = 4
GALA_IMAGE = f"{DATA / 'gala_fibsem' / 'train-image.h5'}:/stack"
GALA_GT = f"{DATA / 'gala_fibsem' / 'train-gt.lzf.h5'}:/stack"


@pytest.fixture(scope="module")
def pg_lake(tmp_path_factory, postgres_url):
    """A lake on a new PostgreSQL database with gala image + segmentation, a proofreadable graph, users."""
    import psycopg

    from neurolake import init_lake
    from neurolake.proofreading import create_segmentation

    name = f"nl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    path = tmp_path_factory.mktemp("workers") / "lake"
    lake = init_lake(path, database_url=url)
    lake.create_datastack("gala", (8, 8, 8), public=False)  # readable by role only
    lake.ingest(GALA_IMAGE, "gala", "image", voxel_size=(8, 8, 8), scheduler="threads")
    lake.ingest(GALA_GT, "gala", "segmentation", voxel_size=(8, 8, 8), layer_type="segmentation",
                scheduler="threads")
    create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    acc = lake.access
    tokens = {}
    for user, role, quota in [("boss", None, None), ("ed1", "editor", None), ("ed2", "editor", None),
                              ("vq", "viewer", 7), ("vc", "viewer", 9), ("gone", "viewer", None)]:
        acc.add_user(user, admin=role is None, quota_requests=quota, quota_period_s=3600 if quota else None)
        if role:
            acc.grant(user, "gala", role)
        tokens[user] = acc.create_token(user)["token"]
    lake.close()
    return path, url, tokens


@pytest.fixture(scope="module")
def server(pg_lake, tmp_path_factory):
    """``python -m neurolake.cli serve --workers 4 --auth`` (as ``serve_lake`` starts servers, with more time
    to start: each worker imports and warms up on its own, on 2 cores shared with other work)."""
    path, _, tokens = pg_lake
    port = free_port()
    log_path = tmp_path_factory.mktemp("workers-log") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "neurolake.cli", "serve", "--lake", str(path), "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(WORKERS), "--auth"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(base + "/", proc, timeout=300)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}: {log_path.read_text(errors='replace')[-3000:]}") from None
        # every worker up: WORKERS distinct pids answer
        deadline, seen = time.time() + 300, set()
        while len(seen) < WORKERS and time.time() < deadline:
            pins = pin(base, tokens["boss"], "/api/v1/datastacks", tries=8)
            seen |= set(pins)
            for c in pins.values():
                c.close()
        assert len(seen) == WORKERS, f"only {len(seen)} worker processes answered: {log_path.read_text()[-3000:]}"
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def pid_of(r: httpx.Response) -> int:
    """The pid of the server process that owns the server side of ``r``'s (still open) connection."""
    cport = r.extensions["network_stream"].get_extra_info("client_addr")[1]
    pid = _server_pids(urlsplit(str(r.url)).port).get(cport)
    assert pid is not None, f"no server process holds the connection from port {cport}"
    return pid


def _server_pids(sport: int) -> dict[int, int]:
    """``{client port: server pid}`` of the open connections to the server on ``sport``."""
    for _attempt in range(3):  # other processes come and go during the scan of /proc
        try:
            return {c.raddr.port: c.pid for c in psutil.net_connections("tcp")
                    if c.laddr and c.raddr and c.laddr.port == sport and c.pid}
        except psutil.Error:
            time.sleep(0.05)
    return {}


def pin(base: str, token: str, path: str, tries: int = 16) -> dict[int, httpx.Client]:
    """Up to ``tries`` new keep-alive connections, opened together; one per distinct server process (a
    connection the server closed meanwhile, e.g. its keep-alive timed out, is left out)."""
    clients = [httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
               for _ in range(tries)]
    out: dict[int, httpx.Client] = {}
    cports: list[int | None] = [None] * tries

    def go(i):
        r = clients[i].get(path)
        if r.status_code == 200:
            cports[i] = r.extensions["network_stream"].get_extra_info("client_addr")[1]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(tries)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    owners = _server_pids(urlsplit(base).port)
    for c, cport in zip(clients, cports, strict=True):
        pid = owners.get(cport)
        if pid is not None and pid not in out:
            out[pid] = c
        else:
            c.close()
    return out


def fresh_get(base: str, token: str, path: str) -> tuple[int, int]:
    """(status, server pid) of one GET on a new connection."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        r = c.get(path)
        return r.status_code, pid_of(r)


def test_sqlite_catalog_refuses_several_workers(fresh_lake):
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "serve", "--lake", str(fresh_lake.root),
                        "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "--workers > 1 needs the catalog on PostgreSQL" in p.stderr


def test_quota_is_exact_across_processes_one_request_at_a_time(server, pg_lake):
    _, _, tokens = pg_lake
    got = [fresh_get(server, tokens["vq"], "/precomputed/gala/image/info") for _ in range(12)]
    statuses = [s for s, _ in got]
    assert statuses == [200] * 7 + [429] * 5, got
    assert len({pid for _, pid in got}) >= 2, got  # several processes counted into one quota
    r = httpx.get(f"{server}/precomputed/gala/image/info", headers={"Authorization": f"Bearer {tokens['vq']}"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["detail"]["limit"] == 7 and r.json()["detail"]["quota"] == "requests"


def test_quota_is_exact_across_processes_under_concurrent_requests(server, pg_lake):
    _, _, tokens = pg_lake
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def client():
        barrier.wait()
        for _ in range(5):
            got = fresh_get(server, tokens["vc"], "/precomputed/gala/segmentation/info")
            with lock:
                results.append(got)

    threads = [threading.Thread(target=client) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 9 + [429] * 21, results  # quota_requests=9 of 30 concurrent requests
    assert len({pid for s, pid in results if s == 200}) >= 2, results


def test_revoked_role_is_refused_by_every_process_at_its_next_request(server, pg_lake):
    from neurolake import open_lake

    path, _, tokens = pg_lake
    lake = open_lake(path)  # another process than the servers (as `neurolake users revoke` would be)
    pins = pin(server, tokens["gone"], "/precomputed/gala/image/info", tries=32)
    assert len(pins) >= 2, pins
    for c in pins.values():  # each process has the principal cached now
        assert c.get("/precomputed/gala/image/info").status_code == 200
    lake.access.revoke("gone", "gala")
    answered = set()
    for pid, c in pins.items():  # the same connections: the same processes, well within their cache time
        r = c.get("/precomputed/gala/image/info")
        assert r.status_code == 403, (pid, r.text)
        answered.add(pid_of(r))  # the pinned process, unless its keep-alive timed out meanwhile
        c.close()
    assert len(answered & set(pins)) >= 2, (answered, list(pins))  # processes that had the grant cached
    # and on new connections, whichever process answers
    got = [fresh_get(server, tokens["gone"], "/precomputed/gala/image/info") for _ in range(8)]
    assert {s for s, _ in got} == {403}, got
    lake.close()


def _adjacent_pairs(path, n):
    """``n`` disjoint pairs of touching gala neurons (largest contacts first), from the RAG."""
    from neurolake import open_lake
    from neurolake.proofreading.rag import region_adjacency

    lake = open_lake(path)
    rag = region_adjacency(lake.layer("gala", "segmentation"))
    lake.close()
    used: set[int] = set()
    out = []
    for i in np.argsort(-rag.area):
        a, b = int(rag.sv_a[i]), int(rag.sv_b[i])
        if a and b and not ({a, b} & used):
            out.append((a, b))
            used |= {a, b}
        if len(out) == n:
            break
    return out


def test_concurrent_edits_of_the_same_roots_in_two_processes_one_wins_one_gets_409(server, pg_lake):
    path, _, tokens = pg_lake
    api = "/api/v1/datastacks/gala/segmentation"
    pairs: list[set[int]] = []  # the processes that answered the two edits of each round
    for a, b in _adjacent_pairs(path, 4):
        p1 = pin(server, tokens["ed1"], f"{api}/roots?supervoxels={a},{b}")
        p2 = pin(server, tokens["ed2"], f"{api}/roots?supervoxels={a},{b}")
        # two editors whose connections end in two different processes
        pid1 = next(iter(p1))
        pid2 = next((p for p in p2 if p != pid1), None)
        assert pid2 is not None, (p1, p2)
        c1, c2 = p1[pid1], p2[pid2]
        roots = c1.get(f"{api}/roots", params={"supervoxels": f"{a},{b}"}).json()
        roots = roots.get("root_ids", roots) if isinstance(roots, dict) else roots
        body = {"supervoxels": [a, b], "roots": [int(r) for r in roots]}
        assert len(set(body["roots"])) == 2, body
        barrier = threading.Barrier(2)
        out: dict[str, httpx.Response] = {}

        def edit(name, c, barrier=barrier, out=out, body=body):
            barrier.wait()
            out[name] = c.post(f"{api}/merge", json=body)

        ts = [threading.Thread(target=edit, args=(n, c)) for n, c in (("ed1", c1), ("ed2", c2))]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert sorted(r.status_code for r in out.values()) == [200, 409], {k: (v.status_code, v.text)
                                                                          for k, v in out.items()}
        pairs.append({pid_of(r) for r in out.values()})
        lost = next(r for r in out.values() if r.status_code == 409)
        assert lost.json()["error"] == "conflict" and sorted(lost.json()["detail"]["stale_roots"])
        won = next(r for r in out.values() if r.status_code == 200).json()
        assert sorted(won["old_roots"]) == sorted(body["roots"])
        for c in [*p1.values(), *p2.values()]:
            c.close()
    assert any(len(p) == 2 for p in pairs), pairs  # the two edits were answered by two processes
    # nothing lost, nothing doubled: one operation per pair in the shared edit log
    ops = httpx.get(f"{server}{api}/operations", headers={"Authorization": f"Bearer {tokens['boss']}"}).json()
    ops = ops.get("operations", ops) if isinstance(ops, dict) else ops
    assert [o["kind"] for o in ops].count("merge") == 4


def test_write_through_one_process_is_served_by_the_others_with_a_new_etag(server, pg_lake):
    _, _, tokens = pg_lake
    info = httpx.get(f"{server}/precomputed/gala/image/info", headers={"Authorization": f"Bearer {tokens['boss']}"})
    scale = info.json()["scales"][0]
    cx, cy, cz = scale["chunk_sizes"][0]
    chunk = f"/precomputed/gala/image/{scale['key']}/0-{cx}_0-{cy}_0-{cz}"
    tile = "/catmaid/gala/image/xy/3/0_0_0.png"
    pins = pin(server, tokens["boss"], chunk, tries=32)
    assert len(pins) >= 3, pins
    before = {pid: (c.get(chunk), c.get(tile)) for pid, c in pins.items()}  # cached in every process
    etags = {r.headers["etag"] for r, _ in before.values()}
    assert len(etags) == 1  # the same ETag from every process
    old = np.frombuffer(next(iter(before.values()))[0].content, np.uint8).reshape(cz, cy, cx)
    value = int((int(old[3, 20, 10]) + 101) % 256)
    writer, *readers = list(pins)
    buf = io.BytesIO()
    np.savez_compressed(buf, np.full((2, 40, 50), value, np.uint8))
    r = pins[writer].post("/ocp/ca/gala/image/npz/0/10,60/20,60/3,5/", content=buf.getvalue())
    assert r.status_code == 201, r.text
    answered = set()
    for pid in readers:
        c = pins[pid]
        r = c.get(chunk)
        assert r.status_code == 200
        answered.add(pid_of(r))
        assert r.headers["etag"] not in etags
        arr = np.frombuffer(r.content, np.uint8).reshape(cz, cy, cx)  # raw encoding, (z, y, x)
        assert (arr[3:5, 20:60, 10:60] == value).all() and (arr[:3] == old[:3]).all()
        # a conditional request with the old ETag gets the new bytes, not a 304
        r304 = c.get(chunk, headers={"If-None-Match": before[pid][0].headers["etag"]})
        assert r304.status_code == 200 and r304.content == r.content
        t = c.get(tile)
        assert t.status_code == 200 and t.content != before[pid][1].content
        assert t.headers["etag"] != before[pid][1].headers["etag"]
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(t.content)))
        assert (img[20:60, 10:60] == value).all()
    assert answered - {writer}, (answered, writer)  # read back through processes other than the writer
    for c in pins.values():
        c.close()


def test_quota_check_counts_atomically_and_release_gives_a_request_back(pg_lake):
    from neurolake import open_lake
    from neurolake.access import Quotas
    from neurolake.errors import QuotaExceeded

    path, _, _ = pg_lake
    lake = open_lake(path)
    lake.access.add_user("vr", quota_requests=2, quota_period_s=3600)
    p = lake.access.principal("vr")
    q, other = Quotas(lake), Quotas(lake)  # two processes' counters on one catalog
    assert q.exact() and q.needs_io(p)
    q.check(p)
    other.check(p)  # the second request of the window, counted by "another process"
    with pytest.raises(QuotaExceeded) as exc:
        q.check(p)
    assert exc.value.detail["usage"] == 2 and exc.value.detail["limit"] == 2
    q.add(p, 1, 1000, flush=False)  # the response of the first request: its bytes, not a second count
    q.flush()
    assert other.usage(p)["requests"] == 2 and other.usage(p)["bytes"] == 1000
    other.release(p)  # its request was not metered after all (a public route): given back
    other.flush()
    assert q.usage(p)["requests"] == 1
    q.check(p)  # one request free again
    with pytest.raises(QuotaExceeded):
        other.check(p)
    lake.close()
