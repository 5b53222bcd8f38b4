"""Job rows (:mod:`neurolake.jobs.records`) and ``GET /api/v1/jobs`` through a real server process
(``python -m neurolake.cli serve``), with and without ``--auth``; ``neurolake jobs list|show``; the watershed's
sections on Dask give the labels of the in-process run.

The jobs are real: ingests of the gala FIB-SEM image and ground truth into two datastacks, a pyramid rebuild,
a materialization and a failed one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from neurolake.jobs.records import get_job, job, list_jobs
from tests.conftest import DATA

GALA = DATA / "gala_fibsem"


@pytest.fixture(scope="module")
def jobs_lake(tmp_path_factory):
    from neurolake import init_lake
    from neurolake.annotations import create_table
    from neurolake.materialize import materialize
    from neurolake.volumes.ingest import rebuild_pyramid

    path = tmp_path_factory.mktemp("jobs") / "lake"
    lake = init_lake(path)
    for ds in ("alpha", "beta"):
        lake.create_datastack(ds, (8, 8, 8), public=False)
    lake.ingest(str(GALA / "train-gt.lzf.h5") + ":/stack", "alpha", "segmentation", voxel_size=(8, 8, 8),
                layer_type="segmentation", scheduler="threads")
    lake.ingest(str(GALA / "train-image.h5") + ":/stack", "beta", "image", voxel_size=(8, 8, 8), scheduler="threads")
    rebuild_pyramid(lake, "beta", "image", scheduler="threads")
    t = create_table(lake, "alpha", "points", "point")
    t.append([{"pt_position": [1, 2, 3]}, {"pt_position": [4, 5, 6]}], author="test")
    materialize(lake, "alpha")
    with pytest.raises(RuntimeError), job(lake, "mesh", datastack="beta", target="image") as j:
        j.add(4)
        j.done(1)
        raise RuntimeError("out of memory on block 7")
    lake.access.add_user("adm", admin=True)
    lake.access.add_user("vi")
    lake.access.grant("vi", "alpha", "viewer")
    tokens = {u: lake.access.create_token(u, "t")["token"] for u in ("adm", "vi")}
    lake.close()
    return path, tokens


def test_job_rows_of_real_steps(jobs_lake):
    from neurolake import open_lake

    lake = open_lake(jobs_lake[0])
    rows = list_jobs(lake)
    assert [(r["kind"], r["datastack"], r["status"]) for r in rows] == [
        ("mesh", "beta", "failed"), ("materialize", "alpha", "done"), ("pyramid", "beta", "done"),
        ("ingest", "beta", "done"), ("ingest", "alpha", "done")]  # newest first
    ing = rows[-1]
    assert ing["target"] == "segmentation" and ing["scheduler"] == "threads" and ing["finished"] and ing["user"]
    assert ing["tasks_done"] == ing["tasks_total"] > 1  # mip-0 slabs and pyramid tasks
    pyr = rows[2]
    assert pyr["tasks_done"] == pyr["tasks_total"] > 0 and pyr["error"] is None
    failed = rows[0]
    assert (failed["tasks_done"], failed["tasks_total"], failed["error"]) == (1, 4, "out of memory on block 7")
    assert [r["kind"] for r in list_jobs(lake, kind="ingest", datastack="beta")] == ["ingest"]
    assert [r["id"] for r in list_jobs(lake, status="failed")] == [failed["id"]]
    assert len(list_jobs(lake, limit=2)) == 2
    assert get_job(lake, ing["id"]) == {**ing, "seconds": get_job(lake, ing["id"])["seconds"]}
    from neurolake.errors import InvalidArgument, NotFound

    with pytest.raises(NotFound):
        get_job(lake, 10_000)
    with pytest.raises(InvalidArgument):
        list_jobs(lake, status="sleeping")
    lake.close()


def test_jobs_api_without_auth(jobs_lake, serve_lake):
    base = serve_lake(jobs_lake[0])
    r = httpx.get(base + "/api/v1/jobs")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [x["kind"] for x in rows] == ["mesh", "materialize", "pyramid", "ingest", "ingest"]
    assert set(rows[0]) >= {"id", "kind", "datastack", "target", "user", "status", "tasks_total", "tasks_done",
                            "started", "finished", "error", "scheduler"}
    assert [x["kind"] for x in httpx.get(base + "/api/v1/jobs", params={"status": "done", "kind": "ingest"}).json()] \
        == ["ingest", "ingest"]
    assert [x["datastack"] for x in httpx.get(base + "/api/v1/jobs", params={"datastack": "alpha"}).json()] \
        == ["alpha", "alpha"]
    one = httpx.get(f"{base}/api/v1/jobs/{rows[1]['id']}").json()
    assert one["kind"] == "materialize" and one["status"] == "done" and one["scheduler"] == "in-process"
    assert httpx.get(base + "/api/v1/jobs/999999").status_code == 404
    assert httpx.get(base + "/api/v1/jobs", params={"status": "sleeping"}).status_code in (400, 422)
    assert httpx.get(base + "/api/v1/jobs/abc").status_code in (400, 422)
    spec = httpx.get(base + "/openapi.json").json()
    assert "/api/v1/jobs" in spec["paths"] and "/api/v1/jobs/{job_id}" in spec["paths"]


def test_jobs_api_with_auth_shows_the_jobs_of_readable_datastacks(jobs_lake, serve_lake):
    path, tok = jobs_lake
    base = serve_lake(path, "--auth")
    assert httpx.get(base + "/api/v1/jobs").status_code == 401

    def get(url, user, **params):
        return httpx.get(base + url, params=params, headers={"Authorization": f"Bearer {tok[user]}"})

    everything = get("/api/v1/jobs", "adm").json()
    assert len(everything) == 5
    mine = get("/api/v1/jobs", "vi").json()
    assert {x["datastack"] for x in mine} == {"alpha"} and len(mine) == 2
    assert get("/api/v1/jobs", "vi", datastack="beta").json() == []
    beta_job = next(x["id"] for x in everything if x["datastack"] == "beta")
    alpha_job = next(x["id"] for x in everything if x["datastack"] == "alpha")
    assert get(f"/api/v1/jobs/{alpha_job}", "vi").json()["datastack"] == "alpha"
    hidden = get(f"/api/v1/jobs/{beta_job}", "vi")
    assert hidden.status_code == 404 and hidden.json()["error"] == "not_found"  # the same as no such job
    assert get(f"/api/v1/jobs/{beta_job}", "adm").status_code == 200


def test_jobs_cli(jobs_lake):
    def nl(*args):
        p = subprocess.run([sys.executable, "-m", "neurolake.cli", *args, "--lake", str(jobs_lake[0])],
                           capture_output=True, text=True, timeout=120)
        return p

    p = nl("jobs", "list", "--status", "failed")
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert row["kind"] == "mesh" and row["error"] == "out of memory on block 7"
    p = nl("jobs", "show", str(row["id"]))
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == row["id"]
    p = nl("jobs", "show", "999999")
    assert p.returncode == 2 and "does not exist" in p.stderr
    # `neurolake materialize --scheduler`: the Dask path, recorded as a job with that scheduler
    p = nl("materialize", "-d", "alpha", "--scheduler", "threads")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"] == 2
    (last,) = json.loads(nl("jobs", "list", "--kind", "materialize", "--limit", "1").stdout)
    assert (last["scheduler"], last["status"], last["tasks_done"]) == ("threads", "done", last["tasks_total"])
    assert last["tasks_total"] == 2  # one run of the table's one file, then the table


def test_watershed_sections_on_dask_equal_the_in_process_labels():
    from PIL import Image

    from neurolake.jobs import dask_client
    from neurolake.segment.watershed import watershed_volume

    files = sorted((DATA / "gerhard2013" / "labels").glob("*.png"))[:4]
    labels = np.stack([np.asarray(Image.open(f))[:256, :256] for f in files])
    boundary = np.isin(labels, [0, 32, 64, 96, 128]).astype(np.float32)  # the membrane values
    ref = watershed_volume(boundary, 0.5, 8)
    seen = []
    with dask_client("threads") as client:
        got = watershed_volume(boundary, 0.5, 8, progress=lambda ph, d, t: seen.append((d, t)), client=client)
    np.testing.assert_array_equal(ref, got)
    assert ref.max() > 50 and seen[-1] == (4, 4)


@pytest.mark.postgres
def test_job_rows_on_postgres(new_pg_database, tmp_path):
    """The jobs migration and rows on a PostgreSQL catalog (``user`` is a reserved word there)."""
    from neurolake import init_lake
    from neurolake.jobs.records import start_job

    lake = init_lake(tmp_path / "pg", database_url=new_pg_database())
    with pytest.raises(ValueError), job(lake, "skeleton", datastack="x", target="seg", user="ann") as j:
        j.add(3)
        j.done(2)
        raise ValueError("bad block")
    running = start_job(lake, "mesh", datastack="y", scheduler="tcp://10.0.0.1:8786")
    running.add(5)
    running.done(1)
    running.flush(force=True)
    rows = list_jobs(lake)
    assert [(r["kind"], r["status"], r["tasks_done"], r["tasks_total"]) for r in rows] == [
        ("mesh", "running", 1, 5), ("skeleton", "failed", 2, 3)]
    assert rows[1]["user"] == "ann" and rows[1]["error"] == "bad block" and rows[0]["finished"] is None
    assert list_jobs(lake, status="running", datastack="y")[0]["scheduler"] == "tcp://10.0.0.1:8786"
    lake.close()


def test_mesh_and_skeleton_builds_have_job_rows(tmp_path):
    from neurolake import init_lake
    from neurolake.meshes import build_meshes
    from neurolake.skeletons.build import skeletonize_layer

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("gala", (8, 8, 8))
    lake.ingest(str(GALA / "train-gt.lzf.h5") + ":/stack", "gala", "segmentation", voxel_size=(8, 8, 8),
                layer_type="segmentation", scheduler="threads")
    summary = build_meshes(lake, "gala", "segmentation", scheduler="threads")
    skeletonize_layer(lake, "gala", "segmentation", scheduler="threads")
    sk, mesh = list_jobs(lake, limit=2)
    assert (mesh["kind"], mesh["datastack"], mesh["target"], mesh["status"], mesh["scheduler"]) == \
        ("mesh", "gala", "segmentation", "done", "threads")
    assert mesh["tasks_done"] == mesh["tasks_total"] == summary["meshed_blocks"] > 0
    assert (sk["kind"], sk["target"], sk["status"], sk["scheduler"]) == \
        ("skeletonize", "segmentation", "done", "threads")
    assert sk["tasks_done"] == sk["tasks_total"] > 1  # bounding-box slabs, then skeleton groups
    lake.close()
