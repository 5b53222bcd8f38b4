"""Settings read from the environment (``NEUROLAKE_*``) with defaults for embedded use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:  # a misconfiguration, not a user request: fail loudly at start
        raise ValueError(f"{name} must be an integer number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Runtime settings.

    - ``database_url``: SQLAlchemy URL of the catalog (``NEUROLAKE_DATABASE_URL``); ``None`` means
      SQLite inside the lake folder (``<lake>/catalog.sqlite``).
    - ``max_cutout_bytes``: largest uncompressed cutout served or accepted over HTTP
      (``NEUROLAKE_MAX_CUTOUT_BYTES``, default 512 MiB, close to BossDB's 500 MB limit).
    - ``cache_bytes``: tensorstore chunk cache shared by the open layers (``NEUROLAKE_CACHE_BYTES``).
    - ``ingest_buffer_bytes``: how much source data ingest holds at once (``NEUROLAKE_INGEST_BUFFER_BYTES``,
      default 256 MiB; one shard row band is the floor).
    """

    database_url: str | None = field(default_factory=lambda: os.environ.get("NEUROLAKE_DATABASE_URL") or None)
    max_cutout_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_MAX_CUTOUT_BYTES", 512 * 2**20))
    cache_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_CACHE_BYTES", 1 * 2**30))
    ingest_buffer_bytes: int = field(default_factory=lambda: _int_env("NEUROLAKE_INGEST_BUFFER_BYTES", 256 * 2**20))
    user: str = field(default_factory=lambda: os.environ.get("NEUROLAKE_USER") or os.environ.get("USER") or "local")


def settings() -> Settings:
    """Read the settings now (the environment may have changed since import)."""
    return Settings()
