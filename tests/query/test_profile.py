"""explain / profile (issue 12, points 6 and 7): plan, estimates, runtime class, layout report,
DuckDB profiles normalised across the 1.x and 2.x layouts, bottleneck hints.

Data: a synapse-like table of 196 608 rows written here as Parquet in 4096-row groups, once in
Morton order of its ctr_pt position (as annotation tables are written) and once shuffled, read by
DuckDB views over ``read_parquet([...])`` as the engine makes them.
"""

from __future__ import annotations

import json
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurolake.annotations.table import morton_key
from neurolake.errors import InvalidArgument, NotFound
from neurolake.query import profile as P

N = 48 * 4096
BOX = ("ctr_pt_position_x BETWEEN 20000 AND 30000 AND ctr_pt_position_y BETWEEN 60000 AND 70000 "
       "AND ctr_pt_position_z BETWEEN 1000 AND 1500")


def _table(rng: np.random.Generator) -> pa.Table:
    pos = rng.uniform([0, 0, 0], [100_000, 100_000, 5_000], size=(N, 3))
    roots = np.int64(864691135000000000) + rng.integers(0, 5000, size=(N, 2))
    return pa.table({
        "id": np.arange(1, N + 1, dtype=np.int64),
        "pre_pt_root_id": roots[:, 0], "post_pt_root_id": roots[:, 1],
        "ctr_pt_position_x": pos[:, 0], "ctr_pt_position_y": pos[:, 1], "ctr_pt_position_z": pos[:, 2],
        "size": rng.integers(1, 2000, N),
        "cell_type": np.array(["L23", "L4", "L5", "L6"])[rng.integers(0, 4, N)],
        "created": pa.array(np.datetime64("2024-01-01T00:00:00", "us")
                            + (np.arange(N) * 1_000_000).astype("timedelta64[us]")),
        "deleted": pa.array(np.where(np.arange(N) % 50 == 0, np.datetime64("2024-06-01T00:00:00", "us"),
                                     np.datetime64("NaT")), pa.timestamp("us")),
    })


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """(connection, inputs, folder): views ``syn`` (Morton-sorted), ``syn_shuf`` (same rows shuffled)
    and ``syn_part`` (hive-partitioned by cell_type)."""
    root = tmp_path_factory.mktemp("profile")
    rng = np.random.default_rng(7)
    tab = _table(rng)
    pos = np.column_stack([tab[c].to_numpy() for c in ("ctr_pt_position_x", "ctr_pt_position_y",
                                                       "ctr_pt_position_z")])
    sorted_tab = tab.take(np.argsort(morton_key(pos), kind="stable"))
    files = {"syn": [], "syn_shuf": [], "syn_part": []}
    half = N // 2
    for i, part in enumerate((sorted_tab.slice(0, half), sorted_tab.slice(half))):
        f = root / f"sorted-{i}.parquet"
        pq.write_table(part, f, row_group_size=4096)
        files["syn"].append(str(f))
    f = root / "shuffled.parquet"
    pq.write_table(tab.take(rng.permutation(N)), f, row_group_size=4096)
    files["syn_shuf"].append(str(f))
    for ct in ("L23", "L4", "L5", "L6"):
        d = root / "part" / f"cell_type={ct}"
        d.mkdir(parents=True)
        sub = sorted_tab.filter(pa.array(sorted_tab["cell_type"].to_numpy(zero_copy_only=False) == ct))
        pq.write_table(sub.drop_columns(["cell_type"]), d / "data.parquet", row_group_size=4096)
        files["syn_part"].append(str(d / "data.parquet"))
    con = duckdb.connect()
    for name, fl in files.items():
        hive = ", hive_partitioning = true" if name == "syn_part" else ""
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({fl!r}{hive})")
    # as the engine makes annotation views: a catalog per datastack, ids cast, live rows only
    con.execute("ATTACH ':memory:' AS gerhard2013")
    con.execute("CREATE VIEW gerhard2013.main.synapses AS SELECT CAST(id AS UBIGINT) AS id, "
                "CAST(pre_pt_root_id AS UBIGINT) AS pre_pt_root_id, CAST(post_pt_root_id AS UBIGINT) AS "
                "post_pt_root_id, ctr_pt_position_x, ctr_pt_position_y, ctr_pt_position_z, size, created, "
                f"deleted FROM read_parquet({files['syn']!r}) WHERE deleted IS NULL")
    files["gerhard2013.synapses"] = files["syn"]
    inputs = [{"name": n, "kind": "annotation", "files": fl} for n, fl in files.items()]
    yield con, inputs, root
    con.close()


