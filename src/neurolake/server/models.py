"""Response models of the HTTP API: what every JSON route returns, for ``/openapi.json`` and ``/docs``.

Handlers name their model in their return annotation (``def get_layer(...) -> LayerInfo``); FastAPI
then validates and serialises the answer through it. Every model allows extra fields
(``model_config = ConfigDict(extra="allow")``): payloads built elsewhere (catalog rows, library dicts)
and client-defined protocols (CAVE, BossDB, Neuroglancer) may grow fields, which pass through.

Routes whose body is not JSON (npz, blosc, PNG, Parquet, Arrow, precomputed chunks) are annotated with
one of the :class:`Body` response classes below (or with ``Annotated[Model, Also(media, ...)]`` when
they answer JSON or another format); :func:`response_options`, called by the server's ``APIRouter`` for
every route, turns those annotations into the route's OpenAPI media types. Answers are serialised with
``response_model_exclude_unset``: a field a handler did not return is not added (optional fields have
defaults only so that the model validates without them).

Conventions: coordinates and sizes are x, y, z (voxels unless the field says nm); arrays are (z, y, x)
where a field says ``zyx``; timestamps are ISO-8601 UTC text unless the field says unix seconds; ids are
JSON integers (uint64).
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any, ClassVar, get_args, get_origin

from annotated_types import Interval
from fastapi import Response
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.responses import RedirectResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
)

# A JSON number that keeps ints as ints (pydantic's float would turn 4 into 4.0 in the answer).
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
XYZ = Annotated[list[Number], Field(min_length=3, max_length=3)]
IntXYZ = Annotated[list[int], Field(min_length=3, max_length=3)]
IntZYX = Annotated[list[int], Field(min_length=3, max_length=3)]


class Model(BaseModel):
    """Base of every response model. Extra fields pass through (``extra="allow"``): an answer never loses a
    field its handler returned, also when a library dict or a client protocol grows one."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# =================================================================================================
# Non-JSON bodies: response classes that name their media types (see response_options)
# =================================================================================================
BINARY = {"type": "string", "format": "binary"}
PARQUET = "application/vnd.apache.parquet"


class Body(Response):
    """A binary (or text) body, documented by its media types instead of a JSON schema.

    Handlers annotated ``-> SomeBody`` may return any :class:`Response`; the annotation only documents it.
    """

    media_type = "application/octet-stream"
    media_types: ClassVar[tuple[str, ...]] = ("application/octet-stream",)
    description: ClassVar[str] = "binary body"


class OctetStream(Body):
    description = "raw bytes"


class ChunkBody(Body):
    media_types = ("application/octet-stream", "image/jpeg")
    description = "one encoded precomputed chunk (raw, compressed_segmentation or JPEG)"


class ZarrKey(Body):
    media_types = ("application/json", "application/octet-stream")
    description = "a key of the stored OME-Zarr v3 hierarchy: zarr.json metadata or an encoded chunk/shard"


class CutoutBody(Body):
    media_types = ("application/npz", "application/blosc", "application/octet-stream", "image/tiff", "image/png")
    description = ("the cutout, C-order (z, y, x): npz, blosc, raw (X-Neurolake-Dtype / X-Neurolake-Shape headers) "
                   "or tiff; a plane (xy, xz, yz) as PNG")


class NpzBody(Body):
    media_type = "application/npz"
    media_types = ("application/npz",)
    description = "numpy .npz holding one uint64 array, axes (z, y, x) (headers X-Neurolake-Shape, -Dtype, -Axes)"


class BloscBody(Body):
    media_type = "application/blosc"
    media_types = ("application/blosc",)
    description = "blosc-1 frame of the C-order (z, y, x) array (BossDB)"


class TileBody(Body):
    media_type = "image/png"
    media_types = ("image/png", "image/jpeg")
    description = "a 512 x 512 tile image"


class ParquetBody(Body):
    media_type = PARQUET
    media_types = (PARQUET,)
    description = "Parquet file"


class HtmlPageBody(Body):
    media_type = "text/html"
    media_types = ("text/html",)
    description = "a self-contained HTML page (Plotly figure with plotly.js inlined: works offline)"


class GraphMLBody(Body):
    media_type = "application/graphml+xml"
    media_types = ("application/graphml+xml",)
    description = "GraphML document"


class CaveArrowBody(Body):
    media_type = "data.arrow"
    media_types = ("data.arrow",)
    description = ("Arrow IPC stream (zstd) of the rows, as caveclient expects; header column_names (JSON list) and, "
                   "with desired_resolution, dataframe_resolution (x, y, z nm)")


class Created(Response):
    """201 with an empty body."""

    media_type = None


class _Described(Response):
    """Response class of documented :class:`Body` routes in OpenAPI: no default JSON content."""

    media_type = None


class Also:
    """``Annotated[Model, Also("application/vnd.apache.parquet")]``: the route answers the model as JSON or,
    on request, a body in one of these media types."""

    def __init__(self, *media_types: str, description: str = "") -> None:
        self.media_types = media_types
        self.description = description


