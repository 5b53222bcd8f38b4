"""Synapse detection from a label mask: 3-D connected components → one synapse row each.

Every connected component (26-connectivity by default) of the voxels equal to ``value`` in a layer
becomes a ``synapse`` row: ``ctr_pt`` at the component's centroid (x, y, z voxels of the layer at
``mip``), ``size`` in voxels, and the properties ``size_nm3`` (voxels × voxel volume in nm³) and
the bounding box ``bbox_{min,max}_{x,y,z}`` (voxels, half-open). Components come from
connected-components-3d (``cc3d.connected_components`` and ``cc3d.statistics``). pre_pt/post_pt are
unknown from a mask and left empty. The whole layer is read at once (up to ``max_bytes``).

Re-running is idempotent. Every detection is a *derivation* recorded with the rows it wrote: its key
is the inputs (datastack, mask layer and the layer's identity — its catalog path and creation time,
which change when the layer is re-ingested or overwritten — and ``mip``) and the parameters
(``value``, ``connectivity``, ``min_size``). The record travels in the same Delta commit as the rows
(commit info ``neurolake_derivation``), so the table's history is the source of truth even after a
crash; a copy is kept in the catalog row's ``provenance["derivations"]`` for display. A run whose key
is already held by the table changes nothing; a different key is refused (AlreadyExists, naming what
differs) unless ``append`` (add its rows next to the earlier ones) or ``overwrite`` (soft-delete the
rows of the earlier derivations — and rows that superseded them — and add the new ones in **one**
commit, so every timestamp sees either the old or the new set).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from neurolake.errors import AlreadyExists, InvalidArgument, TooLarge

log = logging.getLogger("neurolake.annotations.detect")

BBOX_PROPERTIES = {f"bbox_{e}_{a}": "int" for e in ("min", "max") for a in "xyz"}
DETECT_PROPERTIES = {"size_nm3": "float", **BBOX_PROPERTIES}
ACTION = "detect"


def components(mask_zyx: np.ndarray, connectivity: int = 26, min_size: int = 1) -> pd.DataFrame:
    """Connected components of a boolean (z, y, x) array as rows: centroid ``ctr_pt_position_x|y|z``
    (voxels), ``size`` (voxels) and ``bbox_min/max_x|y|z`` (voxels, half-open), sorted by z, y, x."""
    import cc3d

    _check_connectivity(connectivity)
    labels = cc3d.connected_components(np.ascontiguousarray(mask_zyx, dtype=bool), connectivity=connectivity)
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"])[1:]
    cents = np.asarray(stats["centroids"])[1:]  # (z, y, x) array order
    boxes = stats["bounding_boxes"][1:]
    keep = counts >= min_size
    rows = pd.DataFrame({
        "ctr_pt_position_x": cents[keep, 2], "ctr_pt_position_y": cents[keep, 1],
        "ctr_pt_position_z": cents[keep, 0], "size": counts[keep].astype(np.float64),
    })
    b = [bx for bx, k in zip(boxes, keep, strict=True) if k]
    for i, a in enumerate("zyx"):
        rows[f"bbox_min_{a}"] = [int(s[i].start) for s in b]
        rows[f"bbox_max_{a}"] = [int(s[i].stop) for s in b]
    return rows.sort_values(["ctr_pt_position_z", "ctr_pt_position_y", "ctr_pt_position_x"]).reset_index(drop=True)


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (6, 18, 26):
        raise InvalidArgument(f"connectivity {connectivity} must be 6, 18 or 26", field="connectivity",
                              value=connectivity)


# -- derivation records ---------------------------------------------------------------------------
def derivation_key(lake: Any, datastack: str, mask_layer: str, value: int, *, mip: int = 0,
                   connectivity: int = 26, min_size: int = 1, layer: Any = None) -> dict[str, Any]:
    """The inputs and parameters that determine a detection's rows (JSON-able, compared for equality)."""
    from neurolake.provenance import layer_identity

    la = layer if layer is not None else lake.layer(datastack, mask_layer)
    return {"action": ACTION,
            "inputs": {"datastack": datastack, "mask_layer": mask_layer, "mip": int(mip),
                       "layer": layer_identity(lake, la)},
            "params": {"value": int(value), "connectivity": int(connectivity), "min_size": int(min_size)}}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def derivations(table: Any) -> list[dict[str, Any]]:
    """The detect derivations whose rows ``table`` holds, oldest first, read from its Delta history:
    each record has ``key`` (inputs and parameters), ``digest``, ``mode`` (create/append/overwrite),
    ``rows``, ``ids`` (ranges ``[start, stop)`` of the row ids it wrote), ``user``, ``time``, ``code``.
    An ``overwrite`` record ends every earlier derivation. Empty for tables never written by detect.
    Should older commit files be cleaned up (a Delta log truncated after a checkpoint), the records
    of the missing commits come from the catalog copy."""
    history = table.history()
    oldest = min((h.get("version") or 0 for h in history), default=0)
    state: list[dict[str, Any]] = []
    if oldest > 0:
        state = [r for r in _catalog_records(table) if (r.get("delta_version") or 0) < oldest]
    for h in reversed(history):
        raw = h.get("neurolake_derivation")
        if not raw:
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("key", {}).get("action") != ACTION:
            continue
        rec["delta_version"] = h.get("version")
        state = [rec] if rec.get("mode") == "overwrite" else [*state, rec]
    return state


