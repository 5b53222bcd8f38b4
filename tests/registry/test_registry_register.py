"""Registering real feature tables in all four formats: detection, validation, status, lineage, search."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from neurolake.access.models import AuditEvent
from neurolake.catalog import FeatureRegistry, crawl, find_tables
from neurolake.catalog.models import FeatureTable
from neurolake.errors import AlreadyExists, Conflict, CorruptData, InvalidArgument, NotFound


def _counts(lake):
    with lake.catalog.session() as s:
        return (s.scalar(select(func.count()).select_from(FeatureTable)),
                s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "feature.register")))


def test_registry_four_formats_detected(reg_lake, feature_files):
    reg = FeatureRegistry(reg_lake)
    e = {n: reg.register(name=n, datastack="hemibrain", location=str(p)) for n, p in feature_files.items()}
    assert {n: x["format"] for n, x in e.items()} == {
        "cell_types": "parquet", "synapse_counts": "delta", "synapse_counts_lance": "lance",
        "cell_types_iceberg": "iceberg", "roi_counts": "parquet"}
    for n in ("cell_types", "synapse_counts", "synapse_counts_lance", "cell_types_iceberg"):
        assert e[n]["row_count"] == 25397, n  # the hemibrain table has 25,397 neurons
        assert e[n]["size_bytes"] > 0 and e[n]["status"] == "draft"
    assert e["roi_counts"]["row_count"] == pq.read_table(feature_files["roi_counts"]).num_rows
    assert [c["name"] for c in e["cell_types"]["schema"]] == ["bodyId", "type", "instance", "cell_class", "side",
                                                            "cellBodyFiber"]
    assert e["cell_types"]["schema"][0]["type"] == "int64"
    assert e["cell_types"]["fingerprint"]["kind"] == "parquet_sha256"
    assert len(e["cell_types"]["fingerprint"]["value"]) == 64
    assert e["synapse_counts"]["fingerprint"] == {"kind": "delta_version", "value": 0}
    assert e["synapse_counts"]["partition_columns"] == ["side"]
    assert e["synapse_counts"]["snapshot_time"] is not None
    assert e["synapse_counts_lance"]["fingerprint"]["kind"] == "lance_version"
    assert e["cell_types_iceberg"]["fingerprint"]["kind"] == "iceberg_snapshot"
    assert isinstance(e["cell_types_iceberg"]["fingerprint"]["value"], int)
    assert e["cell_types_iceberg"]["partition_columns"] == ["side"]
    assert e["cell_types_iceberg"]["hash_functions"]["side"]["transform"] == "identity"
    assert e["roi_counts"]["partition_columns"] == ["type"]
    assert {c["name"] for c in e["roi_counts"]["schema"]} >= {"type", "roi", "n_synapses", "bodyId"}
    # audit: one registration event per table
    ev = reg_lake.access.audit_log(action="feature.register")
    assert sorted(x["target"] for x in ev) == sorted(feature_files)
    assert reg.verify("synapse_counts")["ok"]
    # grants: Iceberg → the snapshot's data files, Lance → every file, Delta → the version's data files
    ice = reg.signed_urls("cell_types_iceberg", base_url="http://h")
    assert ice["urls"] and all(u.endswith(".parquet") and "/data/" in u.split("/v1/", 1)[1] for u in ice["urls"])
    assert len(ice["urls"]) == len({f["path"] for f in reg.get("cell_types_iceberg", with_files=True)["files"]
                                     if f.get("data")})
    lan = reg.signed_urls("synapse_counts_lance", base_url="http://h")
    assert len(lan["urls"]) == e["synapse_counts_lance"]["file_count"]
    dl = reg.signed_urls("synapse_counts", base_url="http://h")
    assert {f["partition"]["side"] for f in dl["files"]} == {"left", "right", "center", "na", "none", "unknown"}


def test_registry_full_entry_and_declared_schema(reg_lake, feature_files):
    from neurolake.annotations import create_table
    from neurolake.materialize import materialize

    create_table(reg_lake, "hemibrain", "cells", "cell_type")
    v = materialize(reg_lake, "hemibrain", tables=[])["version"]
    reg = FeatureRegistry(reg_lake)
    e = reg.register({
        "name": "cell_types", "datastack": "hemibrain", "location": str(feature_files["cell_types"]),
        "format": "parquet", "description": "Hemibrain neuron annotations (type, lineage) from Schlegel et al. 2024",
        "schema": [{"name": "bodyId", "type": "int64", "description": "hemibrain body id"},
                   {"name": "type", "type": "string"}],
        "column_descriptions": {"cell_class": "coarse class"},
        "snapshot_time": "2024-02-15T00:00:00Z", "time_range": ["2020-01-01T00:00:00Z", "2024-02-15T00:00:00Z"],
        "materialization_version": v, "owner_team": "flyconnectome", "owner_person": "Philipp Schlegel",
        "invalidation_radius_nm": 500.0, "licence": "cite Schlegel et al. 2024", "retention_days": 365,
        "citation": "Schlegel P et al. Nature (2024)", "tags": ["hemibrain", "cell-types"],
        "references": [{"table": "cells", "columns": ["cell_type", "pt_position_x"]}],
        "pipeline": "flywire_annotations@27e0689", "hash_functions": {"bodyId": "none"},
    })
    assert e["materialization_version"] == v and e["warnings"] == []
    cols = {c["name"]: c for c in e["schema"]}
    assert cols["bodyId"]["description"] == "hemibrain body id"
    assert cols["cell_class"]["description"] == "coarse class"
    assert e["expires_at"] is not None and e["owner_person"] == "Philipp Schlegel"
    assert e["time_range"][0].startswith("2020-01-01")
    assert e["provenance"]["action"] == "feature.register"


@pytest.mark.parametrize("bad,error,field", [
    ({"colour": "red"}, InvalidArgument, "colour"),
    ({"location": None}, InvalidArgument, "location"),
    ({"name": "cell types"}, InvalidArgument, "feature table"),
    ({"datastack": "nope"}, NotFound, None),
    ({"location": "/nonexistent/features.parquet"}, NotFound, "location"),
    ({"location": "ftp://x/y"}, InvalidArgument, "location"),
    ({"format": "csv"}, InvalidArgument, "format"),
    ({"format": "delta"}, InvalidArgument, "format"),
    ({"schema": [{"name": "soma_size_nm3"}]}, InvalidArgument, "schema"),
    ({"schema": {"bodyId": "string"}}, InvalidArgument, "schema"),
    ({"column_descriptions": {"nope": "x"}}, InvalidArgument, "column_descriptions"),
    ({"partition_columns": ["side"]}, InvalidArgument, "partition_columns"),
    ({"materialization_version": 99}, NotFound, "materialization_version"),
    ({"materialization_version": -1}, InvalidArgument, "materialization_version"),
    ({"references": [{"table": "no_such_table", "columns": []}]}, NotFound, "references"),
    ({"references": [{"table": "cells", "columns": ["soma_volume"]}]}, InvalidArgument, "references.columns"),
    ({"derived_from": ["missing_table"]}, NotFound, "derived_from"),
    ({"status": "deprecated"}, InvalidArgument, "status"),
    ({"status": "final"}, InvalidArgument, "status"),
    ({"tags": ["has space"]}, InvalidArgument, "tags"),
    ({"time_range": ["2024-01-02", "2024-01-01"]}, InvalidArgument, "time_range"),
    ({"snapshot_time": "yesterday"}, InvalidArgument, "snapshot_time"),
    ({"retention_days": 0}, InvalidArgument, "retention_days"),
    ({"invalidation_radius_nm": "far"}, InvalidArgument, "invalidation_radius_nm"),
])
def test_registry_validation_failure_registers_nothing(reg_lake, feature_files, bad, error, field):
    from neurolake.annotations import create_table

    create_table(reg_lake, "hemibrain", "cells", "cell_type")
    reg = FeatureRegistry(reg_lake)
    before = _counts(reg_lake)
    spec = {"name": "cell_types", "datastack": "hemibrain", "location": str(feature_files["cell_types"]), **bad}
    with pytest.raises(error) as ei:
        reg.register(spec)
    if field:
        assert ei.value.detail.get("field") == field, ei.value.detail
    assert ei.value.message  # a human message naming what is wrong
    assert _counts(reg_lake) == before


def test_registry_corrupt_and_duplicate(reg_lake, feature_files, tmp_path):
    reg = FeatureRegistry(reg_lake)
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(CorruptData):
        reg.register(name="broken", datastack="hemibrain", location=str(bad))
    reg.register(name="cell_types", datastack="hemibrain", location=str(feature_files["cell_types"]))
    before = _counts(reg_lake)
    with pytest.raises(AlreadyExists):
        reg.register(name="cell_types", datastack="hemibrain", location=str(feature_files["synapse_counts"]))
    assert _counts(reg_lake) == before
    # unique per datastack, not globally
    reg.register(name="cell_types", datastack="open_ds", location=str(feature_files["cell_types"]))
    with pytest.raises(InvalidArgument, match="several datastacks"):
        reg.get("cell_types")
    assert reg.get("cell_types", "open_ds")["datastack"] == "open_ds"


def test_registry_status_and_immutability(reg_lake, feature_files):
    reg = FeatureRegistry(reg_lake)
    reg.register(name="counts_v1", datastack="hemibrain", location=str(feature_files["synapse_counts"]))
    reg.register(name="counts_v2", datastack="hemibrain", location=str(feature_files["synapse_counts_lance"]),
                 derived_from=["counts_v1"])
    # a draft can change anything (data-describing fields are re-validated)
    e = reg.update("counts_v1", description="per-neuron synapse counts", tags=["synapses"])
    assert e["description"] == "per-neuron synapse counts"
    with pytest.raises(InvalidArgument):
        reg.update("counts_v1", format="iceberg")
    assert reg.get("counts_v1")["format"] == "delta"
    assert reg.set_status("counts_v1", "published")["status"] == "published"
    with pytest.raises(Conflict) as ei:
        reg.update("counts_v1", description="changed")
    assert ei.value.detail["fields"] == ["description"]
    with pytest.raises(Conflict):
        reg.update("counts_v1", location=str(feature_files["cell_types"]))
    with pytest.raises(Conflict):
        reg.set_status("counts_v1", "draft")
    with pytest.raises(Conflict):
        reg.delete("counts_v1")
    # lineage and deprecation stay mutable
    e = reg.update("counts_v1", superseded_by="counts_v2")
    assert e["superseded_by"] == "counts_v2"
    with pytest.raises(NotFound):
        reg.update("counts_v1", superseded_by="counts_v9")
    e = reg.set_status("counts_v1", "deprecated", deprecation="use counts_v2")
    assert (e["status"], e["deprecation"]) == ("deprecated", "use counts_v2")
    with pytest.raises(Conflict):
        reg.set_status("counts_v1", "published")
    assert reg.get("counts_v2")["derived_from"] == ["counts_v1"]
    ev = reg_lake.access.audit_log(action="feature.status")
    assert [(x["detail"]["old"], x["detail"]["new"]) for x in reversed(ev)] == [("draft", "published"),
                                                                                ("published", "deprecated")]
    reg.delete("counts_v2")
    with pytest.raises(NotFound):
        reg.get("counts_v2")


def test_registry_search(reg_lake, feature_files):
    from neurolake.materialize import materialize

    v = materialize(reg_lake, "hemibrain", tables=[])["version"]
    reg = FeatureRegistry(reg_lake)
    reg.register(name="cell_types", datastack="hemibrain", location=str(feature_files["cell_types"]),
                 tags=["cells", "hemibrain"], owner_team="flyconnectome", materialization_version=v,
                 description="Neuron types and hemilineages curated for whole-brain cell typing")
    reg.register(name="synapse_counts", datastack="hemibrain", location=str(feature_files["synapse_counts"]),
                 tags=["synapses"], owner_person="Jane Doe", column_descriptions={"pre": "presynapse count"})
    reg.register(name="roi_counts", datastack="open_ds", location=str(feature_files["roi_counts"]),
                 tags=["synapses", "navis"], status="published")
    names = lambda rows: sorted(r["name"] for r in rows)  # noqa: E731
    assert names(reg.search(tag="synapses")) == ["roi_counts", "synapse_counts"]
    assert names(reg.search(tag="SYNAPSES", datastack="open_ds")) == ["roi_counts"]
    assert names(reg.search(name="counts")) == ["roi_counts", "synapse_counts"]
    assert names(reg.search(name="cell*")) == ["cell_types"]
    assert names(reg.search(version=v)) == ["cell_types"]
    assert names(reg.search(status="published")) == ["roi_counts"]
    assert names(reg.search(owner="flyconn")) == ["cell_types"]
    assert names(reg.search(owner="doe")) == ["synapse_counts"]
    assert names(reg.search(column="bodyid")) == ["cell_types", "roi_counts", "synapse_counts"]
    assert names(reg.search(column="cellBodyFiber")) == ["cell_types"]
    assert names(reg.search(q="whole-brain typing")) == ["cell_types"]
    assert names(reg.search(q="presynapse")) == ["synapse_counts"]
    assert names(reg.search(q="typing presynapse")) == []
    assert len(reg.search(limit=1)) == 1 and names(reg.search(limit=2, offset=2)) == ["roi_counts"]
    with pytest.raises(InvalidArgument):
        reg.search(status="gone")


def test_registry_crawler(reg_lake, feature_files, tmp_path):
    root = tmp_path / "crawl"
    root.mkdir()
    for n in ("synapse_counts", "roi_counts", "synapse_counts.lance"):
        shutil.copytree(feature_files[n.replace(".lance", "_lance")] if n.endswith(".lance") else feature_files[n],
                        root / "team" / n)
    shutil.copytree(feature_files["cell_types_iceberg"], root / "iceberg" / "cell_types")
    shutil.copy(feature_files["cell_types"], root / "cell_types.parquet")
    (root / "README.txt").write_text("not a table")
    (root / "team" / "broken.parquet").write_bytes(b"garbage")
    found = {f["location"].removeprefix(str(root) + "/"): f["format"] for f in find_tables(str(root))}
    assert found == {"cell_types.parquet": "parquet", "iceberg/cell_types": "iceberg",
                     "team/broken.parquet": "parquet", "team/roi_counts": "parquet",
                     "team/synapse_counts": "delta", "team/synapse_counts.lance": "lance"}
    res = crawl(reg_lake, str(root), "hemibrain", tags=["lab"])
    got = {e["name"]: (e["format"], e["status"], e["partition_columns"]) for e in res["registered"]}
    assert got == {"cell_types": ("parquet", "draft", []), "iceberg_cell_types": ("iceberg", "draft", ["side"]),
                   "roi_counts": ("parquet", "draft", ["type"]), "synapse_counts": ("delta", "draft", ["side"]),
                   "team_synapse_counts": ("lance", "draft", [])}, got
    assert len(res["registered"]) == 5
    assert [e["location"].endswith("broken.parquet") for e in res["errors"]] == [True]
    assert res["errors"][0]["error"] == "corrupt_data"
    assert all("crawled" in e["tags"] and "lab" in e["tags"] for e in res["registered"])
    again = crawl(reg_lake, str(root), "hemibrain")
    assert again["registered"] == [] and len(again["skipped"]) == 5


def test_registry_postgres(new_pg_database, tmp_path, feature_files):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "pglake", database_url=new_pg_database())
    try:
        lake.create_datastack("hemibrain", (8, 8, 8))
        reg = FeatureRegistry(lake)
        reg.register(name="synapse_counts", datastack="hemibrain", location=str(feature_files["synapse_counts"]),
                     tags=["synapses"])
        assert [r["name"] for r in reg.search(tag="synapses", column="pre")] == ["synapse_counts"]
        with pytest.raises(AlreadyExists):
            reg.register(name="synapse_counts", datastack="hemibrain", location=str(feature_files["cell_types"]))
        acc = lake.access
        acc.add_user("ann")
        tok = acc.create_token("ann")["token"]
        assert acc.authenticate(tok).name == "ann"
        from neurolake.access import Quotas

        q = Quotas(lake)
        p = acc.principal("ann")
        q.add(p, 3, 1000)
        q.flush()
        assert Quotas(lake).usage(p)["bytes"] == 1000
    finally:
        lake.close()


def test_registry_expired_materialization_warns(reg_lake, feature_files):
    from neurolake.materialize import expire, materialize

    v1 = materialize(reg_lake, "hemibrain", tables=[])["version"]
    materialize(reg_lake, "hemibrain", tables=[])
    expire(reg_lake, "hemibrain", v1)
    e = FeatureRegistry(reg_lake).register(name="cell_types", datastack="hemibrain",
                                           location=str(feature_files["cell_types"]), materialization_version=v1)
    assert e["materialization_version"] == v1
    assert e["warnings"] == [f"materialization version {v1} of datastack 'hemibrain' is expired"]


def test_registry_feature_roots_restrict_locations(reg_lake, feature_files, monkeypatch, tmp_path):
    from dataclasses import replace

    from neurolake.errors import PermissionDenied

    monkeypatch.setattr(reg_lake, "settings", replace(reg_lake.settings, feature_roots=(str(tmp_path / "elsewhere"),)))
    reg = FeatureRegistry(reg_lake)
    before = _counts(reg_lake)
    with pytest.raises(PermissionDenied) as ei:
        reg.register(name="cell_types", datastack="hemibrain", location=str(feature_files["cell_types"]))
    assert ei.value.detail["field"] == "location"
    with pytest.raises(PermissionDenied):
        crawl(reg_lake, str(feature_files["cell_types"].parent), "hemibrain")
    assert _counts(reg_lake) == before
    monkeypatch.setattr(reg_lake, "settings",
                        replace(reg_lake.settings, feature_roots=(str(feature_files["cell_types"].parent),)))
    assert reg.register(name="cell_types", datastack="hemibrain",
                        location=str(feature_files["cell_types"]))["format"] == "parquet"


def test_quota_counts_stay_visible_while_a_flush_writes_them(reg_lake, monkeypatch):
    """A flush moves pending counts to the catalog; a check that runs meanwhile (another request's thread)
    must still see them. Before the fix, the counts vanished between the two and a user over quota got a
    200 (CI failure of tests/query/test_query_http.py::test_queries_count_against_the_quota)."""
    import contextlib
    import threading

    from neurolake.access import Quotas
    from neurolake.errors import QuotaExceeded

    acc = reg_lake.access
    acc.add_user("quo", quota_bytes=1000, quota_period_s=3600)
    p = acc.principal("quo")
    q = Quotas(reg_lake)
    q.check(p)  # loads the window's base (0, 0)
    q.add(p, 1, 5000, flush=False)
    with pytest.raises(QuotaExceeded):
        q.check(p)
    entered, go = threading.Event(), threading.Event()
    real = reg_lake.catalog.session

    @contextlib.contextmanager
    def slow_session():
        entered.set()
        assert go.wait(10)
        with real() as s:
            yield s

    monkeypatch.setattr(reg_lake.catalog, "session", slow_session)
    t = threading.Thread(target=q.flush)
    t.start()
    try:
        assert entered.wait(10)  # the flush has taken the pending counts and not written them yet
        assert q.usage(p)["bytes"] == 5000
        with pytest.raises(QuotaExceeded):
            q.check(p)
    finally:
        go.set()
        t.join(10)
    monkeypatch.setattr(reg_lake.catalog, "session", real)
    assert q.usage(p)["bytes"] == 5000 and Quotas(reg_lake).usage(p)["bytes"] == 5000
    with pytest.raises(QuotaExceeded):
        q.check(p)
