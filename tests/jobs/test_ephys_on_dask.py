"""The ephys ETL with its patch-clamp analyses on a real Dask cluster (``dask scheduler`` + 2 ``dask worker``
processes) writes the same tables as the in-process ETL, for every shipped recording (ABF, NWB, MEA spike lists
and retinal-wave HDF5), including a corrupt file (an errors row) and a duplicate (skipped); a re-run analyses
nothing. The job rows count the files and the tasks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from neurolake import open_lake
from neurolake.ephys import etl, tables
from neurolake.jobs.records import list_jobs

DATA = Path(__file__).resolve().parents[2] / "data" / "ephys"
DS = "lab"
VARYING = {"ingested_at", "at"}  # when the rows were written


def _dump(lake) -> dict[str, pd.DataFrame]:
    out = {}
    for t in tables.TABLES:
        df = tables.read(lake, DS, t).to_pandas()
        df = df.drop(columns=[c for c in df.columns if c in VARYING])
        keys = [c for c in ("file_sha256", "path", "cell", "sweep", "channel", "well", "electrode", "time_s",
                            "feature", "spike", "stimulus_class", "message") if c in df.columns]
        out[t] = df.astype(str).sort_values(list(df.columns) if not keys else keys + [
            c for c in df.columns if c not in keys]).reset_index(drop=True)
    return out


def test_ephys_etl_on_dask_equals_in_process(dask_cluster, tmp_path):
    src = tmp_path / "recordings"
    shutil.copytree(DATA, src)
    abf = sorted((src / "abf").glob("*.abf"))
    shutil.copy(abf[0], src / "abf" / "copy_of_first.abf")  # the same bytes: skipped as a duplicate
    (src / "abf" / "broken.abf").write_bytes(abf[1].read_bytes()[:5000])  # truncated: an errors row
    a = open_lake(tmp_path / "a", create=True)
    b = open_lake(tmp_path / "b", create=True)
    ra = etl.ingest(a, DS, src, lab="x")
    rb = etl.ingest(b, DS, src, lab="x", scheduler=dask_cluster.address)
    assert len(rb.loaded) == len(ra.loaded) > 10 and [e["path"] for e in rb.loaded] == [e["path"] for e in ra.loaded]
    assert [(e["path"], e["error_code"]) for e in rb.errors] == [(e["path"], e["error_code"]) for e in ra.errors]
    assert any(Path(e["path"]).name == "broken.abf" for e in rb.errors)
    assert [s["path"] for s in rb.skipped] == [s["path"] for s in ra.skipped] and len(rb.skipped) == 1
    da, db = _dump(a), _dump(b)
    for t in tables.TABLES:
        pd.testing.assert_frame_equal(da[t], db[t], obj=t)
    assert len(db["sweeps"]) > 100 and len(db["spikes"]) > 100
    (job,) = list_jobs(b, kind="ephys")
    n_pc = sum(1 for e in rb.loaded if e["format"] in etl.PATCH_CLAMP) + 1  # + the broken file
    assert job["status"] == "done" and job["scheduler"] == dask_cluster.address
    assert job["tasks_done"] == job["tasks_total"] >= n_pc
    (job_a,) = list_jobs(a, kind="ephys")
    assert job_a["scheduler"] == "in-process" and job_a["status"] == "done"
    # a re-run on the cluster: nothing changed, nothing analysed again but the broken file (as in-process)
    again = etl.ingest(b, DS, src, lab="x", scheduler=dask_cluster.address)
    assert again.loaded == [] and len(again.skipped) == len(rb.loaded) + 1
    rerun = list_jobs(b, kind="ephys")[0]
    files = job["tasks_total"] - n_pc  # the first job counted every file, then its analyses
    assert rerun["id"] != job["id"] and rerun["tasks_done"] == rerun["tasks_total"] == files + 1
    a.close()
    b.close()
