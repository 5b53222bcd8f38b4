"""The result hash (format neurolake-result-hash/1) and the OpenLineage manifest (neurolake.query.manifest).

The known-answer tests recompute the hash with an independent pure-Python implementation written from the
definition in docs/query.md (values from ``to_pylist``, packed with ``struct``), so the documented
definition is exactly what the code does. Real data: data/hemibrain_meta (25k neurons: strings, floats,
booleans, nulls) and data/pinky100 (uint64 root ids).
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import hashlib
import json
import math
import struct
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from neurolake.errors import InvalidArgument
from neurolake.query.manifest import (
    BLOCK_ROWS,
    HASH_FORMAT,
    NEUROLAKE_FACET_SCHEMA_URL,
    SCHEMA_DIR,
    block_hashes,
    build_event,
    canonical_type,
    first_differing_block,
    hash_result,
    pin_string,
    result_sha256,
    run_from_event,
    validate_event,
)

DATA = Path(__file__).resolve().parents[2] / "data"
HEMIBRAIN = DATA / "hemibrain_meta" / "Supplemental_file5_hemibrain_meta.csv"
PINKY_SYN = DATA / "pinky100" / "synapses.csv"


@pytest.fixture(scope="module")
def hemibrain() -> pa.Table:
    # empty CSV fields are nulls (as pandas reads them): string columns with many nulls
    return pacsv.read_csv(HEMIBRAIN, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))


# --------------------------------------------------------------------------------------------------------
# an independent implementation of the documented definition
# --------------------------------------------------------------------------------------------------------

def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


INT_FMT = {"int8": "<b", "int16": "<h", "int32": "<i", "int64": "<q",
           "uint8": "<B", "uint16": "<H", "uint32": "<I", "uint64": "<Q"}


def ref_stream(arr: pa.Array) -> bytes:
    """stream(column slice) from the docs, value by value."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.dictionary_decode(), t.value_type
    vals = arr.to_pylist()
    out = b"\x01" + bytes(0 if v is None else 1 for v in vals) if None in vals else b"\x00"
    if pa.types.is_null(t):
        return out
    if pa.types.is_boolean(t):
        return out + bytes(1 if v else 0 for v in vals)
    if str(t) in INT_FMT:
        return out + b"".join(struct.pack(INT_FMT[str(t)], v or 0) for v in vals)
    if pa.types.is_float64(t) or pa.types.is_float32(t):
        fmt, nan = ("<d", 0x7FF8000000000000) if pa.types.is_float64(t) else ("<f", 0x7FC00000)
        ufmt = "<Q" if fmt == "<d" else "<I"
        return out + b"".join(struct.pack(ufmt, nan) if v is not None and math.isnan(v)
                              else struct.pack(fmt, 0.0 if v is None or v == 0 else v) for v in vals)
    if pa.types.is_timestamp(t) or pa.types.is_date32(t):
        ints = arr.cast(pa.int64() if pa.types.is_timestamp(t) else pa.int32()).to_pylist()
        fmt = "<q" if pa.types.is_timestamp(t) else "<i"
        return out + b"".join(struct.pack(fmt, v or 0) for v in ints)
    if pa.types.is_decimal128(t):
        return out + b"".join(int(v.scaleb(t.scale) if v is not None else 0).to_bytes(16, "little", signed=True)
                              for v in vals)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        bs = [b"" if v is None else (v.encode() if isinstance(v, str) else v) for v in vals]
        return out + b"".join(u64(len(b)) for b in bs) + b"".join(bs)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lens = b"".join(u64(0 if v is None else len(v)) for v in vals)
        child = pa.array([x for v in vals if v is not None for x in v], type=t.value_type)
        return out + lens + ref_stream(child)
    if pa.types.is_struct(t):
        for f in t:
            child = pa.array([None if v is None else v[f.name] for v in vals], type=f.type)
            out += ref_stream(child)
        return out
    raise AssertionError(f"reference has no rule for {t}")


