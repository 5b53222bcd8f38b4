"""SQL over the whole lake in an embedded DuckDB; every result carries its OpenLineage manifest.

One query = one in-memory DuckDB connection: the tables the SQL names are resolved
(:mod:`neurolake.query.names`), made views over their exact files, then the connection is locked
(``enable_external_access=false`` with ``allowed_paths`` = the inputs' own files, locked
configuration), so the SQL can read nothing else: no ``read_csv('/etc/passwd')``, no ``COPY … TO``,
``ATTACH``, ``INSTALL`` or ``SET`` (only one ``SELECT`` statement is accepted at all).

Two paths (see docs/query.md):

- **exploratory** (default): may read unpinned inputs, sample them (``sample=0.1``: a Bernoulli sample
  of each input with a recorded seed) and stop after ``timeout_s`` (the rows fetched so far are
  returned, flagged ``partial``); recorded, marked exploratory;
- **production**: every input pinned (in the SQL or ``pins=``; feature tables are pinned by their
  registered fingerprint), no ``now()``-relative or random functions, no ``LIMIT`` without ``ORDER BY``,
  no sampling or time bound; its pins protect the inputs from expiry and vacuum.

Rows are totally ordered: when the SQL has no top-level ``ORDER BY``, neurolake sorts the result
``ORDER BY ALL`` (recorded as ``ordered_by: "all"``), so the result hash is stable run to run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from neurolake.base.results import Result
from neurolake.base.trees import walk
from neurolake.db.base import utcnow
from neurolake.errors import InvalidArgument, PermissionDenied
from neurolake.query import names as nm

MODES = ("exploratory", "production")
# functions whose value depends on when or how often the query runs: refused in production
VOLATILE = {"now", "today", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
            "get_current_time", "get_current_timestamp", "transaction_timestamp", "statement_timestamp",
            "random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "setseed", "nextval", "currval"}
ALLOWED_STATEMENTS = {"SELECT"}
SAMPLE_SEED = 42


class QueryResult(Result):
    """A :class:`~neurolake.base.results.Result` of :func:`run` (``.df()``, ``.arrow()``, ``.pl()``) with

    - ``manifest``: the OpenLineage RunEvent (a dict) describing the run: inputs with their pins, the SQL,
      parameters, code and engine versions, timings, rows, result SHA-256, profile (docs/query.md);
    - ``run_id``, ``sha256``, ``partial`` (a time-bounded exploratory run stopped early), ``run`` (the
      neurolake run facet), ``to_parquet(path)`` (the rows with the manifest in the file's key-value
      metadata, plus ``path + ".manifest.json"``).
    """

    __slots__ = ("manifest", "run")

    def __init__(self, table, metadata: dict[str, Any], manifest: dict[str, Any], run: dict[str, Any]) -> None:
        super().__init__(table, metadata)
        self.manifest = manifest
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def sha256(self) -> str:
        return self.run["result_sha256"]

    @property
    def partial(self) -> bool:
        return bool(self.run.get("partial"))

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write the rows as Parquet (manifest under the key ``openlineage`` of the file's key-value
        metadata) and the manifest beside it as ``<path>.manifest.json``; returns the Parquet path."""
        return write_result(self._arrow, self.manifest, _destination(path))

    def __repr__(self) -> str:
        flag = " partial" if self.partial else ""
        return (f"<QueryResult {self.num_rows} rows × {len(self.columns)} columns run={self.run_id[:8]} "
                f"{self.run['mode']}{flag} sha256={self.sha256[:12]}>")


def _destination(path: Any) -> Any:
    """A result path the user names: a local path, or ``s3://bucket/key`` (a ``upath.UPath``)."""
    from neurolake.storage.config import is_s3, storage_config

    if is_s3(path):
        return path if not isinstance(path, str) else storage_config().path(path)
    return Path(path)


