"""The manifest of a query run (an OpenLineage RunEvent) and the SHA-256 of its result rows.

Two things a query result carries so it can be checked next year (docs/query.md, "The manifest"):

- :func:`result_sha256` / :func:`hash_result` / :func:`block_hashes`: a SHA-256 over a canonical
  serialisation of the result rows in their order (format ``neurolake-result-hash/1``, defined below).
  It depends only on the column names, the columns' canonical types and the values; not on how the
  table is chunked, on schema or field metadata, on nullability flags, on ``string`` vs
  ``large_string`` or dictionary encoding. Per-block digests (65,536 rows a block) come from the same
  pass, so a re-run can name the first differing block without the original rows.
- :func:`build_event`: the OpenLineage RunEvent (a JSON-able dict, as ``openlineage-python``'s
  ``Serde.to_dict`` writes it) of one run dict (the engine's run record), with the standard facets
  ``sql``, ``jobType``, ``processing_engine``, per input ``version`` (:func:`pin_string`) and
  ``schema``, on the output ``outputStatistics`` and ``schema``, and the custom run facet ``neurolake``
  holding the whole run record (every input with its full pin, params, code version, hashes …).
  :func:`validate_event` checks an event against the OpenLineage JSON schemas shipped in
  ``neurolake/query/schemas/`` (copied from the OpenLineage spec, Apache-2.0; see the README there)
  and against our own schema of the ``neurolake`` facet.

The result hash, format ``neurolake-result-hash/1`` (all integers unsigned 64-bit little-endian, ``u64``;
``H`` = SHA-256; ``B`` = 65,536 rows per block; ``N`` rows; columns in table order)::

    header      = b"neurolake-result-hash/1\\n" + u64(N) + u64(B) + u64(number of columns)
                  + for each column: u64(len(name)) + name + u64(len(type)) + type   (both UTF-8)
    block[b]    = H( H(stream(column 0, rows b*B .. min((b+1)*B, N)))
                   + H(stream(column 1, same rows)) + … )          # b = 0 .. ceil(N/B)-1
    result_sha256 = hex( H(header + block[0] + block[1] + …) )      # block hashes = hex(block[b])

``type`` is the canonical type string (:func:`canonical_type`): pyarrow's ``str(type)`` (``int64``,
``uint64``, ``double``, ``float``, ``halffloat``, ``bool``, ``timestamp[us, tz=UTC]``, ``date32[day]``,
``time64[us]``, ``duration[ns]``, ``decimal128(38, 0)``, ``fixed_size_binary[16]``,
``month_day_nano_interval``, ``null``), except: ``string``/``large_string``/``string_view`` → ``string``;
``binary``/``large_binary``/``binary_view`` → ``binary``; a dictionary → its value type; lists of any
kind → ``list<T>`` (``fixed_size_list<T>[n]``); ``map<K, V>``; ``struct<name: T, …>``; an extension
type → ``extension<name: T>`` of its storage type T.

``stream(column slice of n rows)`` is a validity section followed by a values section:

- validity: the byte ``00`` when the slice has no nulls, else ``01`` then n bytes (``01`` valid,
  ``00`` null);
- values, by type (a null row contributes zeros / an empty value):
  - ``null``: nothing;
  - ``bool``: n bytes ``00``/``01``;
  - fixed width (integers, floats, dates, times, timestamps, durations, decimals, intervals,
    fixed-size binary): n values of the type's width, little-endian, as Arrow stores them (a
    timestamp is its int64 count of its unit; a decimal128 its 16-byte two's-complement integer);
    null rows all zero bytes; floats with every NaN written as the canonical quiet NaN
    (``7e00`` / ``7fc00000`` / ``7ff8000000000000``) and ``-0.0`` written as ``+0.0``;
  - string, binary: n ``u64`` byte lengths, then the n values' bytes concatenated (UTF-8 for strings);
  - lists (and maps, as lists of ``struct<key, value>``): n ``u64`` lengths (null → 0), then the
    ``stream`` of the child values of the non-null rows, concatenated in order;
  - struct: the ``stream`` of each field in order, where a row that is null in the struct counts as
    null in every field;
  - anything else (unions, run-end encoded): for each row, ``u64(len(j)) + j`` with ``j`` the UTF-8
    ``json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)`` of the row's Python value
    (a fallback tied to pyarrow's ``to_pylist``; no query of ours produces these types).

Sources: the OpenLineage object model and JSON schemas (https://openlineage.io/spec/2-0-2/OpenLineage.json
and ``spec/facets/*.json`` of github.com/OpenLineage/OpenLineage); the Arrow columnar format
(https://arrow.apache.org/docs/format/Columnar.html) for the buffer layouts read here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import struct
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurolake.errors import InvalidArgument

HASH_FORMAT = "neurolake-result-hash/1"
BLOCK_ROWS = 65536
"""Rows per block of the result hash (part of the format: the final hash uses this block size)."""

PRODUCER_BASE = "https://github.com/neurolake/neurolake"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
NEUROLAKE_FACET_SCHEMA_URL = ("https://raw.githubusercontent.com/neurolake/neurolake/main/src/neurolake/query/"
                              "schemas/NeurolakeRunFacet-1-0-0.json#/$defs/NeurolakeRunFacet")
"""``_schemaURL`` of the custom ``neurolake`` run facet; the schema ships in ``schemas/``."""

EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
RUN_EVENT_REF = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"

# --------------------------------------------------------------------------------------------------------
# result hash
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultHash:
    """The result hash of a table: ``sha256`` (hex), ``blocks`` (hex digest per block of ``block_rows``
    rows, in order), ``rows``, ``block_rows``, ``format`` (``neurolake-result-hash/1``)."""

    sha256: str
    blocks: tuple[str, ...]
    rows: int
    block_rows: int
    format: str = HASH_FORMAT
    sha256_float12: str | None = None  # with ``float12=True``: the hash of :func:`round_floats` (table)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def canonical_type(t) -> str:
    """The canonical type string of a pyarrow type used in the hash header (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_dictionary(t):
        return canonical_type(t.value_type)
    if isinstance(t, pa.BaseExtensionType):
        return f"extension<{t.extension_name}: {canonical_type(t.storage_type)}>"
    if pt.is_string(t) or pt.is_large_string(t) or pt.is_string_view(t):
        return "string"
    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_binary_view(t):
        return "binary"
    if pt.is_map(t):
        return f"map<{canonical_type(t.key_type)}, {canonical_type(t.item_type)}>"
    if pt.is_fixed_size_list(t):
        return f"fixed_size_list<{canonical_type(t.value_type)}>[{t.list_size}]"
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_list_view(t) or pt.is_large_list_view(t):
        return f"list<{canonical_type(t.value_type)}>"
    if pt.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {canonical_type(t.field(i).type)}"
                                     for i in range(t.num_fields)) + ">"
    return str(t)


