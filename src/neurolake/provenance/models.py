"""Catalog rows of the run store: one :class:`QueryRun` per executed query, one :class:`RunPin` per input
it read, pinned (issue 12). Migration: ``db/migrations/versions/prov_0001_query_runs.py``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow

RUN_STATUSES = ("ok", "partial", "failed")
PIN_KINDS = ("annotation", "version_table", "connectome", "edits", "feature", "ephys", "skeletons")


class QueryRun(Base):
    """One execution of a SQL query: its OpenLineage RunEvent (``manifest``) and a summary to list by."""

    __tablename__ = "query_runs"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4 str
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)  # run start, UTC
    user: Mapped[str] = mapped_column(String(128), default="", index=True)
    mode: Mapped[str] = mapped_column(String(16))  # exploratory | production
    sql: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # ok | partial | failed
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full OpenLineage RunEvent
    result_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    datastacks: Mapped[list[str]] = mapped_column(JSON, default=list)  # sorted names of the inputs' datastacks


class RunPin(Base):
    """One input a run read, at its pin. ``version`` is the Delta version (annotation), the materialization
    version (version_table, connectome) or the operation id (edits); for feature tables the Delta version of
    a registered Delta table, else None (their pin is the fingerprint in ``detail``). ``detail`` is the run's
    whole input dict."""

    __tablename__ = "query_run_pins"
    __table_args__ = (Index("ix_query_run_pins_kind_datastack_name_version", "kind", "datastack", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("query_runs.run_id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # annotation | version_table | connectome | edits | feature | ephys
    datastack: Mapped[str | None] = mapped_column(String(128), nullable=True)
    name: Mapped[str] = mapped_column(String(128))  # table name within the datastack (feature: registry name)
    version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
