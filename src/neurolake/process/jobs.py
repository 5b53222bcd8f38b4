"""Derived layers as idempotent jobs with provenance: what every processing step shares (issue 16).

A step (intensity correction, alignment, voxel classification, agglomeration) reads one or more layers of a
datastack, computes a (z, y, x) array and stores it as a new layer through :func:`derive_layer`, which

- keys the derivation by the action, each input's identity (:func:`neurolake.provenance.layer_identity`:
  changes when an input is re-ingested or replaced) and the parameters: a ready output with the same key is
  returned without computing ("already derived"); an output made differently is refused with
  AlreadyExists naming what differs — before any work — unless ``overwrite`` (then replaced atomically);
- writes through :func:`neurolake.volumes.ingest.ingest` (sharded Zarr, pyramid, resumable under the same key);
- records provenance under ``provenance[<action>]``: inputs, parameters, code version, user, time, key,
  plus what the step adds (statistics, transforms, model).

Arrays are numpy (z, y, x), as everywhere in neurolake.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import AlreadyExists, InvalidArgument, NotFound, NotReady


def derivation_key(lake, datastack: str, action: str, inputs: Sequence[str], params: dict[str, Any]) -> dict:
    """The key of a derivation: ``{"action", "inputs": [{datastack, layer, identity}], "params"}`` (JSON-able)."""
    from neurolake.provenance import layer_identity

    ins = []
    for name in inputs:
        layer = lake.layer(datastack, name)
        ins.append({"datastack": datastack, "layer": name, "identity": layer_identity(lake, layer)})
    return {"action": action, "inputs": ins, "params": json.loads(json.dumps(params, default=_jsonable))}


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _differences(old: dict | None, new: dict) -> str:
    if not old:
        return "it was not made by a recorded run of this step"
    out = []
    if old.get("action") != new.get("action"):
        out.append(f"made by {old.get('action')}, not {new.get('action')}")
    oi = {i["layer"]: i for i in old.get("inputs") or []}
    for i in new["inputs"]:
        o = oi.get(i["layer"])
        if o is None:
            out.append(f"input {i['layer']} was not an input")
        elif o.get("identity") != i.get("identity"):
            out.append(f"input {i['layer']} changed since (re-ingested or replaced)")
    op, np_ = old.get("params") or {}, new.get("params") or {}
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            out.append(f"{k}: {op.get(k)!r} then, {np_.get(k)!r} now")
    return "; ".join(out) or "the recorded key differs"


def existing_derivation(lake, datastack: str, output: str, key: dict, *, overwrite: bool = False,
                        say: Callable[[str], None] | None = None):
    """The ready ``output`` layer when it was derived with ``key`` (and not ``overwrite``), else None. Raises
    AlreadyExists (a different derivation, not overwrite) or NotReady (an interrupted ingest of something else)."""
    action = key["action"]
    try:
        existing = lake.layer(datastack, output)
    except NotFound:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    if existing.status == "ready":
        prev = (existing.provenance.get(action) or {}).get("key")
        if prev == key and not overwrite:
            if say:
                say(f"{datastack}/{output}: already derived ({action} with these inputs and parameters), "
                    "nothing to do")
            return existing
        if not overwrite:
            raise AlreadyExists(f"layer {datastack}/{output} already exists and differs from this {action} "
                                f"({_differences(prev, key)}). Nothing was changed: pass overwrite=True "
                                "(--overwrite) to replace it", datastack=datastack, layer=output)
    elif not overwrite and existing.progress.get("fingerprint") != f"{action}:{digest}":
        raise NotReady(f"layer {datastack}/{output} holds an interrupted ingest of something else "
                       f"({existing.progress.get('source')}); use overwrite to replace it",
                       datastack=datastack, layer=output)
    return None


def derive_layer(lake, datastack: str, output: str, *, action: str, inputs: Sequence[str], params: dict[str, Any],
                 compute: Callable[[], np.ndarray], layer_type: str = "image", voxel_size: Sequence[float] | None = None,
                 description: str = "", overwrite: bool = False, scheduler: str | None = "threads",
                 progress=None, say: Callable[[str], None] | None = None,
                 extra: Callable[[], dict[str, Any]] | dict[str, Any] | None = None):
    """Store ``compute()`` — a (z, y, x) numpy array (uint8/uint16/float32 image or uint32/uint64 labels) — as
    layer ``output`` of ``datastack`` derived from ``inputs`` (layer names) with ``params``; idempotent as the
    module docstring says. ``voxel_size`` defaults to the first input's. ``extra``: a dict (or a function called
    after ``compute``) added to the provenance record (statistics, transforms …).

    Returns the Layer. Raises NotFound (an input), AlreadyExists, NotReady, InvalidArgument (not a 3-D array).
    """
    from neurolake.provenance import record
    from neurolake.volumes.sources import NpyFile

    key = derivation_key(lake, datastack, action, inputs, params)
    done = existing_derivation(lake, datastack, output, key, overwrite=overwrite, say=say)
    if done is not None:
        return done
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    arr = np.asarray(compute())
    if arr.ndim != 3:
        raise InvalidArgument(f"{action} produced an array of shape {list(arr.shape)}; a layer needs (z, y, x)",
                              field="output", value=list(arr.shape))
    vs = list(voxel_size) if voxel_size is not None else list(lake.layer(datastack, inputs[0]).voxel_size)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"{output}.npy"
        np.save(p, np.ascontiguousarray(arr))
        npy = NpyFile(p)
        npy.fingerprint, npy.description = f"{action}:{digest}", description or f"{action} of {', '.join(inputs)}"
        layer = lake.ingest(npy, datastack, output, voxel_size=vs, layer_type=layer_type, overwrite=overwrite,
                            scheduler=scheduler, progress=progress, say=say,
                            description=description or f"{action} of {', '.join(inputs)}")
    more = extra() if callable(extra) else (extra or {})
    prov = record(action, inputs=[{"datastack": datastack, "layer": n} for n in inputs], params=params, key=key,
                  digest=digest, **more)
    return lake.update_layer(datastack, output, provenance={**layer.provenance, action: prov})


def read_layer(lake, datastack: str, name: str, mip: int = 0) -> np.ndarray:
    """The whole layer ``name`` at ``mip`` as a numpy (z, y, x) array (for layers that fit in memory)."""
    layer = lake.layer(datastack, name)
    sx, sy, sz = layer.size(mip)
    return layer.cutout(x=(0, sx), y=(0, sy), z=(0, sz), mip=mip)