def ref_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return ref_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{ref_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {ref_type(f.type)}" for f in t) + ">"
    return str(t)


def ref_hash(table: pa.Table, block_rows: int = 65536) -> tuple[str, list[str]]:
    n = table.num_rows
    header = b"neurolake-result-hash/1\n" + u64(n) + u64(block_rows) + u64(table.num_columns)
    for f in table.schema:
        name, typ = f.name.encode(), ref_type(f.type).encode()
        header += u64(len(name)) + name + u64(len(typ)) + typ
    blocks = []
    for start in range(0, n, block_rows):
        part = table.slice(start, block_rows)
        col_digests = b"".join(hashlib.sha256(ref_stream(part.column(i).combine_chunks())).digest()
                               for i in range(table.num_columns))
        blocks.append(hashlib.sha256(col_digests).digest())
    return hashlib.sha256(header + b"".join(blocks)).hexdigest(), [b.hex() for b in blocks]


def small_table() -> pa.Table:
    ts = [dt.datetime(2013, 5, 1, 12, 0, tzinfo=dt.UTC), None, dt.datetime(1969, 12, 31, 23, 59, 59, 5, tzinfo=dt.UTC),
          dt.datetime(2026, 11, 30, tzinfo=dt.UTC), dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
          dt.datetime(2001, 1, 1, tzinfo=dt.UTC), dt.datetime(2002, 2, 2, tzinfo=dt.UTC)]
    return pa.table({
        "root_id": pa.array([648518346349539437, 2**64 - 1, 0, None, 7, 8, 9], pa.uint64()),
        "n": pa.array([-1, None, 2**62, 0, 5, -(2**63), 3], pa.int64()),
        "small": pa.array([1, 2, None, 4, 5, -6, 127], pa.int8()),
        "size_nm3": pa.array([1.5, float("nan"), -0.0, None, 0.0, 1e300, -2.25], pa.float64()),
        "f32": pa.array([1.5, float("-nan"), -0.0, None, 3.0, 4.0, 5.0], pa.float32()),
        "cell_type": pa.array(["KC", None, "", "Δ7 neuron", "MBON", "x" * 100, "PAM"], pa.string()),
        "flag": pa.array([True, False, None, True, True, False, False]),
        "when": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2013, 5, 1), None, dt.date(1970, 1, 1), dt.date(1969, 1, 1),
                         dt.date(2000, 2, 29), dt.date(2026, 1, 1), dt.date(1, 1, 1)], pa.date32()),
        "amount": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.50"), decimal.Decimal("0"),
                            decimal.Decimal("99999999.99"), decimal.Decimal("-0.01"), decimal.Decimal("7")],
                           pa.decimal128(10, 2)),
        "partners": pa.array([[1, 2], None, [], [None, 4], [5], [6, 7, 8], [9]], pa.list_(pa.int64())),
        "pt": pa.array([{"x": 1, "label": "a"}, None, {"x": None, "label": "b"}, {"x": 4, "label": None},
                        {"x": 5, "label": "e"}, {"x": 6, "label": "f"}, {"x": 7, "label": "g"}],
                       pa.struct([("x", pa.int32()), ("label", pa.string())])),
        "nothing": pa.nulls(7),
    })


# the hash of small_table() (block_rows 65536), fixed: a change here means the format changed
SMALL_TABLE_SHA256 = "75571542836bcc10c69b3a74ea93553d81eca1f7cb4599fb46a4a73d8a40a3ac"


def test_known_answer_matches_the_documented_definition():
    t = small_table()
    for block_rows in (65536, 3, 1):
        got = hash_result(t, block_rows=block_rows)
        want_top, want_blocks = ref_hash(t, block_rows)
        assert got.sha256 == want_top, block_rows
        assert list(got.blocks) == want_blocks
        assert got.rows == 7 and got.block_rows == block_rows and got.format == HASH_FORMAT
    assert result_sha256(t) == ref_hash(t)[0]
    assert len(block_hashes(t, 3)) == 3
    assert result_sha256(t) == SMALL_TABLE_SHA256


def test_known_answer_on_real_data(hemibrain):
    part = hemibrain.slice(0, 3000)  # strings, floats and booleans with nulls, int64 ids
    assert result_sha256(part) == ref_hash(part)[0]
    got = hash_result(part, block_rows=1000)
    assert list(got.blocks) == ref_hash(part, 1000)[1]


def test_empty_results():
    empty = small_table().slice(0, 0)
    assert hash_result(empty).blocks == ()
    assert result_sha256(empty) == ref_hash(empty)[0]
    assert result_sha256(pa.table({})) == hashlib.sha256(b"neurolake-result-hash/1\n" + u64(0) + u64(65536)
                                                         + u64(0)).hexdigest()
    # the same zero rows with another column name or type hash differently
    assert result_sha256(empty) != result_sha256(empty.rename_columns(["id", *empty.column_names[1:]]))


# --------------------------------------------------------------------------------------------------------
# invariances and sensitivity
# --------------------------------------------------------------------------------------------------------

def test_independent_of_chunking_metadata_and_nullability(hemibrain):
    base = result_sha256(hemibrain)
    base_blocks = block_hashes(hemibrain)
    assert len(base_blocks) == 1
    for size in (7, 1000, 65535, 65536):
        rechunked = pa.Table.from_batches(hemibrain.to_batches(max_chunksize=size))
        assert rechunked.column(0).num_chunks > 1 or size >= hemibrain.num_rows
        assert result_sha256(rechunked) == base
    head = hemibrain.slice(0, 2000)
    one_row_chunks = pa.Table.from_batches(head.to_batches(max_chunksize=1))
    assert hash_result(one_row_chunks, block_rows=300) == hash_result(head, block_rows=300)
    one = pa.Table.from_batches(hemibrain.to_batches(max_chunksize=997)).combine_chunks()
    assert result_sha256(one) == base
    meta = hemibrain.replace_schema_metadata({"neurolake": "x", "pandas": "{}"})
    fields = [f.with_metadata({"unit": "nm"}).with_nullable(False) if f.name == "bodyId" else f
              for f in hemibrain.schema]
    meta = meta.cast(pa.schema(fields, metadata={"a": "b"}))
    assert result_sha256(meta) == base
    # a table sliced out of a bigger one (non-zero array offsets) hashes like the same rows built fresh
    sliced = hemibrain.slice(1234, 5000)
    fresh = pa.Table.from_pylist(sliced.to_pylist(), schema=hemibrain.schema)
    assert result_sha256(sliced) == result_sha256(fresh)