def response_options(endpoint: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``APIRouter.add_api_route`` for ``endpoint``, completed (called by
    :class:`neurolake.server.routing.APIRouter` for every route):

    - ``response_model_exclude_unset=True``: the answer carries the fields the handler returned (a model
      never adds its defaults; extra fields pass through);

    and from its return annotation:

    - a :class:`Body` class: ``response_class`` without a JSON default and ``responses`` listing its media
      types (``type: string, format: binary``) with its description;
    - :class:`Created` / ``RedirectResponse``: no body (a redirect also lists 307);
    - ``Annotated[Model, Also(media, ...)]``: the model's JSON schema plus those media types.

    Keyword arguments given on the decorator win. Handlers of such routes return :class:`Response`
    objects, which FastAPI passes through unchanged: only the OpenAPI description changes."""
    kw.setdefault("response_model_exclude_unset", True)
    ann = get_typed_return_annotation(endpoint)  # as FastAPI resolves it (string annotations too)
    status = kw.get("status_code") or 200
    responses = dict(kw.get("responses") or {})
    if inspect.isclass(ann) and issubclass(ann, Body):
        kw.setdefault("response_class", _Described)  # no default JSON content; the media types follow
        responses.setdefault(status, {"description": ann.description,
                                      "content": {m: {"schema": BINARY} for m in ann.media_types}})
    elif inspect.isclass(ann) and issubclass(ann, Created | RedirectResponse):
        kw.setdefault("response_class", _Described)
        if issubclass(ann, RedirectResponse):
            responses.setdefault(307, {"description": "redirect (Location header)"})
    elif get_origin(ann) is Annotated:
        for extra in get_args(ann)[1:]:
            if isinstance(extra, Also):
                prev = dict(responses.get(status, {}))
                prev["content"] = {**prev.get("content", {}), **{m: {"schema": BINARY} for m in extra.media_types}}
                if extra.description:
                    prev.setdefault("description", extra.description)
                responses[status] = prev
    if responses:
        kw["responses"] = responses
    return kw


# =================================================================================================
# Request parameters: whole numbers checked at the edge (path, query and body fields)
# =================================================================================================
INT64_MAX = 2**63 - 1  # catalog integers (SQLite / PostgreSQL BIGINT)
UINT64_MAX = 2**64 - 1  # segment, supervoxel and root ids
_ASCII_INT = re.compile(r"-?[0-9]{1,20}")


def _ascii_int(value: Any) -> Any:
    """Refuse what Python's ``int()`` / pydantic's lax mode would take but no client means as a number:
    other Unicode digits ("١٢"), underscores ("1_0"), spaces (" 10"), "+5", "1.0" in a URL, and booleans."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, str) and not _ASCII_INT.fullmatch(value):
        raise ValueError("must be a whole number in ASCII digits (an optional leading minus)")
    return value


AsciiInt = Annotated[int, BeforeValidator(_ascii_int)]  # constraints go BEFORE the validator (JSON schema)
Id = Annotated[int, Interval(ge=0, le=UINT64_MAX), BeforeValidator(_ascii_int)]  # uint64 segment / root id
Count = Annotated[int, Interval(ge=0, le=INT64_MAX), BeforeValidator(_ascii_int)]  # offsets, versions, op ids
Limit = Annotated[int, Interval(ge=1, le=INT64_MAX), BeforeValidator(_ascii_int)]  # at least one row
Mip = Annotated[int, Interval(ge=0, le=63), BeforeValidator(_ascii_int)]  # a resolution level
IdKey = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]  # an id as a JSON object key


# =================================================================================================
# Error bodies: every route declares the error statuses it can answer (see error_responses)
# =================================================================================================
class ErrorBody(BaseModel):
    """The body of every error answer (``neurolake.errors.NeurolakeError.to_dict``; request validation
    errors are ``invalid_argument`` with ``detail.errors`` = [{field, message}])."""

    error: str = Field(description="machine-readable code, e.g. invalid_argument, not_found, version_expired")
    message: str = Field(description="what is wrong, naming the field, the value and what is allowed")
    detail: dict[str, Any] = Field(default_factory=dict, description="field, value, allowed, limit ...")


class BossError(BaseModel):
    """BossDB's error body (routes under ``/v1``)."""

    status: int = Field(description="the HTTP status")
    code: int = Field(description="BossDB error code, e.g. 1001 invalid cutout arguments, 4000 not found")
    message: str


ERROR_STATUSES = {
    400: "invalid argument: a malformed or out-of-range parameter or body (the message names the field)",
    401: "no valid API token (servers started with --auth)",
    403: "the token's user lacks the role this route needs",
    404: "an unknown datastack, layer, table, version, id or route",
    409: "conflict: the state changed, the name is taken, or the resource is not ready",
    410: "the materialization version was expired (its data are gone)",
    413: "the request or its answer exceeds a size limit",
    422: "an uploaded body cannot be decoded",
    429: "a usage quota is exhausted",
}


