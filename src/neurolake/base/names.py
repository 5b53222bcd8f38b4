"""Names of datastacks, layers and tables, and the one builder of "unknown …; known: …" errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from neurolake.errors import InvalidArgument, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_name(kind: str, name: Any) -> str:
    """``name`` if it is a valid name of a ``kind`` (datastack, layer, table …; used in URLs and paths):
    1-128 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit. Raises InvalidArgument."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(f"{kind} name {name!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit", field=kind, value=repr(name)[:200])
    return name


def not_found(kind: str, name: Any, known: Iterable[Any] = (), *, within: tuple[str, str] | None = None,
              hint: str = "", **detail: Any) -> NotFound:
    """The NotFound error for an unknown ``kind`` called ``name``:
    ``unknown table 'x' in datastack 'y'; known: a, b, c`` (``within=("datastack", "y")``).

    ``known`` lists the names that do exist (at most 20 are shown); ``hint`` is appended as a sentence.
    ``detail`` goes into the error's detail with ``{kind: name}`` and ``{within[0]: within[1]}``.
    The arguments are kept on the error as ``.known`` (:class:`KnownNames`) so that a server can rebuild
    the message with only the names its requester may see (``neurolake.server.errors.public_error``).
    """
    names = [str(k) for k in known]
    where = f" in {within[0]} {within[1]!r}" if within else ""
    shown = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
    msg = f"unknown {kind} {name!r}{where}; known: {shown or 'none'}"
    if hint:
        msg += f"; {hint}"
    extra = {kind.replace(" ", "_"): name, **({within[0]: within[1]} if within else {}), **detail}
    exc = NotFound(msg, **extra)
    exc.known = KnownNames(kind, name, tuple(names), within, hint, detail)
    return exc


@dataclass(frozen=True)
class KnownNames:
    """The arguments of one :func:`not_found` call (``NotFound.known``): rebuild the error with fewer
    names as ``not_found(k.kind, k.name, visible, within=k.within, hint=k.hint, **k.detail)``."""

    kind: str
    name: Any
    names: tuple[str, ...]
    within: tuple[str, str] | None
    hint: str
    detail: dict[str, Any]
