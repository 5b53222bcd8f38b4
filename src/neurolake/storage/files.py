"""File operations that work the same on a local lake folder and an ``s3://`` lake prefix.

A lake's root is a :class:`pathlib.Path` or, for ``s3://``, a ``upath.UPath`` over s3fs
(:meth:`neurolake.storage.config.StorageConfig.path`). Both join with ``/`` and read and write small files;
what differs — atomic replacement, recursive deletion, paths relative to the root — is here. On S3 a PUT
replaces an object atomically, so no temporary file is needed; there is no rename, so callers never rely on
one for remote lakes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from neurolake.storage.config import is_s3, storage_config


def lake_root(location: Any) -> Any:
    """The root path object of a lake at ``location`` (a folder, or ``s3://bucket/prefix``)."""
    if is_s3(location):
        return storage_config().path(location) if isinstance(location, str) else location
    return Path(str(location)).expanduser().resolve()


def write_text_atomic(path: Any, text: str) -> None:
    """Replace the file ``path`` with ``text`` as one step (a reader sees the old or the new content)."""
    if is_s3(path):
        path.write_text(text)
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_tree(path: Any) -> None:
    """Delete the folder (or prefix) ``path`` and everything under it; a missing one is not an error."""
    if is_s3(path):
        try:
            path.fs.rm(path.path, recursive=True)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=True)


def relative(path: Any, root: Any) -> str:
    """``path`` relative to ``root`` as a ``/``-separated string. Raises ValueError when it is outside."""
    p, r = str(path).rstrip("/"), str(root).rstrip("/")
    if not is_s3(path):
        p, r = str(Path(p).resolve()), str(Path(r).resolve())
    if not p.startswith(r + "/"):
        raise ValueError(f"{p!r} is not inside {r!r}")
    return p[len(r) + 1:]
