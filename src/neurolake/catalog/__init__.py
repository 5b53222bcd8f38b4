"""Feature-table registry: external Parquet / Delta / Iceberg / Lance tables described in the catalog.

Public face (through the lake; a server builds ``FeatureRegistry(lake, principal)`` per request)::

    from neurolake.catalog import crawl
    reg = lake.features                               # the local user, every right
    reg.register(name="cell_types", datastack="hemibrain", location="/data/ct.parquet", tags=["cells"])
    reg.search(tag="cells", column="bodyId")
    reg.set_status("cell_types", "published")
    reg.signed_urls("cell_types", expires_in_s=600)   # temporary HTTP URLs for DuckDB / Polars
    crawl(lake, "/data/features", datastack="hemibrain")  # register every table found as drafts
"""

from neurolake.catalog.crawler import crawl, find_tables
from neurolake.catalog.formats import FORMATS, detect_format, inspect
from neurolake.catalog.registry import FIELDS, STATUSES, TRANSITIONS, FeatureRegistry

__all__ = ["FIELDS", "FORMATS", "STATUSES", "TRANSITIONS", "FeatureRegistry", "crawl", "detect_format", "find_tables",
           "inspect"]
