"""The feature-table registry: register, validate, update, status, lineage, search, signed URLs.

The registry describes external tables; it never copies or proxies them, except through the signed
URLs it issues (:mod:`neurolake.storage.signing`). Entry fields are listed in :data:`FIELDS`.

Status: ``draft → published → deprecated`` (and ``draft → deprecated``); nothing else. A published
(or deprecated) entry is immutable except for ``status``, ``deprecation`` (a note) and lineage
(``derived_from``, ``superseded_by``). Names are unique per datastack.

Every validation runs before anything is written: a failure raises a typed error naming the field,
the value and what is allowed, and registers nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
import time
from typing import Any

from sqlalchemy import func, or_, select

from neurolake.access.core import Principal, local_principal
from neurolake.base.names import check_name, not_found
from neurolake.base.time import parse_timestamp
from neurolake.catalog import formats as fmts
from neurolake.catalog import vectors
from neurolake.catalog.hooks import check_materialization, check_references
from neurolake.catalog.models import FeatureTable
from neurolake.db.base import as_utc
from neurolake.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PermissionDenied
from neurolake.provenance import record
from neurolake.storage import is_s3, normalize_location
from neurolake.storage.signing import Signer, check_expires_in, lake_key, presign_s3

STATUSES = ("draft", "published", "deprecated")
TRANSITIONS = {"draft": {"published", "deprecated"}, "published": {"deprecated"}, "deprecated": set()}
MUTABLE_WHEN_PUBLISHED = {"status", "deprecation", "derived_from", "superseded_by"}
# Signed-URL grants read a table's entry from the catalog at most this often: a change made by another
# process (status, deletion, re-registration) reaches grants within this time; this process's own writes
# clear the cache at once. The /data route re-checks that the table exists on the same period.
GRANT_CACHE_SECONDS = 2.0
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,63}$")

# field → (python type(s), description)
FIELDS: dict[str, tuple[Any, str]] = {
    "name": (str, "table name, unique per datastack (letters, digits, _ . -)"),
    "datastack": (str, "the datastack the table belongs to"),
    "description": (str, "free text, searched by q="),
    "location": (str, "local path or s3://bucket/prefix of the table"),
    "format": (str, "parquet | delta | iceberg | lance (detected when omitted)"),
    "schema": ((list, dict), "declared columns: [{name, type?, description?}] or {name: type}; checked"),
    "column_descriptions": (dict, "{column: description}"),
    "snapshot_time": ((str, dt.datetime), "ISO 8601 time of the data snapshot (default: the table's commit time)"),
    "time_range": (list, "[start, end] ISO 8601 times the data covers"),
    "materialization_version": (int, "materialization version the table aligns with (must exist)"),
    "owner_team": (str, "owning team"),
    "owner_person": (str, "owning person"),
    "invalidation_radius_nm": ((int, float), "distance (nm) from an edit within which rows become stale"),
    "licence": (str, "licence / usage constraints"),
    "retention_days": (int, "retention / TTL in days from registration"),
    "citation": (str, "how to cite the table"),
    "references": (list, "[{table, columns}] annotation tables and columns referenced (must resolve)"),
    "tags": (list, "list of tags"),
    "pipeline": (str, "producing pipeline or model version"),
    "status": (str, "draft | published (at registration; deprecated later)"),
    "deprecation": (str, "deprecation note"),
    "derived_from": (list, "names of registered tables of the same datastack this one derives from"),
    "superseded_by": (str, "name of the registered table replacing this one"),
    "partition_columns": (list, "declared partition columns (checked against the detected ones)"),
    "hash_functions": (dict, "{column: hash/bucketing function} used for partitioning"),
    "vectors": ((dict, list), "vector (embedding) columns: {column: {dimension, metric: cosine|l2|dot, embeds, "
                              "model_version, id_column?}}; checked against the data (catalog/vectors.py)"),
}
REQUIRED = ("name", "datastack", "location")


def _bad(field: str, value: Any, what: str, **extra) -> InvalidArgument:
    return InvalidArgument(f"{field} {value!r} is not allowed: {what}", field=field, value=repr(value)[:200], **extra)


TYPE_ALIASES = {"int": "int64", "bigint": "int64", "integer": "int32", "long": "int64", "float": "float",
                "double": "double", "float64": "double", "float32": "float", "str": "string", "text": "string",
                "varchar": "string", "large_string": "string", "utf8": "string", "large_utf8": "string",
                "boolean": "bool", "uint64": "uint64", "timestamp": "timestamp"}


def _norm_type(t: str) -> str:
    t = str(t).strip().lower()
    t = TYPE_ALIASES.get(t, t)
    if t.startswith("timestamp"):
        return "timestamp"
    if t in ("large_string", "string_view"):
        return "string"
    return t


def _check_fields(spec: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """Type/shape checks of every given field (no I/O). Returns a cleaned copy."""
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {unknown}; allowed fields: {', '.join(FIELDS)}", field=unknown[0],
                              value=unknown, allowed=list(FIELDS))
    if not partial:
        missing = [f for f in REQUIRED if spec.get(f) in (None, "")]
        if missing:
            raise InvalidArgument(f"field {missing[0]!r} is required ({FIELDS[missing[0]][1]})", field=missing[0],
                                  value=None)
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if v is None:
            out[k] = None
            continue
        typ, what = FIELDS[k]
        if isinstance(v, bool) and typ in (int, (int, float)) or not isinstance(v, typ):
            raise _bad(k, v, f"expected {what}")
        out[k] = v
    if out.get("name") is not None:
        check_name("feature table", out["name"])
    if out.get("format") is not None and out["format"] not in fmts.FORMATS:
        raise InvalidArgument(f"format {out['format']!r} is not allowed; use one of {', '.join(fmts.FORMATS)}",
                              field="format", value=out["format"], allowed=list(fmts.FORMATS))
    if out.get("status") is not None and out["status"] not in STATUSES:
        raise InvalidArgument(f"status {out['status']!r} is not allowed; use one of {', '.join(STATUSES)}",
                              field="status", value=out["status"], allowed=list(STATUSES))
    if out.get("materialization_version") is not None and out["materialization_version"] < 0:
        raise _bad("materialization_version", out["materialization_version"], "must be ≥ 0")
    if out.get("invalidation_radius_nm") is not None and not (0 <= out["invalidation_radius_nm"] < float("inf")):
        raise _bad("invalidation_radius_nm", out["invalidation_radius_nm"], "must be a finite distance ≥ 0 nm")
    if out.get("retention_days") is not None and out["retention_days"] < 1:
        raise _bad("retention_days", out["retention_days"], "must be ≥ 1 day")
    if out.get("snapshot_time") is not None:
        out["snapshot_time"] = parse_timestamp(out["snapshot_time"], "snapshot_time")
    if out.get("time_range") is not None:
        tr = out["time_range"]
        if len(tr) != 2:
            raise _bad("time_range", tr, "give [start, end] as two ISO 8601 times")
        a, b = parse_timestamp(tr[0], "time_range"), parse_timestamp(tr[1], "time_range")
        if a is None or b is None:
            raise _bad("time_range", tr, "give [start, end] as two ISO 8601 times")
        if a > b:
            raise _bad("time_range", tr, "start must not be after end")
        out["time_range"] = [a.isoformat(), b.isoformat()]
    if out.get("tags") is not None:
        for t in out["tags"]:
            if not isinstance(t, str) or not TAG_RE.match(t):
                raise _bad("tags", t, "tags are 1-64 characters: letters, digits and _ . : / + -")
        out["tags"] = list(dict.fromkeys(out["tags"]))
    for k in ("derived_from", "partition_columns"):
        if out.get(k) is not None and not all(isinstance(x, str) and x for x in out[k]):
            raise _bad(k, out[k], "must be a list of non-empty strings")
    if out.get("superseded_by") is not None:
        check_name("superseded_by", out["superseded_by"])
    if out.get("references") is not None:
        refs = []
        for r in out["references"]:
            if not isinstance(r, dict) or not isinstance(r.get("table"), str) or not r["table"]:
                raise _bad("references", r, 'each reference is {"table": name, "columns": [names]}')
            cols = r.get("columns", [])
            if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
                raise _bad("references.columns", cols, "must be a list of column names")
            refs.append({"table": r["table"], "columns": cols})
        out["references"] = refs
    if out.get("schema") is not None:
        out["schema"] = _declared_schema(out["schema"])
    if out.get("vectors") is not None:
        out["vectors"] = vectors.parse_declarations(out["vectors"])
    if out.get("column_descriptions") is not None:
        if not all(isinstance(x, str) for x in out["column_descriptions"].values()):
            raise _bad("column_descriptions", out["column_descriptions"], "values must be strings")
    return out


def _declared_schema(s: Any) -> list[dict[str, Any]]:
    if isinstance(s, dict):
        s = [{"name": k, "type": v} for k, v in s.items()]
    out = []
    for c in s:
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise _bad("schema", c, "each column is {name, type?, description?}")
        out.append({k: c[k] for k in ("name", "type", "description") if c.get(k) is not None})
    return out


def _merge_schema(detected: list[dict[str, Any]], declared: list[dict[str, Any]] | None,
                  descriptions: dict[str, str] | None) -> list[dict[str, Any]]:
    by_name = {c["name"]: dict(c) for c in detected}
    for c in declared or []:
        got = by_name.get(c["name"])
        if got is None:
            raise InvalidArgument(f"schema: declared column {c['name']!r} is not in the table (columns: "
                                  f"{', '.join(by_name)})", field="schema", value=c["name"], allowed=list(by_name))
        if c.get("type") and _norm_type(c["type"]) != _norm_type(got["type"]):
            raise InvalidArgument(f"schema: column {c['name']!r} is declared {c['type']!r} but the table has "
                                  f"{got['type']!r}", field="schema", value=c["type"], column=c["name"],
                                  detected=got["type"])
        if c.get("description"):
            got["description"] = c["description"]
    for k, v in (descriptions or {}).items():
        if k not in by_name:
            raise InvalidArgument(f"column_descriptions: column {k!r} is not in the table", field="column_descriptions",
                                  value=k, allowed=list(by_name))
        by_name[k]["description"] = v
    return [by_name[c["name"]] for c in detected]


def _text(row: FeatureTable) -> None:
    cols = [c["name"] for c in row.schema or []]
    row.column_names = "|" + "|".join(c.lower() for c in cols) + "|"
    row.tags_text = "|" + "|".join(t.lower() for t in row.tags or []) + "|"
    parts = [row.name, row.description, row.citation, row.pipeline, row.owner_team, row.owner_person, row.licence,
             " ".join(row.tags or []), " ".join(cols),
             " ".join(c.get("description", "") for c in row.schema or [])]
    row.search_text = " ".join(p for p in parts if p).lower()


def to_dict(row: FeatureTable, with_files: bool = False) -> dict[str, Any]:
    created = as_utc(row.created)
    d = {
        "id": row.id, "name": row.name, "datastack": row.datastack, "description": row.description,
        "location": row.location, "format": row.format, "schema": row.schema,
        "snapshot_time": as_utc(row.snapshot_time).isoformat() if row.snapshot_time else None,
        "time_range": row.time_range, "materialization_version": row.materialization_version,
        "owner_team": row.owner_team, "owner_person": row.owner_person,
        "invalidation_radius_nm": row.invalidation_radius_nm, "licence": row.licence,
        "retention_days": row.retention_days,
        "expires_at": (created + dt.timedelta(days=row.retention_days)).isoformat() if row.retention_days else None,
        "citation": row.citation, "references": row.references, "tags": row.tags, "pipeline": row.pipeline,
        "status": row.status, "deprecation": row.deprecation, "derived_from": row.derived_from,
        "superseded_by": row.superseded_by, "partition_columns": row.partition_columns,
        "hash_functions": row.hash_functions, "row_count": row.row_count, "size_bytes": row.size_bytes,
        "fingerprint": row.fingerprint, "file_count": len(row.files or []), "warnings": row.warnings,
        "vectors": vectors.declared(row.schema),
        "registered_by": row.registered_by, "created": created.isoformat(),
        "updated": as_utc(row.updated).isoformat(), "provenance": row.provenance,
    }
    if with_files:
        d["files"] = row.files
    return d


def _clears_grant_cache(fn):
    """Decorator of registry writes: clear this lake's grant cache when the write ends."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        finally:
            _grant_cache(self.lake).clear()
    return wrapper


