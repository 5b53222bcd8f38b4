"""Checks that call other packages: materialization versions (issue 5) and annotation tables (issue 4).

Each hook returns a list of warnings and raises a typed error when the reference is wrong. When the
package it needs is not installed in this lake's code (not yet written, or optional), the hook cannot
check and says so in a warning instead of failing the registration.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any

from neurolake.base.time import parse_timestamp
from neurolake.errors import InvalidArgument, NeurolakeError, NotFound


def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - missing or broken optional package: the hook says it did not check
        return None


def _as_dict(v: Any) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    return {k: getattr(v, k) for k in dir(v) if not k.startswith("_") and not callable(getattr(v, k, None))}


def check_materialization(lake, datastack: str, version: int) -> list[str]:
    """The materialization ``version`` of ``datastack`` must exist; warn if it is expired.

    Uses ``neurolake.materialize`` (``versions(lake, datastack)`` or ``Materializations(lake).versions``
    style APIs are probed). Raises NotFound for an unknown version.
    """
    mod = _module("neurolake.materialize")
    if mod is None:
        return [f"materialization version {version} was not checked: neurolake.materialize is not available"]
    lister = None
    for attr in ("list_versions", "versions", "materializations"):
        fn = getattr(mod, attr, None)
        if callable(fn):
            lister = fn
            break
    getter = getattr(mod, "get_version", None) or getattr(mod, "version", None)
    info = None
    try:
        if callable(getter):
            try:
                info = getter(lake, datastack, version)
            except NotFound:
                raise
            except TypeError:
                info = None
        if info is None and lister is not None:
            found = None
            for v in lister(lake, datastack) or []:
                d = _as_dict(v) if not isinstance(v, int) else {"version": v}
                if int(d.get("version", -1)) == int(version):
                    found = d
                    break
            if found is None:
                raise NotFound(f"materialization version {version} of datastack {datastack!r} does not exist",
                               field="materialization_version", value=version, datastack=datastack)
            info = found
    except NotFound as exc:
        raise NotFound(f"materialization version {version} of datastack {datastack!r} does not exist: "
                       f"{exc.message}", field="materialization_version", value=version,
                       datastack=datastack) from exc
    except NeurolakeError:
        raise
    except Exception as exc:  # noqa: BLE001 - another package's API we could not call
        return [f"materialization version {version} was not checked: {type(exc).__name__}: {exc}"]
    if info is None:
        return [f"materialization version {version} was not checked: no version lookup in neurolake.materialize"]
    d = _as_dict(info)
    expired = d.get("expired")
    expires = d.get("expires_on") or d.get("expires") or d.get("expires_at")
    if isinstance(expires, str):
        try:
            expires = parse_timestamp(expires, "expires_on")
        except InvalidArgument:
            expires = None
    if isinstance(expires, dt.datetime):
        e = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
        expired = expired or e <= dt.datetime.now(dt.UTC)
    if expired or (d.get("valid") is False):
        return [f"materialization version {version} of datastack {datastack!r} is expired"]
    return []


def check_references(lake, datastack: str, references: list[dict[str, Any]]) -> list[str]:
    """Each ``{"table": t, "columns": [...]}`` must name an annotation table of ``datastack`` and its
    columns. Uses ``neurolake.annotations``; raises NotFound / InvalidArgument."""
    if not references:
        return []
    mod = _module("neurolake.annotations")
    if mod is None:
        return ["annotation references were not checked: neurolake.annotations is not available"]
    getter = None
    for attr in ("get_table", "table", "open_table", "describe_table", "table_info"):
        if callable(getattr(mod, attr, None)):
            getter = getattr(mod, attr)
            break
    if getter is None:
        return ["annotation references were not checked: no table lookup in neurolake.annotations"]
    warnings: list[str] = []
    for ref in references:
        table = ref["table"]
        try:
            info = getter(lake, datastack, table)
        except NotFound as exc:
            raise NotFound(f"references: annotation table {table!r} of datastack {datastack!r} does not exist "
                           f"({exc.message})", field="references", value=table, datastack=datastack) from exc
        except NeurolakeError:
            raise
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"annotation table {table!r} was not checked: {type(exc).__name__}: {exc}")
            continue
        cols = _columns_of(info)
        if cols is None:
            warnings.append(f"columns of annotation table {table!r} were not checked")
            continue
        missing = [c for c in ref.get("columns", []) if c not in cols and not _pt_col(c, cols)]
        if missing:
            raise InvalidArgument(f"references: columns {missing} are not in annotation table {table!r} "
                                  f"(columns: {sorted(cols)})", field="references.columns", value=missing,
                                  table=table, allowed=sorted(cols))
    return warnings


def _pt_col(c: str, cols: set[str]) -> bool:
    # CAVE-style split position columns: pt_position_x → pt_position
    for suffix in ("_x", "_y", "_z"):
        if c.endswith(suffix) and c[: -len(suffix)] in cols:
            return True
    return False


def _columns_of(info: Any) -> set[str] | None:
    if info is None:
        return None
    arrow = getattr(info, "arrow_schema", None)  # neurolake.annotations.Table
    if arrow is not None and hasattr(arrow, "names"):
        return set(arrow.names)
    for attr in ("columns", "column_names", "schema", "fields"):
        v = info.get(attr) if isinstance(info, dict) else getattr(info, attr, None)
        if callable(v):
            try:
                v = v()
            except Exception:  # noqa: BLE001
                continue
        if v is None:
            continue
        if hasattr(v, "names"):
            return set(v.names)
        if isinstance(v, dict):
            return set(v)
        try:
            return {c if isinstance(c, str) else (c.get("name") if isinstance(c, dict) else c.name)
                    for c in v}
        except Exception:  # noqa: BLE001
            continue
    return None