def error_responses(model: type[BaseModel] = ErrorBody) -> dict[int, dict[str, Any]]:
    """``responses=`` entries of the error statuses every route can answer, with body ``model``."""
    return {status: {"model": model, "description": text} for status, text in ERROR_STATUSES.items()}


# =================================================================================================
# neurolake: datastacks and layers (/api/v1/datastacks)
# =================================================================================================
class LayerSummary(Model):
    name: str
    type: str = Field(description="image or segmentation")
    dtype: str = Field(description="numpy dtype of the voxels, e.g. uint8, uint32")
    status: str = Field(description="ready, or the state of an unfinished ingest")


class DatastackSummary(Model):
    name: str
    description: str | None = Field(description="free text")
    voxel_size_nm: XYZ | None = Field(description="mip-0 voxel size in nm, x, y, z")
    public: bool = Field(description="readable by every authenticated user")
    created: str | None = Field(description="ISO-8601 UTC")


class DatastackInfo(DatastackSummary):
    layers: list[LayerSummary] = Field(description="volume layers, sorted by name")


class MipInfo(Model):
    mip: int = Field(description="resolution level, 0 = full resolution")
    size_xyz: IntXYZ = Field(description="size in voxels at this mip, x, y, z")
    shape_zyx: IntZYX = Field(description="array shape at this mip, z, y, x")
    voxel_size_nm: XYZ = Field(description="voxel size in nm at this mip, x, y, z")
    downsample_factor_xyz: IntXYZ = Field(description="factor relative to mip 0, x, y, z")
    chunk_zyx: IntZYX = Field(description="stored chunk shape in voxels, z, y, x")
    shard_zyx: IntZYX = Field(description="stored shard shape in voxels, z, y, x")


class Bounds(Model):
    x: list[int] = Field(description="[start, stop) in mip-0 voxels")
    y: list[int] = Field(description="[start, stop) in mip-0 voxels")
    z: list[int] = Field(description="[start, stop) in mip-0 voxels")


class Compression(Model):
    codec: str | None = Field(description="chunk codec, e.g. zstd, blosc")
    level: int | None = Field(description="codec level")


class LayerInfo(Model):
    datastack: str
    name: str
    description: str | None
    type: str = Field(description="image or segmentation")
    dtype: str = Field(description="numpy dtype of the voxels")
    status: str = Field(description="ready, or the state of an unfinished ingest")
    voxel_size_nm: XYZ = Field(description="mip-0 voxel size in nm, x, y, z")
    bounds: Bounds = Field(description="extent of the volume in mip-0 voxels")
    compression: Compression
    axes: list[str] = Field(description="axis order of arrays: always ['z', 'y', 'x']")
    mips: list[MipInfo] = Field(description="one entry per resolution level")
    created: str | None = Field(description="ISO-8601 UTC")
    provenance: Any = Field(description="provenance record of the ingest (inputs, parameters, software)")
    progress: dict[str, Any] = Field(description="ingest progress (slabs_done, slabs_total...); {} when ready")


# =================================================================================================
# Tiles, viewer
# =================================================================================================
class TileCacheStats(Model):
    entries: int = Field(description="tiles in the cache")
    bytes: int = Field(description="bytes of the cached tiles")
    max_bytes: int = Field(description="cache bound in bytes (NEUROLAKE_TILE_CACHE_BYTES)")
    hits: int
    misses: int
    hit_ratio: float | None = Field(description="hits / (hits + misses); null before the first lookup")
    evictions: int
    prefetched: int = Field(description="tiles rendered ahead by prefetch")
    prefetch_hits: int = Field(description="requests answered by a prefetched tile")
    max_age_s: float = Field(description="seconds before a cached tile is re-rendered")
    prefetch_pending: int
    prefetch_dropped: int
    prefetch_errors: int
    prefetch_depth: int = Field(description="sections prefetched ahead in the scroll direction")
    prefetch_enabled: bool
    waited_for_prefetch: int


class ServerStats(Model):
    tiles: TileCacheStats
    requests: dict[str, int] = Field(description="served counts: precomputed_chunks, zarr_keys, boss_cutouts...")


class NeuroglancerState(Model):
    """A Neuroglancer viewer state (its own JSON format; only the top-level fields set here are listed)."""

    dimensions: dict[str, list[Any]] = Field(description='{"x": [metres per voxel, "m"], "y": ..., "z": ...}')
    position: list[Number] = Field(description="view centre in voxels, x, y, z")
    crossSectionScale: Number  # noqa: N815 (Neuroglancer's name)
    projectionScale: Number  # noqa: N815
    layers: list[dict[str, Any]] = Field(description="Neuroglancer layers: type, name, source, ...")
    selectedLayer: dict[str, Any]  # noqa: N815
    layout: str = Field(description="4panel, xy, ...")


class ViewerAck(Model):
    g: str = Field(description="generation of the accepted client state")


# =================================================================================================
# Precomputed and Zarr JSON documents (served as files: HEAD, Range, ETag)
# =================================================================================================
class PrecomputedScale(Model):
    key: str
    size: IntXYZ = Field(description="voxels, x, y, z")
    resolution: XYZ = Field(description="nm per voxel, x, y, z")
    voxel_offset: IntXYZ
    chunk_sizes: list[IntXYZ] = Field(description="chunk size in voxels, x, y, z")
    encoding: str = Field(description="raw, compressed_segmentation or jpeg")


