"""Neuroglancer precomputed annotations of an annotation table (``neuroglancer_annotations_v1``).

Format: https://github.com/google/neuroglancer/blob/master/src/datasource/precomputed/annotations.md

- ``info``: ``@type``, ``dimensions`` (the table's voxel resolution, metres), ``lower_bound`` /
  ``upper_bound``, ``annotation_type`` (POINT for point tables and synapses — drawn at ``ctr_pt``,
  else ``post_pt``/``pre_pt``; LINE for ``line``; AXIS_ALIGNED_BOUNDING_BOX for ``box``),
  ``properties``, ``relationships``, ``by_id``, ``spatial``.
- A record is the float32 geometry, then the properties, then zero padding to a multiple of 4 bytes.
  Properties are listed (and encoded) already sorted by size — 4-byte types, then 2-byte, then
  1-byte — because the JS viewer sorts them and cloud-volume's reader does not.
- ``by_id/<id>``: one record, then per relationship a uint32 count and that many uint64 ids.
- ``rel_<relationship>/<segment id>`` and ``spatial0/<i>_<j>_<k>``: a uint64 count, the records,
  then the uint64 annotation ids.
- Properties: float columns → float32 (null → NaN); whole-number columns → int32 when every value
  fits, else float32; text columns → enums (uint8/uint16 with ``enum_values``/``enum_labels``).
- Relationships: synapses ``pre_segment``/``post_segment``; one-point tables ``segment``; others
  ``<point>_segment``; each is the point's ``root_id`` when known, else its ``supervoxel_id``
  (0 and null are left out).
- One spatial level whose grid has at most ``max_cells`` cells and aims at ``cell_target`` rows per
  cell; every annotation sits in exactly one cell (the one holding its first point), so readers that
  query one level (cloud-volume) and readers that union levels (Neuroglancer) see each once.

Rows without a drawable position (e.g. synapses known only by their partners) are not served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from neurolake.annotations.schemas import position_columns

PROPERTY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
SKIP_PROPERTIES = {"metadata", "author", "status"}


@dataclass
class _Prop:
    id: str
    column: str
    type: str
    values: np.ndarray
    labels: list[str] | None = None

    @property
    def size(self) -> int:
        return np.dtype(self.type).itemsize

    def spec(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "type": self.type, "description": f"column {self.column}"}
        if self.labels is not None:
            d["enum_values"] = list(range(len(self.labels)))
            d["enum_labels"] = self.labels
        return d


def _prop_id(name: str, taken: set[str]) -> str:
    pid = name if PROPERTY_ID.match(name) else "p_" + re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()
    while pid in taken:
        pid += "_"
    taken.add(pid)
    return pid


class PrecomputedAnnotations:
    """The precomputed annotation files of one table state (all rows valid now), built in memory.

    ``get(key)`` returns the bytes of ``info`` (JSON), ``by_id/<id>``, ``rel_<name>/<segment>`` or
    ``spatial0/<i>_<j>_<k>``, or None when the key does not exist (serve 404).
    """

    def __init__(self, table: Any, rows: pa.Table | None = None, cell_target: int = 500, max_cells: int = 4096):
        self.table = table
        schema = table.schema
        rows = rows if rows is not None else table.query().arrow()
        self.annotation_type = schema.annotation_type
        # geometry
        if schema.annotation_type == "POINT":
            order = [schema.primary] + [p for p in schema.points if p != schema.primary]
            geom = np.full((len(rows), 3), np.nan)
            for p in order:
                pos = np.stack([rows.column(c).to_numpy(zero_copy_only=False) for c in position_columns(p)], axis=1)
                fill = np.isnan(geom).any(axis=1) & ~np.isnan(pos).any(axis=1)
                geom[fill] = pos[fill]
        else:
            a, b = schema.points[0], schema.points[1]
            geom = np.concatenate([np.stack([rows.column(c).to_numpy(zero_copy_only=False)
                                             for c in position_columns(p)], axis=1) for p in (a, b)], axis=1)
        keep = ~np.isnan(geom).any(axis=1)
        ids = rows.column("id").to_numpy().astype(np.uint64)[keep]
        geom = geom[keep]
        rows = rows.filter(pa.array(keep))
        order = np.argsort(ids, kind="stable")
        self.ids, geom, rows = ids[order], geom[order], rows.take(pa.array(order))
        self.count = len(self.ids)
        # properties
        props: list[_Prop] = []
        taken: set[str] = set()
        idcols = set(table.id_columns)
        for f in rows.schema:
            if f.name in idcols or f.name in SKIP_PROPERTIES or f.name in ("created", "deleted") \
                    or "_position_" in f.name:
                continue
            col = rows.column(f.name)
            if pa.types.is_floating(f.type):
                props.append(_Prop(_prop_id(f.name, taken), f.name, "float32",
                                   col.to_numpy(zero_copy_only=False).astype(np.float32)))
            elif pa.types.is_integer(f.type) or pa.types.is_boolean(f.type):
                vals = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
                fits = not np.isnan(vals).any() and (len(vals) == 0 or (vals.min() >= -2**31 and vals.max() < 2**31))
                props.append(_Prop(_prop_id(f.name, taken), f.name, "int32" if fits else "float32",
                                   vals.astype(np.int32) if fits else vals.astype(np.float32)))
            elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                texts = col.fill_null("").to_numpy(zero_copy_only=False).astype(str)
                labels, codes = np.unique(texts, return_inverse=True)
                if len(labels) == 0 or len(labels) > 65535 or (len(labels) == 1 and labels[0] == ""):
                    continue
                typ = "uint8" if len(labels) <= 256 else "uint16"
                props.append(_Prop(_prop_id(f.name, taken), f.name, typ, codes.astype(typ), labels.tolist()))
        props.sort(key=lambda p: -p.size)  # presorted: 4-byte, then 2-byte, then 1-byte types
        self.props = props
        fields: list[tuple] = [("geometry", "<f4", (geom.shape[1],))]
        offset = 4 * geom.shape[1]
        for i, p in enumerate(props):
            fields.append((f"p{i}", "<" + np.dtype(p.type).str[1:] if p.size > 1 else p.type))
            offset += p.size
        if offset % 4:
            fields.append(("pad", "u1", (4 - offset % 4,)))
        self.dtype = np.dtype(fields)
        rec = np.zeros(self.count, dtype=self.dtype)
        rec["geometry"] = geom.astype(np.float32)
        for i, p in enumerate(props):
            rec[f"p{i}"] = p.values
        self.records = rec
        # relationships
        self.relationships: list[tuple[str, np.ndarray]] = []  # (id, segment per row, 0 = none)
        if schema.name == "synapse":
            rel_points = [("pre_segment", "pre_pt"), ("post_segment", "post_pt")]
        elif len(schema.points) == 1:
            rel_points = [("segment", schema.points[0])]
        else:
            rel_points = [(f"{p}_segment", p) for p in schema.points]
        for rid, p in rel_points:
            seg = np.zeros(self.count, dtype=np.uint64)
            for c in (f"{p}_supervoxel_id", f"{p}_root_id"):  # root id wins when known
                v = rows.column(c)
                ok = ~np.asarray(v.is_null())
                seg[ok] = v.to_numpy(zero_copy_only=False)[ok].astype(np.uint64)
            if (seg != 0).any():
                self.relationships.append((rid, seg))
        self._rel_index = []
        for rid, seg in self.relationships:
            nz = np.flatnonzero(seg)
            o = nz[np.argsort(seg[nz], kind="stable")]
            self._rel_index.append((rid, seg[o], o))
        # spatial index
        pts = geom[:, :3]
        if self.count:
            lo = np.floor(np.minimum(pts, geom[:, 3:] if geom.shape[1] == 6 else pts).min(axis=0))
            hi = np.floor(np.maximum(pts, geom[:, 3:] if geom.shape[1] == 6 else pts).max(axis=0)) + 1
        else:
            lo, hi = np.zeros(3), np.ones(3)
        self.lower_bound, self.upper_bound = lo, hi
        grid = np.ones(3, dtype=np.int64)
        res = np.array(table.voxel_size_nm)
        while self.count / grid.prod() > cell_target and grid.prod() * 2 <= max_cells:
            ext_nm = (hi - lo) * res / grid
            a = int(np.argmax(ext_nm))
            if (hi - lo)[a] / grid[a] < 2:
                break
            grid[a] *= 2
        self.grid = grid
        self.chunk = (hi - lo) / grid
        cell = np.clip(np.floor((pts - lo) / self.chunk).astype(np.int64), 0, grid - 1) if self.count else \
            np.zeros((0, 3), dtype=np.int64)
        flat = (cell[:, 0] * grid[1] + cell[:, 1]) * grid[2] + cell[:, 2]
        self._cell_order = np.argsort(flat, kind="stable")
        self._cell_flat = flat[self._cell_order]
        self.limit = int(np.bincount(flat).max()) if self.count else 1

    def info(self) -> dict[str, Any]:
        rx, ry, rz = self.table.voxel_size_nm
        return {
            "@type": "neuroglancer_annotations_v1",
            "dimensions": {"x": [rx * 1e-9, "m"], "y": [ry * 1e-9, "m"], "z": [rz * 1e-9, "m"]},
            "lower_bound": self.lower_bound.tolist(),
            "upper_bound": self.upper_bound.tolist(),
            "annotation_type": self.annotation_type,
            "properties": [p.spec() for p in self.props],
            "relationships": [{"id": rid, "key": f"rel_{rid}"} for rid, _ in self.relationships],
            "by_id": {"key": "by_id"},
            "spatial": [{"key": "spatial0", "grid_shape": self.grid.tolist(), "chunk_size": self.chunk.tolist(),
                         "limit": self.limit}],
        }

    def _multi(self, rows: np.ndarray) -> bytes:
        rows = np.sort(rows)
        return (np.array([len(rows)], "<u8").tobytes() + self.records[rows].tobytes()
                + self.ids[rows].astype("<u8").tobytes())

    def by_id(self, ann_id: int) -> bytes | None:
        i = int(np.searchsorted(self.ids, np.uint64(ann_id)))
        if i >= self.count or self.ids[i] != np.uint64(ann_id):
            return None
        out = [self.records[i:i + 1].tobytes()]
        for _, seg in self.relationships:
            s = seg[i]
            out.append(np.array([1 if s else 0], "<u4").tobytes())
            if s:
                out.append(np.array([s], "<u8").tobytes())
        return b"".join(out)

    def related(self, relationship: str, segment: int) -> bytes | None:
        for rid, segs, order in self._rel_index:
            if rid == relationship:
                a, b = np.searchsorted(segs, np.uint64(segment), "left"), np.searchsorted(segs, np.uint64(segment),
                                                                                          "right")
                return self._multi(order[a:b]) if b > a else None
        return None

    def spatial(self, i: int, j: int, k: int) -> bytes | None:
        g = self.grid
        if not (0 <= i < g[0] and 0 <= j < g[1] and 0 <= k < g[2]):
            return None
        flat = (i * g[1] + j) * g[2] + k
        a, b = np.searchsorted(self._cell_flat, flat, "left"), np.searchsorted(self._cell_flat, flat, "right")
        return self._multi(self._cell_order[a:b]) if b > a else None

    def get(self, key: str) -> bytes | None:
        """Bytes of the file ``key`` (``info`` is JSON), or None if it does not exist."""
        import json

        key = key.strip("/")
        if key == "info":
            return json.dumps(self.info()).encode()
        head, _, tail = key.partition("/")
        if not tail or "/" in tail:
            return None
        if head == "by_id":
            return self.by_id(int(tail)) if tail.isdigit() else None
        if head.startswith("rel_"):
            return self.related(head[4:], int(tail)) if tail.isdigit() else None
        if head == "spatial0":
            parts = tail.split("_")
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                return self.spatial(*(int(p) for p in parts))
        return None


MAX_ROWS = 5_000_000  # built in memory: beyond this, refuse rather than exhaust the server's memory


def precomputed(table: Any) -> PrecomputedAnnotations:
    """The precomputed annotations of ``table``'s current state (cached per Delta version).

    Raises TooLarge when the table has more than :data:`MAX_ROWS` valid rows (the index is built in
    memory; sharded, precomputed-on-write output is not implemented)."""
    _cache = table.lake.state("annotations.precomputed", dict)  # (path, Delta version) -> index
    key = (str(table.path), table.version)
    got = _cache.get(key)
    if got is None:
        n = table.count()
        if n > MAX_ROWS:
            from neurolake.errors import TooLarge

            raise TooLarge(f"table {table.name!r} has {n} rows; precomputed annotations are built in memory for "
                           f"at most {MAX_ROWS} rows", table=table.name, rows=n, limit=MAX_ROWS)
        got = PrecomputedAnnotations(table)
        for k in [k for k in _cache if k[0] == key[0]]:
            _cache.pop(k, None)
        if len(_cache) > 8:
            _cache.pop(next(iter(_cache)))
        _cache[key] = got
    return got


def viewer_layers(lake: Any, datastack: str, origin: str) -> list[dict[str, Any]]:
    """Neuroglancer ``annotation`` layers (JSON state) for every table of ``datastack`` served from
    ``origin`` (e.g. ``http://127.0.0.1:8000``): source
    ``precomputed://{origin}/precomputed/{ds}/annotations/{table}``, relationships linked to the
    table's segmentation layer."""
    from neurolake.annotations.table import get_table, list_tables

    out = []
    for name in list_tables(lake, datastack):
        t = get_table(lake, datastack, name)
        entry: dict[str, Any] = {
            "type": "annotation", "name": name,
            "source": f"precomputed://{origin.rstrip('/')}/precomputed/{datastack}/annotations/{name}",
            "annotationColor": "#ff00ff" if t.schema.name == "synapse" else "#00ffff",
        }
        if t.segmentation_layer:
            rels = ["pre_segment", "post_segment"] if t.schema.name == "synapse" else (
                ["segment"] if len(t.schema.points) == 1 else [f"{p}_segment" for p in t.schema.points])
            entry["linkedSegmentationLayer"] = {r: t.segmentation_layer for r in rels}
        out.append(entry)
    return out
