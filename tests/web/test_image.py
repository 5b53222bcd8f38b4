"""The image explorer pages (``/ui/image``, ``/ui/image/{ds}``) on the demo layers, and the viewer's
``position`` (the link the 2-D view gives into Neuroglancer).

Lake: ``demo_lake_path`` (session, read-only): the real demo layers of gerhard2013 (ssTEM 1024 x 1024 x 20,
5 mips; labels) and gala_fibsem (FIB-SEM 200 x 100 x 50, 3 mips; segmentation). Browser behaviour (drag,
zoom, URL state in Chromium) is tested in tests/web/test_browser.py.
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(demo_lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(demo_lake_path)) as c:
        yield c


def _config(html: str) -> dict:
    m = re.search(r'<script id="image-config" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no image-config block"
    return json.loads(unescape(m.group(1)))


def test_index_lists_every_datastack_image_layer(client, demo_lake):
    r = client.get("/ui/image")
    assert r.status_code == 200 and 'id="image-layers"' in r.text
    rows = set(re.findall(r'data-datastack="([^"]+)" data-layer="([^"]+)"', r.text))
    expected = {(ds, la.name) for ds in demo_lake.datastacks() for la in demo_lake.layers(ds)
                if la.layer_type in ("image", "segmentation") and la.status == "ready"}
    assert rows == expected and ("gerhard2013", "image") in rows and ("gala_fibsem", "segmentation") in rows
    assert 'href="/ui/image/gerhard2013?layer=image"' in r.text
    assert "1024×1024×20" in r.text and "64×64×10" in r.text  # sizes per mip (mip 4 halves z too)


def test_view_defaults_and_tile_template(client, demo_lake):
    r = client.get("/ui/image/gerhard2013")
    assert r.status_code == 200
    assert 'id="image-view"' in r.text and 'id="z-slider"' in r.text and 'src="/ui/static/image.js"' in r.text
    tpl = "/catmaid/gerhard2013/image/xy/{z}/{row}_{col}_{mip}.jpg"
    assert f'data-tile-url="{tpl}"' in r.text
    cfg = _config(r.text)
    la = demo_lake.layer("gerhard2013", "image")
    assert cfg["tileUrl"] == tpl and cfg["tile"] == 512
    assert cfg["sizes"] == [list(la.size(m)) for m in range(la.num_mips)]
    assert (cfg["x"], cfg["y"], cfg["z"], cfg["mip"]) == (512, 512, 10, 0)  # centre; mip 0 fits 1024 px
    assert 'max="19"' in r.text  # the slider spans the 20 sections
    assert 'href="/viewer/gerhard2013?position=512,512,10.5"' in r.text
    # the layer list offers every layer of the datastack
    assert re.findall(r'<option value="([^"]+)"', r.text) == [la.name for la in demo_lake.layers("gerhard2013")]
    # the tile the template names for the initial view exists
    t = client.get(tpl.format(z=10, row=1, col=0, mip=0))
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"


def test_view_keeps_the_given_state(client):
    r = client.get("/ui/image/gala_fibsem?layer=segmentation&x=150&y=20&z=49&mip=2")
    assert r.status_code == 200
    cfg = _config(r.text)
    assert (cfg["layer"], cfg["type"], cfg["x"], cfg["y"], cfg["z"], cfg["mip"]) == ("segmentation", "segmentation",
                                                                                   150, 20, 49, 2)
    assert cfg["sizes"] == [[200, 100, 50], [100, 50, 25], [50, 25, 13]]
    assert 'href="/viewer/gala_fibsem?position=150,20,49.5"' in r.text
    assert client.get("/catmaid/gala_fibsem/segmentation/xy/49/0_0_2.jpg").status_code == 200


@pytest.mark.parametrize("query, field", [
    ("x=1024", "x"), ("y=-1", "y"), ("z=20", "z"), ("mip=5", "mip"), ("z=abc", "z"), ("x=1.5", "x"),
    ("mip=%D9%A1", "mip"),  # Arabic-Indic digit one: not an ASCII whole number
])
def test_bad_params_400(client, query, field):
    """Errors of pages are HTML pages (neurolake.web.render.PageRoute) naming the parameter."""
    r = client.get(f"/ui/image/gerhard2013?{query}")
    assert r.status_code == 400, r.text
    assert "text/html" in r.headers["content-type"] and f"{field} must be" in unescape(r.text)


def test_unknown_datastack_and_layer_404(client):
    r = client.get("/ui/image/nope")
    assert r.status_code == 404 and "nope" in unescape(r.text)
    r = client.get("/ui/image/gerhard2013?layer=nope")
    assert r.status_code == 404 and "no ready image or segmentation layer 'nope'" in unescape(r.text)


def test_viewer_position_param(client):
    r = client.get("/viewer/gerhard2013?position=100,200,3.5", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/viewer/v/gerhard2013@100,200,3.5/"
    state = client.get("/viewer/state/gerhard2013@100,200,3.5").json()
    assert state["position"] == [100, 200, 3.5]
    r = client.get("/viewer/gerhard2013?source=zarr3&position=1,2,3", follow_redirects=False)
    assert r.headers["location"] == "/viewer/v/gerhard2013@zarr3@1,2,3/"
    z = client.get("/viewer/state/gerhard2013@zarr3@1,2,3").json()
    assert z["position"] == [1, 2, 3] and z["layers"][0]["source"].startswith("zarr3://")
    for bad in ("1,2", "a,b,c", "1,2,nan"):
        r = client.get(f"/viewer/gerhard2013?position={bad}", headers={"accept": "application/json"},
                       follow_redirects=False)
        assert r.status_code == 400 and r.json()["detail"]["field"] == "position"
    assert client.get("/viewer/state/gerhard2013@1,2").status_code == 400
    assert client.get("/viewer/state/gerhard2013@n5").status_code == 404


def test_default_viewer_state_is_readable(client, demo_lake):
    """EM visible; segmentations listed, at most one visible, at low alpha; position inside the volume."""
    state = client.get("/viewer/state/gerhard2013").json()
    by = {la["name"]: la for la in state["layers"]}
    assert by["image"]["visible"] is True and state["layers"][0]["name"] == "image"
    segs = [la for la in state["layers"] if la["type"] == "segmentation"]
    assert segs and sum(la["visible"] for la in segs) == 1
    assert all(la["selectedAlpha"] <= 0.25 and la["notSelectedAlpha"] == 0 for la in segs)
    x, y, z = state["position"]
    assert 0 <= x < 1024 and 0 <= y < 1024 and 0 <= z < 20
    assert state["crossSectionScale"] == 2.0  # 1024 voxels in a ~512-pixel panel
    gala = client.get("/viewer/state/gala_fibsem").json()
    assert gala["position"] == [100.5, 50.5, 25.5] and gala["crossSectionScale"] < 1


def test_under_auth_only_readable_datastacks(tmp_path, demo_lake):
    """A private datastack with a layer (a real crop of the gerhard2013 EM) is neither listed nor shown to a
    user without a role on it; a public one is."""
    import numpy as np
    import pandas as pd

    from neurolake import init_lake
    from neurolake.server.app import create_app
    from neurolake.volumes.sources import NpyFile

    crop = demo_lake.layer("gerhard2013", "image").cutout(x=(0, 300), y=(0, 200), z=(0, 4))
    np.save(tmp_path / "crop.npy", crop)
    path = tmp_path / "lake"
    lake = init_lake(path)
    for name, public in (("open_ds", True), ("secret_ds", False)):
        lake.create_datastack(name, (4.6, 4.6, 50), public=public)
        lake.ingest(NpyFile(tmp_path / "crop.npy"), name, "image", layer_type="image", scheduler="threads")
    lake.create_datastack("no_layers", (4, 4, 40))  # e.g. a connectome without EM: nothing to show
    # a private synapse table: its synapse must not become vera's default viewer position
    from neurolake.annotations import create_table

    create_table(lake, "open_ds", "hidden_syn", "synapse", optional_points=["pre_pt", "post_pt"], owner="ada",
                 read_permission="PRIVATE").append(
        pd.DataFrame({"ctr_pt_position_x": [10.0], "ctr_pt_position_y": [20.0], "ctr_pt_position_z": [1.0]}),
        author="ada")
    lake.access.add_user("vera")
    tok = lake.access.create_token("vera")["token"]
    lake.close()
    with TestClient(create_app(path, auth=True)) as c:
        h = {"Authorization": f"Bearer {tok}"}
        r = c.get("/ui/image", headers=h)
        assert r.status_code == 200
        assert set(re.findall(r'data-datastack="([^"]+)" data-layer="([^"]+)"', r.text)) == {("open_ds", "image")}
        r = c.get("/ui/image/open_ds?z=3&mip=0", headers=h)
        assert r.status_code == 200 and _config(r.text)["sizes"][0] == [300, 200, 4]
        assert c.get("/ui/image/secret_ds", headers=h).status_code == 403
        state = c.get("/viewer/state/open_ds", headers=h).json()
        assert state["position"] == [150.5, 100.5, 2.5] and "hidden_syn" not in {la["name"] for la in state["layers"]}
        r = c.get("/ui/image/no_layers", headers=h)
        assert r.status_code == 404 and "has no image or segmentation layer to show" in unescape(r.text)
        assert c.get("/catmaid/secret_ds/image/xy/0/0_0_0.jpg", headers=h).status_code == 403
    with TestClient(create_app(path)) as c:  # the local user reads every table: the view opens at that synapse
        assert c.get("/viewer/state/open_ds").json()["position"] == [10.0, 20.0, 1.0]
