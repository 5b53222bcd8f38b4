"""Bulk loads: Arrow input validated without pandas (same result, same errors), one Morton sort per load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotations_data import SITE_PROPS, navis_sites, schlegel_cell_types

from neurolake.annotations import create_table, get_schema
from neurolake.annotations import table as nt
from neurolake.annotations.schemas import validate
from neurolake.errors import InvalidArgument


@pytest.fixture(scope="module")
def ann_lake(ann_lake_both):
    """Every test using it runs on the local annotation lake, then on the same lake on S3 (conftest.py)."""
    return ann_lake_both


def _both(df: pd.DataFrame, schema: str, props: dict | None = None):
    """validate() of the DataFrame and of the same rows as an Arrow table."""
    sch = get_schema(schema)
    return (validate(df, sch, props), validate(pa.Table.from_pandas(df, preserve_index=False), sch, props))


@pytest.mark.parametrize("which", ["navis", "schlegel"])
def test_arrow_and_pandas_validation_agree_on_real_tables(which):
    if which == "navis":
        df, schema, props = navis_sites(), "point", SITE_PROPS
    else:
        df, schema, props = schlegel_cell_types(), "cell_type", {"cell_class": "str"}
    a, b = _both(df, schema, props)
    assert a.schema == b.schema
    for name in a.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


def _err(df, schema="point", props=None):
    with pytest.raises(InvalidArgument) as exc:
        validate(df, get_schema(schema), props)
    return exc.value.message


@pytest.mark.parametrize("bad", [
    {"id": [1, -2, 3]},                                           # negative id
    {"id": pa.array([1, None, 3], pa.int64())},                   # empty id
    {"id": pa.array([1, 2**63, 3], pa.uint64())},                 # id beyond int64
    {"pt_position_x": [0.0, float("inf"), 1.0]},                  # infinite position
    {"pt_position_x": [0.0, float("nan"), 1.0]},                  # partial point
    {"pt_position_x": pa.array([True, False, True])},             # booleans as numbers
    {"confidence": [0.5, float("-inf"), 0.1]},                    # infinite float field
    {"connector_id": [1.0, 2.5, 3.0]},                            # non-whole int property
    {"roi": [1, 2, 3]},                                           # numbers as text
    {"body_id": [1, -5, 7]},                                      # negative uint64 property
    {"metadata": ['{"a": 1}', "[1, 2]", None]},                   # metadata not a JSON object
])
def test_arrow_and_pandas_refuse_bad_rows_with_the_same_message(bad):
    base = {"pt_position_x": [0.0, 1.0, 2.0], "pt_position_y": [0.0, 1.0, 2.0], "pt_position_z": [0.0, 1.0, 2.0]}
    cols = {**base, **{k: (v.to_pylist() if isinstance(v, pa.Array) else v) for k, v in bad.items()}}
    arrow = pa.table({**{k: pa.array(v) for k, v in base.items()},
                      **{k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in bad.items()}})
    msg_arrow = _err(arrow, props=SITE_PROPS)
    if "id" in bad and isinstance(bad["id"], pa.Array) and bad["id"].type == pa.uint64():
        df = pd.DataFrame({**cols, "id": np.array([1, 2**63, 3], dtype=np.uint64)})
    else:
        df = pd.DataFrame(cols)
    assert msg_arrow == _err(df, props=SITE_PROPS)
    assert "rows [1]" in msg_arrow or "JSON" in msg_arrow or "text" in msg_arrow or "booleans" in msg_arrow


def test_zorder_is_the_stable_argsort_of_morton_keys():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 5000, (50_000, 3)).astype(float)
    pts[::97] = np.nan
    key = nt.morton_key(pts)
    assert (key == nt.morton_key([pts[:, 0], pts[:, 1], pts[:, 2]])).all()
    assert (nt.zorder(key) == np.argsort(key, kind="stable")).all()
    small = key & np.uint64(0xFFF)
    assert (nt.zorder(small) == np.argsort(small, kind="stable")).all()


def _tiled_sites(copies: int) -> pa.Table:
    """The real navis synapse sites, tiled ``copies`` times with an offset along x per copy."""
    df = navis_sites()
    parts = []
    for k in range(copies):
        part = df.copy()
        part["pt_position_x"] = part["pt_position_x"] + k * 2000
        part = part.drop(columns=["pt_root_id"])
        parts.append(part)
    return pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False)


def test_large_arrow_append_is_sorted_once_and_keeps_ids(ann_lake):
    rows = _tiled_sites(32)  # ~290,000 rows: more than one stream slice
    assert len(rows) > nt.STREAM_SLICE
    t = create_table(ann_lake, "hemibrain", "bulk_sites", "point", properties=SITE_PROPS)
    v0 = t.version
    ids = t.append(rows)
    assert t.version == v0 + 1  # one commit
    assert ids.tolist() == list(range(1, len(rows) + 1))  # ids in input order
    got = t.query(ids=[1, len(rows) // 2, len(rows)]).df()
    for i, r in zip([0, len(rows) // 2 - 1, len(rows) - 1], got.itertuples(), strict=True):
        assert r.pt_position_x == rows.column("pt_position_x")[i].as_py()
        assert r.connector_id == rows.column("connector_id")[i].as_py()
    # stored order: one Morton sort of all rows (keys of the whole load never decrease along the files)
    stored = pa.concat_tables([pq.read_table(f.removeprefix("file://"), columns=[
        "pt_position_x", "pt_position_y", "pt_position_z"]) for f in t.delta().file_uris()])
    pts = np.stack([stored.column(c).to_numpy() for c in stored.column_names], axis=1)
    assert len(pts) == len(rows)
    assert (np.diff(nt.morton_key(pts).astype(np.int64)) >= 0).all()
    # row groups of ROW_GROUP_ROWS rows, with statistics (the bbox index)
    md = pq.ParquetFile(t.delta().file_uris()[0].removeprefix("file://")).metadata
    assert md.row_group(0).num_rows == nt.ROW_GROUP_ROWS
    assert md.row_group(0).column(md.schema.names.index("pt_position_x")).statistics.has_min_max


def test_large_arrow_append_refused_whole_with_global_row_numbers(ann_lake):
    rows = _tiled_sites(30)
    n = len(rows)
    x = rows.column("pt_position_x").to_numpy().astype(float)
    x[n - 5] = np.inf
    bad = rows.set_column(rows.column_names.index("pt_position_x"), "pt_position_x", pa.array(x))
    t = create_table(ann_lake, "hemibrain", "bulk_refused", "point", properties=SITE_PROPS)
    v0 = t.version
    with pytest.raises(InvalidArgument, match=rf"rows \[{n - 5}\]"):
        t.append(bad)
    assert t.version == v0 and t.count() == 0
