"""Quotas: requests and bytes served per user per period, counted in fixed windows.

A window of ``period_s`` seconds starts at a multiple of ``period_s`` since the Unix epoch; counters
reset when the next window starts (``reset`` in answers). Limits per user come from the user's row
(``access_users.quota_*``) or, when unset there, from the environment: ``NEUROLAKE_QUOTA_BYTES``
(bytes served per window, default 0 = unlimited), ``NEUROLAKE_QUOTA_REQUESTS`` (requests per window,
default 0 = unlimited), ``NEUROLAKE_QUOTA_PERIOD`` (seconds, default 86400).

A request is refused (429, :class:`~neurolake.errors.QuotaExceeded`) once the window's usage has reached
a limit; the response that crosses a byte limit is still completed (a response's size is known only once
it is sent).

How requests are counted depends on the catalog:

- **PostgreSQL (exact across processes).** For a user with a limit, :meth:`Quotas.check` counts the
  request *and* checks the limit in one atomic statement (``INSERT … ON CONFLICT (user_name,
  window_start) DO UPDATE SET requests = requests + 1 WHERE requests < limit AND bytes < limit
  RETURNING``): with any number of server processes (``neurolake serve --workers N``) exactly
  ``quota_requests`` requests of a window are let through. The following :meth:`Quotas.add` of that
  request adds only its bytes, written at once (one more atomic ``UPDATE``, off the event loop), so the
  byte count lags by the responses still being sent. Users without limits are counted write-behind.
- **SQLite (one process).** Counting is write-behind: each server process adds to in-memory counters and
  flushes them to the catalog (``access_usage``) at most every ``flush_interval`` seconds (and on
  :meth:`Quotas.flush`), so a request costs no database write. With several processes sharing one
  catalog a user may overshoot a limit by what the other processes served since their last flush.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from neurolake.access.core import Principal
from neurolake.access.models import Usage
from neurolake.errors import QuotaExceeded


class Quotas:
    """Usage counters and quota checks of one lake (one instance per server process)."""

    def __init__(self, lake, flush_interval: float = 0.5) -> None:
        self.lake = lake
        self.flush_interval = flush_interval
        st = lake.settings
        self.defaults = {"bytes": st.quota_bytes, "requests": st.quota_requests, "period_s": st.quota_period_s}
        self._pending: dict[tuple[str, int, int], list[int]] = {}
        self._flushing: dict[tuple[str, int, int], list[int]] = {}  # taken by a flush, not yet in _base
        self._base: dict[tuple[str, int], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._shared: bool | None = None  # catalog on PostgreSQL: exact counting (decided on first use)
        self._reserved: dict[str, int] = {}  # user → requests counted by check() and not yet by add()

    def exact(self) -> bool:
        """Whether requests are counted exactly across processes (the catalog is on PostgreSQL; see the
        module docstring). Connects the catalog on first call."""
        if self._shared is None:
            self._shared = self.lake.catalog.engine.dialect.name == "postgresql"
        return self._shared

    def _limited(self, p: Principal) -> bool:
        lim = self.limits(p)
        return bool(lim["bytes"] or lim["requests"])

    def limits(self, p: Principal) -> dict[str, int]:
        q = p.quota or {}
        return {k: (q.get(k) if q.get(k) is not None else self.defaults[k]) for k in ("bytes", "requests", "period_s")}

    def _window(self, period: int, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(now // period) * period

    def _load_base(self, user: str, window: int) -> tuple[int, int]:
        key = (user, window)
        if key not in self._base:
            with self.lake.catalog.session() as s:
                row = s.scalar(select(Usage).where(Usage.user_name == user, Usage.window_start == window))
                self._base[key] = (row.requests, row.bytes) if row else (0, 0)
        return self._base[key]

    def _read(self, user: str, window: int) -> tuple[int, int]:
        """``(requests, bytes)`` of the window as the catalog has them now."""
        with self.lake.catalog.session() as s:
            row = s.execute(select(Usage.requests, Usage.bytes).where(Usage.user_name == user,
                                                                      Usage.window_start == window)).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def usage(self, p: Principal) -> dict[str, Any]:
        """Usage of the current window: ``{user, period_s, window_start, reset, requests, bytes, limits}``
        (on PostgreSQL read from the catalog: what every process counted, plus this process's unwritten
        counts)."""
        lim = self.limits(p)
        period = lim["period_s"]
        window = self._window(period)
        base = self._read(p.name, window) if self.exact() else self._load_base(p.name, window)
        key = (p.name, window, period)
        with self._lock:  # base and the counts not yet in it, read together (a flush moves one to the other)
            if not self.exact():
                base = self._base.get((p.name, window), base)
            pend = [a + b for a, b in zip(self._pending.get(key, [0, 0]), self._flushing.get(key, [0, 0]),
                                          strict=True)]
        reset = window + period
        return {"user": p.name, "period_s": period,
                "window_start": dt.datetime.fromtimestamp(window, dt.UTC).isoformat(),
                "reset": dt.datetime.fromtimestamp(reset, dt.UTC).isoformat(),
                "reset_in_s": round(reset - time.time(), 3),
                "requests": base[0] + pend[0], "bytes": base[1] + pend[1],
                "limits": {"bytes": lim["bytes"] or None, "requests": lim["requests"] or None}}

    def check(self, p: Principal) -> None:
        """Raise QuotaExceeded (429) when the user's current window has reached a limit. On PostgreSQL a
        request let through is counted here, atomically with the check (:meth:`add` then adds its bytes)."""
        lim = self.limits(p)
        if not lim["bytes"] and not lim["requests"]:
            return
        if self.exact() and self._reserve(p, lim):
            return
        u = self.usage(p)
        over = [w for w in ("requests", "bytes") if lim[w] and u[w] >= lim[w]]
        if not over and self.exact():  # refused by the atomic check; a release() since then may hide why
            over = ["requests" if lim["requests"] else "bytes"]
        for what in over:
            limit = lim[what]
            raise QuotaExceeded(
                f"quota exceeded: user {p.name!r} used {u[what]} {what} of {limit} allowed per "
                f"{lim['period_s']} s; the window resets at {u['reset']}",
                user=p.name, quota=what, limit=limit, usage=u[what], period_s=lim["period_s"],
                reset=u["reset"], retry_after_s=max(1, int(u["reset_in_s"] + 0.999)))

    def _reserve(self, p: Principal, lim: dict[str, int]) -> bool:
        """PostgreSQL: count one request of ``p`` in the current window if the window is under every limit
        (one atomic upsert); False (nothing counted) when a limit is reached."""
        period = lim["period_s"]
        window = self._window(period)
        t = Usage.__table__
        under = [c for c in ((t.c.requests < lim["requests"]) if lim["requests"] else None,
                             (t.c.bytes < lim["bytes"]) if lim["bytes"] else None) if c is not None]
        stmt = (pg_insert(t).values(user_name=p.name, window_start=window, period_s=period, requests=1, bytes=0)
                .on_conflict_do_update(constraint="uq_access_usage_user_name",
                                       set_={"requests": t.c.requests + 1}, where=and_(*under))
                .returning(t.c.requests))
        with self.lake.catalog.engine.begin() as conn:
            got = conn.execute(stmt).first()
        if got is None:
            return False
        with self._lock:
            self._reserved[p.name] = self._reserved.get(p.name, 0) + 1
        return True

    def release(self, p: Principal) -> None:
        """Give back the request :meth:`check` counted for ``p`` when that request turned out not to be
        metered (a public route): PostgreSQL only; a no-op otherwise or when nothing is reserved."""
        with self._lock:
            if not self._reserved.get(p.name):
                return
            self._reserved[p.name] -= 1
        period = self.limits(p)["period_s"]
        key = (p.name, self._window(period), period)
        with self._lock:
            self._pending.setdefault(key, [0, 0])[0] -= 1

    def add(self, p: Principal, requests: int = 0, nbytes: int = 0, flush: bool = True) -> bool:
        """Count ``requests`` and ``nbytes`` served to ``p`` in the current window. Returns whether a
        flush is due; with ``flush=False`` the caller runs :meth:`flush` (e.g. off the event loop).

        On PostgreSQL the requests :meth:`check` already counted for ``p`` are not counted again, and a
        flush is due at once for a user with a limit (so the other processes see the bytes)."""
        period = self.limits(p)["period_s"]
        key = (p.name, self._window(period), period)
        exact = self._shared  # set by check() when it ran; None: nothing was reserved
        with self._lock:
            if exact:
                have = self._reserved.get(p.name, 0)
                take = min(have, requests)
                if take:
                    self._reserved[p.name] = have - take
                    requests -= take
            c = self._pending.setdefault(key, [0, 0])
            c[0] += requests
            c[1] += nbytes
            due = time.monotonic() - self._last_flush >= self.flush_interval
            if exact and (requests or nbytes) and self._limited(p):
                due = True
        if due and flush:
            self.flush()
        return due

    def needs_io(self, p: Principal) -> bool:
        """Whether :meth:`check` may touch the catalog (limits set, and on SQLite the window's base not
        loaded; on PostgreSQL always)."""
        lim = self.limits(p)
        if not lim["bytes"] and not lim["requests"]:
            return False
        if self._shared is not False:  # PostgreSQL (or not known yet): check() writes the catalog
            return True
        return (p.name, self._window(lim["period_s"])) not in self._base

    def flush(self) -> None:
        """Write pending counters to the catalog and refresh the cached totals."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
            for key, (req, nb) in pending.items():  # still counted by usage() until written
                c = self._flushing.setdefault(key, [0, 0])
                c[0] += req
                c[1] += nb
        if not pending:
            return
        if self.exact():
            try:
                self._flush_upsert(pending)
            finally:
                with self._lock:
                    for key in pending:
                        self._written(key, pending[key])
            return
        for (user, window, period), (req, nb) in pending.items():
            for _attempt in range(3):
                try:
                    with self.lake.catalog.session() as s:
                        row = s.scalar(select(Usage).where(Usage.user_name == user, Usage.window_start == window)
                                       .with_for_update())
                        if row is None:
                            row = Usage(user_name=user, window_start=window, period_s=period, requests=0, bytes=0)
                            s.add(row)
                        row.requests = (row.requests or 0) + req
                        row.bytes = (row.bytes or 0) + nb
                        s.flush()
                        totals = (row.requests, row.bytes)
                    with self._lock:
                        self._base[(user, window)] = totals
                        self._written((user, window, period), (req, nb))
                    break
                except IntegrityError:  # another process inserted the row first: retry as an update
                    continue
            else:
                with self._lock:
                    self._written((user, window, period), (req, nb))
        # forget old windows
        now = time.time()
        for key in [k for k in self._base if k[1] < now - 2 * 86400 * 31]:
            self._base.pop(key, None)

    def _written(self, key: tuple[str, int, int], counts) -> None:
        """Forget ``counts`` of ``key`` from the counts being flushed (caller holds the lock)."""
        c = self._flushing.get(key)
        if c is None:
            return
        c[0] -= counts[0]
        c[1] -= counts[1]
        if not c[0] and not c[1]:
            del self._flushing[key]

    def _flush_upsert(self, pending: dict[tuple[str, int, int], list[int]]) -> None:
        """PostgreSQL: add the pending counts with one atomic upsert per (user, window)."""
        t = Usage.__table__
        with self.lake.catalog.engine.begin() as conn:
            for (user, window, period), (req, nb) in sorted(pending.items()):
                if not req and not nb:
                    continue
                stmt = (pg_insert(t).values(user_name=user, window_start=window, period_s=period,
                                            requests=max(req, 0), bytes=nb)
                        .on_conflict_do_update(constraint="uq_access_usage_user_name",
                                               set_={"requests": t.c.requests + req, "bytes": t.c.bytes + nb}))
                conn.execute(stmt)