def test_equal_for_equal_data_built_differently(hemibrain):
    base = result_sha256(hemibrain)
    # pandas with the Arrow backend, back to Arrow
    df = pd.read_csv(HEMIBRAIN, dtype_backend="pyarrow", engine="pyarrow")
    assert result_sha256(pa.Table.from_pandas(df, preserve_index=False)) == base
    # large_string and dictionary-encoded (pandas categorical) strings hash like plain strings
    big = hemibrain.cast(pa.schema([pa.field(f.name, pa.large_string()) if f.type == pa.string() else f
                                    for f in hemibrain.schema]))
    assert result_sha256(big) == base
    enc = hemibrain.set_column(2, "type", pc.dictionary_encode(hemibrain.column("type")))
    assert result_sha256(enc) == base
    # pinky100 synapses (uint64-range root ids, no nulls): pandas default (numpy) backend vs pyarrow csv
    syn = pacsv.read_csv(PINKY_SYN)
    assert result_sha256(pa.Table.from_pandas(pd.read_csv(PINKY_SYN), preserve_index=False)) == result_sha256(syn)
    # DuckDB re-reading the Arrow table returns the same rows, differently chunked
    import duckdb

    con = duckdb.connect()
    con.register("syn", syn)
    again = con.sql("SELECT * FROM syn").fetch_arrow_table()
    assert result_sha256(again) == result_sha256(syn)


def test_changes_with_values_nulls_names_types_and_order(hemibrain):
    base = result_sha256(hemibrain)
    seen = {base}

    def changed(t: pa.Table) -> None:
        h = result_sha256(t)
        assert h not in seen
        seen.add(h)

    ids = hemibrain.column("bodyId").to_numpy().copy()
    ids[20000] += 1
    changed(hemibrain.set_column(0, "bodyId", pa.array(ids)))
    pre = hemibrain.column("pre").to_pylist()
    i = next(k for k, v in enumerate(pre) if v is not None)
    changed(hemibrain.set_column(hemibrain.column_names.index("pre"), "pre",
                                 pa.array(pre[:i] + [None] + pre[i + 1:], pa.float64())))
    inst = hemibrain.column("instance").to_pylist()
    j = max(k for k, v in enumerate(inst) if v is not None)
    changed(hemibrain.set_column(1, "instance", pa.array(inst[:j] + [inst[j] + "x"] + inst[j + 1:])))
    changed(hemibrain.rename_columns(["body_id", *hemibrain.column_names[1:]]))
    changed(hemibrain.set_column(0, "bodyId", hemibrain.column("bodyId").cast(pa.uint64())))
    changed(hemibrain.set_column(0, "bodyId", hemibrain.column("bodyId").cast(pa.float64())))
    order = np.arange(hemibrain.num_rows)
    order[[5, 6]] = order[[6, 5]]
    changed(hemibrain.take(order))
    changed(hemibrain.slice(0, hemibrain.num_rows - 1))
    changed(hemibrain.select(hemibrain.column_names[1:] + hemibrain.column_names[:1]))
    # a null and the zero/empty value it is written as are told apart by the validity bytes
    t = pa.table({"a": pa.array([0, 1], pa.int64())})
    assert result_sha256(t) != result_sha256(pa.table({"a": pa.array([None, 1], pa.int64())}))
    s = pa.table({"s": ["", "x"]})
    assert result_sha256(s) != result_sha256(pa.table({"s": pa.array([None, "x"])}))
    # string boundaries count: ["ab", "c"] is not ["a", "bc"]
    assert result_sha256(pa.table({"s": ["ab", "c"]})) != result_sha256(pa.table({"s": ["a", "bc"]}))


def test_float_normalisation():
    nan_bits = np.array([0x7FF8000000000001, 0xFFF8000000000000], dtype="<u8").view("<f8")
    a = pa.table({"x": pa.array([nan_bits[0], -0.0, 1.0])})
    b = pa.table({"x": pa.array([nan_bits[1], 0.0, 1.0])})
    assert result_sha256(a) == result_sha256(b)
    assert result_sha256(a) != result_sha256(pa.table({"x": pa.array([None, 0.0, 1.0], pa.float64())}))


