"""Users, API tokens (stored hashed), roles per datastack, public datastacks, the audit log.

Tokens are ``nl_`` + 40 url-safe random characters from :mod:`secrets` (≈ 240 bits). Only their
SHA-256 hex digest is stored (``access_tokens.token_hash``); lookup is by digest and the final
comparison uses :func:`hmac.compare_digest`. A token is shown once, when created.

Roles per datastack, ordered ``viewer < editor < admin``:

- viewer: read the datastack's data and metadata, search and show feature tables;
- editor: also write data, register/update feature tables, change their status and issue signed URLs;
- admin: also grant roles on the datastack.

A user with ``is_admin`` has every role everywhere. A *public* datastack (``datastacks.public``) is
readable by every authenticated user without a role. Errors: :class:`~neurolake.errors.InvalidArgument`
(bad names/roles), :class:`~neurolake.errors.NotFound`, :class:`~neurolake.errors.AlreadyExists`,
:class:`~neurolake.errors.Unauthorized` (missing/unknown/expired/revoked token),
:class:`~neurolake.errors.PermissionDenied` (role too low).
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select

from neurolake.access.models import ApiToken, AuditEvent, Role, User
from neurolake.base.names import check_name
from neurolake.db.base import as_utc, utcnow
from neurolake.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthorized

ROLES = ("viewer", "editor", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "nl_"
CACHE_SECONDS = 5.0
AUDIT_FLUSH_SECONDS = 1.0


@dataclass
class Principal:
    """Who is asking: a user name, admin flag and ``{datastack: role}``.

    ``local`` marks the single local user of an embedded (no ``--auth``) server or Python session.
    """

    name: str
    is_admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)
    local: bool = False
    quota: dict[str, int | None] = field(default_factory=dict)

    def role_on(self, datastack: str | None) -> str | None:
        if self.is_admin:
            return "admin"
        if datastack is None:
            return None
        return self.roles.get(datastack)


def local_principal(name: str) -> Principal:
    """The embedded default: one local user with every right."""
    return Principal(name=name, is_admin=True, local=True)


def hash_token(secret: str) -> str:
    """SHA-256 hex digest of a token secret (what the catalog stores)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_role(role: str) -> str:
    if role not in RANK:
        raise InvalidArgument(f"role {role!r} is not allowed; use one of {', '.join(ROLES)}", field="role",
                              value=role, allowed=list(ROLES))
    return role


def _user_row(s, name: str) -> User:
    row = s.scalar(select(User).where(User.name == name))
    if row is None:
        raise NotFound(f"user {name!r} does not exist; add it with `neurolake users add {name}`", user=name)
    return row


def _user_dict(s, row: User) -> dict[str, Any]:
    roles = {r.datastack: r.role for r in s.scalars(select(Role).where(Role.user_id == row.id))}
    return {"name": row.name, "is_admin": row.is_admin, "disabled": row.disabled, "roles": roles,
            "quota": {"bytes": row.quota_bytes, "requests": row.quota_requests, "period_s": row.quota_period_s},
            "created": as_utc(row.created).isoformat()}


def _check_quota_value(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a whole number ≥ 0 (0 = unlimited), got {value!r}", field=name,
                              value=repr(value))
    return value


