"""Whole numbers given by users (and the URL / command-line text forms of ids, ranges and counts) (ids, versions, counts), checked before they reach the catalog database or
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


# -- numbers written in URLs and on the command line ----------------------------------------------
INT64 = 2**63  # ids, coordinates and counts of the URL must fit the database's signed 64-bit integers
_INT = re.compile(r"-?[0-9]+")  # ASCII digits only: no "١٢" (Arabic-Indic), "1_0", " 0", "+1", "0x10"
_UINT = re.compile(r"[0-9]+")


def strict_int(text: str, negative: bool = False, bound: int = INT64) -> int | None:
    """The integer of ``text`` written in ASCII digits (with one leading ``-`` when ``negative``) and within
    ``(-bound, bound)``; None otherwise. Python's ``int()`` also takes other Unicode digits, underscores and
    surrounding spaces, which no URL grammar of the server allows."""
    if not isinstance(text, str) or not (_INT if negative else _UINT).fullmatch(text) or len(text) > 40:
        return None
    v = int(text)
    return v if -bound < v < bound else None


def parse_range(axis: str, text: str, negative: bool = True) -> tuple[int, int]:
    """Parse ``"start,stop"`` (OCP) or ``"start:stop"`` (BossDB) into ints (ASCII digits, optional leading
    minus, within int64); InvalidArgument (400) naming ``axis`` on anything else."""
    sep = "," if "," in text else ":"
    parts = text.split(sep)
    vals = [strict_int(p, negative) for p in parts] if len(parts) == 2 else [None]
    if None in vals:
        raise InvalidArgument(f"{axis} range {text!r} is malformed; write it as start{sep}stop in voxels "
                              f"(ASCII digits), e.g. 0{sep}512", field=axis, value=text)
    return vals[0], vals[1]


def parse_int(name: str, text: str, negative: bool = False) -> int:
    """``text`` as a whole number (ASCII digits, a leading minus only when ``negative``, within int64);
    InvalidArgument (400) naming ``name`` otherwise."""
    v = strict_int(text, negative)
    if v is None:
        sign = "" if negative else "non-negative "
        raise InvalidArgument(f"{name} {text!r} must be a {sign}whole number in ASCII digits below 2**63",
                              field=name, value=text)
    return v


_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def parse_ids(name: str, text: str, bound: int = 2**64) -> list[int]:
    """Comma-separated non-negative ids (ASCII digits, no spaces, each below ``bound``: uint64 by default),
    empty items skipped; InvalidArgument (400) naming ``name`` otherwise."""
    out = []
    for part in text.split(","):
        if part == "":
            continue
        v = strict_int(part, bound=bound)
        if v is None:
            raise InvalidArgument(f"{name} {text!r} must be comma-separated ids in ASCII digits below {bound}"[:300],
                                  field=name, value=text[:100])
        out.append(v)
    return out


def parse_numbers(name: str, text: str) -> list[float]:
    """Comma-separated finite decimal numbers in ASCII (``-1.5``, ``2e3``); InvalidArgument naming ``name``."""
    parts = [p for p in text.split(",") if p]
    if not all(_NUMBER.fullmatch(p) for p in parts) or not all(abs(float(p)) < 1e300 for p in parts):
        raise InvalidArgument(f"{name} {text!r} must be comma-separated numbers (ASCII digits)"[:300], field=name,
                              value=text[:100])
    return [float(p) for p in parts]
