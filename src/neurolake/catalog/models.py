"""Catalog rows of the feature-table registry (one row per registered external table)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow


class FeatureTable(Base):
    """A registered feature table. The data stays at ``location``; the row only describes it.

    ``schema`` is ``[{"name", "type", "nullable", "description"}]`` as detected; ``fingerprint`` is
    ``{"kind": "delta_version"|"iceberg_snapshot"|"lance_version"|"parquet_sha256", "value": ...}``;
    ``files`` lists ``{"path", "size"}`` (paths relative to the location) of the fingerprinted version.
    ``search_text``/``column_names``/``tags_text`` are lower-cased denormalised copies used by search.
    """

    __tablename__ = "feature_tables"
    __table_args__ = (UniqueConstraint("datastack", "name", name="uq_feature_tables_datastack"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    datastack: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    snapshot_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    time_range: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    materialization_version: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    owner_team: Mapped[str] = mapped_column(String(128), default="")
    owner_person: Mapped[str] = mapped_column(String(128), default="")
    invalidation_radius_nm: Mapped[float | None] = mapped_column(Float, nullable=True)
    licence: Mapped[str] = mapped_column(Text, default="")
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    citation: Mapped[str] = mapped_column(Text, default="")
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    pipeline: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    deprecation: Mapped[str] = mapped_column(Text, default="")
    derived_from: Mapped[list[str]] = mapped_column(JSON, default=list)
    superseded_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    partition_columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    hash_functions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    row_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    registered_by: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    search_text: Mapped[str] = mapped_column(Text, default="")
    column_names: Mapped[str] = mapped_column(Text, default="")
    tags_text: Mapped[str] = mapped_column(Text, default="")