def write_result(table, manifest: dict[str, Any], path: Any) -> Any:
    """Write ``table`` to ``path`` (a local Path, or a UPath on ``s3://``) with the manifest in its key-value
    metadata and beside it as ``<path>.manifest.json``; each file appears whole or not at all."""
    import pyarrow.parquet as pq

    from neurolake.storage.config import is_s3

    meta = dict(table.schema.metadata or {})
    meta[b"openlineage"] = json.dumps(manifest, default=str).encode()
    if is_s3(path):  # a PUT replaces an object as one step: no temporary names
        from neurolake.annotations.paths import arrow_source

        where, fs = arrow_source(path)
        pq.write_table(table.replace_schema_metadata(meta), where, compression="zstd", filesystem=fs)
        (path.parent / (path.name + ".manifest.json")).write_text(json.dumps(manifest, indent=2, default=str))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    side = path.with_name(path.name + ".manifest.json")
    side_tmp = side.with_name(f".{side.name}.tmp")
    side_tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
    os.replace(side_tmp, side)
    return path


# -------------------------------------------------------------------------------------------------
# preparing a query
# -------------------------------------------------------------------------------------------------
class Prepared:
    """A query ready to run: its connection (views made, locked), inputs and the SQL to execute."""

    def __init__(self, con, sql: str, executed_sql: str, inputs: list[dict[str, Any]], ordered_by: str,
                 profile_path: Path, tmpdir: tempfile.TemporaryDirectory) -> None:
        self.con = con
        self.sql = sql
        self.executed_sql = executed_sql
        self.inputs = inputs
        self.ordered_by = ordered_by
        self.profile_path = profile_path
        self._tmp = tmpdir

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()
        self._tmp.cleanup()


def _statement(con, sql: str) -> str:
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgument("sql must be a non-empty SELECT statement", field="sql")
    try:
        stmts = con.extract_statements(sql)
    except Exception as exc:  # duckdb.ParserException
        raise InvalidArgument(f"SQL does not parse: {_duck_message(exc)}", field="sql") from exc
    if len(stmts) != 1:
        raise InvalidArgument(f"one SQL statement per query (got {len(stmts)})", field="sql")
    kind = str(stmts[0].type).rsplit(".", 1)[-1]
    if kind not in ALLOWED_STATEMENTS:
        what = {"COPY": "COPY writes or reads files", "ATTACH": "ATTACH opens other databases",
                "LOAD": "INSTALL/LOAD add extensions", "SET": "SET changes the engine's settings",
                "EXPORT": "EXPORT writes files", "CREATE": "CREATE changes the catalog",
                "INSERT": "the lake is changed through its API, not SQL", "UPDATE": "the lake is changed "
                "through its API, not SQL", "DELETE": "the lake is changed through its API, not SQL",
                "PRAGMA": "PRAGMA changes the engine's settings"}.get(kind, f"{kind} statements")
        raise PermissionDenied(f"only SELECT queries are accepted ({what}); got a {kind} statement",
                               field="sql", statement=kind)
    return stmts[0].query.strip().rstrip(";").strip()


def _duck_message(exc: BaseException) -> str:
    return str(exc).strip()


def _volatile(tree: dict[str, Any]) -> list[str]:
    found = set(nm.function_names(tree)) & VOLATILE
    for n in walk(tree):
        if n.get("class") == "COLUMN_REF" and len(n.get("column_names") or []) == 1:
            c = str(n["column_names"][0]).lower()
            if c in VOLATILE:
                found.add(c)
    return sorted(found)


def _new_connection():
    import duckdb

    con = duckdb.connect(config={"threads": max(1, os.cpu_count() or 1)})
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET parquet_metadata_cache = true")  # views, the estimate and the query read the same footers
    return con


