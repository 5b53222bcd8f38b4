"""Cross-process, cross-machine coordination in the catalog database: locks and change tokens.

A lake on object storage has no file locks. Its writers coordinate through the catalog instead: a
session-level advisory lock (``pg_advisory_lock``) is held on a connection of its own until released, and
PostgreSQL releases it when that connection ends — also when the process holding it is killed — which is
the same guarantee ``flock`` gives on a local folder.
Source: https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS

:class:`ChangeTokens` are the object-storage counterpart of the small ``generation`` files a local lake
replaces on every change: one indexed row read (a fraction of a millisecond) instead of a GET per request.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import Engine, text

from neurolake.errors import Conflict


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name`` (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class HeldLock:
    """One held advisory lock; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, conn: Any, key: int, name: str) -> None:
        self._conn, self.key, self.name = conn, key, name

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            conn.commit()
        finally:
            conn.close()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class AdvisoryLocks:
    """Named exclusive locks of one PostgreSQL catalog."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("advisory locks need a PostgreSQL catalog")
        self.engine = engine

    def try_hold(self, name: str) -> HeldLock | None:
        """The lock ``name`` if it is free now, else None (never waits)."""
        key = lock_key(name)
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        return HeldLock(conn, key, name)

    def hold(self, name: str, timeout_s: float = 60.0, what: str = "") -> HeldLock:
        """Wait up to ``timeout_s`` seconds for the lock ``name``. Raises Conflict (retryable, HTTP 409)
        naming ``what`` when another writer still holds it then."""
        end = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            held = self.try_hold(name)
            if held is not None:
                return held
            if time.monotonic() >= end:
                raise Conflict(f"{what or name} is being written by another process for more than {timeout_s:g} s; "
                               "retry", lock=name, retryable=True)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class ChangeTokens:
    """Rows of ``change_tokens`` (:class:`neurolake.volumes.models.ChangeToken`): ``get``, ``set``, ``drop``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT token FROM change_tokens WHERE name = :n"), {"n": name}).scalar()

    def set(self, name: str, token: str, only_if_missing: bool = False) -> None:
        action = "NOTHING" if only_if_missing else "UPDATE SET token = excluded.token"
        with self.engine.begin() as conn:
            conn.execute(text(f"INSERT INTO change_tokens (name, token) VALUES (:n, :t) "
                              f"ON CONFLICT (name) DO {action}"), {"n": name, "t": token})

    def drop(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM change_tokens WHERE name = :n"), {"n": name})
