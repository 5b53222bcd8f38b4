"""Neuroglancer (the PyPI wheel's bundled viewer, hosted by ``neuroglancer.Viewer``) in headless Chromium
draws gala neurons' meshes from a real ``neurolake serve`` process in its 3-D panel: the screenshot with two
segments selected differs from the same view with none, and the fragments came from our server — in the legacy
format and in the multi-resolution Draco format."""

from __future__ import annotations

import io
import shutil
import time

import httpx
import numpy as np
import pytest
from PIL import Image

DS, LAYER = "gala_fibsem", "segmentation"


def _shot(driver) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["mesh", "mesh_draco"])
def test_headless_chromium_draws_meshes(fmt, gala_mesh_path, gala_volume, serve_lake, chromium, tmp_path):
    import neuroglancer

    from neurolake import open_lake
    from neurolake.meshes import build_meshes

    path = gala_mesh_path
    if fmt == "mesh_draco":  # a copy whose info names the Draco multi-resolution meshes
        path = tmp_path / "lake"
        shutil.copytree(gala_mesh_path, path)
        lake = open_lake(path)
        try:
            build_meshes(lake, DS, LAYER, block=(64, 48, 20), draco=True, scheduler="threads")
        finally:
            lake.close()
    base = serve_lake(path)
    assert httpx.get(f"{base}/precomputed/{DS}/{LAYER}/info").json()["mesh"] == fmt
    ids, counts = np.unique(gala_volume, return_counts=True)
    segs = [int(i) for i in ids[ids != 0][np.argsort(counts[ids != 0])[-2:]]]  # the two largest neurons
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()

    def show(segments):
        with viewer.txn() as s:
            s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 8])
            s.layers["neurons"] = neuroglancer.SegmentationLayer(
                source=f"precomputed://{base}/precomputed/{DS}/{LAYER}", segments=segments)
            s.layout = "3d"
            s.show_slices = False  # the 3-D panel shows meshes only, no cross-sections
            s.position = [100, 50, 25]
            s.projection_scale = 400

    show([])
    driver = chromium
    driver.get(viewer.get_viewer_url())
    driver.execute_script("performance.setResourceTimingBufferSize(100000)")
    time.sleep(6)
    empty = _shot(driver)
    show(segs)
    deadline, changed, shot = time.time() + 120, 0, empty
    while time.time() < deadline:
        time.sleep(1)
        shot = _shot(driver)
        changed = int((np.abs(shot - empty).sum(axis=2) > 60).sum())
        if changed > 8000:
            break
    Image.fromarray(empty.astype(np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(shot.astype(np.uint8)).save(tmp_path / "meshes.png")
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert f"{base}/precomputed/{DS}/{LAYER}/{fmt}/info" in fetched  # manifests and fragments: from a web worker
    stats = httpx.get(f"{base}/api/v1/stats").json()["requests"]
    # legacy: a manifest and several block fragments per neuron; Draco: one manifest and one mesh per neuron
    assert stats.get("mesh_manifests", 0) >= 2 and stats.get("mesh_fragments", 0) >= (2 if "draco" in fmt else 5), stats
    assert changed > 8000, f"the 3-D panel shows no mesh ({changed} pixels changed); screenshots in {tmp_path}"
    # the drawn pixels are coloured (segment colours), not the grey/black of an empty panel
    moved = np.abs(shot - empty).sum(axis=2) > 60
    assert np.ptp(shot[moved], axis=1).mean() > 30