class _Spare:
    """One fresh DuckDB connection kept ready (made in a background thread after each query), so a query
    does not wait for DuckDB to start; every query still gets its own connection, used once."""

    def __init__(self) -> None:
        import atexit

        self._lock = threading.Lock()
        self._con = None
        self._making = False
        atexit.register(self.close)  # close the idle connection before the interpreter finalises

    def _make(self) -> None:
        try:
            con = _new_connection()
        except Exception:  # noqa: BLE001 - the next query makes its own
            con = None
        with self._lock:
            self._making = False
            if self._con is None:
                self._con, con = con, None
        if con is not None:
            con.close()

    def take(self):
        with self._lock:
            con, self._con = self._con, None
            refill = not self._making
            self._making = True
        if refill:
            # not a daemon: the interpreter waits for it at exit (a DuckDB call cut off by finalisation
            # aborts the process: "terminate called without an active exception")
            threading.Thread(target=self._make, daemon=False, name="neurolake-duckdb-spare").start()
        return con if con is not None else _new_connection()

    def close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            con.close()


def _connect(lake):
    return lake.state("query.spare_connection", _Spare).take()


def prepare(lake, sql: str, *, mode: str = "exploratory", pins: dict[str, Any] | None = None,
            sample: float | None = None, principal=None, datastack: str | None = None,
            order: bool = True) -> Prepared:
    """Parse, check and resolve ``sql``; make the views and lock the connection. Raises InvalidArgument
    (parse error, bad pin/mode, production rule), PermissionDenied (not a SELECT; a table the principal
    may not read), NotFound (unknown datastack/table/version/feature table), VersionExpired, CorruptData."""
    if mode not in MODES:
        raise InvalidArgument(f"mode {mode!r} must be one of {list(MODES)}", field="mode", value=mode,
                              allowed=list(MODES))
    if sample is not None:
        if mode == "production":
            raise InvalidArgument("production queries read everything: sample= is for exploratory queries",
                                  field="sample", value=sample)
        if not isinstance(sample, int | float) or not 0 < float(sample) <= 1:
            raise InvalidArgument(f"sample {sample!r} must be a fraction in (0, 1]", field="sample", value=sample)
    con = _connect(lake)
    tmp = tempfile.TemporaryDirectory(prefix="nl-query-")
    try:
        stmt = _statement(con, sql)
        tree = nm.parse_tree(con, stmt)
        refs = nm.references(tree)
        resolver = nm.Resolver(lake, principal=principal, pins=pins, datastack=datastack)
        inputs: list[dict[str, Any]] = []
        views: list[tuple[nm.Reference, dict[str, Any]]] = []
        for ref in refs:
            inp = resolver.resolve(ref)
            same = next((i for i in inputs if i["name"] == inp["name"] and i["pin"] == inp["pin"]), None)
            if same is None:
                inputs.append(inp)
                same = inp
            views.append((ref, same))
        unused = sorted(set(resolver.pins) - resolver.used_pins - {i["name"] for i in inputs}
                        - {f"{i['datastack']}.{nm.LATEST}.{i['table']}" for i in inputs}
                        - {f"{nm.FEATURES}.{i['table']}" for i in inputs if i["kind"] == "feature"})
        if unused:
            raise InvalidArgument(f"pins= names tables the SQL does not read: {', '.join(unused)}; it reads "
                                  f"{', '.join(i['name'] for i in inputs) or 'no lake table'}", field="pins",
                                  value=unused)
        modifiers = nm.top_modifiers(tree)
        if mode == "production":
            loose = [i["name"] for i in inputs if i["pinned_by"] == "latest"]
            if loose:
                raise InvalidArgument(
                    f"production queries read pinned inputs only; not pinned: {', '.join(loose)} (pin in the SQL, "
                    'e.g. ds."table@DELTA_VERSION" or ds.vN.table, or with pins={name: pin})', field="pins",
                    value=loose)
            vol = _volatile(tree)
            if vol:
                raise InvalidArgument(f"production queries cannot use {', '.join(vol)}(): the result would "
                                      "change with the time or run; pass the value as a parameter", field="sql",
                                      value=vol)
            if "LIMIT_MODIFIER" in modifiers and "ORDER_MODIFIER" not in modifiers:
                raise InvalidArgument("production queries cannot use LIMIT without ORDER BY (which rows "
                                      "are kept would be arbitrary)", field="sql")
        remote = [f for i in inputs for f in i.get("files") or [] if str(f).startswith("s3://")]
        if remote:
            _s3(con, lake)
        for i, (ref, inp) in enumerate(views):
            _make_view(con, i, ref, inp, sample)
        ordered_by = "query"
        executed = stmt
        if "ORDER_MODIFIER" not in modifiers:
            if order:
                executed = f"SELECT * FROM (\n{stmt}\n) AS _neurolake_q ORDER BY ALL"
                ordered_by = "all"
            else:
                ordered_by = "none"
        profile_path = Path(tmp.name) / "profile.json"
        _lock(con, inputs, profile_path)
        return Prepared(con, stmt, executed, inputs, ordered_by, profile_path, tmp)
    except BaseException:
        with contextlib.suppress(Exception):
            con.close()
        tmp.cleanup()
        raise


