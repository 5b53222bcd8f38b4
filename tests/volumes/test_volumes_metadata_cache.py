"""Hot paths without catalog round trips, and their invalidation (issue 19).

``Lake.layer`` / ``Lake.datastack_info`` answer from memory while the lake's catalog generation
(``catalog.generation``, replaced by every change of a datastack or layer row through any Lake) is unchanged,
so a chunk, tile or cutout request does no SQL. These tests check that a layer changed, deleted or
overwritten by another Lake or another process is seen at once by the next call and by a serving process,
that a revoked role takes effect on a ``--auth`` server, and that opening a lake skips Alembic when the
catalog is already at the heads of the migration scripts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import event

from tests.conftest import DATA


def _real_block(z: int = 16, y: int = 96, x: int = 128) -> np.ndarray:
    """A small block of the real Gerhard et al. 2013 ssTEM sections (z, y, x) uint8."""
    import tifffile

    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))[:z]
    return np.stack([tifffile.imread(f)[:y, :x] for f in files])


@pytest.fixture
def small_lake(tmp_path):
    from neurolake import init_lake

    path = tmp_path / "lake"
    lake = init_lake(path)
    np.save(tmp_path / "em.npy", _real_block())
    lake.ingest(str(tmp_path / "em.npy"), "ds", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image",
                scheduler="threads")
    lake.close()
    return path


class _SQLCounter:
    def __init__(self, lake) -> None:
        self.n = 0
        self.engine = lake.catalog.engine
        event.listen(self.engine, "before_cursor_execute", self._count)

    def _count(self, *args, **kwargs) -> None:
        self.n += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def test_layer_and_datastack_lookups_do_no_sql_while_unchanged(small_lake):
    from neurolake import open_lake

    lake = open_lake(small_lake)
    first = lake.layer("ds", "em")
    lake.datastack_info("ds")
    sql = _SQLCounter(lake)
    try:
        for _ in range(20):
            assert lake.layer("ds", "em") is first
            assert lake.cached_layer("ds", "em") is first
            assert lake.datastack_info("ds")["layers"][0]["name"] == "em"
            assert "ds" in lake
            lake["ds"].layer("em").cutout(x=(0, 64), y=(0, 64), z=(0, 4))
        assert sql.n == 0
        lake.update_layer("ds", "em", description="changed")  # a change: the next lookup reads the catalog
        assert lake.layer("ds", "em").description == "changed"
        assert sql.n > 0
    finally:
        sql.close()
        lake.close()


def test_another_lake_sees_update_overwrite_and_delete(small_lake, tmp_path):
    from neurolake import open_lake

    reader, writer = open_lake(small_lake), open_lake(small_lake)
    try:
        la = reader.layer("ds", "em")
        assert la.status == "ready" and la.description == ""
        writer.update_layer("ds", "em", description="seen elsewhere")
        assert reader.layer("ds", "em").description == "seen elsewhere"
        # overwrite with other real content of another size: the reader gets the new layer
        np.save(tmp_path / "em2.npy", _real_block(8, 64, 64))
        writer.ingest(str(tmp_path / "em2.npy"), "ds", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image",
                      scheduler="threads", overwrite=True)
        new = reader.layer("ds", "em")
        assert new.size() == (64, 64, 8)
        assert np.array_equal(new.cutout(x=(0, 64), y=(0, 64), z=(0, 8)), _real_block(8, 64, 64))
        writer.delete_layer("ds", "em")
        from neurolake.errors import NotFound

        with pytest.raises(NotFound):
            reader.layer("ds", "em")
        assert reader.cached_layer("ds", "em") is None
        assert reader.datastack_info("ds")["layers"] == []
        writer.delete_datastack("ds")
        assert "ds" not in reader
        with pytest.raises(NotFound):
            reader.datastack("ds")
    finally:
        reader.close()
        writer.close()


CHANGER = """
import sys, numpy as np, neurolake
lake = neurolake.open_lake(sys.argv[1])
if sys.argv[2] == "describe":
    lake.update_layer("ds", "em", description="from another process")
elif sys.argv[2] == "overwrite":
    lake.ingest(sys.argv[3], "ds", "em", voxel_size=(4.6, 4.6, 50.0), layer_type="image", scheduler="threads",
                overwrite=True)
elif sys.argv[2] == "delete":
    lake.delete_layer("ds", "em")