def _normalise(arr):
    """Decode dictionaries, unwrap extensions, turn view layouts into offset layouts."""
    import pyarrow as pa
    import pyarrow.types as pt

    t = arr.type
    if pt.is_dictionary(t):
        return _normalise(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return _normalise(arr.storage)
    if pt.is_string_view(t):
        return arr.cast(pa.large_string())
    if pt.is_binary_view(t):
        return arr.cast(pa.large_binary())
    if pt.is_list_view(t) or pt.is_large_list_view(t):
        return arr.cast(pa.large_list(t.value_field))
    if pt.is_map(t):
        return arr.cast(pa.list_(pa.struct([t.key_field, t.item_field])))
    return arr


_FLOAT_NAN = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}


def _fixed_width_bytes(arr, valid, w: int, is_float: bool):
    """The n little-endian values of a fixed-width array (nulls zeroed, floats canonical) as bytes-like."""
    import numpy as np
    import pyarrow.types as pt

    n = len(arr)
    buf = arr.buffers()[1]
    raw = np.frombuffer(buf, dtype=np.uint8, count=n * w, offset=arr.offset * w) if n else np.empty(0, np.uint8)
    if sys.byteorder != "little":  # Arrow stores native order; the format is little-endian
        if w in (2, 4, 8) and not pt.is_interval(arr.type):
            raw = raw.view(f"=u{w}").astype(f"<u{w}").view(np.uint8)
        elif pt.is_decimal(arr.type):
            raw = np.ascontiguousarray(raw.reshape(n, w)[:, ::-1]).reshape(-1)
        elif pt.is_interval(arr.type):  # month_day_nano: int32, int32, int64
            rec = raw.view([("m", "=i4"), ("d", "=i4"), ("ns", "=i8")])
            raw = rec.astype([("m", "<i4"), ("d", "<i4"), ("ns", "<i8")]).view(np.uint8)
    if is_float:
        f = raw.view(f"<f{w}")
        nan = np.isnan(f)
        neg_zero = (f == 0) & np.signbit(f)
        if nan.any() or neg_zero.any():
            g = f.copy()
            g[neg_zero] = 0.0
            g.view(f"<u{w}")[nan] = _FLOAT_NAN[w]
            raw = g.view(np.uint8)
    if valid is not None:  # zero the null rows (one vectorised pass)
        if w in (1, 2, 4, 8):
            raw = np.where(valid, raw.view(f"<u{w}"), 0).astype(f"<u{w}", copy=False).view(np.uint8)
        else:
            raw = (raw.reshape(n, w) * valid[:, None]).astype(np.uint8, copy=False).reshape(-1)
    return raw