def test_block_hashes_locate_the_first_differing_block():
    n = 5 * BLOCK_ROWS + 123
    t = pa.table({"id": pa.array(np.arange(n, dtype=np.uint64)), "v": pa.array(np.arange(n) * 0.5)})
    blocks = block_hashes(t)
    assert len(blocks) == 6 and len(set(blocks)) == 6
    v = t.column("v").to_numpy().copy()
    v[3 * BLOCK_ROWS + 17] = -1
    other = block_hashes(t.set_column(1, "v", pa.array(v)))
    assert first_differing_block(blocks, other) == 3
    assert first_differing_block(blocks, blocks) is None
    assert first_differing_block(blocks, blocks[:4]) == 4
    assert block_hashes(pa.Table.from_batches(t.to_batches(max_chunksize=50000))) == blocks
    # single-threaded and multi-threaded passes agree
    assert hash_result(t, threads=1) == hash_result(t, threads=4)


def test_other_types_hash_and_are_told_apart():
    n = 4
    cols = {
        "fsb": pa.array([b"abcd", None, b"wxyz", b"\x00\x00\x00\x00"], pa.binary(4)),
        "bin": pa.array([b"a", None, b"", b"\xff"], pa.binary()),
        "t64": pa.array([1, None, 3, 4], pa.time64("us")),
        "dur": pa.array([1, None, 3, 4], pa.duration("ms")),
        "d64": pa.array([86400000, None, 0, 1], pa.date64()),
        "ival": pa.array([pa.MonthDayNano([1, 2, 3]), None, pa.MonthDayNano([0, 0, 0]),
                          pa.MonthDayNano([-1, 0, 5])], pa.month_day_nano_interval()),
        "f16": pa.array(np.array([1.0, np.nan, -0.0, 2.0], dtype=np.float16)),
        "fsl": pa.array([[1, 2], None, [3, None], [5, 6]], pa.list_(pa.int16(), 2)),
        "map": pa.array([[("a", 1)], None, [], [("b", 2), ("c", None)]], pa.map_(pa.string(), pa.int64())),
        "ll": pa.array([[1], None, [], [2, 3]], pa.large_list(pa.int64())),
        "sv": pa.array(["a", None, "ccc", ""], pa.string_view()),
        "union": pa.UnionArray.from_sparse(pa.array([0, 1, 0, 1], pa.int8()),
                                           [pa.array([1, 2, 3, 4]), pa.array(["a", "b", "c", "d"])]),
        "dec256": pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("-2"), decimal.Decimal("0")],
                           pa.decimal256(40, 1)),
    }
    t = pa.table(cols)
    assert t.num_rows == n
    base = hash_result(t, block_rows=2)
    assert hash_result(pa.Table.from_batches(t.to_batches(max_chunksize=1)), block_rows=2) == base
    assert canonical_type(cols["map"].type) == "map<string, int64>"
    assert canonical_type(cols["sv"].type) == "string"
    assert canonical_type(cols["ll"].type) == "list<int64>"
    assert canonical_type(pa.list_(pa.field("l", pa.int32()))) == canonical_type(pa.list_(pa.int32()))
    # a view string column equals the same plain strings; a list_ equals the same large_list
    assert result_sha256(t.select(["sv"])) == result_sha256(pa.table({"sv": pa.array(["a", None, "ccc", ""])}))
    assert result_sha256(t.select(["ll"])) == result_sha256(pa.table({"ll": pa.array([[1], None, [], [2, 3]])}))
    # each column's content matters: changing one value in any column changes the hash
    for name, arr in cols.items():
        vals = arr.to_pylist()
        vals[0], vals[3] = vals[3], vals[0]
        try:
            swapped = pa.array(vals, arr.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
            swapped = arr.take([3, 1, 2, 0])
        assert result_sha256(t.set_column(t.column_names.index(name), name, swapped)) != base.sha256, name
    # a map whose null entry hides a non-empty child range hashes like the clean one
    clean = pa.array([[("a", 1)], None], pa.map_(pa.string(), pa.int64()))
    hidden = pa.MapArray.from_arrays(pa.array([0, 1, 2], pa.int32()), pa.array(["a", "z"]), pa.array([1, 9]),
                                     mask=pa.array([False, True]))
    assert result_sha256(pa.table({"m": clean})) == result_sha256(pa.table({"m": hidden}))


def test_nested_edge_cases_match_the_reference():
    nested = pa.struct([("a", pa.string()), ("b", pa.list_(pa.int64()))])
    for t in [pa.table({"l": pa.array([[], [], None], pa.list_(pa.string()))}),
              pa.table({"l": pa.array([[{"a": "x", "b": [1]}], [], None, [None, {"a": None, "b": None}]],
                                      pa.list_(nested))}),
              pa.table({"s": pa.array([None, None], pa.struct([("a", pa.string())]))})]:
        assert result_sha256(t) == ref_hash(t)[0]
        assert list(hash_result(t, block_rows=1).blocks) == ref_hash(t, 1)[1]
    # values hidden under a null fixed-size-list slot do not count
    hidden = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 9, 9], pa.int16()), 2, mask=pa.array([False, True]))
    zeros = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 0, 0], pa.int16()), 2, mask=pa.array([False, True]))
    assert result_sha256(pa.table({"x": hidden})) == result_sha256(pa.table({"x": zeros}))
    # an extension type hashes its storage under its own type name; run-end encoded uses the JSON fallback
    u = pa.array([uuid.UUID(int=1).bytes, None], pa.uuid())
    assert canonical_type(u.type) == "extension<arrow.uuid: fixed_size_binary[16]>"
    assert result_sha256(pa.table({"u": u})) != result_sha256(pa.table({"u": u.storage}))
    ree = pa.RunEndEncodedArray.from_arrays(pa.array([2, 4], pa.int32()), pa.array([1, 2]))
    header = (b"neurolake-result-hash/1\n" + u64(4) + u64(65536) + u64(1) + u64(1) + b"r"
              + u64(len(str(ree.type))) + str(ree.type).encode())
    body = b"\x00" + b"".join(u64(1) + str(v).encode() for v in (1, 1, 2, 2))
    block = hashlib.sha256(hashlib.sha256(body).digest()).digest()
    assert result_sha256(pa.table({"r": ree})) == hashlib.sha256(header + block).hexdigest()