def _row_groups_with_matches(files: list[str], where) -> int:
    n = 0
    for f in files:
        pf = pq.ParquetFile(f)
        for r in range(pf.num_row_groups):
            t = pf.read_row_group(r, columns=["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"])
            n += bool(where(*(t.column(i).to_numpy() for i in range(3))).any())
    return n


def _in_box(x, y, z):
    return (x >= 20000) & (x <= 30000) & (y >= 60000) & (y <= 70000) & (z >= 1000) & (z <= 1500)


def test_runtime_class_boundaries():
    assert P.runtime_class(0) == "interactive"
    assert P.runtime_class(0.999) == "interactive"
    assert P.runtime_class(1.0) == "short"
    assert P.runtime_class(59.99) == "short"
    assert P.runtime_class(60) == "batch"
    assert P.runtime_class(3599.9) == "batch"
    assert P.runtime_class(3600) == "long"
    assert P.runtime_class(1e9) == "long"
    for bad in (-0.1, float("nan"), float("inf"), "soon", None):
        with pytest.raises(InvalidArgument) as e:
            P.runtime_class(bad)
        assert "seconds" in e.value.message


def test_box_filter_on_sorted_table_prunes_most_row_groups_and_is_served_by_sort(lake):
    con, inputs, _ = lake
    sql = f"SELECT * FROM syn WHERE {BOX}"
    est = P.estimate(con, sql, inputs)
    (scan,) = est["scans"]
    assert scan["table"] == "syn" and scan["row_groups"] == 48
    # pruning is safe: every row group holding a row in the box is kept …
    assert _row_groups_with_matches(inputs[0]["files"], _in_box) <= scan["row_groups_kept"]
    # … and the Morton order lets min/max statistics skip most of the table
    assert scan["row_groups_kept"] <= 5
    assert 0 < scan["bytes"] < sum(os.path.getsize(f) for f in inputs[0]["files"]) / 5
    assert scan["estimated_rows"] > 0 and set(scan["columns"]) >= {"id", "ctr_pt_position_x", "size"}
    layout = P.layout_report(con, sql, inputs)
    assert {e["column"] for e in layout} == {"ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"}
    for e in layout:
        assert e["table"] == "syn" and e["served_by"] == "sort", e
        assert e["row_groups"] == 48 and e["pruned"] >= 16, e
        assert e["column"] in e["predicate"] and ">=" in e["predicate"] and "<=" in e["predicate"]


def test_box_filter_on_shuffled_copy_is_not_served_and_gets_advice(lake):
    con, inputs, _ = lake
    sql = f"SELECT * FROM syn_shuf WHERE {BOX}"
    est = P.estimate(con, sql, inputs)
    (scan,) = est["scans"]
    assert scan["table"] == "syn_shuf" and scan["row_groups_kept"] == scan["row_groups"] == 48
    layout = P.layout_report(con, sql, inputs)
    assert len(layout) == 3
    for e in layout:
        assert e["served_by"] == "none" and e["pruned"] == 0, e
        assert e["advice"] == "sort by ctr_pt (Morton order on the position columns, as annotation tables are written)"
    # the same rows either way
    assert (con.execute(f"SELECT count(*) FROM syn WHERE {BOX}").fetchone()
            == con.execute(f"SELECT count(*) FROM syn_shuf WHERE {BOX}").fetchone())