def _json_row(v: Any) -> bytes:
    j = json.dumps(v, sort_keys=True, separators=(",", ":"), default=str).encode()
    return _u64(len(j)) + j


def _feed(h, arr) -> None:
    """Update hash ``h`` with ``stream(arr)`` (module docstring)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.types as pt

    arr = _normalise(arr)
    t = arr.type
    n = len(arr)
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        h.update(b"\x01")
        h.update(valid.view(np.uint8))
    else:
        h.update(b"\x00")
    if pt.is_null(t):
        return
    if pt.is_boolean(t):
        vals = (arr.fill_null(False) if valid is not None else arr).to_numpy(zero_copy_only=False)
        h.update(vals.astype(np.uint8, copy=False))
        return
    if pt.is_string(t) or pt.is_large_string(t) or pt.is_binary(t) or pt.is_large_binary(t):
        if n == 0:
            return
        if valid is not None:
            arr = arr.fill_null("" if pt.is_string(t) or pt.is_large_string(t) else b"")
        off_dtype = np.int64 if (pt.is_large_string(t) or pt.is_large_binary(t)) else np.int32
        ow = np.dtype(off_dtype).itemsize
        bufs = arr.buffers()
        offs = np.frombuffer(bufs[1], dtype=f"<i{ow}", count=n + 1, offset=arr.offset * ow)
        h.update(np.subtract(offs[1:], offs[:-1], dtype="<u8", casting="unsafe"))
        if n and offs[-1] > offs[0]:
            h.update(memoryview(bufs[2])[int(offs[0]):int(offs[-1])])
        return
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t):
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
        h.update(lengths.astype("<u8"))
        _feed(h, arr.flatten())
        return
    if pt.is_struct(t):
        for child in arr.flatten():  # flatten() folds the struct's nulls into each field
            _feed(h, child)
        return
    try:
        bw = 0 if pt.is_union(t) else t.bit_width
    except ValueError:  # not a fixed-width type
        bw = 0
    if bw and bw % 8 == 0:
        h.update(_fixed_width_bytes(arr, valid, bw // 8, pt.is_floating(t)))
        return
    for v in arr.to_pylist():  # fallback: unions, run-end encoded, …
        h.update(_json_row(v))


def _block_array(col, start: int, length: int):
    """Rows ``[start, start+length)`` of a ChunkedArray as one contiguous Array (copies only across chunks)."""
    import pyarrow as pa

    piece = col.slice(start, length)
    chunks = [c for c in piece.chunks if len(c)]
    if not chunks:
        return pa.array([], type=col.type)
    if len(chunks) == 1:
        return chunks[0]
    return pa.concat_arrays([_normalise(c) for c in chunks])


def _as_table(table):
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    raise InvalidArgument(f"the result to hash must be a pyarrow.Table, not {type(table).__name__}",
                          field="table", value=type(table).__name__, allowed=["pyarrow.Table", "pyarrow.RecordBatch"])


def hash_result(table, *, block_rows: int = BLOCK_ROWS, threads: int | None = None,
                float12: bool = False) -> ResultHash:
    """Hash ``table`` (a pyarrow Table or RecordBatch) in format ``neurolake-result-hash/1``.

    Returns a :class:`ResultHash` with the hex ``sha256`` and the hex digest of each block of
    ``block_rows`` rows (the published ``result_sha256`` uses the default ``BLOCK_ROWS`` = 65,536; another
    block size gives another top hash, since it is part of the header). Columns × blocks are hashed in a
    thread pool of ``threads`` workers (default: the CPU count, at most 8; SHA-256, numpy and pyarrow
    release the GIL). Raises InvalidArgument (not a table, ``block_rows`` < 1).
    """
    table = _as_table(table)
    if not isinstance(block_rows, int) or isinstance(block_rows, bool) or block_rows < 1:
        raise InvalidArgument(f"block_rows {block_rows!r} must be a positive integer", field="block_rows",
                              value=block_rows)
    n = table.num_rows
    names = table.column_names
    header = [HASH_FORMAT.encode() + b"\n", _u64(n), _u64(block_rows), _u64(len(names))]
    for name, field in zip(names, table.schema, strict=True):
        nb, tb = name.encode(), canonical_type(field.type).encode()
        header += [_u64(len(nb)), nb, _u64(len(tb)), tb]
    nblocks = -(-n // block_rows)
    cols = [table.column(i) for i in range(len(names))]

    import pyarrow as pa

    floats = {c for c, col in enumerate(cols) if pa.types.is_floating(col.type)} if float12 else set()

    def one(task: tuple[int, int]) -> bytes:
        b, c = task
        start = b * block_rows
        h = hashlib.sha256()
        _feed(h, _block_array(cols[c], start, min(block_rows, n - start)))
        return h.digest()

    def rounded(task: tuple[int, int]) -> bytes:  # the same column slice, mantissas rounded
        b, c = task
        start = b * block_rows
        piece = pa.table([_block_array(cols[c], start, min(block_rows, n - start))], names=["x"])
        h = hashlib.sha256()
        _feed(h, round_floats(piece).column(0).combine_chunks())
        return h.digest()

    tasks = [(b, c) for b in range(nblocks) for c in range(len(cols))]
    extra = [(b, c) for b, c in tasks if c in floats]
    workers = threads if threads is not None else min(8, os.cpu_count() or 1)
    if workers > 1 and len(tasks) > 1 and n * max(1, len(cols)) >= 100_000:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="nl-hash") as pool:
            digests = list(pool.map(one, tasks))
            round_digests = list(pool.map(rounded, extra))
    else:
        digests = [one(t) for t in tasks]
        round_digests = [rounded(t) for t in extra]
    k = len(cols)
    blocks = [hashlib.sha256(b"".join(digests[b * k:(b + 1) * k])).digest() for b in range(nblocks)]
    top = hashlib.sha256(b"".join(header))
    for d in blocks:
        top.update(d)
    f12 = None
    if floats:  # the rounded table's hash: other columns' digests are the same, float columns re-hashed
        alt = dict(zip(extra, round_digests, strict=True))
        top2 = hashlib.sha256(b"".join(header))
        for b in range(nblocks):
            top2.update(hashlib.sha256(b"".join(alt.get((b, c), digests[b * k + c]) for c in range(k))).digest())
        f12 = top2.hexdigest()
    return ResultHash(sha256=top.hexdigest(), blocks=tuple(d.hex() for d in blocks), rows=n,
                      block_rows=block_rows, sha256_float12=f12)


FLOAT_DIGITS = 12  # significant digits of the rounded hash (float64 carries 15-17)


def round_floats(table, digits: int = FLOAT_DIGITS):
    """``table`` with every float column's significand rounded to ``ceil(digits · log2 10)`` bits (40 bits,
    about ``digits`` = 12 significant decimal digits; half away from zero, on the float64 bit pattern; NaN,
    ±inf and nulls kept), or None when it has no float column. The rounded hash (``result_sha256_float12`` in the
    manifest) is ``result_sha256`` of this table: it lets reproduce accept a result whose floating-point
    aggregates differ only in the last bits, as DuckDB's parallel sums of doubles do from run to run."""
    import numpy as np
    import pyarrow as pa

    table = _as_table(table)
    cols, changed = [], False
    for col in table.columns:
        if pa.types.is_floating(col.type):
            changed = True
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            v = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            # round the 53-bit significand to `bits` (40 ≈ 12 digits) on the IEEE bit pattern: add half of the
            # dropped part and clear it (round half away from zero; a carry moves into the exponent, as it
            # should); one vectorised integer pass, NaN and ±inf left as they are
            bits = int(np.ceil(digits * np.log2(10)))
            drop = np.uint64(53 - bits)
            u = v.view(np.uint64)
            rounded = (u + (np.uint64(1) << (drop - np.uint64(1)))) & ~((np.uint64(1) << drop) - np.uint64(1))
            r = np.where(np.isfinite(v), rounded, u).view(np.float64)
            mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
            cols.append(pa.array(r, pa.float64(), mask=mask).cast(col.type, safe=False))
        else:
            cols.append(col)
    return pa.table(cols, names=table.column_names) if changed else None