def test_hash_refuses_bad_arguments():
    with pytest.raises(InvalidArgument, match="pyarrow.Table"):
        result_sha256(pd.DataFrame({"a": [1]}))
    with pytest.raises(InvalidArgument, match="block_rows"):
        hash_result(pa.table({"a": [1]}), block_rows=0)
    batch = pa.record_batch({"a": [1, 2]})
    assert result_sha256(batch) == result_sha256(pa.table({"a": [1, 2]}))


# --------------------------------------------------------------------------------------------------------
# the OpenLineage event
# --------------------------------------------------------------------------------------------------------

def _inputs() -> list[dict]:
    ts = "2026-11-30T21:00:00+00:00"
    return [
        {"name": "gerhard2013.synapses", "kind": "annotation", "datastack": "gerhard2013", "table": "synapses",
         "pin": {"delta_version": 7, "committed": ts, "timestamp": None}, "pinned_by": "sql",
         "location": "/lake/gerhard2013/tables/synapses", "files": ["/lake/gerhard2013/tables/synapses/part-0.parquet"],
         "bytes": 123456, "segmentation": {"layer": "seg", "operation_id": 4, "timestamp": ts},
         "columns": [{"name": "id", "type": "int64"}, {"name": "pre_pt_root_id", "type": "uint64"}]},
        {"name": "gerhard2013.somas", "kind": "annotation", "datastack": "gerhard2013", "table": "somas",
         "pin": {"delta_version": 0, "committed": ts, "timestamp": ts}, "pinned_by": "latest",
         "location": "/lake/gerhard2013/tables/somas", "files": [], "bytes": 0, "segmentation": None},
        {"name": "gerhard2013.v1.synapses", "kind": "version_table", "datastack": "gerhard2013", "table": "synapses",
         "pin": {"version": 1, "timestamp": ts}, "pinned_by": "sql", "location": "/lake/v1", "files": [], "bytes": 1,
         "segmentation": None},
        {"name": "gerhard2013.v2.connectome", "kind": "connectome", "datastack": "gerhard2013", "table": "connectome",
         "pin": {"version": 2, "timestamp": ts}, "pinned_by": "argument", "location": "/lake/v2", "files": [],
         "bytes": 1, "segmentation": None},
        {"name": "gerhard2013.edits", "kind": "edits", "datastack": "gerhard2013", "table": "edits",
         "pin": {"operation_id": 12, "timestamp": None}, "pinned_by": "latest", "location": "/lake/edits",
         "files": [], "bytes": 1, "segmentation": None},
        {"name": "features.bouton_size", "kind": "feature", "datastack": None, "table": "bouton_size",
         "pin": {"fingerprint": {"kind": "parquet_sha256", "value": "ab" * 32}, "format": "parquet"},
         "pinned_by": "latest", "location": "s3://bucket/bouton", "files": ["s3://bucket/bouton/a.parquet"],
         "bytes": 99, "segmentation": None},
        {"name": "features.dist_to_soma", "kind": "feature", "datastack": None, "table": "dist_to_soma",
         "pin": {"fingerprint": {"kind": "delta_version", "value": 3}, "format": "delta"}, "pinned_by": "sql",
         "location": "/ext/dist", "files": [], "bytes": 5, "segmentation": None},
        {"name": "features.ice", "kind": "feature", "datastack": None, "table": "ice",
         "pin": {"fingerprint": {"kind": "iceberg_snapshot", "value": 8123456789}, "format": "iceberg"},
         "pinned_by": "latest", "location": "/ext/ice", "files": [], "bytes": 5, "segmentation": None},
        {"name": "features.vec", "kind": "feature", "datastack": None, "table": "vec",
         "pin": {"fingerprint": {"kind": "lance_version", "value": 2}, "format": "lance"},
         "pinned_by": "latest", "location": "/ext/vec", "files": [], "bytes": 5, "segmentation": None},
    ]


