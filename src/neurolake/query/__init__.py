"""SQL across the whole lake with provenance on every result (docs/query.md).

- :func:`run` (``lake.sql``): one SELECT over annotation tables, materialization versions, the edit
  log, connectome edges and registered feature tables, named ``datastack.table``,
  ``datastack.vN.table``, ``features.name`` (:mod:`neurolake.query.names`); returns a
  :class:`~neurolake.query.engine.QueryResult` with its OpenLineage ``manifest``;
- :func:`explain` (``lake.explain``): the plan, estimated rows/bytes, runtime class and layout advice
  before running (:mod:`neurolake.query.profile`);
- :func:`reproduce` (``lake.reproduce``): re-run a recorded run with its pinned inputs and compare.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QueryResult", "explain", "reproduce", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "QueryResult", "prepare"):
        from neurolake.query import engine

        return getattr(engine, name)
    if name in ("reproduce", "explain"):
        from neurolake.query import replay as mod

        return getattr(mod, name)
    raise AttributeError(name)
