"""Where skeletons live and how they are read: the precomputed skeleton files, SWC, and the skeleton table.

Layout, under the segmentation layer's folder (``<lake>/datastacks/<ds>/volumes/<layer>/``)::

    skeletons/info              Neuroglancer precomputed skeleton info (``neuroglancer_skeletons``)
    skeletons/<segment id>      one skeleton per segment id, precomputed skeleton encoding (unsharded)
    skeletons/provenance.json   how they were made: derivation key, parameters, kimimaro version, code, user, time
    skeleton_table/             the skeleton table (Delta Lake): one row per skeleton, one Delta version per build

On a lake on object storage the same layout lives under the layer's ``s3://`` prefix (one object per file).

Format reference: the Neuroglancer precomputed skeleton spec
(https://github.com/google/neuroglancer/blob/master/src/datasource/precomputed/skeletons.md) as written and
read by cloud-volume / osteoid (``osteoid.formats.precomputed``): little-endian ``uint32`` vertex count and
edge count, vertices ``float32`` (x, y, z) in **nanometres** (the info's ``transform`` is the identity), edges
``uint32`` vertex-index pairs, then one array per vertex attribute in the order of the info's
``vertex_attributes``: ``radius`` (``float32``, nm: kimimaro's distance to the segment boundary) and
``vertex_types`` (``uint8``, SWC node types; 0 = undefined). Files are stored uncompressed.

SWC (Cannon et al. 1998, as written by osteoid's ``Skeleton.to_swc``): one line per vertex
``id type x y z radius parent`` in nm; one tree per connected component.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import CorruptData, InvalidArgument, NotFound
from neurolake.storage.config import is_s3, storage_config

SKELETON_DIR = "skeletons"
TABLE_DIR = "skeleton_table"
PROVENANCE = "provenance.json"
VERTEX_ATTRIBUTES = [
    {"id": "radius", "data_type": "float32", "num_components": 1},
    {"id": "vertex_types", "data_type": "uint8", "num_components": 1},
]
MAX_ID = 2**64 - 1

# The skeleton table: (name, Arrow type, description) — docs/skeletons.md lists the same columns.
COLUMNS = [
    ("segment_id", "uint64", "segment id in the layer"),
    ("n_vertices", "int64", "skeleton vertices"),
    ("n_edges", "int64", "skeleton edges"),
    ("cable_length_nm", "float64", "summed edge length, nm"),
    ("n_branch_points", "int64", "vertices with three or more edges"),
    ("n_end_points", "int64", "vertices with one edge"),
    ("n_components", "int64", "connected pieces of the skeleton"),
    ("mean_radius_nm", "float64", "mean vertex radius, nm"),
    ("max_radius_nm", "float64", "largest vertex radius, nm"),
    ("voxels", "int64", "voxels of the segment at the skeletonized mip"),
    ("mip", "int64", "mip the skeleton was computed at"),
]


def table_schema():
    """The Arrow schema of the skeleton table (:data:`COLUMNS`)."""
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t, _ in COLUMNS])


# -- paths ----------------------------------------------------------------------------------------
def skeleton_dir(layer) -> Path | Any:
    """``<layer folder>/skeletons``: the precomputed skeleton files of ``layer`` (a Layer); a ``upath.UPath`` on
    a lake on object storage."""
    return layer.root / SKELETON_DIR


def table_path(layer) -> Path | Any:
    """``<layer folder>/skeleton_table``: the Delta table of skeleton statistics (Path, or UPath for ``s3://``)."""
    return layer.root / TABLE_DIR


def delta_options(path: Any) -> dict[str, str] | None:
    """delta-rs ``storage_options`` of a table at ``path`` (None for a local folder)."""
    return storage_config().delta_options(path) or None


def has_delta(path: Any) -> bool:
    """Whether a Delta table exists at ``path`` (its ``_delta_log`` folder or prefix)."""
    if is_s3(path):
        try:
            return bool(path.fs.ls(f"{path.path}/_delta_log", detail=False, refresh=True))
        except (FileNotFoundError, NotADirectoryError):
            return False
    return (Path(path) / "_delta_log").is_dir()


def has_skeletons(layer) -> bool:
    """True when ``layer`` has built skeletons (its ``skeletons/info`` exists). One ``stat``."""
    return (skeleton_dir(layer) / "info").is_file()


def seg_layer(lake, datastack: str, layer: str):
    """The Layer ``datastack/layer``; raises NotFound (unknown), InvalidArgument (not a segmentation)."""
    la = lake.layer(datastack, layer)
    if la.layer_type != "segmentation":
        raise InvalidArgument(f"{datastack}/{layer} is an {la.layer_type} layer; skeletons are made of "
                              "segmentation layers", field="layer", value=layer)
    return la


def _require(layer) -> Path:
    d = skeleton_dir(layer)
    if not (d / "info").is_file():
        raise NotFound(f"{layer.datastack}/{layer.name} has no skeletons; build them with `neurolake skeleton "
                       f"build -d {layer.datastack} -l {layer.name}`", datastack=layer.datastack, layer=layer.name)
    return d


# -- info and provenance --------------------------------------------------------------------------
def info_doc(mip: int) -> dict[str, Any]:
    """The precomputed skeleton ``info`` written by a build at ``mip`` (vertices in nm: identity transform)."""
    return {"@type": "neuroglancer_skeletons", "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
            "vertex_attributes": VERTEX_ATTRIBUTES, "mip": mip, "spatial_index": None}


def read_info(layer) -> dict[str, Any]:
    """The skeleton ``info`` JSON of ``layer``. Raises NotFound when it has no skeletons."""
    return json.loads((_require(layer) / "info").read_text())


def read_provenance(layer) -> dict[str, Any] | None:
    """The provenance record of ``layer``'s skeletons (``skeletons/provenance.json``), or None."""
    p = skeleton_dir(layer) / PROVENANCE
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None


# -- one skeleton ---------------------------------------------------------------------------------
def check_segment_id(value: Any) -> int:
    """``value`` as a segment id (an integer 1 … 2**64-1). Raises InvalidArgument."""
    try:
        sid = int(str(value), 10)
    except (TypeError, ValueError):
        raise InvalidArgument(f"segment id {value!r} is not an integer", field="segment_id", value=value) from None
    if not 0 < sid <= MAX_ID:
        raise InvalidArgument(f"segment id {sid} is out of range (1 … 2**64-1)", field="segment_id", value=sid)
    return sid


def skeleton_bytes(layer, segment_id: Any) -> bytes:
    """The stored precomputed skeleton of ``segment_id`` (encoding: module doc). Raises NotFound (no skeletons,
    or none for this id: segments smaller than the build's ``dust_threshold`` have none), InvalidArgument."""
    sid = check_segment_id(segment_id)
    d = _require(layer)
    try:
        return (d / str(sid)).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"segment {sid} of {layer.datastack}/{layer.name} has no skeleton (not in the layer, or "
                       "smaller than the dust threshold)", segment_id=sid) from None


