"""Reading annotation rows from files in batches: CSV/TSV (optionally gzipped), Parquet, Arrow IPC.

Readers are pyarrow's (``pyarrow.csv.open_csv``, ``pyarrow.parquet.ParquetFile``,
``pyarrow.ipc``): they stream record batches, so files larger than memory load in constant memory.
A truncated or unreadable file raises :class:`CorruptData` naming the file (a CSV cut in the
middle of a row is caught; one cut exactly at a line end is a valid, shorter CSV).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from neurolake.errors import CorruptData, InvalidArgument, NotFound

FORMATS = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".pq", ".arrow", ".feather", ".ipc")


def file_format(path: Path) -> str:
    name = path.name.lower()
    for ext in FORMATS:
        if name.endswith(ext):
            return {"pq": "parquet", "feather": "arrow", "ipc": "arrow"}.get(ext.split(".")[1], ext.split(".")[1])
    raise InvalidArgument(f"file {path.name!r} has an unknown format; use one of {', '.join(FORMATS)}",
                          field="file", value=str(path), allowed=list(FORMATS))


def read_batches(path: str | Path, batch_rows: int = 1_000_000,
                 rename: dict[str, str] | None = None) -> Iterator[pa.Table]:
    """Yield Arrow tables of up to ``batch_rows`` rows from ``path``, columns renamed by ``rename``.

    Raises NotFound (missing file), InvalidArgument (unknown format), CorruptData (unreadable or
    truncated file; the message names the file and the reader's complaint).
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"file {str(p)!r} does not exist", file=str(p))
    fmt = file_format(p)
    rename = rename or {}

    def out(t: pa.Table) -> pa.Table:
        return t.rename_columns([rename.get(c, c) for c in t.column_names]) if rename else t

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            f = pq.ParquetFile(p)
            for b in f.iter_batches(batch_size=batch_rows):
                yield out(pa.Table.from_batches([b]))
        elif fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")
            reader = pcsv.open_csv(p, read_options=pcsv.ReadOptions(block_size=64 << 20), parse_options=parse,
                                   convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
            buf: list[pa.RecordBatch] = []
            n = 0
            for b in reader:
                buf.append(b)
                n += b.num_rows
                while n >= batch_rows:
                    whole = pa.Table.from_batches(buf)
                    yield out(whole.slice(0, batch_rows))
                    rest = whole.slice(batch_rows)
                    buf, n = rest.to_batches(), rest.num_rows
            if n:
                yield out(pa.Table.from_batches(buf))
        else:
            with pa.memory_map(str(p)) as src:
                try:
                    reader = pa.ipc.open_file(src)
                    for i in range(reader.num_record_batches):
                        yield out(pa.Table.from_batches([reader.get_batch(i)]))
                except pa.ArrowInvalid:
                    src.seek(0)
                    for b in pa.ipc.open_stream(src):
                        yield out(pa.Table.from_batches([b]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError) as exc:
        raise CorruptData(f"file {p.name!r} cannot be read as {fmt} (truncated or corrupt?): {exc}",
                          file=str(p), format=fmt) from None
