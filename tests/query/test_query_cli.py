"""``neurolake sql``, ``explain``, ``runs list|show``, ``reproduce`` (issue 12, points 3, 4, 6).

Real data: the MICrONS pinky100 tables of ``query_lake_path`` (conftest.py), copied because runs and
versions are written. Most calls go through Typer's CliRunner; the error exit (``error (code): message``,
status 2) is checked on the real entry point.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neurolake.cli import app

TOP = ("SELECT pre, post, n_synapses FROM pinky100.v1.connectome "
       "ORDER BY n_synapses DESC, pre, post LIMIT 5")
CLASSES = "interactive|short|batch|long"


@pytest.fixture(scope="module")
def lake_path(query_lake_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("query_cli") / "lake"
    shutil.copytree(query_lake_path, path)
    return path


def nl(lake_path, *args, code: int = 0):
    r = CliRunner().invoke(app, [*map(str, args), "--lake", str(lake_path)])
    assert r.exit_code == code, (args, r.stdout, r.stderr, r.exception)
    return r


def _run_id(stderr: str) -> str:
    m = re.search(r"^run ([0-9a-f-]{36}) ", stderr, re.M)
    assert m, stderr
    return m.group(1)


def test_sql_prints_rows_then_run_sha_and_class(lake_path):
    from neurolake import open_lake

    r = nl(lake_path, "sql", "SELECT pre, post, n_synapses FROM pinky100.v1.connectome "
                             "ORDER BY n_synapses DESC, pre, post", "--rows", "3")
    with open_lake(lake_path) as lake:
        edges = lake["pinky100"].connectome(version=1).edges
        rid = _run_id(r.stderr)
        rec = lake.run(rid)
    top = edges.sort_values(["n_synapses", "pre", "post"], ascending=[False, True, True])
    assert f"(first 3 of {len(edges)})" in r.stdout
    for pre, post in zip(top.pre[:3], top.post[:3], strict=True):
        assert re.search(rf"{pre}\s*│\s*{post}", r.stdout), r.stdout
    assert str(top.pre.iloc[3]) not in r.stdout.split("┩", 1)[1] or top.pre.iloc[3] in top.pre[:3].values
    assert f"sha256 {rec['result_sha256']}" in r.stderr
    assert re.search(rf"runtime class: predicted ({CLASSES}|\?), measured ({CLASSES})", r.stderr), r.stderr
    assert rec["rows"] == len(edges) and rec["mode"] == "exploratory"


def test_sql_csv_and_json_hold_every_row(lake_path, pinky_tables):
    from neurolake import open_lake

    q = "SELECT pre_pt_root_id, post_pt_root_id FROM pinky100.synapses"
    r = nl(lake_path, "sql", q, "--format", "csv")
    df = pd.read_csv(io.StringIO(r.stdout), dtype="uint64")
    src = pinky_tables["synapses"].sort_values(["pre_pt_root_id", "post_pt_root_id"]).reset_index(drop=True)
    assert df.equals(src.astype("uint64"))
    with open_lake(lake_path) as lake:
        assert lake.run(_run_id(r.stderr))["result_sha256"] == lake.sql(q).sha256
    root = int(src.pre_pt_root_id.value_counts().index[0])
    want = int((src.pre_pt_root_id == root).sum())
    count = "SELECT count(*) AS n FROM pinky100.synapses WHERE pre_pt_root_id = "
    assert json.loads(nl(lake_path, "sql", count + "?", "--param", root, "-f", "json").stdout) == [{"n": want}]
    assert json.loads(nl(lake_path, "sql", count + "$r", "--param", f"r={root}", "-f", "json").stdout) == [{"n": want}]
    # unqualified names in -d, a pin, the production path
    out = nl(lake_path, "sql", "SELECT count(*) AS n FROM synapses", "-d", "pinky100", "--mode", "production",
             "--pin", "pinky100.synapses=1", "-f", "json")
    assert json.loads(out.stdout) == [{"n": 1981}] and "(production)" in out.stderr


def test_sql_writes_the_result_and_manifest(lake_path, tmp_path):
    from neurolake import open_lake

    out, man = tmp_path / "top.parquet", tmp_path / "top.manifest.json"
    r = nl(lake_path, "sql", TOP, "--mode", "production", "--output", out, "--manifest", man, "-f", "json")
    rid = _run_id(r.stderr)
    assert f"result written to {out}" in r.stderr
    manifest = json.loads(man.read_text())
    assert manifest["run"]["runId"] == rid
    assert json.loads(pq.read_schema(out).metadata[b"openlineage"]) == manifest
    assert json.loads((tmp_path / "top.parquet.manifest.json").read_text()) == manifest
    assert pq.read_table(out).to_pylist() == json.loads(r.stdout)
    r = nl(lake_path, "sql", "SELECT count(*) AS n FROM pinky100.v1.synapses", "--save", "-f", "json")
    with open_lake(lake_path) as lake:
        saved = lake.run(_run_id(r.stderr))["result_file"]
    assert saved == str(lake_path / "runs" / f"{_run_id(r.stderr)}.parquet")
    assert pq.read_table(saved).to_pylist() == [{"n": 1981}]


def test_sql_timeout_flags_a_partial_result(lake_path):
    endless = ("SELECT a.id FROM pinky100.synapses a, pinky100.synapses b, pinky100.synapses c "
               "WHERE a.id + b.id + c.id < 0")
    r = nl(lake_path, "sql", endless, "--timeout", "0.5", "-f", "json")
    assert json.loads(r.stdout) == [] and "partial (stopped by --timeout)" in r.stderr


@pytest.mark.parametrize(("args", "words"), [
    (("--format", "xml"), "--format 'xml'"),
    (("--mode", "fast"), "--mode 'fast'"),
    (("--pin", "pinky100.synapses"), "NAME=PIN"),
    (("--param", "a=1", "--param", "2"), "not both"),
    (("--output", "x.csv"), "must end in .parquet"),
])
def test_sql_option_errors(lake_path, args, words):
    r = CliRunner().invoke(app, ["sql", "SELECT 1", *args, "--lake", str(lake_path)])
    assert r.exit_code != 0 and words in str(r.exception), (r.stdout, r.exception)


def test_errors_exit_2_with_a_clear_message(lake_path):
    env = {k: v for k, v in os.environ.items() if k != "NEUROLAKE_LAKE"}
    for sql, code in (("SELECT * FROM read_csv('/etc/passwd')", "permission_denied"),
                      ("COPY (SELECT 1) TO '/tmp/x.csv'", "permission_denied"),
                      ("SELECT * FROM pinky100.nosuch", "not_found")):
        p = subprocess.run([sys.executable, "-m", "neurolake.cli", "sql", sql, "-l", str(lake_path)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and f"error ({code})" in p.stderr and p.stdout == "", (sql, p.stderr)


def test_explain(lake_path):
    r = nl(lake_path, "explain", "SELECT count(*) FROM pinky100.v1.synapses WHERE id < 100")
    assert "READ_PARQUET" in r.stdout
    assert "pinky100.v1.synapses (version_table, pinned by sql)" in r.stdout
    assert re.search(r"estimated rows: \d+", r.stdout) and re.search(r"estimated bytes to scan: [1-9]\d*", r.stdout)
    assert re.search(rf"predicted runtime class: ({CLASSES})", r.stdout)
    assert re.search(r"filter pinky100\.v1\.synapses\.id \[.*\]: served by (sort|partition|statistics|none)", r.stdout)
    e = json.loads(nl(lake_path, "explain", "SELECT count(*) FROM pinky100.v1.synapses", "--json").stdout)
    assert e["inputs"][0]["name"] == "pinky100.v1.synapses" and "plan" in e
    r = CliRunner().invoke(app, ["explain", "SELECT * FROM pinky100.synapses", "--mode", "production",
                                 "--lake", str(lake_path)])
    assert r.exit_code != 0 and "not pinned" in str(r.exception)


def test_runs_list_and_show(lake_path):
    nl(lake_path, "sql", "SELECT count(*) FROM pinky100.synapses")
    rid = _run_id(nl(lake_path, "sql", TOP, "--mode", "production").stderr)
    r = nl(lake_path, "runs", "list", "--mode", "production")
    assert rid[:8] in r.stdout and "production" in r.stdout and "exploratory" not in r.stdout
    items = json.loads(nl(lake_path, "runs", "list", "--json", "-d", "pinky100", "--limit", "2").stdout)
    assert len(items) == 2 and items[0]["run_id"] == rid and items[0]["protecting"] is True
    assert items[1]["mode"] == "exploratory" and items[1]["protecting"] is False
    assert json.loads(nl(lake_path, "runs", "list", "--json", "-d", "hemibrain").stdout) == []
    assert json.loads(nl(lake_path, "runs", "list", "--json", "--user", "nobody").stdout) == []
    show = nl(lake_path, "runs", "show", rid[:8]).stdout
    assert f"run {rid}" in show and TOP in show and "pinky100.v1.connectome (connectome, pinned by sql)" in show
    assert re.search(rf"runtime +predicted ({CLASSES}|\?), measured ({CLASSES})", show), show
    rec = json.loads(nl(lake_path, "runs", "show", rid, "--json").stdout)
    assert rec["run_id"] == rid and rec["manifest"]["run"]["runId"] == rid
    r = CliRunner().invoke(app, ["runs", "show", "00000000", "--lake", str(lake_path)])
    assert r.exit_code != 0 and "unknown query run" in str(r.exception)


def test_reproduce_exit_codes(lake_path, tmp_path):
    from neurolake import open_lake

    out, man = tmp_path / "top.parquet", tmp_path / "top.json"
    r = nl(lake_path, "sql", TOP, "--mode", "production", "--output", out, "--manifest", man)
    rid = _run_id(r.stderr)
    sha = json.loads(man.read_text())["run"]["facets"]["neurolake"]["result_sha256"]
    for ref in (rid, rid[:8], man, out):  # a run id, a prefix, the manifest, the result file
        r = nl(lake_path, "reproduce", ref)
        assert r.stdout.strip() == f"identical (sha256 {sha})"
    rep = json.loads(nl(lake_path, "reproduce", rid, "--json").stdout)
    assert rep["status"] == "identical" and rep["rows"] == [5, 5]
    # a manifest whose query is not what gave the recorded (and saved) result: the first differing row, exit 1
    doc = json.loads(man.read_text())
    doc["run"]["facets"]["neurolake"]["sql"] = TOP.replace("pre, post LIMIT", "pre DESC, post LIMIT")
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    r = nl(lake_path, "reproduce", tmp_path / "edited.json", code=1)
    assert f"differs from run {rid}" in r.stdout and "first differing row " in r.stdout, r.stdout
    # an exploratory run of a version that was expired since: which input, its pin, why; exit 2
    with open_lake(lake_path) as lake:
        ds = lake["pinky100"]
        v = ds.versions.create()["version"]
    rid = _run_id(nl(lake_path, "sql", f"SELECT count(*) AS n FROM pinky100.v{v}.synapses").stderr)
    with open_lake(lake_path) as lake:
        ds = lake["pinky100"]
        ds.versions.create()
        ds.versions.expire(v)
    r = nl(lake_path, "reproduce", rid, code=2)
    assert f"cannot reproduce run {rid}" in r.stdout
    assert f"gone: pinky100.v{v}.synapses pinned at materialization version {v}" in r.stdout and "expired" in r.stdout


def test_reproduce_names_a_changed_row_count(lake_path, tmp_path):
    out, man = tmp_path / "top.parquet", tmp_path / "top.json"
    nl(lake_path, "sql", TOP, "--mode", "production", "--output", out, "--manifest", man)
    doc = json.loads(man.read_text())
    doc["run"]["facets"]["neurolake"]["sql"] = TOP.replace("LIMIT 5", "LIMIT 4")
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    r = nl(lake_path, "reproduce", tmp_path / "edited.json", code=1)
    assert "rows 5 → 4" in r.stdout and "first differing row 4" in r.stdout, r.stdout


def test_help_documents_exit_codes():
    r = CliRunner().invoke(app, ["reproduce", "--help"])
    assert r.exit_code == 0 and "exits 0" in r.stdout and "exits 1" in r.stdout and "exits 2" in r.stdout
    for cmd in (["sql"], ["explain"], ["runs", "list"], ["runs", "show"]):
        r = CliRunner().invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "--lake" in r.stdout and "NEUROLAKE_LAKE" in r.stdout
