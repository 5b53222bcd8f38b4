"""neurolake's own HTTP API for proofreading, materialization versions and the connectome.

Under ``/api/v1/datastacks/{ds}/``:

- ``segment/watershed`` (POST: a supervoxel layer from a boundary map), ``segmentation`` (GET info,
  POST create), ``segmentation/merge``, ``segmentation/split``,
  ``segmentation/operations`` (log), ``segmentation/operations/{op}`` (+ ``/undo``, ``/redo``),
  ``segmentation/rollback``; lookups ``segmentation/roots`` (``?supervoxels=1,2&timestamp=``),
  ``segmentation/roots/{root}`` (info), ``…/leaves``, ``…/latest``, ``…/lineage``;
  ``segmentation/cutout/{x0}:{x1}/{y0}:{y1}/{z0}:{z1}`` (npz of root ids, axes z, y, x);
- ``versions`` (GET list, POST materialize), ``versions/{v}`` (GET, DELETE = expire),
  ``versions/{v}/tables/{table}`` (rows as JSON or Parquet), ``live/{table}`` (rows at a timestamp);
- ``/precomputed-roots/{ds}/{layer}[@T]/`` — the supervoxel layer as a Neuroglancer precomputed
  volume of root ids (now, or at time T = unix seconds / ISO): ``info`` and chunks
  (compressed_segmentation), for Neuroglancer, cloud-volume and tensorstore;
- ``connectome`` (summary), ``connectome/partners/{root}``, ``connectome/matrix``,
  ``connectome/motifs``, ``connectome/reciprocal``, ``connectome/degrees``, ``connectome/path``,
  ``connectome/edges.parquet``, ``connectome/graph.graphml``.

Edits name their author in the body (or the authenticated user / ``X-Neurolake-User``) and may give
the root ids they were based on (``roots``): stale roots are refused with 409 and the current roots.
Timestamps: ISO-8601 or unix seconds (UTC). Ids are JSON integers (uint64).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field

from neurolake.base.integers import parse_ids, parse_range
from neurolake.errors import InvalidArgument
from neurolake.lake import Lake
from neurolake.server import cutouts
from neurolake.server.access import Need
from neurolake.server.deps import author_of, check_readable, get_lake
from neurolake.server.models import (
    PARQUET,
    Also,
    ChunkBody,
    ConnectivityMatrix,
    ConnectomeSummary,
    Count,
    DegreeCount,
    EditResult,
    GraphMLBody,
    Id,
    IdKey,
    LayerInfo,
    Limit,
    LineageGraph,
    Mip,
    Motifs,
    NpzBody,
    Operation,
    ParquetBody,
    Partners,
    PrecomputedInfo,
    ReciprocalPair,
    RootInfo,
    RootLatest,
    RootLeaves,
    Row,
    SegmentationInfo,
    ShortestPath,
    SupervoxelRoots,
    VersionInfo,
)
from neurolake.server.routing import APIRouter

router = APIRouter(prefix="/api/v1/datastacks/{datastack}", tags=["proofreading"])


class CreateBody(BaseModel):
    layer: str | None = Field(None, description="supervoxel layer (segmentation) of the datastack")
    boundary_layer: str | None = Field(None, description="boundary map layer for edge affinities")
    agglomeration: str | None = Field(None, description="each | threshold | edges | mapping")
    threshold: float = 0.5
    mapping: dict[IdKey, Id] | None = Field(None, description="supervoxel id -> object id")
    overwrite: bool = False


class MergeBody(BaseModel):
    supervoxels: list[Id] = Field(..., description="two supervoxel ids")
    roots: list[Id] | None = Field(None, description="root ids the edit is based on (optimistic concurrency)")
    positions: list[list[float]] | None = Field(None, description="[[x, y, z], [x, y, z]] nm, recorded only")
    author: str | None = None


class SplitBody(BaseModel):
    sources: list[Id]
    sinks: list[Id]
    roots: list[Id] | None = None
    author: str | None = None


class UndoBody(BaseModel):
    author: str | None = None


class RollbackBody(BaseModel):
    user: str = Field(..., description="whose edits to revert")
    since: str = Field(..., description="ISO-8601 time or unix seconds")
    author: str | None = None


class WatershedBody(BaseModel):
    boundary_layer: str = Field(..., description="boundary map (image) or label layer")
    output: str = Field("supervoxels", description="name of the new supervoxel layer")
    boundary_values: list[Id] | None = Field(None, description="label values meaning boundary")
    threshold: float = 0.5
    min_distance: Annotated[int, Field(ge=1, le=1024)] = 8
    overwrite: bool = False


class MaterializeBody(BaseModel):
    timestamp: str | None = None
    tables: list[str] | None = None
    expires_in_days: float | None = None


def _int_list(text: str | None, field: str) -> list[int]:
    if not text:
        raise InvalidArgument(f"{field} is required (comma-separated ids)", field=field)
    return parse_ids(field, text)


# -- segmentation ----------------------------------------------------------------------------------
@router.get("/segmentation", access=Need.read(), summary="Proofreadable segmentation: info")
def seg_info(datastack: str, lake: Lake = Depends(get_lake)) -> SegmentationInfo:
    return lake.datastack(datastack).segmentation.info()


@router.post("/segmentation", access=Need.write(),
             status_code=201, summary="Make the datastack proofreadable")
def seg_create(datastack: str, body: CreateBody, request: Request, lake: Lake = Depends(get_lake)) -> SegmentationInfo:
    from neurolake.proofreading import create_segmentation

    mapping = {int(k): v for k, v in body.mapping.items()} if body.mapping else None
    seg = create_segmentation(lake, datastack, layer=body.layer, boundary_layer=body.boundary_layer,
                              agglomeration=body.agglomeration, threshold=body.threshold, mapping=mapping,
                              overwrite=body.overwrite, author=author_of(request))
    return seg.info()


@router.post("/segmentation/merge", access=Need.write(), summary="Merge the roots of two supervoxels")
def seg_merge(datastack: str, body: MergeBody, request: Request, lake: Lake = Depends(get_lake)) -> EditResult:
    if len(body.supervoxels) != 2:
        raise InvalidArgument(f"a merge needs exactly 2 supervoxels, got {len(body.supervoxels)}",
                              field="supervoxels", value=body.supervoxels)
    a, b = body.supervoxels
    seg = lake.datastack(datastack).segmentation
    return seg.merge(a, b, author=author_of(request, body.author), roots=body.roots, positions=body.positions)


@router.post("/segmentation/split", access=Need.write(),
             summary="Split a root by a minimum cut between sources and sinks")
def seg_split(datastack: str, body: SplitBody, request: Request, lake: Lake = Depends(get_lake)) -> EditResult:
    seg = lake.datastack(datastack).segmentation
    return seg.split(body.sources, body.sinks, author=author_of(request, body.author), roots=body.roots)


@router.get("/segmentation/operations", access=Need.read(), summary="The edit log")
def seg_operations(datastack: str, author: str | None = None, since: str | None = None, until: str | None = None,
                   root_id: Id | None = None, lake: Lake = Depends(get_lake)) -> list[Operation]:
    seg = lake.datastack(datastack).segmentation
    return seg.operations(author=author, since=since, until=until, root_id=root_id)


@router.get("/segmentation/operations/{operation_id}", access=Need.read(), summary="One operation")
def seg_operation(datastack: str, operation_id: Count, lake: Lake = Depends(get_lake)) -> Operation:
    return lake.datastack(datastack).segmentation.operation(operation_id)


@router.post("/segmentation/operations/{operation_id}/undo", access=Need.write(), summary="Undo an operation")
def seg_undo(datastack: str, operation_id: Count, request: Request, body: UndoBody | None = None,
             lake: Lake = Depends(get_lake)) -> EditResult:
    seg = lake.datastack(datastack).segmentation
    return seg.undo(operation_id, author=author_of(request, body.author if body else None))


@router.post("/segmentation/operations/{operation_id}/redo", access=Need.write(),
             summary="Redo an undone operation")
def seg_redo(datastack: str, operation_id: Count, request: Request, body: UndoBody | None = None,
             lake: Lake = Depends(get_lake)) -> EditResult:
    seg = lake.datastack(datastack).segmentation
    return seg.redo(operation_id, author=author_of(request, body.author if body else None))


@router.post("/segmentation/rollback", access=Need.write(),
             summary="Revert all edits of one user since a time")
def seg_rollback(datastack: str, body: RollbackBody, request: Request, lake: Lake = Depends(get_lake)) -> EditResult:
    seg = lake.datastack(datastack).segmentation
    return seg.rollback(body.user, body.since, author=author_of(request, body.author))


@router.get("/segmentation/roots", access=Need.read(), summary="Root ids of supervoxels at a timestamp")
def seg_roots(datastack: str, supervoxels: str, timestamp: str | None = None, lake: Lake = Depends(get_lake)) -> SupervoxelRoots:
    svs = _int_list(supervoxels, "supervoxels")
    roots = lake.datastack(datastack).segmentation.roots(svs, timestamp)
    return {"supervoxels": svs, "root_ids": [int(r) for r in roots], "timestamp": timestamp}


@router.get("/segmentation/roots/{root_id}", access=Need.read(),
            summary="Creation, expiry and lineage links of a root")
def seg_root(datastack: str, root_id: Id, lake: Lake = Depends(get_lake)) -> RootInfo:
    return lake.datastack(datastack).segmentation.root_info(root_id)


@router.get("/segmentation/roots/{root_id}/leaves", access=Need.read(), summary="Supervoxels of a root")
def seg_leaves(datastack: str, root_id: Id, bounds: str | None = None, lake: Lake = Depends(get_lake)) -> RootLeaves:
    from neurolake.server.cave import _bounds

    leaves = lake.datastack(datastack).segmentation.leaves(root_id, _bounds(bounds))
    return {"root_id": root_id, "leaf_ids": [int(x) for x in leaves]}


@router.get("/segmentation/roots/{root_id}/latest", access=Need.read(),
            summary="Current roots descending from a root")
def seg_latest(datastack: str, root_id: Id, timestamp: str | None = None, lake: Lake = Depends(get_lake)) -> RootLatest:
    seg = lake.datastack(datastack).segmentation
    return {"root_id": root_id, "is_latest": bool(seg.is_latest([root_id])[0]),
            "latest_roots": [int(r) for r in seg.latest_roots(root_id, timestamp)]}


@router.get("/segmentation/roots/{root_id}/lineage", access=Need.read(),
            summary="Lineage graph (networkx node-link JSON)")
def seg_lineage(datastack: str, root_id: Id, timestamp_past: str | None = None, timestamp_future: str | None = None,
                lake: Lake = Depends(get_lake)) -> LineageGraph:
    return lake.datastack(datastack).segmentation.lineage([root_id], timestamp_past, timestamp_future)


@router.get("/segmentation/cutout/{x}/{y}/{z}", access=Need.read(),
            summary="Cutout of root ids at a timestamp (npz, axes z, y, x)")
def seg_cutout(datastack: str, x: str, y: str, z: str, request: Request, mip: Mip = 0, timestamp: str | None = None,
               lake: Lake = Depends(get_lake)) -> NpzBody:
    sv_layer = lake.datastack(datastack).segmentation.info()["layer"] or ""
    la = cutouts.layer_of(request, datastack, sv_layer)
    arr = cutouts.read(request, la, parse_range("x", x), parse_range("y", y), parse_range("z", z), mip,
                       roots=True, timestamp=timestamp)
    return cutouts.response(arr, "npz", media_type="application/npz")


@router.post("/segment/watershed", access=Need.write(), status_code=201,
             summary="Supervoxels by per-section seeded watershed of a boundary map (runs to completion)")
def seg_watershed(datastack: str, body: WatershedBody, lake: Lake = Depends(get_lake)) -> LayerInfo:
    from neurolake.segment import watershed_layer

    la = watershed_layer(lake, datastack, body.boundary_layer, body.output, boundary_values=body.boundary_values,
                         threshold=body.threshold, min_distance=body.min_distance, overwrite=body.overwrite)
    return la.info()


# -- materialization -------------------------------------------------------------------------------
@router.get("/versions", access=Need.read(), summary="Materialization versions")
def mat_versions(datastack: str, expired: bool = False, lake: Lake = Depends(get_lake)) -> list[VersionInfo]:
    from neurolake.materialize import versions

    return versions(lake, datastack, expired=expired)


@router.post("/versions", access=Need.write(), status_code=201, summary="Materialize a new version")
def mat_create(datastack: str, request: Request, body: MaterializeBody | None = None,
               lake: Lake = Depends(get_lake)) -> VersionInfo:
    from neurolake.materialize import materialize

    b = body or MaterializeBody()
    return materialize(lake, datastack, timestamp=b.timestamp, tables=b.tables, expires_in=b.expires_in_days,
                       author=author_of(request))


@router.get("/versions/{version}", access=Need.read(), summary="One materialization version")
def mat_get(datastack: str, version: Count, lake: Lake = Depends(get_lake)) -> VersionInfo:
    from neurolake.materialize import get_version

    return get_version(lake, datastack, version)


@router.delete("/versions/{version}", access=Need.write(),
               summary="Expire a version (never the newest valid one; one pinned by production query runs: "
                       "409 naming the runs, unless force=true)")
def mat_expire(datastack: str, version: Count, force: bool = False, lake: Lake = Depends(get_lake)) -> VersionInfo:
    from neurolake.materialize import expire

    return expire(lake, datastack, version, force=force)


def _rows(tab, fmt: str) -> Response:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(tab, buf)
        return Response(buf.getvalue(), media_type="application/vnd.apache.parquet")
    if fmt != "json":
        raise InvalidArgument(f"format {fmt!r} must be json or parquet", field="format", allowed=["json", "parquet"])
    import json

    rows = tab.to_pylist()
    return Response(json.dumps(rows, default=str), media_type="application/json")


def _table_readable(request: Request, datastack: str, table: str, lake: Lake = Depends(get_lake)) -> None:
    check_readable(request, lake, datastack, table)


def _tables_readable(request: Request, datastack: str, synapse_table: str = "synapses",
                     cell_type_table: str | None = None, lake: Lake = Depends(get_lake)) -> None:
    check_readable(request, lake, datastack, synapse_table, cell_type_table)


@router.get("/versions/{version}/tables/{table}", access=Need.read(),
            summary="Rows of a table in a version (json or parquet)",
            dependencies=[Depends(_table_readable)])
def mat_query(datastack: str, version: Count, table: str, format: str = "json", root_id: Id | None = None,
              limit: Limit | None = None, offset: Count = 0, lake: Lake = Depends(get_lake)) -> Annotated[list[Row], Also(PARQUET)]:
    from neurolake.materialize import query_version

    filt = None
    if root_id is not None:
        from neurolake.materialize.versions import root_columns

        cols = root_columns(lake, datastack, version, table)
        tabs = [query_version(lake, datastack, version, table, filter_in={c: [root_id]}).arrow() for c in cols]
        import pyarrow as pa

        tab = pa.concat_tables(tabs) if tabs else query_version(lake, datastack, version, table, limit=0).arrow()
        return _rows(tab.slice(offset, limit), format)
    tab = query_version(lake, datastack, version, table, filter_in=filt, offset=offset, limit=limit).arrow()
    return _rows(tab, format)


@router.get("/live/{table}", access=Need.read(),
            summary="Rows of an annotation table at a timestamp, bound to roots",
            dependencies=[Depends(_table_readable)])
def mat_live(datastack: str, table: str, timestamp: str | None = None, format: str = "json", limit: Limit | None = None,
             offset: Count = 0, lake: Lake = Depends(get_lake)) -> Annotated[list[Row], Also(PARQUET)]:
    from neurolake.materialize import live_query

    return _rows(live_query(lake, datastack, table, timestamp, offset=offset, limit=limit).arrow(), format)


# -- connectome ------------------------------------------------------------------------------------
def _connectome(lake, ds, version, synapse_table, cell_type_table):
    from neurolake.connectome import Connectome

    return Connectome.from_version(lake, ds, version, synapse_table, cell_type_table=cell_type_table)


def _c(datastack: str, lake: Lake, version: Count | None, synapse_table: str, cell_type_table: str | None):
    return _connectome(lake, datastack, version, synapse_table, cell_type_table)


@router.get("/connectome", access=Need.read(),
            summary="Connectome summary at a version", dependencies=[Depends(_tables_readable)])
def con_summary(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
                cell_type_table: str | None = None, lake: Lake = Depends(get_lake)) -> ConnectomeSummary:
    return _c(datastack, lake, version, synapse_table, cell_type_table).summary()


@router.get("/connectome/partners/{root_id}", access=Need.read(),
            summary="Upstream and downstream partners of a root", dependencies=[Depends(_tables_readable)])
def con_partners(datastack: str, root_id: Id, synapse_table: str = "synapses", version: Count | None = None,
                 cell_type_table: str | None = None, min_synapses: Count = 1, lake: Lake = Depends(get_lake)) -> Partners:
    c = _c(datastack, lake, version, synapse_table, cell_type_table)
    up = c.upstream(root_id, min_synapses=min_synapses)
    down = c.downstream(root_id, min_synapses=min_synapses)
    return {"root_id": root_id, "upstream": _records(up), "downstream": _records(down), **c.meta}


def _records(result) -> list[dict]:
    import json

    return json.loads(result.df().to_json(orient="records"))


@router.get("/connectome/matrix", access=Need.read(), summary="Connectivity matrix grouped by a node attribute", dependencies=[Depends(_tables_readable)])
def con_matrix(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
               cell_type_table: str | None = None, group_by: str = "cell_type", weight: str = "n_synapses",
               lake: Lake = Depends(get_lake)) -> ConnectivityMatrix:
    m = _c(datastack, lake, version, synapse_table, cell_type_table).connectivity_matrix(group_by, weight)
    return {"rows": [str(i) for i in m.index], "columns": [str(c) for c in m.columns],
            "values": m.to_numpy().tolist(), "weight": weight}


@router.get("/connectome/motifs", access=Need.read(),
            summary="Triad census (3-node motif counts)", dependencies=[Depends(_tables_readable)])
def con_motifs(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
               min_synapses: Count = 1, lake: Lake = Depends(get_lake)) -> Motifs:
    return _c(datastack, lake, version, synapse_table, None).motifs(min_synapses)


@router.get("/connectome/reciprocal", access=Need.read(),
            summary="Reciprocally connected pairs", dependencies=[Depends(_tables_readable)])
def con_reciprocal(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
                   min_synapses: Count = 1, lake: Lake = Depends(get_lake)) -> list[ReciprocalPair]:
    return _records(_c(datastack, lake, version, synapse_table, None).reciprocal_pairs(min_synapses))


@router.get("/connectome/degrees", access=Need.read(),
            summary="Degree distribution", dependencies=[Depends(_tables_readable)])
def con_degrees(datastack: str, synapse_table: str = "synapses", version: Count | None = None, direction: str = "out",
                lake: Lake = Depends(get_lake)) -> list[DegreeCount]:
    return _records(_c(datastack, lake, version, synapse_table, None).degree_distribution(direction))


@router.get("/connectome/path", access=Need.read(),
            summary="Shortest directed path between two roots", dependencies=[Depends(_tables_readable)])
def con_path(datastack: str, source: Id, target: Id, synapse_table: str = "synapses", version: Count | None = None,
             weighted: bool = False, lake: Lake = Depends(get_lake)) -> ShortestPath:
    p = _c(datastack, lake, version, synapse_table, None).shortest_path(source, target, weighted=weighted)
    return {"source": source, "target": target, "path": [int(x) for x in p]}


@router.get("/connectome/edges.parquet", access=Need.read(),
            summary="Edge list as Parquet", dependencies=[Depends(_tables_readable)])
def con_parquet(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
                lake: Lake = Depends(get_lake)) -> ParquetBody:
    c = _c(datastack, lake, version, synapse_table, None)
    with tempfile.TemporaryDirectory() as d:
        p = c.to_parquet(Path(d) / "edges.parquet")
        return Response(p.read_bytes(), media_type="application/vnd.apache.parquet")


@router.get("/connectome/graph.graphml", access=Need.read(),
            summary="Graph as GraphML", dependencies=[Depends(_tables_readable)])
def con_graphml(datastack: str, synapse_table: str = "synapses", version: Count | None = None,
                cell_type_table: str | None = None, lake: Lake = Depends(get_lake)) -> GraphMLBody:
    c = _c(datastack, lake, version, synapse_table, cell_type_table)
    with tempfile.TemporaryDirectory() as d:
        p = c.to_graphml(Path(d) / "graph.graphml")
        return Response(p.read_bytes(), media_type="application/graphml+xml")



# -- precomputed volumes of root ids ---------------------------------------------------------------
roots_router = APIRouter(prefix="/precomputed-roots", tags=["proofreading"])
_GET = ["GET", "HEAD"]


@roots_router.api_route("/{datastack}/{layer}/info", access=Need.read(), methods=_GET,
                        summary="precomputed info of the supervoxel layer as root ids (layer or layer@T)")
def roots_info(datastack: str, layer: str, request: Request, lake: Lake = Depends(get_lake)) -> PrecomputedInfo:
    la, _ = cutouts.roots_layer(request, datastack, layer)
    return cutouts.precomputed_info(request, la, roots=True)


@roots_router.api_route("/{datastack}/{layer}/{key}/{chunk}", access=Need.read(), methods=_GET,
                        summary="precomputed chunk of root ids (compressed_segmentation)")
def roots_chunk(datastack: str, layer: str, key: str, chunk: str, request: Request,
                lake: Lake = Depends(get_lake)) -> ChunkBody:
    la, ts = cutouts.roots_layer(request, datastack, layer)
    return cutouts.precomputed_chunk(request, la, key, chunk, roots=True, timestamp=ts)
