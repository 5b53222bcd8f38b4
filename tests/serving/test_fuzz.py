"""Schemathesis over every operation of the real app's ``/openapi.json``: no request gives a 5xx
(issue 11, finding 5).

The app is ``create_app`` over a writable lake of its own (the real gala FIB-SEM crop: image and
segmentation, proofreadable, with annotation tables and two materialization versions), driven in-process
(ASGI) three ways: without ``--auth`` (the local user), with ``--auth`` and a viewer token, with ``--auth``
and an editor token. Each operation gets cases generated from its schema (valid and invalid), with path and
query parameters replaced at random by the lake's real names and ids (datastack, layer, table, version, root
and supervoxel ids, operation ids, voxel ranges), so the requests reach the handlers and not only the 404 of
an unknown name; operations that read a JSON body they do not describe also get arbitrary JSON bodies built
from the body keys the server reads. The check: no response is a 5xx, and every status is one the operation
declares in the OpenAPI document.

CI profile (default): a few examples per operation, a fixed seed (``derandomize``), no deadline; every
failing request is collected and reported (distinct by operation and status), none is shrunk.
``NEUROLAKE_FUZZ=slow`` (or ``NEUROLAKE_FUZZ_EXAMPLES=n``) runs many more examples, for local runs.
"""

from __future__ import annotations

import json
import os
import traceback
import warnings
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from proofread_lake import build
from schemathesis import GenerationMode
from schemathesis.python import asgi

PROFILE = os.environ.get("NEUROLAKE_FUZZ", "ci")
EXAMPLES = int(os.environ.get("NEUROLAKE_FUZZ_EXAMPLES", 0)) or {"ci": 5, "slow": 60}.get(PROFILE, 5)
PHASES = [Phase.explicit, Phase.generate]  # failures are collected, not raised: nothing to shrink
BIG = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1, -1, 0]
WEIRD = ["١,٢", "1_0", " 0, 10", "0x10", "1e3", "", " ", "-", "0:", ":1", "nan", "∞", "𝟙"]


@pytest.fixture(scope="module")
def fuzz_lake(gala_lake_path):
    """The gala lake of this module (writable), proofread and annotated (:func:`proofread_lake.build`)."""
    lake, tokens, ids = build(gala_lake_path)
    yield lake, tokens, ids
    lake.close()


def real_values(ids: dict[str, list[int]]) -> dict[str, list]:
    """Real values of the lake by parameter name (path and query)."""
    roots, svs = ids["roots"], ids["supervoxels"]
    return {
        "datastack": ["gala"], "c": ["gala"], "e": ["gala"], "frame": ["gala"], "name": ["gala", "synapses"],
        "layer": ["image", "segmentation"], "ch": ["image", "segmentation"],
        "table": ["synapses", "cell_types"], "synapse_table": ["synapses"], "cell_type_table": ["cell_types"],
        "table_id": ["gala", 1], "version": [1, 2, *BIG], "root_id": roots + BIG, "node_id": svs + roots + BIG,
        "segment_id": [str(r) for r in svs] + [str(v) for v in BIG], "source": roots, "target": roots,
        "operation_id": [1, 2, *BIG], "res": ["0", "1", *WEIRD], "mip": ["0", "1", 0, 1, *WEIRD],
        "ranges": ["0:32/0:32/0:4", "0:32/0:32/0:4/0:1", "1_0:20/0:8/0:2", "١:٢/0:8/0:2", "5:1/0:2/0:2"],
        "x": ["0,32", " 0, 10", "١,٢", "1_0,20", "-5,3", *WEIRD], "y": ["0,32", *WEIRD], "z": ["0,4", *WEIRD],
        "a": ["0,32", " 0, 10", "١,٢"], "b": ["0,32", "1_0,20"], "fmt": ["npz", "blosc", "raw"],
        "key": ["8_8_8", "0", "zarr.json", "0/c/0/0/0", "info", "spatial0/0_0_0", "by_id/1"],
        "chunk": ["0-64_0-64_0-16", "0-1_0-1_0-1", "١-٢_0-1_0-1", "-5-3_0-1_0-1"],
        "plane": ["xy", "xz", "yz"], "index": ["0", "3", *WEIRD], "n": ["5", "0", "-1", *WEIRD],
        "limit": [0, -1, 1, 10, *BIG], "offset": [0, -5, 3, *BIG], "min_synapses": [0, -1, 1, *BIG],
        "supervoxels": [",".join(map(str, svs[:3])), "١,٢", "1_0"], "ids": ["1,2,3", "1_0", "١"],
        "bbox": ["0,0,0,32,32,8", "١,0,0,1,1,1"], "bounds": ["0-32_0-32_0-8", "0,32,0,32,0,8"],
        "timestamp": ["2020-01-01T00:00:00Z", "now", "1e30", str(2**70)], "filter": ["1,2", "١,٢"],
    }


