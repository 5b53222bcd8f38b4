"""The run store (issue 12, point 3) and the protection of the inputs production runs pinned (point 5).

Real data: the MICrONS pinky100 synapse and soma tables (``../shared/data/connectome_microns_pinky100_pyc``)
as annotation tables of a fresh lake, their materialization versions and Delta versions. Runs are the dicts
the query engine records (docs/query.md), built here from those real tables and versions.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from neurolake.errors import Conflict, InvalidArgument, NotFound
from neurolake.provenance.runs import delete_run, get_run, list_runs, protecting_runs, save_run

PINKY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "connectome_microns_pinky100_pyc"
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _somas() -> pd.DataFrame:
    soma = pd.read_csv(PINKY / "soma.csv")
    xyz = soma["loc"].str.strip("[]").str.split(expand=True).astype(np.int64)
    return pd.DataFrame({"pt_position_x": xyz[0], "pt_position_y": xyz[1], "pt_position_z": xyz[2],
                         "pt_root_id": soma.segment_id, "manual_id": soma.manual_id})


@pytest.fixture
def pinky(fresh_lake):
    """``pinky100`` with ``synapses`` (1981 pre/post pairs) and ``somas`` (363 nuclei, positions in nm)."""
    lake = fresh_lake
    lake.create_datastack("pinky100", (4, 4, 40))
    syn = pd.read_csv(PINKY / "synapses.csv")
    ds = lake["pinky100"]
    ds.create_table("synapses", "synapse", optional_points=["ctr_pt"]).append(
        pd.DataFrame({"pre_pt_root_id": syn.pre, "post_pt_root_id": syn.post}))
    ds.create_table("somas", "nucleus", voxel_size_nm=(1, 1, 1), properties={"manual_id": "int"}).append(_somas())
    return lake


def _input(kind: str, table: str, pin: dict, datastack: str = "pinky100") -> dict:
    return {"name": f"{datastack}.{table}", "kind": kind, "datastack": datastack, "table": table, "pin": pin,
            "pinned_by": "sql", "location": "", "files": [], "bytes": 0, "segmentation": None}


def _run(inputs: list[dict], *, mode: str = "production", user: str = "ada", minutes: int = 0,
         sql: str = "SELECT count(*) FROM pinky100.synapses", run_id: str | None = None, **extra) -> dict:
    started = T0 + dt.timedelta(minutes=minutes)
    return {"run_id": run_id or str(uuid.uuid4()), "sql": sql, "executed_sql": sql, "params": None, "mode": mode,
            "user": user, "started": started.isoformat(), "ended": (started + dt.timedelta(seconds=1)).isoformat(),
            "inputs": inputs, "rows": 1, "columns": [{"name": "n", "type": "BIGINT"}], "bytes_read": 100,
            "result_sha256": "ab" * 32, "partial": False, **extra}


def _manifest(run: dict) -> dict:
    return {"eventType": "COMPLETE", "eventTime": run["ended"], "producer": "https://github.com/neurolake",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run["run_id"], "facets": {}}, "job": {"namespace": "neurolake", "name": "query"},
            "inputs": [{"namespace": "neurolake", "name": i["name"]} for i in run["inputs"]], "outputs": []}


def _save(lake, run: dict, result_file: str | None = None) -> str:
    save_run(lake, _manifest(run), run=run, result_file=result_file)
    return run["run_id"]


def _version_input(v: dict, table: str = "synapses") -> dict:
    return _input("version_table", table, {"version": v["version"], "timestamp": v["timestamp"]})


# -------------------------------------------------------------------------------------------------
# the store
# -------------------------------------------------------------------------------------------------
def test_save_get_list(pinky):
    t = pinky["pinky100"].table("synapses")
    ann = _input("annotation", "synapses", {"delta_version": t.version, "committed": T0.isoformat(),
                                             "timestamp": None})
    feat = _input("feature", "bouton_size", {"fingerprint": {"kind": "delta_version", "value": 4}, "format": "delta"},
                  datastack="other")
    r1 = _run([ann], mode="exploratory", user="ada", minutes=0)
    r2 = _run([ann, feat], mode="production", user="bob", minutes=5, sql="SELECT * FROM pinky100.synapses")
    r3 = _run([], mode="production", user="ada", minutes=10, partial=True, sql="SELECT 1")
    for r in (r1, r2, r3):
        _save(pinky, r)

    got = get_run(pinky, r2["run_id"])
    assert got["manifest"] == _manifest(r2) and got["inputs"] == [ann, feat]
    assert (got["user"], got["mode"], got["status"], got["rows"], got["sql"]) == (
        "bob", "production", "ok", 1, "SELECT * FROM pinky100.synapses")
    assert got["datastacks"] == ["other", "pinky100"] and got["protecting"] is True
    assert dt.datetime.fromisoformat(got["created"]) == T0 + dt.timedelta(minutes=5)
    assert get_run(pinky, r3["run_id"])["status"] == "partial"

    ids = [r["run_id"] for r in list_runs(pinky)]
    assert ids == [r3["run_id"], r2["run_id"], r1["run_id"]]  # newest first
    assert "manifest" not in list_runs(pinky)[0]
    assert [r["run_id"] for r in list_runs(pinky, user="ada")] == [r3["run_id"], r1["run_id"]]
    assert [r["run_id"] for r in list_runs(pinky, datastack="pinky100")] == [r2["run_id"], r1["run_id"]]
    assert [r["run_id"] for r in list_runs(pinky, mode="exploratory")] == [r1["run_id"]]
    assert [r["run_id"] for r in list_runs(pinky, limit=1)] == [r3["run_id"]]
    with pytest.raises(InvalidArgument, match="mode 'fast' is not one of"):
        list_runs(pinky, mode="fast")

    # saving the same run again (with its result file) replaces it: one row, its pins not doubled
    _save(pinky, r2, result_file="/tmp/out.parquet")
    again = get_run(pinky, r2["run_id"])
    assert again["result_file"] == "/tmp/out.parquet" and again["inputs"] == [ann, feat]
    assert len(list_runs(pinky)) == 3

    # deleting a run removes it and releases its protection
    assert protecting_runs(pinky, "annotation", "pinky100", "synapses", t.version) == [r2["run_id"]]
    assert protecting_runs(pinky, "feature", "other", "bouton_size", 4) == [r2["run_id"]]  # a Delta feature table
    assert protecting_runs(pinky, "annotation", "pinky100", "synapses", t.version + 1) == []
    assert protecting_runs(pinky, "annotation", "pinky100", "somas", None) == []
    assert delete_run(pinky, r2["run_id"][:8])["run_id"] == r2["run_id"]
    assert protecting_runs(pinky, "annotation", "pinky100", "synapses", t.version) == []
    with pytest.raises(NotFound):
        get_run(pinky, r2["run_id"])


def test_prefix_lookup_and_unknown_ids(pinky):
    a = _save(pinky, _run([], run_id="0123abcd-1111-4111-8111-111111111111", minutes=1))
    b = _save(pinky, _run([], run_id="0123abcd-2222-4222-8222-222222222222", minutes=2))
    c = _save(pinky, _run([], minutes=3))
    assert get_run(pinky, c[:8])["run_id"] == c
    assert get_run(pinky, c.upper())["run_id"] == c
    assert get_run(pinky, "0123abcd-1")["run_id"] == a
    with pytest.raises(InvalidArgument, match="ambiguous") as e:
        get_run(pinky, "0123abcd")
    assert a in e.value.message and b in e.value.message
    with pytest.raises(NotFound) as e:
        get_run(pinky, "ffffffff-0000-4000-8000-000000000000")
    msg = e.value.message
    assert msg.startswith("unknown query run 'ffffffff-0000-4000-8000-000000000000'")
    assert msg.index(c) < msg.index(b) < msg.index(a)  # the most recent first
    with pytest.raises(NotFound, match="a prefix needs at least 8 characters"):
        get_run(pinky, c[:7])
    with pytest.raises(NotFound):
        delete_run(pinky, "not-a-run-id!")


def test_save_run_refuses_bad_runs(pinky):
    good = _input("version_table", "synapses", {"version": 1, "timestamp": T0.isoformat()})
    cases = [
        (_run([], mode="fast"), "mode", "run mode 'fast' is not one of"),
        (_run([{**good, "kind": "view"}]), "inputs.kind", "has kind 'view'; allowed"),
        (_run([{**good, "pin": {"version": "latest"}}]), "inputs[0].pin.version", "inputs\\[0\\].pin.version"),
        (_run([], run_id="run 1"), "run_id", "run_id must be a uuid"),
        (_run([], status="done"), "status", "run status 'done' is not one of"),
    ]
    for run, field, match in cases:
        with pytest.raises(InvalidArgument, match=match) as e:
            _save(pinky, run)
        assert e.value.detail["field"] == field
    run = _run([good])
    with pytest.raises(InvalidArgument, match="manifest is not JSON-able"):
        save_run(pinky, {**_manifest(run), "eventTime": T0}, run=run)
    assert list_runs(pinky) == []  # nothing stored
    with pytest.raises(NotFound, match="^unknown query run 'abc'; known: none; a prefix needs at least 8"):
        get_run(pinky, "abc")


# -------------------------------------------------------------------------------------------------
# models and migrations agree (SQLite and PostgreSQL)
# -------------------------------------------------------------------------------------------------
def _diff(lake) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import neurolake.models  # noqa: F401
    import neurolake.provenance.models  # noqa: F401
    from neurolake.db.base import Base

    with lake.catalog.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_models_match_migrations_sqlite(fresh_lake):
    from sqlalchemy import inspect

    names = set(inspect(fresh_lake.catalog.engine).get_table_names())
    assert {"query_runs", "query_run_pins"} <= names
    assert _diff(fresh_lake) == []


@pytest.mark.postgres
def test_models_match_migrations_postgres(new_pg_database, tmp_path):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "pg", database_url=new_pg_database())
    try:
        assert _diff(lake) == []
        lake.create_datastack("pinky100", (4, 4, 40))
        run = _run([_input("version_table", "synapses", {"version": 3, "timestamp": T0.isoformat()})])
        _save(lake, run)
        assert get_run(lake, run["run_id"][:8])["inputs"] == run["inputs"]
        assert protecting_runs(lake, ["version_table", "connectome"], "pinky100", None, 3) == [run["run_id"]]
        delete_run(lake, run["run_id"])  # the pins go with it (ON DELETE CASCADE and explicit)
        assert protecting_runs(lake, "version_table", "pinky100", None, 3) == []
    finally:
        lake.close()


# -------------------------------------------------------------------------------------------------
# protected materialization versions
# -------------------------------------------------------------------------------------------------
def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolake.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_expire_refuses_pinned_versions(pinky):
    vs = pinky["pinky100"].versions
    v1, v2, v3 = vs.create(), vs.create(), vs.create()
    p1 = _save(pinky, _run([_version_input(v1)], minutes=1))
    p2 = _save(pinky, _run([_input("connectome", "connectome", {"version": 1, "timestamp": v1["timestamp"]})],
                           minutes=2))
    _save(pinky, _run([_version_input(v2)], mode="exploratory", minutes=3))  # exploratory: protects nothing
    _save(pinky, _run([_version_input(v2)], minutes=4, status="failed"))  # a failed run: nothing to reproduce

    assert vs.expire(2)["broken_runs"] == []
    with pytest.raises(Conflict) as e:
        vs.expire(1)
    assert e.value.message == (
        f"version 1 of datastack 'pinky100' is pinned by 2 production query runs ({p1[:8]}…, {p2[:8]}…); expiring "
        "it would make them irreproducible; pass force=True (`--force`) to expire anyway")
    assert e.value.detail["runs"] == [p1, p2]
    assert vs.get(1)["valid"] and (pinky.root / v1["path"]).is_dir()  # untouched

    # the CLI's --force expires it and names the broken runs (its refusal is the Conflict above, exit 2)
    p = _cli("versions", "expire", "--lake", pinky.root, "--datastack", "pinky100", 1, "--force")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["valid"] is False and out["broken_runs"] == [p1, p2]
    assert p1 in p.stderr and "can no longer be reproduced" in p.stderr
    assert not (pinky.root / v1["path"]).exists()
    assert v3["version"] == 3 and vs.get(3)["valid"]


def test_force_expire_and_http(pinky):
    from fastapi.testclient import TestClient

    from neurolake.server.app import create_app

    vs = pinky["pinky100"].versions
    v1, v2, _ = vs.create(), vs.create(), vs.create()
    p1 = _save(pinky, _run([_version_input(v1)]))
    p2 = _save(pinky, _run([_version_input(v2, "somas")]))
    client = TestClient(create_app(pinky))
    r = client.delete("/api/v1/datastacks/pinky100/versions/1")
    assert r.status_code == 409 and r.json()["error"] == "conflict" and p1[:8] in r.json()["message"]
    r = client.delete("/api/v1/datastacks/pinky100/versions/1", params={"force": "true"})
    assert r.status_code == 200 and r.json()["valid"] is False and r.json()["broken_runs"] == [p1]
    out = vs.expire(2, force=True)  # Python: force names what it broke
    assert out["status"] == "EXPIRED" and out["broken_runs"] == [p2]


def test_automatic_expiry_skips_protected_versions(pinky):
    vs = pinky["pinky100"].versions
    v1 = vs.create(expires_in=dt.timedelta(0))
    v2 = vs.create(expires_in=dt.timedelta(0))
    v3 = vs.create(expires_in=dt.timedelta(0))
    run = _save(pinky, _run([_version_input(v1)]))
    # listing expires what is due: v2 goes, v1 stays (pinned), v3 stays (the newest valid)
    assert [v["version"] for v in vs.list()] == [1, 3]
    assert vs.get(2)["status"] == "EXPIRED" and not (pinky.root / v2["path"]).exists()
    assert (pinky.root / v1["path"]).is_dir()
    assert (pinky.root / v3["path"]).is_dir()
    delete_run(pinky, run)  # the protection released, the due version goes at the next look
    assert [v["version"] for v in vs.list()] == [3]


# -------------------------------------------------------------------------------------------------
# protected Delta versions
# -------------------------------------------------------------------------------------------------
def _edited_somas(lake):
    """somas at Delta v1 (the load), then soft-deletes rewrite its file (v2): v1's file is unreferenced."""
    t = lake["pinky100"].table("somas")
    assert t.version == 1
    t.delete([1, 2, 3])
    assert t.version == 2 and t.count() == 360
    old = set(DeltaTable(str(t.path), version=1).file_uris())
    assert old.isdisjoint(DeltaTable(str(t.path)).file_uris())
    return t, old


