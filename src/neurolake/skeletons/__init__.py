"""Skeletons of segmentation layers (docs/skeletons.md): kimimaro (TEASAR) on Dask, stored as Neuroglancer
precomputed skeletons (vertices and radii in nm) beside the layer, exported as SWC, summarised in a skeleton
table (cable length, branch points, … per segment) that SQL reads as ``DS.skeletons.LAYER``.

- :func:`skeletonize_layer` (:mod:`neurolake.skeletons.build`): the batch job, with progress and provenance;
- :mod:`neurolake.skeletons.store`: the layout, reading one skeleton (``osteoid.Skeleton``, cloud-volume's
  class), SWC, the table.

The functions here take the lake, a datastack and a layer name, like the rest of the client API.
"""

from __future__ import annotations

from typing import Any

from neurolake.skeletons import store
from neurolake.skeletons.build import TEASAR_DEFAULTS, skeletonize_layer

__all__ = ["TEASAR_DEFAULTS", "skeletonize_layer", "skeleton", "swc", "skeleton_table", "skeleton_info",
           "skeleton_ids", "has_skeletons", "provenance"]


def skeleton(lake, datastack: str, layer: str, segment_id: int):
    """The skeleton of ``segment_id``: an ``osteoid.Skeleton`` (``vertices`` (N, 3) x, y, z nm, ``edges``,
    ``radius`` nm, ``vertex_types``). Raises NotFound (layer, skeletons, segment), InvalidArgument."""
    return store.get_skeleton(store.seg_layer(lake, datastack, layer), segment_id)


def swc(lake, datastack: str, layer: str, segment_id: int) -> str:
    """The skeleton of ``segment_id`` as SWC text (nm). Raises NotFound, InvalidArgument."""
    return store.to_swc(store.seg_layer(lake, datastack, layer), segment_id)


def skeleton_table(lake, datastack: str, layer: str, version: int | None = None):
    """The skeleton table (pyarrow Table, one row per skeleton: ``store.COLUMNS``) at Delta ``version``
    (None: newest). Raises NotFound."""
    return store.read_table(store.seg_layer(lake, datastack, layer), version)


def skeleton_info(lake, datastack: str, layer: str) -> dict[str, Any]:
    """The precomputed skeleton ``info`` JSON. Raises NotFound when the layer has no skeletons."""
    return store.read_info(store.seg_layer(lake, datastack, layer))


def skeleton_ids(lake, datastack: str, layer: str) -> list[int]:
    """Sorted segment ids that have a skeleton. Raises NotFound."""
    return store.list_ids(store.seg_layer(lake, datastack, layer))


def has_skeletons(lake, datastack: str, layer: str) -> bool:
    """True when the layer has built skeletons."""
    return store.has_skeletons(lake.layer(datastack, layer))


def provenance(lake, datastack: str, layer: str) -> dict[str, Any] | None:
    """How the layer's skeletons were made (parameters, kimimaro version, inputs, code, user, time, statistics,
    skeleton table version), or None."""
    return store.read_provenance(lake.layer(datastack, layer))