def _grant_cache(lake) -> dict:
    """Per-lake cache ``(name, datastack) → (monotonic time, entry)`` of :meth:`FeatureRegistry._grant_entry`."""
    return lake.state("features.grant_cache", dict)


class FeatureRegistry:
    """The registry of one lake. ``principal`` (None = the local user, with every right) is checked
    against datastack roles: register/update/status/signed URLs need *editor*, reading needs *viewer*."""

    def __init__(self, lake, principal: Principal | None = None) -> None:
        self.lake = lake
        self.principal = principal or local_principal(lake.settings.user)
        self.access = lake.access

    # -- helpers ----------------------------------------------------------------------------------
    def _row(self, s, name: str, datastack: str | None) -> FeatureTable:
        q = select(FeatureTable).where(FeatureTable.name == name)
        if datastack:
            q = q.where(FeatureTable.datastack == datastack)
        rows = s.scalars(q).all()
        p = self.principal
        if not (p.is_admin or p.local):  # an entry the principal may not read does not exist for them
            rows = [r for r in rows if self.access.allowed(p, r.datastack, "viewer")]
        if not rows:
            known = s.execute(select(FeatureTable.name, FeatureTable.datastack).where(
                FeatureTable.datastack == datastack) if datastack else select(FeatureTable.name, FeatureTable.datastack))
            names = sorted({n for n, ds in known if self.access.allowed(p, ds, "viewer")})
            if not (p.is_admin or p.local):
                # the same 403 whether the entry is missing or in a datastack the principal may not read
                raise PermissionDenied(f"user {p.name!r} may not read feature table {name!r}"
                                       f"{f' in datastack {datastack!r}' if datastack else ''} (or there is no "
                                       f"such table); feature tables user {p.name!r} may read"
                                       f"{' there' if datastack else ''}: {', '.join(names) or 'none'}",
                                       user=p.name, table=name, datastack=datastack, required="viewer")
            raise not_found("feature table", name, names, within=("datastack", datastack) if datastack else None,
                            hint="register it first", table=name, datastack=datastack)
        if len(rows) > 1:
            raise InvalidArgument(f"feature table {name!r} exists in several datastacks "
                                  f"({', '.join(r.datastack for r in rows)}); give datastack=", field="datastack",
                                  value=None, allowed=[r.datastack for r in rows])
        return rows[0]

    def _lineage(self, s, datastack: str, names: list[str], field: str) -> None:
        for n in names:
            if s.scalar(select(FeatureTable.id).where(FeatureTable.datastack == datastack,
                                                      FeatureTable.name == n)) is None:
                raise NotFound(f"{field}: feature table {n!r} is not registered in datastack {datastack!r}",
                               field=field, value=n, datastack=datastack)

    # -- register ---------------------------------------------------------------------------------
    @_clears_grant_cache
    def register(self, spec: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Validate and register a table; returns the entry. See :data:`FIELDS` for the fields.

        Checks, in order, before writing anything: field types and values, the datastack exists,
        the caller is an editor there, the name is free, the location exists and reads in the declared
        format, the declared schema and partition columns match what is detected, the materialization
        version exists (warning if expired), annotation references resolve, lineage names exist.
        Raises InvalidArgument, NotFound, AlreadyExists, PermissionDenied, CorruptData.
        """
        t0 = time.perf_counter()
        spec = _check_fields({**(spec or {}), **fields})
        ds = spec["datastack"]
        # the role first: an unknown and a private datastack answer the same 403 to a principal without one
        self.access.require(self.principal, ds, "editor", "registering a feature table")
        self.lake.datastack(ds)
        status = spec.get("status") or "draft"
        if status == "deprecated":
            raise InvalidArgument("status 'deprecated' is not allowed at registration; register as draft or "
                                  "published", field="status", value=status, allowed=["draft", "published"])
        with self.lake.catalog.session() as s:
            if s.scalar(select(FeatureTable.id).where(FeatureTable.datastack == ds,
                                                      FeatureTable.name == spec["name"])) is not None:
                raise AlreadyExists(f"feature table {spec['name']!r} already exists in datastack {ds!r}",
                                    table=spec["name"], datastack=ds)
            self._lineage(s, ds, spec.get("derived_from") or [], "derived_from")
            if spec.get("superseded_by"):
                self._lineage(s, ds, [spec["superseded_by"]], "superseded_by")
        location = normalize_location(spec["location"])
        check_allowed_root(self.lake, location)
        insp = fmts.inspect(location, spec.get("format"))
        schema = _merge_schema(insp.schema, spec.get("schema"), spec.get("column_descriptions"))
        if spec.get("vectors"):
            schema = vectors.attach(schema, vectors.validate_declarations(
                spec["vectors"], schema, _column_reader(spec["name"], location, insp)))
        declared_parts = spec.get("partition_columns")
        if declared_parts is not None and sorted(declared_parts) != sorted(insp.partition_columns):
            raise InvalidArgument(f"partition_columns {declared_parts} do not match the table's partition columns "
                                  f"{insp.partition_columns}", field="partition_columns", value=declared_parts,
                                  detected=insp.partition_columns)
        warnings: list[str] = []
        if spec.get("materialization_version") is not None:
            warnings += check_materialization(self.lake, ds, spec["materialization_version"])
        warnings += check_references(self.lake, ds, spec.get("references") or [])
        hash_functions = {**insp.hash_functions, **(spec.get("hash_functions") or {})}
        elapsed = time.perf_counter() - t0
        with self.lake.catalog.session() as s:
            if s.scalar(select(FeatureTable.id).where(FeatureTable.datastack == ds,
                                                      FeatureTable.name == spec["name"])) is not None:
                raise AlreadyExists(f"feature table {spec['name']!r} already exists in datastack {ds!r}",
                                    table=spec["name"], datastack=ds)
            row = FeatureTable(
                name=spec["name"], datastack=ds, description=spec.get("description") or "", location=location,
                format=insp.format, schema=schema, snapshot_time=spec.get("snapshot_time") or insp.snapshot_time,
                time_range=spec.get("time_range"), materialization_version=spec.get("materialization_version"),
                owner_team=spec.get("owner_team") or "", owner_person=spec.get("owner_person") or "",
                invalidation_radius_nm=spec.get("invalidation_radius_nm"), licence=spec.get("licence") or "",
                retention_days=spec.get("retention_days"), citation=spec.get("citation") or "",
                references=spec.get("references") or [], tags=spec.get("tags") or [],
                pipeline=spec.get("pipeline") or "", status=status, deprecation=spec.get("deprecation") or "",
                derived_from=spec.get("derived_from") or [], superseded_by=spec.get("superseded_by"),
                partition_columns=insp.partition_columns, hash_functions=hash_functions,
                row_count=insp.row_count, size_bytes=insp.size_bytes, fingerprint=insp.fingerprint,
                files=insp.files, warnings=warnings, registered_by=self.principal.name,
                provenance=record("feature.register", inputs={"location": location, "fingerprint": insp.fingerprint},
                                  params={"format": insp.format}, user=self.principal.name,
                                  validate_seconds=round(elapsed, 4)),
            )
            _text(row)
            s.add(row)
            s.flush()
            self.access._audit(s, self.principal.name, "feature.register", row.name, ds, id=row.id,
                               location=location, format=insp.format, fingerprint=insp.fingerprint, status=status)
            return to_dict(row)

    # -- read -------------------------------------------------------------------------------------
    def get(self, name: str, datastack: str | None = None, with_files: bool = False) -> dict[str, Any]:
        """One entry. Raises NotFound, InvalidArgument (ambiguous name), PermissionDenied."""
        with self.lake.catalog.session() as s:
            row = self._row(s, name, datastack)
            self.access.require(self.principal, row.datastack, "viewer", "reading a feature table")
            return to_dict(row, with_files)

    def search(self, *, name: str | None = None, tag: str | None = None, datastack: str | None = None,
               version: int | None = None, status: str | None = None, owner: str | None = None,
               column: str | None = None, q: str | None = None, limit: int = 100,
               offset: int = 0) -> list[dict[str, Any]]:
        """Entries matching every given filter, ordered by datastack and name.

        ``name``: substring (``*`` wildcards allowed); ``tag``/``column``: exact (case-insensitive);
        ``version``: materialization version; ``owner``: substring of team or person; ``q``: every word
        must occur in the name, description, column names/descriptions, tags, citation, pipeline or owner.
        Only datastacks the caller may view are searched.
        """
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status {status!r} is not allowed; use one of {', '.join(STATUSES)}",
                                  field="status", value=status, allowed=list(STATUSES))
        if not (isinstance(limit, int) and 1 <= limit <= 10000):
            raise _bad("limit", limit, "must be 1 … 10000")
        if not (isinstance(offset, int) and offset >= 0):
            raise _bad("offset", offset, "must be ≥ 0")
        stmt = select(FeatureTable)
        if name:
            pat = name.lower().replace("%", r"\%").replace("_", r"\_").replace("*", "%")
            stmt = stmt.where(func.lower(FeatureTable.name).like(f"%{pat}%", escape="\\"))
        if tag:
            stmt = stmt.where(FeatureTable.tags_text.contains(f"|{tag.lower()}|", autoescape=True))
        if column:
            stmt = stmt.where(FeatureTable.column_names.contains(f"|{column.lower()}|", autoescape=True))
        if datastack:
            stmt = stmt.where(FeatureTable.datastack == datastack)
        if version is not None:
            stmt = stmt.where(FeatureTable.materialization_version == int(version))
        if status:
            stmt = stmt.where(FeatureTable.status == status)
        if owner:
            o = owner.lower()
            stmt = stmt.where(or_(func.lower(FeatureTable.owner_team).contains(o, autoescape=True),
                                  func.lower(FeatureTable.owner_person).contains(o, autoescape=True)))
        for word in (q or "").lower().split():
            stmt = stmt.where(FeatureTable.search_text.contains(word, autoescape=True))
        stmt = stmt.order_by(FeatureTable.datastack, FeatureTable.name)
        out = []
        with self.lake.catalog.session() as s:
            skipped = 0
            for row in s.scalars(stmt):
                if not self.access.allowed(self.principal, row.datastack, "viewer"):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(to_dict(row))
                if len(out) >= limit:
                    break
        return out

    # -- change -----------------------------------------------------------------------------------
    @_clears_grant_cache
    def update(self, name: str, datastack: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields of an entry. Drafts accept any field (a new location/format is re-validated);
        published/deprecated entries only ``status``, ``deprecation``, ``derived_from``, ``superseded_by``
        (Conflict otherwise). ``status`` follows :data:`TRANSITIONS` (Conflict otherwise)."""
        if "name" in changes or "datastack" in changes:
            bad = "name" if "name" in changes else "datastack"
            raise InvalidArgument(f"{bad} cannot be changed; register a new table instead", field=bad,
                                  value=changes[bad])
        changes = _check_fields(changes, partial=True)
        with self.lake.catalog.session() as s:
            row = self._row(s, name, datastack)
            self.access.require(self.principal, row.datastack, "editor", "changing a feature table")
            if row.status != "draft":
                frozen = sorted(set(changes) - MUTABLE_WHEN_PUBLISHED)
                if frozen:
                    raise Conflict(f"feature table {row.name!r} is {row.status}: it is immutable except for status, "
                                   f"deprecation and lineage (derived_from, superseded_by); cannot change {frozen}",
                                   table=row.name, status=row.status, fields=frozen,
                                   allowed=sorted(MUTABLE_WHEN_PUBLISHED))
            new_status = changes.pop("status", None)
            if new_status is not None and new_status != row.status:
                if new_status not in TRANSITIONS[row.status]:
                    allowed = sorted(TRANSITIONS[row.status])
                    raise Conflict(f"status of {row.name!r} cannot go from {row.status} to {new_status}; allowed: "
                                   f"{', '.join(allowed) or 'none (deprecated is final)'}", table=row.name,
                                   field="status", value=new_status, current=row.status, allowed=allowed)
            if changes.get("derived_from"):
                self._lineage(s, row.datastack, changes["derived_from"], "derived_from")
            if changes.get("superseded_by"):
                if changes["superseded_by"] == row.name:
                    raise _bad("superseded_by", row.name, "a table cannot supersede itself")
                self._lineage(s, row.datastack, [changes["superseded_by"]], "superseded_by")
            # re-validate data-describing fields of a draft before touching the row
            loc_changed = "location" in changes or "format" in changes or "schema" in changes or \
                "column_descriptions" in changes or "partition_columns" in changes
            insp = None
            if loc_changed:
                location = normalize_location(changes.get("location") or row.location)
                check_allowed_root(self.lake, location)
                insp = fmts.inspect(location, changes.get("format") or (row.format if "location" not in changes
                                                                        else None))
                declared = changes.get("schema")
                descs = changes.get("column_descriptions") or {c["name"]: c["description"] for c in row.schema
                                                               if c.get("description")}
                if declared is None and "location" not in changes:
                    declared = None
                schema = _merge_schema(insp.schema, declared, {k: v for k, v in descs.items()
                                                               if k in {c["name"] for c in insp.schema}})
                if changes.get("partition_columns") is not None and \
                        sorted(changes["partition_columns"]) != sorted(insp.partition_columns):
                    raise InvalidArgument(f"partition_columns {changes['partition_columns']} do not match the "
                                          f"table's {insp.partition_columns}", field="partition_columns",
                                          value=changes["partition_columns"], detected=insp.partition_columns)
            new_schema = None
            if "vectors" in changes or insp is not None:  # (re-)check the vector declarations against the data
                decls = changes["vectors"] if "vectors" in changes else vectors.declared(row.schema)
                base_schema = schema if insp is not None else row.schema
                reader = _column_reader(row.name, normalize_location(changes.get("location") or row.location),
                                        insp) if insp is not None else _column_reader(row.name, row.location, row)
                new_schema = vectors.attach(base_schema, vectors.validate_declarations(decls or {}, base_schema,
                                                                                        reader))
            warnings = list(row.warnings or [])
            if changes.get("materialization_version") is not None:
                warnings = [w for w in warnings if "materialization" not in w]
                warnings += check_materialization(self.lake, row.datastack, changes["materialization_version"])
            if changes.get("references") is not None:
                warnings = [w for w in warnings if "annotation" not in w]
                warnings += check_references(self.lake, row.datastack, changes["references"])
            # all checks passed: apply
            old_status = row.status
            if insp is not None:
                row.location, row.format, row.schema = normalize_location(changes.get("location") or row.location), \
                    insp.format, schema
                row.partition_columns, row.row_count, row.size_bytes = insp.partition_columns, insp.row_count, \
                    insp.size_bytes
                row.fingerprint, row.files = insp.fingerprint, insp.files
                row.hash_functions = {**insp.hash_functions, **(row.hash_functions or {})}
            if new_schema is not None:
                row.schema = new_schema
            for k, v in changes.items():
                if k in ("location", "format", "schema", "column_descriptions", "partition_columns", "vectors"):
                    continue
                if k in ("description", "owner_team", "owner_person", "licence", "citation", "pipeline",
                         "deprecation") and v is None:
                    v = ""
                if k in ("tags", "references", "derived_from") and v is None:
                    v = []
                setattr(row, k, v)
            row.warnings = warnings
            if new_status is not None and new_status != old_status:
                row.status = new_status
                self.access._audit(s, self.principal.name, "feature.status", row.name, row.datastack,
                                   id=row.id, old=old_status, new=new_status)
            if changes or insp is not None:
                self.access._audit(s, self.principal.name, "feature.update", row.name, row.datastack, id=row.id,
                                   fields=sorted(changes) + (["location"] if insp is not None else []))
            _text(row)
            s.flush()
            return to_dict(row)

    def set_status(self, name: str, status: str, datastack: str | None = None,
                   deprecation: str | None = None) -> dict[str, Any]:
        """Move an entry to ``status`` (see :data:`TRANSITIONS`); ``deprecation`` sets the note."""
        ch: dict[str, Any] = {"status": status}
        if deprecation is not None:
            ch["deprecation"] = deprecation
        return self.update(name, datastack, **ch)

    @_clears_grant_cache
    def delete(self, name: str, datastack: str | None = None) -> None:
        """Remove a *draft* entry (published ones are deprecated instead). Raises Conflict."""
        with self.lake.catalog.session() as s:
            row = self._row(s, name, datastack)
            self.access.require(self.principal, row.datastack, "editor", "deleting a feature table")
            if row.status != "draft":
                raise Conflict(f"feature table {row.name!r} is {row.status}; only drafts can be deleted "
                               "(deprecate it instead)", table=row.name, status=row.status)
            self.access._audit(s, self.principal.name, "feature.delete", row.name, row.datastack, id=row.id)
            s.delete(row)

    def verify(self, name: str, datastack: str | None = None) -> dict[str, Any]:
        """Re-inspect the data and compare with the registered fingerprint:
        ``{"ok": bool, "registered": fp, "current": fp}``."""
        with self.lake.catalog.session() as s:
            row = self._row(s, name, datastack)
            self.access.require(self.principal, row.datastack, "viewer", "verifying a feature table")
            loc, fmt, fp = row.location, row.format, row.fingerprint
        cur = fmts.inspect(loc, fmt).fingerprint
        return {"ok": cur.get("value") == fp.get("value"), "registered": fp, "current": cur}

    # -- similarity search (catalog/vectors.py) --------------------------------------------------------
    def _vector_entry(self, name: str, datastack: str | None, need: str, action: str) -> dict[str, Any]:
        """The entry (with files) of a table for search/indexing, read from the catalog at most every
        :data:`GRANT_CACHE_SECONDS` (this process's writes clear it); the principal needs ``need``."""
        cache = _grant_cache(self.lake)
        key = ("vectors", name, datastack)
        hit = cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < GRANT_CACHE_SECONDS:
            entry = hit[1]
            if not self.access.allowed(self.principal, entry["datastack"], "viewer"):
                with self.lake.catalog.session() as s:
                    self._row(s, name, datastack)  # the same 403 as for a table that does not exist
        else:
            with self.lake.catalog.session() as s:
                row = self._row(s, name, datastack)
                entry = to_dict(row, with_files=True)
            if len(cache) > 10_000:
                cache.clear()
            cache[key] = (now, entry)
        self.access.require(self.principal, entry["datastack"], need, action)
        return entry

    @staticmethod
    def _vector_column(entry: dict[str, Any], column: str | None) -> tuple[str, dict[str, Any]]:
        decls = vectors.declared(entry.get("schema"))
        if not decls:
            raise InvalidArgument(f"feature table {entry['name']!r} declares no vector columns; declare them with "
                                  "vectors={column: {dimension, metric, embeds, model_version}} (register, or "
                                  "update a draft)", field="column", value=column, table=entry["name"])
        if column is None:
            if len(decls) > 1:
                raise InvalidArgument(f"feature table {entry['name']!r} has several vector columns "
                                      f"({', '.join(decls)}); give column=", field="column", value=None,
                                      allowed=list(decls))
            column = next(iter(decls))
        if column not in decls:
            raise InvalidArgument(f"column {column!r} of {entry['name']!r} is not a declared vector column; vector "
                                  f"columns: {', '.join(decls)}", field="column", value=column, allowed=list(decls))
        return column, decls[column]

    def index(self, name: str, column: str | None = None, datastack: str | None = None, *, kind: str = "auto",
              nlist: int | None = None, m: int | None = None, nbits: int | None = None, nprobe: int | None = None,
              refine: int | None = None, train_rows: int | None = None, rebuild: bool = False,
              progress=None) -> dict[str, Any]:
        """Build the ANN index of a vector column (FAISS IVF-PQ, or IVF-Flat below 20,000 rows; see
        :func:`neurolake.catalog.vectors.build_index`) under ``<lake>/features/_indexes/…`` (needs *editor*).

        A fresh index (built for the registered fingerprint) is kept unless ``rebuild`` or a parameter is
        given. Returns the index metadata plus ``built`` (bool) and ``stale`` (why the old one was replaced).
        Raises NotFound, PermissionDenied, InvalidArgument (no/unknown vector column, parameters),
        Unsupported (Iceberg), CorruptData (files changed since registration)."""
        entry = self._vector_entry(name, datastack, "editor", "building a vector index")
        column, _ = self._vector_column(entry, column)
        meta = vectors.index_meta(self.lake, entry["datastack"], entry["name"], column)
        stale = vectors.staleness(meta, entry, column) if meta else []
        explicit = any(v is not None for v in (nlist, m, nbits, nprobe, refine, train_rows)) or kind != "auto"
        if meta is not None and not stale and not rebuild and not explicit:
            return {**meta, "built": False, "stale": []}
        loaded = vectors.load(self.lake, entry)
        meta = vectors.build_index(self.lake, entry, column, loaded, kind=kind, nlist=nlist, m=m, nbits=nbits,
                                   nprobe=nprobe, refine=refine, train_rows=train_rows, user=self.principal.name,
                                   progress=progress)
        self.access.audit(self.principal.name, "feature.index", entry["name"], entry["datastack"], buffered=True,
                          id=entry["id"], column=column, factory=meta["factory"], rows=meta["indexed_rows"],
                          seconds=meta["build_seconds"])
        return {**meta, "built": True, "stale": stale}

    def index_info(self, name: str, column: str | None = None, datastack: str | None = None) -> dict[str, Any]:
        """``{"table", "datastack", "column", "index": metadata or None, "stale": [reasons]}`` (needs *viewer*)."""
        entry = self._vector_entry(name, datastack, "viewer", "reading a feature table")
        column, _ = self._vector_column(entry, column)
        meta = vectors.index_meta(self.lake, entry["datastack"], entry["name"], column)
        return {"table": entry["name"], "datastack": entry["datastack"], "column": column, "index": meta,
                "stale": vectors.staleness(meta, entry, column) if meta else []}

    def similar(self, name: str, vector: Any = None, id: Any = None, k: int = 10, filter: str | None = None,
                exact: bool = False, refine: int | None = None, nprobe: int | None = None, *,
                column: str | None = None, datastack: str | None = None, columns: list[str] | None = None,
                id_column: str | None = None, rebuild: bool = False, save_as: str | None = None):
        """The ``k`` rows of a registered table whose vectors are nearest to a query (needs *viewer*, like
        reading the table).

        - query: ``vector`` (``d`` numbers, or a ``(b, d)`` batch: rows then carry ``_query``, the query's
          position) or ``id`` (the row whose ``id_column`` — declared with the vector column, or given —
          equals ``id``; that row is its own nearest neighbour);
        - ``filter``: an SQL predicate over the table's columns (``"cell_type = 'L2/3' AND n_pre > 10"``);
        - with an index (:meth:`index`) and not ``exact``: ``k × refine`` ANN candidates from ``nprobe``
          inverted lists (defaults: the index's), re-ranked by exact distance; without one, with a stale one
          (metadata ``index_stale`` says why; ``rebuild=True`` rebuilds it, needs *editor*), or ``exact``:
          exact search. A filter leaving ≤ 50,000 rows is searched exactly.

        Returns a :class:`neurolake.base.results.Result`: the table's columns (``columns``; default all but
        the vector columns), ``_distance`` (cosine: ``1 - cos``; l2: Euclidean; dot: ``-x·q``; nearest first;
        ties by row order) and metadata ``datastack, table, column, fingerprint, metric, model_version,
        embeds, dimension, k, filter, search ("ann"|"exact"), index (parameters or "exact"), query,
        rows_searched, seconds`` (+ ``index_stale``, ``warnings``). Raises NotFound (table, id),
        PermissionDenied, InvalidArgument (column, vector, k, filter, refine, nprobe), CorruptData.

        ``save_as``: also write the result as Parquet under ``<lake>/features/_results/<datastack>/`` and register
        it as feature table ``save_as`` of the same datastack (derived from ``name``; the search metadata in the
        file's key-value metadata under ``neurolake.similar`` and in the entry's ``pipeline``), so SQL reaches it
        as ``features.<save_as>`` — pinned by its fingerprint and joinable with annotation and other tables.
        Needs *editor*; AlreadyExists when the name is taken (nothing written)."""
        from neurolake.base.results import Result

        t0 = time.perf_counter()
        if (vector is None) == (id is None):
            raise InvalidArgument("give exactly one of vector= (the query vector) and id= (a row's key)",
                                  field="vector" if vector is None else "id", value=None)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vectors.MAX_K:
            raise _bad("k", k, f"an integer 1 … {vectors.MAX_K}")
        if refine is not None:
            vectors._check_refine(refine)
        entry = self._vector_entry(name, datastack, "editor" if rebuild else "viewer",
                                   "rebuilding a vector index" if rebuild else "reading a feature table")
        column, decl = self._vector_column(entry, column)
        loaded = vectors.load(self.lake, entry)
        skip = list(vectors.declared(entry.get("schema")))
        if columns is not None:
            unknown = [c for c in columns if c not in loaded.table.column_names]
            if unknown or not columns:
                raise InvalidArgument(f"columns {unknown or columns} not in the table; columns: "
                                      f"{', '.join(loaded.table.column_names)}", field="columns",
                                      value=unknown or columns, allowed=loaded.table.column_names)
        query: dict[str, Any]
        if id is not None:
            row = self._row_of_id(entry, loaded, decl, column, id, id_column)
            Q, batched = vectors.query_matrix(loaded.vectors[column][row], decl["dimension"], decl["metric"])
            query = {"id": id, "id_column": id_column or decl.get("id_column"), "row": int(row)}
        else:
            Q, batched = vectors.query_matrix(vector, decl["dimension"], decl["metric"])
            query = {"vectors": int(Q.shape[0])}
        if Q.shape[0] * k > 1_000_000:
            raise _bad("k", k, f"queries × k must stay ≤ 1,000,000 ({Q.shape[0]} queries)")
        mask = None
        if filter is not None:
            vectors.check_filter(filter, [c for c in loaded.table.column_names if c not in skip])
            mask = vectors.filter_mask(loaded, filter, skip)
        index, meta, stale = None, None, []
        if rebuild:
            self.index(entry["name"], column, entry["datastack"], rebuild=True)
        if not exact or rebuild:
            got = vectors.open_index(self.lake, entry["datastack"], entry["name"], column)
            if got is not None:
                index, meta = got
                stale = vectors.staleness(meta, entry, column)
                if meta.get("rows") != loaded.num_rows and not stale:
                    stale = [f"the index was built over {meta.get('rows')} rows, the table has {loaded.num_rows}"]
        use = index if (index is not None and not stale and not exact) else None
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, int) or
                                   not 1 <= nprobe <= (meta or {}).get("nlist", 1 << 30)):
            raise _bad("nprobe", nprobe, f"an integer 1 … nlist ({(meta or {}).get('nlist')})")
        hits = vectors.search(loaded, column, decl, Q, k, mask=mask, index=use,
                              nprobe=nprobe or (meta or {}).get("nprobe"), refine=refine or (meta or {}).get("refine"),
                              exact_only=use is None)
        table = vectors.result_table(loaded, hits, batched, columns, skip)
        ipar: Any = "exact"
        if hits.mode == "ann":
            ipar = {k2: meta[k2] for k2 in ("library", "library_version", "factory", "kind", "metric", "nlist", "m",
                                            "nbits", "nprobe", "refine", "built_at", "indexed_rows") if k2 in meta}
            ipar.update(nprobe=hits.detail.get("nprobe", ipar.get("nprobe")),
                        refine=hits.detail.get("refine", ipar.get("refine")))
        md = {"datastack": entry["datastack"], "table": entry["name"], "column": column,
              "fingerprint": entry.get("fingerprint"), "metric": decl["metric"],
              "model_version": decl.get("model_version") or "", "embeds": decl.get("embeds") or "",
              "dimension": decl["dimension"], "k": k, "filter": filter, "search": hits.mode, "index": ipar,
              "query": query, **hits.detail, "seconds": round(time.perf_counter() - t0, 6)}
        if stale:
            md["index_stale"] = {"reasons": stale, "index_fingerprint": meta.get("fingerprint"),
                                 "built_at": meta.get("built_at")}
            md["warnings"] = [f"the index of {entry['name']}.{column} is stale ({'; '.join(stale)}): exact search "
                              "was used; rebuild it (neurolake features index --rebuild, or rebuild=True)"]
        elif index is None and not exact:
            md["exact_reason"] = md.get("exact_reason") or "no index (neurolake features index builds one)"
        if save_as is not None:
            md["saved_as"] = self._save_similar(entry, save_as, table, md)
        return Result(table, md)

    def _save_similar(self, entry: dict[str, Any], name: str, table, md: dict[str, Any]) -> dict[str, Any]:
        """Write a similarity result as Parquet and register it (see :meth:`similar`, ``save_as``)."""
        import json
        from pathlib import Path

        import pyarrow.parquet as pq

        ds = entry["datastack"]
        check_name("feature table", name)  # before it becomes a file name
        self.access.require(self.principal, ds, "editor", "saving a similarity result as a feature table")
        try:
            self.get(name, ds)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"feature table {name!r} of datastack {ds!r} already exists; choose another "
                                "save_as name", field="save_as", value=name)
        remote = is_s3(self.lake.root)
        folder = (self.lake.root if remote else Path(self.lake.root)) / "features" / "_results" / ds
        path = folder / f"{name}.parquet"
        meta = {k: v for k, v in md.items() if k not in ("seconds",)}
        out = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                             b"neurolake.similar": json.dumps(meta, default=str).encode()})
        if remote:  # a PUT replaces the object as one step
            fs, where = self.lake.storage.pyarrow_fs(path)
            pq.write_table(out, where, filesystem=fs)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.parquet.tmp"
            pq.write_table(out, tmp)
            os.replace(tmp, path)
        query = md.get("query") or {}
        what = f"id {query['id']}" if "id" in query else f"{query.get('vectors', 1)} query vector(s)"
        try:
            reg = self.register(name=name, datastack=ds, location=str(path), derived_from=[entry["name"]],
                                description=f"the {md['k']} rows of {entry['name']}.{md['column']} nearest to {what} "
                                            f"({md['search']} search, metric {md['metric']}"
                                            + (f", filter {md['filter']}" if md.get("filter") else "") + ")",
                                pipeline=f"similar {entry['name']}.{md['column']} model {md.get('model_version') or '-'}",
                                tags=["similarity-result"])
        except Exception:
            path.unlink(missing_ok=True)
            raise
        return {"name": name, "datastack": ds, "location": str(path), "fingerprint": reg.get("fingerprint")}

    @staticmethod
    def _row_of_id(entry: dict[str, Any], loaded, decl: dict[str, Any], column: str, id: Any,
                   id_column: str | None) -> int:
        import pyarrow as pa

        idc = id_column or decl.get("id_column")
        if not idc:
            raise InvalidArgument(f"vector column {column!r} of {entry['name']!r} declares no id_column; give "
                                  "id_column= (or search by vector=)", field="id_column", value=None)
        if idc not in loaded.table.column_names:
            raise InvalidArgument(f"id_column {idc!r} is not in the table; columns: "
                                  f"{', '.join(loaded.table.column_names)}", field="id_column", value=idc,
                                  allowed=loaded.table.column_names)
        col = loaded.table.column(idc)
        try:
            if isinstance(id, str) and pa.types.is_integer(col.type):
                value = pa.scalar(int(id), col.type)
            else:
                value = pa.scalar(id).cast(col.type)
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(f"id {id!r} is not a value of column {idc!r} ({col.type})", field="id",
                                  value=id, column=idc) from exc
        rows = vectors.rows_with(loaded, idc, value.as_py())
        if len(rows) == 0:
            raise NotFound(f"no row of {entry['name']!r} has {idc} = {id!r}", field="id", value=id,
                           table=entry["name"], column=idc)
        if len(rows) > 1:
            raise InvalidArgument(f"{len(rows)} rows of {entry['name']!r} have {idc} = {id!r}; the id must be a "
                                  "key (search by vector= instead)", field="id", value=id, rows=len(rows))
        r = int(rows[0])
        if not loaded.valid[column][r]:
            raise InvalidArgument(f"the row with {idc} = {id!r} has no vector in {column!r} (null or not finite)",
                                  field="id", value=id, column=column)
        return r

    # -- signed URLs ------------------------------------------------------------------------------
    def signed_urls(self, name: str, datastack: str | None = None, expires_in_s: float = 3600,
                    base_url: str | None = None) -> dict[str, Any]:
        """Temporary URLs for the files of the registered version of a table (needs *editor*).

        Local tables: HMAC-SHA256 URLs served by this lake's ``/data/…`` route at ``base_url``
        (default ``NEUROLAKE_PUBLIC_URL`` or ``http://127.0.0.1:8000``); ``s3://`` tables: S3 presigned
        URLs (SigV4). Returns ``{"urls": [data files], "files": [{path, size, url}], "prefix_url",
        "expires", "fingerprint", ...}``. For Delta the files are the Parquet data files of the
        registered version (read them with ``read_parquet``); ``prefix_url`` + ``/`` + a path reads any
        file of the table (``_delta_log/…``, Iceberg metadata, Lance fragments). Raises NotFound,
        PermissionDenied, InvalidArgument (``expires_in_s``), Conflict (Parquet files changed since
        registration). The entry is read from the catalog at most every :data:`GRANT_CACHE_SECONDS`; the
        grant's audit event is queued (``Access.audit(buffered=True)``).
        """
        expires_in = check_expires_in(expires_in_s)
        tid, loc, fmt, files, fp, ds, tname = self._grant_entry(name, datastack)
        if not self.access.allowed(self.principal, ds, "viewer"):  # the entry came from the shared cache
            with self.lake.catalog.session() as s:
                self._row(s, name, datastack)  # the same 403 as for a table that does not exist
        self.access.require(self.principal, ds, "editor", "issuing signed URLs")
        check_allowed_root(self.lake, loc)
        if fmt == "parquet" and not is_s3(loc):
            self._check_unchanged(tname, loc, files)
        data = _data_files(fmt, files, fp)
        expires = math.ceil(time.time()) + expires_in  # lives at least expires_in seconds, never less
        user = self.principal.name
        out: dict[str, Any] = {"table": tname, "datastack": ds, "format": fmt, "fingerprint": fp,
                               "expires": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(),
                               "expires_in_s": expires_in, "user": user}
        if is_s3(loc):
            single = len(files) == 1 and loc.rsplit("/", 1)[-1] == files[0]["path"]  # a one-file table
            base = loc.rsplit("/", 1)[0] if single else loc
            urls = presign_s3([f"{base}/{f['path']}" for f in data], expires_in)
            out.update(scheme="s3-presigned-sigv4", prefix_url=None,
                       files=[{"path": f["path"], "size": f["size"], "partition": _hive_values(f["path"]), "url": u}
                              for f, u in zip(data, urls, strict=True)], urls=urls)
        else:
            from urllib.parse import quote

            base = (base_url or self.lake.settings.public_url).rstrip("/")
            prefix = base + Signer(lake_key(self.lake)).prefix(tid, loc, user, expires)
            fl = [{"path": f["path"], "size": f["size"], "partition": _hive_values(f["path"]), "url": f"{prefix}/{quote(f['path'], safe='/=,')}"} for f in data]
            out.update(scheme="neurolake-signed-url-v1", prefix_url=prefix, files=fl, urls=[f["url"] for f in fl])
        self.access.audit(user, "feature.url_grant", tname, ds, buffered=True, id=tid, files=len(out["urls"]),
                          expires=out["expires"], scheme=out["scheme"])
        return out

    def grant_cached(self, name: str, datastack: str | None = None) -> bool:
        """True when :meth:`signed_urls` for this table needs no catalog read (its entry is cached)."""
        hit = _grant_cache(self.lake).get((name, datastack))
        return hit is not None and time.monotonic() - hit[0] < GRANT_CACHE_SECONDS

    def _grant_entry(self, name: str, datastack: str | None) -> tuple:
        """``(id, location, format, files, fingerprint, datastack, name)`` of a table, read from the catalog
        at most every :data:`GRANT_CACHE_SECONDS` (this process's writes clear the cache at once)."""
        cache = _grant_cache(self.lake)
        hit = cache.get((name, datastack))
        now = time.monotonic()
        if hit is not None and now - hit[0] < GRANT_CACHE_SECONDS:
            return hit[1]
        with self.lake.catalog.session() as s:
            row = self._row(s, name, datastack)
            entry = (row.id, row.location, row.format, tuple(row.files or ()), row.fingerprint, row.datastack,
                     row.name)
        if len(cache) > 10_000:
            cache.clear()
        cache[(name, datastack)] = (now, entry)
        return entry

    def location_of(self, table_id: int) -> tuple[str, str, str] | None:
        """``(location, name, datastack)`` of the registered table with catalog id ``table_id`` (the id in a
        signed URL), or None when no such table is registered (any more)."""
        with self.lake.catalog.session() as s:
            row = s.get(FeatureTable, table_id)
            return (row.location, row.name, row.datastack) if row is not None else None

    @staticmethod
    def _check_unchanged(name: str, loc: str, files: list[dict[str, Any]]) -> None:
        from pathlib import Path

        base = Path(loc)
        if base.is_file():
            base = base.parent
        for f in files:
            p = base / f["path"]
            try:
                size = p.stat().st_size
            except OSError:
                size = None
            if size != f["size"]:
                raise Conflict(f"feature table {name!r} changed since registration: {f['path']} is "
                               f"{'missing' if size is None else f'{size} bytes'} (registered {f['size']} bytes); "
                               "register a new version", table=name, path=f["path"])


