"""Proofreading: a versioned, editable segmentation (supervoxels → root ids) with an edit log.

Public face::

    from neurolake.proofreading import create_segmentation, segmentation
    seg = create_segmentation(lake, "ds", layer="supervoxels")        # or supervoxels=/edges=/mapping=
    op = seg.merge(sv_a, sv_b, author="ann", roots=[root_a, root_b])   # 409 Conflict when roots are stale
    op = seg.split(sources=[sv1], sinks=[sv2], author="ann")           # minimum cut inside the root
    seg.undo(op["operation_id"]); seg.redo(...); seg.rollback("ann", since=t)
    seg.roots(svs, timestamp=None); seg.leaves(root); seg.is_latest(roots); seg.latest_roots(root)
    seg.lineage(roots); seg.operations(author=...); seg.cutout(x=, y=, z=, timestamp=)  # (z, y, x) root ids

See ``docs/proofreading.md``.
"""

from neurolake.proofreading.service import (
    Segmentation,
    create_segmentation,
    has_segmentation,
    segmentation,
)


def remap_to_roots(lake, datastack: str, array, timestamp=None, layer: str | None = None):
    """Supervoxel ids of ``array`` (e.g. a (z, y, x) cutout) replaced by root ids at ``timestamp`` (uint64).

    ``layer``: the layer the array was read from; it must be the supervoxel layer of the datastack's
    proofreadable segmentation (InvalidArgument otherwise). Raises NotFound when there is none.
    """
    from neurolake.errors import InvalidArgument

    seg = segmentation(lake, datastack)
    sv_layer = seg.layer
    if layer is not None and layer != sv_layer:
        raise InvalidArgument(f"layer {layer!r} is not the supervoxel layer of {datastack!r} ({sv_layer!r}); "
                              "root ids are only defined for the supervoxel layer", field="layer", value=layer,
                              allowed=sv_layer)
    return seg.remap_to_roots(array, timestamp)


__all__ = ["Segmentation", "create_segmentation", "has_segmentation", "remap_to_roots", "segmentation"]