def _make_view(con, i: int, ref: nm.Reference, inp: dict[str, Any], sample: float | None) -> None:
    if ref.catalog:
        cat, schema = ref.catalog, ref.schema or "main"
    elif ref.schema:
        cat, schema = ref.schema, "main"
    else:
        cat, schema = "memory", "main"
    if cat != "memory":
        known = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        if cat not in known:
            con.execute(f"ATTACH ':memory:' AS {nm._quote(cat)}")
    if schema != "main":
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {nm._quote(cat)}.{nm._quote(schema)}")
    body = inp.get("view_sql")
    if body is None:
        name = f"_neurolake_input_{i}"
        con.register(name, inp["arrow"])
        body = f"SELECT * FROM {name}"
    if sample is not None:
        body = f"SELECT * FROM ({body}) USING SAMPLE {float(sample) * 100:g}% (bernoulli, {SAMPLE_SEED})"
    target = ".".join(nm._quote(p) for p in (cat, schema, ref.table))
    con.execute(f"CREATE OR REPLACE VIEW {target} AS {body}")


def _s3(con, lake) -> None:
    """Let DuckDB read ``s3://`` inputs: httpfs from the offline extension wheel and the S3 secret of the lake's
    storage configuration (:meth:`neurolake.storage.config.StorageConfig.duckdb_secret`), before the connection
    is locked."""
    import duckdb_ext

    from neurolake.storage.config import storage_config

    duckdb_ext.init(con)
    con.execute("LOAD httpfs")
    con.execute((getattr(lake, "storage", None) or storage_config()).duckdb_secret())


def _lock(con, inputs: list[dict[str, Any]], profile_path: Path) -> None:
    # exactly the inputs' own files (not their folders: a folder may hold other tables or the catalog)
    files = sorted({str(f) for inp in inputs for f in inp.get("files") or [] if inp.get("view_sql")})
    lst = ", ".join(nm.sql_literal(f) for f in files)
    con.execute(f"SET allowed_paths = [{lst}]")
    con.execute(f"SET temp_directory = {nm.sql_literal(str(profile_path.parent / 'spill'))}")
    con.execute("SET enable_external_access = false")
    con.execute("SET enable_profiling = 'json'")
    con.execute(f"SET profiling_output = {nm.sql_literal(str(profile_path))}")
    con.execute("SET profiling_mode = 'standard'")
    con.execute("SET lock_configuration = true")