def check_allowed_root(lake, location: str) -> None:
    """Refuse local locations outside the lake's ``settings.feature_roots`` (``NEUROLAKE_FEATURE_ROOTS``),
    when set: a server then only describes and signs files under those folders. Raises PermissionDenied."""
    roots = list(lake.settings.feature_roots)
    if not roots or is_s3(location):
        return
    from neurolake.errors import PermissionDenied

    real = os.path.realpath(location)
    for r in roots:
        rr = os.path.realpath(os.path.expanduser(r.strip()))
        if real == rr or real.startswith(rr.rstrip(os.sep) + os.sep):
            return
    raise PermissionDenied(f"location {location!r} is outside the folders allowed for feature tables "
                           f"(NEUROLAKE_FEATURE_ROOTS: {', '.join(roots)})", field="location", value=location,
                           allowed=roots)


def _column_reader(name: str, location: str, src):
    """``read(column) -> pyarrow array`` over the table at ``location`` described by ``src`` (an
    :class:`~neurolake.catalog.formats.Inspection` or a catalog row: format, fingerprint, files, partitions)."""
    entry = {"name": name, "location": location, "format": src.format, "fingerprint": src.fingerprint,
             "files": src.files, "partition_columns": src.partition_columns}
    return lambda col: vectors.read_table(entry, columns=[col]).column(col)


def _hive_values(path: str) -> dict[str, str]:
    """Hive partition values ``{column: value}`` from the ``key=value`` folders of a file path."""
    from urllib.parse import unquote

    out = {}
    for part in path.split("/")[:-1]:
        k, sep, v = part.partition("=")
        if sep and k:
            out[unquote(k)] = unquote(v)
    return out


def _data_files(fmt: str, files: list[dict[str, Any]], fp: dict[str, Any]) -> list[dict[str, Any]]:
    if fmt == "iceberg":
        data = [f for f in files if f.get("data")]
        return data or [f for f in files if f["path"].startswith("data/") and f["path"].endswith(".parquet")]
    return files
