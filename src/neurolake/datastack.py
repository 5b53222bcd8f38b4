"""Datastack: the client of one dataset — its layers, annotation tables, segmentation, versions, connectome.

Reached through the lake (caveclient's one client with sub-clients)::

    lake = neurolake.open_lake("demo-lake")
    ds = lake["gerhard2013"]                          # or lake.datastack("gerhard2013")
    em = ds.layer("image")[3:13, 200:712, 100:612]    # numpy (z, y, x)
    syn = ds.table("synapses").query(bbox=[[0, 0, 0], [2000, 2000, 500]]).df()
    ds.segmentation.merge(sv_a, sv_b)                 # proofreading
    v = ds.versions.create()                          # materialization
    ds.connectome(version=v["version"]).upstream(root_id).df()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: `import neurolake` stays fast
    from neurolake.annotations.table import Table
    from neurolake.base.results import Result
    from neurolake.connectome.graph import Connectome
    from neurolake.ephys import Ephys
    from neurolake.lake import Lake
    from neurolake.proofreading.service import Segmentation
    from neurolake.volumes.layer import Layer


class Datastack:
    """One datastack of an open lake. Get it with ``lake[name]`` / ``lake.datastack(name)`` (which raise
    NotFound for an unknown name); it holds no state of its own beyond the lake and its name."""

    def __init__(self, lake: Lake, name: str) -> None:
        self.lake = lake
        self.name = name

    def __repr__(self) -> str:
        return f"<Datastack {self.name!r} of {self.lake.root}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Datastack) and other.lake is self.lake and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.lake), self.name))

    def info(self) -> dict[str, Any]:
        """``{"name", "description", "voxel_size_nm" (x, y, z), "public", "created", "layers": [...]}``."""
        return self.lake.datastack_info(self.name)

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        """Nanometres per voxel along (x, y, z) at mip 0."""
        return tuple(self.info()["voxel_size_nm"])  # type: ignore[return-value]

    # -- layers -----------------------------------------------------------------------------------
    def layers(self) -> list[str]:
        """Names of the layers, sorted."""
        return [la["name"] for la in self.info()["layers"]]

    def layer(self, name: str) -> Layer:
        """The layer ``name``: ``layer[z0:z1, y0:y1, x0:x1]`` or ``layer.cutout(x=, y=, z=, mip=)`` give numpy
        arrays (z, y, x). Raises NotFound naming the known layers."""
        return self.lake.layer(self.name, name)

    def ingest(self, source: str, layer: str, **kwargs: Any) -> Layer:
        """Ingest ``source`` as layer ``layer``; see :func:`neurolake.volumes.ingest.ingest`."""
        return self.lake.ingest(source, self.name, layer, **kwargs)

    # -- electrophysiology ------------------------------------------------------------------------
    @property
    def ephys(self) -> Ephys:
        """The datastack's electrophysiology tables: ``.ingest(folder)``, ``.table(name)``, ``.trace(file,
        sweep)`` (:class:`neurolake.ephys.Ephys`, docs/ephys.md)."""
        from neurolake.ephys import Ephys

        return Ephys(self.lake, self.name)

    # -- annotation tables ------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Names of the annotation tables, sorted."""
        from neurolake.annotations.table import list_tables

        return list_tables(self.lake, self.name)

    def table(self, name: str) -> Table:
        """The annotation table ``name`` (``.query(...)`` → :class:`~neurolake.base.results.Result`,
        ``.append(rows)``, ``.update``, ``.delete``, ``.writer()``). Raises NotFound naming the known tables."""
        from neurolake.annotations.table import get_table

        return get_table(self.lake, self.name, name)

    def create_table(self, name: str, schema: str, **kwargs: Any) -> Table:
        """A new annotation table of ``schema`` (synapse, cell_type, nucleus, bound_tag, point, line, box);
        see :func:`neurolake.annotations.table.create_table`. Raises AlreadyExists, InvalidArgument."""
        from neurolake.annotations.table import create_table

        return create_table(self.lake, self.name, name, schema, **kwargs)

    def drop_table(self, name: str) -> None:
        """Delete an annotation table and its files (irreversible). Raises NotFound."""
        from neurolake.annotations.table import drop_table

        drop_table(self.lake, self.name, name)

    # -- proofreading -----------------------------------------------------------------------------
    @property
    def segmentation(self) -> Segmentation:
        """The proofreadable segmentation (merge, split, undo, roots at a time, lineage). Raises NotFound
        when the datastack has none (create one with :meth:`create_segmentation`)."""
        from neurolake.proofreading.service import segmentation

        return segmentation(self.lake, self.name)

    def has_segmentation(self) -> bool:
        from neurolake.proofreading.service import has_segmentation

        return has_segmentation(self.lake, self.name)

    def create_segmentation(self, **kwargs: Any) -> Segmentation:
        """Make the datastack proofreadable; see :func:`neurolake.proofreading.service.create_segmentation`."""
        from neurolake.proofreading.service import create_segmentation

        return create_segmentation(self.lake, self.name, **kwargs)

    def cutout(self, layer: str | Layer, x: tuple[int, int], y: tuple[int, int], z: tuple[int, int], mip: int = 0,
               *, roots: bool = False, timestamp: Any = None):
        """A (z, y, x) numpy cutout of ``layer`` (a name, or a Layer of this datastack; voxels at ``mip``,
        half-open ranges); with ``roots=True`` the supervoxel ids are replaced by the root ids at
        ``timestamp`` (None = now; uint64). The one cutout path of Python calls and every HTTP protocol
        (:mod:`neurolake.server.cutouts`). Raises NotFound, OutOfBounds, InvalidArgument (``roots`` on a
        layer that is not the proofreadable supervoxel layer)."""
        la = self.layer(layer) if isinstance(layer, str) else layer
        arr = la.cutout(x, y, z, mip=mip)
        if roots:
            from neurolake.proofreading import remap_to_roots

            arr = remap_to_roots(self.lake, self.name, arr, timestamp=timestamp, layer=la.name)
        return arr

    def write(self, layer: str | Layer, array, x0: int = 0, y0: int = 0, z0: int = 0, mip: int = 0) -> None:
        """Write a (z, y, x) ``array`` into ``layer`` (a name or a Layer of this datastack) with its corner at
        voxel (x0, y0, z0) of ``mip``; the coarser mips of the touched region follow. The write
        counterpart of :meth:`cutout`. Raises NotFound, InvalidArgument (ndim, dtype), OutOfBounds."""
        (self.layer(layer) if isinstance(layer, str) else layer).write(array, x0, y0, z0, mip)

    def sql(self, sql: str, params: Any = None, **kwargs: Any):
        """:meth:`neurolake.lake.Lake.sql` with unqualified table names resolved in this datastack
        (``ds.sql("SELECT count(*) FROM synapses")``; ``v1.synapses`` is not a datastack name: qualify
        version tables fully, e.g. ``gerhard2013.v1.synapses``)."""
        return self.lake.sql(sql, params, datastack=self.name, **kwargs)

    # -- materialization and the connectome --------------------------------------------------------
    @property
    def versions(self) -> Versions:
        """Materialization versions: ``.list()``, ``.get(v)``, ``.create()``, ``.expire(v)``, ``.tables(v)``,
        ``.query(table, version=)``, ``.live_query(table, timestamp=)``."""
        return Versions(self)

    def connectome(self, version: int | None = None, *, synapse_table: str | None = None,
                   cell_type_table: str | None = None, cell_type_column: str = "cell_type",
                   timestamp: Any = None, live: bool = False) -> Connectome:
        """The connectome (pre root → post root, weighted by synapse count) of materialization ``version``
        (None = newest valid), or with ``live=True`` of the annotation tables at ``timestamp`` (None = now).

        ``synapse_table`` defaults to the datastack's only synapse-schema table. Raises NotFound,
        VersionExpired, InvalidArgument (no or several synapse tables and none named)."""
        from neurolake.connectome.graph import Connectome

        syn = synapse_table or self._synapse_table()
        if live:
            return Connectome.from_live(self.lake, self.name, syn, timestamp, cell_type_table=cell_type_table,
                                        cell_type_column=cell_type_column)
        return Connectome.from_version(self.lake, self.name, version, syn, cell_type_table=cell_type_table,
                                       cell_type_column=cell_type_column)

    def _synapse_table(self) -> str:
        from neurolake.errors import InvalidArgument

        names = [n for n in self.tables() if self.table(n).schema.name == "synapse"]
        if len(names) != 1:
            raise InvalidArgument(f"datastack {self.name!r} has {len(names)} synapse tables ({', '.join(names)}); "
                                  "name one with synapse_table=", field="synapse_table", allowed=names)
        return names[0]


