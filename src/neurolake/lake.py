"""Lake: one installation — a folder holding the stored data plus its catalog database.

Layout of a lake folder::

    lake.json                       marker: format version (and a database URL if one was given)
    catalog.sqlite                  the catalog (unless NEUROLAKE_DATABASE_URL selects PostgreSQL)
    datastacks/<ds>/volumes/<layer>/  OME-Zarr 0.5 group of sharded Zarr v3 arrays, one per mip
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from neurolake.base.names import check_name, not_found
from neurolake.base.settings import Settings, settings
from neurolake.db import Catalog
from neurolake.db.base import as_utc
from neurolake.errors import AlreadyExists, InvalidArgument, NotFound
from neurolake.volumes.layer import Layer
from neurolake.volumes.models import Datastack
from neurolake.volumes.models import Layer as LayerRow
from neurolake.volumes.spec import LayerSpec
from neurolake.volumes.store import create_arrays, make_context

if TYPE_CHECKING:
    from neurolake.access.core import Access
    from neurolake.catalog.registry import FeatureRegistry
    from neurolake.datastack import Datastack as DatastackClient
    from neurolake.query.engine import QueryResult

LAKE_FORMAT = 1
MARKER = "lake.json"


def _voxel_size(value: Any) -> list[float]:
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"voxel size must be 3 numbers (x, y, z nm), got {value!r}",
                              field="voxel_size", value=repr(value)) from exc
    if len(vals) != 3 or not all(v > 0 and v < float("inf") for v in vals):
        raise InvalidArgument(f"voxel size must be 3 positive numbers (x, y, z nm), got {value!r}",
                              field="voxel_size", value=repr(value))
    return vals


def init_lake(path: str | Path, database_url: str | None = None) -> Lake:
    """Create a lake at ``path`` (a new or empty folder, or an existing lake: then just open it)."""
    root = Path(path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise InvalidArgument(f"lake path {str(root)!r} exists and is not a folder", field="path", value=str(root))
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    if not marker.exists():
        doc: dict[str, Any] = {"neurolake_lake": LAKE_FORMAT}
        if database_url:
            doc["database_url"] = database_url
        marker.write_text(json.dumps(doc, indent=2))
    return Lake(root)


def open_lake(path: str | Path, create: bool = False) -> Lake:
    """Open the lake at ``path``. With ``create=True`` a missing lake is created (see :func:`init_lake`).

    Raises NotFound when ``path`` holds no lake and ``create`` is false.
    """
    root = Path(path).expanduser().resolve()
    if not (root / MARKER).exists():
        if create:
            return init_lake(root)
        raise NotFound(f"no lake at {str(root)!r}; create one with `neurolake init {root}`", path=str(root))
    return Lake(root)


class Lake:
    """An open lake. Use :func:`open_lake` / :func:`init_lake` rather than the constructor."""

    def __init__(self, root: Path, config: Settings | None = None) -> None:
        self.root = Path(root)
        self.settings = config or settings()
        marker = json.loads((self.root / MARKER).read_text())
        url = self.settings.database_url or marker.get("database_url") or f"sqlite:///{self.root / 'catalog.sqlite'}"
        self.catalog = Catalog(url)
        self.catalog.migrate()
        self.context = make_context(self.settings.cache_bytes)
        self._layers: dict[tuple, Layer] = {}
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}
        self._state_lock = threading.RLock()  # reentrant: a factory may ask for another service

    def __repr__(self) -> str:
        return f"<Lake {self.root}>"

    def close(self) -> None:
        """Close the lake's services (the access service writes its queued audit events) and release the
        catalog's connections."""
        with self._state_lock:
            held, self._state = list(self._state.values()), {}
        for obj in held:
            close = getattr(obj, "close", None)
            if callable(close):
                close()
        self.catalog.dispose()

    def state(self, key: str, factory: Callable[[], Any]) -> Any:
        """The lake's own object ``key`` (a service or cache), made by ``factory()`` on first use.

        Every per-lake service and cache lives here (not in module globals), so two open lakes never share
        state and :meth:`close` releases it all; objects with a ``close()`` method are closed then.
        """
        got = self._state.get(key)
        if got is None:
            with self._state_lock:
                got = self._state.get(key)
                if got is None:
                    got = self._state[key] = factory()
        return got

    # -- services ---------------------------------------------------------------------------------
    @property
    def access(self) -> Access:
        """Users, API tokens, roles per datastack, quotas and the audit log (:class:`neurolake.access.Access`)."""
        from neurolake.access.core import Access

        return self.state("access", lambda: Access(self))

    @property
    def features(self) -> FeatureRegistry:
        """The feature-table registry as the local user (every right); a server passes its request's
        principal to :class:`neurolake.catalog.FeatureRegistry` instead."""
        from neurolake.catalog.registry import FeatureRegistry

        return self.state("features", lambda: FeatureRegistry(self))

    # -- SQL with provenance (docs/query.md) --------------------------------------------------------
    def sql(self, sql: str, params: Any = None, *, mode: str = "exploratory", pins: dict[str, Any] | None = None,
            **kwargs: Any) -> QueryResult:
        """Run one SELECT over the whole lake: annotation tables ``ds.table`` (``ds."table@7"`` pins a Delta
        version), materialization versions ``ds.vN.table`` and ``ds.vN.connectome``, the edit log
        ``ds.edits`` and feature tables ``features.name``. ``mode``: "exploratory" (``sample=``,
        ``timeout_s=`` allowed) or "production" (pinned inputs only; its pins protect them). Further
        keywords: ``sample``, ``timeout_s``, ``datastack``, ``save``, ``output``, ``job``.

        Returns a :class:`~neurolake.query.engine.QueryResult` (``.df()``, ``.arrow()``, ``.pl()``,
        ``.manifest`` = the OpenLineage RunEvent, ``.run_id``, ``.sha256``). Raises InvalidArgument (bad SQL,
        pin or production rule), PermissionDenied (not a SELECT, files outside the lake), NotFound,
        VersionExpired, CorruptData (a pinned input's files are gone)."""
        from neurolake.query.engine import run

        return run(self, sql, params, mode=mode, pins=pins, **kwargs)

    def explain(self, sql: str, **kwargs: Any) -> dict[str, Any]:
        """What :meth:`sql` would read and do, before running: inputs and pins, plan, estimated rows and bytes,
        predicted runtime class, and whether each filter column is served by the table's layout."""
        from neurolake.query.replay import explain

        return explain(self, sql, **kwargs)

    def reproduce(self, run: str | Path) -> dict[str, Any]:
        """Re-run a recorded run (run id, ``*.manifest.json`` or result Parquet) with its pinned inputs:
        ``{"status": "identical"|"different"|"input_gone", "message", …}`` (:mod:`neurolake.query.replay`)."""
        from neurolake.query.replay import reproduce

        return reproduce(self, run)

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        """Recorded query runs, newest first (``user=``, ``datastack=``, ``mode=``, ``limit=``)."""
        from neurolake.provenance.runs import list_runs

        return list_runs(self, **filters)

    def run(self, run_id: str) -> dict[str, Any]:
        """One recorded run with its manifest (a unique prefix of the id is enough). Raises NotFound."""
        from neurolake.provenance.runs import get_run

        return get_run(self, run_id)

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- datastacks -------------------------------------------------------------------------------
    def create_datastack(self, name: str, voxel_size: Any, description: str = "", exist_ok: bool = False,
                         public: bool = True) -> dict[str, Any]:
        """Create a datastack; ``voxel_size`` is (x, y, z) nm at mip 0. Raises AlreadyExists."""
        check_name("datastack", name)
        vs = _voxel_size(voxel_size)
        with self.catalog.session() as s:
            row = s.scalar(select(Datastack).where(Datastack.name == name))
            if row is not None:
                if exist_ok:
                    return self._ds_dict(row)
                raise AlreadyExists(f"datastack {name!r} already exists", datastack=name)
            row = Datastack(name=name, description=description, voxel_size_nm=vs, public=public, provenance={})
            s.add(row)
            s.flush()
            return self._ds_dict(row)

    def datastacks(self) -> list[str]:
        """Names of the datastacks, sorted."""
        with self.catalog.session() as s:
            return list(s.scalars(select(Datastack.name).order_by(Datastack.name)))

    def datastack_infos(self) -> list[dict[str, Any]]:
        """Metadata of every datastack (without layers), sorted by name."""
        with self.catalog.session() as s:
            return [self._ds_dict(r) for r in s.scalars(select(Datastack).order_by(Datastack.name))]

    def datastack(self, name: str) -> DatastackClient:
        """The client of datastack ``name`` (layers, tables, segmentation, versions, connectome).
        Raises NotFound naming the known datastacks."""
        from neurolake.datastack import Datastack as DatastackClient

        with self.catalog.session() as s:
            self._ds_row(s, name)
        return DatastackClient(self, name)

    def __getitem__(self, name: str) -> DatastackClient:
        return self.datastack(name)

    def __contains__(self, name: object) -> bool:
        with self.catalog.session() as s:
            return s.scalar(select(Datastack.id).where(Datastack.name == name)) is not None

    def datastack_info(self, name: str) -> dict[str, Any]:
        """Datastack metadata with its layers. Raises NotFound."""
        with self.catalog.session() as s:
            return self._ds_dict(self._ds_row(s, name), with_layers=True)

    def _ds_row(self, s, name: str) -> Datastack:
        row = s.scalar(select(Datastack).where(Datastack.name == name))
        if row is None:
            raise not_found("datastack", name, s.scalars(select(Datastack.name).order_by(Datastack.name)).all())
        return row

    def _layer_row(self, s, datastack: str, name: str) -> LayerRow:
        ds = self._ds_row(s, datastack)
        row = s.scalar(select(LayerRow).where(LayerRow.datastack_id == ds.id, LayerRow.name == name))
        if row is None:
            raise not_found("layer", name, sorted(la.name for la in ds.layers), within=("datastack", datastack))
        return row

    @staticmethod
    def _ds_dict(row: Datastack, with_layers: bool = False) -> dict[str, Any]:
        d = {"name": row.name, "description": row.description, "voxel_size_nm": row.voxel_size_nm,
             "public": row.public, "created": as_utc(row.created).isoformat() if row.created else None}
        if with_layers:
            d["layers"] = [{"name": la.name, "type": la.layer_type, "dtype": la.dtype, "status": la.status}
                           for la in sorted(row.layers, key=lambda la: la.name)]
        return d

    def delete_datastack(self, name: str) -> None:
        with self.catalog.session() as s:
            row = self._ds_row(s, name)
            s.delete(row)
        shutil.rmtree(self.root / "datastacks" / name, ignore_errors=True)
        self._forget(name)

    # -- layers -----------------------------------------------------------------------------------
    def layer_path(self, datastack: str, name: str) -> Path:
        """Where a new layer ``name`` is created. An overwritten layer lives elsewhere (``<name>@<token>``):
        use ``lake.layer(ds, name).root`` for the current folder."""
        return self.root / "datastacks" / datastack / "volumes" / name

    def layers(self, datastack: str) -> list[Layer]:
        with self.catalog.session() as s:
            names = [r.name for r in self._ds_row(s, datastack).layers]
        return [self.layer(datastack, n) for n in sorted(names)]

    def layer(self, datastack: str, name: str, *, finish_pending: bool = True) -> Layer:
        """The layer ``name`` of ``datastack``. When its object is first made, the pyramid updates that killed
        writers left pending are finished (unless ``finish_pending`` is false). Raises NotFound."""
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            key = (datastack, name, row.id, row.status, row.updated, row.path)
            layer = self._layers.get(key)
            if layer is None:
                layer = Layer(datastack=datastack, name=name, spec=LayerSpec.from_json(row.spec),
                              root=self.root / row.path, status=row.status, context=self.context,
                              description=row.description, progress=dict(row.progress),
                              provenance=dict(row.provenance), created=row.created)
                if row.status == "ready" and finish_pending:
                    layer.repair()  # finish pyramid updates a killed writer left (see Layer.pending_updates)
                with self._lock:
                    self._forget(datastack, name)
                    self._layers[key] = layer
            return layer

    def _forget(self, datastack: str, name: str | None = None) -> None:
        for k in [k for k in self._layers if k[0] == datastack and (name is None or k[1] == name)]:
            self._layers.pop(k, None)

    def create_layer(self, datastack: str, name: str, spec: LayerSpec, description: str = "",
                     provenance: dict | None = None, progress: dict | None = None, status: str = "ingesting",
                     overwrite: bool = False) -> Layer:
        """Create the catalog row and empty arrays of a layer (status ``ingesting`` until finished).

        Raises NotFound (datastack), AlreadyExists (unless ``overwrite``).
        """
        check_name("layer", name)
        rel = self.layer_path(datastack, name).relative_to(self.root)
        stale: list[str] = []
        with self.catalog.session() as s:
            ds = self._ds_row(s, datastack)
            row = s.scalar(select(LayerRow).where(LayerRow.datastack_id == ds.id, LayerRow.name == name))
            if row is not None:
                if not overwrite:
                    raise AlreadyExists(f"layer {datastack}/{name} already exists ({row.status}); "
                                        "use overwrite to replace it", datastack=datastack, layer=name)
                stale = [row.path, ((row.progress or {}).get("replacing") or {}).get("path")]
                s.delete(row)
                s.flush()
            s.add(LayerRow(datastack_id=ds.id, name=name, description=description, layer_type=spec.layer_type,
                           dtype=spec.dtype, path=str(rel), spec=spec.to_json(), status=status,
                           progress=progress or {}, provenance=provenance or {}))
        for old in stale:  # folders of the replaced row (an earlier overwrite may have moved it)
            if old and old != str(rel):
                shutil.rmtree(self.root / old, ignore_errors=True)
        self._forget(datastack, name)
        create_arrays(self.root / rel, spec, name, self.context)
        return self.layer(datastack, name)

    def update_layer(self, datastack: str, name: str, **fields: Any) -> Layer:
        """Update catalog fields of a layer (``status``, ``progress``, ``provenance``, ``description``)."""
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            for k, v in fields.items():
                setattr(row, k, v)
        return self.layer(datastack, name)

    def delete_layer(self, datastack: str, name: str) -> None:
        """Remove a layer's catalog row and its stored arrays (and those of an unfinished overwrite).
        Raises NotFound."""
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            paths = [row.path, ((row.progress or {}).get("replacing") or {}).get("path")]
            s.delete(row)
        for path in paths:
            if path:
                shutil.rmtree(self.root / path, ignore_errors=True)
        self._forget(datastack, name)

    def replace_layer(self, datastack: str, name: str, root: Path, spec: LayerSpec, **fields: Any) -> Layer:
        """Switch layer ``name`` to complete arrays built aside at ``root`` (a folder of this lake), atomically.

        One catalog transaction sets the row's ``path``, ``spec``, ``layer_type``, ``dtype``, ``status``
        (``ready``), ``created`` (now) and ``fields`` (``progress``, ``provenance``, ``description``);
        readers see the old layer until it commits and the new one after. The folder it replaced is then
        renamed away and removed (a kill in between leaves only a stray folder, swept by the next ingest
        of the layer). Raises NotFound; InvalidArgument when ``root`` is outside the lake or holds no layer.
        """
        import secrets

        from neurolake.db.base import utcnow

        root = Path(root).resolve()
        if not root.is_relative_to(self.root.resolve()) or not (root / "zarr.json").is_file():
            raise InvalidArgument(f"{str(root)!r} holds no layer of lake {str(self.root)!r}", field="root",
                                  value=str(root))
        rel = str(root.relative_to(self.root.resolve()))
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            old = row.path
            row.path, row.spec, row.layer_type, row.dtype = rel, spec.to_json(), spec.layer_type, spec.dtype
            row.status, row.created = "ready", utcnow()
            for k, v in fields.items():
                setattr(row, k, v)
        self._forget(datastack, name)
        if old != rel and (self.root / old).exists():
            # rename first: a reader of the old folder sees all of it or none of it, never a half-deleted mix
            trash = self.root / old
            trash = trash.rename(trash.with_name(f"{name}@old-{secrets.token_hex(6)}"))
            shutil.rmtree(trash, ignore_errors=True)
        return self.layer(datastack, name)

    def repair(self) -> dict[str, int]:
        """Finish the pyramid updates that killed writers left pending, in every ready layer;
        returns ``{"ds/layer": number finished}`` for the layers that had any."""
        out = {}
        for ds in self.datastacks():
            for info in self.datastack_info(ds)["layers"]:
                if info["status"] == "ready":
                    n = self.layer(ds, info["name"], finish_pending=False).repair()
                    if n:
                        out[f"{ds}/{info['name']}"] = n
        return out

    def ingest(self, source: str, datastack: str, layer: str, **kwargs: Any) -> Layer:
        """Ingest ``source`` as a new layer; see :func:`neurolake.volumes.ingest.ingest`."""
        from neurolake.volumes.ingest import ingest

        return ingest(self, source, datastack, layer, **kwargs)
