"""Catalog rows for datastacks and their layers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from neurolake.db.base import Base, utcnow


class Datastack(Base):
    """One dataset: an aligned volume with its layers (CAVE's datastack)."""

    __tablename__ = "datastacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    voxel_size_nm: Mapped[list[float]] = mapped_column(JSON)  # [x, y, z] at mip 0
    public: Mapped[bool] = mapped_column(default=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    layers: Mapped[list[Layer]] = relationship(back_populates="datastack", cascade="all, delete-orphan")


class Layer(Base):
    """One volume of a datastack, stored as an OME-Zarr 0.5 group of sharded Zarr v3 arrays.

    ``spec`` is the JSON-able :class:`neurolake.volumes.spec.LayerSpec` (dtype, shape, voxel size,
    chunking, compression, mips); ``status`` is ``ingesting`` until the whole volume and its pyramid
    are written, then ``ready`` (``failed`` after a rolled-back ingest). ``path`` is the layer's folder
    relative to the lake root (``datastacks/<ds>/volumes/<layer>``, or ``…/<layer>@<token>`` after an
    overwrite); while an overwrite of a ready layer is built aside, ``progress["replacing"]`` records
    its folder, spec and durable slabs (see :mod:`neurolake.volumes.ingest`).
    """

    __tablename__ = "layers"
    __table_args__ = (UniqueConstraint("datastack_id", "name", name="uq_layers_datastack_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastack_id: Mapped[int] = mapped_column(ForeignKey("datastacks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    layer_type: Mapped[str] = mapped_column(String(32))  # image | segmentation
    dtype: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)  # relative to the lake root
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="ingesting")
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    datastack: Mapped[Datastack] = relationship(back_populates="layers")


class ChangeToken(Base):
    """A token replaced on every change of one thing of a lake on object storage, read by every process to know
    whether what it cached is still current: ``name`` is ``lake`` (datastack and layer rows; the local lake's
    ``catalog.generation`` file) or ``layer:<url of the layer's folder>`` (a layer's stored bytes; the local
    layer's ``generation`` file). A token starting with ``p`` marks a change in progress (nothing is cached
    under it; a writer killed mid-change leaves it). Object storage would need a GET per read for the same."""

    __tablename__ = "change_tokens"

    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
