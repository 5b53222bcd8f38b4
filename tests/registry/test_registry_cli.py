"""The `neurolake features|users|tokens|usage|audit` commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from neurolake.cli import app

runner = CliRunner()


def run(*args: str, ok: bool = True):
    r = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (args, r.output, r.exception)
    return r


def test_registry_cli_end_to_end(tmp_path, feature_files):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("hemibrain", (8, 8, 8))
    lake.close()
    L = ("--lake", tmp_path / "lake")
    e = json.loads(run("features", "register", *L, "synapse_counts", feature_files["synapse_counts"],
                       "--datastack", "hemibrain", "--tags", "synapses,hemibrain",
                       "--owner-team", "flyconnectome").output)
    assert (e["format"], e["row_count"], e["tags"]) == ("delta", 25397, ["synapses", "hemibrain"])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"column_descriptions": {"type": "hemibrain cell type"}, "licence": "cite"}))
    e = json.loads(run("features", "register", *L, "cell_types", feature_files["cell_types"], "-d", "hemibrain",
                       "--spec", spec).output)
    assert {c["name"]: c.get("description") for c in e["schema"]}["type"] == "hemibrain cell type"
    # a validation failure: clear error, exit status 2 (via main) / exception here, nothing registered
    r = run("features", "register", *L, "bad", feature_files["cell_types"], "-d", "hemibrain", "-f", "lance",
            ok=False)
    assert r.exit_code != 0 and "not readable as lance" in str(r.exception)
    out = run("features", "list", *L, "--tag", "synapses").output
    assert out.startswith("hemibrain/synapse_counts\tdelta\tdraft")
    assert len(run("features", "list", *L, "--column", "bodyId").output.strip().splitlines()) == 2
    assert json.loads(run("features", "status", *L, "synapse_counts", "published").output)["status"] == "published"
    r = run("features", "update", *L, "synapse_counts", '{"description": "x"}', ok=False)
    assert "immutable" in str(r.exception)
    urls = run("features", "url", *L, "synapse_counts", "--expires", "60",
               "--base-url", "http://example.org:9000").output.split()
    assert len(urls) == 6 and all(u.startswith("http://example.org:9000/data/v1/") for u in urls)
    assert json.loads(run("features", "show", *L, "synapse_counts", "--files").output)["files"]
    assert json.loads(run("features", "verify", *L, "synapse_counts").output)["ok"]
    res = json.loads(run("features", "crawl", *L, feature_files["roi_counts"].parent, "-d", "hemibrain",
                         "--dry-run").output)
    assert res["found"] == 5 and len(res["skipped"]) == 2
    # users, roles, tokens, usage, audit
    u = json.loads(run("users", "add", *L, "alice", "--role", "hemibrain:viewer", "--quota-requests", "10").output)
    assert u["roles"] == {"hemibrain": "viewer"} and u["quota"]["requests"] == 10
    assert json.loads(run("users", "grant", *L, "alice", "editor", "-d", "hemibrain").output)["roles"]["hemibrain"] == "editor"
    r = run("users", "grant", *L, "alice", "owner", "-d", "hemibrain", ok=False)
    assert "viewer, editor, admin" in str(r.exception)
    tok = run("tokens", "create", *L, "alice", "--name", "laptop").output.strip()
    assert tok.startswith("nl_") and len(tok) > 40
    listed = json.loads(run("tokens", "list", *L).output)
    assert listed[0]["prefix"] == tok[:8] and tok not in json.dumps(listed)
    run("tokens", "revoke", *L, listed[0]["id"])
    assert json.loads(run("tokens", "list", *L).output)[0]["revoked"] is True
    assert json.loads(run("usage", *L, "alice").output)["limits"]["requests"] == 10
    actions = {e["action"] for e in json.loads(run("audit", *L).output)}
    assert {"feature.register", "feature.status", "feature.url_grant", "user.add", "role.grant",
            "token.create", "token.revoke"} <= actions