class PrecomputedInfo(Model):
    """Neuroglancer precomputed ``info`` (``neuroglancer_multiscale_volume``)."""

    type_: str = Field(alias="@type", description="neuroglancer_multiscale_volume")
    type: str = Field(description="image or segmentation")
    data_type: str
    num_channels: int
    scales: list[PrecomputedScale]


class PrecomputedProvenance(Model):
    description: str | None
    owners: list[str]
    sources: list[str]
    processing: list[Any]


class PrecomputedAnnotationInfo(Model):
    """Neuroglancer precomputed annotation ``info`` (``neuroglancer_annotations_v1``); other keys are binary."""

    type_: str = Field(alias="@type", description="neuroglancer_annotations_v1")
    dimensions: dict[str, list[Any]]
    lower_bound: list[Number]
    upper_bound: list[Number]
    annotation_type: str
    properties: list[dict[str, Any]]
    relationships: list[dict[str, Any]]
    by_id: dict[str, Any]
    spatial: list[dict[str, Any]]


# =================================================================================================
# Annotation tables (/api/v1/datastacks/{ds}/tables)
# =================================================================================================
class TableMetadata(Model):
    datastack: str
    table_name: str
    schema_type: str = Field(description="synapse, cell_type, nucleus, bound_tag, point, line or box")
    schema_: Any = Field(alias="schema", description="the schema: points and columns with their types")
    properties: dict[str, Any] = Field(description="extra columns {name: type}")
    description: str | None
    owner: str | None
    voxel_size_nm: XYZ = Field(description="nm per voxel of positions, x, y, z")
    segmentation_layer: str | None
    required_points: list[str]
    read_permission: str = Field(description="PRIVATE, GROUP or PUBLIC")
    write_permission: str = Field(description="PRIVATE, GROUP or PUBLIC")
    reference_table: str | None
    created: str | None = Field(description="ISO-8601 UTC")
    version: int = Field(description="Delta version (one per committed write)")
    columns: list[str]
    id_columns: list[str] = Field(description="columns holding uint64 ids")


class TableCommit(Model):
    """One commit; neurolake's commit info (``neurolake*`` keys: author, rows, ...) is included."""

    version: int | None
    timestamp: str | None = Field(description="ISO-8601 UTC")
    operation: str | None = Field(description="Delta operation, e.g. WRITE, MERGE")


class RowsWritten(Model):
    count: int = Field(description="rows written")
    ids: list[int] = Field(description="annotation ids of the rows, in input order")
    version: int = Field(description="Delta version after the commit")


class RowsDeleted(Model):
    count: int = Field(description="rows soft-deleted")
    version: int = Field(description="Delta version after the commit")


Cell = str | int | float | bool | list[Any] | dict[str, Any] | None


class Row(RootModel[dict[str, Cell]]):
    """One table row: column name -> value (positions x, y, z; timestamps ISO-8601; ids integers)."""


class RowsAnswer(Model):
    count: int = Field(description="rows returned")
    rows: list[Row]


# =================================================================================================
# Electrophysiology (/api/v1/datastacks/{ds}/ephys)
# =================================================================================================
class EphysTableInfo(Model):
    table: str = Field(description="ephys table name (SQL: <datastack>.ephys.<table>)")
    version: int | None = Field(description="newest Delta version")
    rows: int = Field(description="rows of loaded files")


class EphysRows(Model):
    count: int = Field(description="rows returned")
    version: int | None = Field(description="Delta version read")
    rows: list[Row]


class EphysTrace(Model):
    file_sha256: str
    sweep: int
    channel: int
    response_unit: str | None = Field(description="mV (current clamp) or pA (voltage clamp)")
    command_unit: str | None = Field(description="pA (current clamp) or mV (voltage clamp); null without a command")
    sampling_rate_hz: float
    points: int = Field(description="samples returned (after decimation)")
    columns: dict[str, list[float | None]] = Field(description="time_s (s from the sweep start), response, command")


# =================================================================================================
# Proofreading (/api/v1/datastacks/{ds}/segmentation)
# =================================================================================================
class SegmentationInfo(Model):
    datastack: str
    layer: str | None = Field(description="supervoxel (segmentation) layer")
    supervoxels: int
    edges: int = Field(description="edges of the supervoxel graph")
    agglomeration: str | None = Field(description="each | threshold | edges | mapping")
    operations: int = Field(description="id of the last operation")
    created: str = Field(description="ISO-8601 UTC")
    provenance: Any


class EditResult(Model):
    """An operation just committed (merge, split, undo, redo, rollback)."""

    operation_id: int
    kind: str = Field(description="merge, split, undo, redo or rollback")
    author: str | None
    timestamp: str = Field(description="ISO-8601 UTC")
    old_roots: list[int] = Field(description="roots the operation expired")
    new_roots: list[int] = Field(description="roots the operation created")
    inputs: dict[str, Any] = Field(description="the request: supervoxels, sources/sinks, positions (nm)...")
    targets: list[int] | None = Field(description="operations an undo/redo/rollback applies to")
    undone_by: int | None


