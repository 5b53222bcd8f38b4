"""The one timestamp parser of neurolake.

Every API that takes a time (``timestamp=`` of root ids and live queries, history reads of annotation
tables, ``since``/``until`` of the edit log, registry times, HTTP query parameters) accepts the same
forms and answers the same error.
"""

from __future__ import annotations

import datetime as dt
import numbers
from typing import Any

from neurolake.errors import InvalidArgument


def parse_timestamp(value: Any, field: str = "timestamp") -> dt.datetime | None:
    """A timezone-aware UTC datetime from ``value``; ``None`` and ``""`` give ``None``.

    Accepted: a :class:`datetime.datetime` (naive means UTC), a :class:`datetime.date` (midnight UTC),
    seconds since the Unix epoch (int/float/numpy numbers or their decimal text) and ISO 8601 text
    (``2026-11-21T10:00:00Z``, ``2026-11-21 10:00:00+01:00``; :meth:`datetime.fromisoformat` rules).
    Raises :class:`~neurolake.errors.InvalidArgument` naming ``field`` for anything else (booleans,
    non-finite numbers, malformed text).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        return parse_timestamp(value.to_pydatetime(), field)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif isinstance(value, str):
        text = value.strip()
        if _is_decimal(text):
            return parse_timestamp(float(text), field)
        try:
            return parse_timestamp(dt.datetime.fromisoformat(text.replace("Z", "+00:00")), field)
        except ValueError:
            pass
    raise InvalidArgument(f"{field} {value!r} is not a time; give ISO 8601 text (e.g. 2026-11-21T10:00:00Z), "
                          "seconds since the epoch or a datetime", field=field, value=repr(value)[:200])


def _is_decimal(text: str) -> bool:
    """ASCII digits with an optional sign and one decimal point (no ``1_0``, no non-ASCII digits)."""
    body = text[1:] if text[:1] in "+-" else text
    whole, _, frac = body.partition(".")
    return bool(whole or frac) and all(p.isascii() and (p.isdigit() or p == "") for p in (whole, frac))


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO 8601 text of a UTC time (naive = UTC), or ``None``."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


def parse_wall_clock(text: str, formats: tuple[str, ...]) -> dt.datetime | None:
    """A naive local (wall-clock) time from an instrument's export in one of ``formats`` (``strptime``
    patterns, tried in order), e.g. Axion AxIS ``"8/17/2015 4:12:33 PM"``; None when none matches. The time
    zone is unknown (the acquisition computer's); callers store it as recorded."""
    for fmt in formats:
        try:
            return dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None
