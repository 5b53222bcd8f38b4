"""Provenance records: who/what/when/which versions produced a derived thing (DESIGN.md, Provenance).

This module gives the records derived things carry (:func:`record`, :func:`code_version`,
:func:`current_user`, :func:`layer_identity`). Submodules: :mod:`neurolake.provenance.models` (catalog rows
of query runs and the inputs they pinned) and :mod:`neurolake.provenance.runs` (the run store: save, show,
list, delete runs; which production runs protect an input).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

from neurolake.db.base import utcnow


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"neurolake": version, "git_commit": sha or None, "git_dirty": bool or None}``."""
    from neurolake import __version__

    commit = dirty = None
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=5, check=True).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"neurolake": __version__, "git_commit": commit, "git_dirty": dirty, "python": platform.python_version()}


def current_user() -> str:
    """The local user named in edit logs and provenance (:attr:`neurolake.base.settings.Settings.user`)."""
    from neurolake.base.settings import settings

    return settings().user


def record(action: str, *, inputs: Any = None, params: dict[str, Any] | None = None,
           user: str | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-able provenance record for ``action`` (e.g. ``"ingest"``, ``"pyramid"``)."""
    return {
        "action": action,
        "inputs": inputs,
        "params": params or {},
        "user": user or current_user(),
        "time": utcnow().isoformat(),
        "code": code_version(),
        **extra,
    }


def layer_identity(lake, layer) -> dict[str, Any]:
    """What identifies the stored data of ``layer`` for derivation records (watershed, synapse detection):
    its folder relative to the lake and its creation time (both change when it is re-ingested or
    overwritten), and the ingest source fingerprint. In-place writes (``Layer.write``) do not change it (they change
    :meth:`neurolake.volumes.layer.Layer.generation`, which is not stable across copies of a lake)."""
    from neurolake.db.base import as_utc

    if getattr(lake, "remote", False):  # an s3:// lake: UPaths, compared as URLs (no resolve on object storage)
        p, r = str(layer.root).rstrip("/"), str(lake.root).rstrip("/")
        path = p[len(r) + 1:] if p.startswith(r + "/") else p
    else:
        try:
            path = str(layer.root.resolve().relative_to(lake.root.resolve()))
        except ValueError:
            path = str(layer.root)
    created = as_utc(layer.created).isoformat() if hasattr(layer.created, "isoformat") else layer.created
    prov = layer.provenance if isinstance(layer.provenance, dict) else {}
    return {"path": path, "created": created, "fingerprint": (prov.get("inputs") or {}).get("fingerprint")}