def result_sha256(table) -> str:
    """SHA-256 (hex) of ``table``'s rows in order, format ``neurolake-result-hash/1`` (module docstring).

    Independent of chunking and metadata; one pass over the data. Use :func:`hash_result` to get the
    block hashes from the same pass."""
    return hash_result(table).sha256


def block_hashes(table, block_rows: int = BLOCK_ROWS) -> list[str]:
    """The hex digest of each block of ``block_rows`` rows (``block[b]`` of the module docstring)."""
    return list(hash_result(table, block_rows=block_rows).blocks)


def first_differing_block(expected: Sequence[str], actual: Sequence[str]) -> int | None:
    """Index of the first block whose hash differs (or the first block only one side has); None if equal.
    Rows of block ``i``: ``[i * BLOCK_ROWS, (i + 1) * BLOCK_ROWS)``."""
    for i, (a, b) in enumerate(zip(expected, actual, strict=False)):
        if a != b:
            return i
    if len(expected) != len(actual):
        return min(len(expected), len(actual))
    return None


# --------------------------------------------------------------------------------------------------------
# pins and the OpenLineage event
# --------------------------------------------------------------------------------------------------------

_FINGERPRINT_PREFIX = {"parquet_sha256": "sha256", "delta_version": "delta", "iceberg_snapshot": "iceberg",
                       "lance_version": "lance"}