lake.close()
"""


def _change(path, *args: str) -> None:
    p = subprocess.run([sys.executable, "-c", CHANGER, str(path), *args], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


def test_serving_process_sees_changes_made_by_another_process(small_lake, serve_lake, tmp_path):
    base = serve_lake(small_lake)
    info = httpx.get(f"{base}/precomputed/ds/em/info").json()
    assert info["scales"][0]["size"] == [128, 96, 16]
    chunk = f"{base}/precomputed/ds/em/{info['scales'][0]['key']}/0-128_0-96_0-16"
    before = httpx.get(chunk)
    assert before.status_code == 200 and before.content == _real_block().tobytes()
    assert httpx.get(chunk, headers={"If-None-Match": before.headers["etag"]}).status_code == 304
    assert httpx.get(f"{base}/zarr/ds/em/zarr.json").status_code == 200

    _change(small_lake, "describe")
    prov = httpx.get(f"{base}/precomputed/ds/em/provenance").json()
    assert prov["description"] == "from another process"

    np.save(tmp_path / "em2.npy", _real_block(8, 64, 64))
    _change(small_lake, "overwrite", str(tmp_path / "em2.npy"))
    info2 = httpx.get(f"{base}/precomputed/ds/em/info").json()
    assert info2["scales"][0]["size"] == [64, 64, 8]
    assert httpx.get(chunk).status_code == 404  # off the new grid
    new_chunk = httpx.get(f"{base}/precomputed/ds/em/{info2['scales'][0]['key']}/0-64_0-64_0-8",
                          headers={"If-None-Match": before.headers["etag"]})
    assert new_chunk.status_code == 200 and new_chunk.content == _real_block(8, 64, 64).tobytes()
    tile = httpx.get(f"{base}/catmaid/ds/em/xy/0/0_0_0.png")
    assert tile.status_code == 200

    _change(small_lake, "delete")
    for url in (f"{base}/precomputed/ds/em/info", f"{base}/zarr/ds/em/zarr.json",
                f"{base}/catmaid/ds/em/xy/0/0_0_0.png", f"{base}/ocp/ca/ds/em/npz/0/0,64/0,64/0,8/"):
        r = httpx.get(url)
        assert r.status_code == 404, (url, r.status_code, r.text)
        assert r.json()["error"] == "not_found"


def test_revoked_role_takes_effect_on_an_auth_server(small_lake, serve_lake):
    from neurolake import open_lake

    lake = open_lake(small_lake)
    lake.create_datastack("private", (4.6, 4.6, 50.0), public=False)
    np.save(small_lake.parent / "p.npy", _real_block(4, 64, 64))
    lake.ingest(str(small_lake.parent / "p.npy"), "private", "em", voxel_size=(4.6, 4.6, 50.0),
                layer_type="image", scheduler="threads")
    lake.access.add_user("reader")
    lake.access.grant("reader", "private", "viewer")
    token = lake.access.create_token("reader")["token"]
    lake.close()
    base = serve_lake(small_lake, "--auth")
    headers = {"Authorization": f"Bearer {token}"}
    chunk = f"{base}/precomputed/private/em/4.6_4.6_50/0-64_0-64_0-4"
    assert httpx.get(chunk, headers=headers).status_code == 200
    assert httpx.get(f"{base}/zarr/private/em/zarr.json", headers=headers).status_code == 200
    assert httpx.get(chunk).status_code == 401

    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "users", "revoke", "reader", "-d", "private",
                        "--lake", str(small_lake)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    from neurolake.access.core import CACHE_SECONDS

    deadline = time.monotonic() + CACHE_SECONDS + 5  # the documented bound of the server's grant cache
    while True:
        status = [httpx.get(u, headers=headers).status_code
                  for u in (chunk, f"{base}/zarr/private/em/zarr.json", f"{base}/precomputed/private/em/info")]
        if status == [403, 403, 403]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def test_open_skips_migrations_when_the_catalog_is_at_the_heads(small_lake):
    from neurolake import open_lake
    from neurolake.db.engine import MIGRATED

    stamp = small_lake / MIGRATED
    doc = json.loads(stamp.read_text())
    assert doc["heads"]
    lake = open_lake(small_lake)
    assert lake.catalog.migrate_if_needed(stamp) is False
    # a stamp that does not match the catalog (another code version, a restored catalog): migrate again
    stamp.write_text(json.dumps({**doc, "heads": ["not-a-revision"]}))
    assert lake.catalog.migrate_if_needed(stamp) is True
    assert json.loads(stamp.read_text())["heads"] == doc["heads"]
    stamp.write_text("not json")
    assert lake.catalog.migrate_if_needed(stamp) is True
    lake.close()
    stamp.unlink()
    lake = open_lake(small_lake)  # no stamp: the first use of the catalog migrates and writes it
    assert lake.datastacks() == ["ds"] and stamp.exists()
    assert json.loads(stamp.read_text())["heads"] == doc["heads"]
    lake.close()


def test_fast_routes_answer_exactly_as_fastapi(small_lake, monkeypatch):
    """The data routes taken without FastAPI's per-request machinery (no --auth) give the same status, headers
    and bodies as FastAPI's own routing, errors included, and never take a request another route matches."""
    from fastapi.testclient import TestClient

    from neurolake import open_lake
    from neurolake.server.app import create_app

    lake = open_lake(small_lake)
    app = create_app(lake)
    key = lake.layer("ds", "em").spec.mips[0].key
    requests = [("GET", "/precomputed/ds/em/info", {}), ("GET", "/precomputed/ds/em/jpeg/info", {}),
                ("GET", "/precomputed/ds/em/provenance", {}), ("HEAD", f"/precomputed/ds/em/{key}/0-128_0-96_0-16", {}),
                ("GET", f"/precomputed/ds/em/{key}/0-128_0-96_0-16", {"Range": "bytes=10-99"}),
                ("GET", f"/precomputed/ds/em/jpeg/{key}/0-128_0-96_0-16", {}),
                ("GET", f"/precomputed/ds/em/{key}/0-64_0-96_0-16", {}),  # off the grid: 404
                ("GET", "/precomputed/ds/nope/info", {}), ("GET", "/precomputed/nope/em/info", {}),
                ("GET", "/zarr/ds/em/zarr.json", {"Accept-Encoding": "gzip"}),
                ("GET", "/zarr/ds/em/0/c/0/0/0", {"Range": "bytes=-1028"}), ("HEAD", "/zarr/ds/em/0/c/0/0/0", {}),
                ("GET", "/zarr/ds/em/0/c/0/0/0", {"Range": "bytes=999999999-"}), ("GET", "/zarr/ds/em/../lake.json", {}),
                ("GET", "/zarr/ds/em/.zarray", {}), ("GET", "/catmaid/ds/em/xy/3/0_0_0.png", {}),
                ("GET", "/catmaid/ds/em/xy/3/0_0_x.png", {}), ("GET", "/catmaid/ds/em/xy/999/0_0_0.jpg", {}),
                ("POST", "/precomputed/ds/em/info", {})]
    from neurolake.server.routing import FastRoutes

    taken = []
    original = FastRoutes._call

    async def counting(self, scope, *args):
        taken.append(scope["path"])
        await original(self, scope, *args)

    monkeypatch.setattr(FastRoutes, "_call", counting)
    answers = {}
    with TestClient(app) as client:
        etag = client.get(f"/precomputed/ds/em/{key}/0-128_0-96_0-16").headers["etag"]
        requests.append(("GET", f"/precomputed/ds/em/{key}/0-128_0-96_0-16", {"If-None-Match": etag}))
        for fast in (True, False):
            app.state.fast_routes = fast
            answers[fast] = [client.request(m, u, headers=h) for m, u, h in requests]
    lake.close()
    assert "/zarr/ds/em/0/c/0/0/0" in taken and f"/precomputed/ds/em/{key}/0-128_0-96_0-16" in taken
    assert "/catmaid/ds/em/xy/3/0_0_0.png" in taken
    assert "/precomputed/ds/em/jpeg/info" not in taken  # the chunk route matches it too: FastAPI decides
    assert json.loads(answers[True][1].content)["scales"][0]["encoding"] == "jpeg"  # jpeg/info, not a chunk
    assert answers[True][-1].status_code == 304
    for (m, u, _), a, b in zip(requests, answers[True], answers[False], strict=True):
        assert a.status_code == b.status_code, (m, u, a.status_code, b.status_code)
        assert a.content == b.content, (m, u)
        skip = {"date", "server"}
        assert {k: v for k, v in a.headers.items() if k not in skip} == {
            k: v for k, v in b.headers.items() if k not in skip}, (m, u)


