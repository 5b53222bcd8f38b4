"""Automated segmentation jobs: supervoxels from a boundary map by seeded watershed."""

from neurolake.segment.watershed import (
    boundary_from_layer,
    watershed_layer,
    watershed_section,
    watershed_volume,
)

__all__ = ["boundary_from_layer", "watershed_layer", "watershed_section", "watershed_volume"]