# -------------------------------------------------------------------------------------------------
# running
# -------------------------------------------------------------------------------------------------
def _execute(p: Prepared, params: Any, timeout_s: float | None) -> tuple[Any, bool]:
    """Run the prepared SQL; returns ``(arrow table, partial)``. With ``timeout_s`` the query is
    interrupted when the time is up and the rows fetched so far are returned with ``partial=True``."""
    import duckdb
    import pyarrow as pa

    try:
        if timeout_s is None:
            return p.con.execute(p.executed_sql, params).fetch_arrow_table(), False
        deadline = time.monotonic() + float(timeout_s)
        timer = threading.Timer(float(timeout_s), p.con.interrupt)
        timer.daemon = True
        timer.start()
        batches, schema = [], None
        try:
            reader = p.con.execute(p.executed_sql, params).fetch_record_batch(65_536)
            schema = reader.schema
            for b in reader:
                batches.append(b)
                if time.monotonic() >= deadline:
                    return pa.Table.from_batches(batches, schema=schema), True
        except duckdb.InterruptException:
            return (pa.Table.from_batches(batches, schema=schema) if schema is not None else pa.table({})), True
        finally:
            timer.cancel()
        return pa.Table.from_batches(batches, schema=schema), False
    except duckdb.PermissionException as exc:
        raise PermissionDenied(f"the query tried to reach files or URLs outside the lake's tables: "
                               f"{_duck_message(exc)}", field="sql") from exc
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
            duckdb.ConversionException, duckdb.InvalidInputException, duckdb.NotImplementedException,
            duckdb.OutOfRangeException) as exc:
        raise InvalidArgument(f"query failed: {_duck_message(exc)}", field="sql") from exc


def _profile(p: Prepared, est: dict[str, Any]) -> dict[str, Any]:
    """DuckDB's profile of the run, normalised, with a plain-words bottleneck hint."""
    from neurolake.query.profile import bottleneck_hint, normalize_profile

    try:
        raw = json.loads(p.profile_path.read_text())
    except (OSError, ValueError):
        return {}
    try:
        prof = normalize_profile(raw, scans=est.get("scans"))
        prof["hint"] = bottleneck_hint(prof, est.get("layout") or [])
        return prof
    except Exception as exc:  # noqa: BLE001 - a profile is a report, never a reason to fail the query
        return {"error": f"{type(exc).__name__}: {exc}"}


