"""``/openapi.json`` documents every JSON route with a real schema, and real answers match their models.

Runs against the real server process of the demo lake (``demo_server``: gerhard2013 and gala_fibsem,
read-only). See :mod:`neurolake.server.models`.
"""

from __future__ import annotations

import httpx
import pytest

from neurolake.server import models

JSON = "application/json"


@pytest.fixture(scope="module")
def client(demo_server):
    with httpx.Client(base_url=demo_server, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def _resolve(schema: dict, spec: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema or {}


def _untyped(schema: dict, spec: dict) -> bool:
    """True for ``{}``, a bare object (no properties, no typed values) or a list of such."""
    s = _resolve(schema, spec)
    if not s:
        return True
    alternatives = s.get("anyOf") or s.get("oneOf")
    if alternatives:
        return any(_untyped(a, spec) for a in alternatives if a.get("type") != "null")
    if s.get("allOf"):
        return all(_untyped(a, spec) for a in s["allOf"])
    if s.get("type") == "array":
        return _untyped(s.get("items") or {}, spec)
    if s.get("type") == "object" or "properties" in s or "additionalProperties" in s:
        return not s.get("properties") and not isinstance(s.get("additionalProperties"), dict)
    return "type" not in s


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method.upper(), op


def test_every_json_route_documents_a_schema(spec):
    json_ops, offenders = 0, []
    for path, method, op in _operations(spec):
        for code in ("200", "201"):
            content = (op.get("responses", {}).get(code) or {}).get("content") or {}
            if JSON not in content:
                continue
            json_ops += 1
            if _untyped(content[JSON].get("schema") or {}, spec):
                offenders.append(f"{method} {path} ({code}): {content[JSON].get('schema')}")
    assert json_ops > 70, f"only {json_ops} JSON operations documented"
    assert not offenders, "JSON responses without a schema:\n" + "\n".join(offenders)


def test_binary_routes_declare_their_media_types(spec):
    def content(path, method="get", code="200"):
        return spec["paths"][path][method]["responses"][code].get("content") or {}

    cutout = content("/ocp/ca/{datastack}/{layer}/{fmt}/{mip}/{a}/{b}/{c}/")
    assert {"application/npz", "application/blosc", "image/png"} <= set(cutout) and JSON not in cutout
    assert set(content("/segmentation/api/v1/table/{table_id}/roots_binary", "post")) == {"application/octet-stream"}
    assert set(content("/materialize/api/v3/datastack/{datastack}/query", "post")) == {"data.arrow"}
    assert set(content("/catmaid/{datastack}/{layer}/{plane}/{index}/{name}")) == {"image/png", "image/jpeg"}
    assert set(content("/api/v1/datastacks/{datastack}/connectome/edges.parquet")) == {models.PARQUET}
    assert content("/v1/cutout/{c}/{e}/{ch}/{res}/{ranges}", "post", "201") == {}  # 201, no body
    # JSON or another format on request: both documented, the JSON one with its model
    rows = content("/api/v1/datastacks/{datastack}/tables/{table}/rows")
    assert rows[JSON]["schema"] == {"$ref": "#/components/schemas/RowsAnswer"}
    assert "application/vnd.apache.arrow.stream" in rows
    info = content("/precomputed/{datastack}/{layer}/info")
    assert set(info) == {JSON} and info[JSON]["schema"] == {"$ref": "#/components/schemas/PrecomputedInfo"}


def test_documented_fields_carry_units(spec):
    layer = spec["components"]["schemas"]["LayerInfo"]["properties"]
    assert "nm" in layer["voxel_size_nm"]["description"] and "x, y, z" in layer["voxel_size_nm"]["description"]
    mip = spec["components"]["schemas"]["MipInfo"]["properties"]
    assert "z, y, x" in mip["chunk_zyx"]["description"]


@pytest.mark.parametrize("layer", ["image", "segmentation"])
def test_layer_answer_matches_its_model_and_keeps_every_field(client, demo_lake, layer):
    r = client.get(f"/api/v1/datastacks/gala_fibsem/layers/{layer}")
    assert r.status_code == 200, r.text
    body = r.json()
    m = models.LayerInfo.model_validate(body)
    direct = demo_lake.layer("gala_fibsem", layer).info()
    assert set(body) == set(direct)  # the model drops nothing the handler returns
    assert m.axes == ["z", "y", "x"] and m.dtype == direct["dtype"] and m.name == layer
    assert body["voxel_size_nm"] == list(direct["voxel_size_nm"])
    assert [mi.shape_zyx for mi in m.mips] == [list(x["shape_zyx"]) for x in direct["mips"]]
    assert m.mips[0].size_xyz == m.mips[0].shape_zyx[::-1]


def test_datastack_answers_match_their_models(client, demo_lake):
    r = client.get("/api/v1/datastacks/gerhard2013")
    assert r.status_code == 200, r.text
    ds = models.DatastackInfo.model_validate(r.json())
    assert r.json() == demo_lake.datastack_info("gerhard2013")  # unchanged by the response model
    assert [la.name for la in ds.layers] == ["image", "labels"]
    listed = client.get("/api/v1/datastacks").json()
    assert [models.DatastackSummary.model_validate(d).name for d in listed] == ["gala_fibsem", "gerhard2013"]


def test_protocol_answers_match_their_models(client):
    frame = client.get("/v1/coord/gerhard2013/")
    assert frame.status_code == 200, frame.text
    f = models.BossFrame.model_validate(frame.json())
    assert (f.x_stop, f.z_stop, f.x_voxel_size, f.voxel_unit) == (1024, 20, 4.6, "nanometers")
    cave = client.get("/info/api/v2/datastack/full/gala_fibsem")
    assert cave.status_code == 200, cave.text
    info = models.CaveDatastackInfo.model_validate(cave.json())
    assert info.aligned_volume.name == "gala_fibsem" and info.segmentation_source.startswith("graphene://")
    stats = client.get("/api/v1/stats")
    assert stats.status_code == 200, stats.text
    models.ServerStats.model_validate(stats.json())
