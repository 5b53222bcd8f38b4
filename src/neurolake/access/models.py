"""Catalog rows of access control: users, hashed API tokens, datastack roles, usage counters, audit log."""

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


class User(Base):
    """A user. ``is_admin`` grants every role on every datastack.

    Quotas (``None`` = the lake default from ``NEUROLAKE_QUOTA_*``; 0 = unlimited): ``quota_bytes`` bytes
    served and ``quota_requests`` requests per window of ``quota_period_s`` seconds.
    """

    __tablename__ = "access_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_requests: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_period_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token: only the SHA-256 of the secret is stored; ``prefix`` (first 8 chars) identifies it."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Role(Base):
    """A user's role on one datastack: viewer < editor < admin."""

    __tablename__ = "access_roles"
    __table_args__ = (UniqueConstraint("user_id", "datastack", name="uq_access_roles_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"))
    datastack: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))


class Usage(Base):
    """Requests and bytes served to one user in one quota window starting at ``window_start`` (unix s)."""

    __tablename__ = "access_usage"
    __table_args__ = (UniqueConstraint("user_name", "window_start", name="uq_access_usage_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128))
    window_start: Mapped[int] = mapped_column(BigInteger)
    period_s: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEvent(Base):
    """One audited action: registration, status change, URL grant, bytes served, access changes."""

    __tablename__ = "access_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text, default="")
    datastack: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Secret(Base):
    """Server-side facts about secrets shared by every process of one lake — never a secret itself: row
    ``signed_url_key_id`` holds the id of the signed-URL key (the key is in ``<lake>/signing.key`` or
    ``NEUROLAKE_SIGNING_KEY``; :mod:`neurolake.storage.signing`). A row ``signed_url_key`` written by an
    older version (the key itself) is moved out and deleted when the key is next loaded."""

    __tablename__ = "access_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
