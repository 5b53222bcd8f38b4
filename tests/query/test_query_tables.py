"""SQL over every table kind equals the Python API on real data; pins, production rules, reproduce.

The lake: the gala FIB-SEM ground-truth segmentation made proofreadable, synapses at real contact sites
and cell types (tests/proofreading/conftest.py ``build_gala_lake``), materialization version 1; feature
tables built from the hemibrain meta table (Schlegel et al. 2024) in Parquet, Delta, Iceberg and Lance
(tests/registry/conftest.py ``build_tables``).
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from neurolake.errors import CorruptData, InvalidArgument, NotFound, PermissionDenied


def _frame(tab: pa.Table) -> pd.DataFrame:
    return tab.replace_schema_metadata(None).to_pandas().reset_index(drop=True)


def assert_same(sql_tab: pa.Table, py_tab: pa.Table) -> None:
    assert sql_tab.column_names == py_tab.column_names
    for f in py_tab.schema:  # the same Arrow types (uint64 ids included)
        assert sql_tab.schema.field(f.name).type == f.type, f.name
    pd.testing.assert_frame_equal(_frame(sql_tab), _frame(py_tab), check_dtype=True)


@pytest.fixture(scope="module")
def gala(tmp_path_factory):
    from neurolake import open_lake
    from tests.proofreading.conftest import build_gala_lake
    from tests.registry.conftest import build_tables

    root = tmp_path_factory.mktemp("query")
    info = build_gala_lake(root / "lake")
    lake = open_lake(info["path"])
    files = build_tables(root / "features")
    lake.create_datastack("hemibrain", (8, 8, 8))
    for name, path in files.items():
        lake.features.register(name=name, datastack="hemibrain", location=str(path),
                               description=f"hemibrain meta ({name}), Schlegel et al. 2024")
    yield lake, files
    lake.close()


def test_annotation_table_latest_and_pinned_equal_python(gala):
    lake, _ = gala
    t = lake["gala"].table("synapses")
    v0 = t.version
    got = lake.sql("SELECT * FROM gala.synapses ORDER BY id")
    assert_same(got.arrow(), t.query().arrow())
    assert got.run["inputs"][0]["pin"]["delta_version"] == v0
    assert got.run["inputs"][0]["pinned_by"] == "latest"
    # a Delta version pin in the SQL; an ISO timestamp pin equals query(timestamp=)
    ts = pd.Timestamp.now(tz="UTC")
    time.sleep(0.02)
    rows = t.query(limit=3).df()
    t.delete([int(i) for i in rows["id"]], author="test")
    pinned = lake.sql(f'SELECT * FROM gala."synapses@{v0}" ORDER BY id').arrow()
    assert_same(pinned, got.arrow())
    at = lake.sql(f'SELECT * FROM gala."synapses@{ts.isoformat()}" ORDER BY id').arrow()
    assert_same(at, t.query(timestamp=ts.to_pydatetime()).arrow())
    now = lake.sql("SELECT count(*) AS n FROM gala.synapses").arrow()
    assert now["n"][0].as_py() == len(t.query()) == len(got) - 3
    # pins= argument instead of the SQL
    arg = lake.sql("SELECT * FROM gala.synapses ORDER BY id", pins={"gala.synapses": v0})
    assert arg.sha256 == got.sha256 and arg.run["inputs"][0]["pinned_by"] == "argument"


def test_version_tables_connectome_and_edit_log_equal_python(gala):
    lake, _ = gala
    ds = lake["gala"]
    for name in ds.versions.tables(1):
        sql = lake.sql(f"SELECT * FROM gala.v1.{name} ORDER BY id").arrow()
        py = ds.versions.query(name, version=1).arrow()
        assert_same(sql, py.take(pa.compute.sort_indices(py, [("id", "ascending")])))
    edges = lake.sql("SELECT pre, post, n_synapses, size_sum FROM gala.v1.connectome ORDER BY pre, post").df()
    py = ds.connectome(version=1).edges.sort_values(["pre", "post"]).reset_index(drop=True)
    assert len(edges) == len(py) > 0
    assert (edges["pre"].astype("uint64").to_numpy() == py["pre"].to_numpy()).all()
    assert (edges["post"].astype("uint64").to_numpy() == py["post"].to_numpy()).all()
    assert (edges["n_synapses"].to_numpy() == py["n_synapses"].to_numpy()).all()
    assert np.allclose(edges["size_sum"].to_numpy(float), py["size_sum"].to_numpy(float))
    # the edit log after a real merge of two neurons
    seg = ds.segmentation
    sv = ds.versions.query("synapses", version=1, limit=1).df()
    seg.merge(int(sv["pre_pt_supervoxel_id"][0]), int(sv["post_pt_supervoxel_id"][0]), author="ann")
    ops = seg.operations()
    log = lake.sql("SELECT * FROM gala.edits ORDER BY operation_id").df()
    assert list(log["operation_id"]) == [o["operation_id"] for o in ops]
    assert list(log["kind"]) == [o["kind"] for o in ops] and list(log["author"]) == [o["author"] for o in ops]
    assert [list(map(int, r)) for r in log["new_roots"]] == [o["new_roots"] for o in ops]
    first = lake.sql('SELECT count(*) AS n FROM gala."edits@0"').df()
    assert int(first["n"][0]) == 0


@pytest.mark.parametrize("name", ["cell_types", "synapse_counts", "cell_types_iceberg", "synapse_counts_lance",
                                  "roi_counts"])
def test_feature_tables_of_every_format_equal_their_files(gala, name):
    import lance
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    lake, files = gala
    path = files[name]
    got = lake.sql(f"SELECT * FROM features.{name}").arrow()
    if name == "cell_types":
        ref = pq.read_table(path)
    elif name == "synapse_counts":
        ref = DeltaTable(str(path)).to_pyarrow_table()
    elif name == "synapse_counts_lance":
        ref = lance.dataset(str(path)).to_table()
    elif name == "roi_counts":
        ref = pads.dataset(str(path), partitioning="hive").to_table()
    else:
        ref = pads.dataset([str(p) for p in path.rglob("*.parquet")]).to_table()
    assert got.num_rows == ref.num_rows > 0
    cols = [c for c in ref.column_names if c in got.column_names]
    assert set(cols) == set(ref.column_names)
    a = _frame(got.select(cols)).astype(str).sort_values(cols).reset_index(drop=True)
    b = _frame(ref.select(cols)).astype(str).sort_values(cols).reset_index(drop=True)
    for c in cols:
        assert list(a[c]) == list(b[c]), c
    inp = lake.sql(f"SELECT count(*) FROM features.{name}").run["inputs"][0]
    assert inp["kind"] == "feature" and inp["pin"]["fingerprint"] == lake.features.get(name)["fingerprint"]


def test_errors_name_what_exists(gala):
    lake, _ = gala
    cases = [
        ("SELECT * FROM gala.nope", NotFound, "known: cell_types, synapses"),
        ("SELECT * FROM nope.synapses", NotFound, "known: gala, hemibrain"),
        ("SELECT * FROM gala.v99.synapses", NotFound, "versions: [1"),
        ('SELECT * FROM gala."synapses@999"', NotFound, "does not exist (versions 0–"),
        ('SELECT * FROM gala."synapses@yesterday"', InvalidArgument, "pin"),
        ("SELECT * FROM gala.v1.nope", NotFound, "known: cell_types, synapses, connectome"),
        ("SELECT * FROM features.nope", NotFound, "cell_types"),
        ("SELECT * FROM synapses", InvalidArgument, "datastack.table"),
        ("SELECT * FROM gala.synapses WHERE nope = 1", InvalidArgument, "nope"),
        ("SELEC 1", InvalidArgument, "does not parse"),
        ("SELECT 1; SELECT 2", InvalidArgument, "one SQL statement"),
    ]
    for sql, exc, text in cases:
        with pytest.raises(exc) as e:
            lake.sql(sql)
        assert text in str(e.value), (sql, str(e.value))
    with pytest.raises(InvalidArgument, match="pins= names tables the SQL does not read: gala.cell_types"):
        lake.sql("SELECT count(*) FROM gala.synapses", pins={"gala.cell_types": 1})
    # unqualified names resolve in datastack=
    assert lake.sql("SELECT count(*) AS n FROM synapses", datastack="gala").df()["n"][0] == \
        len(lake["gala"].table("synapses").query())


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM glob('/*')",
    "COPY (SELECT 1) TO '/tmp/nl-x.csv'", "ATTACH '/tmp/nl-x.db' AS x", "INSTALL httpfs", "LOAD httpfs",
    "SET enable_external_access = true", "CREATE TABLE t AS SELECT 1", "PRAGMA enable_profiling",
])
def test_forbidden_sql_is_refused(gala, sql):
    lake, _ = gala
    with pytest.raises(PermissionDenied):
        lake.sql(sql)


def test_lake_files_outside_the_inputs_are_refused(gala):
    lake, _ = gala
    db = next(lake.root.glob("*.db"), None) or next(lake.root.rglob("*.sqlite*"), None)
    targets = [str(db)] if db else []
    targets.append(str(lake.root / "lake.json"))
    for target in targets:
        with pytest.raises(PermissionDenied):
            lake.sql(f"SELECT * FROM read_text('{target}') , gala.synapses LIMIT 1")


def test_production_rules(gala):
    lake, _ = gala
    with pytest.raises(InvalidArgument, match="not pinned: gala.synapses"):
        lake.sql("SELECT count(*) FROM gala.synapses", mode="production")
    with pytest.raises(InvalidArgument, match="not pinned: gala.v1.synapses"):
        lake.sql("SELECT count(*) FROM gala.latest.synapses", mode="production")
    with pytest.raises(InvalidArgument, match="now"):
        lake.sql("SELECT count(*) FROM gala.v1.synapses WHERE created < now()", mode="production")
    with pytest.raises(InvalidArgument, match="current_timestamp"):
        lake.sql("SELECT current_timestamp, count(*) FROM gala.v1.synapses", mode="production")
    with pytest.raises(InvalidArgument, match="LIMIT without ORDER BY"):
        lake.sql("SELECT * FROM gala.v1.synapses LIMIT 5", mode="production")
    with pytest.raises(InvalidArgument, match="sample"):
        lake.sql("SELECT * FROM gala.v1.synapses", mode="production", sample=0.5)
    with pytest.raises(InvalidArgument, match="timeout_s"):
        lake.sql("SELECT * FROM gala.v1.synapses", mode="production", timeout_s=1)
    ok = lake.sql("SELECT * FROM gala.v1.synapses ORDER BY id LIMIT 5", mode="production")
    assert len(ok) == 5 and ok.run["mode"] == "production" and ok.run["ordered_by"] == "query"


def test_exploratory_sample_and_time_bound(gala):
    lake, _ = gala
    full = lake.sql("SELECT count(*) AS n FROM gala.v1.synapses").df()["n"][0]
    half = lake.sql("SELECT count(*) AS n FROM gala.v1.synapses", sample=0.5)
    assert 0 < half.df()["n"][0] < full
    assert half.run["sample"] == {"fraction": 0.5, "seed": 42, "method": "bernoulli"}
    slow = lake.sql("SELECT count(*) FROM gala.v1.synapses a, gala.v1.synapses b, gala.v1.synapses c, "
                    "range(1000) r WHERE a.size + b.size + c.size + r.range > 0", timeout_s=0.2)
    assert slow.partial and slow.run["partial"] is True and slow.run["timeout_s"] == 0.2


def test_results_are_ordered_and_hashed_stably(gala):
    lake, _ = gala
    a = lake.sql("SELECT cell_type, count(*) AS n FROM gala.v1.cell_types GROUP BY cell_type")
    b = lake.sql("SELECT cell_type, count(*) AS n FROM gala.v1.cell_types GROUP BY cell_type")
    assert a.run["ordered_by"] == "all" and a.sha256 == b.sha256
    assert list(a.df()["cell_type"]) == sorted(a.df()["cell_type"])


def _copy_lake(gala, tmp_path):
    from neurolake import open_lake

    lake, _ = gala
    dst = tmp_path / "lake"
    shutil.copytree(lake.root, dst)
    return open_lake(dst)


def test_production_run_reproduced_identical_after_new_data_edits_and_version(gala, tmp_path):
    from tests.proofreading.conftest import contact_sites

    lake = _copy_lake(gala, tmp_path)
    ds = lake["gala"]
    v = ds.table("synapses").version
    sql = (f'SELECT c.cell_type, count(*) AS n, sum(s.size) AS size, (SELECT count(*) FROM gala."synapses@{v}") '
           f'AS live_rows FROM gala.v1.synapses s JOIN gala.v1.cell_types c ON c.pt_root_id = s.pre_pt_root_id '
           f'GROUP BY ALL ORDER BY c.cell_type')
    first = lake.sql(sql, mode="production", save=True)
    assert len(first) > 0
    # more annotations, a proofreading edit and a new materialization
    vol = lake.layer("gala", "segmentation").cutout(x=(0, 200), y=(0, 100), z=(0, 50))
    ds.table("synapses").append(contact_sites(vol, 50, seed=7), author="more")
    ds.table("cell_types").append(pd.DataFrame({"pt_position": [[5, 5, 5]], "cell_type": ["new"]}), author="more")
    sv = ds.versions.query("synapses", version=1, limit=2).df()
    ds.segmentation.merge(int(sv["pre_pt_supervoxel_id"][1]), int(sv["post_pt_supervoxel_id"][1]), author="x")
    ds.versions.create()
    rep = lake.reproduce(first.run_id)
    assert rep["status"] == "identical", rep
    assert rep["message"] == f"identical (sha256 {first.sha256})"
    # the unpinned equivalent over the live tables now differs, and reproduce of a changed result says where
    live = lake.sql(sql.replace(f'gala."synapses@{v}"', "gala.synapses").replace("gala.v1.", "gala.latest."))
    assert live.sha256 != first.sha256
    lake.close()


def test_reproduce_reports_a_gone_input_precisely(gala, tmp_path):
    from neurolake.provenance.runs import delete_run

    lake = _copy_lake(gala, tmp_path)
    for r in lake.runs(mode="production", limit=1000):  # the copy starts with no protecting runs
        delete_run(lake, r["run_id"])
    ds = lake["gala"]
    ds.versions.create()
    run = lake.sql("SELECT count(*) FROM gala.v1.synapses")  # exploratory: does not protect version 1
    ds.versions.expire(1)
    rep = lake.reproduce(run.run_id)
    assert rep["status"] == "input_gone"
    assert "gala.v1.synapses pinned at materialization version 1" in rep["message"]
    assert "expired" in rep["message"]
    # a manifest file works as well as a run id
    path = tmp_path / "m.json"
    import json

    path.write_text(json.dumps(run.manifest))
    assert lake.reproduce(path)["status"] == "input_gone"
    with pytest.raises(NotFound):
        lake.reproduce("00000000-0000-0000-0000-000000000000")
    lake.close()


def test_reproduce_after_vacuum_names_the_files(gala, tmp_path):
    lake = _copy_lake(gala, tmp_path)
    t = lake["gala"].table("synapses")
    v = t.version
    run = lake.sql(f'SELECT count(*) AS n FROM gala."synapses@{v}"')
    ids = [int(i) for i in t.query(limit=5).df()["id"]]
    t.delete(ids, author="test")  # rewrites the data files
    # files of an old version are removed by a vacuum (exploratory runs do not protect them)
    from deltalake import DeltaTable

    DeltaTable(str(t.path)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(CorruptData, match=f"pinned at Delta version {v}"):
        lake.sql(f'SELECT count(*) AS n FROM gala."synapses@{v}"')
    rep = lake.reproduce(run.run_id)
    assert rep["status"] == "input_gone"
    assert f"gala.synapses pinned at Delta version {v}" in rep["message"] and "vacuumed" in rep["message"]
    lake.close()


def test_result_file_carries_the_manifest(gala, tmp_path):
    import json

    import pyarrow.parquet as pq

    lake, _ = gala
    out = tmp_path / "syn.parquet"
    res = lake.sql("SELECT * FROM gala.v1.synapses ORDER BY id", output=out, mode="production")
    meta = pq.read_schema(out).metadata
    assert json.loads(meta[b"openlineage"])["run"]["runId"] == res.run_id
    side = json.loads((tmp_path / "syn.parquet.manifest.json").read_text())
    assert side == res.manifest
    assert pq.read_table(out).num_rows == len(res)
    assert lake.reproduce(out)["status"] == "identical"


def test_every_recorded_manifest_is_a_valid_openlineage_run_event(gala):
    from neurolake.query.manifest import validate_event

    lake, _ = gala
    runs = lake.runs(limit=1000)
    assert len(runs) >= 20
    kinds = set()
    for r in runs:
        m = lake.run(r["run_id"])["manifest"]
        validate_event(m)
        kinds |= {i["kind"] for i in m["run"]["facets"]["neurolake"]["inputs"]}
        assert m["run"]["runId"] == r["run_id"]
    assert kinds >= {"annotation", "version_table", "connectome", "edits", "feature"}
