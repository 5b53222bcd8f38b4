"""A buffered (write-behind) writer: rows collect in memory, each flush is one Delta commit.

As NeuroData's annotation cache did for OCP, many small writes are batched into few large ones.
Each added batch is validated (and its supervoxels looked up) when it is added, so a bad batch is
refused at once with a message naming its rows, and never reaches the table. A crash loses at most
the unflushed buffer: committed flushes are complete Delta versions, and a half-written flush leaves
only unreferenced Parquet files (never a corrupt table).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


class BufferedWriter:
    """``with table.writer(flush_rows=100_000) as w: w.add(rows)``; ``w.ids`` are the committed ids.

    ``add`` accepts what :meth:`Table.append` accepts. ``flush()`` commits the buffer as one Delta
    version (automatic when ``flush_rows`` rows are buffered and on leaving the ``with`` block without
    an exception; on an exception the unflushed buffer is dropped).
    """

    def __init__(self, table: Any, flush_rows: int = 100_000, author: str | None = None, bind: bool = True) -> None:
        from neurolake.provenance import current_user

        self.table = table
        self.flush_rows = max(1, int(flush_rows))
        self.author = author or current_user()
        self.bind = bind
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._ids: list[np.ndarray] = []
        self.flushes = 0

    @property
    def buffered(self) -> int:
        """Rows added but not yet committed."""
        return self._buffered

    @property
    def ids(self) -> np.ndarray:
        """Ids (uint64) of every committed row, in commit order."""
        return np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.uint64)

    def add(self, rows: Any) -> int:
        """Validate and buffer a batch; flush when ``flush_rows`` are buffered. Returns rows buffered."""
        tab = self.table.prepare(rows, author=self.author, bind=self.bind)
        if len(tab):
            self._buffer.append(tab)
            self._buffered += len(tab)
        if self._buffered >= self.flush_rows:
            self.flush()
        return self._buffered

    def flush(self) -> np.ndarray:
        """Commit the buffer as one Delta version; returns the new ids (uint64)."""
        if not self._buffer:
            return np.zeros(0, dtype=np.uint64)
        data = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        ids = self.table.append_prepared(data)
        self._ids.append(ids)
        self.flushes += 1
        return ids

    def __enter__(self) -> BufferedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._buffer, self._buffered = [], 0