def make_run(table: pa.Table | None = None, **over) -> dict:
    table = table if table is not None else small_table()
    h = hash_result(table)
    run = {
        "run_id": str(uuid.uuid4()), "sql": "SELECT * FROM gerhard2013.synapses WHERE size > ?",
        "executed_sql": "SELECT * FROM gerhard2013.synapses WHERE size > ? ORDER BY ALL", "params": [None, 3],
        "mode": "production", "user": "alice", "started": "2026-11-30T22:00:00.120000+00:00",
        "ended": "2026-11-30T22:00:01.500000+00:00", "inputs": _inputs(), "rows": table.num_rows,
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema], "bytes_read": 123456,
        "result_sha256": h.sha256, "result_blocks": list(h.blocks), "ordered_by": "all",
        "runtime_class": {"predicted": "interactive", "predicted_seconds": 0.2, "measured": "short",
                          "measured_seconds": 1.38, "estimate": {"estimated_rows": 10, "estimated_bytes": 100}},
        "profile": {"latency_s": 1.3, "cpu_s": 1.1, "top_operators": [{"operator": "TABLE_SCAN", "share": 0.87}]},
        "sample": None, "timeout_s": None, "partial": False,
        "code": {"neurolake": "0.1.0", "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False,
                 "python": "3.11.9"},
        "duckdb": "1.4.4", "lake": "/lake", "result_file": None,
    }
    run.update(over)
    return run


def test_event_from_a_realistic_run_validates_and_carries_everything():
    from openlineage.client.event_v2 import RunEvent

    run = make_run()
    ev = build_event(run, namespace="file://lab-host/lake")
    validate_event(ev)
    validate_event(json.loads(json.dumps(ev)))  # what is written to disk validates too
    assert ev["eventType"] == "COMPLETE" and ev["eventTime"] == run["ended"]
    assert ev["schemaURL"] == RunEvent._get_schema()
    assert ev["producer"] == "https://github.com/neurolake/neurolake/tree/0.1.0"
    assert ev["run"]["runId"] == run["run_id"]
    assert ev["job"] == {"namespace": "file://lab-host/lake", "name": "neurolake.query.production", "facets": {
        "sql": {"_producer": ev["producer"],
                "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet",
                "query": run["sql"], "dialect": "duckdb"},
        "jobType": {"_producer": ev["producer"],
                    "_schemaURL": "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
                    "processingType": "BATCH", "integration": "NEUROLAKE", "jobType": "QUERY"}}}
    versions = {d["name"]: d["facets"]["version"]["datasetVersion"] for d in ev["inputs"]}
    assert versions == {"gerhard2013.synapses": "delta:7+seg@op:4", "gerhard2013.somas": "delta:0",
                        "gerhard2013.v1.synapses": "v1", "gerhard2013.v2.connectome": "v2",
                        "gerhard2013.edits": "op:12", "features.bouton_size": "sha256:" + "ab" * 32,
                        "features.dist_to_soma": "delta:3", "features.ice": "iceberg:8123456789",
                        "features.vec": "lance:2"}
    assert {d["namespace"] for d in ev["inputs"]} == {"file://lab-host/lake"}
    syn = [{k: f[k] for k in ("name", "type", "ordinal_position")} for f in ev["inputs"][0]["facets"]["schema"]["fields"]]
    assert syn == [{"name": "id", "type": "int64", "ordinal_position": 1},
                   {"name": "pre_pt_root_id", "type": "uint64", "ordinal_position": 2}]
    assert "schema" not in ev["inputs"][1]["facets"]
    [out] = ev["outputs"]
    assert out["name"] == f"result/{run['run_id']}"
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 7
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == small_table().column_names
    assert ev["run"]["facets"]["processing_engine"] == {
        "_producer": ev["producer"],
        "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json"
                      "#/$defs/ProcessingEngineRunFacet",
        "version": "1.4.4", "name": "duckdb", "openlineageAdapterVersion": "0.1.0"}
    facet = ev["run"]["facets"]["neurolake"]
    assert facet["_schemaURL"] == NEUROLAKE_FACET_SCHEMA_URL
    assert facet["params"] == [None, 3]  # nulls survive (openlineage's Serde would drop them)
    assert facet["inputs"][1]["pin"] == {"delta_version": 0, "committed": "2026-11-30T21:00:00+00:00",
                                         "timestamp": "2026-11-30T21:00:00+00:00"}
    assert facet["result_hash_format"] == HASH_FORMAT and facet["result_block_rows"] == BLOCK_ROWS
    back = run_from_event(ev)
    assert {k: v for k, v in back.items() if k not in ("result_hash_format", "result_block_rows")} == run


