"""Catalog rows of annotation tables (metadata only; the rows live in a Delta Lake table)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow


class AnnotationTable(Base):
    """One annotation table of a datastack (CAVE's table metadata).

    ``path`` (relative to the lake root) holds the Delta Lake table; ``voxel_size_nm`` is the
    (x, y, z) nm per voxel of stored positions; ``segmentation_layer`` is the layer whose segment
    ids are looked up under each point on write (null: no binding); ``next_id`` is the next
    automatically assigned annotation id; ``read_permission``/``write_permission`` follow CAVE
    (PUBLIC, GROUP, PRIVATE).
    """

    __tablename__ = "annotation_tables"
    __table_args__ = (UniqueConstraint("datastack_id", "name", name="uq_annotation_tables_datastack_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastack_id: Mapped[int] = mapped_column(ForeignKey("datastacks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    schema_name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(128), default="")
    voxel_size_nm: Mapped[list[float]] = mapped_column("voxel_resolution_nm", JSON)  # column named before 0.1
    properties: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    required_points: Mapped[list[str]] = mapped_column(JSON, default=list)
    segmentation_layer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    read_permission: Mapped[str] = mapped_column(String(16), default="PUBLIC")
    write_permission: Mapped[str] = mapped_column(String(16), default="PRIVATE")
    path: Mapped[str] = mapped_column(Text)
    next_id: Mapped[int] = mapped_column(BigInteger, default=1)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
