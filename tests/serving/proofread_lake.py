"""A served lake with every kind of data the HTTP API reads, for the fuzz and edge-validation tests.

:func:`build` takes the writable gala lake of ``tests/serving/conftest.py`` (``gala_lake_path``: the real
gala FIB-SEM crop, image uint8 and segmentation uint32) and adds a proofreadable segmentation ("each"
supervoxel its own root), the annotation tables ``synapses`` (at real contacts a | 0 | b of neighbouring
ground-truth neurons along x) and ``cell_types`` (the first voxel of each neuron), materialization versions
1 and 2, and users ``vi`` (viewer of ``gala``) and ``ed`` (editor) with API tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def build(path: Path):
    """Returns ``(lake, {"viewer": token, "editor": token}, {"supervoxels": [...], "roots": [...]})`` (20 real
    supervoxel ids and their root ids); close the lake when done."""
    from neurolake import open_lake
    from neurolake.annotations import create_table
    from neurolake.materialize import materialize
    from neurolake.proofreading import create_segmentation

    lake = open_lake(path)
    create_segmentation(lake, "gala", layer="segmentation", agglomeration="each")
    vol = lake.layer("gala", "segmentation").cutout(x=(0, 64), y=(0, 64), z=(0, 16))  # (z, y, x)
    a, gap, b = vol[:, :, :-2], vol[:, :, 1:-1], vol[:, :, 2:]
    z, y, x = np.nonzero((a != 0) & (b != 0) & (a != b) & (gap == 0))
    pick = np.arange(0, len(z), max(1, len(z) // 60))[:60]
    syn = create_table(lake, "gala", "synapses", "synapse", segmentation_layer="segmentation")
    syn.append(pd.DataFrame({
        "pre_pt_position": [[int(x[i]), int(y[i]), int(z[i])] for i in pick],
        "post_pt_position": [[int(x[i]) + 2, int(y[i]), int(z[i])] for i in pick],
        "ctr_pt_position": [[int(x[i]) + 1, int(y[i]), int(z[i])] for i in pick],
        "size": np.linspace(10, 100, len(pick))}), author="fuzz")
    ids, first = np.unique(vol, return_index=True)
    zz, yy, xx = np.unravel_index(first[ids != 0], vol.shape)
    ct = create_table(lake, "gala", "cell_types", "cell_type", segmentation_layer="segmentation")
    ct.append(pd.DataFrame({"pt_position": [[int(c), int(b_), int(a_)] for a_, b_, c in zip(zz, yy, xx, strict=True)],
                            "cell_type": ["large" if i % 2 else "small" for i in range(len(xx))]}), author="fuzz")
    materialize(lake, "gala")
    syn.append(pd.DataFrame({"pre_pt_position": [[1, 1, 1]], "post_pt_position": [[3, 1, 1]],
                             "ctr_pt_position": [[2, 1, 1]], "size": [5.0]}), author="fuzz")
    materialize(lake, "gala")
    acc = lake.access
    tokens = {}
    for user, role in (("vi", "viewer"), ("ed", "editor")):
        acc.add_user(user)
        acc.grant(user, "gala", role)
        tokens[role] = acc.create_token(user)["token"]
    svs = [int(r) for r in ids[ids != 0][:20]]
    roots = [int(r) for r in lake.datastack("gala").segmentation.roots(svs)]
    return lake, tokens, {"supervoxels": svs, "roots": roots}