def _need(pin: dict[str, Any], key: str, name: str, kind: str) -> Any:
    if not isinstance(pin, dict) or key not in pin:
        raise InvalidArgument(f"input {name!r} (kind {kind!r}) has no {key!r} in its pin {pin!r}",
                              field="pin", value=pin, input=name, required=key)
    return pin[key]


def pin_string(input: dict[str, Any]) -> str:  # noqa: A002 - the name the design uses
    """The ``datasetVersion`` string of an input's pin (its OpenLineage ``version`` facet).

    Forms: annotation ``delta:<Delta version>`` (``delta:7``); materialization table or connectome
    ``v<version>`` (``v1``); edit log ``op:<last operation id>`` (``op:12``; ``op:none`` for an empty
    log); feature table ``<kind>:<fingerprint value>`` by fingerprint kind — ``sha256:<hex>`` (Parquet),
    ``delta:<version>``, ``iceberg:<snapshot id>``, ``lance:<version>`` (value unknown → ``unknown``).
    When the input binds root ids through a segmentation pin, ``+<layer>@op:<operation id>`` (or
    ``+<layer>@<timestamp>``) is appended: ``delta:7+seg@op:4``. The full pin is in the ``neurolake``
    run facet; this string is the short form for lineage tools.

    Raises InvalidArgument naming the input and the missing key or unknown kind.
    """
    if not isinstance(input, dict):
        raise InvalidArgument(f"an input must be a dict, not {type(input).__name__}", field="input",
                              value=repr(input)[:200])
    name = str(input.get("name"))
    kind = input.get("kind")
    pin = input.get("pin")
    if kind in ("annotation", "ephys", "skeletons"):
        out = f"delta:{_need(pin, 'delta_version', name, kind)}"
    elif kind in ("version_table", "connectome"):
        out = f"v{_need(pin, 'version', name, kind)}"
    elif kind == "edits":
        op = _need(pin, "operation_id", name, kind)
        out = f"op:{'none' if op is None else op}"
    elif kind == "feature":
        fp = _need(pin, "fingerprint", name, kind)
        if not isinstance(fp, dict) or "kind" not in fp:
            raise InvalidArgument(f"input {name!r}: fingerprint {fp!r} has no 'kind'", field="pin.fingerprint",
                                  value=fp, input=name)
        prefix = _FINGERPRINT_PREFIX.get(fp["kind"], str(fp["kind"]))
        value = fp.get("value")
        out = f"{prefix}:{'unknown' if value is None else value}"
    else:
        raise InvalidArgument(f"input {name!r} has kind {kind!r}; allowed: annotation, version_table, "
                              "connectome, edits, feature, ephys, skeletons", field="kind", value=kind, input=name,
                              allowed=["annotation", "version_table", "connectome", "edits", "feature", "ephys",
                                       "skeletons"])
    seg = input.get("segmentation")
    if isinstance(seg, dict):
        where = f"op:{seg['operation_id']}" if seg.get("operation_id") is not None else seg.get("timestamp")
        if where is not None:
            out += f"+{seg.get('layer') or 'segmentation'}@{where}"
    return out


