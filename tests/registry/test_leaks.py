"""What ``serve --auth`` must not leak (issue 11 finding 7), on real data (EM of Gerhard et al. 2013, the
hemibrain/navis feature tables of ``conftest.py``):

1. a path parameter that embeds a datastack (``/viewer/state/{ds}@zarr3``) is checked as that datastack;
2. lists of datastack names (``/``, BossDB ``/v1/collection/`` and ``/v1/coord/``, CAVE's datastack list,
   ``/api/v1/datastacks``) and the "known: …" lists of errors name only what the requester may read;
3. a signed URL stops working once its user is disabled or loses the role on the table's datastack;
4. the signing key is not in the catalog (a catalog reader cannot forge URLs);
5. without the right role an unknown and an existing private datastack (or feature table, or ``/data``
   table id) answer the same, and error bodies never name the lake's folder.

The app runs in-process (``create_app(lake, auth=True)`` with Starlette's TestClient).
"""

from __future__ import annotations

import os
import re
import stat
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
PRIVATE = ("priv1", "priv2")


@pytest.fixture(scope="module")
def leak(tmp_path_factory, feature_files):
    import tifffile
    from fastapi.testclient import TestClient

    from neurolake import init_lake
    from neurolake.annotations import create_table
    from neurolake.server.app import create_app

    work = tmp_path_factory.mktemp("leaks")
    files = sorted((DATA / "gerhard2013" / "raw").glob("*.tif"))[:4]
    em = np.stack([tifffile.imread(f)[:64, :64] for f in files])  # (z, y, x) uint8
    np.save(work / "em.npy", em)
    lake = init_lake(work / "lake")
    lake.create_datastack("open_ds", (4, 4, 50), public=True)
    for ds in PRIVATE:
        lake.create_datastack(ds, (4, 4, 50), public=False)
    for ds in ("open_ds", "priv1"):
        lake.ingest(str(work / "em.npy"), ds, "em", voxel_size=(4, 4, 50), scheduler="sync")
    props = {"body_id": "uint64"}
    create_table(lake, "open_ds", "sites", "point", properties=props, owner="adm", read_permission="PUBLIC")
    create_table(lake, "open_ds", "secret_sites", "point", properties=props, owner="adm",
                 read_permission="PRIVATE")
    acc = lake.access
    tok = {}
    for user, admin in (("adm", True), ("nobody", False), ("vi", False), ("ed", False), ("ed2", False)):
        acc.add_user(user, admin=admin)
        tok[user] = acc.create_token(user, "t")["token"]
    acc.grant("vi", "priv1", "viewer")
    acc.grant("ed", "priv1", "editor")
    acc.grant("ed2", "priv1", "editor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(create_app(lake, auth=True), raise_server_exceptions=True)
    r = client.post("/api/v1/features", headers=_h(tok, "ed"),
                    json={"name": "roi_counts", "datastack": "priv1", "location": str(feature_files["roi_counts"])})
    assert r.status_code == 201, r.text
    yield {"lake": lake, "c": client, "tok": tok, "em": em}
    client.close()
    lake.close()


def _h(tok, who: str) -> dict:
    return {"Authorization": f"Bearer {tok[who]}"}


def _get(w, path: str, who: str, **kw):
    return w["c"].get(path, headers=_h(w["tok"], who), **kw)


# -- 1. path parameters that embed a datastack --------------------------------------------------------
def test_suffixed_viewer_tokens_check_the_real_datastack(leak):
    """``/viewer/state/priv1@zarr3`` is priv1 for the access check (it was none under the old URL-text
    middleware, which let every authenticated user read a private datastack's viewer state)."""
    w = leak
    for path in ("/viewer/state/priv1@zarr3", "/viewer/state/priv1@precomputed", "/viewer/state/priv1",
                 "/viewer/events/priv1@zarr3", "/viewer/v/priv1@zarr3/index.html", "/viewer/priv1?source=zarr3"):
        r = _get(w, path, "nobody", follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert r.json()["detail"]["datastack"] == "priv1" and "zarr3://" not in r.text, path
    r = w["c"].post("/viewer/state/priv1@zarr3", json={}, headers=_h(w["tok"], "nobody"))
    assert r.status_code == 403
    r = _get(w, "/viewer/state/priv1@zarr3", "vi")
    assert r.status_code == 200 and [la["source"] for la in r.json()["layers"]] == [
        "zarr3://http://testserver/zarr/priv1/em/"]


def test_every_route_checks_a_suffixed_datastack(leak):
    """Every GET route whose need names a datastack, with each path parameter set to ``priv1@zarr3`` (and
    the others to ``priv1``): a user without a role never gets a 2xx answer."""
    from neurolake.server.access import app_routes

    w = leak
    tried = 0
    for route in app_routes(w["c"].app):
        need = getattr(route, "access_need", None)
        if need is None or need.datastack is None or "GET" not in (route.methods or ()):
            continue
        params = re.findall(r"{([^}:]+)(?::[^}]+)?}", route.path)
        for token in params:
            for suffix in ("@zarr3", "@precomputed", "@", "@x@y"):
                path = route.path
                for name in params:
                    value = "priv1" + suffix if name == token else "priv1"
                    path = re.sub(r"{" + name + r"(?::[^}]+)?}", value, path)
                r = _get(w, path, "nobody", follow_redirects=False)
                tried += 1
                assert not 200 <= r.status_code < 400, (route.path, path, r.status_code, r.text[:200])
    assert tried > 200


# -- 2. lists of names -----------------------------------------------------------------------------------
def test_datastack_lists_name_only_readable_datastacks(leak):
    w = leak
    want = {"nobody": ["open_ds"], "vi": ["open_ds", "priv1"], "adm": ["open_ds", "priv1", "priv2"]}
    for who, names in want.items():
        assert sorted(_get(w, "/", who).json()["datastacks"]) == names, who
        assert sorted(_get(w, "/v1/collection/", who).json()["collections"]) == names, who
        assert sorted(_get(w, "/v1/collection//", who).json()["collections"]) == names, who
        assert sorted(_get(w, "/v1/coord/", who).json()["coords"]) == names, who
        assert sorted(_get(w, "/info/api/v2/datastacks", who).json()) == names, who
        assert sorted(d["name"] for d in _get(w, "/api/v1/datastacks", who).json()) == names, who


def test_known_lists_in_errors_name_only_readable_things(leak):
    w = leak
    # an unknown annotation table in a public datastack: the PRIVATE table is not named to others
    r = _get(w, "/api/v1/datastacks/open_ds/tables/nosuch", "nobody")
    assert r.status_code == 404 and "known: sites" in r.json()["message"], r.text
    assert "secret_sites" not in r.text
    r = _get(w, "/api/v1/datastacks/open_ds/tables/nosuch", "adm")
    assert r.status_code == 404 and "known: secret_sites, sites" in r.json()["message"], r.text
    # nor does the viewer state name it (its annotation layers), nor CAVE's datastack info
    for who, names in (("nobody", ["sites"]), ("adm", ["secret_sites", "sites"])):
        for path in ("/viewer/state/open_ds", "/viewer/state/open_ds@zarr3"):
            layers = _get(w, path, who).json()["layers"]
            assert sorted(la["name"] for la in layers if la["type"] == "annotation") == names, (who, path)
    assert "secret_sites" not in _get(w, "/info/api/v2/datastack/full/open_ds", "nobody").text
    # an unknown datastack: lake admins get the 404 naming every datastack, others never a private name
    r = _get(w, "/api/v1/datastacks/nosuch", "adm")
    assert r.status_code == 404 and "known: open_ds, priv1, priv2" in r.json()["message"]
    for who in ("nobody", "vi"):
        for path in ("/api/v1/datastacks/nosuch", "/v1/collection/nosuch", "/viewer/state/nosuch@zarr3",
                     "/segmentation/table/nosuch/info"):
            r = _get(w, path, who)
            assert r.status_code == 403, (who, path, r.text)
            text = r.text.replace("priv1", "") if who == "vi" else r.text
            assert "priv" not in text, (who, path, r.text)
    # the same through the error path itself: a not_found built deep in the core is rebuilt for the requester
    from starlette.requests import Request

    from neurolake.base.names import not_found
    from neurolake.server.errors import public_error

    p = w["lake"].access.authenticate(w["tok"]["vi"])
    req = Request({"type": "http", "app": w["c"].app, "state": {"principal": p}, "headers": []})
    exc = public_error(req, not_found("datastack", "x", w["lake"].datastacks()))
    assert exc.http_status == 404 and exc.message == "unknown datastack 'x'; known: open_ds, priv1"
    exc = public_error(req, not_found("layer", "x", ["em"], within=("datastack", "priv2")))
    assert exc.message == "unknown layer 'x' in datastack 'priv2'; known: none"


# -- 5. the same answer for unknown and private ---------------------------------------------------------
def _same(a, b, name_a: str, name_b: str) -> None:
    assert a.status_code == b.status_code
    assert a.text.replace(name_a, "X") == b.text.replace(name_b, "X"), (a.text, b.text)


def test_unknown_and_private_datastacks_answer_the_same(leak):
    """Status and body of a request for an existing private datastack the user has no role on equal those
    for a datastack that does not exist (403: the message says "or there is no such datastack")."""
    w = leak
    for who in ("nobody", "vi"):
        for tmpl in ("/api/v1/datastacks/{}", "/v1/collection/{}", "/v1/coord/{}", "/precomputed/{}/em/info",
                     "/zarr/{}/em/zarr.json", "/viewer/state/{}@zarr3", "/info/api/v2/datastack/full/{}",
                     "/ocp/ca/{}/em/npy/0/0,8/0,8/0,1/", "/api/v1/datastacks/{}/tables"):
            a, b = _get(w, tmpl.format("priv2"), who), _get(w, tmpl.format("nosuch"), who)
            assert a.status_code == 403, (who, tmpl, a.text)
            _same(a, b, "priv2", "nosuch")
        a = w["c"].post("/api/v1/features", headers=_h(w["tok"], who),
                        json={"name": "t", "datastack": "priv2", "location": "/nonexistent"})
        b = w["c"].post("/api/v1/features", headers=_h(w["tok"], who),
                        json={"name": "t", "datastack": "nosuch", "location": "/nonexistent"})
        assert a.status_code == 403
        _same(a, b, "priv2", "nosuch")
        a = w["c"].post("/api/v1/features/crawl", headers=_h(w["tok"], who),
                        json={"prefix": "/nonexistent", "datastack": "priv2", "dry_run": True})
        b = w["c"].post("/api/v1/features/crawl", headers=_h(w["tok"], who),
                        json={"prefix": "/nonexistent", "datastack": "nosuch", "dry_run": True})
        assert a.status_code == 403
        _same(a, b, "priv2", "nosuch")
    # a feature table in a datastack the user may not read is answered like one that does not exist
    a, b = _get(w, "/api/v1/features/roi_counts", "nobody"), _get(w, "/api/v1/features/nosuch", "nobody")
    assert a.status_code == 403 and "priv1" not in a.text  # nor the datastack the table is in
    _same(a, b, "roi_counts", "nosuch")
    a = w["c"].post("/api/v1/features/roi_counts/signed-urls", json={}, headers=_h(w["tok"], "nobody"))
    b = w["c"].post("/api/v1/features/nosuch/signed-urls", json={}, headers=_h(w["tok"], "nobody"))
    _same(a, b, "roi_counts", "nosuch")
    assert _get(w, "/api/v1/features/roi_counts", "vi").status_code == 200
    assert _get(w, "/api/v1/features/nosuch", "adm").status_code == 404


def test_error_bodies_never_name_the_lake_folder(leak):
    w = leak
    lake = w["lake"]
    roots = {str(lake.root), os.path.realpath(lake.root)}
    grant = w["c"].post("/api/v1/features/roi_counts/signed-urls", json={}, headers=_h(w["tok"], "ed")).json()
    prefix = grant["prefix_url"].removeprefix("http://testserver")
    tid = prefix.split("/")[3]
    answers = [
        _get(w, "/zarr/open_ds/em/nosuch/zarr.json", "nobody"), _get(w, "/zarr/open_ds/em/../../lake.json", "nobody"),
        _get(w, "/zarr/open_ds/em/.hidden", "nobody"), _get(w, "/precomputed/open_ds/em/0/0-1_0-1_0-1", "nobody"),
        _get(w, "/viewer/v/open_ds/nosuch.js", "nobody"),
        w["c"].get(prefix + "/nosuch.parquet"), w["c"].get(prefix + "/../../../lake.json"),
        w["c"].get(prefix.replace(f"/{tid}/", "/999999/") + "/x"),
        # an editor registering a table from inside the lake folder: the error names the location
        w["c"].post("/api/v1/features", headers=_h(w["tok"], "ed"),
                    json={"name": "t2", "datastack": "priv1", "location": str(lake.root / "datastacks")}),
        w["c"].post("/api/v1/features", headers=_h(w["tok"], "ed"),
                    json={"name": "t3", "datastack": "priv1", "location": str(lake.root / "nosuch")}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert not any(root in r.text for root in roots), (r.request.url, r.text)
    assert "<lake>/datastacks" in answers[-2].text
    # /data: a table id that does not exist answers like a bad signature
    bad_sig = prefix.rsplit("/", 1)[0] + "/" + "0" * 64
    a, b = w["c"].get(bad_sig + "/x"), w["c"].get(prefix.replace(f"/{tid}/", "/999999/") + "/x")
    assert a.status_code == b.status_code == 403
    assert a.json()["message"] == b.json()["message"]


# -- 3. signed URLs follow their user ------------------------------------------------------------------
def _file_url(w, who: str) -> str:
    r = w["c"].post("/api/v1/features/roi_counts/signed-urls", json={"expires_in_s": 600}, headers=_h(w["tok"], who))
    assert r.status_code == 200, r.text
    return r.json()["urls"][0].removeprefix("http://testserver")


def test_signed_url_stops_when_its_user_is_disabled_or_loses_the_role(leak):
    import pyarrow.parquet as pq

    w = leak
    acc = w["lake"].access
    url = _file_url(w, "ed2")
    r = w["c"].get(url)
    assert r.status_code == 200
    import io

    assert pq.read_table(io.BytesIO(r.content)).num_rows > 0  # real rows of the navis ROI counts
    acc.revoke("ed2", "priv1", by="adm")
    r = w["c"].get(url)
    assert r.status_code == 403 and "may no longer read datastack 'priv1'" in r.json()["message"], r.text
    acc.grant("ed2", "priv1", "viewer", by="adm")  # reading needs viewer: the URL works again
    assert w["c"].get(url).status_code == 200
    url = _file_url(w, "ed")
    assert w["c"].get(url).status_code == 200
    acc.disable_user("ed", by="adm")
    r = w["c"].get(url)
    assert r.status_code == 403 and "is disabled" in r.json()["message"], r.text
    assert w["c"].get(url, headers={"Range": "bytes=0-3"}).status_code == 403


def test_signed_url_change_in_another_process_applies_within_the_cache_bound(leak):
    """A change made by another process (here: straight in the catalog, as `neurolake users disable` in a
    shell would) applies once the server's principal cache expires (PRINCIPAL_SECONDS)."""
    from sqlalchemy import update

    from neurolake.access.models import User
    from neurolake.server import data

    w = leak
    w["lake"].access.grant("ed2", "priv1", "editor", by="adm")
    url = _file_url(w, "ed2")
    assert w["c"].get(url).status_code == 200
    with w["lake"].catalog.session() as s:
        s.execute(update(User).where(User.name == "ed2").values(disabled=True))
    assert data.PRINCIPAL_SECONDS <= 5.0  # the bound docs/access.md states
    time.sleep(data.PRINCIPAL_SECONDS + 0.2)
    r = w["c"].get(url)
    assert r.status_code == 403 and "is disabled" in r.json()["message"]


# -- 4. the signing key is not in the catalog -----------------------------------------------------------
def _secrets(lake) -> dict[str, str]:
    from sqlalchemy import select

    from neurolake.access.models import Secret

    with lake.catalog.session() as s:
        return {r.name: r.value for r in s.scalars(select(Secret))}


def test_signing_key_is_kept_out_of_the_catalog(leak, tmp_path, monkeypatch):
    from neurolake import init_lake, open_lake
    from neurolake.errors import Conflict
    from neurolake.storage.signing import KEY_FILE, Signer, key_id, lake_key, rotate_key

    w = leak
    lake = w["lake"]
    key = lake_key(lake)
    rows = _secrets(lake)
    assert rows == {"signed_url_key_id": key_id(key)}
    assert key.hex() not in str(rows)
    path = lake.root / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and bytes.fromhex(path.read_text().strip()) == key
    # a catalog reader's best guesses do not sign: the URL the server verifies needs the file's key
    url = _file_url(w, "adm")
    tid, expires, user, sig = url.split("/")[3:7]
    loc = lake.features.location_of(int(tid))[0]
    for guess in rows.values():
        assert Signer(guess.encode().ljust(16, b"\0")).signature(int(tid), loc, user, int(expires)) != sig
    assert Signer(key).signature(int(tid), loc, user, int(expires)) == sig
    # a lake whose catalog holds a key (older versions): the key moves to the file, the row goes
    old = init_lake(tmp_path / "old")
    from neurolake.access.models import Secret

    legacy = os.urandom(32)
    with old.catalog.session() as s:
        s.add(Secret(name="signed_url_key", value=legacy.hex()))
    old.close()
    old = open_lake(tmp_path / "old")
    assert lake_key(old) == legacy
    assert _secrets(old) == {"signed_url_key_id": key_id(legacy)}
    assert bytes.fromhex((tmp_path / "old" / KEY_FILE).read_text()) == legacy
    old.close()
    # another process with another key (e.g. a second host without the key file) refuses to sign or verify
    monkeypatch.setenv("NEUROLAKE_SIGNING_KEY", os.urandom(32).hex())
    other = open_lake(tmp_path / "old")
    with pytest.raises(Conflict, match="not the lake's"):
        lake_key(other)
    other.close()
    monkeypatch.setenv("NEUROLAKE_SIGNING_KEY", legacy.hex())
    same = open_lake(tmp_path / "old")
    assert lake_key(same) == legacy
    same.close()
    monkeypatch.delenv("NEUROLAKE_SIGNING_KEY")
    (tmp_path / "old" / KEY_FILE).unlink()
    lost = open_lake(tmp_path / "old")
    with pytest.raises(Conflict, match="not available to this process"):
        lake_key(lost)
    kid = rotate_key(lost)  # a new key: every URL signed before stops working
    assert lake_key(lost) != legacy and key_id(lake_key(lost)) == kid
    assert _secrets(lost) == {"signed_url_key_id": kid}
    lost.close()