def test_engine_style_view_box_and_root_id_filters(lake):
    con, inputs, _ = lake
    root = 864691135000000000 + 17
    sql = f"SELECT * FROM gerhard2013.synapses WHERE {BOX} AND pre_pt_root_id = {root}"
    ex = P.explain(con, sql, inputs)
    (scan,) = ex["scans"]
    assert scan["table"] == "gerhard2013.synapses" and scan["row_groups_kept"] <= 5
    by = {e["column"]: e for e in ex["layout"]}
    assert set(by) == {"ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z", "pre_pt_root_id"}
    assert all(by[c]["served_by"] == "sort" for c in by if c.startswith("ctr_pt"))
    assert by["pre_pt_root_id"]["served_by"] == "none" and by["pre_pt_root_id"]["predicate"].startswith("(CAST(")
    assert by["pre_pt_root_id"]["advice"] == "sort by pre_pt_root_id (or cluster rows by it) so row-group min/max ranges become narrow"


def test_partition_statistics_and_other_filters(lake):
    con, inputs, _ = lake
    rep = P.layout_report(con, "SELECT id FROM syn_part WHERE cell_type = 'L5' AND size < 10", inputs)
    by = {e["column"]: e for e in rep}
    assert by["cell_type"]["served_by"] == "partition"
    total = by["cell_type"]["row_groups"]
    kept_l5 = pq.ParquetFile([f for f in inputs[2]["files"] if "cell_type=L5" in f][0]).num_row_groups
    assert by["cell_type"]["pruned"] == total - kept_l5
    # size is random: min/max prunes at most the odd small tail row group of a partition file
    assert by["size"]["served_by"] in ("none", "statistics") and by["size"]["pruned"] <= 4
    assert "sort by size" in by["size"]["advice"]
    # the first 10 s hold 10 rows: min/max skip the row groups without one, though nothing is sorted
    rep = P.layout_report(con, "SELECT * FROM syn_shuf WHERE created < TIMESTAMP '2024-01-01 00:00:10'", inputs)
    assert rep[0]["column"] == "created" and rep[0]["served_by"] == "statistics" and rep[0]["pruned"] >= 38
    assert rep[0]["advice"].startswith("sort by created")
    rep = P.layout_report(con, "SELECT * FROM syn WHERE id <= 20000", inputs)
    assert rep[0]["served_by"] in ("statistics", "none")
    # equality on a string column that is not partitioned: partitioning is the advice
    rep = P.layout_report(con, "SELECT * FROM syn WHERE cell_type IN ('L4', 'L6')", inputs)
    assert rep[0]["column"] == "cell_type" and rep[0]["advice"].startswith("partition by cell_type")
    # an OR is not pushed into the scan: nothing to report
    assert P.layout_report(con, "SELECT * FROM syn WHERE size < 3 OR id < 5", inputs) == []


def test_parse_filter_forms():
    cols = ["my col", "x", "ts", "root"]
    assert P.parse_filter("x>=1000.0", cols) == ("x", ">=", [1000.0])
    assert P.parse_filter("my col='L2/3'", cols) == ("my col", "=", ["L2/3"])
    assert P.parse_filter("optional: root IN (864691135000000001, 2)", cols) == ("root", "in", [864691135000000001, 2])
    assert P.parse_filter("(x IS NOT NULL)", cols) == ("x", "notnull", [])
    op = P.parse_filter("ts>'2024-01-01 10:00:00'::TIMESTAMP", cols)
    assert op[:2] == ("ts", ">") and op[2][0] == 1704103200.0
    assert P.parse_filter("(CAST(root AS UBIGINT) = 5)", cols) == ("root", "=", [5])
    assert P.parse_filter("CAST(root AS UBIGINT) IN (5, 6)", cols) == ("root", "in", [5, 6])
    assert P.parse_filter("optional: Dynamic Filter (x)", cols) is None
    assert P.parse_filter("abs(x)>3", cols) is None


