"""Which tables a SQL statement names, and exactly what each one is: the lake's naming scheme and pins.

Names (DuckDB identifiers; see docs/query.md):

- ``DS.TABLE``: annotation table ``TABLE`` of datastack ``DS``: its rows valid now (``deleted IS NULL``),
  read at the table's newest Delta version;
- ``DS."TABLE@7"`` (a Delta version) or ``DS."TABLE@2026-11-30T12:00:00Z"`` (rows valid at that time,
  read at the Delta version current when first resolved): a pinned annotation table;
- ``DS.edits``: the proofreading edit log (operations, oldest first) up to an operation id
  (``DS."edits@12"``); the chunkedgraph pin;
- ``DS.vN.TABLE``: table ``TABLE`` of materialization version ``N`` (root ids bound at the version's
  timestamp); ``DS.vN.connectome``: its connectome edges (pre root, post root, synapse count, summed size);
  ``DS.latest.TABLE``: the newest valid version (resolved at run time: not a pin);
- ``features.NAME`` or ``features.DS.NAME``: a registered feature table, at its registered fingerprint
  (``features."NAME@<fingerprint prefix>"`` checks the prefix).

``pins={"gerhard2013.synapses": 7, "features.bouton_size": "3f2a…"}`` pins names given without a pin in
the SQL; a reproduced run passes every recorded pin this way.

Each resolved input is a JSON-able dict (``name``, ``kind``, ``datastack``, ``table``, ``pin``,
``pinned_by``, ``location``, ``files``, ``bytes``, ``segmentation``) plus the SQL of the view that
reads it (``view_sql``, not recorded). Errors name what exists: NotFound for unknown datastacks,
tables, versions and feature tables; InvalidArgument for a malformed name or pin; VersionExpired
for an expired version; CorruptData when files of a pinned input are gone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurolake.annotations.paths import delta_options, file_sizes, missing_files, open_input
from neurolake.base.names import not_found
from neurolake.base.time import isoformat, parse_timestamp
from neurolake.base.trees import walk
from neurolake.errors import CorruptData, InvalidArgument, NotFound

FEATURES = "features"
EDITS = "edits"
CONNECTOME = "connectome"
LATEST = "latest"
EPHYS = "ephys"
SKELETONS = "skeletons"
RESERVED = {"memory", "system", "temp", "main"}  # DuckDB catalog names a datastack cannot use in SQL
_VERSION = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Reference:
    """One table reference as written in the SQL: ``catalog.schema.table`` (empty parts omitted)."""

    catalog: str
    schema: str
    table: str

    @property
    def written(self) -> str:
        return ".".join(_quote(p) for p in (self.catalog, self.schema, self.table) if p)


def _quote(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else '"' + part.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# -------------------------------------------------------------------------------------------------
# parsing
# -------------------------------------------------------------------------------------------------
def parse_tree(con, sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql`` (``json_serialize_sql``). Raises InvalidArgument with DuckDB's
    message (and position) when the SQL does not parse."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):
        raise InvalidArgument(f"SQL does not parse: {tree.get('error_message')}", field="sql",
                              position=tree.get("position"))
    return tree


def references(tree: dict[str, Any]) -> list[Reference]:
    """Table references of a parsed statement, in order, without CTE names."""
    ctes: set[str] = set()
    for n in walk(tree):
        cte_map = n.get("cte_map") if isinstance(n, dict) else None
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []) or []:
                if isinstance(entry, dict) and entry.get("key"):
                    ctes.add(str(entry["key"]).lower())
    out: list[Reference] = []
    for n in walk(tree):
        if n.get("type") == "BASE_TABLE" and "table_name" in n:
            ref = Reference(n.get("catalog_name") or "", n.get("schema_name") or "", n["table_name"])
            if not ref.catalog and not ref.schema and ref.table.lower() in ctes:
                continue
            if ref not in out:
                out.append(ref)
    return out


def function_names(tree: dict[str, Any]) -> set[str]:
    """Lower-case names of every function called in the statement (scalar, aggregate, table)."""
    names = set()
    for n in walk(tree):
        if n.get("class") == "FUNCTION" and n.get("function_name"):
            names.add(str(n["function_name"]).lower())
        if n.get("type") == "TABLE_FUNCTION":
            fn = n.get("function") or {}
            if fn.get("function_name"):
                names.add(str(fn["function_name"]).lower())
    return names


def top_modifiers(tree: dict[str, Any]) -> set[str]:
    """Modifier types (``ORDER_MODIFIER``, ``LIMIT_MODIFIER``, …) of the statement's outermost query."""
    try:
        node = tree["statements"][0]["node"]
    except (KeyError, IndexError):
        return set()
    return {m.get("type") for m in node.get("modifiers") or []}


