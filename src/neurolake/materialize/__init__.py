"""Materialization versions: annotation tables bound to root ids at a timestamp, frozen and queryable.

Public face::

    from neurolake.materialize import materialize, versions, get_version, expire, query_version, live_query
    v = materialize(lake, "ds", timestamp=None)        # {"version": 1, "timestamp": ..., "valid": True, ...}
    df = query_version(lake, "ds", 1, "synapses", filter_in={"pre_pt_root_id": [r]})
    df = live_query(lake, "ds", "synapses", timestamp=t)

See ``docs/proofreading.md`` (section Materialization).
"""

from neurolake.materialize.versions import (
    VersionExpired,
    bind_roots,
    expire,
    filter_expression,
    get_version,
    live_query,
    materialize,
    query_version,
    version_tables,
    versions,
)

__all__ = ["VersionExpired", "bind_roots", "expire", "filter_expression", "get_version", "live_query",
           "materialize", "query_version", "version_tables", "versions"]