def test_estimate_small_aggregate_is_interactive_and_complete(lake):
    con, inputs, _ = lake
    sql = f"SELECT count(*) AS n, avg(size) AS s FROM syn WHERE {BOX}"
    est = P.estimate(con, sql, inputs)
    assert est["runtime_class"] == "interactive" and 0 < est["predicted_seconds"] < 1
    assert isinstance(est["plan"], list) and est["plan"][0]["name"]
    assert "READ_PARQUET" in est["plan_text"]
    assert est["estimated_rows"] == 1
    assert est["estimated_bytes"] == sum(s["bytes"] for s in est["scans"]) > 0
    json.dumps({k: v for k, v in est.items()})  # JSON-able
    ex = P.explain(con, sql, inputs)
    assert {k: ex[k] for k in est if k != "plan_text"} == {k: v for k, v in est.items() if k != "plan_text"}
    assert len(ex["layout"]) == 3 and "READ_PARQUET" in ex["plan_text"] and "──" in ex["plan_text"]


def test_estimate_corrects_join_and_filter_sizes_from_a_sample(lake):
    con, inputs, _ = lake
    sql = "SELECT a.id, b.size FROM syn a JOIN syn_shuf b USING (id) WHERE b.size > 1900"
    est = P.estimate(con, sql, inputs)
    true = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    join = [o for o in est["operators"] if o["operator"] == "HASH_JOIN"][0]
    assert 0.5 * true <= join["rows"] <= 2 * true, (join, true)
    shuf = [s for s in est["scans"] if s["table"] == "syn_shuf"][0]
    assert 0.5 * true <= shuf["est_rows"] <= 2 * true
    # a self-join of the same view is matched to it twice
    est = P.estimate(con, "SELECT count(*) FROM syn a JOIN syn b ON a.pre_pt_root_id = b.post_pt_root_id", inputs)
    assert [s["table"] for s in est["scans"]] == ["syn", "syn"]


def _profile(con, tmp, sql) -> dict:
    out = tmp / "profile.json"
    if out.exists():
        out.unlink()
    con.execute(f"SET enable_profiling = 'json'; SET profiling_output = '{out}'; SET profiling_mode = 'standard'")
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.execute("PRAGMA disable_profiling")
    raw = json.loads(out.read_text())
    raw["_rows"] = len(rows)
    return raw


# A DuckDB 2.x profile as src/main/query_profiler.cpp (ToResultTree, OperatorMetrics::GetMetrics) and
# src/main/profiler/gathered_metrics.cpp (dotted metric names → nested objects) write it on DuckDB's
# main branch, with the metric names of src/common/metrics.json.
PROFILE_2X = {
    "io": {"total_bytes_read": 5_439_211, "total_bytes_written": 0},
    "operator": [{
        "extra_info": {"Projections": ["#0", "#1"], "Estimated Cardinality": "1"},
        "intermediate_rows": 1, "intermediate_size_bytes": 16, "timing": 0.000012, "type": "PROJECTION",
        "children": [{
            "extra_info": {"Aggregates": ["count_star()", "avg(#0)"]},
            "intermediate_rows": 1, "intermediate_size_bytes": 16, "timing": 0.000310, "type": "UNGROUPED_AGGREGATE",
            "children": [{
                "extra_info": {"Function": "READ_PARQUET", "Projections": "size",
                               "Filters": ["ctr_pt_position_x>=20000.0 AND ctr_pt_position_x<=30000.0"],
                               "Estimated Cardinality": "40140", "Total Files Read": "2"},
                "intermediate_rows": 1022, "intermediate_size_bytes": 8176, "row_groups_scanned": 4,
                "rows_scanned": 16384, "timing": 0.004127, "total_row_groups_to_scan": 48, "type": "TABLE_SCAN",
            }],
        }],
    }],
    "query": {"cpu_time": 0.004449, "sql": "SELECT count(*), avg(size) FROM syn WHERE …",
              "total_intermediate_rows": 1024, "total_intermediate_size_bytes": 8208,
              "total_row_groups_scanned": 4, "total_row_groups_to_scan": 48, "total_rows_scanned": 16384,
              "total_time": 0.0061},
    "system": {"blocked_thread_time": 0.0, "peak_buffer_memory": 3_145_728, "peak_temp_dir_size": 0,
               "total_memory_allocated": 4_194_304},
}


