"""Quotas: requests and bytes served per user per period, counted in fixed windows.

A window of ``period_s`` seconds starts at a multiple of ``period_s`` since the Unix epoch; counters
reset when the next window starts (``reset`` in answers). Limits per user come from the user's row
(``access_users.quota_*``) or, when unset there, from the environment: ``NEUROLAKE_QUOTA_BYTES``
(bytes served per window, default 0 = unlimited), ``NEUROLAKE_QUOTA_REQUESTS`` (requests per window,
default 0 = unlimited), ``NEUROLAKE_QUOTA_PERIOD`` (seconds, default 86400).

Counting is write-behind: each server process adds to in-memory counters and flushes them to the
catalog (``access_usage``) at most every ``flush_interval`` seconds (and on :meth:`Quotas.flush`), so a
request costs no database write. With several processes sharing one catalog a user may overshoot a
limit by what the other processes served since their last flush. A request is refused (429,
:class:`~neurolake.errors.QuotaExceeded`) once the window's usage has reached a limit; the response
that crosses a byte limit is still completed (a response's size is known only once it is sent).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from sqlalchemy import select
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
        self._base: dict[tuple[str, int], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

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

    def usage(self, p: Principal) -> dict[str, Any]:
        """Usage of the current window: ``{user, period_s, window_start, reset, requests, bytes, limits}``."""
        lim = self.limits(p)
        period = lim["period_s"]
        window = self._window(period)
        base = self._load_base(p.name, window)
        with self._lock:
            pend = self._pending.get((p.name, window, period), [0, 0])
        reset = window + period
        return {"user": p.name, "period_s": period,
                "window_start": dt.datetime.fromtimestamp(window, dt.UTC).isoformat(),
                "reset": dt.datetime.fromtimestamp(reset, dt.UTC).isoformat(),
                "reset_in_s": round(reset - time.time(), 3),
                "requests": base[0] + pend[0], "bytes": base[1] + pend[1],
                "limits": {"bytes": lim["bytes"] or None, "requests": lim["requests"] or None}}

    def check(self, p: Principal) -> None:
        """Raise QuotaExceeded (429) when the user's current window has reached a limit."""
        lim = self.limits(p)
        if not lim["bytes"] and not lim["requests"]:
            return
        u = self.usage(p)
        for what in ("requests", "bytes"):
            limit = lim[what]
            if limit and u[what] >= limit:
                raise QuotaExceeded(
                    f"quota exceeded: user {p.name!r} used {u[what]} {what} of {limit} allowed per "
                    f"{lim['period_s']} s; the window resets at {u['reset']}",
                    user=p.name, quota=what, limit=limit, usage=u[what], period_s=lim["period_s"],
                    reset=u["reset"], retry_after_s=max(1, int(u["reset_in_s"] + 0.999)))

    def add(self, p: Principal, requests: int = 0, nbytes: int = 0, flush: bool = True) -> bool:
        """Count ``requests`` and ``nbytes`` served to ``p`` in the current window. Returns whether a
        flush is due; with ``flush=False`` the caller runs :meth:`flush` (e.g. off the event loop)."""
        period = self.limits(p)["period_s"]
        key = (p.name, self._window(period), period)
        with self._lock:
            c = self._pending.setdefault(key, [0, 0])
            c[0] += requests
            c[1] += nbytes
            due = time.monotonic() - self._last_flush >= self.flush_interval
        if due and flush:
            self.flush()
        return due

    def needs_io(self, p: Principal) -> bool:
        """Whether :meth:`check` may touch the catalog (limits set and the window's base not loaded)."""
        lim = self.limits(p)
        if not lim["bytes"] and not lim["requests"]:
            return False
        return (p.name, self._window(lim["period_s"])) not in self._base

    def flush(self) -> None:
        """Write pending counters to the catalog and refresh the cached totals."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not pending:
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
                        self._base[(user, window)] = (row.requests, row.bytes)
                    break
                except IntegrityError:  # another process inserted the row first: retry as an update
                    continue
        # forget old windows
        now = time.time()
        for key in [k for k in self._base if k[1] < now - 2 * 86400 * 31]:
            self._base.pop(key, None)
