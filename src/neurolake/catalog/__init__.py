"""Feature-table registry: external Parquet / Delta / Iceberg / Lance tables described in the catalog.

Public face::

    from neurolake.catalog import FeatureRegistry, crawl
    reg = FeatureRegistry(lake)                       # the local user; pass principal= in a server
    reg.register(name="cell_types", datastack="hemibrain", location="/data/ct.parquet", tags=["cells"])
    reg.search(tag="cells", column="bodyId")
    reg.set_status("cell_types", "published")
    reg.signed_urls("cell_types", expires_in_s=600)   # temporary HTTP URLs for DuckDB / Polars
    crawl(lake, "/data/features", datastack="hemibrain")  # register every table found as drafts
"""

from neurolake.catalog.crawler import crawl, find_tables
from neurolake.catalog.formats import FORMATS, detect_format, inspect
from neurolake.catalog.registry import FIELDS, STATUSES, TRANSITIONS, FeatureRegistry, registry

__all__ = ["FIELDS", "FORMATS", "STATUSES", "TRANSITIONS", "FeatureRegistry", "crawl", "detect_format", "find_tables",
           "inspect", "registry"]