class Access:
    """Access control of one lake (``Access(lake)``); every method commits its own transaction."""

    def __init__(self, lake) -> None:
        self.lake = lake
        self._cache: dict[str, tuple[float, Any, Principal]] = {}  # digest → (time, generation, principal)
        self._ds_cache: tuple[float, Any, dict[str, bool]] = (0.0, None, {})
        self._changes = 0  # bumped by every change of users, roles or tokens made through this object
        self._lock = threading.Lock()
        self._pending_audit: list[tuple] = []
        self._flusher: threading.Thread | None = None
        atexit.register(self._flush_at_exit)

    @property
    def generation(self) -> tuple[int, str]:
        """A token that changes with every change of users, roles, quotas or tokens made through any
        :class:`Access` of this lake, in this process or another (the lake's catalog generation,
        :meth:`neurolake.lake.Lake.generation`, which :meth:`_changed` bumps: one small file read).
        Cached principals are used only while it is unchanged."""
        return self._changes, self.lake.generation()

    def _changed(self) -> None:
        """Drop cached principals after a committed change of users, roles, quotas or tokens: this process at
        once, every other process serving the lake at its next request (the lake's generation is bumped)."""
        self._cache.clear()
        self._changes += 1
        self.lake._bump()

    def _flush_at_exit(self) -> None:
        try:
            self.flush_audit()
        except Exception:  # noqa: BLE001 - the catalog may already be closed
            pass

    # -- users ------------------------------------------------------------------------------------
    def add_user(self, name: str, *, admin: bool = False, quota_bytes: int | None = None,
                 quota_requests: int | None = None, quota_period_s: int | None = None,
                 by: str | None = None) -> dict[str, Any]:
        """Create a user. Raises InvalidArgument (name, quotas) or AlreadyExists."""
        check_name("user", name)
        _check_quota_value("quota_bytes", quota_bytes)
        _check_quota_value("quota_requests", quota_requests)
        if quota_period_s is not None and (_check_quota_value("quota_period_s", quota_period_s) or 0) < 1:
            raise InvalidArgument(f"quota_period_s must be ≥ 1 second, got {quota_period_s!r}",
                                  field="quota_period_s", value=quota_period_s)
        with self.lake.catalog.session() as s:
            if s.scalar(select(User).where(User.name == name)) is not None:
                raise AlreadyExists(f"user {name!r} already exists", user=name)
            row = User(name=name, is_admin=bool(admin), disabled=False, quota_bytes=quota_bytes,
                       quota_requests=quota_requests, quota_period_s=quota_period_s)
            s.add(row)
            s.flush()
            self._audit(s, by, "user.add", name, None, admin=bool(admin))
            return _user_dict(s, row)

    def user(self, name: str) -> dict[str, Any]:
        with self.lake.catalog.session() as s:
            return _user_dict(s, _user_row(s, name))

    def users(self) -> list[dict[str, Any]]:
        with self.lake.catalog.session() as s:
            return [_user_dict(s, r) for r in s.scalars(select(User).order_by(User.name))]

    def set_quota(self, name: str, *, quota_bytes: int | None = None, quota_requests: int | None = None,
                  quota_period_s: int | None = None, by: str | None = None) -> dict[str, Any]:
        """Set a user's quotas (``None`` leaves a field unchanged; 0 = unlimited)."""
        _check_quota_value("quota_bytes", quota_bytes)
        _check_quota_value("quota_requests", quota_requests)
        if quota_period_s is not None and quota_period_s < 1:
            raise InvalidArgument(f"quota_period_s must be ≥ 1 second, got {quota_period_s!r}",
                                  field="quota_period_s", value=quota_period_s)
        with self.lake.catalog.session() as s:
            row = _user_row(s, name)
            if quota_bytes is not None:
                row.quota_bytes = quota_bytes
            if quota_requests is not None:
                row.quota_requests = quota_requests
            if quota_period_s is not None:
                row.quota_period_s = quota_period_s
            self._audit(s, by, "user.quota", name, None, bytes=quota_bytes, requests=quota_requests,
                        period_s=quota_period_s)
            out = _user_dict(s, row)
        self._changed()
        return out

    def disable_user(self, name: str, by: str | None = None) -> None:
        with self.lake.catalog.session() as s:
            _user_row(s, name).disabled = True
            self._audit(s, by, "user.disable", name, None)
        self._changed()

    # -- roles ------------------------------------------------------------------------------------
    def grant(self, user: str, datastack: str, role: str, by: str | None = None) -> dict[str, Any]:
        """Give ``user`` ``role`` on ``datastack`` (replacing any previous role there)."""
        _check_role(role)
        self.lake.datastack(datastack)  # NotFound if missing
        with self.lake.catalog.session() as s:
            row = _user_row(s, user)
            r = s.scalar(select(Role).where(Role.user_id == row.id, Role.datastack == datastack))
            if r is None:
                s.add(Role(user_id=row.id, datastack=datastack, role=role))
            else:
                r.role = role
            self._audit(s, by, "role.grant", user, datastack, role=role)
            s.flush()
            out = _user_dict(s, row)
        self._changed()
        return out

    def revoke(self, user: str, datastack: str, by: str | None = None) -> None:
        with self.lake.catalog.session() as s:
            row = _user_row(s, user)
            r = s.scalar(select(Role).where(Role.user_id == row.id, Role.datastack == datastack))
            if r is not None:
                s.delete(r)
            self._audit(s, by, "role.revoke", user, datastack)
        self._changed()

    # -- tokens -----------------------------------------------------------------------------------
    def create_token(self, user: str, name: str = "", expires_in_s: float | None = None,
                     by: str | None = None) -> dict[str, Any]:
        """Create an API token for ``user``; the returned ``token`` secret is shown only here.

        ``expires_in_s``: lifetime in seconds (None = no expiry). Raises NotFound, InvalidArgument.
        """
        if expires_in_s is not None and not (expires_in_s > 0):
            raise InvalidArgument(f"expires_in_s must be > 0 seconds, got {expires_in_s!r}", field="expires_in_s",
                                  value=expires_in_s)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(30)
        with self.lake.catalog.session() as s:
            row = _user_row(s, user)
            expires = utcnow() + dt.timedelta(seconds=expires_in_s) if expires_in_s else None
            tok = ApiToken(user_id=row.id, name=name, prefix=secret[:8], token_hash=hash_token(secret),
                           expires=expires, revoked=False)
            s.add(tok)
            s.flush()
            self._audit(s, by, "token.create", user, None, token_id=tok.id, name=name)
            return {"id": tok.id, "user": user, "name": name, "token": secret, "prefix": tok.prefix,
                    "expires": expires.isoformat() if expires else None}

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        with self.lake.catalog.session() as s:
            q = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
            if user:
                q = q.where(User.name == user)
            return [{"id": t.id, "user": u, "name": t.name, "prefix": t.prefix, "revoked": t.revoked,
                     "created": as_utc(t.created).isoformat(),
                     "expires": as_utc(t.expires).isoformat() if t.expires else None} for t, u in s.execute(q)]

    def revoke_token(self, token_id: int, by: str | None = None) -> None:
        with self.lake.catalog.session() as s:
            tok = s.get(ApiToken, token_id)
            if tok is None:
                raise NotFound(f"token {token_id} does not exist", token_id=token_id)
            tok.revoked = True
            self._audit(s, by, "token.revoke", str(token_id), None)
        self._changed()

    def authenticate(self, secret: str | None) -> Principal:
        """Map a token secret to its :class:`Principal`. Raises Unauthorized (missing, unknown,
        revoked, expired, disabled user). Results are cached for 5 s per token, and only while
        :attr:`generation` is unchanged (a change in any process is seen by the next request)."""
        if not secret:
            raise Unauthorized("a token is required: send `Authorization: Bearer <token>` (or `Token <token>`, "
                               "or ?token=<token>); create one with `neurolake tokens create USER`")
        digest = hash_token(secret)
        now = time.monotonic()
        gen = self.generation  # read before the catalog: a change committed meanwhile invalidates the entry
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS and hit[1] == gen:
            return hit[2]
        with self.lake.catalog.session() as s:
            tok = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if tok is None or not hmac.compare_digest(tok.token_hash, digest):
                raise Unauthorized("unknown token", token_prefix=secret[:8])
            if tok.revoked:
                raise Unauthorized("token was revoked", token_prefix=tok.prefix)
            if tok.expires is not None and as_utc(tok.expires) <= utcnow():
                raise Unauthorized(f"token expired at {as_utc(tok.expires).isoformat()}", token_prefix=tok.prefix)
            user = s.get(User, tok.user_id)
            if user is None or user.disabled:
                raise Unauthorized("the token's user is disabled", token_prefix=tok.prefix)
            roles = {r.datastack: r.role for r in s.scalars(select(Role).where(Role.user_id == user.id))}
            p = Principal(name=user.name, is_admin=user.is_admin, roles=roles,
                          quota={"bytes": user.quota_bytes, "requests": user.quota_requests,
                                 "period_s": user.quota_period_s})
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now, gen, p)
        return p

    def active_principal(self, name: str) -> Principal:
        """The principal of user ``name`` if that user still exists and is enabled (signed URLs carry the
        name of the user they were issued to). Raises PermissionDenied otherwise."""
        with self.lake.catalog.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None or user.disabled:
                raise PermissionDenied(f"signed URL was issued to user {name!r}, who "
                                       f"{'no longer exists' if user is None else 'is disabled'}; request a new one",
                                       user=name)
        return self.principal(name)

    def principal(self, name: str) -> Principal:
        """The principal of an existing user (used for signed URLs, which carry the user name)."""
        with self.lake.catalog.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                return Principal(name=name)
            roles = {r.datastack: r.role for r in s.scalars(select(Role).where(Role.user_id == user.id))}
            return Principal(name=user.name, is_admin=user.is_admin, roles=roles,
                             quota={"bytes": user.quota_bytes, "requests": user.quota_requests,
                                    "period_s": user.quota_period_s})

    # -- authorisation ----------------------------------------------------------------------------
    def public_datastacks(self) -> dict[str, bool]:
        """``{datastack: public}``, cached for 5 s while the lake's generation is unchanged."""
        ts, g, d = self._ds_cache
        gen = self.lake.generation()
        if time.monotonic() - ts > CACHE_SECONDS or g != gen:
            d = {x["name"]: bool(x["public"]) for x in self.lake.datastack_infos()}
            self._ds_cache = (time.monotonic(), gen, d)
        return d

    def public_cached(self) -> bool:
        """True while :meth:`public_datastacks` answers from memory (no catalog I/O)."""
        ts, g, _ = self._ds_cache
        return time.monotonic() - ts <= CACHE_SECONDS and g == self.lake.generation()

    def allowed(self, p: Principal, datastack: str | None, need: str) -> bool:
        """May ``p`` act with role ``need`` (viewer|editor|admin) on ``datastack`` (None = lake-wide)?"""
        if p.is_admin:
            return True
        if datastack is None:
            return need == "viewer"
        if need == "viewer" and self.public_datastacks().get(datastack, False):
            return True
        have = p.roles.get(datastack)
        return have is not None and RANK[have] >= RANK[need]

    def require(self, p: Principal, datastack: str | None, need: str, action: str = "") -> None:
        """Raise PermissionDenied unless :meth:`allowed`."""
        if not self.allowed(p, datastack, need):
            have = p.role_on(datastack) or "none"
            where = f"datastack {datastack!r}" if datastack else "this lake"
            raise PermissionDenied(f"user {p.name!r} has role {have} on {where}; {action or 'this'} needs "
                                   f"{need}{' or higher' if need != 'admin' else ''}", user=p.name,
                                   datastack=datastack, role=have, required=need)

    def require_table(self, p: Principal, table: Any, need: str) -> None:
        """CAVE's per-table permissions of an annotation table, on top of the datastack roles.

        ``table`` has ``datastack``, ``name``, ``owner``, ``read_permission``, ``write_permission``
        (:class:`neurolake.annotations.AnnotationTable`); ``need`` is ``"read"`` or ``"write"``.
        PRIVATE: the table's owner and lake admins only; GROUP: users with a role on the datastack (not
        the role-less readers of a public datastack); PUBLIC: whoever the datastack role allows (a read
        needs viewer or a public datastack, a write editor: checked by the ``--auth`` middleware).
        Raises PermissionDenied.
        """
        perm = table.read_permission if need == "read" else table.write_permission
        if p.is_admin or p.name == table.owner or perm == "PUBLIC":
            return
        if perm == "GROUP" and p.role_on(table.datastack) is not None:
            return
        raise PermissionDenied(f"annotation table {table.datastack}/{table.name} has {need}_permission {perm} "
                               f"(owner {table.owner!r}); user {p.name!r} may not {need} it", user=p.name,
                               table=table.name, datastack=table.datastack, permission=perm, need=need)

    # -- audit ------------------------------------------------------------------------------------
    def _audit(self, s, user: str | None, action: str, target: str, datastack: str | None, **detail) -> None:
        s.add(AuditEvent(user_name=user or self.lake.settings.user, action=action, target=target,
                         datastack=datastack, detail=detail))

    def audit(self, user: str | None, action: str, target: str = "", datastack: str | None = None,
              buffered: bool = False, **detail: Any) -> None:
        """Append one audit event (own transaction).

        ``buffered=True`` (used for high-rate events: URL grants) only queues the event in memory; a
        background thread writes the queue in one transaction every :data:`AUDIT_FLUSH_SECONDS` (and the
        queue is written when the log is read, and at process exit), so a grant costs no catalog I/O; a
        crash can lose the last second of such events.
        """
        if buffered:
            with self._lock:
                self._pending_audit.append((user or self.lake.settings.user, action, target, datastack, detail,
                                            utcnow()))
                if self._flusher is None or not self._flusher.is_alive():
                    self._flusher = threading.Thread(target=self._flush_loop, name="neurolake-audit", daemon=True)
                    self._flusher.start()
            return
        with self.lake.catalog.session() as s:
            self._audit(s, user, action, target, datastack, **detail)

    def _flush_loop(self) -> None:
        """Body of the background flusher: write the queue every second; end once a second passes idle."""
        while True:
            time.sleep(AUDIT_FLUSH_SECONDS)
            with self._lock:
                if not self._pending_audit:
                    self._flusher = None
                    return
            try:
                self.flush_audit()
            except Exception:  # noqa: BLE001 - catalog closed or busy: the events stay queued for the next try
                pass

    def close(self) -> None:
        """Write the queued audit events (called by :meth:`neurolake.lake.Lake.close`)."""
        self.flush_audit()

    def flush_audit(self) -> None:
        """Write queued (buffered) audit events, in one multi-row INSERT. On failure they stay queued."""
        with self._lock:
            pending, self._pending_audit = self._pending_audit, []
        if not pending:
            return
        rows = [{"user_name": u, "action": a, "target": tg, "datastack": ds, "detail": d, "time": when}
                for u, a, tg, ds, d, when in pending]
        try:
            with self.lake.catalog.session() as s:
                s.execute(insert(AuditEvent), rows)
        except BaseException:
            with self._lock:
                self._pending_audit[:0] = pending
            raise

    def audit_log(self, *, user: str | None = None, action: str | None = None, datastack: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        """Audit events, newest first; ``action`` matches a prefix (e.g. ``"feature."``)."""
        self.flush_audit()
        with self.lake.catalog.session() as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if user:
                q = q.where(AuditEvent.user_name == user)
            if action:
                q = q.where(AuditEvent.action.startswith(action))
            if datastack:
                q = q.where(AuditEvent.datastack == datastack)
            return [{"id": e.id, "time": as_utc(e.time).isoformat(), "user": e.user_name, "action": e.action,
                     "target": e.target, "datastack": e.datastack, "detail": e.detail} for e in s.scalars(q)]