def decode(buf: bytes, segment_id: int):
    """An ``osteoid.Skeleton`` (cloud-volume's ``Skeleton``) from precomputed bytes; vertices and radii in nm.
    Raises CorruptData when the bytes do not decode."""
    from osteoid import Skeleton

    try:
        return Skeleton.from_precomputed(buf, segid=int(segment_id), vertex_attributes=VERTEX_ATTRIBUTES)
    except Exception as exc:  # noqa: BLE001 - osteoid raises its own decode errors
        raise CorruptData(f"skeleton {segment_id} does not decode: {exc}", segment_id=int(segment_id)) from exc


def get_skeleton(layer, segment_id: Any):
    """The skeleton of ``segment_id`` as an ``osteoid.Skeleton``: ``vertices`` (N, 3) float32 x, y, z in nm,
    ``edges`` (M, 2) uint32, ``radius`` (N,) float32 nm, ``vertex_types`` (N,) uint8. Raises NotFound."""
    sid = check_segment_id(segment_id)
    return decode(skeleton_bytes(layer, sid), sid)


def to_swc(layer, segment_id: Any) -> str:
    """The skeleton of ``segment_id`` as SWC text (module doc; coordinates and radii in nm). Raises NotFound."""
    skel = get_skeleton(layer, segment_id)
    return skel.to_swc(contributors=f"neurolake {layer.datastack}/{layer.name}")