class OperationEdge(Model):
    sv_a: int
    sv_b: int
    affinity: Number
    active: bool


class Operation(EditResult):
    """An operation of the edit log."""

    edges: list[OperationEdge] = Field(description="supervoxel edges the operation switched on or off")


class SupervoxelRoots(Model):
    supervoxels: list[int]
    root_ids: list[int] = Field(description="root of each supervoxel at the timestamp (0 = unknown)")
    timestamp: str | None


class RootInfo(Model):
    root_id: int
    created: str = Field(description="ISO-8601 UTC")
    created_by: int | None = Field(description="operation that created the root; null for initial roots")
    expired: str | None = Field(description="ISO-8601 UTC; null while current")
    expired_by: int | None
    is_latest: bool
    supervoxels: int = Field(description="number of supervoxels")
    parents: list[int]
    children: list[int]


class RootLeaves(Model):
    root_id: int
    leaf_ids: list[int] = Field(description="supervoxel ids of the root")


class RootLatest(Model):
    root_id: int
    is_latest: bool
    latest_roots: list[int] = Field(description="current roots that descend from root_id")


class LineageNode(Model):
    id: int
    timestamp: float = Field(description="creation, unix seconds")
    operation_id: int | None = Field(None, description="operation that created the root (absent for initial roots)")
    expired_by: int | None = Field(None, description="operation that expired the root (absent while current)")


class LineageLink(Model):
    source: int = Field(description="an older root")
    target: int = Field(description="a root made from it")


class LineageGraph(Model):
    """networkx node-link JSON of root lineage (as CAVE's lineage_graph)."""

    directed: bool
    multigraph: bool
    graph: dict[str, Any]
    nodes: list[LineageNode]
    links: list[LineageLink]


# =================================================================================================
# Materialization versions (/api/v1/datastacks/{ds}/versions)
# =================================================================================================
class VersionTable(Model):
    rows: int
    schema_: str = Field(alias="schema", description="schema type of the table")
    delta_version: int | None = Field(None, description="Delta version of the live table that was frozen")
    voxel_size_nm: XYZ | None = Field(None, description="nm per voxel of positions, x, y, z")
    description: str | None = None
    segmentation_layer: str | None = None


class VersionInfo(Model):
    version: int
    timestamp: str = Field(description="the time the version freezes, ISO-8601 UTC")
    expires_on: str | None = Field(description="ISO-8601 UTC; null = never")
    valid: bool
    status: str = Field(description="AVAILABLE or EXPIRED")
    created: str = Field(description="ISO-8601 UTC")
    tables: dict[str, VersionTable] = Field(description="frozen tables by name")
    rows: int = Field(description="rows of all tables")
    path: str = Field(description="folder of the version's Parquet files, relative to the lake")
    provenance: Any


# =================================================================================================
# Connectome (/api/v1/datastacks/{ds}/connectome)
# =================================================================================================
class ConnectomeSummary(Model):
    nodes: int
    edges: int
    synapses: int
    reciprocal_pairs: int
    datastack: str | None
    version: int | None = Field(description="materialization version")
    timestamp: str | None = Field(description="time of the materialization version, ISO-8601 UTC")
    synapse_table: str | None
    cell_type_table: str | None


class UpstreamPartner(Model):
    """A presynaptic partner (+ node attributes such as cell_type)."""

    pre: int = Field(description="root id")
    n_synapses: int
    size_sum: Number | None = Field(description="summed synapse size; null when the table has no size")


class DownstreamPartner(Model):
    """A postsynaptic partner (+ node attributes such as cell_type)."""

    post: int = Field(description="root id")
    n_synapses: int
    size_sum: Number | None = Field(description="summed synapse size; null when the table has no size")


class Partners(Model):
    root_id: int
    upstream: list[UpstreamPartner] = Field(description="strongest first")
    downstream: list[DownstreamPartner] = Field(description="strongest first")
    datastack: str | None
    version: int | None = Field(description="materialization version")
    timestamp: str | None = Field(description="time of the materialization version, ISO-8601 UTC")
    synapse_table: str | None
    cell_type_table: str | None


class ConnectivityMatrix(Model):
    rows: list[str] = Field(description="presynaptic groups")
    columns: list[str] = Field(description="postsynaptic groups")
    values: list[list[Number]] = Field(description="values[i][j]: weight from rows[i] to columns[j]")
    weight: str = Field(description="n_synapses or size_sum")


class ReciprocalPair(Model):
    a: int = Field(description="root id, a < b")
    b: int
    n_ab: int = Field(description="synapses a -> b")
    n_ba: int = Field(description="synapses b -> a")


class DegreeCount(Model):
    degree: int
    count: int = Field(description="nodes with this degree")


class ShortestPath(Model):
    source: int
    target: int
    path: list[int] = Field(description="root ids from source to target; [] when unreachable")


