"""Reproduce a recorded query run, and explain a query before running it.

:func:`reproduce` re-executes a run (by run id, a ``*.manifest.json`` file, or a result Parquet file
carrying its manifest) with every input at its recorded pin, and reports either
``identical (sha256 …)`` or exactly what differs (row count, columns, the first differing row — exact
when the original result file exists, else the first differing block of 65,536 rows from the
recorded block hashes). When a pinned input is gone (vacuumed Delta files, an expired or deleted
version, a dropped table, a feature table whose fingerprint changed) it names the input, its pin and
why, with ``status="input_gone"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neurolake.errors import InvalidArgument, NeurolakeError, NotFound, PermissionDenied
from neurolake.query import names as nm


def load_manifest(lake, ref: str | Path) -> dict[str, Any]:
    """The manifest of run ``ref``: a run id (or unique prefix) in the run store, a manifest JSON file or a
    result Parquet file. Raises NotFound, InvalidArgument (a file that holds no manifest)."""
    from neurolake.storage.config import is_s3, storage_config

    p = storage_config().path(str(ref)) if is_s3(str(ref)) else Path(str(ref))
    if p.suffix in (".json", ".parquet") or p.exists():
        if not p.exists():
            raise NotFound(f"manifest file {str(p)!r} does not exist", field="run", value=str(p))
        try:
            if p.suffix == ".parquet":
                import pyarrow.parquet as pq

                from neurolake.annotations.paths import open_input

                meta = pq.read_schema(open_input(p)).metadata or {}
                if b"openlineage" not in meta:
                    raise InvalidArgument(f"{p} has no neurolake manifest in its metadata", field="run")
                return json.loads(meta[b"openlineage"])
            return json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot read manifest {p}: {exc}", field="run", value=str(p)) from exc
    from neurolake.provenance.runs import get_run

    return get_run(lake, str(ref))["manifest"]


def run_facet(manifest: dict[str, Any]) -> dict[str, Any]:
    try:
        facet = manifest["run"]["facets"]["neurolake"]
        facet["sql"]
        return facet
    except (KeyError, TypeError) as exc:
        raise InvalidArgument("not a neurolake query manifest (no run.facets.neurolake with the SQL)",
                              field="run") from exc


def recorded_pins(facet: dict[str, Any]) -> dict[str, Any]:
    """``pins=`` that make every input resolve exactly as recorded (inputs pinned in the SQL need none)."""
    pins: dict[str, Any] = {}
    for inp in facet.get("inputs") or []:
        kind = inp["kind"]
        if inp.get("pinned_by") == "sql" and kind != "ephys":  # ephys: the files version is in the pin dict
            continue
        if kind in ("version_table", "connectome"):
            pins[f"{inp['datastack']}.{nm.LATEST}.{inp['table']}"] = inp["pin"]["version"]
        else:
            pins[inp["name"]] = inp["pin"]
    return pins


def _pin_text(inp: dict[str, Any]) -> str:
    pin = inp.get("pin") or {}
    if inp["kind"] in ("ephys", "skeletons"):
        return f"Delta version {pin.get('delta_version')} (committed {pin.get('committed')})"
    if inp["kind"] == "annotation":
        s = f"Delta version {pin.get('delta_version')} (committed {pin.get('committed')})"
        return s + (f", rows valid at {pin['timestamp']}" if pin.get("timestamp") else "")
    if inp["kind"] in ("version_table", "connectome"):
        return f"materialization version {pin.get('version')} (timestamp {pin.get('timestamp')})"
    if inp["kind"] == "edits":
        return f"operation {pin.get('operation_id')} ({pin.get('timestamp')})"
    fp = pin.get("fingerprint") or {}
    return f"fingerprint {fp.get('kind')}={str(fp.get('value'))[:16]}"


def check_inputs(lake, facet: dict[str, Any], principal=None) -> list[dict[str, Any]]:
    """Each recorded input that can no longer be read at its pin: ``{"input", "pin", "why"}``."""
    gone = []
    pins = recorded_pins(facet)
    for inp in facet.get("inputs") or []:
        ds, table = inp["datastack"], inp["table"]
        if inp["kind"] == "feature":
            ref = nm.Reference(nm.FEATURES, ds, table)
        elif inp["kind"] in ("version_table", "connectome"):
            ref = nm.Reference(ds, f"v{inp['pin']['version']}", table)
        elif inp["kind"] == "ephys":
            written = inp["pin"].get("delta_version") if inp.get("pinned_by") == "sql" else None
            ref = nm.Reference(ds, nm.EPHYS, f"{table}@{written}" if written is not None else table)
        elif inp["kind"] == "skeletons":
            written = inp["pin"].get("delta_version") if inp.get("pinned_by") == "sql" else None
            ref = nm.Reference(ds, nm.SKELETONS, f"{table}@{written}" if written is not None else table)
        else:
            pin = None
            if inp.get("pinned_by") == "sql":
                pin = (str(inp["pin"].get("delta_version")) if inp["kind"] == "annotation"
                       else str(inp["pin"].get("operation_id")))
            ref = nm.Reference(ds, "", f"{table}@{pin}" if pin else table)
        try:
            nm.Resolver(lake, principal=principal, pins=pins).resolve(ref)
        except NeurolakeError as exc:
            why = str(exc)
            if exc.http_status == 404 and inp["kind"] == "annotation":
                why = f"the table no longer exists ({exc})"
            gone.append({"input": inp["name"], "pin": inp.get("pin"), "pin_text": _pin_text(inp), "why": why,
                         "error": exc.code})
    return gone


def _first_difference(old, new) -> int | None:
    """Index of the first row where two tables with the same columns differ (None when equal)."""
    import numpy as np
    import pyarrow.compute as pc

    n = min(old.num_rows, new.num_rows)
    first = n if old.num_rows != new.num_rows else None
    step = 65_536
    for start in range(0, n, step):
        a, b = old.slice(start, min(step, n - start)), new.slice(start, min(step, n - start))
        bad = np.zeros(a.num_rows, dtype=bool)
        for c in old.column_names:
            x, y = a.column(c), b.column(c)
            try:
                eq = pc.fill_null(pc.equal(x, y), False).to_numpy(zero_copy_only=False)
                both_null = pc.and_(pc.is_null(x), pc.is_null(y)).to_numpy(zero_copy_only=False)
                bad |= ~(eq | both_null)
            except Exception:  # noqa: BLE001 - nested types: compare as Python values
                bad |= np.array([u != v for u, v in zip(x.to_pylist(), y.to_pylist(), strict=True)])
        if bad.any():
            return start + int(np.argmax(bad))
    return first


def reproduce(lake, ref: str | Path, *, principal=None) -> dict[str, Any]:
    """Re-run the recorded run ``ref`` with its pins and compare; see the module docstring.

    Returns ``{"run_id", "status": "identical"|"different"|"input_gone", "message", "sha256",
    "new_sha256", "rows": [old, new], "columns": {...}, "first_differing_row", "rows_at": {...},
    "inputs_gone": [...], "seconds": [first, reproduced]}``. Raises NotFound (unknown run),
    InvalidArgument (not a manifest; a partial run)."""
    from neurolake.query.engine import run
    from neurolake.query.manifest import FLOAT_DIGITS

    manifest = load_manifest(lake, ref)
    facet = run_facet(manifest)
    run_id = manifest.get("run", {}).get("runId") or facet.get("run_id")
    out: dict[str, Any] = {"run_id": run_id, "sha256": facet.get("result_sha256"), "mode": facet.get("mode")}
    if facet.get("partial"):
        raise InvalidArgument(f"run {run_id} was stopped by its time bound (partial result); a partial result "
                              "cannot be reproduced exactly — rerun it without timeout_s", field="run")
    gone = check_inputs(lake, facet, principal)
    if gone:
        lines = [f"{g['input']} pinned at {g['pin_text']}: {g['why']}" for g in gone]
        return {**out, "status": "input_gone", "inputs_gone": gone,
                "message": "cannot reproduce run " + str(run_id) + ": " + "; ".join(lines)}
    sample = (facet.get("sample") or {}).get("fraction")
    res = run(lake, facet["sql"], facet.get("params"), mode=facet.get("mode") or "exploratory",
              pins=recorded_pins(facet), sample=sample, principal=principal, datastack=facet.get("datastack"),
              record=False)
    new = res.arrow()
    out.update({"new_sha256": res.sha256, "rows": [facet.get("rows"), new.num_rows],
                "seconds": [(facet.get("runtime_class") or {}).get("measured_seconds"),
                            res.run["runtime_class"]["measured_seconds"]]})
    if res.sha256 == facet.get("result_sha256"):
        return {**out, "status": "identical", "exact": True, "message": f"identical (sha256 {res.sha256})"}
    f12 = res.run.get("result_sha256_float12")
    if f12 is not None and f12 == facet.get("result_sha256_float12"):
        return {**out, "status": "identical", "exact": False,
                "message": f"identical to {FLOAT_DIGITS} significant digits (float12 sha256 {f12}); the exact "
                           "sha256 differs only in the last bits of floating-point values, which DuckDB's "
                           "parallel aggregation does not fix from run to run"}
    old_cols = [(c["name"], c["type"]) for c in facet.get("columns") or []]
    new_cols = [(f.name, str(f.type)) for f in new.schema]
    cols = {"removed": [c for c in old_cols if c not in new_cols], "added": [c for c in new_cols if c not in old_cols]}
    out["columns"] = cols
    parts = []
    if facet.get("rows") != new.num_rows:
        parts.append(f"rows {facet.get('rows')} → {new.num_rows}")
    if cols["removed"] or cols["added"]:
        parts.append(f"columns removed {cols['removed']}, added {cols['added']}")
    first = None
    old_file = facet.get("result_file")
    if old_file and _exists(old_file) and not (cols["removed"] or cols["added"]):
        import pyarrow.parquet as pq

        from neurolake.annotations.paths import arrow_source

        where, fs = arrow_source(old_file)
        old = pq.read_table(where, filesystem=fs).replace_schema_metadata(None)
        first = _first_difference(old, new.replace_schema_metadata(None))
        if first is not None:
            row_old = old.slice(first, 1).to_pylist()
            row_new = new.slice(first, 1).to_pylist()
            out["rows_at"] = {"old": row_old[0] if row_old else None, "new": row_new[0] if row_new else None}
            parts.append(f"first differing row {first}: {out['rows_at']['old']} → {out['rows_at']['new']}")
    elif facet.get("result_blocks"):
        from neurolake.query.manifest import BLOCK_ROWS, block_hashes

        mine = block_hashes(new)
        theirs = facet["result_blocks"]
        k = next((i for i, (a, b) in enumerate(zip(theirs, mine, strict=False)) if a != b),
                 min(len(theirs), len(mine)))
        first = k * BLOCK_ROWS
        parts.append(f"first difference within rows {first}–{first + BLOCK_ROWS - 1} (the original rows were "
                     "not saved; run with save=True to get the exact row)")
    out["first_differing_row"] = first
    return {**out, "status": "different",
            "message": f"differs from run {run_id} (sha256 {str(facet.get('result_sha256'))[:16]}… → "
                       f"{res.sha256[:16]}…): " + "; ".join(parts or ["values differ"])}


def _exists(file: str) -> bool:
    from neurolake.annotations.paths import file_sizes

    return file_sizes([str(file)]).get(str(file)) is not None


def explain(lake, sql: str, *, pins: dict[str, Any] | None = None, datastack: str | None = None,
            principal=None, mode: str = "exploratory") -> dict[str, Any]:
    """What :func:`~neurolake.query.engine.run` would do, without running it: the inputs with their pins,
    the plan, estimated rows and bytes, the predicted runtime class and, per filter column, whether the
    table's layout serves it (:func:`neurolake.query.profile.explain`). Raises as :func:`prepare`."""
    import duckdb

    from neurolake.query.engine import prepare
    from neurolake.query.profile import explain as plan

    p = prepare(lake, sql, mode=mode, pins=pins, principal=principal, datastack=datastack)
    try:
        out = plan(p.con, p.executed_sql, p.inputs)
    except duckdb.PermissionException as exc:
        raise PermissionDenied(f"the query tried to reach files or URLs outside the lake's tables: {exc}",
                               field="sql") from exc
    finally:
        p.close()
    out["inputs"] = [{k: v for k, v in i.items() if k not in ("view_sql", "arrow", "files")} for i in p.inputs]
    out["executed_sql"] = p.executed_sql
    out["ordered_by"] = p.ordered_by
    return out