def test_event_variants():
    run = make_run(job="synapse-density-fig3", mode="exploratory", sample={"fraction": 0.1, "seed": 42},
                   partial=True, result_file="/lake/runs/x.parquet", result_bytes=2048, params={"min": 1})
    ev = build_event(run, namespace="https://lake.example.org", event_type="OTHER",
                     dataset_namespace="file://lab-host/lake")
    validate_event(ev)
    assert ev["job"]["name"] == "synapse-density-fig3" and ev["eventType"] == "OTHER"
    assert ev["outputs"][0]["name"] == "/lake/runs/x.parquet"
    assert ev["outputs"][0]["outputFacets"]["outputStatistics"] == {
        "_producer": ev["producer"], "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/"
        "OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
        "rowCount": 7, "size": 2048, "fileCount": 1}
    assert {d["namespace"] for d in ev["inputs"] + ev["outputs"]} == {"file://lab-host/lake"}
    start = build_event(run, namespace="n", event_type="START")
    assert start["eventTime"] == run["started"]
    validate_event(start)
    validate_event(build_event(make_run(ended="2026-11-30T22:00:01Z"), namespace="n"))
    # a run with no inputs (SELECT 42) and an empty result
    validate_event(build_event(make_run(small_table().slice(0, 0), inputs=[]), namespace="n"))


def test_every_standard_facet_is_checked_against_a_shipped_schema():
    ev = build_event(make_run(), namespace="n")
    shipped = {json.loads(p.read_text())["$id"] for p in SCHEMA_DIR.glob("*.json")}
    urls = [ev["schemaURL"]]
    for d in [ev["run"], ev["job"], *ev["inputs"], *ev["outputs"]]:
        for key in ("facets", "inputFacets", "outputFacets"):
            urls += [f["_schemaURL"] for f in (d.get(key) or {}).values()]
    missing = {u for u in urls if u.split("#")[0] not in shipped}
    assert not missing
    assert (SCHEMA_DIR / "README.md").read_text().count("Apache") >= 1
    assert (SCHEMA_DIR / "LICENSE-OpenLineage.txt").exists()


@pytest.mark.parametrize(("breakage", "field", "words"), [
    (lambda e: e["run"].pop("runId"), "run", "runId"),
    (lambda e: e["run"].__setitem__("runId", "run-42"), "run.runId", "uuid"),
    (lambda e: e.__setitem__("eventType", "DONE"), "eventType", "DONE"),
    (lambda e: e.__setitem__("eventTime", "yesterday"), "eventTime", "date-time"),
    (lambda e: e.__setitem__("eventTime", "2026-11-30T22:00:00"), "eventTime", "date-time"),
    (lambda e: e.__setitem__("eventTime", "2026-13-01T22:00:00Z"), "eventTime", "date-time"),
    (lambda e: e["run"]["facets"]["neurolake"].__setitem__("started", "last tuesday"),
     "run.facets.neurolake.started", "date-time"),
    (lambda e: e["job"].pop("name"), "job", "name"),
    (lambda e: e.pop("job"), "(the event)", "job"),
    (lambda e: e.__setitem__("producer", "not a uri"), "producer", "uri"),
    (lambda e: e["job"]["facets"]["sql"].pop("query"), "job.facets.sql", "query"),
    (lambda e: e["job"]["facets"]["jobType"].pop("integration"), "job.facets.jobType", "integration"),
    (lambda e: e["inputs"][2]["facets"]["version"].pop("datasetVersion"), "inputs[2].facets.version",
     "datasetVersion"),
    (lambda e: e["inputs"][0]["facets"]["version"].pop("_producer"), "inputs[0].facets.version", "_producer"),
    (lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].__setitem__("rowCount", "many"),
     "outputs[0].outputFacets.outputStatistics.rowCount", "integer"),
    (lambda e: e["run"]["facets"]["processing_engine"].pop("version"), "run.facets.processing_engine", "version"),
    (lambda e: e["run"]["facets"]["neurolake"].pop("result_sha256"), "run.facets.neurolake", "result_sha256"),
    (lambda e: e["run"]["facets"]["neurolake"]["inputs"][4]["pin"].pop("operation_id"),
     "run.facets.neurolake.inputs[4].pin", "operation_id"),
    (lambda e: e["run"]["facets"]["neurolake"].__setitem__("mode", "fast"), "run.facets.neurolake.mode", "fast"),
])
def test_broken_events_are_refused_naming_the_problem(breakage, field, words):
    ev = build_event(make_run(), namespace="file://lab-host/lake")
    broken = copy.deepcopy(ev)
    breakage(broken)
    with pytest.raises(InvalidArgument) as exc:
        validate_event(broken)
    assert exc.value.detail["field"] == field
    assert words in exc.value.message and field in exc.value.message


def test_facets_are_checked_by_name_even_with_a_foreign_schema_url():
    ev = build_event(make_run(), namespace="n")
    ev["job"]["facets"]["sql"]["_schemaURL"] = "https://example.org/MySQLFacet.json#/$defs/X"
    validate_event(ev)  # a facet with a schema we do not ship is checked as a generic facet …
    del ev["job"]["facets"]["sql"]["query"]
    with pytest.raises(InvalidArgument, match="query") as exc:  # … but the name "sql" means SQLJobFacet
        validate_event(ev)
    assert exc.value.detail["field"] == "job.facets.sql"


def test_validate_refuses_non_objects():
    with pytest.raises(InvalidArgument, match="JSON object"):
        validate_event([])  # type: ignore[arg-type]