Motifs = dict[str, int]  # triad census: MAN label ("003" ... "300") -> count


# =================================================================================================
# Feature registry (/api/v1/features, /api/v1/usage, /api/v1/audit)
# =================================================================================================
class FeatureEntry(Model):
    """A registered feature table (see neurolake.catalog.registry.FIELDS for every field)."""

    id: int
    name: str
    datastack: str
    description: str | None
    location: str = Field(description="folder, file or s3:// URL of the table")
    format: str = Field(description="parquet, delta, iceberg, lance, ...")
    schema_: Any = Field(alias="schema", description="columns: [{name, type, description?}]")
    status: str
    tags: list[str] | None
    row_count: int | None
    size_bytes: int | None = Field(description="bytes of the data files")
    fingerprint: dict[str, Any] | None
    file_count: int
    created: str = Field(description="ISO-8601 UTC")
    updated: str = Field(description="ISO-8601 UTC")


class FeatureSearch(Model):
    count: int
    features: list[FeatureEntry]


class CrawlReport(Model):
    prefix: str
    datastack: str
    found: list[dict[str, Any]] = Field(description="tables found: location, format, ...")
    registered: list[dict[str, Any]] = Field(description="entries registered as drafts (or would be: dry_run)")
    skipped: list[dict[str, Any]] = Field(description="{location, reason}")
    errors: list[dict[str, Any]] = Field(description="{location, error, message}")


class Verification(Model):
    ok: bool = Field(description="the data still matches the registered fingerprint")
    registered: dict[str, Any] | None
    current: dict[str, Any]


class SignedFile(Model):
    path: str
    size: int | None = Field(description="bytes")
    partition: dict[str, Any] | None = Field(description="hive partition values of the path")
    url: str


class SignedUrls(Model):
    table: str
    datastack: str
    format: str
    fingerprint: dict[str, Any] | None
    expires: str = Field(description="ISO-8601 UTC")
    expires_in_s: Number = Field(description="seconds")
    user: str
    scheme: str = Field(description="neurolake-signed-url-v1 or s3-presigned-sigv4")
    prefix_url: str | None = Field(description="prefix_url + '/' + path reads any file of the table")
    files: list[SignedFile]
    urls: list[str] = Field(description="URLs of the data files")


class UsageLimits(Model):
    bytes: int | None = Field(description="bytes per window; null = unlimited")
    requests: int | None = Field(description="requests per window; null = unlimited")


class Usage(Model):
    user: str
    period_s: Number = Field(description="quota window in seconds")
    window_start: str = Field(description="ISO-8601 UTC")
    reset: str = Field(description="ISO-8601 UTC")
    reset_in_s: float = Field(description="seconds")
    requests: int
    bytes: int
    limits: UsageLimits


class AuditEvent(Model):
    id: int
    time: str = Field(description="ISO-8601 UTC")
    user: str | None
    action: str = Field(description="e.g. feature.register, data.bytes_served")
    target: str | None
    datastack: str | None
    detail: dict[str, Any] | None


class AuditLog(Model):
    count: int
    events: list[AuditEvent] = Field(description="newest first")


# =================================================================================================
# CAVE (caveclient 8.2.1): info service, materialization engine, chunkedgraph
# =================================================================================================
class CaveAlignedVolume(Model):
    name: str
    id: int
    description: str | None
    image_source: str | None = Field(description="precomputed:// URL of the image layer")
    display_name: str


class CaveDatastackInfo(Model):
    datastack: str
    name: str
    description: str | None
    aligned_volume: CaveAlignedVolume
    segmentation_source: str = Field(description="graphene:// URL of the chunkedgraph")
    segmentation_layer: str | None
    local_server: str
    analysis_database: str | None
    viewer_site: str | None
    skeleton_source: str | None
    synapse_table: str | None
    soma_table: str | None
    viewer_resolution_x: Number = Field(description="nm")
    viewer_resolution_y: Number = Field(description="nm")
    viewer_resolution_z: Number = Field(description="nm")


class CaveVersion(Model):
    version: int
    time_stamp: str | None = Field(description="naive UTC %Y-%m-%dT%H:%M:%S.%f")
    expires_on: str | None = Field(description="naive UTC %Y-%m-%dT%H:%M:%S.%f")
    valid: bool
    status: str
    datastack: str
    id: int
    is_merged: bool
    parent_version: int | None


class CaveTableMetadata(Model):
    table_name: str
    schema_: str = Field(alias="schema")
    schema_type: str
    description: str | None
    reference_table: str | None
    voxel_resolution_x: Number = Field(description="nm")
    voxel_resolution_y: Number = Field(description="nm")
    voxel_resolution_z: Number = Field(description="nm")
    voxel_resolution: XYZ = Field(description="nm, x, y, z")
    valid: bool
    aligned_volume: str
    created: str | None
    row_count: int
    segmentation_source: str | None
    id: int
    annotation_table: str
    datastack: str
    version: int


