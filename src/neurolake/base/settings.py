"""Every ``NEUROLAKE_*`` setting, read from the environment in one place, with defaults for embedded use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError as exc:  # a misconfiguration, not a user request: fail loudly at start
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _str_env(name: str) -> str | None:
    return os.environ.get(name) or None


@dataclass(frozen=True)
class Settings:
    """Runtime settings, each from one ``NEUROLAKE_*`` environment variable.

    - ``lake``: the default lake folder of every command (``NEUROLAKE_LAKE``, default the current folder).
    - ``database_url``: SQLAlchemy URL of the catalog (``NEUROLAKE_DATABASE_URL``); ``None`` means
      SQLite inside the lake folder (``<lake>/catalog.sqlite``).
    - ``max_cutout_bytes``: largest uncompressed cutout served or accepted over HTTP
      (``NEUROLAKE_MAX_CUTOUT_BYTES``, default 512 MiB, close to BossDB's 500 MB limit).
    - ``max_body_bytes``: largest request body of every other route (JSON, Arrow IPC annotation rows,
      CAVE and proofreading bodies), counted as it arrives (``NEUROLAKE_MAX_BODY_BYTES``, default 64 MiB);
      cutout uploads may be as large as their box (``max_cutout_bytes``) instead.
    - ``cache_bytes``: tensorstore chunk cache shared by the open layers (``NEUROLAKE_CACHE_BYTES``, 1 GiB).
    - ``ingest_buffer_bytes``: how much source data ingest holds at once (``NEUROLAKE_INGEST_BUFFER_BYTES``,
      default 256 MiB; one shard row band is the floor).
    - ``user``: the local user named in edit logs and provenance (``NEUROLAKE_USER``, else ``$USER``).
    - ``public_url``: the server's address as clients see it, used in signed URLs
      (``NEUROLAKE_PUBLIC_URL``, default ``http://127.0.0.1:8000``).
    - ``feature_roots``: folders and ``s3://`` prefixes feature tables may be registered from
      (``NEUROLAKE_FEATURE_ROOTS``, separated by ``os.pathsep``; empty = anywhere).
    - ``signing_key``: HMAC key of signed URLs (``NEUROLAKE_SIGNING_KEY``, hex or text; default a random
      key in ``<lake>/signing.key``, mode 0600; the catalog keeps only its id: ``neurolake.storage.signing``).
    - ``tile_cache_bytes``, ``tile_max_age_s``, ``tile_prefetch_depth``: the CATMAID tile cache
      (``NEUROLAKE_TILE_CACHE_BYTES`` 512 MiB, ``NEUROLAKE_TILE_MAX_AGE_S`` 300 s,
      ``NEUROLAKE_TILE_PREFETCH_DEPTH`` 8 sections).
    - ``quota_bytes``, ``quota_requests``, ``quota_period_s``: default per-user quotas under ``--auth``
      (``NEUROLAKE_QUOTA_BYTES``, ``NEUROLAKE_QUOTA_REQUESTS``: 0 = unlimited; ``NEUROLAKE_QUOTA_PERIOD``
      seconds, default one day).
    - ``serve_auth``: ``--auth`` of the worker processes of ``neurolake serve --workers N``
      (``NEUROLAKE_SERVE_AUTH=1``, set by that command with ``NEUROLAKE_LAKE``).
    - ``write_lock_timeout_s``: how long a writer of a lake on object storage waits for another writer of the
      same layer or table before it gets a retryable Conflict (HTTP 409) (``NEUROLAKE_WRITE_LOCK_TIMEOUT_S``,
      default 60 s).
    - ``demo_data``: where the demo finds its datasets (``NEUROLAKE_DEMO_DATA``, default the shipped
      ``data/`` folder).
    """

    lake: str = field(default_factory=lambda: os.environ.get("NEUROLAKE_LAKE") or ".")  # a folder or s3://…
    database_url: str | None = field(default_factory=lambda: _str_env("NEUROLAKE_DATABASE_URL"))
    max_cutout_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_MAX_CUTOUT_BYTES", 512 * 2**20))
    max_body_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_MAX_BODY_BYTES", 64 * 2**20))
    cache_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_CACHE_BYTES", 1 * 2**30))
    ingest_buffer_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_INGEST_BUFFER_BYTES", 256 * 2**20))
    user: str = field(default_factory=lambda: os.environ.get("NEUROLAKE_USER") or os.environ.get("USER") or "local")
    public_url: str = field(default_factory=lambda: (_str_env("NEUROLAKE_PUBLIC_URL")
                                                     or "http://127.0.0.1:8000").rstrip("/"))
    feature_roots: tuple[str, ...] = field(default_factory=lambda: tuple(
        r for r in os.environ.get("NEUROLAKE_FEATURE_ROOTS", "").split(os.pathsep) if r.strip()))
    signing_key: str | None = field(default_factory=lambda: _str_env("NEUROLAKE_SIGNING_KEY"))
    tile_cache_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_TILE_CACHE_BYTES", 512 * 2**20))
    tile_max_age_s: float = field(default_factory=lambda: _float_env("NEUROLAKE_TILE_MAX_AGE_S", 300.0))
    tile_prefetch_depth: int = field(default_factory=lambda: _int_env("NEUROLAKE_TILE_PREFETCH_DEPTH", 8))
    quota_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_QUOTA_BYTES", 0))
    quota_requests: int = field(default_factory=lambda: _int_env("NEUROLAKE_QUOTA_REQUESTS", 0))
    quota_period_s: int = field(default_factory=lambda: max(1, _int_env("NEUROLAKE_QUOTA_PERIOD", 86400)))
    demo_data: str | None = field(default_factory=lambda: _str_env("NEUROLAKE_DEMO_DATA"))
    serve_auth: bool = field(default_factory=lambda: os.environ.get("NEUROLAKE_SERVE_AUTH") == "1")
    write_lock_timeout_s: float = field(default_factory=lambda: _float_env("NEUROLAKE_WRITE_LOCK_TIMEOUT_S", 60.0))


def settings() -> Settings:
    """Read the settings now (the environment may have changed since import)."""
    return Settings()
