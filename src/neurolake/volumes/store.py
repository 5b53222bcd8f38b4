"""Where a layer's bytes live and how tensorstore opens them.

A layer is an OME-Zarr group folder ``<lake>/datastacks/<ds>/volumes/<layer>/`` with ``zarr.json``
and one Zarr v3 array per mip (``0/``, ``1/``, …); after an ``--overwrite`` the folder is
``volumes/<layer>@<token>/`` (the catalog row's ``path`` says which). :func:`array_spec` gives the tensorstore spec
(JSON) of one mip, which is also what Dask workers receive to open it themselves.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import tensorstore as ts

from neurolake.volumes.spec import LayerSpec


def make_context(cache_bytes: int) -> ts.Context:
    return ts.Context({
        "cache_pool": {"total_bytes_limit": int(cache_bytes)},
        "data_copy_concurrency": {"limit": os.cpu_count() or 2},
        "file_io_concurrency": {"limit": max(8, 4 * (os.cpu_count() or 2))},
    })


def array_spec(root: Path | str, mip: int) -> dict[str, Any]:
    """Tensorstore spec (JSON) to open mip ``mip`` of the layer stored at ``root``."""
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(Path(root) / str(mip)) + "/"},
        "recheck_cached_metadata": False,
        # Cached chunks older than the opening are revalidated. A Layer reopens its arrays whenever the layer's
        # generation changed (any process's write), so a landed write is seen by the next read everywhere
        # for the cost of one stat per read (Layer._revalidate) instead of one per shard.
        "recheck_cached_data": "open",
    }


def write_group(root: Path, spec: LayerSpec, name: str) -> None:
    """Write the OME-Zarr group ``zarr.json`` atomically (temp file + rename)."""
    root.mkdir(parents=True, exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "group", "attributes": spec.ome_attributes(name)}
    tmp = root / "zarr.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, root / "zarr.json")


def create_arrays(root: Path, spec: LayerSpec, name: str, context: ts.Context) -> list[ts.TensorStore]:
    """Create (replacing any existing) the group and one empty array per mip."""
    write_group(root, spec, name)
    arrays = []
    for m in spec.mips:
        s = array_spec(root, m.mip) | {"metadata": spec.zarr_metadata(m.mip), "create": True, "delete_existing": True}
        arrays.append(ts.open(s, context=context).result())
    return arrays


def open_array(root: Path | str, mip: int, context: ts.Context) -> ts.TensorStore:
    return ts.open(array_spec(root, mip), context=context, open=True).result()


@functools.lru_cache(maxsize=64)
def open_array_cached(spec_json: str) -> ts.TensorStore:
    """Open from a JSON spec string, cached per process (used inside Dask workers)."""
    return ts.open(json.loads(spec_json), open=True).result()
