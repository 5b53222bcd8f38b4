"""Skeletons of real segmentations (gala FIB-SEM neurons, Gerhard et al. 2013 labels): the batch job against
kimimaro run directly, cloud-volume (unmodified) reading them from a real ``neurolake serve`` process, SWC
round trips, the skeleton table in SQL, idempotency, overwrite with version pins, and errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.skeletons.conftest import DATA, GERHARD_MIP


def _kimimaro_direct(labels_zyx: np.ndarray, anisotropy) -> dict:
    """kimimaro on the whole volume with its defaults, as a user would run it (x, y, z indexing)."""
    import kimimaro

    return kimimaro.skeletonize(np.asfortranarray(labels_zyx.T), anisotropy=tuple(anisotropy), progress=False,
                                parallel=1)


@pytest.fixture(scope="module")
def gala_direct():
    import h5py

    with h5py.File(DATA / "gala_fibsem/train-gt.lzf.h5") as f:
        labels = f["stack"][:]
    return _kimimaro_direct(labels, (8.0, 8.0, 8.0))


@pytest.fixture(scope="module")
def gerhard_direct(skel_lake):
    from neurolake.process.jobs import read_layer

    la = skel_lake.layer("gerhard2013", "labels")
    return _kimimaro_direct(read_layer(skel_lake, "gerhard2013", "labels", GERHARD_MIP),
                            la.spec.mips[GERHARD_MIP].voxel_size_nm)


# -- the batch job against kimimaro directly --------------------------------------------------------
@pytest.mark.parametrize("ds, layer, direct", [("gala", "segmentation", "gala_direct"),
                                               ("gerhard2013", "labels", "gerhard_direct")])
def test_cable_length_within_10_percent_of_kimimaro(skel_lake, request, ds, layer, direct):
    from neurolake.skeletons import skeleton, skeleton_ids

    ref = request.getfixturevalue(direct)
    ids = skeleton_ids(skel_lake, ds, layer)
    assert sorted(int(i) for i in ref) == ids  # the same segments get a skeleton
    assert len(ids) >= 5
    for sid in ids:
        ours = skeleton(skel_lake, ds, layer, sid).cable_length()
        theirs = ref[sid].cable_length()
        assert ours == pytest.approx(theirs, rel=0.10), (sid, ours, theirs)


def test_vertices_in_layer_nm_and_inside_their_segment(skel_lake):
    """Vertices are nm in layer coordinates (tasks read offset boxes): each lies in a voxel of its own segment."""
    from neurolake.process.jobs import read_layer
    from neurolake.skeletons import skeleton, skeleton_ids

    labels = read_layer(skel_lake, "gala", "segmentation")
    for sid in skeleton_ids(skel_lake, "gala", "segmentation"):
        sk = skeleton(skel_lake, "gala", "segmentation", sid)
        vox = np.round(sk.vertices / 8.0).astype(int)  # x, y, z
        assert (labels[vox[:, 2], vox[:, 1], vox[:, 0]] == sid).mean() > 0.95, sid
        assert sk.radius.dtype == np.float32 and (sk.radius > 0).all()


def test_progress_and_provenance(skel_lake, skel_lake_path):
    from neurolake.skeletons import provenance

    phases = ast.literal_eval((skel_lake_path / "gala-progress.txt").read_text())
    assert {p for p, _, _ in phases} == {"bounding boxes", "skeletons"}
    done = [d for p, d, t in phases if p == "skeletons"]
    total = next(t for p, _, t in phases if p == "skeletons")
    assert done == list(range(total + 1)) and total > 1  # several Dask tasks, each reported
    prov = provenance(skel_lake, "gala", "segmentation")
    assert prov["action"] == "skeletonize" and prov["kimimaro"].startswith("5.")
    assert prov["params"]["teasar_params"]["const"] == 300 and prov["params"]["mip"] == 0
    assert prov["inputs"] == [{"datastack": "gala", "layer": "segmentation"}]
    assert prov["key"]["inputs"][0]["identity"]["path"].endswith("volumes/segmentation")
    assert prov["statistics"]["skeletons"] == 43 and prov["statistics"]["voxels"] == 200 * 100 * 50
    assert prov["table_version"] == 0 and prov["code"]["neurolake"]
    g = provenance(skel_lake, "gerhard2013", "labels")
    assert g["params"]["mip"] == GERHARD_MIP and g["statistics"]["tasks"] >= 1


# -- cloud-volume from a real server ------------------------------------------------------------------
@pytest.mark.parametrize("ds, layer", [("gala", "segmentation"), ("gerhard2013", "labels")])
def test_cloudvolume_reads_skeletons_from_server(skel_server, skel_lake, ds, layer):
    from cloudvolume import CloudVolume

    from neurolake.skeletons import skeleton, skeleton_ids

    vol = CloudVolume(f"precomputed://{skel_server}/precomputed/{ds}/{layer}", progress=False, cache=False)
    assert vol.info["skeletons"] == "skeletons"
    assert vol.skeleton.meta.info["@type"] == "neuroglancer_skeletons"
    ids = skeleton_ids(skel_lake, ds, layer)
    for sid in ids[:5]:
        got = vol.skeleton.get(sid)
        ours = skeleton(skel_lake, ds, layer, sid)
        assert got.id == sid
        np.testing.assert_array_equal(got.vertices, ours.vertices)
        np.testing.assert_array_equal(got.edges, ours.edges)
        np.testing.assert_array_equal(got.radius, ours.radius)
        assert got.cable_length() == pytest.approx(ours.cable_length())
    many = vol.skeleton.get(ids[:3])
    assert sorted(s.id for s in many) == ids[:3]


def test_http_skeleton_routes(skel_server):
    base = f"{skel_server}/precomputed/gala/segmentation"
    assert "skeletons" not in httpx.get(f"{skel_server}/precomputed/gala/image/info").json()
    r = httpx.get(f"{base}/skeletons/info")
    assert r.status_code == 200 and r.json()["vertex_attributes"][0]["id"] == "radius"
    assert httpx.head(f"{base}/skeletons/6").status_code == 200
    # a segment without a skeleton, a non-id, and a layer without skeletons: 404 (a missing file to clients)
    assert httpx.get(f"{base}/skeletons/999999").status_code == 404
    assert httpx.get(f"{base}/skeletons/abc").status_code == 404
    r = httpx.get(f"{skel_server}/precomputed/gala/image/skeletons/info")
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"
    # the chunks of the volume are still served by the precomputed router
    assert httpx.get(f"{base}/8_8_8/0-128_0-100_0-16").status_code == 200
    # SWC and the table as JSON
    swc = httpx.get(f"{skel_server}/api/v1/datastacks/gala/layers/segmentation/skeletons/6/swc")
    assert swc.status_code == 200 and swc.headers["content-type"].startswith("text/plain")
    tab = httpx.get(f"{skel_server}/api/v1/datastacks/gala/layers/segmentation/skeletons").json()
    assert tab["table_version"] == 0 and len(tab["rows"]) == 43 and tab["provenance"]["action"] == "skeletonize"


# -- SWC ------------------------------------------------------------------------------------------------
def test_swc_parses_back_with_cloudvolume(skel_lake, skel_lake_path, tmp_path):
    from cloudvolume import Skeleton

    from neurolake.skeletons import skeleton, skeleton_ids, swc

    for sid in skeleton_ids(skel_lake, "gala", "segmentation")[:8]:
        ours = skeleton(skel_lake, "gala", "segmentation", sid)
        back = Skeleton.from_swc(swc(skel_lake, "gala", "segmentation", sid))
        assert len(back.vertices) == len(ours.vertices) and len(back.edges) == len(ours.edges)
        assert back.cable_length() == pytest.approx(ours.cable_length(), rel=1e-5)
        assert np.allclose(np.sort(back.radius), np.sort(ours.radius), rtol=1e-5)
    # the command writes files that parse back too
    out = tmp_path / "swc"
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "skeleton", "swc", "-l", str(skel_lake_path),
                        "-d", "gerhard2013", "--layer", "labels", "255,128", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for sid in (255, 128):
        back = Skeleton.from_swc((out / f"{sid}.swc").read_text())
        assert back.cable_length() == pytest.approx(skeleton(skel_lake, "gerhard2013", "labels", sid).cable_length(),
                                                    rel=1e-5)


# -- the skeleton table in SQL ------------------------------------------------------------------------
def _branch_points(sk) -> int:
    deg = np.bincount(sk.edges.ravel(), minlength=len(sk.vertices))
    return int((deg >= 3).sum())


def test_skeleton_table_in_sql(skel_lake):
    from neurolake.skeletons import skeleton

    res = skel_lake.sql("SELECT segment_id, cable_length_nm, n_branch_points, n_end_points, voxels "
                        "FROM gala.skeletons.segmentation ORDER BY segment_id")
    df = res.df()
    assert len(df) == 43 and res.run["inputs"][0]["pin"]["delta_version"] == 0
    assert res.manifest["inputs"][0]["facets"]["version"]["datasetVersion"] == "delta:0"
    for row in df.itertuples():
        sk = skeleton(skel_lake, "gala", "segmentation", int(row.segment_id))
        assert row.cable_length_nm == pytest.approx(sk.cable_length())
        assert row.n_branch_points == _branch_points(sk)
    assert df["n_branch_points"].sum() > 0 and (df["voxels"] >= 1000).all()
    # joined with the other layer's table, pinned, production, reproduced
    prod = skel_lake.sql('SELECT count(*) AS n, sum(cable_length_nm) AS cable FROM gerhard2013.skeletons."labels@0"',
                         mode="production")
    assert int(prod.df()["n"][0]) == 5
    assert skel_lake.reproduce(prod.run_id)["status"] == "identical"


def test_skeleton_table_with_neurolake_sql_command(skel_lake_path):
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "sql", "-l", str(skel_lake_path), "--format", "json",
                        "SELECT segment_id, cable_length_nm, n_branch_points FROM gerhard2013.skeletons.labels "
                        "ORDER BY cable_length_nm DESC LIMIT 3"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "cable_length_nm" in p.stdout and "255" in p.stdout


def test_unknown_skeleton_table_names_the_known(skel_lake):
    from neurolake.errors import NotFound

    with pytest.raises(NotFound, match="known: segmentation"):
        skel_lake.sql("SELECT * FROM gala.skeletons.image")
    with pytest.raises(NotFound, match="Delta version 5 does not exist"):
        skel_lake.sql('SELECT * FROM gala.skeletons."segmentation@5"')


# -- idempotency, overwrite, pins ------------------------------------------------------------------
def test_rebuild_idempotent_refused_then_overwritten(fresh_lake):
    from neurolake.demo import GALA_VOXEL
    from neurolake.errors import AlreadyExists
    from neurolake.skeletons import skeleton_ids, skeleton_table, skeletonize_layer

    fresh_lake.create_datastack("gala", GALA_VOXEL)
    fresh_lake.ingest(str(DATA / "gala_fibsem/train-gt.lzf.h5:/stack"), "gala", "seg", voxel_size=GALA_VOXEL,
                      layer_type="segmentation", scheduler="threads")
    first = skeletonize_layer(fresh_lake, "gala", "seg", dust_threshold=20000)
    assert not first["already_built"] and first["table_version"] == 0
    n_big = len(skeleton_ids(fresh_lake, "gala", "seg"))
    again = skeletonize_layer(fresh_lake, "gala", "seg", dust_threshold=20000)
    assert again["already_built"] and again["time"] == first["time"]
    with pytest.raises(AlreadyExists, match="dust_threshold: 20000 then, 5000 now"):
        skeletonize_layer(fresh_lake, "gala", "seg", dust_threshold=5000)
    assert len(skeleton_ids(fresh_lake, "gala", "seg")) == n_big  # nothing changed
    second = skeletonize_layer(fresh_lake, "gala", "seg", dust_threshold=5000, overwrite=True)
    assert second["table_version"] == 1 and len(skeleton_ids(fresh_lake, "gala", "seg")) > n_big
    assert not any(p.name.startswith("skeletons.") for p in fresh_lake.layer("gala", "seg").root.iterdir())
    # the old table version stays readable by its pin
    assert skeleton_table(fresh_lake, "gala", "seg", 0).num_rows == n_big
    old = fresh_lake.sql('SELECT count(*) AS n FROM gala.skeletons."seg@0"')
    assert int(old.df()["n"][0]) == n_big


# -- errors -----------------------------------------------------------------------------------------
def test_errors(skel_lake):
    from neurolake.errors import InvalidArgument, NotFound
    from neurolake.skeletons import skeleton, skeletonize_layer

    with pytest.raises(InvalidArgument, match="image layer"):
        skeletonize_layer(skel_lake, "gala", "image")
    with pytest.raises(InvalidArgument, match="mip 9 does not exist"):
        skeletonize_layer(skel_lake, "gala", "segmentation", mip=9)
    with pytest.raises(InvalidArgument, match="unknown TEASAR parameter 'scal'"):
        skeletonize_layer(skel_lake, "gala", "segmentation", teasar_params={"scal": 2})
    with pytest.raises(NotFound, match="no skeleton"):
        skeleton(skel_lake, "gala", "segmentation", 999999)
    with pytest.raises(InvalidArgument, match="not an integer"):
        skeleton(skel_lake, "gala", "segmentation", "x1")
    with pytest.raises(NotFound):
        skeleton(skel_lake, "gala", "nope", 1)


def test_cli_build_says_already_built(skel_lake_path):
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "skeleton", "build", "-l", str(skel_lake_path),
                        "-d", "gala", "--layer", "segmentation", "--ids-per-task", "8", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["already_built"] is True
    p = subprocess.run([sys.executable, "-m", "neurolake.cli", "skeleton", "build", "-l", str(skel_lake_path),
                        "-d", "gala", "--layer", "image"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "invalid_argument" in p.stderr


def test_plan_bounds_tasks_and_reads_border_segments_whole():
    from neurolake.skeletons.build import plan

    shape = (100, 1000, 1000)
    boxes = {1: [5000, 10, 20, 100, 200, 100, 200],        # inside
             2: [5000, 12, 22, 110, 210, 120, 220],        # inside, next to 1
             3: [5000, 50, 60, 800, 900, 800, 900],        # inside, far away
             4: [5000, 0, 10, 500, 600, 500, 600],         # touches z = 0
             5: [10, 30, 31, 300, 301, 300, 301]}          # dust
    groups = plan(boxes, shape, ids_per_task=16, max_task_voxels=2_000_000, min_voxels=1000)
    ids = sorted(i for _, g in groups for i in g)
    assert ids == [1, 2, 3, 4]  # dust left out
    for box, g in groups:
        vol = np.prod([b - a for a, b in box])
        assert vol <= 2_000_000 or len(g) == 1
        for i in g:  # each segment's box (with its margin) is inside its task's box
            b = boxes[i]
            assert box[0][0] <= max(b[1] - 1, 0) and box[0][1] >= b[2]
    assert next(g for _, g in groups if 1 in g) == [1, 2]  # neighbours share a task
    # the whole volume is 100 M voxels > max_task_voxels: the border segment is read in its own box
    assert next(box for box, g in groups if 4 in g)[1] != (0, 1000)
    small = plan(boxes, (100, 1000, 1000), ids_per_task=16, max_task_voxels=10**9, min_voxels=1000)
    assert next(box for box, g in small if 4 in g) == ((0, 100), (0, 1000), (0, 1000))
