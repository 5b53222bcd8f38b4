"""The ephys routes: rows as JSON and Arrow, traces, plots; under a real ``serve --auth`` only granted users read."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from neurolake import open_lake
from neurolake.ephys import etl

DATA = Path(__file__).resolve().parents[2] / "data" / "ephys"
DS = "lab"
API = f"/api/v1/datastacks/{DS}/ephys"


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ephys_in")
    for f in ("17o05028_ic_steps.abf", "171116sh_0011.abf"):
        shutil.copy(DATA / "abf" / f, folder / f)
    for f in (DATA / "mea_axion").glob("*.csv.gz"):
        shutil.copy(f, folder / f.name)
    path = tmp_path_factory.mktemp("ephys_http") / "lake"
    lake = open_lake(path, create=True)
    report = etl.ingest(lake, DS, folder)
    assert not report.errors
    lake.close()
    return path


@pytest.fixture(scope="module")
def client(lake_path):
    from fastapi.testclient import TestClient

    from neurolake.server.app import create_app

    lake = open_lake(lake_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c = TestClient(create_app(lake), raise_server_exceptions=True)
    yield lake, c
    c.close()
    lake.close()


def test_rows_json_and_arrow_equal_the_python_api(client):
    lake, c = client
    listing = c.get(API).json()
    assert {t["table"] for t in listing} >= {"files", "sweeps", "spikes", "cell_features", "mea_wells"}
    r = c.get(f"{API}/sweeps", params={"file": "17o05028_ic_steps.abf"})
    assert r.status_code == 200, r.text
    body = r.json()
    want = lake[DS].ephys.table("sweeps", file_sha256=lake[DS].ephys.file("17o05028_ic_steps.abf")["file_sha256"])
    assert body["count"] == len(want.arrow()) == 16
    assert [row["sweep"] for row in body["rows"]] == want.arrow()["sweep"].to_pylist()
    r = c.get(f"{API}/mea_wells", params={"format": "arrow"})
    tab = pa.ipc.open_stream(r.content).read_all()
    assert tab.equals(lake[DS].ephys.table("mea_wells").arrow().replace_schema_metadata(None)) or \
        tab.to_pylist() == lake[DS].ephys.table("mea_wells").arrow().to_pylist()
    r = c.get(f"{API}/sweeps", params={"columns": "sweep,clamp_mode", "limit": 3, "offset": 2})
    assert r.json()["count"] == 3 and set(r.json()["rows"][0]) == {"sweep", "clamp_mode"}


def test_trace_and_plots(client):
    lake, c = client
    r = c.get(f"{API}/files/17o05028_ic_steps.abf/sweeps/10/trace", params={"max_points": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response_unit"] == "mV" and body["points"] <= 500
    full = lake[DS].ephys.trace("17o05028_ic_steps.abf", 10).df()
    assert max(body["columns"]["response"]) == full["response"].max()
    for params in ({"file": "17o05028_ic_steps.abf", "sweep": 10}, {}):
        kind = "sweep" if params else "fi"
        r = c.get(f"{API}/plots/{kind}", params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert not re.search(r"<script[^>]*\bsrc\s*=", r.text, re.I)  # plotly.js inlined: works offline
        assert "Plotly.newPlot" in r.text
    wells = lake[DS].ephys.table("mea_wells").df()
    busy, silent = wells[wells.n_spikes > 0]["well"].iloc[0], wells[wells.n_spikes == 0]["well"].iloc[0]
    mea = lake[DS].ephys.file("exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz")["file_sha256"]
    assert c.get(f"{API}/plots/raster", params={"file": mea[:12], "well": busy}).status_code == 200
    r = c.get(f"{API}/plots/raster", params={"file": mea[:12], "well": silent})
    assert r.status_code == 404 and "no spikes" in r.json()["message"]
    assert c.get(f"{API}/plots/heatmap").status_code == 200


def test_errors_are_4xx(client):
    _, c = client
    assert c.get(f"{API}/sweep").status_code == 404
    assert c.get(f"{API}/sweeps", params={"columns": "volts"}).status_code == 400
    assert c.get(f"{API}/sweeps", params={"file": "nope.abf"}).status_code == 404
    assert c.get(f"{API}/files/17o05028_ic_steps.abf/sweeps/99/trace").status_code == 404
    assert c.get(f"{API}/files/17o05028_ic_steps.abf/sweeps/1/trace", params={"max_points": 1}).status_code == 400
    assert c.get(f"{API}/plots/spectrogram").status_code == 400
    assert c.get(f"{API}/plots/sweep").status_code == 400  # no file
    assert c.get("/api/v1/datastacks/nope/ephys").status_code == 404


def test_under_auth_only_granted_users_read(lake_path, tmp_path_factory, serve_lake):
    path = tmp_path_factory.mktemp("ephys_auth") / "lake"
    shutil.copytree(lake_path, path)
    lake = open_lake(path)
    acc = lake.access
    tok = {}
    for user in ("ada", "bob"):
        acc.add_user(user)
        tok[user] = acc.create_token(user)["token"]
    acc.grant("ada", DS, "viewer")
    lake.close()
    base = serve_lake(path, "--auth")
    with httpx.Client(base_url=base, timeout=60) as c:
        assert c.get(f"{API}/sweeps").status_code == 401
        for url in (f"{API}/sweeps", f"{API}/files/17o05028_ic_steps.abf/sweeps/1/trace", f"{API}/plots/fi"):
            assert c.get(url, headers={"Authorization": f"Bearer {tok['bob']}"}).status_code == 403, url
            assert c.get(url, headers={"Authorization": f"Bearer {tok['ada']}"}).status_code == 200, url
        # SQL goes through the same rights
        q = {"sql": f"SELECT count(*) AS n FROM {DS}.ephys.sweeps"}
        assert c.post("/api/v1/query", json=q, headers={"Authorization": f"Bearer {tok['bob']}"}).status_code == 403
        r = c.post("/api/v1/query", json=q, headers={"Authorization": f"Bearer {tok['ada']}"})
        assert r.status_code == 200 and r.json()["data"][0]["n"] == 16 + 20