class PcgScale(Model):
    resolution: XYZ = Field(description="nm, x, y, z")
    size: IntXYZ = Field(description="voxels, x, y, z")
    voxel_offset: IntXYZ
    key: str
    chunk_sizes: list[IntXYZ] = Field(description="voxels, x, y, z")
    encoding: str


class PcgInfo(Model):
    """The chunkedgraph's segmentation info (cloud-volume graphene shape) plus neurolake's own info."""

    app: dict[str, Any]
    chunks_start_at_voxel_offset: bool
    data_dir: str | None
    type: str
    graph: dict[str, Any]
    verify_mesh: bool
    mesh: str | None
    num_channels: int
    data_type: str
    scales: list[PcgScale]
    voxel_size_nm: XYZ | None = Field(description="nm, x, y, z")
    neurolake: SegmentationInfo


class CaveRootIds(Model):
    root_ids: list[int]


class CaveRootId(Model):
    root_id: int


class CaveLeafIds(Model):
    leaf_ids: list[int]


class CaveIsLatest(Model):
    is_latest: list[bool]


class CaveRootTimestamps(Model):
    timestamp: list[float] = Field(description="creation of each root, unix seconds")


class CaveEdit(Model):
    operation_id: int
    new_root_ids: list[int]
    new_lvl2_ids: list[int] = Field(description="always []: neurolake has no level-2 chunks")


class CavePastIdMapping(Model):
    past_id_map: dict[str, list[int]] = Field(description="root (text) -> roots at timestamp_past")
    future_id_map: dict[str, list[int]] = Field(description="past root (text) -> roots at timestamp_future")


# =================================================================================================
# BossDB API v1 (intern 1.4.2)
# =================================================================================================
class BossCollections(Model):
    collections: list[str]


class BossCollection(Model):
    name: str
    description: str
    creator: str
    experiments: list[str]
    public: bool


class BossExperiments(Model):
    experiments: list[str]


class BossExperiment(Model):
    name: str
    description: str
    collection: str
    coord_frame: str
    num_hierarchy_levels: int
    hierarchy_method: str = Field(description="isotropic or anisotropic")
    num_time_samples: int
    time_step: int
    time_step_unit: str
    creator: str
    channels: list[str]


class BossChannels(Model):
    channels: list[str]


class BossChannel(Model):
    name: str
    description: str
    experiment: str
    default_time_sample: int
    type: str = Field(description="image or annotation")
    base_resolution: int
    datatype: str = Field(description="uint8, uint16 or uint64")
    creator: str
    sources: list[str]
    related: list[str]
    downsample_status: str
    storage_type: str
    bucket: str | None
    cv_path: str | None


class BossFrames(Model):
    coords: list[str]


class BossFrame(Model):
    name: str
    description: str
    x_start: int
    x_stop: int = Field(description="voxels")
    y_start: int
    y_stop: int = Field(description="voxels")
    z_start: int
    z_stop: int = Field(description="voxels")
    x_voxel_size: Number
    y_voxel_size: Number
    z_voxel_size: Number
    voxel_unit: str = Field(description="nanometers")


class BossIds(Model):
    ids: list[str] = Field(description="ids in the region, as text")


class BossBoundingBox(Model):
    x_range: list[int] = Field(description="[start, stop) voxels at the resolution")
    y_range: list[int]
    z_range: list[int]
    t_range: list[int]


class BossReserved(Model):
    start_id: int
    count: int


class BossDownsample(Model):
    num_hierarchy_levels: int
    status: str = Field(description="DOWNSAMPLED or IN_PROGRESS")
    voxel_size: dict[str, XYZ] = Field(description="resolution level -> nm, x, y, z")
    extent: dict[str, IntXYZ] = Field(description="resolution level -> voxels, x, y, z")
    cuboid_size: dict[str, IntXYZ] = Field(description="resolution level -> chunk voxels, x, y, z")
    voxel_unit: str
    base_voxel_size: XYZ


# =================================================================================================
# CAVE annotation engine and schema service (caveclient AnnotationClient, SchemaClient)
# =================================================================================================
class CaveAnnotationTable(Model):
    """An annotation table as CAVE's annotation engine describes it (``FullMetadataSchema``)."""

    id: int
    table_name: str
    schema_type: str
    description: str | None
    valid: bool
    created: str | None = Field(description="naive UTC, %Y-%m-%dT%H:%M:%S.%f")
    deleted: str | None
    user_id: str | None = Field(description="the owner")
    notice_text: str | None
    reference_table: str | None
    flat_segmentation_source: str | None
    voxel_resolution_x: Number = Field(description="nm per voxel of positions")
    voxel_resolution_y: Number = Field(description="nm per voxel of positions")
    voxel_resolution_z: Number = Field(description="nm per voxel of positions")
    read_permission: str = Field(description="PRIVATE, GROUP or PUBLIC")
    write_permission: str = Field(description="PRIVATE, GROUP or PUBLIC")
    aligned_volume: str
    properties: dict[str, str] = Field(description="neurolake: extra columns {name: type}")


