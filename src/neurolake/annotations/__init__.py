"""Annotation tables: typed tables of synapses, cell types, nuclei and tags, stored as Delta Lake.

Public API (see ``docs/annotations.md``)::

    from neurolake.annotations import create_table, get_table, list_tables
    t = create_table(lake, "gerhard2013", "synapses", "synapse", segmentation_layer="labels")
    ids = t.append(df)                       # one Delta commit; ids are uint64
    with t.writer(flush_rows=100_000) as w:  # buffered: one commit per flush
        w.add(df)
    t.update(df_with_ids); t.delete(ids)     # history kept (superceded_id / deleted)
    t.query(bbox=[[x0, y0, z0], [x1, y1, z1]], units="nm", timestamp=T, filters={...})

Positions are x, y, z voxels at the table's ``voxel_size_nm`` (nm per voxel), in columns
``<point>_position_x|y|z``; ``<point>_supervoxel_id`` holds the segment under the point.
"""

from neurolake.annotations.schemas import SCHEMAS, Field, Schema, get_schema
from neurolake.annotations.table import Table, create_table, drop_table, get_table, list_tables
from neurolake.annotations.writer import BufferedWriter

__all__ = ["SCHEMAS", "BufferedWriter", "Field", "Schema", "Table", "create_table", "drop_table", "get_schema",
           "get_table", "list_tables"]
