"""The catalog database: SQLAlchemy models, engine, Alembic migrations.

Each core package defines its own tables on :class:`Base` (``neurolake.<package>.models``) and its
own Alembic branch in ``db/migrations/versions`` (``branch_labels``); :func:`migrate` upgrades every
branch to its head, so packages evolve their schemas independently.
"""

from neurolake.db.base import Base, utcnow
from neurolake.db.engine import Catalog, migrate

__all__ = ["Base", "Catalog", "migrate", "utcnow"]
