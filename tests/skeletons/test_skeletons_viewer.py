"""Neuroglancer (the bundled viewer, headless Chromium) finds the skeletons of a real `neurolake serve` process.

Only the skeleton ``info`` fetch is checked here: with a segment selected through ``window.viewer.state``, the
headless viewer fetched no skeleton file in our runs (nor any new volume chunk), so fetching skeletons by
segment is shown with cloud-volume (test_skeletons.py), which reads the same routes.
"""

from __future__ import annotations

import time

import pytest


@pytest.mark.timeout(240)
def test_neuroglancer_reads_the_skeleton_info(skel_server, chromium):
    driver = chromium
    driver.get(f"{skel_server}/viewer/gala")
    info = f"{skel_server}/precomputed/gala/segmentation/skeletons/info"
    deadline = time.time() + 120
    fetched: list[str] = []
    while time.time() < deadline:
        time.sleep(1)
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        if info in fetched:
            break
    assert f"{skel_server}/precomputed/gala/segmentation/info" in fetched
    assert info in fetched, "Neuroglancer did not read the skeleton info named by the volume info"