def test_normalize_profile_real_1x_and_2x_give_the_same_shape(lake, tmp_path):
    con, inputs, _ = lake
    sql = "SELECT pre_pt_root_id, count(*) AS n FROM syn_shuf WHERE size > 100 GROUP BY 1 ORDER BY ALL"
    raw = _profile(con, tmp_path, sql)
    one = P.normalize_profile(raw)
    two = P.normalize_profile(PROFILE_2X)
    assert one["duckdb_layout"] == "1.x" and two["duckdb_layout"] == "2.x"
    assert set(one) == set(two) == {"total_s", "cpu_s", "rows_returned", "rows_scanned", "bytes_read",
                                    "peak_memory_bytes", "operators", "duckdb_layout"}
    keys = {"operator", "seconds", "share", "rows", "table", "extra"}
    assert all(set(o) == keys for o in one["operators"] + two["operators"])
    # real values from the real run
    assert one["rows_returned"] == raw["_rows"] > 1000
    assert one["total_s"] > 0 and one["cpu_s"] > 0 and one["rows_scanned"] >= N
    assert one["peak_memory_bytes"] > 0 and len(one["operators"]) == 5
    assert one["operators"] == sorted(one["operators"], key=lambda o: -o["seconds"])
    assert 0.5 < sum(o["share"] for o in one["operators"]) <= 1.0001
    assert {"TABLE_SCAN", "HASH_GROUP_BY"} <= {o["operator"] for o in one["operators"]}
    # the 2.x sample read field by field
    assert (two["total_s"], two["cpu_s"], two["rows_returned"], two["rows_scanned"], two["bytes_read"],
            two["peak_memory_bytes"]) == (0.0061, 0.004449, 1, 16384, 5_439_211, 3_145_728)
    scan = two["operators"][0]
    assert scan["operator"] == "TABLE_SCAN" and scan["rows"] == 1022 and 0.9 < scan["share"] < 0.95
    assert "ctr_pt_position_x" in scan["extra"]
    # scans are named with the estimate's scans
    est = P.estimate(con, sql, inputs)
    named = P.normalize_profile(raw, scans=est["scans"])
    assert [o["table"] for o in named["operators"] if o["operator"] == "TABLE_SCAN"] == ["syn_shuf"]


def test_bottleneck_hint_names_the_scanned_table_when_a_scan_dominates(lake, tmp_path, monkeypatch):
    con, inputs, _ = lake
    monkeypatch.setattr(P, "QUICK_S", 0.0)  # this small table scans in milliseconds; the wording is under test
    sql = f"SELECT * FROM syn_shuf WHERE {BOX}"
    ex = P.estimate(con, sql, inputs, layout=True)  # as the engine would, one planning pass
    assert ex["layout"] == P.layout_report(con, sql, inputs)
    prof = P.normalize_profile(_profile(con, tmp_path, sql), scans=ex["scans"])
    assert prof["operators"][0]["operator"] == "TABLE_SCAN" and prof["operators"][0]["table"] == "syn_shuf"
    hint = P.bottleneck_hint(prof, ex["layout"])
    assert hint.startswith(f"{round(100 * prof['operators'][0]['share'])} % of time scanning syn_shuf: "
                           "the box filter on ctr_pt_position_")
    assert "spatial sort order" in hint and "Morton" in hint


