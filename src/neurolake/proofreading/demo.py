"""Demo steps of issue 5: real, proofreadable fragments and a first materialization.

- ``gerhard2013``: the membrane labels (values 0, 32, 64, 96, 128 of the merged label images) become
  an image layer ``membrane`` (uint8, 255 = membrane) and, by per-section seeded watershed, the
  supervoxel layer ``supervoxels``; the region adjacency graph with affinities from the membrane map
  and an initial agglomeration (affinity >= 0.5) make the datastack proofreadable;
- ``gala_fibsem``: the 88-label ground-truth segmentation is made proofreadable as it is (each label
  its own root), so merges and splits can be tried on real neurons;
- a materialization version of each datastack (annotation tables present at that time, bound to roots).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neurolake.errors import NotFound

MEMBRANE_VALUES = (0, 32, 64, 96, 128)


def _has_layer(lake, ds, name) -> bool:
    try:
        return lake.layer(ds, name).status == "ready"
    except NotFound:
        return False


def demo_step(lake, say: Callable[[str], None]) -> None:
    from neurolake.proofreading import create_segmentation, has_segmentation
    from neurolake.segment import boundary_from_layer, watershed_layer
    from neurolake.volumes.sources import NpyFile

    ds = "gerhard2013"
    if _has_layer(lake, ds, "labels"):
        if not _has_layer(lake, ds, "membrane"):
            b = boundary_from_layer(lake.layer(ds, "labels"), MEMBRANE_VALUES)
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "membrane.npy"
                np.save(p, (b * 255).astype(np.uint8))
                lake.ingest(NpyFile(p), ds, "membrane", layer_type="image", scheduler="threads",
                            description="membrane map from the merged labels (255 = membrane)")
            say(f"{ds}/membrane: written")
        if not _has_layer(lake, ds, "supervoxels"):
            watershed_layer(lake, ds, "labels", "supervoxels", boundary_values=MEMBRANE_VALUES, scheduler="threads")
            say(f"{ds}/supervoxels: seeded watershed written ({lake.layer(ds, 'supervoxels')!r})")
        if not has_segmentation(lake, ds):
            seg = create_segmentation(lake, ds, layer="supervoxels", boundary_layer="membrane",
                                      agglomeration="threshold", threshold=0.7)
            info = seg.info()
            say(f"{ds}: proofreadable ({info['supervoxels']} supervoxels, {info['edges']} edges, "
                f"{info['provenance'].get('roots')} roots)")
    ds = "gala_fibsem"
    if _has_layer(lake, ds, "segmentation") and not has_segmentation(lake, ds):
        seg = create_segmentation(lake, ds, layer="segmentation", agglomeration="each")
        say(f"{ds}: proofreadable ({seg.info()['supervoxels']} supervoxels, each its own root)")
