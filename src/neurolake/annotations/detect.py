"""Synapse detection from a label mask: 3-D connected components → one synapse row each.

Every connected component (26-connectivity by default) of the voxels equal to ``value`` in a layer
becomes a ``synapse`` row: ``ctr_pt`` at the component's centroid (x, y, z voxels of the layer at
``mip``), ``size`` in voxels, and the properties ``size_nm3`` (voxels × voxel volume in nm³) and
the bounding box ``bbox_{min,max}_{x,y,z}`` (voxels, half-open). Components come from
connected-components-3d (``cc3d.connected_components`` and ``cc3d.statistics``). pre_pt/post_pt are
unknown from a mask and left empty. The whole layer is read at once (up to ``max_bytes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from neurolake.errors import InvalidArgument, TooLarge

BBOX_PROPERTIES = {f"bbox_{e}_{a}": "int" for e in ("min", "max") for a in "xyz"}
DETECT_PROPERTIES = {"size_nm3": "float", **BBOX_PROPERTIES}


def components(mask_zyx: np.ndarray, connectivity: int = 26, min_size: int = 1) -> pd.DataFrame:
    """Connected components of a boolean (z, y, x) array as rows: centroid ``ctr_pt_position_x|y|z``
    (voxels), ``size`` (voxels) and ``bbox_min/max_x|y|z`` (voxels, half-open), sorted by z, y, x."""
    import cc3d

    if connectivity not in (6, 18, 26):
        raise InvalidArgument(f"connectivity {connectivity} must be 6, 18 or 26", field="connectivity",
                              value=connectivity)
    labels = cc3d.connected_components(np.ascontiguousarray(mask_zyx, dtype=bool), connectivity=connectivity)
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"])[1:]
    cents = np.asarray(stats["centroids"])[1:]  # (z, y, x) array order
    boxes = stats["bounding_boxes"][1:]
    keep = counts >= min_size
    rows = pd.DataFrame({
        "ctr_pt_position_x": cents[keep, 2], "ctr_pt_position_y": cents[keep, 1],
        "ctr_pt_position_z": cents[keep, 0], "size": counts[keep].astype(np.float64),
    })
    b = [bx for bx, k in zip(boxes, keep, strict=True) if k]
    for i, a in enumerate("zyx"):
        rows[f"bbox_min_{a}"] = [int(s[i].start) for s in b]
        rows[f"bbox_max_{a}"] = [int(s[i].stop) for s in b]
    return rows.sort_values(["ctr_pt_position_z", "ctr_pt_position_y", "ctr_pt_position_x"]).reset_index(drop=True)


def detect_synapses(lake: Any, datastack: str, mask_layer: str, value: int, table: str, *, mip: int = 0,
                    connectivity: int = 26, min_size: int = 1, segmentation_layer: str | None = None,
                    description: str = "", max_bytes: int = 2 << 30, replace: bool = False):
    """Turn the voxels equal to ``value`` in ``mask_layer`` into the synapse table ``table``.

    Creates the table (schema ``synapse``, voxel resolution of ``mask_layer`` at ``mip``, properties
    ``size_nm3`` and the bounding box) unless it exists, and appends one row per component in one
    commit; with ``replace`` the currently valid rows of an existing table are soft-deleted first.
    Returns the :class:`Table`. Raises NotFound (layer), TooLarge (layer over ``max_bytes``),
    InvalidArgument.
    """
    from neurolake.annotations.table import create_table, get_table
    from neurolake.errors import NotFound
    from neurolake.provenance import record

    la = lake.layer(datastack, mask_layer)
    shape = la.shape(mip)
    nbytes = int(np.prod(shape)) * la.dtype.itemsize
    if nbytes > max_bytes:
        raise TooLarge(f"layer {mask_layer} at mip {mip} is {nbytes} bytes; detection reads it whole and the limit "
                       f"is {max_bytes} bytes (use a coarser mip)", limit=max_bytes, size=nbytes)
    try:
        v = la.dtype.type(value)
        if int(v) != value:
            raise ValueError
    except (ValueError, OverflowError, TypeError):
        raise InvalidArgument(f"value {value!r} does not fit the layer dtype {la.dtype}", field="value",
                              value=repr(value)) from None
    vol = la.cutout(x=(0, shape[2]), y=(0, shape[1]), z=(0, shape[0]), mip=mip)
    rows = components(vol == v, connectivity=connectivity, min_size=min_size)
    vs = np.array(la.spec.mips[mip].voxel_size_nm, dtype=np.float64)
    rows.insert(4, "size_nm3", rows["size"] * float(np.prod(vs)))
    try:
        t = get_table(lake, datastack, table)
    except NotFound:
        t = create_table(lake, datastack, table, "synapse", voxel_resolution=vs.tolist(),
                         properties=DETECT_PROPERTIES, segmentation_layer=segmentation_layer,
                         description=description or f"connected components of value {value} in layer {mask_layer}")
    if replace:
        old = t.query(columns=["id"]).arrow().column("id").to_numpy()
        if len(old):
            t.delete(old)
    rows["metadata"] = [None] * len(rows)
    prov = record("detect_synapses", inputs={"datastack": datastack, "layer": mask_layer, "mip": mip},
                  params={"value": int(value), "connectivity": connectivity, "min_size": min_size})
    import json

    rows["metadata"] = json.dumps({"source": f"{mask_layer}=={value}", "code": prov["code"]["neurolake"]})
    t.append(rows, author=prov["user"])
    return t
