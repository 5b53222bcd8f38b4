"""`serve --auth` guards the routes of the other protocols too (OCP, BossDB, precomputed, JSON API):
real EM data (Gerhard et al. 2013) in a private datastack, read and written with tokens and roles."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def em_server(tmp_path_factory, serve_lake):
    import tifffile

    from neurolake import init_lake

    work = tmp_path_factory.mktemp("authroutes")
    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))[:4]
    vol = np.stack([tifffile.imread(f)[:128, :128] for f in files])
    np.save(work / "em.npy", vol)
    lake = init_lake(work / "lake")
    lake.create_datastack("gerhard", (4, 4, 50), public=False)
    lake.ingest(str(work / "em.npy"), "gerhard", "em", voxel_size=(4, 4, 50), scheduler="threads")
    acc = lake.access
    tok = {}
    for user, role in (("vi", "viewer"), ("ed", "editor"), ("out", None)):
        acc.add_user(user)
        if role:
            acc.grant(user, "gerhard", role)
        tok[user] = acc.create_token(user)["token"]
    lake.close()
    return serve_lake(work / "lake", "--auth"), tok, vol


def _npz(body: bytes) -> np.ndarray:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(body)) as zf, zf.open("cutout.npy") as f:
        return np.lib.format.read_array(f)


def test_registry_auth_guards_ocp_boss_precomputed(em_server):
    base, tok, vol = em_server
    cut = "/ocp/ca/gerhard/em/npz/0/0,64/0,64/0,2/"
    assert httpx.get(base + cut).status_code == 401
    r = httpx.get(base + cut, headers={"Authorization": f"Bearer {tok['vi']}"})
    assert r.status_code == 200
    np.testing.assert_array_equal(_npz(r.content), vol[0:2, 0:64, 0:64])
    r = httpx.get(base + cut, headers={"Authorization": f"Bearer {tok['out']}"})
    assert r.status_code == 403 and r.json()["detail"]["datastack"] == "gerhard"
    # writing needs editor
    from neurolake.volumes.formats import encode

    body = encode(np.full((2, 64, 64), 7, np.uint8), "npz")
    r = httpx.post(base + cut, content=body, headers={"Authorization": f"Bearer {tok['vi']}"})
    assert r.status_code == 403 and r.json()["detail"]["required"] == "editor"
    r = httpx.post(base + cut, content=body, headers={"Authorization": f"Bearer {tok['ed']}"})
    assert r.status_code == 201
    r = httpx.get(base + cut, headers={"Authorization": f"Bearer {tok['vi']}"})
    assert (_npz(r.content) == 7).all()
    # BossDB (intern's `Authorization: Token`), precomputed with ?token=, the JSON API
    r = httpx.get(base + "/v1/collection/gerhard", headers={"Authorization": f"Token {tok['vi']}"})
    assert r.status_code == 200
    r = httpx.get(base + "/v1/collection/gerhard", headers={"Authorization": f"Token {tok['out']}"})
    assert r.status_code == 403 and r.json()["status"] == 403  # BossDB error body
    assert httpx.get(base + "/precomputed/gerhard/em/info", params={"token": tok["vi"]}).status_code == 200
    assert httpx.get(base + "/precomputed/gerhard/em/info").status_code == 401
    # a browser that opened a page with ?token= presents the cookie set by that answer
    r = httpx.get(base + "/api/v1/datastacks/gerhard", params={"token": tok["vi"]})
    assert r.status_code == 200 and "neurolake_token=" in r.headers["set-cookie"]
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    with httpx.Client(base_url=base) as browser:
        browser.cookies.set("neurolake_token", tok["vi"])
        assert browser.get("/precomputed/gerhard/em/info").status_code == 200
        browser.cookies.set("neurolake_token", "nl_wrong")
        assert browser.get("/precomputed/gerhard/em/info").status_code == 401
    assert httpx.get(base + "/api/v1/datastacks", headers={"Authorization": f"Bearer {tok['out']}"}).status_code == 200
    # bytes of the data routes count in the user's usage
    u = httpx.get(base + "/api/v1/usage", headers={"Authorization": f"Bearer {tok['vi']}"}).json()
    assert u["requests"] >= 4 and u["bytes"] > 2 * 64 * 64 // 4


def test_registry_auth_intern_token(em_server, tmp_path, monkeypatch):
    """intern (BossDB client, unmodified) sends `Authorization: Token <t>` from its config."""
    from intern.remote.boss import BossRemote
    from requests import HTTPError

    monkeypatch.setenv("HOME", str(tmp_path))
    base, tok, vol = em_server
    host = base.removeprefix("http://")
    rmt = BossRemote({"protocol": "http", "host": host, "token": tok["vi"]})
    ch = rmt.get_channel("em", "gerhard", "gerhard")
    got = rmt.get_cutout(ch, 0, [0, 64], [0, 64], [2, 4])
    np.testing.assert_array_equal(got, vol[2:4, 0:64, 0:64])
    for bad in ("nl_not_a_token", tok["out"]):
        with pytest.raises(HTTPError):
            BossRemote({"protocol": "http", "host": host, "token": bad}).get_channel("em", "gerhard", "gerhard")