def producer_url(version: str | None = None) -> str:
    """The ``producer`` URI of our events: ``https://github.com/neurolake/neurolake/tree/<version>``."""
    if version is None:
        from neurolake import __version__ as version
    return f"{PRODUCER_BASE}/tree/{version}"


def _schema_fields(columns: Any) -> list[Any] | None:
    from openlineage.client.facet_v2 import schema_dataset

    if not isinstance(columns, list) or not columns:
        return None
    out = []
    for i, c in enumerate(columns, 1):
        if isinstance(c, dict) and c.get("name") is not None:
            out.append(schema_dataset.SchemaDatasetFacetFields(name=str(c["name"]),
                                                               type=None if c.get("type") is None else str(c["type"]),
                                                               ordinal_position=i))
    return out or None


def _jsonable(run: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(run, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"the run record is not JSON-able: {exc}", field="run") from exc


def build_event(run: dict[str, Any], *, namespace: str, event_type: str = "COMPLETE",
                dataset_namespace: str | None = None) -> dict[str, Any]:
    """The OpenLineage RunEvent (JSON-able dict) of one query run.

    ``run``: the engine's run record (keys in docs/query.md; needs ``run_id`` (a UUID), ``sql``,
    ``ended`` or ``started`` (RFC 3339 date-times with a UTC offset), ``inputs``); ``namespace``: the job namespace (the
    lake's URL); ``dataset_namespace``: the inputs' and output's namespace (default: ``namespace``);
    ``event_type``: one of START, RUNNING, COMPLETE, ABORT, FAIL, OTHER.

    The event: ``eventTime`` = ``run["ended"]`` (``run["started"]`` for START/RUNNING or when not ended);
    ``run.runId`` = ``run["run_id"]``; ``job`` = ``{namespace, name: run["job"] or
    "neurolake.query.<mode>"}`` with facets ``sql`` and ``jobType`` (BATCH, NEUROLAKE, QUERY); one input
    dataset per input (name = the canonical table name; facets ``version`` = :func:`pin_string` and
    ``schema`` when the input lists ``columns``); one output dataset (``result_file`` or
    ``result/<run_id>``; facets ``outputStatistics`` (rowCount, size = ``result_bytes`` when given,
    fileCount) and ``schema`` from ``columns``); run facets ``processing_engine`` (duckdb, its version,
    neurolake's version) and ``neurolake`` = the whole run record plus ``_producer``, ``_schemaURL`` and
    ``result_hash_format``/``result_block_rows``. Standard parts are made with openlineage-python's classes
    and serialised with its ``Serde.to_dict``; the ``neurolake`` facet is added after serialisation so
    its nulls survive (Serde drops ``None`` values, also inside lists such as ``params``).

    Raises InvalidArgument naming the field (bad or missing run_id, eventTime, event_type, an input's pin,
    a run record that is not JSON-able).
    """
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        job_type_job,
        output_statistics_output_dataset,
        processing_engine_run,
        schema_dataset,
        sql_job,
    )
    from openlineage.client.serde import Serde

    if not isinstance(run, dict):
        raise InvalidArgument(f"run must be a dict, not {type(run).__name__}", field="run")
    if event_type not in EVENT_TYPES:
        raise InvalidArgument(f"event_type {event_type!r} is not an OpenLineage event type; allowed: "
                              + ", ".join(EVENT_TYPES), field="event_type", value=event_type,
                              allowed=list(EVENT_TYPES))
    run_id = run.get("run_id")
    try:
        if str(uuid.UUID(str(run_id))) != str(run_id).lower():
            raise ValueError("not canonical")
    except ValueError:
        raise InvalidArgument(f"run_id {run_id!r} must be a UUID (e.g. str(uuid.uuid4()))", field="run_id",
                              value=run_id) from None
    if not isinstance(namespace, str) or not namespace:
        raise InvalidArgument(f"namespace {namespace!r} must be a non-empty string", field="namespace",
                              value=namespace)
    first = ("started", "ended") if event_type in ("START", "RUNNING") else ("ended", "started")
    event_time = run.get(first[0]) or run.get(first[1])
    if not isinstance(event_time, str) or not _is_date_time(event_time):
        raise InvalidArgument(f"run {first[0]!r} {event_time!r} must be an RFC 3339 date-time with a UTC offset "
                              "(e.g. 2026-11-30T22:00:00+00:00)", field=first[0], value=event_time)
    if not isinstance(run.get("sql"), str):
        raise InvalidArgument("run has no 'sql' string", field="sql", value=run.get("sql"))
    inputs = run.get("inputs") or []
    if not isinstance(inputs, list):
        raise InvalidArgument(f"run 'inputs' must be a list, not {type(inputs).__name__}", field="inputs")
    record = _jsonable(run)
    code = record.get("code") or {}
    nl_version = code.get("neurolake")
    if nl_version is None:
        from neurolake import __version__ as nl_version
    producer = producer_url(nl_version)
    ds_ns = dataset_namespace or namespace

    in_ds = []
    for inp in inputs:
        facets: dict[str, Any] = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=pin_string(inp), producer=producer)}
        fields = _schema_fields(inp.get("columns"))
        if fields:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=producer)
        in_ds.append(InputDataset(namespace=ds_ns, name=str(inp["name"]), facets=facets))
    out_facets: dict[str, Any] = {}
    fields = _schema_fields(run.get("columns"))
    if fields:
        out_facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=producer)
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=run.get("rows"), size=run.get("result_bytes"),
        fileCount=1 if run.get("result_file") else None, producer=producer)
    out_ds = OutputDataset(namespace=ds_ns, name=str(run.get("result_file") or f"result/{run_id}"),
                           facets=out_facets, outputFacets={"outputStatistics": stats})
    mode = run.get("mode") or "exploratory"
    job = Job(namespace=namespace, name=str(run.get("job") or f"neurolake.query.{mode}"), facets={
        "sql": sql_job.SQLJobFacet(query=run["sql"], dialect="duckdb", producer=producer),
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="NEUROLAKE",
                                                jobType="QUERY", producer=producer)})
    engine = processing_engine_run.ProcessingEngineRunFacet(
        version=str(run.get("duckdb") or _duckdb_version()), name="duckdb",
        openlineageAdapterVersion=str(nl_version), producer=producer)
    try:
        ev = RunEvent(eventType=RunState(event_type), eventTime=event_time, run=Run(runId=str(run_id),
                      facets={"processing_engine": engine}), job=job, inputs=in_ds, outputs=[out_ds],
                      producer=producer)
    except ValueError as exc:  # attrs validators (eventTime not ISO 8601 …)
        raise InvalidArgument(f"cannot build the OpenLineage event: {exc}", field="run") from exc
    event = Serde.to_dict(ev)
    facet = {"_producer": producer, "_schemaURL": NEUROLAKE_FACET_SCHEMA_URL, **record}
    facet.setdefault("result_hash_format", HASH_FORMAT)
    if facet.get("result_blocks") is not None:
        facet.setdefault("result_block_rows", BLOCK_ROWS)
    event["run"].setdefault("facets", {})["neurolake"] = facet
    return event