def split_pin(name: str) -> tuple[str, str | None]:
    """``"synapses@7"`` → ``("synapses", "7")``; ``"synapses"`` → ``("synapses", None)``."""
    base, sep, pin = name.partition("@")
    if sep and not pin:
        raise InvalidArgument(f"table name {name!r} has an empty pin after '@'; write name@DELTA_VERSION or "
                              "name@ISO-TIMESTAMP", field="sql", value=name)
    return base, (pin if sep else None)


# -------------------------------------------------------------------------------------------------
# resolution
# -------------------------------------------------------------------------------------------------
class Resolver:
    """Resolves references of one query against one lake (with the principal's rights when given)."""

    def __init__(self, lake, *, principal=None, pins: dict[str, Any] | None = None,
                 datastack: str | None = None) -> None:
        self.lake = lake
        self.principal = principal
        self.pins = {str(k): v for k, v in (pins or {}).items()}
        self.default = datastack
        self.used_pins: set[str] = set()
        self._datastacks: list[str] | None = None

    # -- helpers ----------------------------------------------------------------------------------
    def datastacks(self) -> list[str]:
        if self._datastacks is None:
            self._datastacks = self.lake.datastacks()
        return self._datastacks

    def _check_datastack(self, ds: str) -> None:
        p = self.principal
        if p is not None and not (p.is_admin or p.local):
            # rights first: a datastack the user may not read gets the same 403 whether it exists or not
            self.lake.access.require(p, ds, "viewer", "querying")
        if ds not in self.datastacks():
            known = [d for d in self.datastacks() if p is None or p.is_admin or p.local
                     or self.lake.access.allowed(p, d, "viewer")]
            raise not_found("datastack", ds, known, hint="tables are named datastack.table, "
                            "datastack.vN.table or features.name", field="sql")

    def _pin_for(self, canonical: str, written: str | None) -> tuple[dict | None, str | None, str]:
        """How ``canonical`` is pinned: ``(recorded, pin, pinned_by)``. ``recorded`` is the full pin dict a
        reproduced run passes in ``pins=`` (then ``pin`` is None); ``pin`` the text written after ``@`` in the
        SQL or given in ``pins=``; ``pinned_by`` "sql", "argument" or "latest" (unpinned). Raises
        InvalidArgument when the SQL and ``pins=`` pin it differently."""
        arg = self.pins.get(canonical)
        if isinstance(arg, dict):
            self.used_pins.add(canonical)
            return arg, None, "argument"
        if written is not None and arg is not None and str(arg) != written:
            raise InvalidArgument(f"{canonical} is pinned twice: @{written} in the SQL and {arg!r} in pins=",
                                  field="pins", value=canonical)
        if written is not None:
            return None, written, "sql"
        if arg is not None:
            self.used_pins.add(canonical)
            return None, str(arg), "argument"
        return None, None, "latest"

    def resolve(self, ref: Reference) -> dict[str, Any]:
        """The input dict (with ``view_sql``) for ``ref``. Raises NotFound, InvalidArgument, …"""
        cat, schema, table = ref.catalog, ref.schema, ref.table
        if not cat and not schema:
            if self.default is None:
                raise InvalidArgument(
                    f"table {table!r} is not qualified; name tables datastack.table (datastacks: "
                    f"{', '.join(self.datastacks()) or 'none'}), datastack.vN.table or features.name",
                    field="sql", value=table)
            cat, schema = self.default, ""
        elif not cat:  # two-part names: DuckDB cannot tell catalog.table from schema.table
            cat, schema = schema, ""
        if cat == FEATURES:
            return self._feature(schema or None, table)
        if cat in RESERVED:
            raise InvalidArgument(f"{ref.written!r}: {cat!r} is not a datastack; datastacks: "
                                  f"{', '.join(self.datastacks()) or 'none'}", field="sql", value=ref.written)
        self._check_datastack(cat)
        if schema in ("", "main"):
            base, pin = split_pin(table)
            if base == EDITS:
                return self._edits(cat, pin)
            return self._annotation(cat, base, pin)
        if schema == EPHYS:
            base, pin = split_pin(table)
            return self._ephys(cat, base, pin)
        if schema == SKELETONS:
            base, pin = split_pin(table)
            return self._skeletons(cat, base, pin)
        m = _VERSION.match(schema)
        if schema == LATEST or m:
            base, pin = split_pin(table)
            if pin is not None:
                raise InvalidArgument(f"{ref.written}: a version table is pinned by its version "
                                      f"({cat}.v<N>.{base}); it takes no @pin", field="sql", value=ref.written)
            return self._version(cat, int(m.group(1)) if m else None, base, ref)
        raise InvalidArgument(f"{ref.written!r}: {schema!r} is not a materialization version; write "
                              f"{cat}.v<N>.{table} (versions: {self._version_names(cat)}) or {cat}.{table}",
                              field="sql", value=ref.written)

    def _version_names(self, ds: str) -> str:
        from neurolake.materialize import versions

        return ", ".join(f"v{v['version']}" for v in versions(self.lake, ds)) or "none yet"

    # -- annotation tables ------------------------------------------------------------------------
    def _annotation(self, ds: str, name: str, written: str | None) -> dict[str, Any]:
        from deltalake import DeltaTable

        from neurolake.annotations import get_table, list_tables

        known = list_tables(self.lake, ds)
        if name not in known:
            raise not_found("table", name, [*known, EDITS], within=("datastack", ds),
                            hint=f"materialized tables are {ds}.v<N>.<table>", field="sql")
        t = get_table(self.lake, ds, name)
        if self.principal is not None:
            self.lake.access.require_table(self.principal, t, "read")
        canonical = f"{ds}.{name}"
        rec, pin, by = self._pin_for(canonical, written)
        ts = None
        if rec is not None:  # a reproduced run passes the full recorded pin
            version = int(rec["delta_version"])
            ts = parse_timestamp(rec.get("timestamp"), "pin") if rec.get("timestamp") else None
        else:
            if pin is None:
                version = t.version
            elif re.fullmatch(r"\d+", pin):
                version = int(pin)
            else:  # rows valid at a time, read at the newest Delta version (soft deletes keep history)
                ts = parse_timestamp(pin, "pin")
                version = t.version
        if version > t.version or version < 0:
            raise NotFound(f"{canonical}: Delta version {version} does not exist (versions 0–{t.version})",
                           field="pin", value=version)
        # a Delta version's file list and commit time never change: kept by the lake (bounded)
        known = self.lake.state("query.delta_versions", dict)
        hit = known.get((str(t.path), version))
        if hit is None:
            try:
                d = DeltaTable(str(t.path), version=version, storage_options=delta_options(t.path) or None)
            except Exception as exc:  # noqa: BLE001 - deltalake raises its own error types
                raise CorruptData(f"input {canonical} pinned at Delta version {version}: the Delta log of that "
                                  f"version cannot be read ({exc}); it was removed (vacuumed/checkpoint cleanup?)",
                                  input=canonical, pin={"delta_version": version}) from exc
            hit = (list(d.file_uris()), _commit_time(d, version))
            if len(known) > 1024:
                known.clear()
            known[(str(t.path), version)] = hit
        files, committed = hit
        sizes = file_sizes(files)
        missing = [f for f in files if sizes.get(f) is None]
        if missing:
            raise CorruptData(f"input {canonical} pinned at Delta version {version} (committed {committed}): "
                              f"{len(missing)} of its {len(files)} data files are gone (vacuumed), e.g. "
                              f"{_name(missing[0])}; the pinned data cannot be read",
                              input=canonical, pin={"delta_version": version}, missing=len(missing))
        cols = []
        idc = set(t.id_columns)
        for f in t.arrow_schema:
            q = _quote(f.name)
            cols.append(f"CAST({q} AS UBIGINT) AS {q}" if f.name in idc else q)
        if ts is None:
            where = "deleted IS NULL"
        else:
            lit = sql_literal(ts.isoformat())
            where = f"created <= {lit}::TIMESTAMPTZ AND (deleted IS NULL OR deleted > {lit}::TIMESTAMPTZ)"
        view, arrow = None, None
        if files:
            view = f"SELECT {', '.join(cols)} FROM {_read_parquet(files)} WHERE {where}"
        else:  # a table with no rows yet
            import pyarrow as pa

            empty = t.arrow_schema.empty_table()
            arrow = pa.table([c.cast(pa.uint64()) if n in idc else c for n, c in
                              zip(empty.column_names, empty.columns, strict=True)], names=empty.column_names)
        return {"name": canonical, "kind": "annotation", "datastack": ds, "table": name,
                "pin": {"delta_version": version, "committed": committed, "timestamp": isoformat(ts)},
                "pinned_by": by, "location": str(t.path), "files": files,
                "bytes": sum(v or 0 for v in sizes.values()),
                "segmentation": self._segmentation(ds, ts), "view_sql": view, "arrow": arrow}

    # -- the edit log ------------------------------------------------------------------------------
    def _edits(self, ds: str, written: str | None) -> dict[str, Any]:
        import pyarrow as pa

        from neurolake.proofreading import has_segmentation, segmentation

        canonical = f"{ds}.{EDITS}"
        if not has_segmentation(self.lake, ds):
            raise NotFound(f"datastack {ds!r} has no proofreading segmentation, so no edit log ({canonical})",
                           field="sql", value=canonical)
        seg = segmentation(self.lake, ds)
        rec, pin, by = self._pin_for(canonical, written)
        ops = seg.operations()
        last = ops[-1]["operation_id"] if ops else 0
        if rec is not None:
            upto = int(rec["operation_id"])
        elif pin is None:
            upto = last
        elif re.fullmatch(r"\d+", pin):
            upto = int(pin)
            if upto > last:
                raise NotFound(f"{canonical}: operation {upto} does not exist (operations 1–{last})",
                               field="pin", value=upto)
        else:
            ts = parse_timestamp(pin, "pin")
            upto = max([o["operation_id"] for o in ops if parse_timestamp(o["timestamp"]) <= ts], default=0)
        ops = [o for o in ops if o["operation_id"] <= upto]
        u64 = pa.list_(pa.uint64())
        tab = pa.table({
            "operation_id": pa.array([o["operation_id"] for o in ops], pa.int64()),
            "kind": pa.array([o["kind"] for o in ops], pa.string()),
            "author": pa.array([o["author"] for o in ops], pa.string()),
            "timestamp": pa.array([parse_timestamp(o["timestamp"]) for o in ops], pa.timestamp("us", tz="UTC")),
            "old_roots": pa.array([o["old_roots"] for o in ops], u64),
            "new_roots": pa.array([o["new_roots"] for o in ops], u64),
            "targets": pa.array([o["targets"] or [] for o in ops], pa.list_(pa.int64())),
            # an undo after the pin has not happened yet as of the pin
            "undone_by": pa.array([o["undone_by"] if o["undone_by"] and o["undone_by"] <= upto else None
                                   for o in ops], pa.int64()),
            "n_edges": pa.array([len(o["edges"]) for o in ops], pa.int64()),
        })
        at = next((o["timestamp"] for o in reversed(ops)), None)
        return {"name": canonical, "kind": "edits", "datastack": ds, "table": EDITS,
                "pin": {"operation_id": upto, "timestamp": at}, "pinned_by": by, "location": None, "files": [],
                "bytes": tab.nbytes, "segmentation": {"layer": seg.layer, "operation_id": upto, "timestamp": at},
                "arrow": tab, "view_sql": None}

    def _segmentation(self, ds: str, ts: dt.datetime | None) -> dict[str, Any] | None:
        """The chunkedgraph pin: the segmentation's last operation at ``ts`` (None = now)."""
        from neurolake.proofreading import has_segmentation, segmentation

        if not has_segmentation(self.lake, ds):
            return None
        seg = segmentation(self.lake, ds)
        st = seg.state()
        seq = st.seq_at(ts) if ts is not None else st.seq
        return {"layer": seg.layer, "operation_id": int(seq), "timestamp": isoformat(ts)}

    # -- materialization versions -----------------------------------------------------------------
    def _version(self, ds: str, version: int | None, name: str, ref: Reference) -> dict[str, Any]:
        from neurolake.materialize.versions import get_version

        canonical_v = f"{ds}.v{{}}.{name}"
        rec = self.pins.get(f"{ds}.{LATEST}.{name}")
        if version is None and rec is not None:
            version = int(rec["version"] if isinstance(rec, dict) else rec)
            by = "argument"
        else:
            by = "sql" if version is not None else "latest"
        v = get_version(self.lake, ds, version, allow_expired=False)
        n = v["version"]
        tables = sorted(v["tables"])
        kind = "version_table"
        table_name = name
        if name == CONNECTOME:
            kind = "connectome"
            syn = [t for t, m in v["tables"].items() if m.get("schema") == "synapse"]
            if len(syn) != 1:
                raise InvalidArgument(f"{ref.written}: version {n} of {ds!r} has {len(syn)} synapse tables "
                                      f"({', '.join(syn) or 'none'}); query them directly", field="sql")
            table_name = syn[0]
        elif name not in v["tables"]:
            raise not_found("table", name, [*tables, CONNECTOME], within=("version", f"{ds}.v{n}"), field="sql")
        if self.principal is not None:
            from neurolake.annotations import get_table, list_tables

            if table_name in list_tables(self.lake, ds):
                self.lake.access.require_table(self.principal, get_table(self.lake, ds, table_name), "read")
        path = self.lake.root / v["path"] / f"{table_name}.parquet"
        if not path.exists():
            raise CorruptData(f"input {canonical_v.format(n)} (materialization version {n}, timestamp "
                              f"{v['timestamp']}): its file {path.name} is gone", input=canonical_v.format(n))
        src = _read_parquet([str(path)])
        if kind == "connectome":
            size = "COALESCE(sum(size), 0.0)" if "size" in _parquet_names(path) else "CAST(NULL AS DOUBLE)"
            view = (f"SELECT pre_pt_root_id AS pre, post_pt_root_id AS post, count(*) AS n_synapses, "
                    f"{size} AS size_sum FROM {src} WHERE pre_pt_root_id <> 0 AND post_pt_root_id <> 0 "
                    "GROUP BY ALL")
        else:
            view = f"SELECT * FROM {src}"
        seg = (v.get("provenance") or {}).get("inputs", {}).get("segmentation") if v.get("provenance") else None
        return {"name": canonical_v.format(n), "kind": kind, "datastack": ds, "table": name,
                "pin": {"version": n, "timestamp": v["timestamp"], "table": table_name}, "pinned_by": by,
                "location": str(path.parent), "files": [str(path)], "bytes": _size([str(path)]),
                "segmentation": seg, "view_sql": view}

    # -- ephys tables -----------------------------------------------------------------------------
    def _ephys(self, ds: str, name: str, written: str | None) -> dict[str, Any]:
        """``DS.ephys.TABLE`` (``DS.ephys."TABLE@7"``: Delta version 7): rows of loaded files only — the view
        keeps rows whose file has a row in ``files`` at the ``files`` version current when resolved (or
        recorded), so rows of an ingest killed mid-batch never show."""
        from deltalake import DeltaTable

        from neurolake.ephys import tables as et

        known = [t for t in et.TABLES if et.exists(self.lake, ds, t)]
        if name not in known:
            raise not_found("ephys table", name, known, within=("datastack", ds),
                            hint="load recordings with `neurolake ephys ingest`", field="sql")
        canonical = f"{ds}.{EPHYS}.{name}"
        rec, pin, by = self._pin_for(canonical, written)
        newest = et.version(self.lake, ds, name)
        keyed = name in et.KEYED
        files_v: int | None = None
        version = _delta_version(canonical, "ephys tables", rec, pin, newest)
        if rec is not None:
            files_v = rec.get("files_version")
        if keyed and rec is None:  # which files were loaded when this version was current
            files_v = et.files_version_for(self.lake, ds, name, version)
            if files_v == -1:
                files_v = et.version(self.lake, ds, "files")

        def files_of(table: str, v: int) -> tuple[list[str], str | None]:
            try:
                loc = et.table_path(self.lake, ds, table)
                d = DeltaTable(str(loc), version=v, storage_options=delta_options(loc) or None)
            except Exception as exc:  # noqa: BLE001 - deltalake raises its own error types
                raise CorruptData(f"input {canonical}: Delta version {v} of ephys table {table} cannot be read "
                                  f"({exc})", input=canonical) from exc
            return list(d.file_uris()), _commit_time(d, v)

        data, committed = files_of(name, version)
        marker: list[str] = []
        if keyed and files_v is not None:
            marker, _ = files_of("files", int(files_v))
        missing = missing_files(data + marker)
        if missing:
            raise CorruptData(f"input {canonical} pinned at Delta version {version}: {len(missing)} data files are "
                              f"gone (vacuumed), e.g. {_name(missing[0])}", input=canonical)
        view, arrow = None, None
        if data and (marker or not keyed):
            view = f"SELECT * FROM {_read_parquet(data)}"
            if marker:
                view += f" WHERE file_sha256 IN (SELECT file_sha256 FROM {_read_parquet(marker)})"
        else:  # no rows, or no file loaded at that version
            arrow = et.SCHEMAS[name].empty_table()
        pin_rec = {"delta_version": version, "committed": committed}
        if keyed:
            pin_rec["files_version"] = files_v
        return {"name": canonical, "kind": "ephys", "datastack": ds, "table": name, "pin": pin_rec,
                "pinned_by": by, "location": str(et.table_path(self.lake, ds, name)), "files": data + marker,
                "bytes": _size(data + marker), "segmentation": None, "view_sql": view, "arrow": arrow}

    # -- skeleton tables --------------------------------------------------------------------------
    def _skeletons(self, ds: str, layer: str, written: str | None) -> dict[str, Any]:
        """``DS.skeletons.LAYER`` (``DS.skeletons."LAYER@3"``: Delta version 3): the skeleton table of a
        segmentation layer (docs/skeletons.md), one row per skeleton, one Delta version per build."""
        from deltalake import DeltaTable

        from neurolake.skeletons import store

        layers = {la.name: la for la in self.lake.layers(ds)}
        known = [n for n, la in layers.items() if (store.table_path(la) / "_delta_log").is_dir()]
        if layer not in known:
            raise not_found("skeleton table", layer, known, within=("datastack", ds),
                            hint="build skeletons with `neurolake skeleton build`", field="sql")
        la = layers[layer]
        canonical = f"{ds}.{SKELETONS}.{layer}"
        rec, pin, by = self._pin_for(canonical, written)
        newest = store.table_version(la)
        version = _delta_version(canonical, "skeleton tables", rec, pin, newest)
        path = store.table_path(la)
        try:
            d = DeltaTable(str(path), version=version, storage_options=delta_options(path) or None)
        except Exception as exc:  # noqa: BLE001 - deltalake raises its own error types
            raise CorruptData(f"input {canonical}: Delta version {version} cannot be read ({exc})",
                              input=canonical) from exc
        files = list(d.file_uris())
        missing = missing_files(files)
        if missing:
            raise CorruptData(f"input {canonical} pinned at Delta version {version}: {len(missing)} data files are "
                              f"gone (vacuumed), e.g. {_name(missing[0])}", input=canonical)
        view, arrow = None, None
        if files:
            view = f"SELECT * FROM {_read_parquet(files)}"
        else:
            arrow = store.table_schema().empty_table()
        return {"name": canonical, "kind": "skeletons", "datastack": ds, "table": layer,
                "pin": {"delta_version": version, "committed": _commit_time(d, version)}, "pinned_by": by,
                "location": str(path), "files": files, "bytes": _size(files), "segmentation": None,
                "view_sql": view, "arrow": arrow}

    # -- feature tables ---------------------------------------------------------------------------
    def _feature(self, ds: str | None, table: str) -> dict[str, Any]:
        from neurolake.catalog.registry import FeatureRegistry

        base, written = split_pin(table)
        reg = FeatureRegistry(self.lake, self.principal) if self.principal is not None else self.lake.features
        entry = reg.get(base, ds, with_files=True)
        canonical = f"{FEATURES}.{entry['datastack']}.{base}"
        rec, pin, by = self._pin_for(canonical, written)
        if rec is None and pin is None and ds is None:  # pins= may name the short form
            rec, pin, by = self._pin_for(f"{FEATURES}.{base}", None)
        fp = entry["fingerprint"] or {}
        value = str(fp.get("value"))
        if rec is not None:
            want = str((rec.get("fingerprint") or {}).get("value"))
            if want != value:
                raise CorruptData(f"input {canonical} was pinned at fingerprint {want[:16]}… but the registered "
                                  f"table now has {value[:16]}… (re-registered with other data); the pinned "
                                  "data is gone", input=canonical, pin=rec)
        elif pin is not None and not value.startswith(pin):
            raise CorruptData(f"input {canonical} pinned at fingerprint {pin!r} but the registered table has "
                              f"{value[:16]}…", input=canonical, pin=pin)
        loc = entry["location"]
        fmt = entry["format"]
        remote = loc.startswith("s3://")
        if remote:  # files are listed relative to the location (a single-file table lists its own name)
            reg_files = entry.get("files") or []
            single = len(reg_files) == 1 and loc.rstrip("/").endswith("/" + reg_files[0]["path"])
            base = loc.rstrip("/").rsplit("/", 1)[0] if single else loc.rstrip("/")

            def at(rel: str) -> str:
                return f"{base}/{rel}"
        else:
            base_dir = Path(loc)
            if base_dir.is_file():
                base_dir = base_dir.parent

            def at(rel: str) -> str:
                return str(base_dir / rel)
        view, arrow, files = None, None, []
        if fmt == "lance":
            import lance

            from neurolake.storage import lance_storage_options

            opts = lance_storage_options(loc) or None
            arrow = lance.dataset(loc, version=fp.get("value"), storage_options=opts) \
                if isinstance(fp.get("value"), int) else lance.dataset(loc, storage_options=opts)
            files = [at(f["path"]) for f in entry.get("files") or []]
        else:
            from neurolake.catalog.registry import _data_files

            data = _data_files(fmt, entry.get("files") or [], fp)
            files = [at(f["path"]) for f in data if str(f["path"]).endswith(".parquet")]
            if fmt == "delta":
                files = [f for f in files if "/_delta_log/" not in f]
                files = _delta_files(loc, fp) or files
            for f in data if not remote else []:
                p = Path(at(f["path"]))
                if str(p) in files:
                    try:
                        size = p.stat().st_size
                    except OSError:
                        size = None
                    if size is not None and f.get("size") is not None and size != f["size"]:
                        raise CorruptData(f"input {canonical}: {f['path']} changed since registration "
                                          f"({size} bytes, registered {f['size']}); register a new version",
                                          input=canonical)
            gone = [] if remote else [f for f in files if not Path(f).exists()]
            if gone:
                raise CorruptData(f"input {canonical} (fingerprint {value[:16]}…): {len(gone)} of its files are "
                                  f"gone, e.g. {Path(gone[0]).name}", input=canonical)
            hive = bool(entry.get("partition_columns")) and fmt == "parquet"
            view = f"SELECT * FROM {_read_parquet(files, hive=hive)}" if files else None
            if view is None:
                raise CorruptData(f"input {canonical} has no data files", input=canonical)
        return {"name": canonical, "kind": "feature", "datastack": entry["datastack"], "table": base,
                "pin": {"fingerprint": fp, "format": fmt, "feature_id": entry["id"]}, "pinned_by": by if by != "latest" else
                "registry", "location": loc, "files": files, "bytes": entry.get("size_bytes") or _size(files),
                "segmentation": None, "view_sql": view, "arrow": arrow}


