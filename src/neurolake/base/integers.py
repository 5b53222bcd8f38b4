"""Whole numbers given by users (ids, versions, counts), checked before they reach the catalog database or
numpy: a Python int has no bound, SQLite and PostgreSQL integers are signed 64-bit, segment ids uint64.

``whole(value, field, lo=0, hi=INT64_MAX)`` is THE check: ints (not bools) and strings of ASCII digits
(optional leading minus) within ``[lo, hi]``; anything else raises
:class:`~neurolake.errors.InvalidArgument` naming ``field``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument

INT64_MAX = 2**63 - 1  # the largest value a catalog (SQLite / PostgreSQL BIGINT) column holds
UINT64_MAX = 2**64 - 1  # the largest segment / supervoxel / root id
_DIGITS = re.compile(r"-?[0-9]{1,20}")  # ASCII only: int() also takes "١٢", "1_0" and " 7 "


def whole(value: Any, field: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    """``value`` as an int within ``[lo, hi]`` (defaults: 0 .. 2**63 - 1). Accepts ints and numpy integers
    (not bools), integral floats below 2**53 and strings of ASCII digits with an optional leading minus.
    Raises InvalidArgument naming ``field``, the value and the allowed range."""
    v: int | None = None
    if isinstance(value, bool | np.bool_):
        v = None
    elif isinstance(value, int | np.integer):
        v = int(value)
    elif isinstance(value, float | np.floating) and float(value).is_integer() and abs(value) < 2**53:
        v = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        v = int(value)
    if v is None or not lo <= v <= hi:
        raise InvalidArgument(f"{field} must be a whole number from {lo} to {hi}, got {str(value)[:80]!r}",
                              field=field, value=str(value)[:100], allowed=[lo, hi])
    return v