@pytest.mark.parametrize(("over", "field"), [
    ({"run_id": "run-42"}, "run_id"),
    ({"run_id": None}, "run_id"),
    ({"ended": "2026-11-30 22:00"}, "ended"),
    ({"ended": "2026-11-30T22:00:00"}, "ended"),
    ({"ended": "2026-11-30T22:00+00:00"}, "ended"),
    ({"ended": "2026-02-30T22:00:00Z"}, "ended"),
    ({"ended": None, "started": None}, "ended"),
    ({"sql": None}, "sql"),
    ({"inputs": "gerhard2013.synapses"}, "inputs"),
    ({"params": {1, 2}}, "run"),
    ({"profile": {"share": float("nan")}}, "run"),
    ({"inputs": [{"name": "x.y", "kind": "view", "pin": {}}]}, "kind"),
    ({"inputs": [{"name": "x.y", "kind": "annotation", "pin": {"version": 1}}]}, "pin"),
    ({"inputs": [{"name": "f", "kind": "feature", "pin": {"fingerprint": {"value": 1}}}]}, "pin.fingerprint"),
])
def test_build_event_refuses_bad_runs(over, field):
    with pytest.raises(InvalidArgument) as exc:
        build_event(make_run(**over), namespace="n")
    assert exc.value.detail["field"] == field


def test_build_event_refuses_bad_arguments():
    with pytest.raises(InvalidArgument, match="DONE"):
        build_event(make_run(), namespace="n", event_type="DONE")
    with pytest.raises(InvalidArgument, match="namespace"):
        build_event(make_run(), namespace="")
    with pytest.raises(InvalidArgument, match="dict"):
        build_event([], namespace="n")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="neurolake"):
        run_from_event({"run": {"runId": str(uuid.uuid4()), "facets": {}}})


def test_pin_strings():
    ts = "2026-11-30T21:00:00+00:00"
    assert pin_string({"name": "d.t", "kind": "annotation", "pin": {"delta_version": 7}}) == "delta:7"
    assert pin_string({"name": "d.t", "kind": "annotation", "pin": {"delta_version": 7},
                       "segmentation": {"layer": "seg", "operation_id": None, "timestamp": ts}}) == f"delta:7+seg@{ts}"
    assert pin_string({"name": "d.v3.t", "kind": "version_table", "pin": {"version": 3}}) == "v3"
    assert pin_string({"name": "d.edits", "kind": "edits", "pin": {"operation_id": None}}) == "op:none"
    assert pin_string({"name": "features.f", "kind": "feature",
                       "pin": {"fingerprint": {"kind": "parquet_sha256", "value": None}}}) == "sha256:unknown"
    with pytest.raises(InvalidArgument, match="dict"):
        pin_string("d.t")  # type: ignore[arg-type]


def test_rounded_hash_absorbs_last_bit_differences_of_float_aggregates():
    """DuckDB's parallel sum of doubles differs from run to run in the last bits: the float12 hash is equal,
    the exact hash is not; a real change of a value changes both."""
    import numpy as np
    import pyarrow as pa

    from neurolake.query.manifest import hash_result, round_floats

    mean = np.float64(734.1234567891234)
    nudged = np.nextafter(mean, np.inf)
    a = pa.table({"cell": ["L23", "L4"], "mean_size": [mean, 2.5], "n": [3, 4]})
    b = pa.table({"cell": ["L23", "L4"], "mean_size": [nudged, 2.5], "n": [3, 4]})
    c = pa.table({"cell": ["L23", "L4"], "mean_size": [mean * 1.001, 2.5], "n": [3, 4]})
    assert hash_result(a).sha256 != hash_result(b).sha256
    assert hash_result(round_floats(a)).sha256 == hash_result(round_floats(b)).sha256
    assert hash_result(round_floats(a)).sha256 != hash_result(round_floats(c)).sha256
    assert round_floats(pa.table({"n": [1, 2]})) is None
    r = round_floats(pa.table({"x": pa.array([0.0, None, float("nan"), float("inf"), -1.23456789012345e-300])}))
    assert r["x"].to_pylist()[:2] == [0.0, None] and np.isnan(r["x"][2].as_py()) and r["x"][3].as_py() == np.inf
    assert r["x"][4].as_py() == pytest.approx(-1.23456789012e-300, rel=1e-12)


def test_one_pass_float12_hash_equals_the_hash_of_the_rounded_table():
    import numpy as np
    import pyarrow as pa

    from neurolake.query.manifest import hash_result, round_floats

    rng = np.random.default_rng(1)
    t = pa.table({"id": np.arange(200_000, dtype=np.uint64), "x": rng.normal(size=200_000),
                  "f": pa.array(rng.random(200_000).astype(np.float32)), "s": [str(i % 7) for i in range(200_000)]})
    h = hash_result(t, float12=True, block_rows=65_536)
    assert h.sha256 == hash_result(t).sha256
    assert h.sha256_float12 == hash_result(round_floats(t)).sha256
    assert hash_result(pa.table({"n": [1]}), float12=True).sha256_float12 is None
