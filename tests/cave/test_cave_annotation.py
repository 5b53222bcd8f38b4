"""Unmodified caveclient 8.2.1 against a real ``neurolake serve`` process: the annotation engine (create
tables, post/get/update/delete annotations, staged uploads), the schema service, and join queries of a
materialization version checked against a pandas merge of the same tables.

Data: hemibrain synapse sites of three DA1 projection neurons (navis sample, 9,089 rows) as a
``bound_tag`` table (tag = pre/post, root id = body id), and hemibrain cell types (Schlegel et al.
2024) of those bodies and 300 others as a ``cell_type_local`` table.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from requests import HTTPError

from tests.annotations.annotations_data import navis_sites, schlegel_cell_types

DS = "hemibrain"


def _sites() -> pd.DataFrame:
    s = navis_sites()
    return pd.DataFrame({"pt_position": s[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy().tolist(),
                         "pt_root_id": s.pt_root_id.astype("int64"), "tag": s["type"],
                         "confidence": s.confidence.astype(float)})


def _cell_types() -> pd.DataFrame:
    c = schlegel_cell_types()
    bodies = set(navis_sites().pt_root_id)
    return pd.concat([c[c.pt_root_id.isin(bodies)], c[~c.pt_root_id.isin(bodies)].head(300)], ignore_index=True)


def _status(exc_info) -> int:
    return exc_info.value.response.status_code


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_lake):
    from neurolake import init_lake

    path = tmp_path_factory.mktemp("cave-ann") / "lake"
    lake = init_lake(path)
    lake.create_datastack(DS, (8, 8, 8), description="hemibrain sample")
    lake.close()
    return serve_lake(path)


@pytest.fixture(scope="module")
def client(served):
    from caveclient import CAVEclient

    return CAVEclient(DS, server_address=served)


def test_schema_service(client):
    names = client.schema.get_schemas()
    assert {"synapse", "cell_type", "bound_tag", "cell_type_local", "nucleus_detection"} <= set(names)
    d = client.schema.schema_definition("cell_type_local")
    cls = d["$ref"].split("/")[-1]
    assert set(d["definitions"][cls]["required"]) == {"pt", "cell_type"}
    assert d["definitions"][cls]["properties"]["pt"]["$ref"].endswith("BoundSpatialPoint")
    assert set(client.schema.schema_definition_multi(["synapse", "bound_tag"])) == {"synapse", "bound_tag"}
    assert set(client.schema.schema_definition_all()) == set(names)
    with pytest.raises(HTTPError) as e:
        client.schema.schema_definition("no_such_schema")
    assert _status(e) == 404 and b"known schemas" in e.value.response.content


def test_annotation_tables_rows_and_join_query(client, served):
    ann = client.annotation
    assert not {"da1_sites", "cell_types"} & set(ann.get_tables())
    ann.create_table("da1_sites", "bound_tag", "DA1 PN synapse sites (navis sample), tag pre/post", [8, 8, 8])
    ann.create_table("cell_types", "cell_type_local", "hemibrain v1.2 types (Schlegel 2024)", [8, 8, 8])
    assert {"cell_types", "da1_sites"} <= set(ann.get_tables())
    md = ann.get_table_metadata("da1_sites")
    assert md["voxel_resolution"] == [8.0, 8.0, 8.0] and md["schema_type"] == "bound_tag"
    assert md["read_permission"] == "PUBLIC" and md["write_permission"] == "PRIVATE"

    # post: caveclient's dataframe form (positions nested by the client, root ids as flat columns) ...
    sites = _sites()
    ids = ann.post_annotation_df("da1_sites", sites, position_columns=["pt_position"])
    assert len(ids) == len(sites) == 9089 and ids == sorted(ids)
    assert ann.get_annotation_count("da1_sites") == 9089
    # ... and the nested JSON form with a root id inside the point
    ct = _cell_types()
    rows = [{"pt": {"position": [int(r.pt_position_x), int(r.pt_position_y), int(r.pt_position_z)],
                    "root_id": int(r.pt_root_id)}, "cell_type": r.cell_type,
             "classification_system": r.classification_system} for r in ct.itertuples()]
    ct_ids = ann.post_annotation("cell_types", rows)
    assert len(ct_ids) == len(ct) == 302

    got = ann.get_annotation("da1_sites", ids[:3])
    assert [g["id"] for g in got] == ids[:3] and all(g["valid"] for g in got)
    assert [g["pt_position"] for g in got] == sites.pt_position[:3].tolist()
    assert [g["tag"] for g in got] == sites.tag[:3].tolist()
    assert [g["pt_root_id"] for g in got] == sites.pt_root_id[:3].tolist()

    # staged upload (schema service + stage_annotations): a second type for one DA1 body
    body = int(ct.pt_root_id.iloc[0])
    stage = ann.stage_annotations("cell_types")
    stage.add(pt_position=[int(v) for v in ct[["pt_position_x", "pt_position_y", "pt_position_z"]].iloc[0]],
              cell_type="uPN", classification_system="manual")
    staged_ids = ann.upload_staged_annotations(stage, progress=False)
    assert len(staged_ids) == 1
    # ... a staged row has no root id; set it with an update (CAVE's update: a new row supersedes the old)
    moved = ann.update_annotation("cell_types", [{"id": staged_ids[0], "pt": {
        "position": [int(v) for v in ct[["pt_position_x", "pt_position_y", "pt_position_z"]].iloc[0]],
        "root_id": body}, "cell_type": "uPN", "classification_system": "manual"}])
    new_ct = moved[str(staged_ids[0])]
    assert new_ct > staged_ids[0]

    # update a site (move it) and delete two: history kept, old rows not valid
    new_pos = [int(v) + 1 for v in sites.pt_position[0]]
    mapping = ann.update_annotation("da1_sites", {"id": ids[0], "pt": {"position": new_pos,
                                                                       "root_id": int(sites.pt_root_id[0])},
                                                  "tag": sites.tag[0]})
    new_id = mapping[str(ids[0])]
    assert ann.delete_annotation("da1_sites", [ids[1], ids[2]]) == [ids[1], ids[2]]
    old = {g["id"]: g for g in ann.get_annotation("da1_sites", [ids[0], ids[1], new_id])}
    assert not old[ids[0]]["valid"] and old[ids[0]]["superceded_id"] == new_id and not old[ids[1]]["valid"]
    assert old[new_id]["valid"] and old[new_id]["pt_position"] == new_pos
    assert ann.get_annotation_count("da1_sites") == 9089 - 2

    # materialize through neurolake's API, then read through caveclient's materialization client
    r = httpx.post(f"{served}/api/v1/datastacks/{DS}/versions", json={}, timeout=120)
    assert r.status_code == 201, r.text
    v = r.json()["version"]
    client.materialize.version = v
    assert {"cell_types", "da1_sites"} <= set(client.materialize.get_tables())
    s = client.materialize.query_table("da1_sites", split_positions=True)
    c = client.materialize.query_table("cell_types", split_positions=True)
    assert len(s) == 9087 and len(c) == 303
    row = s[s["id"] == new_id].iloc[0]
    assert [row.pt_position_x, row.pt_position_y, row.pt_position_z] == new_pos
    assert not s["id"].isin([ids[0], ids[1], ids[2]]).any()

    # join query == pandas merge of the same two tables of the same version
    j = client.materialize.join_query([["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
                                      suffixes={"da1_sites": "_site", "cell_types": "_ct"}, split_positions=True)
    m = s.merge(c, on="pt_root_id", suffixes=("_site", "_ct"))
    assert len(j) == len(m) > 0
    assert j.attrs["join_query"] and j.attrs["dataframe_resolution"] == [8.0, 8.0, 8.0]
    key = ["id_site", "id_ct"]
    j = j.sort_values(key).reset_index(drop=True)
    m = m.sort_values(key).reset_index(drop=True)
    assert j[key].astype("int64").equals(m[key].astype("int64"))
    assert (j["pt_root_id_site"].astype("int64") == j["pt_root_id_ct"].astype("int64")).all()
    assert j["pt_root_id_site"].astype("int64").equals(m["pt_root_id"].astype("int64"))
    assert j["tag"].equals(m["tag"]) and j["cell_type"].equals(m["cell_type"])
    for a in "xyz":  # CAVE names a shared position pt_position<suffix>_<axis>
        assert np.array_equal(j[f"pt_position_site_{a}"].to_numpy(float), m[f"pt_position_{a}_site"].to_numpy(float))
        assert np.array_equal(j[f"pt_position_ct_{a}"].to_numpy(float), m[f"pt_position_{a}_ct"].to_numpy(float))
    assert "deleted_site" not in j.columns and "superceded_id_ct" not in j.columns
    assert set(j["cell_type"]) == {"DA1_lPN", "uPN"}  # the staged + updated row joins too (many-to-many)

    # filters keyed by table, a column map, limit/offset, positions by default as [x, y, z]
    f = client.materialize.join_query(
        [["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
        filter_equal_dict={"da1_sites": {"tag": "pre"}}, filter_in_dict={"cell_types": {"cell_type": ["DA1_lPN"]}},
        select_columns={"da1_sites": ["id", "pt_root_id", "pt_position"], "cell_types": ["id", "cell_type"]},
        suffixes={"da1_sites": "_site", "cell_types": "_ct"})
    sel = m[(m["tag"] == "pre") & (m["cell_type"] == "DA1_lPN")]
    assert len(f) == len(sel) > 0
    assert sorted(f.columns) == sorted(["id_site", "pt_root_id", "pt_position", "id_ct", "cell_type"])
    assert sorted(f["id_site"].astype("int64")) == sorted(sel["id_site"].astype("int64"))
    first = f.sort_values("id_site").iloc[0]
    s0 = s[s["id"] == first.id_site].iloc[0]
    assert list(first.pt_position) == [s0.pt_position_x, s0.pt_position_y, s0.pt_position_z]
    page = client.materialize.join_query([["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
                                         suffixes={"da1_sites": "_site", "cell_types": "_ct"},
                                         limit=5, offset=10, split_positions=True)
    assert page[key].astype("int64").values.tolist() == j[key].astype("int64").values[10:15].tolist()
    # CAVE's default suffixes without "suffixes": x, y
    d = client.materialize.join_query([["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
                                      split_positions=True, limit=3)
    assert {"idx", "idy", "pt_positionx_x", "pt_positiony_z"} <= set(d.columns)
    # positions at another resolution: every table's positions scaled
    nm = client.materialize.join_query([["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
                                       suffixes={"da1_sites": "_site", "cell_types": "_ct"}, split_positions=True,
                                       desired_resolution=[4, 4, 4])
    nm = nm.sort_values(key).reset_index(drop=True)
    assert np.allclose(nm["pt_position_site_x"].to_numpy(float), 2 * j["pt_position_site_x"].to_numpy(float))

    # a view: the same join saved under a name (neurolake's API), queried with caveclient's query_view
    r = httpx.put(f"{served}/api/v1/datastacks/{DS}/views/typed_sites", timeout=60, json={
        "tables": [["da1_sites", "pt_root_id"], ["cell_types", "pt_root_id"]],
        "suffixes": {"da1_sites": "_site", "cell_types": "_ct"}, "description": "DA1 sites with cell types"})
    assert r.status_code == 200, r.text
    mat = client.materialize
    assert list(mat.get_views()) == ["typed_sites"]
    assert mat.get_view_metadata("typed_sites")["voxel_resolution"] == [8, 8, 8]
    sch = mat.get_view_schema("typed_sites")["properties"]
    assert sch["pt_position_site"]["type"] == "SpatialPoint" and sch["cell_type"]["type"] == "string"
    assert set(mat.get_view_schemas()) == {"typed_sites"}
    w = mat.query_view("typed_sites", split_positions=True).sort_values(key).reset_index(drop=True)
    assert w[key].astype("int64").equals(j[key].astype("int64")) and w["tag"].equals(j["tag"])
    box = [[0, 0, 0], [int(j["pt_position_site_x"].median()), 10**6, 10**6]]
    w = mat.query_view("typed_sites", filter_in_dict={"cell_type": ["uPN"]}, filter_equal_dict={"tag": "post"},
                       filter_spatial_dict={"pt_position_site": box}, select_columns=["id_site", "cell_type"])
    sel = j[(j["cell_type"] == "uPN") & (j["tag"] == "post") & (j["pt_position_site_x"] < box[1][0])]
    assert len(w) == len(sel) > 0 and sorted(w["id_site"].astype("int64")) == sorted(sel["id_site"].astype("int64"))
    assert list(w.columns) == ["id_site", "cell_type"]
    with pytest.raises(HTTPError) as e:
        mat.query_view("no_view")
    assert _status(e) == 404 and b"typed_sites" in e.value.response.content
    r = httpx.put(f"{served}/api/v1/datastacks/{DS}/views/bad_view", timeout=60,
                  json={"tables": [["da1_sites", "nope"], ["cell_types", "pt_root_id"]]})
    assert r.status_code == 400 and "nope" in r.json()["message"]


def test_bad_input_gives_clear_4xx(client, served):
    ann = client.annotation
    with pytest.raises(HTTPError) as e:
        ann.create_table("nope", "no_such_schema", "x", [8, 8, 8])
    assert _status(e) == 400 and b"known schemas" in e.value.response.content
    with pytest.raises(HTTPError) as e:
        ann.create_table("bad name!", "point", "x", [8, 8, 8])
    assert _status(e) == 400
    with pytest.raises(HTTPError) as e:
        ann.create_table("neg_res", "point", "x", [8, -1, 8])
    assert _status(e) == 400 and b"voxel_size_nm" in e.value.response.content
    ann.create_table("bad_input", "bound_tag", "table for bad input", [8, 8, 8])
    with pytest.raises(HTTPError) as e:
        ann.create_table("bad_input", "bound_tag", "again", [8, 8, 8])
    assert _status(e) == 409
    # wrong columns, missing required columns, bad positions, bad ids: 400 naming them; nothing written
    with pytest.raises(HTTPError) as e:
        ann.post_annotation("bad_input", [{"pt": {"position": [1, 2, 3]}, "tag": "a", "colour": "red"}])
    assert _status(e) == 400 and b"colour" in e.value.response.content
    with pytest.raises(HTTPError) as e:
        ann.post_annotation("bad_input", [{"pt": {"position": [1, 2, 3]}}])
    assert _status(e) == 400 and b"tag" in e.value.response.content
    with pytest.raises(HTTPError) as e:
        ann.post_annotation("bad_input", [{"pt": {"position": [1, 2]}, "tag": "a"}])
    assert _status(e) == 400 and b"position" in e.value.response.content
    with pytest.raises(HTTPError) as e:
        ann.post_annotation("bad_input", [{"pt": {"position": [1, 2, 3], "colour": 1}, "tag": "a"}])
    assert _status(e) == 400
    with pytest.raises(HTTPError) as e:
        ann.post_annotation("bad_input", [{"id": -5, "pt": {"position": [1, 2, 3]}, "tag": "a"}])
    assert _status(e) == 400 and b"id" in e.value.response.content
    assert ann.get_annotation_count("bad_input") == 0
    ok = ann.post_annotation("bad_input", [{"pt": {"position": [1, 2, 3]}, "tag": "a"}])
    with pytest.raises(HTTPError) as e:
        ann.get_annotation("bad_input", ["abc"])
    assert _status(e) == 400
    with pytest.raises(HTTPError) as e:
        ann.get_annotation("bad_input", [987654])
    assert _status(e) == 404
    with pytest.raises(HTTPError) as e:
        ann.update_annotation("bad_input", [{"id": 987654, "pt": {"position": [1, 2, 3]}, "tag": "b"}])
    assert _status(e) == 404
    with pytest.raises(HTTPError) as e:
        ann.update_annotation("bad_input", [{"pt": {"position": [1, 2, 3]}, "tag": "b"}])
    assert _status(e) == 400 and b"id" in e.value.response.content
    with pytest.raises(HTTPError) as e:
        ann.delete_annotation("bad_input", [987654])
    assert _status(e) == 404
    with pytest.raises(HTTPError) as e:
        ann.get_table_metadata("no_such_table")
    assert _status(e) == 404
    assert ann.get_annotation("bad_input", ok)[0]["valid"]  # still there after the refused calls
    # one update call giving different fields per row: what a row does not give keeps its stored value
    two = ann.post_annotation("bad_input", [{"pt": {"position": [4, 5, 6]}, "tag": "b", "confidence": 0.5},
                                            {"pt": {"position": [7, 8, 9]}, "tag": "c", "confidence": 0.7}])
    m = ann.update_annotation("bad_input", [{"id": two[0], "tag": "b2"},
                                            {"id": two[1], "pt": {"position": [7, 8, 10]}}])
    got = {g["id"]: g for g in ann.get_annotation("bad_input", [m[str(two[0])], m[str(two[1])]])}
    a, b = got[m[str(two[0])]], got[m[str(two[1])]]
    assert (a["tag"], a["pt_position"], a["confidence"]) == ("b2", [4, 5, 6], 0.5)
    assert (b["tag"], b["pt_position"], b["confidence"]) == ("c", [7, 8, 10], 0.7)
    # join queries: unknown columns/tables, three tables, one table twice, bad suffixes -> 4xx
    ann.create_table("bad_ct", "cell_type_local", "types for the join errors", [8, 8, 8])
    ann.post_annotation("bad_ct", [{"pt": {"position": [1, 2, 3], "root_id": 7}, "cell_type": "KC"}])
    r = httpx.post(f"{served}/api/v1/datastacks/{DS}/versions", json={}, timeout=120)
    assert r.status_code == 201, r.text
    v = r.json()["version"]
    url = f"{served}/materialize/api/v3/datastack/{DS}/version/{v}/query"
    pair = [["bad_input", "pt_root_id"], ["bad_ct", "pt_root_id"]]
    for body, code, word in [
        ({"tables": [["bad_input", "nope_id"], ["bad_ct", "pt_root_id"]]}, 400, "nope_id"),
        ({"tables": [["bad_input", "pt_root_id"], ["no_table", "pt_root_id"]]}, 404, "no_table"),
        ({"tables": [*pair, ["bad_input", "id"]]}, 400, "2"),
        ({"tables": [["bad_input", "id"], ["bad_input", "id"]]}, 400, "different"),
        ({"tables": "bad_input"}, 400, "pairs"),
        ({"tables": pair, "suffixes": ["_a", "_a"]}, 400, "suffix"),
        ({"tables": pair, "filter_in_dict": {"bad_ct": {"no_col": [1]}}}, 400, "no_col"),
        ({"tables": pair, "filter_regex_dict": {"bad_ct": {"cell_type": "K.*"}}}, 400, "regex"),
        ({"tables": pair, "select_column_map": {"bad_ct": ["no_col"]}}, 400, "no_col"),
        ({"tables": [["bad_input", "tag"], ["bad_ct", "pt_root_id"]]}, 400, "types"),
        ({"tables": pair, "limit": -1}, 400, "limit"),
    ]:
        r = httpx.post(url, json=body, timeout=60)
        assert r.status_code == code and word in r.json()["message"], (body, r.status_code, r.text)
    assert httpx.post(url, json={"tables": pair}, timeout=60).status_code == 200
    assert httpx.post(url.replace(f"/version/{v}/", "/version/99/"), json={"tables": pair},
                      timeout=60).status_code == 404


# -- permissions under --auth -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, serve_lake):
    from neurolake import init_lake
    from neurolake.annotations import create_table

    path = tmp_path_factory.mktemp("cave-auth") / "lake"
    lake = init_lake(path)
    lake.create_datastack(DS, (8, 8, 8), public=True)
    acc = lake.access
    tokens = {}
    for user, role in (("alice", "editor"), ("bob", "editor"), ("vi", "viewer"), ("anon", None)):
        acc.add_user(user)
        if role:
            acc.grant(user, DS, role)
        tokens[user] = acc.create_token(user, "t")["token"]
    t = create_table(lake, DS, "alice_private", "bound_tag", owner="alice", read_permission="PRIVATE",
                     write_permission="PRIVATE")
    t.append(pd.DataFrame({"pt_position": [[1, 2, 3]], "tag": ["x"], "pt_root_id": [5]}), author="alice")
    t = create_table(lake, DS, "shared", "bound_tag", owner="alice", read_permission="PUBLIC",
                     write_permission="PUBLIC")
    t.append(pd.DataFrame({"pt_position": [[1, 2, 3]], "tag": ["y"], "pt_root_id": [5]}), author="alice")
    lake.close()
    return serve_lake(path, "--auth"), tokens


def test_permissions_under_auth(auth_server):
    from caveclient import CAVEclient

    base, tok = auth_server
    ae = f"{base}/annotation/api/v2/aligned_volume/{DS}/table"
    # no token: 401 on every annotation route
    assert httpx.get(ae, timeout=30).status_code == 401
    assert httpx.post(ae, json={"table_name": "t", "schema_type": "point", "metadata": {}}, timeout=30).status_code \
        == 401
    assert httpx.post(f"{ae}/shared/annotations", json={"annotations": []}, timeout=30).status_code == 401
    vi = CAVEclient(DS, server_address=base, auth_token=tok["vi"])
    alice = CAVEclient(DS, server_address=base, auth_token=tok["alice"])
    bob = CAVEclient(DS, server_address=base, auth_token=tok["bob"])
    anon = CAVEclient(DS, server_address=base, auth_token=tok["anon"])
    # a viewer reads but cannot create or post
    assert sorted(vi.annotation.get_tables()) == ["shared"]  # alice's private table is not listed
    assert sorted(alice.annotation.get_tables()) == ["alice_private", "shared"]
    with pytest.raises(HTTPError) as e:
        vi.annotation.create_table("vi_table", "point", "viewer's table", [8, 8, 8])
    assert _status(e) == 403
    with pytest.raises(HTTPError) as e:
        vi.annotation.post_annotation("shared", [{"pt": {"position": [1, 2, 3]}, "tag": "v"}])
    assert _status(e) == 403
    with pytest.raises(HTTPError) as e:  # public datastack, no role: read only
        anon.annotation.post_annotation("shared", [{"pt": {"position": [1, 2, 3]}, "tag": "v"}])
    assert _status(e) == 403
    assert anon.annotation.get_annotation_count("shared") == 1
    # an editor creates (owner from the token) and posts; the author is the token's user
    md = bob.annotation.get_table_metadata("shared")
    assert md["write_permission"] == "PUBLIC"
    bob.annotation.create_table("bob_types", "cell_type_local", "bob's types", [8, 8, 8], read_permission="PRIVATE")
    assert bob.annotation.get_table_metadata("bob_types")["user_id"] == "bob"
    ids = bob.annotation.post_annotation("bob_types", [{"pt": {"position": [1, 2, 3], "root_id": 5},
                                                         "cell_type": "KC"}])
    assert bob.annotation.get_annotation("bob_types", ids)[0]["author"] == "bob"
    new = bob.annotation.post_annotation("shared", [{"pt": {"position": [4, 5, 6]}, "tag": "b", "author": "mallory"}])
    assert bob.annotation.get_annotation("shared", new)[0]["author"] == "bob"  # the token's user, not the claim
    # table permissions: PRIVATE read/write only for the owner
    for who in (alice, vi):
        with pytest.raises(HTTPError) as e:
            who.annotation.get_annotation("bob_types", ids)
        assert _status(e) == 403
        with pytest.raises(HTTPError) as e:
            who.annotation.get_table_metadata("bob_types")
        assert _status(e) == 403
    with pytest.raises(HTTPError) as e:
        bob.annotation.update_annotation("alice_private", [{"id": 1, "pt": {"position": [1, 2, 3]}, "tag": "z"}])
    assert _status(e) == 403
    with pytest.raises(HTTPError) as e:
        bob.annotation.delete_annotation("alice_private", [1])
    assert _status(e) == 403
    with pytest.raises(HTTPError) as e:
        vi.annotation.delete_annotation("shared", new)
    assert _status(e) == 403
    assert bob.annotation.delete_annotation("shared", new) == new  # PUBLIC write, editor role
    # join queries check each table's read permission
    r = httpx.post(f"{base}/api/v1/datastacks/{DS}/versions", json={},
                   headers={"Authorization": f"Bearer {tok['alice']}"}, timeout=120)
    assert r.status_code == 201, r.text
    v = r.json()["version"]
    bob.materialize.version = v
    alice.materialize.version = v
    with pytest.raises(HTTPError) as e:
        bob.materialize.join_query([["shared", "pt_root_id"], ["alice_private", "pt_root_id"]])
    assert _status(e) == 403
    j = alice.materialize.join_query([["shared", "pt_root_id"], ["alice_private", "pt_root_id"]],
                                     suffixes={"shared": "_s", "alice_private": "_p"})
    assert j[["tag_s", "tag_p"]].values.tolist() == [["y", "x"]]
    # views: defining needs the editor role and the tables' read permission; querying checks every table
    view = {"tables": [["shared", "pt_root_id"], ["alice_private", "pt_root_id"]],
            "suffixes": {"shared": "_s", "alice_private": "_p"}}
    put = f"{base}/api/v1/datastacks/{DS}/views/private_join"
    assert httpx.put(put, json=view, headers={"Authorization": f"Bearer {tok['vi']}"}, timeout=30).status_code == 403
    assert httpx.put(put, json=view, headers={"Authorization": f"Bearer {tok['bob']}"}, timeout=30).status_code == 403
    r = httpx.put(put, json=view, headers={"Authorization": f"Bearer {tok['alice']}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert alice.materialize.query_view("private_join")["tag_p"].tolist() == ["x"]
    assert "private_join" not in bob.materialize.get_views()
    with pytest.raises(HTTPError) as e:
        bob.materialize.query_view("private_join")
    assert _status(e) == 403
