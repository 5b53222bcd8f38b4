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
import uuid
from pathlib import Path
from typing import Any

import tensorstore as ts

from neurolake.storage.config import StorageConfig, is_s3, storage_config
from neurolake.storage.files import write_text_atomic
from neurolake.volumes.spec import LayerSpec


def make_context(cache_bytes: int, storage: StorageConfig | None = None) -> ts.Context:
    """The tensorstore context of a lake: chunk cache of ``cache_bytes`` bytes, and with ``storage`` (a lake on
    object storage) its S3 request concurrency and credentials."""
    spec = {
        "cache_pool": {"total_bytes_limit": int(cache_bytes)},
        "data_copy_concurrency": {"limit": os.cpu_count() or 2},
        "file_io_concurrency": {"limit": max(8, 4 * (os.cpu_count() or 2))},
    }
    if storage is not None:
        spec |= storage.tensorstore_context()
    return ts.Context(spec)


def array_spec(root: Path | Any, mip: int, storage: StorageConfig | None = None) -> dict[str, Any]:
    """Tensorstore spec (JSON) to open mip ``mip`` of the layer stored at ``root`` (a folder or an ``s3://``
    prefix; ``storage`` renders the latter, default: this process's environment)."""
    loc = f"{str(root).rstrip('/')}/{mip}"
    if is_s3(root):
        kvstore = (storage or storage_config()).kvstore(loc)
    else:
        kvstore = {"driver": "file", "path": str(Path(loc)) + "/"}
    return {
        "driver": "zarr3",
        "kvstore": kvstore,
        "recheck_cached_metadata": False,
        # Cached chunks older than the opening are revalidated. A Layer reopens its arrays whenever the layer's
        # generation changed (any process's write), so a landed write is seen by the next read everywhere
        # for the cost of one stat per read (Layer._revalidate) instead of one per shard.
        "recheck_cached_data": "open",
    }


def write_group(root: Path | Any, spec: LayerSpec, name: str) -> None:
    """Write the OME-Zarr group ``zarr.json`` atomically (temp file + rename; one PUT on object storage)."""
    if not is_s3(root):
        root.mkdir(parents=True, exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "group", "attributes": spec.ome_attributes(name)}
    write_text_atomic(root / "zarr.json", json.dumps(doc, indent=2))


def create_arrays(root: Path | Any, spec: LayerSpec, name: str, context: ts.Context,
                  storage: StorageConfig | None = None) -> list[ts.TensorStore]:
    """Create (replacing any existing) the group and one empty array per mip."""
    write_group(root, spec, name)
    arrays = []
    for m in spec.mips:
        s = array_spec(root, m.mip, storage) | {"metadata": spec.zarr_metadata(m.mip), "create": True,
                                                "delete_existing": True}
        arrays.append(ts.open(s, context=context).result())
    return arrays


def open_array(root: Path | Any, mip: int, context: ts.Context) -> ts.TensorStore:
    return ts.open(array_spec(root, mip), context=context, open=True).result()


def task_spec(root: Path | Any, mip: int) -> str:
    """The JSON string a Dask task opens mip ``mip`` of the layer at ``root`` from (:func:`open_array_cached`):
    the array's spec and a nonce of this call. Make it once per job and pass it to every task of the job."""
    return json.dumps({"spec": array_spec(root, mip), "job": uuid.uuid4().hex})


@functools.lru_cache(maxsize=64)
def open_array_cached(task_json: str) -> ts.TensorStore:
    """Open the array of a :func:`task_spec` string, cached per process (inside Dask workers, or in this
    process for the threaded scheduler): the tasks of one job share one opening, but the next job opens
    again. An opening caches the array's metadata, and a layer deleted and created again at the same path
    (new shape, chunks or codecs) must never be read through a previous job's opening."""
    return ts.open(json.loads(task_json)["spec"], open=True).result()
