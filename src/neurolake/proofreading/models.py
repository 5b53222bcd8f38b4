"""Catalog rows of proofreading: one supervoxel graph per datastack, its operations and root ids.

The immutable part of a graph (supervoxel ids, the region adjacency graph with affinities, the
initial agglomeration) lives in Parquet files under ``<lake>/datastacks/<ds>/proofreading/``; the
catalog holds everything that changes, one database transaction per edit (crash safety: a killed
process leaves the old or the new state, never a mix).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurolake.db.base import Base, utcnow


class SegmentationGraph(Base):
    """The proofreadable segmentation of one datastack (CAVE's chunkedgraph table).

    ``last_seq`` is the sequence number of the newest operation; every edit starts by incrementing
    it (``UPDATE … SET last_seq = last_seq + 1``), which serialises edits of one datastack on SQLite
    and PostgreSQL alike and is the basis of optimistic concurrency.
    """

    __tablename__ = "pr_graphs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastack_id: Mapped[int] = mapped_column(ForeignKey("datastacks.id", ondelete="CASCADE"), unique=True)
    layer: Mapped[str | None] = mapped_column(String(128), nullable=True)  # supervoxel layer name
    base_path: Mapped[str] = mapped_column(Text)  # relative to the lake root
    agglomeration: Mapped[str] = mapped_column(String(32))
    n_supervoxels: Mapped[int] = mapped_column(BigInteger)
    n_edges: Mapped[int] = mapped_column(BigInteger)
    root_base: Mapped[int] = mapped_column(BigInteger)
    next_root: Mapped[int] = mapped_column(BigInteger)  # next root id to hand out
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Operation(Base):
    """One edit (merge, split, undo, redo, rollback): who, when, based on which roots, what it made."""

    __tablename__ = "pr_operations"
    __table_args__ = (UniqueConstraint("graph_id", "seq", name="uq_pr_operations_graph_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph_id: Mapped[int] = mapped_column(ForeignKey("pr_graphs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, … per graph; the operation id users see
    kind: Mapped[str] = mapped_column(String(16))  # merge | split | undo | redo | rollback
    author: Mapped[str] = mapped_column(String(256))
    timestamp: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    old_roots: Mapped[list[int]] = mapped_column(JSON)
    new_roots: Mapped[list[int]] = mapped_column(JSON)
    # [[sv_a, sv_b, affinity, active], …] edges whose state this operation set
    edges: Mapped[list[list[Any]]] = mapped_column(JSON)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    targets: Mapped[list[int]] = mapped_column(JSON, default=list)  # undo/redo/rollback: operations acted on
    undone_by: Mapped[int | None] = mapped_column(Integer, nullable=True)  # seq of the undo in force


class Root(Base):
    """A root id that took part in an operation (created by one, or expired by one).

    Roots of the initial agglomeration that were never edited have no row (they live in the base
    Parquet file); ``created_seq`` 0 means "from the initial agglomeration".
    """

    __tablename__ = "pr_roots"
    __table_args__ = (UniqueConstraint("graph_id", "root_id", name="uq_pr_roots_graph_root"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph_id: Mapped[int] = mapped_column(ForeignKey("pr_graphs.id", ondelete="CASCADE"), index=True)
    root_id: Mapped[int] = mapped_column(BigInteger)
    created_seq: Mapped[int] = mapped_column(Integer)
    expired_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_supervoxels: Mapped[int] = mapped_column(BigInteger)
