"""The offline Neuroglancer viewer in headless Chromium: the screenshot shows EM pixels from our server."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image


def served(base: str, what: str) -> int:
    return httpx.get(f"{base}/api/v1/stats").json()["requests"].get(what, 0)


def test_viewer_state_points_at_our_precomputed(demo_server):
    r = httpx.get(f"{demo_server}/viewer/gerhard2013", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/viewer/v/gerhard2013/"
    page = httpx.get(f"{demo_server}/viewer/v/gerhard2013/")
    assert page.status_code == 200 and "<title>neuroglancer</title>" in page.text
    state = httpx.get(f"{demo_server}/viewer/state/gerhard2013").json()
    assert [la["name"] for la in state["layers"]] == ["image", "labels"]
    assert state["layers"][0]["source"] == f"precomputed://{demo_server}/precomputed/gerhard2013/image"
    assert state["dimensions"]["z"] == [pytest.approx(50e-9), "m"]
    assert httpx.get(f"{demo_server}/viewer/nope").status_code == 404
    r = httpx.get(f"{demo_server}/viewer/gerhard2013?source=zarr3", follow_redirects=False)
    assert r.headers["location"] == "/viewer/v/gerhard2013@zarr3/"
    z = httpx.get(f"{demo_server}/viewer/state/gerhard2013@zarr3").json()
    assert z["layers"][1]["source"] == f"zarr3://{demo_server}/zarr/gerhard2013/labels/"
    assert httpx.get(f"{demo_server}/viewer/gerhard2013?source=n5").status_code == 404
    assert httpx.get(f"{demo_server}/viewer/v/gerhard2013/../../etc/passwd").status_code == 404


@pytest.mark.timeout(180)
@pytest.mark.parametrize("source,counter", [("precomputed", "precomputed_chunks"), ("zarr3", "zarr_keys")])
def test_headless_chromium_shows_em(demo_server, tmp_path, source, counter, chromium):
    driver = chromium
    before = served(demo_server, counter)
    driver.get(f"{demo_server}/viewer/gerhard2013?source={source}")
    deadline = time.time() + 90
    fetched, levels, shot = [], 0, None
    while time.time() < deadline:
        time.sleep(1)
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        n_served = served(demo_server, counter) - before
        shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
        h, w, _ = shot.shape
        panel = shot[int(h * 0.15):int(h * 0.5), int(w * 0.05):int(w * 0.45)]  # inside the xy panel
        levels = len(np.unique(panel.mean(axis=2).astype(int)))
        if levels > 100 and n_served > 0:
            break
    Image.fromarray(shot).save(tmp_path / "viewer.png")
    meta = (f"{demo_server}/precomputed/gerhard2013/image/info" if source == "precomputed"
            else f"{demo_server}/zarr/gerhard2013/image/zarr.json")
    assert meta in fetched
    assert n_served > 0, f"the viewer fetched no {source} chunk from our server"
    assert levels > 100, f"the xy panel looks blank ({levels} grey levels); screenshot in {tmp_path}"
    assert panel.std() > 15