def _record_input(inp: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of an input (what the manifest records)."""
    return {k: v for k, v in inp.items() if k not in ("view_sql", "arrow")}


def run(lake, sql: str, params: Any = None, *, mode: str = "exploratory", pins: dict[str, Any] | None = None,
        sample: float | None = None, timeout_s: float | None = None, principal=None,
        datastack: str | None = None, save: bool = False, output: str | os.PathLike | None = None,
        job: str | None = None, record: bool = True) -> QueryResult:
    """Run ``sql`` (one SELECT) over the lake; see the module docstring and docs/query.md.

    ``params``: positional (list) or named (dict) parameters (``?`` / ``$name``); ``pins``: ``{table name:
    pin}``; ``sample``: exploratory Bernoulli sample fraction of each input; ``timeout_s``: exploratory time
    bound; ``principal``: check the user's rights (HTTP); ``datastack``: resolve unqualified table names
    in it; ``save``: write the result to ``<lake>/runs/<run_id>.parquet`` (an object under the prefix of a lake
    on S3); ``output``: write it there instead (a local path or ``s3://bucket/key``); ``job``: a job name for the manifest; ``record``: store the run in the run store.

    Returns a :class:`QueryResult`. Raises InvalidArgument, PermissionDenied, NotFound, VersionExpired,
    CorruptData (see :func:`prepare`).
    """
    from neurolake import __version__  # noqa: F401 - keeps the version import cheap and explicit
    from neurolake.query.manifest import build_event, hash_result
    from neurolake.query.profile import Calibration, estimate, runtime_class

    if timeout_s is not None:
        if mode == "production":
            raise InvalidArgument("production queries are not time-bounded (timeout_s= is for exploratory "
                                  "queries)", field="timeout_s", value=timeout_s)
        if not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise InvalidArgument(f"timeout_s {timeout_s!r} must be a positive number of seconds",
                                  field="timeout_s", value=timeout_s)
    started = utcnow()
    t0 = time.perf_counter()
    p = prepare(lake, sql, mode=mode, pins=pins, sample=sample, principal=principal, datastack=datastack,
                order=timeout_s is None)
    try:
        try:
            est = estimate(p.con, p.executed_sql, p.inputs, layout=True, params=params)
        except Exception as exc:  # noqa: BLE001 - the estimate informs; it never blocks a query
            est = {"error": f"{type(exc).__name__}: {exc}", "runtime_class": None}
        calibration = lake.state("query.calibration", Calibration)
        modelled = est.get("predicted_seconds")
        factor = calibration.factor()
        if modelled is not None:
            est["predicted_seconds"] = round(float(modelled) * factor, 6)
            est["runtime_class"] = runtime_class(est["predicted_seconds"])
        t_run = time.perf_counter()
        table, partial = _execute(p, params, timeout_s)
        seconds = time.perf_counter() - t_run
        if not partial:
            calibration.observe(modelled, seconds)
        prof = _profile(p, est)
    finally:  # closing DuckDB takes ~10 ms: off the caller's path
        threading.Thread(target=p.close, daemon=False, name="neurolake-duckdb-close").start()  # joined at exit
    ended = utcnow()
    import duckdb

    run_id = str(uuid.uuid4())
    t_hash = time.perf_counter()
    digest = hash_result(table, float12=True)  # one pass; float columns also hashed rounded
    hash_seconds = time.perf_counter() - t_hash
    float12 = digest.sha256_float12
    user = principal.name if principal is not None else lake.settings.user
    inputs = [_record_input(i) for i in p.inputs]
    bytes_read = sum(int(i.get("bytes") or 0) for i in inputs)
    if isinstance(est, dict) and est.get("estimated_bytes") is not None:
        bytes_read = int(est["estimated_bytes"])
    from neurolake.provenance import code_version

    run_rec: dict[str, Any] = {
        "run_id": run_id, "sql": sql, "executed_sql": p.executed_sql, "params": _jsonable(params),
        "mode": mode, "user": user, "started": started.isoformat(), "ended": ended.isoformat(),
        "inputs": inputs, "rows": table.num_rows,
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "bytes_read": bytes_read, "result_sha256": digest.sha256, "result_blocks": list(digest.blocks),
        "result_sha256_float12": float12, "result_bytes": table.nbytes, "ordered_by": p.ordered_by,
        "runtime_class": {"predicted": est.get("runtime_class"), "predicted_seconds": est.get("predicted_seconds"),
                          "model_seconds": modelled, "calibration": round(factor, 4),
                          "measured": runtime_class(seconds), "measured_seconds": round(seconds, 6),
                          "estimate": {k: est.get(k) for k in ("estimated_rows", "estimated_bytes")}},
        "profile": prof, "sample": {"fraction": float(sample), "seed": SAMPLE_SEED,
                                    "method": "bernoulli"} if sample is not None else None,
        "timeout_s": timeout_s, "partial": partial, "code": code_version(), "duckdb": duckdb.__version__,
        "lake": str(lake.root), "pins_argument": _jsonable(pins), "datastack": datastack,
        "wall_seconds": round(time.perf_counter() - t0, 6), "hash_seconds": round(hash_seconds, 6),
        "result_file": None,
    }
    if job:
        run_rec["job"] = job
    result_file = None
    if output is not None or save:
        result_file = _destination(output) if output is not None else lake.root / "runs" / f"{run_id}.parquet"
        run_rec["result_file"] = str(result_file)
    manifest = build_event(run_rec, namespace=namespace(lake))
    if result_file is not None:
        write_result(table, manifest, result_file)
    if record:
        from neurolake.provenance.runs import save_run

        save_run(lake, manifest, run=run_rec, result_file=str(result_file) if result_file else None)
    meta = {"run_id": run_id, "mode": mode, "sha256": run_rec["result_sha256"], "partial": partial or None,
            "inputs": {i["name"]: i["pin"] for i in inputs}}
    return QueryResult(table, meta, manifest, run_rec)


def namespace(lake) -> str:
    """The OpenLineage namespace of the lake's datasets: its public URL, else its ``s3://bucket/prefix`` (a lake
    on object storage) or ``file://host/path``."""
    import socket

    base = getattr(lake.settings, "public_url", None)
    if base:
        return str(base).rstrip("/")
    if getattr(lake, "remote", False):
        return str(lake.root).rstrip("/")
    return f"file://{socket.gethostname()}{lake.root}"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return str(v)
