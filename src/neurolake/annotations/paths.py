"""Data-file locations of tables in a local lake folder or an ``s3://`` lake prefix, for pyarrow and delta-rs.

delta-rs lists a version's files as URIs (``file:///…`` locally, ``s3://bucket/key`` on object storage);
pyarrow reads them given a path and a :mod:`pyarrow.fs` filesystem, and both need the store's settings
(:class:`neurolake.storage.config.StorageConfig`, read from the AWS environment). These helpers render one
location for each, so the same code reads and writes a table wherever its lake lives.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from neurolake.storage.config import StorageConfig, is_s3, storage_config


@functools.lru_cache(maxsize=4)
def _s3_filesystem(cfg: StorageConfig) -> Any:
    return cfg.pyarrow_fs("s3://bucket/x")[0]


def arrow_source(uri: Any) -> tuple[str, Any]:
    """``(path, pyarrow filesystem or None)`` of a file given as a local path, ``file://`` URI, Path,
    ``s3://bucket/key`` URI or UPath; pass both to pyarrow (``pq.ParquetFile(path, filesystem=fs)``)."""
    u = str(uri)
    if is_s3(uri):
        bucket_key = u.split("://", 1)[1]
        return bucket_key, _s3_filesystem(storage_config())
    return u.removeprefix("file://"), None


def open_input(uri: Any) -> Any:
    """A readable random-access pyarrow file of ``uri`` (for ``pq.ParquetFile`` and friends)."""
    path, fs = arrow_source(uri)
    if fs is None:
        return path
    return fs.open_input_file(path)


def delta_options(path: Any) -> dict[str, str]:
    """delta-rs ``storage_options`` of a table at ``path`` (empty for a local folder)."""
    return storage_config().delta_options(path)


def same_file_key(uri: Any) -> str:
    """A canonical string of a data file (compare files named by delta-rs URIs and by joined paths)."""
    u = str(uri)
    if is_s3(uri):
        return u
    return str(Path(u.removeprefix("file://")).resolve())


def file_sizes(files: list[str]) -> dict[str, int | None]:
    """``{file: size in bytes, or None when it does not exist}``. On S3 one listing per folder."""
    out: dict[str, int | None] = {}
    remote = [f for f in files if is_s3(f)]
    for f in files:
        if is_s3(f):
            continue
        p = f.removeprefix("file://")
        try:
            out[f] = os.stat(p).st_size
        except OSError:
            out[f] = None
    if remote:
        import s3fs

        fs = s3fs.S3FileSystem(**storage_config().fsspec_options())
        folders: dict[str, dict[str, int]] = {}
        for f in remote:
            key = f.split("://", 1)[1]
            parent = key.rsplit("/", 1)[0]
            if parent not in folders:
                try:
                    folders[parent] = {e["name"]: int(e.get("size") or 0)
                                       for e in fs.ls(parent, detail=True) if e.get("type") != "directory"}
                except FileNotFoundError:
                    folders[parent] = {}
            out[f] = folders[parent].get(key)
    return out


def missing_files(files: list[str]) -> list[str]:
    """The files of ``files`` that do not exist (in order)."""
    sizes = file_sizes(files)
    return [f for f in files if sizes.get(f) is None]