def stats(skel) -> dict[str, Any]:
    """Table row values of one ``osteoid.Skeleton`` (nm): vertices, edges, cable length, branch points (degree
    ≥ 3), end points (degree 1), connected components, mean and max radius."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(skel.vertices)
    edges = np.asarray(skel.edges, dtype=np.int64).reshape(-1, 2)
    deg = np.bincount(edges.ravel(), minlength=n) if n else np.zeros(0, np.int64)
    if n:
        g = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
        ncomp = int(connected_components(g, directed=False)[0])
    else:
        ncomp = 0
    r = np.asarray(getattr(skel, "radius", np.zeros(0)), dtype=np.float64)
    return {"n_vertices": n, "n_edges": len(edges), "cable_length_nm": float(skel.cable_length()),
            "n_branch_points": int((deg >= 3).sum()), "n_end_points": int((deg == 1).sum()),
            "n_components": ncomp, "mean_radius_nm": float(r.mean()) if r.size else 0.0,
            "max_radius_nm": float(r.max()) if r.size else 0.0}


def list_ids(layer) -> list[int]:
    """Sorted segment ids that have a skeleton. Raises NotFound when the layer has none."""
    d = _require(layer)
    if is_s3(d):  # one LIST
        names = (k.rsplit("/", 1)[-1] for k in d.fs.ls(d.path, detail=False, refresh=True))
        return sorted(int(n) for n in names if n.isdigit())
    return sorted(int(e.name) for e in os.scandir(d) if e.name.isdigit())


# -- the table ------------------------------------------------------------------------------------
def table_version(layer) -> int | None:
    """The newest Delta version of ``layer``'s skeleton table, or None when there is none."""
    from deltalake import DeltaTable

    p = table_path(layer)
    if not has_delta(p):
        return None
    return int(DeltaTable(str(p), storage_options=delta_options(p)).version())


def read_table(layer, version: int | None = None):
    """The skeleton table of ``layer`` (a pyarrow Table, :data:`COLUMNS`) at Delta ``version`` (None: newest).
    Raises NotFound (no table, no such version)."""
    from deltalake import DeltaTable

    newest = table_version(layer)
    if newest is None:
        raise NotFound(f"{layer.datastack}/{layer.name} has no skeleton table; build skeletons first",
                       datastack=layer.datastack, layer=layer.name)
    if version is not None and not 0 <= int(version) <= newest:
        raise NotFound(f"skeleton table of {layer.datastack}/{layer.name}: Delta version {version} does not exist "
                       f"(versions 0–{newest})", field="version", value=version)
    p = table_path(layer)
    return DeltaTable(str(p), version=version, storage_options=delta_options(p)).to_pyarrow_table()


def write_table(layer, rows: list[dict[str, Any]], metadata: dict[str, str] | None = None) -> int:
    """Write ``rows`` as a new Delta version of the skeleton table (replacing the rows; older versions stay
    readable until vacuumed). Returns the new version. On object storage the caller holds the layer's skeleton
    lock (:func:`neurolake.skeletons.build.skeletonize_layer` does)."""
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake

    schema = table_schema()
    rows = sorted(rows, key=lambda r: r["segment_id"])
    tab = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    p = table_path(layer)
    write_deltalake(str(p), tab, mode="overwrite", schema_mode="overwrite", storage_options=delta_options(p),
                    commit_properties=CommitProperties(custom_metadata=metadata or {}))
    return int(table_version(layer))
