"""The viewer shows the synapse layer: Neuroglancer (the bundled offline build) in headless Chromium
loads the detected Gerhard synapses from our precomputed annotations and draws them."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image


def test_viewer_state_has_annotation_layers(ann_server):
    state = httpx.get(f"{ann_server}/viewer/state/gerhard2013").json()
    syn = [la for la in state["layers"] if la["name"] == "synapses"]
    assert syn and syn[0]["type"] == "annotation"
    assert syn[0]["source"] == f"precomputed://{ann_server}/precomputed/gerhard2013/annotations/synapses"
    assert syn[0]["linkedSegmentationLayer"] == {"pre_segment": "labels", "post_segment": "labels"}
    hemi = httpx.get(f"{ann_server}/viewer/state/hemibrain").json()
    assert {"da1_sites", "cell_types"} <= {la["name"] for la in hemi["layers"]}
    assert {la["type"] for la in hemi["layers"]} == {"annotation"}  # hemibrain has no volume here


def _magenta(shot: np.ndarray) -> int:
    """Pixels of the synapse colour #ff00ff in the 3-D panel (bottom left of the 4-panel layout; the
    layer's tab above also takes the colour, so it is left out). EM is grey and segment colours are
    blended at alpha 0.3, so nothing else there is this saturated."""
    h, w, _ = shot.shape
    shot = shot[int(h * 0.56):, : int(w * 0.49)]
    r, g, b = shot[..., 0].astype(int), shot[..., 1].astype(int), shot[..., 2].astype(int)
    return int(((r > 230) & (g < 40) & (b > 230)).sum())


@pytest.mark.timeout(180)
def test_headless_chromium_draws_synapses(ann_server, tmp_path, chromium):
    driver = chromium
    driver.get(f"{ann_server}/viewer/gerhard2013")
    driver.execute_script("performance.setResourceTimingBufferSize(100000)")
    deadline = time.time() + 100
    fetched, magenta, shot = [], 0, None
    while time.time() < deadline:
        time.sleep(1)
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
        magenta = _magenta(shot)
        if magenta > 50:
            break
    Image.fromarray(shot).save(tmp_path / "synapses.png")
    assert f"{ann_server}/precomputed/gerhard2013/annotations/synapses/info" in fetched
    assert magenta > 50, f"no synapse (magenta #ff00ff) drawn; screenshot in {tmp_path}"
