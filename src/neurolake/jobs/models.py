"""Catalog rows of jobs: one :class:`JobRow` per heavy step run (ingest, pyramid, materialize, …), with
its progress. Migrations: ``db/migrations/versions/jobs_000*.py``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow

JOB_STATUSES = ("running", "done", "failed")  # stored
REPORTED_STATUSES = (*JOB_STATUSES, "lost")  # "lost": stored running, but its process is gone (no heartbeat)


class JobRow(Base):
    """One job: what ran (``kind`` on ``datastack``/``target``), who started it, on which Dask ``scheduler``,
    and how far it got (``tasks_done`` of ``tasks_total``; the total may grow while a job discovers work)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_started", "started"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # ingest | pyramid | materialize | mesh | …
    datastack: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    target: Mapped[str | None] = mapped_column(Text, nullable=True)  # layer, table set, version … (free text)
    user: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)  # running | done | failed
    tasks_total: Mapped[int] = mapped_column(Integer, default=0)
    tasks_done: Mapped[int] = mapped_column(Integer, default=0)
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    scheduler: Mapped[str | None] = mapped_column(String(256), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the process that runs the job …
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # … alive then
