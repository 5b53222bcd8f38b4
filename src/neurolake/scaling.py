"""A scaling model of a neurolake installation: objects, requests, catalog, memory and cost at a given size.

``neurolake scale --installation microns|h01|FILE`` (docs/scaling.md). From layer specs and table sizes it
computes, with the same code that lays out a real layer (:func:`neurolake.volumes.spec.plan_mips`):

- per layer and mip: chunks, shard objects, stored and uncompressed bytes;
- ingest: PUT requests (one per shard written, the minimum for a sharded store) and the time at the object
  store's documented per-prefix request limit and at a given bandwidth;
- serving: GET requests per second for a number of concurrent viewers;
- tables: annotation rows and bytes, materialization copies, the proofreading operation log and the
  catalog database size;
- memory of the per-process structures of today's design, from **constants measured on this machine**
  (:func:`measure_constants`: the bytes per supervoxel and per edge of the in-memory supervoxel graph,
  ``proofreading.state.GraphState``, and the stored/uncompressed ratio of each layer kind from a real lake);
- monthly cost with :class:`neurolake.estimate.Prices`;
- **what breaks first**: each limit of today's design compared with the installation's figures, in the
  order they are exceeded, with what replaces it.

Inputs are a dict/TOML (:class:`Installation`); the two presets carry the published headline figures of
MICrONS (MICrONS Consortium 2025, Nature 640:435, "Functional connectomics spanning multiple areas of mouse
visual cortex": ~1 mm³ at 4 × 4 × 40 nm, > 200,000 cells, ~0.5 billion synapses) and H01
(Shapson-Coe et al. 2024, Science 384:eadk4858: 1.4 PB, ~1 mm³ of human temporal cortex at 4 × 4 × 33 nm,
~57,000 cells, ~150 million synapses). Extents and densities not given in those papers are assumptions,
named as such in :attr:`Installation.assumptions`.

Errors: :class:`~neurolake.errors.InvalidArgument` for a malformed installation (naming field and value),
:class:`~neurolake.errors.NotFound` for a missing file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from neurolake.errors import InvalidArgument, NotFound
from neurolake.estimate import GB, Prices
from neurolake.volumes.spec import DEFAULT_CHUNK_ZYX, DEFAULT_SHARD_ZYX, plan_mips

TB = 10**12
PB = 10**15
DTYPE_BYTES = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "float32": 4}

# Object-store limits (AWS S3 user guide, "Best practices design patterns: optimizing Amazon S3
# performance": at least 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per second per
# partitioned prefix; a layer's mip is one prefix until S3 splits it).
S3_PUT_PER_PREFIX_S = 3500
S3_GET_PER_PREFIX_S = 5500
# Stored/uncompressed bytes measured on the demo lake (zstd level 3 in sharded Zarr v3, 2026-12-01):
# EM images 0.967 (gerhard2013 ssTEM) and 0.995 (gala FIB-SEM) — lossless zstd barely compresses EM;
# segmentations 0.016 (gerhard2013 supervoxels), 0.025 (labels), 0.039 (gala neurons).
DEFAULT_RATIO = {"image": 0.97, "segmentation": 0.03}


@dataclass
class LayerPlan:
    """One layer of a planned installation. ``size_xyz`` in voxels at mip 0 (x, y, z); nm voxel size."""

    name: str
    layer_type: str
    dtype: str
    size_xyz: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    chunk_zyx: tuple[int, int, int] = DEFAULT_CHUNK_ZYX
    shard_zyx: tuple[int, int, int] = DEFAULT_SHARD_ZYX
    stored_ratio: float | None = None  # stored / uncompressed; None: DEFAULT_RATIO of the layer type


@dataclass
class Installation:
    """What to model: layers, table sizes and the load. Counts are totals for the installation."""

    name: str
    layers: list[LayerPlan]
    cells: int
    synapses: int
    supervoxels: int
    edges_per_supervoxel: float = 6.0  # region adjacency graph degree (assumption: a 3-D watershed)
    synapse_row_bytes: int = 120  # stored bytes per synapse row (3 positions, ids, size; measured ~100-130)
    materialization_versions: int = 12  # versions kept (e.g. monthly for a year)
    edits: int = 5_000_000  # proofreading operations in the log
    viewers: int = 50  # concurrent Neuroglancer users
    chunk_gets_per_viewer_s: float = 40.0  # chunk requests per second while a viewer browses
    ingest_gbit_s: float = 10.0  # network bandwidth of the ingest (Gbit/s)
    node_ram_gb: float = 256.0  # RAM of the largest single server process host
    assumptions: list[str] = field(default_factory=list)


def _layer(d: dict[str, Any], i: int) -> LayerPlan:
    try:
        return LayerPlan(name=str(d["name"]), layer_type=str(d["layer_type"]), dtype=str(d["dtype"]),
                         size_xyz=tuple(int(v) for v in d["size_xyz"]),
                         voxel_size_nm=tuple(float(v) for v in d["voxel_size_nm"]),
                         chunk_zyx=tuple(int(v) for v in d.get("chunk_zyx", DEFAULT_CHUNK_ZYX)),
                         shard_zyx=tuple(int(v) for v in d.get("shard_zyx", DEFAULT_SHARD_ZYX)),
                         stored_ratio=None if d.get("stored_ratio") is None else float(d["stored_ratio"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"layer {i} of the installation is malformed ({exc!r}); it needs name, layer_type, "
                              "dtype, size_xyz [x, y, z] and voxel_size_nm [x, y, z]",
                              field=f"layers[{i}]", value=repr(d)) from exc


def installation_from(doc: dict[str, Any]) -> Installation:
    """An :class:`Installation` from a mapping (a parsed TOML/JSON file). Raises InvalidArgument."""
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list) or not doc["layers"]:
        raise InvalidArgument("an installation needs a name and a non-empty [[layers]] list", field="layers",
                              value=repr(doc)[:200])
    known = {f for f in Installation.__dataclass_fields__}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidArgument(f"unknown installation field(s) {unknown}; allowed: {sorted(known)}",
                              field=unknown[0], allowed=sorted(known))
    kw = {k: v for k, v in doc.items() if k != "layers"}
    inst = Installation(layers=[_layer(d, i) for i, d in enumerate(doc["layers"])], **kw)
    for f in ("cells", "synapses", "supervoxels", "edits", "viewers"):
        v = getattr(inst, f)
        if not isinstance(v, int) or v < 0:
            raise InvalidArgument(f"{f} must be a whole number >= 0, got {v!r}", field=f, value=v)
    for lay in inst.layers:
        if lay.dtype not in DTYPE_BYTES or lay.layer_type not in DEFAULT_RATIO:
            raise InvalidArgument(f"layer {lay.name!r}: layer_type {lay.layer_type!r} / dtype {lay.dtype!r} not "
                                  f"allowed (types {sorted(DEFAULT_RATIO)}, dtypes {sorted(DTYPE_BYTES)})",
                                  field="layers", value=lay.name)
    return inst


def load_installation(path: str | Path) -> Installation:
    """Read an installation from a TOML or JSON file (``name``, counts, ``[[layers]]``)."""
    import json
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise NotFound(f"installation file {str(p)!r} not found", path=str(p))
    text = p.read_text()
    try:
        doc = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"cannot parse {str(p)!r}: {exc}", field="installation", value=str(p)) from exc
    return installation_from(doc)


def _extent(um_xyz: tuple[float, float, float], vox_nm: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(math.ceil(u * 1000 / v)) for u, v in zip(um_xyz, vox_nm, strict=True))


def preset(name: str) -> Installation:
    """``microns`` or ``h01`` (see the module doc for sources; extents are assumptions that give the
    published dataset sizes)."""
    if name == "microns":
        ext = (1400.0, 870.0, 840.0)  # µm; ~1 mm³ — the published volume is "approximately 1 mm³"
        return Installation(
            name="MICrONS-scale (minnie65-like)",
            layers=[LayerPlan("image", "image", "uint8", _extent(ext, (4, 4, 40)), (4, 4, 40)),
                    LayerPlan("supervoxels", "segmentation", "uint64", _extent(ext, (8, 8, 40)), (8, 8, 40))],
            cells=200_000, synapses=500_000_000, supervoxels=10_000_000_000,
            assumptions=["extent 1.4 × 0.87 × 0.84 mm: 1.6·10^15 image voxels at mip 0 (4 × 4 × 40 nm), 2.1 PB of "
                         "uint8 with the pyramid (published: ~2 PB)",
                         "segmentation at 8 × 8 × 40 nm, uint64",
                         "10^10 supervoxels: one per ~0.1 µm³ (a watershed over-segmentation; not published)",
                         "5·10^6 proofreading edits, 12 materialization versions kept, 50 concurrent viewers"])
    if name == "h01":
        ext = (2000.0, 1400.0, 175.0)  # µm: 5,292 sections of ~33 nm over a ~2 × 1.4 mm² area (assumption)
        return Installation(
            name="H01-scale (human temporal cortex)",
            layers=[LayerPlan("image", "image", "uint8", _extent(ext, (4, 4, 33)), (4, 4, 33)),
                    LayerPlan("supervoxels", "segmentation", "uint64", _extent(ext, (8, 8, 33)), (8, 8, 33))],
            cells=57_000, synapses=150_000_000, supervoxels=2_000_000_000,
            assumptions=["extent 2.0 × 1.4 mm × 175 µm (5,292 sections of 33 nm): 9.3·10^14 image voxels at mip 0, "
                         "1.23 PB of uint8 with the pyramid (published: 1.4 PB)",
                         "segmentation at 8 × 8 × 33 nm, uint64",
                         "2·10^9 supervoxels (one per ~0.25 µm³; not published)",
                         "5·10^6 proofreading edits, 12 materialization versions kept, 50 concurrent viewers"])
    raise InvalidArgument(f"unknown installation preset {name!r}; use microns, h01 or a TOML/JSON file",
                          field="installation", value=name, allowed=["microns", "h01"])


# -- measured constants ---------------------------------------------------------------------------------
@dataclass
class Constants:
    """Per-item sizes measured on this machine (see :func:`measure_constants`)."""

    graph_bytes_per_supervoxel: float
    graph_bytes_per_edge: float
    stored_ratio: dict[str, float]
    source: str


def random_graph_state(n: int, degree: float = 6.0, seed: int = 0):
    """A real ``proofreading.state.GraphState`` of ``n`` supervoxels (ids 1..n) and about ``n * degree / 2``
    random local edges (each supervoxel joined to one of its next 49 ids), every edge inactive."""
    import datetime as dt

    import numpy as np

    from neurolake.proofreading.state import GraphState

    rng = np.random.default_rng(seed)
    m = int(n * degree / 2)
    a = rng.integers(1, n + 1, m, dtype=np.uint64)
    b = np.minimum(a + rng.integers(1, 50, m).astype(np.uint64), np.uint64(n))
    keep = a != b
    a, b = a[keep], b[keep]
    svs = np.arange(1, n + 1, dtype=np.uint64)
    return GraphState(svs, svs.copy(), a, b, np.full(len(a), 0.5, np.float32), np.zeros(len(a), bool),
                      dt.datetime.now(dt.UTC))


def measure_constants(n_supervoxels: int = 200_000, degree: float = 6.0, lake: str | Path | None = None) -> Constants:
    """Build the real in-memory supervoxel graph (``proofreading.state.GraphState``) for a random region
    adjacency graph of ``n_supervoxels`` nodes and mean degree ``degree`` and divide the bytes of its numpy
    arrays (``nbytes``, recursively over its attributes) into per-supervoxel and per-edge parts (two sizes
    fitted exactly); with ``lake``, the stored/uncompressed ratio of each layer kind from that lake's arrays.
    """
    import numpy as np

    def size(n: int) -> tuple[int, int]:
        st = random_graph_state(n, degree)
        seen: set[int] = set()

        def walk(obj, depth=0) -> int:
            if id(obj) in seen or depth > 3:
                return 0
            seen.add(id(obj))
            if isinstance(obj, np.ndarray):
                return obj.nbytes
            if hasattr(obj, "data") and hasattr(obj, "indices") and hasattr(obj, "indptr"):  # scipy sparse
                return obj.data.nbytes + obj.indices.nbytes + obj.indptr.nbytes
            if isinstance(obj, dict):
                return sum(walk(v, depth + 1) for v in obj.values())
            if isinstance(obj, (list, tuple)):
                return sum(walk(v, depth + 1) for v in obj)
            if hasattr(obj, "__dict__"):
                return sum(walk(v, depth + 1) for v in vars(obj).values())
            return 0

        return walk(st), len(st.eu)

    b1, e1 = size(n_supervoxels)
    b2, e2 = size(2 * n_supervoxels)
    # b = s·n + e·m for both sizes: solve the 2×2 system
    n1, n2 = n_supervoxels, 2 * n_supervoxels
    det = n1 * e2 - n2 * e1
    per_edge = (n1 * b2 - n2 * b1) / det if det else 0.0
    per_sv = (b1 - per_edge * e1) / n1
    ratio = dict(DEFAULT_RATIO)
    src = f"GraphState at {n1:,} and {n2:,} supervoxels (degree {degree:g}), numpy nbytes"
    if lake is not None:
        ratio.update(_lake_ratios(Path(lake)))
        src += f"; stored ratios from {lake}"
    return Constants(max(per_sv, 0.0), max(per_edge, 0.0), ratio, src)


def _lake_ratios(root: Path) -> dict[str, float]:
    import json

    from neurolake.estimate import _zarr_array_bytes

    acc: dict[str, list[int]] = {}
    for group in root.glob("datastacks/*/volumes/*/zarr.json"):
        try:
            kind = "segmentation" if "segmentation" in json.dumps(json.loads(group.read_text())).lower() else "image"
        except ValueError:
            continue
        lay = group.parent
        stored = sum(f.stat().st_size for f in lay.rglob("*") if f.is_file())
        unc = sum((_zarr_array_bytes(m) or 0) for m in lay.rglob("zarr.json") if m.parent != lay)
        if unc:
            s = acc.setdefault(kind, [0, 0])
            s[0] += stored
            s[1] += unc
    return {k: v[0] / v[1] for k, v in acc.items() if v[1]}


# -- the model ------------------------------------------------------------------------------------------
@dataclass
class MipFigures:
    mip: int
    size_xyz: tuple[int, int, int]
    chunks: int
    shards: int
    uncompressed_bytes: int
    stored_bytes: int


@dataclass
class LayerFigures:
    name: str
    mips: list[MipFigures]

    @property
    def shards(self) -> int:
        return sum(m.shards for m in self.mips)

    @property
    def stored_bytes(self) -> int:
        return sum(m.stored_bytes for m in self.mips)

    @property
    def uncompressed_bytes(self) -> int:
        return sum(m.uncompressed_bytes for m in self.mips)


@dataclass
class Limit:
    """One limit of today's design: the installation's figure against the limit, and what replaces it."""

    part: str
    figure: float
    limit: float
    unit: str
    replacement: str

    @property
    def load(self) -> float:
        return self.figure / self.limit if self.limit else math.inf


@dataclass
class ScaleReport:
    installation: Installation
    constants: Constants
    layers: list[LayerFigures]
    table_bytes: dict[str, int]
    catalog_bytes: int
    ingest_puts: int
    ingest_hours_bandwidth: float
    ingest_hours_put_limit: float
    serving_gets_s: float
    memory_bytes: dict[str, int]
    cost_month: dict[str, Decimal]
    limits: list[Limit]

    @property
    def stored_bytes(self) -> int:
        return sum(la.stored_bytes for la in self.layers) + sum(self.table_bytes.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stored_bytes"] = self.stored_bytes
        d["cost_month"] = {k: str(v) for k, v in self.cost_month.items()}
        d["limits"] = [{**asdict(lim), "load": lim.load} for lim in self.limits]
        return d


def _layer_figures(lay: LayerPlan, ratio: float) -> LayerFigures:
    out = []
    item = DTYPE_BYTES[lay.dtype]
    for m in plan_mips(lay.size_xyz, lay.voxel_size_nm, lay.chunk_zyx, lay.shard_zyx):
        shape = m.shape_zyx
        chunks = math.prod(math.ceil(s / c) for s, c in zip(shape, m.chunk_zyx, strict=True))
        shards = math.prod(math.ceil(s / c) for s, c in zip(shape, m.shard_zyx, strict=True))
        unc = math.prod(shape) * item
        out.append(MipFigures(m.mip, m.size_xyz, chunks, shards, unc, int(unc * ratio)))
    return LayerFigures(lay.name, out)


def model(inst: Installation, constants: Constants, prices: Prices | None = None) -> ScaleReport:
    """Compute every figure of :class:`ScaleReport` for ``inst`` (see the module doc)."""
    prices = prices or Prices()
    layers = [_layer_figures(la, la.stored_ratio if la.stored_ratio is not None
                             else constants.stored_ratio.get(la.layer_type, DEFAULT_RATIO[la.layer_type]))
              for la in inst.layers]
    synapse_table = inst.synapses * inst.synapse_row_bytes
    tables = {"synapse table": synapse_table,
              "materializations": synapse_table * inst.materialization_versions,
              "supervoxel graph files": int(inst.supervoxels * (8 + 8)
                                            + inst.supervoxels * inst.edges_per_supervoxel / 2 * (8 + 8 + 4 + 1))}
    # catalog rows: operations (~600 B each with their edge lists), provenance + audit (~2 per edit)
    catalog = inst.edits * 600 + inst.edits * 2 * 300 + inst.cells * 200
    puts = sum(la.shards for la in layers)
    stored = sum(la.stored_bytes for la in layers)
    bw_hours = stored * 8 / (inst.ingest_gbit_s * 1e9) / 3600
    put_hours = max(m.shards for la in layers for m in la.mips) / S3_PUT_PER_PREFIX_S / 3600  # busiest prefix
    gets_s = inst.viewers * inst.chunk_gets_per_viewer_s
    edges = inst.supervoxels * inst.edges_per_supervoxel / 2
    graph = int(inst.supervoxels * constants.graph_bytes_per_supervoxel + edges * constants.graph_bytes_per_edge)
    # materialization binds every synapse in one process: positions (3 × 2 × int64), ids (2 × uint64 × 2)
    mat = int(inst.synapses * (48 + 32 + 16))
    memory = {"supervoxel graph (GraphState, one per process)": graph,
              "materialization binding (one process)": mat}
    total_gb = Decimal(stored + sum(tables.values()) + catalog) / GB
    month_gets = Decimal(int(gets_s * 3600 * 8 * 22))  # 8 h × 22 working days of browsing
    cost = {"storage": total_gb * prices.storage_gb_month,
            "ingest PUTs (once)": Decimal(puts) / 1000 * prices.put_per_1000,
            "serving GETs": month_gets / 1000 * prices.get_per_1000}
    ram = inst.node_ram_gb * GB
    lim = [
        Limit("supervoxel → root index held in one process's memory (proofreading.state.GraphState)",
              graph, ram, "bytes",
              "a chunked graph on disk or in a key-value store, read per root (PyChunkedGraph's L2 chunks on "
              "BigTable; Dorkenwald et al. 2022), with only the edited roots in memory"),
        Limit("materialization binds all synapses in one process", mat, ram, "bytes",
              "a Dask job per spatial block of the synapse table, writing one Parquet file per block"),
        Limit("one catalog database: SQLite allows one writer at a time", inst.edits / (365 * 86400) * 50,
              200.0, "commits/s (50× the mean edit rate at peak)",
              "PostgreSQL (NEUROLAKE_DATABASE_URL) with row locks per segmentation, already supported"),
        Limit("chunk GETs on the busiest prefix", gets_s, S3_GET_PER_PREFIX_S, "requests/s",
              "spread hot mips over more prefixes (S3 splits busy prefixes after sustained load) and a CDN"),
        Limit("ingest on one machine at the given bandwidth", bw_hours, 7 * 24, "hours (limit: one week)",
              "ingest as Dask tasks per output shard on many workers close to the store"),
        Limit("one Delta table per annotation table, rewritten per materialization",
              synapse_table * inst.materialization_versions, 50 * TB, "bytes of copies (limit: 50 TB)",
              "materializations as deletion vectors/changes on the base table instead of full copies"),
    ]
    lim.sort(key=lambda x: -x.load)
    return ScaleReport(inst, constants, layers, tables, catalog, puts, bw_hours, put_hours, gets_s, memory, cost,
                       lim)


def human_bytes(n: float) -> str:
    for unit, size in (("PB", PB), ("TB", TB), ("GB", GB), ("MB", 10**6)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def report_text(r: ScaleReport) -> str:
    """The report as Markdown (what ``neurolake scale`` prints)."""
    inst = r.installation
    lines = [f"# {inst.name}", "",
             f"{inst.cells:,} cells, {inst.synapses:,} synapses, {inst.supervoxels:,} supervoxels, "
             f"{inst.edits:,} edits, {inst.viewers} concurrent viewers.", "",
             "| layer | mips | chunks | shard objects | uncompressed | stored |", "|---|---|---|---|---|---|"]
    for la in r.layers:
        lines.append(f"| {la.name} | {len(la.mips)} | {sum(m.chunks for m in la.mips):,} | {la.shards:,} | "
                     f"{human_bytes(la.uncompressed_bytes)} | {human_bytes(la.stored_bytes)} |")
    lines += ["", "| tables | bytes |", "|---|---|"]
    lines += [f"| {k} | {human_bytes(v)} |" for k, v in r.table_bytes.items()]
    lines += [f"| catalog database | {human_bytes(r.catalog_bytes)} |", "",
              f"- total stored: **{human_bytes(r.stored_bytes)}**",
              f"- ingest: {r.ingest_puts:,} PUTs (one per shard: the minimum), {r.ingest_hours_bandwidth:,.1f} h at "
              f"{inst.ingest_gbit_s:g} Gbit/s; the busiest prefix needs {r.ingest_hours_put_limit:,.2f} h at "
              f"{S3_PUT_PER_PREFIX_S:,} PUT/s",
              f"- serving: {r.serving_gets_s:,.0f} chunk GET/s for {inst.viewers} viewers",
              *[f"- memory, {k}: {human_bytes(v)}" for k, v in r.memory_bytes.items()],
              "- monthly cost: " + ", ".join(f"{k} ${v:,.0f}" for k, v in r.cost_month.items()), "",
              "## What breaks first", "", "| part of today's design | figure | limit | load | replaced by |",
              "|---|---|---|---|---|"]
    for lim in r.limits:
        fig = human_bytes(lim.figure) if lim.unit == "bytes" or lim.unit.startswith("bytes") else f"{lim.figure:,.1f}"
        cap = human_bytes(lim.limit) if lim.unit.startswith("bytes") else f"{lim.limit:,.0f}"
        lines.append(f"| {lim.part} | {fig} | {cap} {lim.unit if not lim.unit.startswith('bytes') else ''} | "
                     f"{lim.load:,.2f}× | {lim.replacement} |")
    lines += ["", f"Constants: {r.constants.graph_bytes_per_supervoxel:.1f} B per supervoxel and "
              f"{r.constants.graph_bytes_per_edge:.1f} B per edge in memory; stored ratios "
              + ", ".join(f"{k} {v:.3f}" for k, v in r.constants.stored_ratio.items())
              + f" ({r.constants.source}).", "", "Assumptions:", *[f"- {a}" for a in inst.assumptions]]
    return "\n".join(lines) + "\n"
