"""Lake: one installation — a folder or an ``s3://bucket/prefix`` holding the stored data, plus its catalog.

Layout of a lake::

    lake.json                       marker: format version (and a database URL if one was given)
    catalog.sqlite                  the catalog (unless NEUROLAKE_DATABASE_URL selects PostgreSQL)
    datastacks/<ds>/volumes/<layer>/  OME-Zarr 0.5 group of sharded Zarr v3 arrays, one per mip

A lake on S3-compatible object storage (``neurolake init s3://bucket/prefix``) has the same layout under its
prefix and its catalog on PostgreSQL (``NEUROLAKE_DATABASE_URL`` or ``database_url=``): object storage has no
file locks, so its writers coordinate through the database (:mod:`neurolake.db.locks`). How each library
reaches the bytes comes from one :class:`neurolake.storage.config.StorageConfig` (``lake.storage``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurolake.base.names import check_name, not_found
from neurolake.base.settings import Settings, settings
from neurolake.errors import AlreadyExists, InvalidArgument, NotFound
from neurolake.storage.config import is_s3, storage_config
from neurolake.storage.files import lake_root, relative, remove_tree, write_text_atomic
from neurolake.volumes.layer import Layer
from neurolake.volumes.spec import LayerSpec
from neurolake.volumes.store import create_arrays, make_context

if TYPE_CHECKING:
    from neurolake.access.core import Access
    from neurolake.catalog.registry import FeatureRegistry
    from neurolake.datastack import Datastack as DatastackClient
    from neurolake.db import Catalog
    from neurolake.query.engine import QueryResult
    from neurolake.volumes.models import Datastack
    from neurolake.volumes.models import Layer as LayerRow

LAKE_FORMAT = 1
MARKER = "lake.json"
MIGRATED = "catalog.migrated"  # see neurolake.db.engine.Catalog.migrate_if_needed
LAYER_CACHE = "catalog.layers.json"  # layer rows of the current catalog generation, for opening without SQL
# Generation of the lake's layer and datastack catalog rows: a file replaced (new random content) by every
# change made through a Lake, in any process, before and after its transaction commits. Cached layer and
# datastack metadata is reused while it is unchanged, so a request that reads a layer does no SQL.
GENERATION = "catalog.generation"
META_MAX_AGE_S = 60.0  # in-memory metadata is re-read at least this often (belt and braces: two concurrent
#                        writers, one killed between its commit and its second bump, can leave the other's
#                        final token on rows read before the killed one committed)


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


def _remote_database(url: str | None) -> str:
    if not url or url.startswith("sqlite"):
        raise InvalidArgument("a lake on object storage keeps its catalog on PostgreSQL: set NEUROLAKE_DATABASE_URL "
                              "(postgresql+psycopg://user@host:port/db) or pass database_url", field="database_url",
                              value=url)
    return url


def init_lake(path: str | Path, database_url: str | None = None) -> Lake:
    """Create a lake at ``path``: a new or empty folder, or ``s3://bucket/prefix`` of an existing bucket (its
    catalog on PostgreSQL: ``database_url`` or ``NEUROLAKE_DATABASE_URL``); an existing lake is just opened.
    Raises InvalidArgument (a file in the way, an S3 lake without a PostgreSQL URL, a bad URL), NotFound (no
    such bucket)."""
    root = lake_root(path)
    remote = is_s3(root)
    if remote:
        _remote_database(database_url or settings().database_url)
        if not root.fs.exists(root.path.split("/", 1)[0]):
            raise NotFound(f"bucket of {str(root)!r} does not exist (or is not visible with these credentials)",
                           path=str(root))
    elif root.exists() and not root.is_dir():
        raise InvalidArgument(f"lake path {str(root)!r} exists and is not a folder", field="path", value=str(root))
    else:
        root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    if not marker.exists():
        doc: dict[str, Any] = {"neurolake_lake": LAKE_FORMAT}
        if database_url:
            doc["database_url"] = database_url
        marker.write_text(json.dumps(doc, indent=2))
    return Lake(root)


def open_lake(path: str | Path, create: bool = False) -> Lake:
    """Open the lake at ``path`` (a folder or ``s3://bucket/prefix``). With ``create=True`` a missing lake is
    created (see :func:`init_lake`).

    Raises NotFound when ``path`` holds no lake and ``create`` is false.
    """
    root = lake_root(path)
    if not (root / MARKER).exists():
        if create:
            return init_lake(root)
        raise NotFound(f"no lake at {str(root)!r}; create one with `neurolake init {root}`", path=str(root))
    return Lake(root)


class Lake:
    """An open lake. Use :func:`open_lake` / :func:`init_lake` rather than the constructor."""

    def __init__(self, root: Path | Any, config: Settings | None = None) -> None:
        self.root = lake_root(root)  # a Path, or a upath.UPath for s3://
        self.remote = is_s3(self.root)  # on object storage (catalog on PostgreSQL, locks in the database)
        self.storage = storage_config()
        self.settings = config or settings()
        marker = json.loads((self.root / MARKER).read_text())
        url = self.settings.database_url or marker.get("database_url") or f"sqlite:///{self.root / 'catalog.sqlite'}"
        if self.remote:
            _remote_database(self.settings.database_url or marker.get("database_url"))
        self._url = url
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        if not url.startswith("sqlite"):  # a server database: connect (and report a bad URL) at once
            self.catalog  # noqa: B018
        self.context = make_context(self.settings.cache_bytes, self.storage if self.remote else None)
        self._layers: dict[tuple, Layer] = {}
        self._layer_hits: dict[tuple[str, str], tuple[str, float, Layer]] = {}  # (ds, name) → (generation, t, layer)
        self._ds_hits: dict[str, tuple[str, float, dict[str, Any]]] = {}  # name → (generation, t, info)
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}
        self._state_lock = threading.RLock()  # reentrant: a factory may ask for another service

    def __repr__(self) -> str:
        return f"<Lake {self.root}>"

    @property
    def url(self) -> str:
        """Where the lake is: an absolute folder path or ``s3://bucket/prefix``."""
        return str(self.root)

    @property
    def locks(self) -> Any:
        """Named locks shared by every process and machine of a lake on object storage
        (:class:`neurolake.db.locks.AdvisoryLocks` on its PostgreSQL catalog); None for a local lake, whose
        writers use file locks."""
        if not self.remote:
            return None

        def make() -> Any:
            from neurolake.db.locks import AdvisoryLocks

            return AdvisoryLocks(self.catalog.engine, timeout_s=self.settings.write_lock_timeout_s)

        return self.state("locks", make)

    @property
    def tokens(self) -> Any:
        """Change tokens of a lake on object storage (:class:`neurolake.db.locks.ChangeTokens`: the catalog
        generation and each layer's); None for a local lake, which keeps them in small files."""
        if not self.remote:
            return None

        def make() -> Any:
            from neurolake.db.locks import ChangeTokens

            return ChangeTokens(self.catalog.engine)

        return self.state("tokens", make)

    @property
    def catalog(self) -> Catalog:
        """The catalog database (:class:`neurolake.db.Catalog`), connected and checked on first use: its
        schema is upgraded unless the ``catalog.migrated`` stamp shows it is at the heads of the migration
        scripts. A lake whose layers are read from the layer cache never imports the database stack."""
        cat = self._catalog
        if cat is None:
            with self._catalog_lock:
                if self._catalog is None:
                    from neurolake.db.engine import Catalog

                    c = Catalog(self._url)
                    c.migrate_if_needed(self.root / MIGRATED)
                    self._catalog = c
                cat = self._catalog
        return cat

    # -- metadata generation (cache invalidation across processes) ---------------------------------
    def generation(self) -> str:
        """A token that changes whenever a datastack or layer catalog row is changed through any Lake, in this
        process or another (``catalog.generation`` in the lake folder: one small file read). Cached layer
        and datastack metadata (:meth:`layer`, :meth:`datastack`) is reused while it is unchanged."""
        if self.remote:
            return self.tokens.get("lake") or "0"
        try:
            with open(self.root / GENERATION, "rb") as f:
                return f.read(64).decode("ascii", "replace") or "0"
        except FileNotFoundError:
            return "0"

    def _bump(self, pending: bool = False) -> None:
        """Mark the datastack/layer catalog as changed (every process's caches of it are dropped). A ``pending``
        generation (written before a change commits) is one under which nothing is cached."""
        token = ("p" if pending else "g") + uuid.uuid4().hex
        if self.remote:
            self.tokens.set("lake", token)
        else:
            write_text_atomic(self.root / GENERATION, token)
        with self._lock:
            self._layer_hits.clear()
            self._ds_hits.clear()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a change of datastack/layer rows: bump the generation before (readers that look meanwhile do
        not keep what they saw: nothing is cached under a pending generation) and after (whatever the outcome).
        A writer killed between its commit and the second bump leaves the pending generation: readers then
        go to the catalog on every lookup until the next change."""
        self._bump(pending=True)
        try:
            yield
        finally:
            self._bump()

    def close(self) -> None:
        """Close the lake's services (the access service writes its queued audit events) and release the
        catalog's connections."""
        with self._state_lock:
            held, self._state = list(self._state.values()), {}
        for obj in held:
            close = getattr(obj, "close", None)
            if callable(close):
                close()
        if self._catalog is not None:
            self._catalog.dispose()

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
        from sqlalchemy import select

        from neurolake.volumes.models import Datastack

        check_name("datastack", name)
        vs = _voxel_size(voxel_size)
        with self._changing(), self.catalog.session() as s:
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
        from sqlalchemy import select

        from neurolake.volumes.models import Datastack

        with self.catalog.session() as s:
            return list(s.scalars(select(Datastack.name).order_by(Datastack.name)))

    def datastack_infos(self) -> list[dict[str, Any]]:
        """Metadata of every datastack (without layers), sorted by name."""
        from sqlalchemy import select

        from neurolake.volumes.models import Datastack

        with self.catalog.session() as s:
            return [self._ds_dict(r) for r in s.scalars(select(Datastack).order_by(Datastack.name))]

    def datastack(self, name: str) -> DatastackClient:
        """The client of datastack ``name`` (layers, tables, segmentation, versions, connectome).
        Raises NotFound naming the known datastacks."""
        from neurolake.datastack import Datastack as DatastackClient

        self.datastack_info(name)  # NotFound; cached while the catalog generation is unchanged
        return DatastackClient(self, name)

    def __getitem__(self, name: str) -> DatastackClient:
        return self.datastack(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.datastack_info(name)
        except NotFound:
            return False
        return True

    def datastack_info(self, name: str) -> dict[str, Any]:
        """Datastack metadata with its layers. Raises NotFound. Answered from memory while the catalog
        generation (:meth:`generation`) is unchanged."""
        import copy

        gen = self.generation()
        hit = self._ds_hits.get(name)
        if hit is not None and hit[0] == gen and time.monotonic() - hit[1] < META_MAX_AGE_S:
            return copy.deepcopy(hit[2])
        with self.catalog.session() as s:
            info = self._ds_dict(self._ds_row(s, name), with_layers=True)
        if not gen.startswith("p"):
            if len(self._ds_hits) > 1024:
                self._ds_hits.clear()
            self._ds_hits[name] = (gen, time.monotonic(), info)
        return copy.deepcopy(info)

    def _ds_row(self, s, name: str) -> Datastack:
        from sqlalchemy import select

        from neurolake.volumes.models import Datastack

        row = s.scalar(select(Datastack).where(Datastack.name == name))
        if row is None:
            raise not_found("datastack", name, s.scalars(select(Datastack.name).order_by(Datastack.name)).all())
        return row

    def _layer_row(self, s, datastack: str, name: str) -> LayerRow:
        from sqlalchemy import select

        from neurolake.volumes.models import Layer as LayerRow

        ds = self._ds_row(s, datastack)
        row = s.scalar(select(LayerRow).where(LayerRow.datastack_id == ds.id, LayerRow.name == name))
        if row is None:
            raise not_found("layer", name, sorted(la.name for la in ds.layers), within=("datastack", datastack))
        return row

    @staticmethod
    def _ds_dict(row: Datastack, with_layers: bool = False) -> dict[str, Any]:
        from neurolake.db.base import as_utc

        d = {"name": row.name, "description": row.description, "voxel_size_nm": row.voxel_size_nm,
             "public": row.public, "created": as_utc(row.created).isoformat() if row.created else None}
        if with_layers:
            d["layers"] = [{"name": la.name, "type": la.layer_type, "dtype": la.dtype, "status": la.status}
                           for la in sorted(row.layers, key=lambda la: la.name)]
        return d

    def delete_datastack(self, name: str) -> None:
        with self._changing():
            with self.catalog.session() as s:
                row = self._ds_row(s, name)
                paths = [la.path for la in row.layers]
                s.delete(row)
            self._forget(name)
        for path in paths:
            self._remove_folder(path)
        remove_tree(self.root / "datastacks" / name)

    # -- layers -----------------------------------------------------------------------------------
    def layer_path(self, datastack: str, name: str) -> Path | Any:
        """Where a new layer ``name`` is created. An overwritten layer lives elsewhere (``<name>@<token>``):
        use ``lake.layer(ds, name).root`` for the current folder."""
        return self.root / "datastacks" / datastack / "volumes" / name

    def layers(self, datastack: str) -> list[Layer]:
        with self.catalog.session() as s:
            names = [r.name for r in self._ds_row(s, datastack).layers]
        return [self.layer(datastack, n) for n in sorted(names)]

    def layer(self, datastack: str, name: str, *, finish_pending: bool = True) -> Layer:
        """The layer ``name`` of ``datastack``. When its object is first made, the pyramid updates that killed
        writers left pending are finished (unless ``finish_pending`` is false). Raises NotFound.

        No SQL while the catalog generation (:meth:`generation`) is unchanged since the layer was last looked
        up: a change of the layer (status, overwrite, deletion, re-creation) through any Lake, in any
        process, is seen by the next call."""
        gen = self.generation()
        hit = self._layer_hits.get((datastack, name))
        if hit is not None and hit[0] == gen and time.monotonic() - hit[1] < META_MAX_AGE_S:
            return hit[2]
        layer = self._layer_from_catalog(datastack, name, finish_pending, gen)
        if not gen.startswith("p"):  # a change is being committed: do not keep what was read
            if len(self._layer_hits) > 4096:
                self._layer_hits.clear()
            self._layer_hits[(datastack, name)] = (gen, time.monotonic(), layer)
        return layer

    def cached_layer(self, datastack: str, name: str) -> Layer | None:
        """The layer when :meth:`layer` would answer it from memory (its catalog generation is unchanged), else
        None: no database I/O (one small file read), so asyncio code may call it on its event loop."""
        hit = self._layer_hits.get((datastack, name))
        if hit is not None and hit[0] == self.generation() and time.monotonic() - hit[1] < META_MAX_AGE_S:
            return hit[2]
        return None

    def _layer_from_catalog(self, datastack: str, name: str, finish_pending: bool, gen: str) -> Layer:
        from neurolake.base.time import parse_timestamp

        entry = self._row_from_file(datastack, name, gen)
        if entry is None:
            with self.catalog.session() as s:
                row = self._layer_row(s, datastack, name)
                entry = {"id": row.id, "status": row.status, "path": row.path, "spec": row.spec,
                         "updated": row.updated.isoformat() if row.updated else None,
                         "created": row.created.isoformat() if row.created else None,
                         "description": row.description, "progress": row.progress or {},
                         "provenance": row.provenance or {}}
            self._row_to_file(datastack, name, gen, entry)
        key = (datastack, name, entry["id"], entry["status"], entry["updated"], entry["path"])
        layer = self._layers.get(key)
        if layer is None:
            created = parse_timestamp(entry["created"], "created")  # aware UTC (the catalog's are naive UTC)
            layer = Layer(datastack=datastack, name=name, spec=LayerSpec.from_json(entry["spec"]),
                          root=self.root / entry["path"], status=entry["status"], context=self.context,
                          locks=self.locks, tokens=self.tokens,
                          description=entry["description"], progress=dict(entry["progress"]),
                          provenance=dict(entry["provenance"]), created=created)
            if self.remote:  # its change token exists while the layer does (dropped when it is replaced)
                self.tokens.set(f"layer:{layer.root}", "g" + uuid.uuid4().hex, only_if_missing=True)
            if entry["status"] == "ready" and finish_pending:
                layer.repair()  # finish pyramid updates a killed writer left (see Layer.pending_updates)
            with self._lock:
                self._forget(datastack, name)
                self._layers[key] = layer
        return layer

    # The layer-row file (catalog.layers.json) lets a new process open a layer without the database: rows read
    # from the catalog under generation g are kept there tagged g and used only while the generation is still g.
    # A generation written *before* a change commits starts with "p" (pending): nothing is kept under it.
    def _row_from_file(self, datastack: str, name: str, gen: str) -> dict[str, Any] | None:
        if gen.startswith("p") or self.remote:  # on object storage the catalog is cheaper than another GET
            return None
        try:
            doc = json.loads((self.root / LAYER_CACHE).read_text())
            return doc["layers"].get(f"{datastack}/{name}") if doc.get("generation") == gen else None
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return None

    def _row_to_file(self, datastack: str, name: str, gen: str, entry: dict[str, Any]) -> None:
        import os

        if gen.startswith("p") or self.remote or self.generation() != gen:  # changed meanwhile: may be stale
            return
        try:
            try:
                doc = json.loads((self.root / LAYER_CACHE).read_text())
                layers = doc["layers"] if doc.get("generation") == gen and isinstance(doc.get("layers"), dict) else {}
            except (OSError, ValueError, KeyError):
                layers = {}
            layers[f"{datastack}/{name}"] = entry
            tmp = self.root / f".{LAYER_CACHE}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(json.dumps({"generation": gen, "layers": layers}, default=str))
            os.replace(tmp, self.root / LAYER_CACHE)
        except OSError:  # a read-only lake folder: no file cache
            pass

    def _forget(self, datastack: str, name: str | None = None) -> None:
        for k in [k for k in self._layers if k[0] == datastack and (name is None or k[1] == name)]:
            self._layers.pop(k, None)
        for k in [k for k in self._layer_hits if k[0] == datastack and (name is None or k[1] == name)]:
            self._layer_hits.pop(k, None)

    def create_layer(self, datastack: str, name: str, spec: LayerSpec, description: str = "",
                     provenance: dict | None = None, progress: dict | None = None, status: str = "ingesting",
                     overwrite: bool = False) -> Layer:
        """Create the catalog row and empty arrays of a layer (status ``ingesting`` until finished).

        Raises NotFound (datastack), AlreadyExists (unless ``overwrite``).
        """
        from sqlalchemy import select

        from neurolake.volumes.models import Layer as LayerRow

        check_name("layer", name)
        rel = relative(self.layer_path(datastack, name), self.root)
        stale: list[str] = []
        with self._changing(), self.catalog.session() as s:
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
                self._remove_folder(old)
        self._forget(datastack, name)
        create_arrays(self.root / rel, spec, name, self.context, self.storage)
        return self.layer(datastack, name)

    def _remove_folder(self, rel: str) -> None:
        """Remove a layer folder (relative to the root) and, on object storage, its change token (a reader still
        holding the layer then gets a Conflict: Layer._check_current)."""
        if self.remote:
            self.tokens.drop(f"layer:{self.root / rel}")
        remove_tree(self.root / rel)

    def update_layer(self, datastack: str, name: str, **fields: Any) -> Layer:
        """Update catalog fields of a layer (``status``, ``progress``, ``provenance``, ``description``)."""
        with self._changing(), self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            for k, v in fields.items():
                setattr(row, k, v)
        return self.layer(datastack, name)

    def delete_layer(self, datastack: str, name: str) -> None:
        """Remove a layer's catalog row and its stored arrays (and those of an unfinished overwrite).
        Raises NotFound."""
        with self._changing(), self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            paths = [row.path, ((row.progress or {}).get("replacing") or {}).get("path")]
            s.delete(row)
        for path in paths:
            if path:
                self._remove_folder(path)
        self._forget(datastack, name)

    def replace_layer(self, datastack: str, name: str, root: Path | Any, spec: LayerSpec, **fields: Any) -> Layer:
        """Switch layer ``name`` to complete arrays built aside at ``root`` (a folder of this lake), atomically.

        One catalog transaction sets the row's ``path``, ``spec``, ``layer_type``, ``dtype``, ``status``
        (``ready``), ``created`` (now) and ``fields`` (``progress``, ``provenance``, ``description``);
        readers see the old layer until it commits and the new one after. The folder it replaced is then
        renamed away and removed (a kill in between leaves only a stray folder, swept by the next ingest
        of the layer). Raises NotFound; InvalidArgument when ``root`` is outside the lake or holds no layer.
        """
        import secrets

        from neurolake.db.base import utcnow

        try:
            rel = relative(root, self.root)
        except ValueError:
            rel = None
        if rel is None or not (self.root / rel / "zarr.json").is_file():
            raise InvalidArgument(f"{str(root)!r} holds no layer of lake {str(self.root)!r}", field="root",
                                  value=str(root))
        with self._changing(), self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            old = row.path
            row.path, row.spec, row.layer_type, row.dtype = rel, spec.to_json(), spec.layer_type, spec.dtype
            row.status, row.created = "ready", utcnow()
            for k, v in fields.items():
                setattr(row, k, v)
        self._forget(datastack, name)
        if old != rel and self.remote:
            # no rename on object storage: its group marker goes first (a reader of the old layer then gets a
            # Conflict, see Layer._check_current), then the rest
            (self.root / old / "zarr.json").unlink(missing_ok=True)
            self._remove_folder(old)
        elif old != rel and (self.root / old).exists():
            # rename first: a reader of the old folder sees all of it or none of it, never a half-deleted mix
            trash = self.root / old
            trash = trash.rename(trash.with_name(f"{name}@old-{secrets.token_hex(6)}"))
            remove_tree(trash)
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
