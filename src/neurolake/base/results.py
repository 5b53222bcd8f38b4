"""One result type for every table read: annotation queries, version and live queries, connectome tables.

Modelled on DuckDB's relation: a :class:`Result` holds an Arrow table and hands it over as the library the
caller wants (``.df()``, ``.arrow()``, ``.pl()``), with the metadata a caveclient user finds in
``df.attrs`` (datastack, table, materialization version, timestamp, filters) kept on the result and
copied into ``df.attrs`` / the Arrow schema's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class Result:
    """Rows of one table read.

    - ``arrow()``: the :class:`pyarrow.Table` (segment and annotation ids as ``uint64``);
    - ``df()``: a :class:`pandas.DataFrame` (uint64 ids as pandas' nullable ``UInt64``), metadata in
      ``df.attrs``;
    - ``pl()``: a :class:`polars.DataFrame`;
    - ``metadata``: ``{"datastack", "table", "version", "timestamp", "filters", …}`` (what was read, at
      which version or time, with which conditions; keys that do not apply are absent);
    - ``len(result)``, ``result.columns``, ``result.num_rows``.
    """

    __slots__ = ("_arrow", "metadata")

    def __init__(self, table: Any, metadata: dict[str, Any] | None = None) -> None:
        import pyarrow as pa

        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False) if hasattr(table, "iloc") \
                else pa.table(table)
        self._arrow = table
        self.metadata = {k: v for k, v in (metadata or {}).items() if v is not None}

    def arrow(self):
        """The rows as a :class:`pyarrow.Table`; ``metadata`` is in its schema metadata under ``neurolake``."""
        meta = dict(self._arrow.schema.metadata or {})
        meta[b"neurolake"] = json.dumps(self.metadata, default=str).encode()
        return self._arrow.replace_schema_metadata(meta)

    def df(self):
        """The rows as a :class:`pandas.DataFrame` (uint64 columns as ``UInt64``), ``metadata`` in ``.attrs``."""
        import pandas as pd
        import pyarrow as pa

        out = self._arrow.to_pandas(types_mapper={pa.uint64(): pd.UInt64Dtype()}.get)
        out.attrs.update(self.metadata)
        return out

    def pl(self):
        """The rows as a :class:`polars.DataFrame`."""
        import polars as pl

        return pl.from_arrow(self._arrow)

    @property
    def columns(self) -> list[str]:
        return list(self._arrow.column_names)

    @property
    def num_rows(self) -> int:
        return self._arrow.num_rows

    def __len__(self) -> int:
        return self._arrow.num_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts (small results; use ``arrow()`` for large ones)."""
        return iter(self._arrow.to_pylist())

    def __repr__(self) -> str:
        what = ", ".join(f"{k}={v!r}" for k, v in self.metadata.items() if k in ("datastack", "table", "version"))
        return f"<Result {self.num_rows} rows × {len(self.columns)} columns{(' ' + what) if what else ''}>"
