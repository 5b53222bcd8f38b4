"""The electrophysiology pages on the demo lake's ``ephys`` datastack (every shipped recording)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(ui_lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(ui_lake_path)) as c:
        yield c


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_ephys_index_lists_files_and_plots(client, ui_lake_path):
    from neurolake import open_lake

    r = client.get("/ui/ephys/ephys")
    assert r.status_code == 200, r.text
    html = r.text
    assert {"ephys-files", "fi-curve", "plate-heatmap-1"} <= _ids(html)
    with open_lake(ui_lake_path) as lake:
        files = lake["ephys"].ephys.table("files").df()
    assert len(files) == 21
    for name in files["name"]:
        assert name in html
    assert html.count('class="plotly-graph-div"') == 2  # the f-I curves and the one multi-well plate


def test_home_and_datastack_link_the_ephys_pages(client):
    html = client.get("/ui").text
    card = html[html.index('data-datastack="ephys"'):]
    card = card[:card.index("</div>\n  </div>") if "</div>\n  </div>" in card else 2000]
    assert 'href="/ui/ephys/ephys"' in card and "electrophysiology" in card
    page = client.get("/ui/datastacks/ephys").text
    assert 'id="ephys-link"' in page and 'href="/ui/ephys/ephys"' in page


def test_patch_clamp_file_page(client, ui_lake_path):
    from neurolake import open_lake

    with open_lake(ui_lake_path) as lake:
        ep = lake["ephys"].ephys
        sha = ep.file("17o05028_ic_steps.abf")["file_sha256"]
        sweeps = ep.table("sweeps", file_sha256=sha).df()
        cells = ep.table("cell_features", file_sha256=sha).df()
    r = client.get(f"/ui/ephys/ephys/files/{sha[:16]}", params={"sweep": 10})
    assert r.status_code == 200, r.text
    html = r.text
    assert {"sweep-plot", "ephys-sweeps", "cell-features"} <= _ids(html)
    assert "Sweep 10, channel 0" in html
    assert html.count("<tr") - 2 == len(sweeps) + len(cells)  # one row per sweep and per cell feature
    for rule in sweeps["stimulus_rule"].head(3):
        assert rule.split(" ")[0] in html
    assert "rheobase_pa" in html


def test_mea_file_page_and_errors(client):
    r = client.get("/ui/ephys/ephys/files/exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz")
    assert r.status_code == 200, r.text
    assert {"plate-heatmap", "raster", "mea-wells"} <= _ids(r.text)
    assert "treatX" in r.text
    r = client.get("/ui/ephys/ephys/files/nope.abf")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "17o05028_ic_steps.abf" in r.text  # the error names loaded files
    assert client.get("/ui/ephys/nope").status_code == 404