def _ranges(ids: np.ndarray) -> list[list[int]]:
    """Sorted ids as half-open runs ``[[start, stop), …]``."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ids) == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(ids)]])
    return [[int(ids[a]), int(ids[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def derived_ids(table: Any, records: list[dict[str, Any]]) -> np.ndarray:
    """Ids of the currently valid rows that ``records`` wrote, or that replaced them through
    ``update`` (followed along ``superceded_id``); sorted int64."""
    import pyarrow.compute as pc

    tab = table.dataset().to_table(columns=["id", "deleted", "superceded_id"])
    ids = tab.column("id").to_numpy()
    valid = np.asarray(pc.is_null(tab.column("deleted")).to_numpy(zero_copy_only=False))
    sup_col = tab.column("superceded_id")
    has_sup = np.asarray(pc.is_valid(sup_col).to_numpy(zero_copy_only=False))
    sup = np.asarray(pc.fill_null(sup_col, 0).to_numpy(zero_copy_only=False)).astype(np.int64)
    mine = np.zeros(len(ids), bool)
    for rec in records:
        for a, b in rec.get("ids", []):
            mine |= (ids >= a) & (ids < b)
    while True:  # rows that superseded derived rows are derived too
        nxt = np.isin(ids, sup[mine & has_sup]) & ~mine
        if not nxt.any():
            break
        mine |= nxt
    return np.sort(ids[mine & valid])


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for part in ("params", "inputs"):
        a, b = old.get(part, {}), new.get(part, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) == b.get(k):
                continue
            if k == "layer":
                la, lb = a.get(k) or {}, b.get(k) or {}
                out.append(f"layer {new['inputs']['mask_layer']} was re-ingested or overwritten since "
                           f"(created {la.get('created')} at {la.get('path')}, now {lb.get('created')} at "
                           f"{lb.get('path')})")
            else:
                out.append(f"{k}: {a.get(k)!r} → {b.get(k)!r}")
    return out


def _describe(key: dict[str, Any]) -> str:
    i, p = key["inputs"], key["params"]
    return (f"{i['mask_layer']} == {p['value']} (mip {i['mip']}, connectivity {p['connectivity']}, "
            f"min_size {p['min_size']})")


def _catalog_records(table: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from neurolake.annotations.models import AnnotationTable

    with table.lake.catalog.session() as s:
        prov = s.scalar(select(AnnotationTable.provenance).where(
            AnnotationTable.path == table.rel_path))
    return list((prov or {}).get("derivations") or [])


def _save_catalog_record(lake: Any, table: Any, records: list[dict[str, Any]]) -> None:
    """Copy the derivation state into the catalog row's ``provenance`` (display; the Delta history rules)."""
    from sqlalchemy import select

    from neurolake.annotations.models import AnnotationTable

    with lake.catalog.session() as s:
        row = s.scalar(select(AnnotationTable).where(
            AnnotationTable.path == table.rel_path))
        if row is not None and (row.provenance or {}).get("derivations") != records:
            row.provenance = {**(row.provenance or {}), "derivations": records}