OPENER = """
import sys, neurolake
lake = neurolake.open_lake(sys.argv[1])
la = lake.layer("ds", "em")
a = la.cutout(x=(0, 32), y=(0, 32), z=(0, 4))
print(la.description, la.size(), int(a.sum()), "sqlalchemy" in sys.modules)
"""


def _open_in_new_process(path) -> list[str]:
    p = subprocess.run([sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_new_process_opens_a_layer_without_the_database_until_it_changes(small_lake):
    from neurolake import open_lake

    first = _open_in_new_process(small_lake)  # reads the catalog and keeps the row for this generation
    again = _open_in_new_process(small_lake)
    want = str(int(_real_block()[:4, :32, :32].sum()))
    assert first[-2] == again[-2] == want
    assert again[-1] == "False"  # no SQLAlchemy, no catalog connection
    from neurolake.lake import LAYER_CACHE

    kept = json.loads((small_lake / LAYER_CACHE).read_text())
    lake = open_lake(small_lake)
    with lake._changing(), lake.catalog.session() as s:  # a change made without reading the layer back
        lake._layer_row(s, "ds", "em").description = "renamed"
    assert lake.generation() != kept["generation"]
    lake.close()
    changed = _open_in_new_process(small_lake)
    assert changed[0] == "renamed" and changed[-1] == "True"  # the kept row is stale: the catalog is read
    assert _open_in_new_process(small_lake)[-1] == "False"
