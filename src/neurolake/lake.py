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
from pathlib import Path
from typing import Any

from sqlalchemy import select

from neurolake.config import Settings, settings
from neurolake.db import Catalog
from neurolake.db.base import as_utc
from neurolake.errors import AlreadyExists, InvalidArgument, NotFound
from neurolake.volumes.layer import Layer
from neurolake.volumes.models import Datastack
from neurolake.volumes.models import Layer as LayerRow
from neurolake.volumes.spec import LayerSpec, check_name
from neurolake.volumes.store import create_arrays, make_context

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

    def __repr__(self) -> str:
        return f"<Lake {self.root}>"

    def close(self) -> None:
        """Write queued audit events (see ``neurolake.access``) and release catalog connections."""
        acc = getattr(self, "_nl_access", None)
        if acc is not None:
            acc.flush_audit()
        self.catalog.dispose()

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

    def datastacks(self) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            return [self._ds_dict(r) for r in s.scalars(select(Datastack).order_by(Datastack.name))]

    def datastack(self, name: str) -> dict[str, Any]:
        """Datastack metadata with its layers. Raises NotFound."""
        with self.catalog.session() as s:
            return self._ds_dict(self._ds_row(s, name), with_layers=True)

    def _ds_row(self, s, name: str) -> Datastack:
        row = s.scalar(select(Datastack).where(Datastack.name == name))
        if row is None:
            known = s.scalars(select(Datastack.name).order_by(Datastack.name)).all()
            raise NotFound(f"datastack {name!r} does not exist (known: {', '.join(known) or 'none'})",
                           datastack=name)
        return row

    def _layer_row(self, s, datastack: str, name: str) -> LayerRow:
        ds = self._ds_row(s, datastack)
        row = s.scalar(select(LayerRow).where(LayerRow.datastack_id == ds.id, LayerRow.name == name))
        if row is None:
            known = sorted(la.name for la in ds.layers)
            raise NotFound(f"layer {name!r} does not exist in datastack {datastack!r} "
                           f"(known: {', '.join(known) or 'none'})", datastack=datastack, layer=name)
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
        return self.root / "datastacks" / datastack / "volumes" / name

    def layers(self, datastack: str) -> list[Layer]:
        with self.catalog.session() as s:
            names = [r.name for r in self._ds_row(s, datastack).layers]
        return [self.layer(datastack, n) for n in sorted(names)]

    def layer(self, datastack: str, name: str) -> Layer:
        """The layer ``name`` of ``datastack``. Raises NotFound."""
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            key = (datastack, name, row.id, row.status, row.updated)
            layer = self._layers.get(key)
            if layer is None:
                layer = Layer(datastack=datastack, name=name, spec=LayerSpec.from_json(row.spec),
                              root=self.root / row.path, status=row.status, context=self.context,
                              description=row.description, progress=dict(row.progress),
                              provenance=dict(row.provenance), created=row.created)
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
        with self.catalog.session() as s:
            ds = self._ds_row(s, datastack)
            row = s.scalar(select(LayerRow).where(LayerRow.datastack_id == ds.id, LayerRow.name == name))
            if row is not None:
                if not overwrite:
                    raise AlreadyExists(f"layer {datastack}/{name} already exists ({row.status}); "
                                        "use overwrite to replace it", datastack=datastack, layer=name)
                s.delete(row)
                s.flush()
            s.add(LayerRow(datastack_id=ds.id, name=name, description=description, layer_type=spec.layer_type,
                           dtype=spec.dtype, path=str(rel), spec=spec.to_json(), status=status,
                           progress=progress or {}, provenance=provenance or {}))
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
        """Remove a layer's catalog row and its stored arrays. Raises NotFound."""
        with self.catalog.session() as s:
            row = self._layer_row(s, datastack, name)
            path = self.root / row.path
            s.delete(row)
        shutil.rmtree(path, ignore_errors=True)
        self._forget(datastack, name)

    def ingest(self, source: str, datastack: str, layer: str, **kwargs: Any) -> Layer:
        """Ingest ``source`` as a new layer; see :func:`neurolake.volumes.ingest.ingest`."""
        from neurolake.volumes.ingest import ingest

        return ingest(self, source, datastack, layer, **kwargs)