# -- detection ------------------------------------------------------------------------------------
def detect_synapses(lake: Any, datastack: str, mask_layer: str, value: int, table: str, *, mip: int = 0,
                    connectivity: int = 26, min_size: int = 1, segmentation_layer: str | None = None,
                    description: str = "", max_bytes: int = 2 << 30, append: bool = False,
                    overwrite: bool = False, replace: bool = False,
                    say: Callable[[str], None] | None = None):
    """Turn the voxels equal to ``value`` in ``mask_layer`` into the synapse table ``table``; idempotent.

    Creates the table (schema ``synapse``, voxel resolution of ``mask_layer`` at ``mip``, properties
    ``size_nm3`` and the bounding box) unless it exists, and adds one row per component in one
    commit that also records the derivation (see the module docstring):

    - the table already holds this derivation (same layer identity, ``mip``, ``value``,
      ``connectivity``, ``min_size``): nothing is read or written; ``say`` reports "already derived";
    - the table holds other rows (another derivation, or rows not written by detect): AlreadyExists
      naming what differs, nothing changed, unless ``append=True`` (add the new rows next to them) or
      ``overwrite=True`` (soft-delete the rows of the earlier derivations — every valid row if the
      table has none recorded — and add the new ones, one commit; history keeps the old rows).
      ``overwrite`` with an identical derivation recomputes it. ``replace`` is the old name of
      ``overwrite``.

    ``say(message)`` gets one line on what was done (default: the module logger). Returns the
    :class:`Table`. Raises NotFound (layer), TooLarge (layer over ``max_bytes``), InvalidArgument
    (value not of the layer dtype, connectivity, append with overwrite), AlreadyExists.
    """
    from neurolake.annotations.table import create_table, get_table
    from neurolake.db.base import utcnow
    from neurolake.errors import Conflict, NotFound
    from neurolake.provenance import code_version, current_user

    say = say or log.info
    overwrite = overwrite or replace
    if append and overwrite:
        raise InvalidArgument("give append or overwrite, not both", field="append")
    _check_connectivity(connectivity)
    la = lake.layer(datastack, mask_layer)
    shape = la.shape(mip)
    try:
        v = la.dtype.type(value)
        if int(v) != value:
            raise ValueError
    except (ValueError, OverflowError, TypeError):
        raise InvalidArgument(f"value {value!r} does not fit the layer dtype {la.dtype}", field="value",
                              value=repr(value)) from None
    key = derivation_key(lake, datastack, mask_layer, value, mip=mip, connectivity=connectivity,
                         min_size=min_size, layer=la)
    digest = _digest(key)
    where = f"{datastack}/{table}"
    try:
        t = get_table(lake, datastack, table)
    except NotFound:
        t = None
    records: list[dict[str, Any]] = []
    if t is not None:
        records = derivations(t)
        same = [r for r in records if r.get("digest") == digest]
        if same and not overwrite:
            n = len(derived_ids(t, same))
            rows = sum(int(r.get("rows", 0)) for r in same)
            say(f"{where}: already derived from {_describe(key)} ({rows} rows, {n} still valid), nothing to do"
                + ("; append does not add the same derivation twice (use overwrite to recompute it)"
                   if append else ""))
            _save_catalog_record(lake, t, records)
            return t
        if not (append or overwrite):
            if records:
                last = records[-1]
                diff = _differences(last["key"], key)
                raise AlreadyExists(
                    f"table {where} already holds {last.get('rows')} rows derived from {_describe(last['key'])}; "
                    f"this run differs ({'; '.join(diff)}). Nothing was changed: pass append=True (--append) to add "
                    "its rows as well, or overwrite=True (--overwrite) to replace the derived rows",
                    datastack=datastack, table=table, differs=diff)
            n_valid = t.count()
            if n_valid:
                raise AlreadyExists(
                    f"table {where} holds {n_valid} rows not recorded as derived by detect (added by hand or by an "
                    "older neurolake). Nothing was changed: pass append=True (--append) to add the detected rows, "
                    "or overwrite=True (--overwrite) to soft-delete those rows and add the detected ones",
                    datastack=datastack, table=table, rows=n_valid)
    nbytes = int(np.prod(shape)) * la.dtype.itemsize
    if nbytes > max_bytes:
        raise TooLarge(f"layer {mask_layer} at mip {mip} is {nbytes} bytes; detection reads it whole and the limit "
                       f"is {max_bytes} bytes (use a coarser mip)", limit=max_bytes, size=nbytes)
    vol = la.cutout(x=(0, shape[2]), y=(0, shape[1]), z=(0, shape[0]), mip=mip)
    rows = components(vol == v, connectivity=connectivity, min_size=min_size)
    del vol
    vs = np.array(la.spec.mips[mip].voxel_size_nm, dtype=np.float64)
    rows.insert(4, "size_nm3", rows["size"] * float(np.prod(vs)))
    code = code_version()
    rows["metadata"] = json.dumps({"source": f"{mask_layer}=={value}", "code": code["neurolake"],
                                   "derivation": digest})
    mode = "overwrite" if overwrite and t is not None else ("append" if records or (t is not None and t.count())
                                                            else "create")
    if t is None:
        t = create_table(lake, datastack, table, "synapse", voxel_size_nm=vs.tolist(),
                         properties=DETECT_PROPERTIES, segmentation_layer=segmentation_layer,
                         description=description or f"connected components of value {value} in layer {mask_layer}")
    user = current_user()
    tab = t.prepare(rows, author=user)
    with t._lock:
        now_records = derivations(t)
        if mode != "overwrite" and [r["digest"] for r in now_records] != [r["digest"] for r in records]:
            raise Conflict(f"table {where} got another derivation while this one was detected; nothing was "
                           "changed, run again", datastack=datastack, table=table)
        old = np.zeros(0, np.int64)
        if mode == "overwrite":
            records = now_records
            if records:
                old = derived_ids(t, records)
            else:  # nothing recorded: the table's valid rows are what is replaced
                old = t.query(columns=["id"]).arrow().column("id").to_numpy().astype(np.int64)
        tab = t._assign_ids(tab)
        ids = tab.column("id").to_numpy()
        now = utcnow()
        rec = {"key": key, "digest": digest, "mode": mode, "rows": len(tab), "ids": _ranges(ids),
               "replaced": len(old), "user": user, "time": now.isoformat(), "code": code}
        new = t._finish(tab, now)
        info = {"rows": len(tab), "derivation": json.dumps(rec, sort_keys=True)}
        if len(old):
            _replace_rows(t, new, old, now, info)
        else:
            t._commit(new, ACTION, **info)
    records = derivations(t)
    _save_catalog_record(lake, t, records)
    what = {"create": "detected", "append": "appended", "overwrite": f"replaced {len(old)} derived rows with"}[mode]
    say(f"{where}: {what} {len(tab)} synapses from {_describe(key)} (version {t.version})")
    return t