class CaveJsonSchema(Model):
    """A JSON schema (draft 7) of an annotation schema, as the EMAnnotationSchemas service gives it
    (marshmallow-jsonschema shape: ``$ref`` to the annotation class in ``definitions``)."""

    ref: str = Field(alias="$ref")
    json_schema: str = Field(alias="$schema")
    definitions: dict[str, dict[str, Any]]


# -- graphene for cloud-volume (server/graphene.py) --------------------------------------------------
class GrapheneManifest(Model):
    """A root's mesh manifest (cloud-volume's graphene mesh source reads it)."""

    fragments: list[str] = Field(description="fragment names under the info's data_dir/mesh/")
    seg_ids: list[Id] | None = Field(None, description="with ?return_seg_ids=1: the id of each fragment")


class GrapheneMeshInfo(Model):
    """``data_dir/mesh/info``: legacy (unsharded) precomputed meshes."""

    type_: str = Field(alias="@type", description="neuroglancer_legacy_mesh")
    spatial_index: dict[str, Any] | None


# -- meshes (server/meshes.py) -----------------------------------------------------------------------
class MeshFragmentBody(Body):
    media_types = ("application/octet-stream",)
    description = ("a legacy precomputed mesh fragment (uint32 n, n × 3 float32 x, y, z nm, uint32 triangle "
                   "indices), a Draco mesh or a multi-resolution manifest (neuroglancer_multilod_draco)")


class PrecomputedMeshInfo(Model):
    """``mesh/info`` (``neuroglancer_legacy_mesh``) or ``mesh_draco/info`` (``neuroglancer_multilod_draco``)."""

    type_: str = Field(alias="@type", description="neuroglancer_legacy_mesh or neuroglancer_multilod_draco")
    vertex_quantization_bits: int | None = Field(None, description="multilod_draco: bits per stored position")
    transform: list[Number] | None = Field(None, description="multilod_draco: 3 × 4 stored model → nm, row-major")
    lod_scale_multiplier: Number | None = None


class PrecomputedMeshManifest(Model):
    """Legacy mesh manifest ``{id}:0``: the fragment names (files next to it) whose union is the mesh."""

    fragments: list[str] = Field(description="fragment keys {id}:0:{bx}_{by}_{bz} (block grid indices)")


# -- skeletons (server/skeletons.py, neurolake.skeletons) -----------------------------------------
class SkeletonBody(Body):
    description = ("one Neuroglancer precomputed skeleton: uint32 vertex and edge counts, float32 x, y, z vertices "
                   "(nm), uint32 edges, float32 radius (nm), uint8 vertex_types")


class SwcBody(Body):
    media_type = "text/plain"
    media_types = ("text/plain",)
    description = "SWC text (id type x y z radius parent; nm), one tree per connected piece"


class SkeletonInfo(Model):
    """Neuroglancer precomputed skeleton ``info`` (``neuroglancer_skeletons``)."""

    type_: str = Field(alias="@type", description="neuroglancer_skeletons")
    transform: list[Number] = Field(description="3x4 row-major affine from stored vertices to nm (identity)")
    vertex_attributes: list[dict[str, Any]] = Field(description="radius (float32, nm), vertex_types (uint8)")
    mip: int | None = Field(None, description="mip of the segmentation the skeletons were computed at")


class SkeletonRow(Model):
    segment_id: int
    n_vertices: int
    n_edges: int
    cable_length_nm: float
    n_branch_points: int = Field(description="vertices with three or more edges")
    n_end_points: int = Field(description="vertices with one edge")
    n_components: int
    mean_radius_nm: float
    max_radius_nm: float
    voxels: int = Field(description="voxels of the segment at the skeletonized mip")
    mip: int


class SkeletonTable(Model):
    """The skeleton table of a layer at one Delta version, with how the skeletons were made."""

    datastack: str
    layer: str
    table_version: int = Field(description="Delta version of the skeleton table (SQL: DS.skeletons.\"LAYER@N\")")
    rows: list[SkeletonRow]
    provenance: dict[str, Any] | None = Field(None, description="parameters, kimimaro version, inputs, code, "
                                              "user, time, statistics of the newest build")


class CaveView(Model):
    """A view (a saved join of two annotation tables) as CAVE's materialization engine describes it."""

    table_name: str = Field(description="the view's name")
    description: str
    notice_text: str | None
    live_compatible: bool
    voxel_resolution_x: Number = Field(description="nm per voxel of the answer's positions")
    voxel_resolution_y: Number = Field(description="nm per voxel of the answer's positions")
    voxel_resolution_z: Number = Field(description="nm per voxel of the answer's positions")
    voxel_resolution: XYZ = Field(description="nm, x, y, z")
    tables: list[list[str]] = Field(description="neurolake: the joined [table, join column] pairs")
    suffixes: dict[str, str] = Field(description="neurolake: suffix per table for shared column names")


class CaveViewColumn(Model):
    type: str = Field(description="integer, number, string, boolean or SpatialPoint")
    format: str | None = None


class CaveViewSchema(Model):
    """The columns of a view (a JSON-schema-like ``{"type": "object", "properties": {column: {type}}}``)."""

    type: str
    properties: dict[str, CaveViewColumn]