def test_vacuum_refused_while_a_production_run_pins_a_vacuumed_version(pinky):
    t, old = _edited_somas(pinky)
    pin1 = _input("annotation", "somas", {"delta_version": 1, "committed": T0.isoformat(), "timestamp": None})
    pin2 = {**pin1, "pin": {**pin1["pin"], "delta_version": 2}}
    _save(pinky, _run([pin1], mode="exploratory"))  # protects nothing
    _save(pinky, _run([pin2]))  # pins the current version: vacuum deletes none of its files
    run = _save(pinky, _run([pin1], minutes=1))

    assert t.vacuum() == {"deleted": [], "broken_runs": [], "dry_run": False}  # nothing a week old
    dry = t.vacuum(0, dry_run=True)
    assert dry["broken_runs"] == [run] and dry["dry_run"] is True
    assert {str(t.path / f) for f in dry["deleted"]} == old
    with pytest.raises(Conflict) as e:
        t.vacuum(0)
    assert e.value.message.startswith(
        f"vacuuming annotation table pinky100/somas (retention 0 h) would delete files of Delta versions pinned by "
        f"1 production query run ({run[:8]}…)")
    assert e.value.detail["runs"] == [run]
    p = _cli("annotations", "vacuum", "--lake", pinky.root, "--datastack", "pinky100", "--table", "somas",
             "--retention-hours", 0)
    assert p.returncode == 2 and run[:8] in p.stderr and "--force" in p.stderr
    assert all(Path(f).exists() for f in old)  # neither dry run nor refusal deleted anything
    assert len(DeltaTable(str(t.path), version=1).to_pyarrow_table()) == 363

    with pytest.raises(InvalidArgument, match="retention_hours must be a number of hours >= 0"):
        t.vacuum(-1)

    delete_run(pinky, run)  # the pin released: the vacuum goes ahead
    out = t.vacuum(0)
    assert out["broken_runs"] == [] and {str(t.path / f) for f in out["deleted"]} == old
    assert not any(Path(f).exists() for f in old)
    assert t.count() == 360  # the current version reads as before


def test_vacuum_force(pinky):
    t, old = _edited_somas(pinky)
    run = _save(pinky, _run([_input("annotation", "somas", {"delta_version": 1, "committed": T0.isoformat(),
                                                            "timestamp": None})]))
    p = _cli("annotations", "vacuum", "--lake", pinky.root, "--datastack", "pinky100", "--table", "somas",
             "--retention-hours", 0, "--force")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["broken_runs"] == [run] and {str(t.path / f) for f in out["deleted"]} == old
    assert run in p.stderr and "can no longer be reproduced" in p.stderr
    assert not any(Path(f).exists() for f in old)
    assert t.count() == 360