class Versions:
    """The materialization versions of one datastack (CAVE's materialization service, embedded)."""

    def __init__(self, datastack: Datastack) -> None:
        self.datastack = datastack
        self.lake = datastack.lake
        self.name = datastack.name

    def __repr__(self) -> str:
        return f"<Versions of {self.name!r}>"

    def list(self, expired: bool = False) -> list[dict[str, Any]]:
        """Versions, oldest first: ``{"version", "timestamp", "expires_on", "valid", "rows", "tables", …}``;
        only valid ones unless ``expired``."""
        from neurolake.materialize.versions import versions

        return versions(self.lake, self.name, expired=expired)

    def get(self, version: int | None = None) -> dict[str, Any]:
        """One version's metadata (None = the newest valid). Raises NotFound."""
        from neurolake.materialize.versions import get_version

        return get_version(self.lake, self.name, version)

    def create(self, timestamp: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Materialize version N+1 at ``timestamp`` (None = now): every annotation table frozen and bound to
        root ids at that time. See :func:`neurolake.materialize.versions.materialize`."""
        from neurolake.materialize.versions import materialize

        return materialize(self.lake, self.name, timestamp=timestamp, **kwargs)

    def expire(self, version: int, force: bool = False) -> dict[str, Any]:
        """Expire a version (never the newest valid one). A version production query runs pinned is refused
        (Conflict naming the runs) unless ``force``; the dict's ``"broken_runs"`` names the runs a forced
        expiry made irreproducible. Raises NotFound, VersionExpired, InvalidArgument, Conflict."""
        from neurolake.materialize.versions import expire

        return expire(self.lake, self.name, version, force=force)

    def tables(self, version: int) -> list[str]:
        """Names of the tables frozen in ``version``."""
        from neurolake.materialize.versions import version_tables

        return version_tables(self.lake, self.name, version)

    def query(self, table: str, version: int | None = None, *, bbox: Any = None, x: Any = None, y: Any = None,
              z: Any = None, bbox_point: str | None = None, **filters: Any) -> Result:
        """Rows of ``table`` in ``version`` (None = newest valid) with CAVE-style filters
        (``filter_in``, ``filter_equal``, ``filter_spatial``, …, ``columns``, ``limit``, ``offset``); see
        :func:`neurolake.materialize.versions.query_version`.

        A box — ``bbox=[[x0, y0, z0], [x1, y1, z1]]`` or ranges ``x=``, ``y=``, ``z=`` in the table's voxels
        — filters ``bbox_point`` (default the schema's primary point, e.g. ``ctr_pt``).
        Raises NotFound, VersionExpired, InvalidArgument."""
        from neurolake.base.boxes import bounding_box
        from neurolake.materialize.versions import query_version

        box = bounding_box(bbox, x=x, y=y, z=z)
        if box is not None:
            point = bbox_point or self.datastack.table(table).schema.primary
            filters["filter_spatial"] = {**(filters.get("filter_spatial") or {}), point: [list(box[0]), list(box[1])]}
        return query_version(self.lake, self.name, version, table, **filters)

    def live_query(self, table: str, timestamp: Any = None, **filters: Any) -> Result:
        """Rows of annotation ``table`` valid at ``timestamp`` (None = now) bound to root ids at that time;
        see :func:`neurolake.materialize.versions.live_query`."""
        from neurolake.materialize.versions import live_query

        return live_query(self.lake, self.name, table, timestamp, **filters)
