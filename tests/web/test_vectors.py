"""The vector explorer and :mod:`neurolake.analysis` on real data.

Lake (module scope): datastack ``pinky100`` with the MICrONS pinky100 ``somas`` and ``synapses`` tables
(../shared/data/connectome_microns_pinky100_pyc, as tests/query/conftest.py builds them) frozen as version 1,
and datastack ``hemibrain`` with the registered Parquet feature table ``hemi_meta``: the numeric and type
columns of the hemibrain neuron annotations of Schlegel et al. 2024 (supplemental file 5).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from neurolake import analysis
from neurolake.errors import InvalidArgument, TooLarge
from tests.query.conftest import pinky_somas, pinky_synapses

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HEMI = SHARED / "annotations_flywire_hemibrain_meta_schlegel2024" / "Supplemental_file5_hemibrain_meta.csv"
HEMI_COLS = ["bodyId", "type", "cell_class", "side", "pre", "post", "pre_con2"]


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neurolake import init_lake
    from neurolake.annotations import create_table

    root = tmp_path_factory.mktemp("vectors")
    lake = init_lake(root / "lake")
    lake.create_datastack("pinky100", (4, 4, 40), description="MICrONS pinky100", public=False)
    create_table(lake, "pinky100", "synapses", "synapse", optional_points=["ctr_pt"]).append(pinky_synapses())
    create_table(lake, "pinky100", "somas", "nucleus", voxel_size_nm=(1, 1, 1),
                 properties={"manual_id": "int"}).append(pinky_somas())
    lake["pinky100"].versions.create()
    lake.create_datastack("hemibrain", (8, 8, 8), public=False)
    meta = pd.read_csv(HEMI)[HEMI_COLS]
    pq.write_table(pa.Table.from_pandas(meta, preserve_index=False), root / "hemi_meta.parquet")
    lake.features.register(name="hemi_meta", datastack="hemibrain", location=str(root / "hemi_meta.parquet"),
                           description="hemibrain meta, Schlegel et al. 2024 (file 5)")
    lake.close()
    return root / "lake"


@pytest.fixture(scope="module")
def client(lake_path):
    from neurolake.server.app import create_app

    with TestClient(create_app(lake_path)) as c:
        yield c


def summary_rows(html: str) -> dict[str, list[str]]:
    body = html[html.index('id="vector-summary"'):]
    body = body[:body.index("</table>")]
    out = {}
    for m in re.finditer(r'<tr data-column="([^"]+)">(.*?)</tr>', body, re.S):
        out[unescape(m.group(1))] = [unescape(re.sub(r"<[^>]+>", "", c)).strip()
                                     for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(2), re.S)]
    return out


def mean_attr(html: str, column: str) -> float:
    body = html[html.index(f'<tr data-column="{column}">'):]
    return float(re.search(r'data-value="([^"]*)"', body).group(1))


# ---------------------------------------------------------------------------------------------- core
def test_summarize_equals_pandas_on_the_source_csv():
    src = pd.read_csv(HEMI)
    got = {c["name"]: c for c in analysis.summarize(src)}
    for col in ("pre", "post", "pre_con2", "bodyId"):
        s = src[col]
        c = got[col]
        assert c["type"] == "numeric"
        assert c["count"] == s.count() and c["nulls"] == s.isna().sum() and c["distinct"] == s.nunique()
        assert c["mean"] == pytest.approx(s.mean(), rel=1e-12) and c["std"] == pytest.approx(s.std(), rel=1e-12)
        assert c["min"] == s.min() and c["max"] == s.max()
        assert [c["q25"], c["q50"], c["q75"]] == pytest.approx(list(s.quantile([0.25, 0.5, 0.75])), rel=1e-12)
    side = got["side"]
    assert side["type"] == "text" and side["count"] == src.side.count()
    assert side["top"][0] == (src.side.value_counts().index[0], int(src.side.value_counts().iloc[0]))
    assert got["cropped"]["type"] in ("bool", "text")  # True/False with nulls reads as object


def test_histograms_correlation_and_pca_equal_numpy_pandas_sklearn():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    src = pd.read_csv(HEMI)
    h = {x["name"]: x for x in analysis.histograms(src, bins=20, columns=["pre", "side"])}
    counts, edges = np.histogram(src.pre.dropna(), bins=20)
    assert h["pre"]["counts"] == counts.tolist() and h["pre"]["edges"] == pytest.approx(edges.tolist())
    assert sum(h["side"]["counts"]) == src.side.count()
    cols = ["pre", "post", "pre_con2"]
    pd.testing.assert_frame_equal(analysis.correlation(src, cols), src[cols].corr())
    p = analysis.pca(src, color="side", columns=cols)
    complete = src[cols].dropna()
    ref = PCA(n_components=2).fit(StandardScaler().fit_transform(complete))
    assert p["explained_variance_ratio"] == pytest.approx(ref.explained_variance_ratio_.tolist(), rel=1e-9)
    assert p["rows"] == len(complete) and p["dropped_rows"] == len(src) - len(complete)
    assert p["scores"].shape == (len(complete), 2) and len(p["color_values"]) == len(complete)
    with pytest.raises(InvalidArgument, match="not numeric"):
        analysis.pca(src, columns=["pre", "side"])
    with pytest.raises(InvalidArgument, match="no column 'nope'"):
        analysis.pca(src, color="nope")
    with pytest.raises(InvalidArgument, match="at least 2 numeric"):
        analysis.pca(pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0]}))
    with pytest.raises(InvalidArgument, match="n_components"):
        analysis.pca(src, columns=cols, n_components=4)
    with pytest.raises(InvalidArgument, match="bins"):
        analysis.histograms(src, bins=0)


def test_sample_is_deterministic_and_says_so():
    src = pd.read_csv(HEMI)
    a, info = analysis.sample(src, max_rows=1000, seed=3)
    b, _ = analysis.sample(src, max_rows=1000, seed=3)
    assert info == {"rows": len(src), "used": 1000, "sampled": True, "seed": 3}
    pd.testing.assert_frame_equal(a, b)
    assert a.index.is_monotonic_increasing
    same, info = analysis.sample(src, max_rows=len(src))
    assert same is src and not info["sampled"]


def test_read_table_upload_parses_real_csv_and_refuses_bad_files():
    data = HEMI.read_bytes()
    df = analysis.read_table_upload(data, HEMI.name)
    pd.testing.assert_frame_equal(df, pd.read_csv(HEMI))
    tsv = pd.read_csv(HEMI)[["bodyId", "pre"]].head(50).to_csv(sep="\t", index=False).encode()
    assert analysis.read_table_upload(tsv, "x.tsv").shape == (50, 2)
    cases = [(b"", "empty"), (b"  \n", "empty"), (b"PK\x03\x04\x00\x00binary", "binary"),
             (b"a,b\n\xff\xfe,1\n", "not UTF-8"), (b"a,b\n1,2\n3,4,5,6\n", "not a well-formed CSV"),
             (b"a,b,c\n", "no rows"), (b"a,a\n1,2\n", "duplicate column")]
    for raw, msg in cases:
        with pytest.raises(InvalidArgument, match=msg):
            analysis.read_table_upload(raw, "bad.csv")
    with pytest.raises(TooLarge, match="limited to 10 bytes"):
        analysis.read_table_upload(b"a,b\n1,2\n3,4\n", "big.csv", max_bytes=10)


# ---------------------------------------------------------------------------------------------- pages
def test_table_page_summary_equals_pandas_and_links_the_run(client):
    somas = pinky_somas()
    r = client.get("/ui/vectors", params={"table": "pinky100.v1.somas", "color": "manual_id"})
    assert r.status_code == 200, r.text[:2000]
    rows = summary_rows(r.text)
    for col in ("pt_position_x", "pt_position_y", "pt_position_z", "manual_id"):
        assert int(rows[col][2]) == somas[col].count()       # count
        assert int(rows[col][4]) == somas[col].nunique()     # distinct
        assert mean_attr(r.text, col) == pytest.approx(somas[col].mean(), rel=1e-12)
    run_id = re.search(r'id="vector-run" href="/ui/runs/([0-9a-f-]+)"', r.text).group(1)
    for el in ("vector-histograms", "vector-splom", "vector-corr", "vector-pca"):
        assert f'id="{el}"' in r.text
    assert "Coloured by manual_id" in r.text
    # the run is recorded with the version pin
    from neurolake.provenance.runs import get_run

    lake = client.app.state.lake
    run = get_run(lake, run_id)
    assert run["inputs"][0]["name"] == "pinky100.v1.somas" and run["rows"] == len(somas)
    # the share link reopens the same view
    share = unescape(re.search(r'id="vector-share" href="([^"]+)"', r.text).group(1))
    again = client.get(share)
    assert again.status_code == 200 and summary_rows(again.text) == rows


def test_feature_table_pca_equals_sklearn(client):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    src = pd.read_csv(HEMI)[HEMI_COLS]
    cols = ["pre", "post", "pre_con2"]
    r = client.get("/ui/vectors", params={"table": "features.hemi_meta", "color": "side",
                                          "columns": ",".join(cols)})
    assert r.status_code == 200, r.text[:2000]
    ref = PCA(n_components=2).fit(StandardScaler().fit_transform(src[cols].dropna()))
    evr = re.search(r'id="vector-pca-info" data-evr="([^"]+)"', r.text).group(1)
    got = [float(x) for x in evr.split(",")]
    assert got == pytest.approx(ref.explained_variance_ratio_.tolist(), rel=1e-9)
    assert f"PC1 {ref.explained_variance_ratio_[0]:.4f}" in r.text
    rows = summary_rows(r.text)
    assert int(rows["bodyId"][2]) == len(src)
    assert mean_attr(r.text, "pre") == pytest.approx(src.pre.mean(), rel=1e-12)


def test_upload_real_csv_and_share_link(client):
    client.get("/ui/vectors")  # sets the CSRF cookie
    tok = client.cookies.get("neurolake_csrf")
    data = HEMI.read_bytes()
    r = client.post("/ui/vectors/upload", data={"csrf": tok}, files={"file": (HEMI.name, data, "text/csv")},
                    follow_redirects=False)
    assert r.status_code == 303
    import hashlib

    assert r.headers["location"] == f"/ui/vectors?upload={hashlib.sha256(data).hexdigest()[:16]}"
    page = client.get(r.headers["location"] + "&color=side")
    assert page.status_code == 200
    src = pd.read_csv(HEMI)
    rows = summary_rows(page.text)
    assert set(rows) == set(src.columns)
    assert int(rows["post"][2]) == src.post.count() and int(rows["post"][3]) == src.post.isna().sum()
    assert mean_attr(page.text, "post") == pytest.approx(src.post.mean(), rel=1e-12)
    assert 'id="vector-pca"' in page.text and "Coloured by side" in page.text


def test_upload_errors_are_clean_pages(client):
    client.get("/ui/vectors")
    tok = client.cookies.get("neurolake_csrf")
    r = client.post("/ui/vectors/upload", data={"csrf": tok},
                    files={"file": ("bad.csv", b"a,b\n1,2\n3,4,5,6\n", "text/csv")})
    assert r.status_code == 400 and "not a well-formed CSV" in unescape(r.text) and 'id="vector-error"' in r.text
    r = client.post("/ui/vectors/upload", data={"csrf": tok},
                    files={"file": ("x.csv", b"\x89PNG\r\n\x1a\n\x00\x00", "text/csv")})
    assert r.status_code == 400 and "binary" in r.text
    r = client.post("/ui/vectors/upload", files={"file": ("ok.csv", b"a,b\n1,2\n", "text/csv")})
    assert r.status_code == 403 and "CSRF" in r.text
    big = HEMI.read_bytes()[:5000]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(analysis, "MAX_UPLOAD_BYTES", 4000)
        r = client.post("/ui/vectors/upload", data={"csrf": tok}, files={"file": ("big.csv", big, "text/csv")})
    assert r.status_code == 413 and "limited to 4,000 bytes" in r.text
    r = client.get("/ui/vectors", params={"upload": "00000000deadbeef"})
    assert r.status_code == 404 and "upload the file again" in r.text
    r = client.get("/ui/vectors", params={"upload": "zz"})
    assert r.status_code == 400


def test_table_errors_are_clean_pages(client):
    r = client.get("/ui/vectors", params={"table": "pinky100.nope"})
    assert r.status_code == 404 and "unknown table" in unescape(r.text)
    r = client.get("/ui/vectors", params={"table": "pinky100.somas; DROP"})
    assert r.status_code == 400 and "is not a table name" in unescape(r.text)
    r = client.get("/ui/vectors", params={"table": "pinky100.v1.somas", "color": "nope"})
    assert r.status_code == 400 and "no column 'nope'" in unescape(r.text)
    r = client.get("/ui/vectors", params={"table": "pinky100.v1.somas", "columns": "pt_position_x,zz"})
    assert r.status_code == 400


def test_under_auth_the_engine_checks_the_principal(lake_path, tmp_path):
    import shutil

    from neurolake import open_lake
    from neurolake.server.app import create_app

    path = tmp_path / "lake"
    shutil.copytree(lake_path, path)
    lake = open_lake(path)
    lake.access.add_user("vera")
    lake.access.grant("vera", "hemibrain", "viewer")
    tok = lake.access.create_token("vera")["token"]
    lake.close()
    with TestClient(create_app(path, auth=True)) as c:
        h = {"Authorization": f"Bearer {tok}"}
        r = c.get("/ui/vectors", params={"table": "pinky100.v1.somas"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")  # no token: log in
        r = c.get("/ui/vectors", params={"table": "pinky100.v1.somas"}, headers=h)
        assert r.status_code == 403 and 'id="vector-error"' in r.text
        r = c.get("/ui/vectors", params={"table": "features.hemi_meta", "columns": "pre,post"}, headers=h)
        assert r.status_code == 200 and 'id="vector-summary"' in r.text
        names = re.search(r'<datalist id="vector-names">(.*?)</datalist>', r.text, re.S).group(1)
    assert "pinky100." not in names and "features.hemibrain.hemi_meta" in names


def test_big_tables_are_read_up_to_a_cap_and_sampled_with_a_seed(client, monkeypatch):
    from neurolake.web import vectors

    monkeypatch.setattr(vectors, "LOAD_ROWS", 1500)
    monkeypatch.setattr(analysis, "MAX_ROWS", 1000)
    r = client.get("/ui/vectors", params={"table": "pinky100.v1.synapses"})
    assert r.status_code == 200, r.text[:2000]
    assert "Only the first 1,500 rows were read." in r.text
    assert "use a sample of 1,000 rows" in r.text and "(seed 0)" in r.text
    rows = summary_rows(r.text)
    assert int(rows["pre_pt_root_id"][2]) == 1000
    # the same URL gives the same sample: the same summary
    assert summary_rows(client.get("/ui/vectors", params={"table": "pinky100.v1.synapses"}).text) == rows