def body_values(ids: dict[str, list[int]]) -> st.SearchStrategy:
    """Arbitrary JSON built from the keys the server's raw-JSON routes read and the lake's real values."""
    keys = ["root_ids", "node_ids", "sources", "sinks", "timestamp", "filter_in_dict", "filter_equal_dict",
            "filter_spatial_dict", "select_columns", "select_column_map", "offset", "limit", "desired_resolution",
            "tables", "table", "datastack", "prefix", "tags", "expires_in_s", "dry_run", "mapping", "pre_pt_root_id",
            "synapses", "1a", "", "0"]
    leaf = st.one_of(st.none(), st.booleans(), st.sampled_from(BIG + ids["roots"] + ids["supervoxels"]),
                     st.integers(),
                     st.floats(allow_nan=False), st.sampled_from(["gala", "synapses", "x", "١", "2020-01-01"]),
                     st.text(max_size=6))
    return st.recursive(leaf, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                   st.dictionaries(st.sampled_from(keys), ch, max_size=4)),
                        max_leaves=12)


def declared_statuses(raw: dict, path: str, method: str) -> set[str]:
    return set(raw["paths"][path][method.lower()].get("responses", {}))


def _operations(schema):
    for result in schema.get_all_operations():
        op = result.ok()
        yield op


def fuzz_operation(client, op, raw, headers: dict, real: dict, bodies) -> list[tuple]:
    """Failures of ``op`` as (method path, status, url, body sent, response text)."""
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            strategies.append(op.as_strategy(generation_mode=mode))
        except Exception:  # noqa: BLE001 - e.g. no negative case exists for an operation without parameters
            pass
    found: list[tuple] = []
    declared = declared_statuses(raw, op.path, op.method)
    raw_body = op.method.upper() in ("POST", "PUT", "PATCH", "DELETE") and "requestBody" not in \
        raw["paths"][op.path][op.method.lower()]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=PHASES,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=st.one_of(strategies), data=st.data())
    def run(case, data):
        for where in ("path_parameters", "query"):
            params = getattr(case, where)
            if not params:
                continue
            for k in list(params):
                if k in real and data.draw(st.booleans(), label=f"real {k}"):
                    params[k] = data.draw(st.sampled_from(real[k]), label=k)
        url, sent = "http://testserver" + case.formatted_path, case.body
        try:
            if raw_body and data.draw(st.booleans(), label="raw body"):
                sent = data.draw(bodies, label="body")
                resp = client.request(op.method.upper(), url, params=case.query or None, data=json.dumps(sent).encode(),
                                      headers={**headers, "content-type": "application/json"})
            else:
                resp = case.call(session=client, headers=headers)
                url = resp.request.url
        except Exception as exc:  # noqa: BLE001 - the in-process client re-raises the server's exception
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            found.append((f"{op.method.upper()} {op.path}", 500, f"{url} {case.query}", sent,
                          f"{type(exc).__name__}: {exc} at {tb.filename.split('/src/')[-1]}:{tb.lineno}"))
            return
        status = resp.status_code
        ok_status = str(status) in declared or f"{str(status)[0]}XX" in declared or "default" in declared
        if status >= 500 or not ok_status:
            found.append((f"{op.method.upper()} {op.path}", status, url, sent, resp.text[:300]))

    run()
    return found


@pytest.mark.parametrize("mode", ["open", "viewer", "editor"])
def test_no_5xx_anywhere(fuzz_lake, mode):
    from neurolake.server.app import create_app

    lake, tokens, ids = fuzz_lake
    app = create_app(lake, max_cutout_bytes=2_000_000, auth=mode != "open")
    headers = {} if mode == "open" else {"Authorization": f"Bearer {tokens[mode]}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate operation ids of GET/HEAD routes
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    raw = schema.raw_schema
    real, bodies = real_values(ids), body_values(ids)
    failures, n_ops = [], 0
    with asgi.get_client(app) as client:
        for op in _operations(schema):
            n_ops += 1
            failures += fuzz_operation(client, op, raw, headers, real, bodies)
    assert n_ops == sum(len([m for m in item if m in ("get", "post", "put", "patch", "delete", "head")])
                        for item in raw["paths"].values())
    distinct = {}
    for f in failures:
        distinct.setdefault((f[0], f[1], f[4][:60] if f[1] >= 500 else ""), f)
    report = "\n".join(f"{k[1]} {k[0]}: {v[2]} body={v[3]!r} -> {v[4]}" for k, v in sorted(distinct.items()))
    assert not distinct, f"{len(distinct)} operations answered 5xx or undeclared statuses:\n{report}"


def test_profile_is_bounded():
    """The CI profile stays small and reproducible (derandomized, no shrinking)."""
    assert PROFILE != "ci" or EXAMPLES <= 5
    assert Phase.shrink not in PHASES
    assert Path(__file__).name == "test_fuzz.py"
