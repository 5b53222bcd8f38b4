"""One way to give a box: ``bbox=[[x0, y0, z0], [x1, y1, z1]]`` or ranges ``x=(x0, x1), y=…, z=…``.

Every API that filters positions (annotation queries, version queries) accepts either form, as
CloudVolume's and caveclient's users write them. Ranges are half-open; an axis given no range is
unbounded in the range form.
"""

from __future__ import annotations

import math
from typing import Any

from neurolake.errors import InvalidArgument

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


def _pair(axis: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{axis} must be a range (start, stop), got {value!r}", field=axis,
                              value=repr(value)[:200]) from None
    return lo, hi


def bounding_box(bbox: Any = None, *, x: Any = None, y: Any = None, z: Any = None) -> Box | None:
    """``((x0, y0, z0), (x1, y1, z1))`` from ``bbox`` (``[[x0, y0, z0], [x1, y1, z1]]`` or
    ``{"x": (x0, x1), "y": …, "z": …}``) or from the ranges ``x``, ``y``, ``z``; ``None`` when none is given.

    Omitted axes of the range form are unbounded (±inf). Raises InvalidArgument when both forms are given,
    a range is malformed, empty or inverted (x0 < x1 needed), or a bound is NaN.
    """
    ranges = {"x": x, "y": y, "z": z}
    if bbox is not None and any(v is not None for v in ranges.values()):
        raise InvalidArgument("give either bbox or x/y/z ranges, not both", field="bbox")
    if isinstance(bbox, dict):
        unknown = set(bbox) - set("xyz")
        if unknown:
            raise InvalidArgument(f"bbox keys must be x, y, z; got {sorted(unknown)}", field="bbox")
        ranges, bbox = {k: bbox.get(k) for k in "xyz"}, None
    if bbox is not None:
        try:
            lo, hi = (tuple(float(v) for v in corner) for corner in bbox)
            if len(lo) != 3 or len(hi) != 3:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidArgument(f"bbox must be [[x0, y0, z0], [x1, y1, z1]], got {bbox!r}", field="bbox",
                                  value=repr(bbox)[:200]) from None
    elif all(v is None for v in ranges.values()):
        return None
    else:
        pairs = [(-math.inf, math.inf) if v is None else _pair(k, v) for k, v in ranges.items()]
        lo, hi = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    if any(math.isnan(v) for v in lo + hi) or any(b <= a for a, b in zip(lo, hi, strict=True)):
        raise InvalidArgument(f"bbox {list(lo)}–{list(hi)} is empty, inverted or not a number "
                              "(need x0 < x1, y0 < y1, z0 < z1)", field="bbox", value=repr([lo, hi]))
    return lo, hi  # type: ignore[return-value]