def _delta_files(location: str, fp: dict[str, Any]) -> list[str]:
    """Data files of the registered Delta version (fingerprint ``{"kind": "delta_version", "value": v}``)."""
    if fp.get("kind") != "delta_version" or not isinstance(fp.get("value"), int):
        return []
    from deltalake import DeltaTable

    from neurolake.storage import storage_options

    try:
        return list(DeltaTable(location, version=fp["value"], storage_options=storage_options(location) or None)
                    .file_uris())
    except Exception as exc:  # noqa: BLE001
        raise CorruptData(f"feature table at {location}: Delta version {fp['value']} cannot be read ({exc})",
                          location=location) from exc


def _delta_version(canonical: str, what: str, rec: dict | None, pin: str | None, newest: int | None) -> int:
    """The Delta version an input is read at: the run's recorded pin (``rec``), else the ``@N`` of the SQL
    name (``pin``), else the newest. Raises InvalidArgument (a pin that is not an integer) and NotFound (a
    version outside 0..newest)."""
    if rec is not None:
        version = int(rec["delta_version"])
    elif pin is None:
        version = newest
    elif re.fullmatch(r"\d+", pin):
        version = int(pin)
    else:
        raise InvalidArgument(f"{canonical}@{pin}: {what} are pinned by a Delta version (an integer)",
                              field="pin", value=pin)
    if version is None or newest is None or not 0 <= version <= newest:
        raise NotFound(f"{canonical}: Delta version {version} does not exist (versions 0–{newest})",
                       field="pin", value=version)
    return version


def _commit_time(d, version: int) -> str | None:
    try:
        for h in d.history():
            if h.get("version") == version and h.get("timestamp"):
                return dt.datetime.fromtimestamp(h["timestamp"] / 1000, dt.UTC).isoformat()
    except Exception:  # noqa: BLE001 - commit time is informative
        return None
    return None


def _read_parquet(files: list[str], hive: bool = False) -> str:
    lst = ", ".join(sql_literal(f) for f in files)
    return f"read_parquet([{lst}]{', hive_partitioning = true' if hive else ''})"


def _parquet_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(open_input(path)).names


def _size(files: list[str]) -> int:
    return sum(v or 0 for v in file_sizes(files).values())


def _name(file: str) -> str:
    return str(file).rstrip("/").rsplit("/", 1)[-1]