def test_bottleneck_hint_other_cases():
    def prof(*ops):
        return {"operators": [{"operator": o, "seconds": s, "share": s, "rows": r, "table": t, "extra": ""}
                              for o, s, r, t in ops]}
    served = [{"table": "gerhard2013.synapses", "column": "ctr_pt_position_x", "served_by": "sort",
               "row_groups": 100, "pruned": 97, "advice": "served"}]
    h = P.bottleneck_hint(prof(("TABLE_SCAN", 0.87, 10, "gerhard2013.synapses")), served)
    assert h.startswith("87 % of time scanning gerhard2013.synapses: the filter on ctr_pt_position_x is served")
    h = P.bottleneck_hint(prof(("TABLE_SCAN", 0.9, 10, "gerhard2013.synapses")), [])
    assert "a full scan" in h
    h = P.bottleneck_hint(prof(("HASH_JOIN", 0.72, 5_000_000, None), ("TABLE_SCAN", 0.2, 10, "t")), [])
    assert h.startswith("72 % of time in HASH_JOIN: the join produced 5,000,000 rows")
    h = P.bottleneck_hint(prof(("ORDER_BY", 0.6, 10**7, None)), [])
    assert h.startswith("60 % of time in ORDER_BY: sorting 10,000,000 rows")
    h = P.bottleneck_hint(prof(("HASH_JOIN", 0.4, 5, None), ("TABLE_SCAN", 0.35, 10, "t")), [])
    assert h == "no single bottleneck (HASH_JOIN 40 %, TABLE_SCAN 35 %)"
    with pytest.raises(InvalidArgument):
        P.bottleneck_hint({"total_s": 1}, [])
    quick = {"total_s": 0.004, **prof(("TABLE_SCAN", 0.9, 10, "t"))}
    assert P.bottleneck_hint(quick, []) == "no bottleneck worth tuning: the query took 4.0 ms"


def test_errors(lake, tmp_path):
    con, inputs, _ = lake
    with pytest.raises(InvalidArgument) as e:
        P.estimate(con, "SELECT nope FROM syn", inputs)
    assert e.value.detail["field"] == "sql" and "nope" in e.value.message
    with pytest.raises(InvalidArgument):
        P.estimate(con, "  ", inputs)
    with pytest.raises(InvalidArgument) as e:
        P.estimate(con, "SELECT 1", "syn")
    assert e.value.detail["field"] == "inputs"
    with pytest.raises(InvalidArgument) as e:
        P.estimate(con, "SELECT 1", [{"name": "syn"}])
    assert e.value.detail["field"] == "inputs.files"
    missing = str(tmp_path / "gone.parquet")
    with pytest.raises(NotFound) as e:
        P.explain(con, "SELECT 1", [{"name": "gone", "files": [missing]}])
    assert missing in e.value.message
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InvalidArgument) as e:
        P.layout_report(con, "SELECT 1", [{"name": "bad", "files": [str(bad)]}])
    assert "not a readable Parquet file" in e.value.message
    for raw in ({"result": "empty"}, [1, 2], None):
        with pytest.raises(InvalidArgument) as e:
            P.normalize_profile(raw)
        assert e.value.detail["field"] == "profile"


def test_footer_cache_follows_file_changes(tmp_path):
    con = duckdb.connect()
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": np.arange(10_000)}), f, row_group_size=1000)
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet(['{f}'])")
    inp = [{"name": "t", "files": [str(f)]}]
    assert P.estimate(con, "SELECT * FROM t WHERE v < 1500", inp)["scans"][0]["row_groups_kept"] == 2
    pq.write_table(pa.table({"v": np.arange(10_000)}), f, row_group_size=500)
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    scan = P.estimate(con, "SELECT * FROM t WHERE v < 1500", inp)["scans"][0]
    assert (scan["row_groups"], scan["row_groups_kept"]) == (20, 3)


def test_inputs_without_local_files(lake):
    """An empty table (the engine registers an Arrow table, no files) and a file list the planner
    cannot read locally: the estimate still plans, without scan statistics for them."""
    con, inputs, _ = lake
    con.register("empty_arrow", pa.table({"id": pa.array([], pa.int64())}))
    con.execute("CREATE OR REPLACE VIEW empty_t AS SELECT * FROM empty_arrow")
    est = P.estimate(con, "SELECT count(*) FROM empty_t", [{"name": "empty_t", "files": []}])
    assert est["scans"] == [] and est["runtime_class"] == "interactive"
    remote = [{"name": "syn", "files": ["s3://bucket/never-read.parquet"]}]
    est = P.estimate(con, f"SELECT id FROM syn WHERE {BOX}", remote)
    (scan,) = est["scans"]
    assert scan["table"] == "syn" and scan["bytes"] == 0 and scan["row_groups"] == 0
    assert P.layout_report(con, f"SELECT id FROM syn WHERE {BOX}", remote) == []
