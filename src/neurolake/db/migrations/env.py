"""Alembic environment: runs on the connection handed over by neurolake.db.engine.migrate."""

from alembic import context

import neurolake.models  # noqa: F401  (registers every model on Base.metadata)
from neurolake.db.base import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` from the command line
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://").connect()

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