def _duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def run_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """The run record kept in an event's ``neurolake`` run facet (a deep copy, without ``_producer``/
    ``_schemaURL``; ``run_id`` from ``run.runId`` when missing). Raises InvalidArgument when the event has
    no ``neurolake`` run facet."""
    try:
        facet = event["run"]["facets"]["neurolake"]
    except (KeyError, TypeError):
        raise InvalidArgument("not a neurolake query manifest: no run.facets.neurolake", field="manifest") from None
    rec = {k: copy.deepcopy(v) for k, v in facet.items() if k not in ("_producer", "_schemaURL")}
    rec.setdefault("run_id", event["run"].get("runId"))
    return rec


# --------------------------------------------------------------------------------------------------------
# validation against the OpenLineage JSON schemas
# --------------------------------------------------------------------------------------------------------

_FACET_KIND = {"job": "JobFacet", "run": "RunFacet", "dataset": "DatasetFacet",
               "input": "InputDatasetFacet", "output": "OutputDatasetFacet"}


@lru_cache(maxsize=1)
def _schemas() -> tuple[Any, dict[str, dict[str, Any]]]:
    """(referencing Registry of every schema in ``schemas/``, {$id: schema})."""
    from referencing import Registry, Resource

    by_id: dict[str, dict[str, Any]] = {}
    for p in sorted(SCHEMA_DIR.glob("*.json")):
        doc = json.loads(p.read_text())
        by_id[doc["$id"]] = doc
    registry = Registry().with_resources((i, Resource.from_contents(d)) for i, d in by_id.items())
    return registry, by_id


