"""The run store: every executed query's manifest and pinned inputs, kept in the lake's catalog (issue 12).

A *run* is the dict the query engine records for one execution (``run_id``, ``sql``, ``mode``, ``user``,
``started``, ``inputs``, ``rows``, ``result_sha256``, ``partial`` … see ``docs/query.md``); its
*manifest* is the OpenLineage RunEvent built from it. :func:`save_run` stores both: one
:class:`~neurolake.provenance.models.QueryRun` row and one
:class:`~neurolake.provenance.models.RunPin` row per input.

**Protection.** The inputs a *production* run pinned (its status not ``failed``) are protected: expiring a
materialization version it read, or vacuuming Delta files of an annotation-table version it read, is refused
(or forced, naming the runs it breaks). :func:`protecting_runs` answers which runs protect an input;
:func:`delete_run` releases a run's protection. Exploratory runs are stored with their pins too but protect
nothing.

Run ids are uuid4 strings; every lookup accepts the whole id or a unique prefix of at least
:data:`MIN_PREFIX` characters (as git does with commits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select

from neurolake.base.integers import whole
from neurolake.base.names import not_found
from neurolake.base.time import isoformat, parse_timestamp
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import InvalidArgument
from neurolake.provenance import current_user
from neurolake.provenance.models import PIN_KINDS, RUN_STATUSES, QueryRun, RunPin

MODES = ("exploratory", "production")
MIN_PREFIX = 8
_RUN_ID = re.compile(r"^[0-9a-fA-F-]{1,36}$")

# which pin field is the integer version of each input kind (None: feature tables, pinned by fingerprint)
_VERSION_FIELD = {"annotation": "delta_version", "ephys": "delta_version", "version_table": "version", "connectome": "version",
                  "edits": "operation_id", "feature": None, "skeletons": "delta_version"}


def short_ids(run_ids: Sequence[str], shown: int = 5) -> str:
    """``"abc12345…, def67890…"`` (8 characters of each id; ``…, and N more`` beyond ``shown``)."""
    out = ", ".join(f"{r[:8]}…" for r in run_ids[:shown])
    return out + (f", and {len(run_ids) - shown} more" if len(run_ids) > shown else "")


def _pin_row(run_id: str, i: int, inp: Any) -> RunPin:
    if not isinstance(inp, dict):
        raise InvalidArgument(f"run input #{i} must be a dict, got {type(inp).__name__}", field="inputs", index=i)
    kind = inp.get("kind")
    if kind not in PIN_KINDS:
        raise InvalidArgument(f"run input #{i} ({inp.get('name')!r}) has kind {kind!r}; allowed: {list(PIN_KINDS)}",
                              field="inputs.kind", value=kind, allowed=list(PIN_KINDS))
    name = inp.get("table") or str(inp.get("name") or "").rsplit(".", 1)[-1]
    if not name:
        raise InvalidArgument(f"run input #{i} names no table (fields 'table' or 'name')", field="inputs.table",
                              index=i)
    pin = inp.get("pin") or {}
    key = _VERSION_FIELD[kind]
    version = pin.get(key) if key else None
    fp = pin.get("fingerprint") if kind == "feature" else None
    if isinstance(fp, dict) and fp.get("kind") == "delta_version" and isinstance(fp.get("value"), int):
        key, version = "fingerprint.value", fp["value"]  # a registered Delta table: its Delta version
    if version is not None:
        version = whole(version, f"inputs[{i}].pin.{key}")
    return RunPin(run_id=run_id, kind=kind, datastack=inp.get("datastack"), name=str(name), version=version,
                  detail=inp)


def _status(run: dict[str, Any], manifest: dict[str, Any]) -> str:
    status = run.get("status")
    if status is None:
        status = "failed" if manifest.get("eventType") == "FAIL" else "partial" if run.get("partial") else "ok"
    if status not in RUN_STATUSES:
        raise InvalidArgument(f"run status {status!r} is not one of {list(RUN_STATUSES)}", field="status",
                              value=status, allowed=list(RUN_STATUSES))
    return status


def save_run(lake, manifest: dict[str, Any], *, run: dict[str, Any], result_file: str | None = None) -> None:
    """Store ``run`` (the engine's run dict) with its OpenLineage ``manifest`` and one pin per
    ``run["inputs"]`` item. Saving a ``run_id`` again replaces the stored run (e.g. to add ``result_file``).

    Status: ``run["status"]`` when given, else ``failed`` for a ``FAIL`` event, ``partial`` when
    ``run["partial"]``, else ``ok``. ``created`` is ``run["started"]`` (ISO; default now).
    Raises InvalidArgument naming the field (run id, mode, status, an input's kind/pin, a manifest that is
    not JSON-able); nothing is stored then.
    """
    run_id = run.get("run_id")
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidArgument(f"run_id must be a uuid string (hex digits and dashes, at most 36), got {run_id!r}",
                              field="run_id", value=repr(run_id))
    mode = run.get("mode")
    if mode not in MODES:
        raise InvalidArgument(f"run mode {mode!r} is not one of {list(MODES)}", field="mode", value=mode,
                              allowed=list(MODES))
    if not isinstance(run.get("sql"), str):
        raise InvalidArgument("run sql must be a string", field="sql", value=repr(run.get("sql"))[:80])
    if not isinstance(manifest, dict):
        raise InvalidArgument(f"manifest must be a dict (an OpenLineage RunEvent), got {type(manifest).__name__}",
                              field="manifest")
    try:
        json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"manifest is not JSON-able: {exc}", field="manifest") from None
    status = _status(run, manifest)
    inputs = run.get("inputs") or []
    pins = [_pin_row(run_id, i, inp) for i, inp in enumerate(inputs)]
    try:
        json.dumps(inputs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"run inputs are not JSON-able: {exc}", field="inputs") from None
    created = parse_timestamp(run.get("started"), "started") or utcnow()
    datastacks = sorted({p.datastack for p in pins if p.datastack})
    rows = whole(run.get("rows") or 0, "rows")
    with lake.catalog.session() as s:
        old = s.get(QueryRun, run_id)
        if old is not None:
            s.execute(delete(RunPin).where(RunPin.run_id == run_id))
            s.delete(old)
            s.flush()
        s.add(QueryRun(run_id=run_id, created=created, user=str(run.get("user") or current_user()), mode=mode,
                       sql=run["sql"], status=status, rows=rows, result_sha256=run.get("result_sha256"),
                       manifest=manifest, result_file=None if result_file is None else str(result_file),
                       datastacks=datastacks))
        s.flush()
        s.add_all(pins)


def _summary(r: QueryRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "created": isoformat(as_utc(r.created)), "user": r.user, "mode": r.mode,
            "status": r.status, "rows": r.rows, "result_sha256": r.result_sha256, "datastacks": list(r.datastacks),
            "sql": r.sql, "result_file": r.result_file,
            "protecting": r.mode == "production" and r.status != "failed"}


def _find(s, run_id: Any) -> QueryRun:
    """The run whose id is ``run_id`` or starts with it (≥ MIN_PREFIX characters, unique)."""
    text = run_id.strip().lower() if isinstance(run_id, str) else None
    if text and _RUN_ID.match(text):
        row = s.get(QueryRun, run_id.strip()) or s.get(QueryRun, text)
        if row is not None:
            return row
        if len(text) >= MIN_PREFIX:
            found = s.scalars(select(QueryRun.run_id).where(QueryRun.run_id.startswith(text))
                              .order_by(QueryRun.run_id).limit(6)).all()
            if len(found) == 1:
                return s.get(QueryRun, found[0])
            if len(found) > 1:
                raise InvalidArgument(f"run id prefix {text!r} is ambiguous: it starts {', '.join(found[:5])}"
                                      f"{' …' if len(found) > 5 else ''}; give more characters", field="run_id",
                                      value=text, matches=list(found[:5]))
    recent = s.scalars(select(QueryRun.run_id).order_by(QueryRun.created.desc(), QueryRun.run_id).limit(10)).all()
    hints = [f"a prefix needs at least {MIN_PREFIX} characters"] if text and len(text) < MIN_PREFIX else []
    if recent:
        hints.append("these are the most recent runs; `neurolake runs list` shows more")
    raise not_found("query run", run_id, recent, hint="; ".join(hints), run_id=str(run_id))


def get_run(lake, run_id: str) -> dict[str, Any]:
    """The stored run ``run_id`` (or a unique prefix of ≥ 8 characters): the summary of :func:`list_runs`
    plus ``manifest`` (the OpenLineage RunEvent) and ``inputs`` (the run's input dicts, in order).
    Raises NotFound naming the most recent run ids, InvalidArgument for an ambiguous prefix."""
    with lake.catalog.session() as s:
        row = _find(s, run_id)
        inputs = [p.detail for p in s.scalars(select(RunPin).where(RunPin.run_id == row.run_id).order_by(RunPin.id))]
        return {**_summary(row), "manifest": row.manifest, "inputs": inputs}


def list_runs(lake, *, user: str | None = None, datastack: str | None = None, mode: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    """Stored runs, newest first, at most ``limit``: ``{"run_id", "created", "user", "mode", "status",
    "rows", "result_sha256", "datastacks", "sql", "result_file", "protecting"}``; filtered by ``user``, by
    a ``datastack`` any input belongs to, and by ``mode``. Raises InvalidArgument (mode, limit)."""
    if mode is not None and mode not in MODES:
        raise InvalidArgument(f"mode {mode!r} is not one of {list(MODES)}", field="mode", value=mode,
                              allowed=list(MODES))
    limit = whole(limit, "limit", 1)
    q = select(QueryRun)
    if user is not None:
        q = q.where(QueryRun.user == user)
    if mode is not None:
        q = q.where(QueryRun.mode == mode)
    if datastack is not None:
        q = q.where(QueryRun.run_id.in_(select(RunPin.run_id).where(RunPin.datastack == datastack)))
    with lake.catalog.session() as s:
        return [_summary(r) for r in s.scalars(q.order_by(QueryRun.created.desc(), QueryRun.run_id).limit(limit))]


def protecting_pins(lake, kind: str | Iterable[str], datastack: str | None, name: str | None = None,
                    version: int | None = None, *, session=None) -> list[dict[str, Any]]:
    """The pins of production runs (status not ``failed``) on inputs of ``kind`` (one kind or several) in
    ``datastack``, of table ``name`` (None: any) at ``version`` (None: any), oldest run first:
    ``[{"run_id", "kind", "name", "version", "created"}]``. ``session``: an open catalog session to read in
    (so a caller's check and its change share one transaction)."""
    kinds = [kind] if isinstance(kind, str) else list(kind)
    bad = [k for k in kinds if k not in PIN_KINDS]
    if bad:
        raise InvalidArgument(f"pin kind {bad[0]!r} is not one of {list(PIN_KINDS)}", field="kind", value=bad[0],
                              allowed=list(PIN_KINDS))
    q = (select(RunPin.run_id, RunPin.kind, RunPin.name, RunPin.version, QueryRun.created)
         .join(QueryRun, QueryRun.run_id == RunPin.run_id)
         .where(QueryRun.mode == "production", QueryRun.status != "failed", RunPin.kind.in_(kinds),
                RunPin.datastack == datastack if datastack is not None else RunPin.datastack.is_(None)))
    if name is not None:
        q = q.where(RunPin.name == name)
    if version is not None:
        q = q.where(RunPin.version == int(version))
    q = q.order_by(QueryRun.created, RunPin.run_id, RunPin.id)

    def read(s):
        return [{"run_id": r, "kind": k, "name": n, "version": v, "created": isoformat(as_utc(c))}
                for r, k, n, v, c in s.execute(q)]

    if session is not None:
        return read(session)
    with lake.catalog.session() as s:
        return read(s)


def protecting_runs(lake, kind: str | Iterable[str], datastack: str | None, name: str | None = None,
                    version: int | None = None, *, session=None) -> list[str]:
    """Ids of the production runs that pinned that input (see :func:`protecting_pins`), oldest first."""
    out: list[str] = []
    for p in protecting_pins(lake, kind, datastack, name, version, session=session):
        if p["run_id"] not in out:
            out.append(p["run_id"])
    return out


def delete_run(lake, run_id: str) -> dict[str, Any]:
    """Delete a stored run and its pins (releasing the protection of its inputs); returns its summary. A
    result file it wrote is left in place. Raises NotFound, InvalidArgument (ambiguous prefix)."""
    with lake.catalog.session() as s:
        row = _find(s, run_id)
        out = _summary(row)
        s.execute(delete(RunPin).where(RunPin.run_id == row.run_id))
        s.delete(row)
    return out
