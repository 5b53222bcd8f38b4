"""Routing with the literal-prefix check of ``neurolake.server.routing.APIRouter`` against the demo server:
paths are still told apart as FastAPI would (200, 404, 405, path parameters)."""

from __future__ import annotations

import httpx
from starlette.routing import Match

from neurolake.server.routing import APIRouter


def test_prefix_check_unit():
    r = APIRouter(prefix="/zarr")

    @r.get("/{ds}/{layer}/zarr.json")
    def meta(ds: str, layer: str):  # pragma: no cover - never called
        return {}

    def scope(path, method="GET"):
        return {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}

    assert r._literal_prefixes() == ("/zarr/",)
    assert r.matches(scope("/ocp/ca/x"))[0] is Match.NONE

    @r.get("/version")
    def version():  # pragma: no cover
        return {}

    assert r._literal_prefixes() == ("/zarr/", "/zarr/version")  # routes added later are seen
    # positive matches need the router included in an app: see the HTTP test below


def test_routes_behind_prefix_check_over_http(demo_server):
    with httpx.Client(base_url=demo_server, timeout=30) as c:
        assert c.get("/api/v1/datastacks").status_code == 200
        assert c.get("/api/v1/datastacks/gerhard2013").json()["name"] == "gerhard2013"
        assert c.get("/no/such/route").status_code == 404
        assert c.get("/zarr/gerhard2013/nosuchlayer/zarr.json").status_code == 404
        # a known path with the wrong method is still 405, not 404
        r = c.put("/api/v1/features/x/signed-urls")
        assert r.status_code == 405, r.text
        assert c.get("/api/v1/features/x/signed-urls").status_code == 405
        assert c.post("/api/v1/features/x/signed-urls", json={}).status_code == 404  # no such table
