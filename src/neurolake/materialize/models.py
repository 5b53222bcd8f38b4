"""Catalog rows of materialization versions (CAVE's MaterializationEngine versions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow


class MaterializationVersion(Base):
    """Version N of a datastack: every annotation table's rows valid at ``time_stamp``, bound to root
    ids at that time, frozen as Parquet files under ``path``."""

    __tablename__ = "mat_versions"
    __table_args__ = (UniqueConstraint("datastack_id", "version", name="uq_mat_versions_datastack_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastack_id: Mapped[int] = mapped_column(ForeignKey("datastacks.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    time_stamp: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_on: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="AVAILABLE")  # AVAILABLE | EXPIRED
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    path: Mapped[str] = mapped_column(Text)  # relative to the lake root
    tables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> {rows, schema, columns, …}
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