def _replace_rows(t: Any, new: Any, old_ids: np.ndarray, now: Any, info: dict[str, Any]) -> None:
    """One Delta commit: soft-delete ``old_ids`` (valid rows) and insert the finished rows ``new``."""
    import pyarrow as pa
    from deltalake import CommitProperties, WriterProperties
    from deltalake.exceptions import CommitFailedError

    from neurolake.annotations.table import ROW_GROUP_ROWS
    from neurolake.errors import Conflict

    relaxed = pa.schema([f.with_nullable(True) for f in t.arrow_schema])
    n = len(old_ids)
    tomb = {"id": pa.array(old_ids, pa.int64()),
            "deleted": pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")),
                                pa.timestamp("us", tz="UTC"))}
    tomb_full = pa.Table.from_arrays([tomb[f.name] if f.name in tomb else pa.nulls(n, f.type) for f in relaxed],
                                     schema=relaxed)
    source = pa.concat_tables([new.cast(relaxed), tomb_full])
    props = CommitProperties(custom_metadata={"neurolake_action": ACTION,
                                              **{f"neurolake_{k}": str(v) for k, v in info.items()}})
    m = t.delta().merge(source, predicate="t.id = s.id", source_alias="s", target_alias="t",
                        commit_properties=props,
                        writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="LZ4_RAW"))
    m = m.when_matched_update(updates={"deleted": "s.deleted"}, predicate="t.deleted IS NULL")
    m = m.when_not_matched_insert_all()
    try:
        m.execute()
    except CommitFailedError as exc:
        raise Conflict(f"table {t.name!r} changed during the detect overwrite; retry", table=t.name) from exc
