"""Preprocessing and segmentation jobs with provenance, and segmentation evaluation (issue 16; docs/processing.md).

Modules: :mod:`~neurolake.process.jobs` (derived layers as idempotent jobs), ``intensity`` (per-section
normalisation, CLAHE), ``align`` (rigid section alignment), ``classify`` (voxel classification with a random
forest on filter-bank features), ``agglomerate`` (region-adjacency-graph agglomeration of supervoxels),
``evaluate`` (variation of information, adapted Rand error, split/merge counts).
"""