def _is_uri(value: object) -> bool:
    from urllib.parse import urlsplit

    if not isinstance(value, str):
        return True
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and not any(c.isspace() for c in value)


_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time (what the spec's ``format: date-time`` means), without the optional
    rfc3339-validator package."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    from neurolake.base.time import parse_timestamp
    from neurolake.errors import InvalidArgument

    try:
        parse_timestamp(value)
    except InvalidArgument:
        return False
    return True


@lru_cache(maxsize=1)
def _format_checker():
    from jsonschema import Draft202012Validator, FormatChecker

    fc = FormatChecker(formats=())
    fc.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)  # uuid, date-time, …
    # jsonschema checks "uri" only with rfc3987 and "date-time" only with rfc3339-validator installed
    fc.checks("uri")(_is_uri)
    fc.checks("date-time")(_is_date_time)
    return fc


def _where(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the event)"


def _check(schema: dict[str, Any], instance: Any, prefix: Sequence[Any], what: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    registry, _ = _schemas()
    validator = Draft202012Validator(schema, registry=registry, format_checker=_format_checker())
    err = best_match(validator.iter_errors(instance))
    if err is not None:
        path = [*prefix, *err.absolute_path]
        where = _where(path)
        raise InvalidArgument(f"the manifest is not a valid OpenLineage RunEvent: at {where}: {err.message} "
                              f"({what})", field=where, value=repr(err.instance)[:200], schema=what,
                              rule=err.validator)


def _facet_containers(event: dict[str, Any]):
    """(path, kind, facets dict) of every facet container of a RunEvent."""
    def get(d: Any, *keys: str) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    yield ("run", "facets"), "run", get(event, "run", "facets")
    yield ("job", "facets"), "job", get(event, "job", "facets")
    for side, extra, kind in (("inputs", "inputFacets", "input"), ("outputs", "outputFacets", "output")):
        items = event.get(side)
        for i, ds in enumerate(items if isinstance(items, list) else []):
            yield (side, i, "facets"), "dataset", get(ds, "facets")
            yield (side, i, extra), kind, get(ds, extra)


def validate_event(event: dict[str, Any]) -> None:
    """Validate ``event`` as an OpenLineage RunEvent (spec 2-0-2) with ``jsonschema``.

    Checks, in order: the event against ``OpenLineage.json#/$defs/RunEvent`` (formats checked: ``uuid``
    runId, ``date-time`` eventTime, ``uri`` producer/_schemaURL); every facet whose ``_schemaURL`` names a
    schema shipped in ``neurolake/query/schemas/`` (the OpenLineage facets we use, and our
    ``NeurolakeRunFacet``) against that schema; every facet container against the shipped facet schemas
    of its kind by facet name (a ``sql`` job facet must be an SQLJobFacet …). Facets with other schemas
    are checked only as generic facets (``_producer``, ``_schemaURL``), as the spec allows.

    Raises InvalidArgument whose message and ``detail["field"]`` name the failing path (``run.runId``,
    ``eventType``, ``job.facets.sql.query`` …).
    """
    if not isinstance(event, dict):
        raise InvalidArgument(f"an OpenLineage event must be a JSON object, not {type(event).__name__}",
                              field="event")
    _, by_id = _schemas()
    _check({"$ref": RUN_EVENT_REF}, event, (), RUN_EVENT_REF)
    for prefix, kind, facets in _facet_containers(event):
        if not isinstance(facets, dict):
            continue
        for name, facet in facets.items():
            url = facet.get("_schemaURL") if isinstance(facet, dict) else None
            if isinstance(url, str) and url.split("#", 1)[0] in by_id:
                _check({"$ref": url}, facet, (*prefix, name), url)
        for sid, doc in by_id.items():
            stem = sid.rsplit("/", 1)[-1].removesuffix(".json").split("-")[0]
            if stem.endswith(_FACET_KIND[kind]) and stem != _FACET_KIND[kind] and \
                    (kind != "dataset" or not stem.endswith(("InputDatasetFacet", "OutputDatasetFacet"))) and \
                    set(doc.get("properties", {})) & set(facets):
                _check({"$ref": sid}, facets, prefix, sid)
