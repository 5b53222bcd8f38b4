"""Walking JSON-like trees (dicts and lists), e.g. DuckDB's parse tree from ``json_serialize_sql``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk(node: Any) -> Iterator[dict]:
    """Every dict in ``node`` (a dict/list tree), depth first, ``node`` itself first when it is a dict."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)
