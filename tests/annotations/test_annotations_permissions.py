"""CAVE per-table permissions under ``neurolake serve --auth``, on top of datastack roles: PRIVATE,
GROUP and PUBLIC read/write permission, owners, and authors taken from the token (not a header)."""

from __future__ import annotations

import httpx
import pytest

from tests.annotations.annotations_data import navis_sites

PROPS = {"body_id": "uint64", "type": "str", "roi": "str"}


@pytest.fixture(scope="module")
def perm_server(tmp_path_factory, serve_lake):
    from neurolake import init_lake
    from neurolake.annotations import create_table

    path = tmp_path_factory.mktemp("permlake") / "lake"
    lake = init_lake(path)
    lake.create_datastack("hemibrain", (8, 8, 8), public=True)
    acc = lake.access
    tokens = {}
    for user, role in (("alice", "editor"), ("bob", "editor"), ("vi", "viewer"), ("anon", None)):
        acc.add_user(user)
        if role:
            acc.grant(user, "hemibrain", role)
        tokens[user] = acc.create_token(user, "t")["token"]
    rows = navis_sites().head(50)[["pt_position_x", "pt_position_y", "pt_position_z", "body_id", "type", "roi"]]
    for name, read, write in (("alice_private", "PRIVATE", "PRIVATE"), ("alice_shared", "PUBLIC", "PRIVATE"),
                              ("lab_group", "GROUP", "GROUP"), ("open_table", "PUBLIC", "PUBLIC")):
        t = create_table(lake, "hemibrain", name, "point", properties=PROPS, owner="alice", read_permission=read,
                         write_permission=write)
        t.append(rows.fillna({"roi": "none"}), author="alice")
    lake.close()
    base = serve_lake(path, "--auth")
    return base + "/api/v1/datastacks/hemibrain/tables", tokens


def _c(tokens, user):
    return httpx.Client(headers={"Authorization": f"Bearer {tokens[user]}"}, timeout=30)


def _row():
    r = navis_sites().head(1)[["pt_position_x", "pt_position_y", "pt_position_z", "body_id", "type", "roi"]]
    return r.fillna({"roi": "none"}).astype(object).to_dict("records")


def test_private_read_only_owner(perm_server):
    api, tok = perm_server
    with _c(tok, "alice") as alice, _c(tok, "bob") as bob:
        assert alice.get(f"{api}/alice_private/rows").json()["count"] == 50
        r = bob.get(f"{api}/alice_private/rows")
        assert r.status_code == 403 and r.json()["detail"]["permission"] == "PRIVATE", r.text
        assert bob.post(f"{api}/alice_private/query", json={}).status_code == 403
        assert bob.get(f"{api}/alice_private").status_code == 403
        assert bob.get(api.replace("/api/v1/datastacks", "/precomputed").replace("/tables", "/annotations")
                       + "/alice_private/info").status_code == 403
        # the CAVE live query and the roots-bound live route check the same permission
        base = api.split("/api/v1")[0]
        r = bob.post(f"{base}/materialize/api/v3/datastack/hemibrain/query", json={"table": "alice_private"})
        assert r.status_code == 403, r.text
        assert bob.get(f"{base}/api/v1/datastacks/hemibrain/live/alice_private").status_code == 403
        names_bob = {t["table_name"] for t in bob.get(api).json()}
        names_alice = {t["table_name"] for t in alice.get(api).json()}
        assert "alice_private" not in names_bob and "alice_shared" in names_bob
        assert "alice_private" in names_alice


def test_private_write_only_owner_and_author_from_token(perm_server):
    api, tok = perm_server
    with _c(tok, "alice") as alice, _c(tok, "bob") as bob:
        assert bob.get(f"{api}/alice_shared/rows", params={"limit": 1}).status_code == 200  # PUBLIC read
        r = bob.post(f"{api}/alice_shared/rows", json={"rows": _row()})
        assert r.status_code == 403 and r.json()["detail"]["need"] == "write", r.text
        assert bob.patch(f"{api}/alice_shared/rows", json=[{"id": 1, "roi": "X"}]).status_code == 403
        assert bob.post(f"{api}/alice_shared/rows/delete", json={"ids": [1]}).status_code == 403
        assert alice.get(f"{api}/alice_shared/rows", params={"ids": "1"}).json()["count"] == 1  # nothing lost
        r = alice.post(f"{api}/alice_shared/rows", json={"rows": _row()}, headers={"X-Neurolake-User": "mallory"})
        assert r.status_code == 201, r.text
        new_id = r.json()["ids"][0]
        got = alice.get(f"{api}/alice_shared/rows", params={"ids": str(new_id)}).json()["rows"]
        assert [r["author"] for r in got] == ["alice"]  # the token's user, not the header's claim


def test_group_and_public_tables(perm_server):
    api, tok = perm_server
    with _c(tok, "vi") as vi, _c(tok, "anon") as anon, _c(tok, "bob") as bob:
        assert vi.get(f"{api}/lab_group/rows", params={"limit": 1}).status_code == 200  # a role on the datastack
        assert anon.get(f"{api}/lab_group/rows").status_code == 403  # public datastack, no role: not the group
        assert anon.get(f"{api}/open_table/rows", params={"limit": 1}).status_code == 200
        assert bob.post(f"{api}/lab_group/rows", json={"rows": _row()}).status_code == 201  # editor in the group
        assert bob.post(f"{api}/open_table/rows", json={"rows": _row()}).status_code == 201
        assert vi.post(f"{api}/open_table/rows", json={"rows": _row()}).status_code == 403  # role check first


def test_created_table_is_owned_by_the_token_user(perm_server):
    api, tok = perm_server
    with _c(tok, "bob") as bob, _c(tok, "alice") as alice:
        r = bob.post(api, json={"name": "bob_sites", "schema_type": "point", "properties": PROPS,
                                "read_permission": "PRIVATE"})
        assert r.status_code == 201, r.text
        assert r.json()["owner"] == "bob"
        assert alice.get(f"{api}/bob_sites/rows").status_code == 403
        assert bob.get(f"{api}/bob_sites/rows").json()["count"] == 0
