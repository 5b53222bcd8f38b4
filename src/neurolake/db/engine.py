"""Engine, sessions and migrations of one lake's catalog.

SQLite (the embedded default, a file in the lake folder) runs in WAL mode with a busy timeout so a
server and CLI processes can share it; PostgreSQL is selected by URL (``postgresql+psycopg://…``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATED = "catalog.migrated"  # stamp in the lake folder: the migration scripts and heads last upgraded to


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Upgrade every migration branch to its head (idempotent)."""
    from alembic import command  # Alembic only when the catalog may need an upgrade (see migrate_if_needed)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


class Catalog:
    """The catalog database of one lake: ``with catalog.session() as s: ...`` commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    def migrate_if_needed(self, stamp: Path | Any) -> bool:
        """Upgrade every branch unless the catalog is known to be at the heads of these migration scripts:
        ``stamp`` (a JSON file) records a fingerprint of the scripts (names, sizes, modification times) and of
        the database URL with the heads they led to, and the catalog's ``alembic_version`` rows still equal
        those heads (one query). Returns True when it ran the migrations. Opening a lake costs one small
        query instead of loading Alembic and every script."""
        fp = _fingerprint(self.url)
        try:
            doc = json.loads(stamp.read_text())
            if doc.get("fingerprint") == fp and sorted(doc["heads"]) == self._versions():
                return False
        except (OSError, ValueError, KeyError, TypeError):
            pass
        except Exception as exc:  # no alembic_version table yet, or another database error: migrate
            if not _is_db_error(exc):
                raise
        migrate(self.engine)
        try:
            doc = json.dumps({"fingerprint": fp, "heads": self._versions()})
            if getattr(stamp, "protocol", "") not in ("", "file", "local"):  # object storage: a PUT is atomic
                stamp.write_text(doc)
            else:
                tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
                tmp.write_text(doc)
                os.replace(tmp, stamp)
        except OSError:  # a read-only lake folder: migrate on every open, as before
            pass
        return True

    def _versions(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def _fingerprint(url: str) -> str:
    h = hashlib.sha256(url.encode())
    for folder in (MIGRATIONS, MIGRATIONS / "versions"):
        for e in sorted(os.scandir(folder), key=lambda e: e.name):
            if e.name.endswith(".py") and e.is_file():
                st = e.stat()
                h.update(f"{folder.name}/{e.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _is_db_error(exc: Exception) -> bool:
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, DBAPIError)
