"""Similarity search over registered embedding tables (issue 15), on embeddings computed from real data:

- ``celegans``: each neuron's chemical-synapse connectivity in the C. elegans connectome (Varshney et al.
  2011, data/celegans/NeuronConnect.csv, ``S``/``Sp`` rows): the concatenation of its outgoing and incoming
  synapse counts over the 279 neurons with chemical synapses, 558 float32 values, for all 280 neurons (VC06,
  which only makes neuromuscular junctions, has a null vector);
  written as Parquet (fixed_size_list), Delta (list<float>) and Lance;
- ``hemibrain``: 8 features per hemibrain neuron (Schlegel et al. 2024, data/hemibrain_meta): soma position
  x, y, z and log(1 + pre), log(1 + post), log(1 + pre_con2), each z-scored, and the soma side (left/right,
  ±1, 2 values) — 25,397 rows, 15,939 with every value (the others have a null vector); Lance.

Oracles are brute-force numpy distances computed here, independently of neurolake.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
N_HEMI_VALID = 15939


def _celegans():
    import pandas as pd
    import pyarrow as pa

    d = pd.read_csv(DATA / "celegans" / "NeuronConnect.csv")
    for c in ("Neuron 1", "Neuron 2"):
        d[c] = d[c].str.upper()
    chem = d[d["Type"].isin(["S", "Sp"])]
    partners = sorted(set(chem["Neuron 1"]) | set(chem["Neuron 2"]))  # the 279 vector positions
    neurons = sorted((set(d["Neuron 1"]) | set(d["Neuron 2"])) - {"NMJ"})  # rows: every neuron (280)
    pos = {n: i for i, n in enumerate(partners)}
    row = {n: i for i, n in enumerate(neurons)}
    A = np.zeros((len(neurons), len(partners)), np.float32)  # out-going counts
    B = np.zeros((len(neurons), len(partners)), np.float32)  # in-coming counts
    for a, b, w in zip(chem["Neuron 1"], chem["Neuron 2"], chem["Nbr"], strict=True):
        A[row[a], pos[b]] += w
        B[row[b], pos[a]] += w
    emb = np.hstack([A, B])  # (280 neurons, 558): out-going then in-coming synapse counts
    empty = ~emb.any(axis=1)
    cls = [n.rstrip("0123456789") for n in neurons]
    cls = [c[:-1] if len(c) > 2 and c[-1] in "LR" and (c[:-1] + ("R" if c[-1] == "L" else "L")) in set(cls) else c
           for c in cls]  # AVAL/AVAR -> AVA, VA08 -> VA
    vec = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1],
                                            mask=pa.array(empty))
    t = pa.table({"neuron": neurons, "class": cls, "n_out": A.sum(1).astype(np.int64),
                  "n_in": B.sum(1).astype(np.int64), "emb": vec})
    return t, emb, ~empty


def _hemibrain():
    import pandas as pd
    import pyarrow as pa

    d = pd.read_csv(DATA / "hemibrain_meta" / "Supplemental_file5_hemibrain_meta.csv", low_memory=False)
    xyz = d["somaLocation"].str.split(",", expand=True).astype(float)
    cols = [xyz[0], xyz[1], xyz[2], np.log1p(d["pre"]), np.log1p(d["post"]), np.log1p(d["pre_con2"])]
    F = np.stack([(c - c.mean()) / c.std() for c in cols], 1)
    side = d["side"].map({"left": 1.0, "right": -1.0})
    F = np.hstack([F, np.stack([side, -side], 1)]).astype(np.float32)
    ok = np.isfinite(F).all(axis=1)
    F[~ok] = 0
    vec = pa.FixedSizeListArray.from_arrays(pa.array(F.ravel()), 8, mask=pa.array(~ok))
    t = pa.table({"bodyId": d["bodyId"].astype(np.int64), "type": d["type"], "cell_class": d["cell_class"],
                  "side": d["side"], "features": vec})
    return t, F, ok


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    import lance
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    root = tmp_path_factory.mktemp("similar")
    ce, emb, ok = _celegans()
    pq.write_table(ce, root / "celegans.parquet")
    write_deltalake(str(root / "celegans_delta"), ce)
    lance.write_dataset(ce, str(root / "celegans.lance"))
    hb, F, hok = _hemibrain()
    lance.write_dataset(hb, str(root / "hemibrain.lance"))
    # the same embeddings as float64: a wrong dtype
    pq.write_table(ce.set_column(4, "emb", pa.FixedSizeListArray.from_arrays(
        pa.array(emb.ravel().astype(np.float64)), emb.shape[1])), root / "celegans_f64.parquet")
    return {"root": root, "ce": ce, "emb": emb, "ok": ok, "hb": hb, "F": F, "hok": hok}


DECL = {"emb": {"dimension": 558, "metric": "cosine", "embeds": "chemical synapse counts out|in per neuron",
                "model_version": "varshney2011-counts-v1", "id_column": "neuron"}}
HEMI = {"features": {"dimension": 8, "metric": "l2", "embeds": "soma xyz, log synapse counts, side (z-scored)",
                     "model_version": "hemibrain-meta-8d-v1", "id_column": "bodyId"}}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tables):
    from neurolake import init_lake

    lk = init_lake(tmp_path_factory.mktemp("simlake") / "lake")
    lk.create_datastack("celegans", (1, 1, 1), public=False)
    lk.create_datastack("hemibrain", (8, 8, 8), public=False)
    r = tables["root"]
    for name, loc in (("ce_parquet", "celegans.parquet"), ("ce_delta", "celegans_delta"),
                      ("ce_lance", "celegans.lance")):
        lk.features.register(name=name, datastack="celegans", location=str(r / loc), vectors=DECL)
    lk.features.register(name="hemi", datastack="hemibrain", location=str(r / "hemibrain.lance"), vectors=HEMI)
    yield lk
    lk.close()


def _oracle(X, ok, q, k, metric, rows=None):
    """Brute force: (row ids, distances) of the k nearest valid rows (among ``rows``) to ``q``."""
    X = X.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        nx = np.linalg.norm(X, axis=1)
        d = 1 - (X @ q) / (np.where(nx == 0, 1, nx) * np.linalg.norm(q))
    elif metric == "l2":
        d = np.linalg.norm(X - q, axis=1)
    else:
        d = -(X @ q)
    allowed = ok.copy() if rows is None else (ok & rows)
    d = np.where(allowed, d, np.inf)
    order = np.lexsort((np.arange(len(d)), d))[:k]
    order = order[np.isfinite(d[order])]
    return order, d[order]


# -- declarations -----------------------------------------------------------------------------------------
def test_register_declares_vectors_in_every_format(lake, tables):
    for name, typ in (("ce_parquet", "fixed_size_list"), ("ce_delta", "list"), ("ce_lance", "fixed_size_list")):
        e = lake.features.get(name)
        assert e["vectors"] == {"emb": DECL["emb"]}
        col = {c["name"]: c for c in e["schema"]}["emb"]
        assert col["type"].startswith(typ + "<") and col["vector"]["dimension"] == 558
    # found by column search like any other column; the declaration is part of the entry over to_dict
    assert [e["name"] for e in lake.features.search(column="emb")] == ["ce_delta", "ce_lance", "ce_parquet"]


@pytest.mark.parametrize("decl, field, words", [
    ({"emb": {**DECL["emb"], "dimension": 557}}, "vectors.emb.dimension", "does not match the column's dimension 558"),
    ({"embedding": DECL["emb"]}, "vectors.embedding", "column 'embedding' is not in the table"),
    ({"n_out": {**DECL["emb"], "dimension": 1}}, "vectors.n_out", "has type 'int64'"),
    ({"emb": {**DECL["emb"], "metric": "manhattan"}}, "vectors.emb.metric", "use one of cosine, l2, dot"),
    ({"emb": {**DECL["emb"], "dimension": 0}}, "vectors.emb.dimension", "an integer 1"),
    ({"emb": {**DECL["emb"], "size": 3}}, "vectors.emb.size", "unknown key"),
    ({"emb": {**DECL["emb"], "id_column": "cell"}}, "vectors.emb.id_column", "'cell' is not in the table"),
])
def test_register_bad_declarations(lake, tables, decl, field, words):
    from neurolake.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as ei:
        lake.features.register(name="bad", datastack="celegans", location=str(tables["root"] / "celegans.parquet"),
                               vectors=decl)
    assert ei.value.detail["field"] == field and words in ei.value.message
    assert lake.features.search(name="bad") == []


def test_register_wrong_dtype_and_delta_dimension(lake, tables):
    from neurolake.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as ei:
        lake.features.register(name="f64", datastack="celegans",
                               location=str(tables["root"] / "celegans_f64.parquet"), vectors=DECL)
    assert ei.value.detail["field"] == "vectors.emb" and "holds double values" in ei.value.message
    # Delta stores list<float>: the dimension is checked against the rows themselves
    with pytest.raises(InvalidArgument) as ei:
        lake.features.register(name="d2", datastack="celegans", location=str(tables["root"] / "celegans_delta"),
                               vectors={"emb": {**DECL["emb"], "dimension": 600}})
    assert ei.value.detail["field"] == "vectors.emb.dimension" and "rows hold 558 … 558 values" in ei.value.message
    assert lake.features.search(name="f64") == [] and lake.features.search(name="d2") == []


# -- exact search ------------------------------------------------------------------------------------------
def test_own_nearest_neighbour_and_exact_equals_numpy(lake, tables):
    emb, ok, ce = tables["emb"], tables["ok"], tables["ce"]
    neurons = ce.column("neuron").to_pylist()
    for name in ("ce_parquet", "ce_delta", "ce_lance"):
        for who in ("AVAL", "DA01", "RIML", "ASHR"):
            r = lake.features.similar(name, id=who, k=10)
            df = r.df()
            assert df["neuron"].iloc[0] == who and df["_distance"].iloc[0] == pytest.approx(0, abs=1e-6)
            i = neurons.index(who)
            want, dist = _oracle(emb, ok, emb[i], 10, "cosine")
            assert df["neuron"].tolist() == [neurons[j] for j in want]
            np.testing.assert_allclose(df["_distance"], dist, atol=1e-5)
            md = r.metadata
            assert md["search"] == "exact" and md["index"] == "exact" and md["metric"] == "cosine"
            assert md["model_version"] == "varshney2011-counts-v1" and md["fingerprint"] == \
                lake.features.get(name)["fingerprint"]
            assert "emb" not in df.columns and df.attrs["table"] == name
    # the left/right homologue of AVAL is its nearest other neuron
    assert lake.features.similar("ce_parquet", id="AVAL", k=2).df()["neuron"].tolist() == ["AVAL", "AVAR"]


def test_query_by_vector_batch_and_metrics(lake, tables, tmp_path):
    emb, ok, ce = tables["emb"], tables["ok"], tables["ce"]
    q = emb[[10, 20, 30]] + 0.5
    r = lake.features.similar("ce_parquet", vector=q.tolist(), k=5, columns=["neuron", "n_out"])
    t = r.arrow()
    assert t.column_names == ["_query", "neuron", "n_out", "_distance"] and t.num_rows == 15
    neurons = ce.column("neuron").to_pylist()
    for b in range(3):
        want, dist = _oracle(emb, ok, q[b], 5, "cosine")
        rows = [x for x in t.to_pylist() if x["_query"] == b]
        assert [x["neuron"] for x in rows] == [neurons[j] for j in want]
        np.testing.assert_allclose([x["_distance"] for x in rows], dist, atol=1e-5)
    assert json.loads(t.schema.metadata[b"neurolake"])["query"] == {"vectors": 3}
    # the same file registered with the other metrics
    for metric in ("l2", "dot"):
        lake.features.register(name=f"ce_{metric}", datastack="celegans",
                               location=str(tables["root"] / "celegans.parquet"),
                               vectors={"emb": {**DECL["emb"], "metric": metric}})
        df = lake.features.similar(f"ce_{metric}", vector=q[0], k=7).df()
        want, dist = _oracle(emb, ok, q[0], 7, metric)
        assert df["neuron"].tolist() == [neurons[j] for j in want]
        np.testing.assert_allclose(df["_distance"], dist, rtol=1e-5, atol=1e-3)


def test_filters_are_predicates_and_results_satisfy_them(lake, tables):
    from neurolake.errors import InvalidArgument

    emb, ok, ce = tables["emb"], tables["ok"], tables["ce"]
    cls = np.array(ce.column("class").to_pylist())
    n_out = np.array(ce.column("n_out").to_pylist())
    neurons = ce.column("neuron").to_pylist()
    q = emb[neurons.index("VA08")]
    r = lake.features.similar("ce_lance", vector=q, k=10, filter="class IN ('VA', 'DA') AND n_out > 20")
    df = r.df()
    assert len(df) == 10 and set(df["class"]) <= {"VA", "DA"} and (df["n_out"] > 20).all()
    want, _ = _oracle(emb, ok, q, 10, "cosine", rows=np.isin(cls, ["VA", "DA"]) & (n_out > 20))
    assert df["neuron"].tolist() == [neurons[j] for j in want]
    assert r.metadata["filter"] == "class IN ('VA', 'DA') AND n_out > 20"
    assert r.metadata["rows_searched"] == int((np.isin(cls, ["VA", "DA"]) & (n_out > 20) & ok).sum())
    # fewer matching rows than k: all of them
    assert len(lake.features.similar("ce_lance", vector=q, k=50, filter="class = 'AVA'")) == 2
    for bad, words in (("n_out > 1; DROP TABLE t", "not an SQL predicate"),
                       ("1=1) UNION SELECT * FROM t WHERE (1=1", "not a single predicate"),
                       ("neuron IN (SELECT neuron FROM t)", "sub-query"),
                       ("cell_type = 'L2/3'", "unknown column 'cell_type'"),
                       ("n_out > 1 LIMIT 3", "not an SQL predicate"),
                       ("class = 1", "cannot be evaluated"),
                       ("emb IS NULL", "unknown column 'emb'")):
        with pytest.raises(InvalidArgument) as ei:
            lake.features.similar("ce_lance", vector=q, k=3, filter=bad)
        assert ei.value.detail["field"] == "filter" and words in ei.value.message, ei.value.message


def test_search_errors(lake, tables):
    from neurolake.errors import InvalidArgument, NotFound

    reg = lake.features
    q = tables["emb"][0]
    cases = [
        (dict(vector=q[:100]), "vector", "the column's dimension is 558"),
        (dict(), "vector", "exactly one of"),
        (dict(vector=q, id="AVAL"), "id", "exactly one of"),
        (dict(vector=q, k=0), "k", "1 … 10000"),
        (dict(vector=q, refine=0), "refine", "1 … 1000"),
        (dict(vector=q, column="n_out"), "column", "not a declared vector column"),
        (dict(vector=q, columns=["nope"]), "columns", "not in the table"),
        (dict(vector=np.zeros(558)), "vector", "zero vector"),
        (dict(vector=[float("nan")] * 558), "vector", "finite"),
        (dict(id="AVAL", id_column="n_out"), "id", "not a value of column 'n_out'"),
        (dict(id="AVA", id_column="class"), "id", "2 rows of 'ce_parquet' have class = 'AVA'"),
        (dict(id="AVAL", id_column="nope"), "id_column", "'nope' is not in the table"),
    ]
    for kw, field, words in cases:
        with pytest.raises(InvalidArgument) as ei:
            reg.similar("ce_parquet", **kw)
        assert ei.value.detail["field"] == field and words in ei.value.message, (kw, ei.value.message)
    with pytest.raises(NotFound) as ei:
        reg.similar("ce_parquet", id="NOSUCH")
    assert "no row of 'ce_parquet' has neuron = 'NOSUCH'" in ei.value.message
    # a neuron whose vector is null (no synapse counted) cannot be a query, and is never a result
    empty = [n for n, o in zip(tables["ce"].column("neuron").to_pylist(), tables["ok"], strict=True) if not o]
    assert empty, "the data has neurons without counted synapses"
    with pytest.raises(InvalidArgument, match="has no vector"):
        reg.similar("ce_parquet", id=empty[0])
    assert not set(reg.similar("ce_parquet", vector=q, k=300).df()["neuron"]) & set(empty)
    # a table without vector columns
    # index parameters
    for kw, field in ((dict(kind="hnsw"), "kind"), (dict(kind="ivf_pq", m=5), "m"), (dict(nlist=10_000), "nlist"),
                      (dict(nlist=4, nprobe=5), "nprobe"), (dict(refine=0), "refine")):
        with pytest.raises(InvalidArgument) as ei:
            reg.index("ce_parquet", **kw)
        assert ei.value.detail["field"] == field, kw
    assert reg.index_info("ce_parquet")["index"] is None  # nothing was written by the failures
    reg.register(name="plain", datastack="celegans", location=str(tables["root"] / "celegans_f64.parquet"))
    with pytest.raises(InvalidArgument, match="declares no vector columns"):
        reg.similar("plain", vector=q)
    with pytest.raises(InvalidArgument, match="declares no vector columns"):
        reg.index("plain")


def test_declare_vectors_on_a_draft_update(lake, tables):
    from neurolake.errors import Conflict, InvalidArgument

    reg = lake.features
    loc = str(tables["root"] / "celegans.lance")
    reg.register(name="ce_later", datastack="celegans", location=loc)
    with pytest.raises(InvalidArgument, match="declares no vector columns"):
        reg.similar("ce_later", id="AVAL")
    with pytest.raises(InvalidArgument) as ei:
        reg.update("ce_later", vectors={"emb": {**DECL["emb"], "dimension": 3}})
    assert ei.value.detail["field"] == "vectors.emb.dimension"
    assert reg.get("ce_later")["vectors"] == {}  # the failed update changed nothing
    assert reg.update("ce_later", vectors=DECL)["vectors"] == {"emb": DECL["emb"]}
    assert reg.similar("ce_later", id="AVAL", k=1).df()["neuron"].tolist() == ["AVAL"]
    reg.set_status("ce_later", "published")
    with pytest.raises(Conflict, match="vectors"):
        reg.update("ce_later", vectors=None)
    assert reg.get("ce_later")["vectors"] == {"emb": DECL["emb"]}


# -- indexes -----------------------------------------------------------------------------------------------
def test_ivf_pq_index_recall_refine_and_exact(lake, tables, monkeypatch):
    from neurolake.catalog import vectors

    reg = lake.features
    F, ok, hb = tables["F"], tables["hok"], tables["hb"]
    assert int(ok.sum()) == N_HEMI_VALID
    meta = reg.index("hemi", kind="ivf_pq", m=4, nbits=6, nlist=64, nprobe=8, refine=10, train_rows=5000)
    assert meta["built"] and meta["factory"] == "IVF64,PQ4x6" and meta["indexed_rows"] == N_HEMI_VALID
    assert meta["train_rows"] == 5000
    d = Path(lake.root) / "features" / "_indexes" / "hemibrain" / "hemi" / "features"
    assert (d / "index.faiss").stat().st_size > 0 and json.loads((d / "index.json").read_text())["nlist"] == 64
    assert not list((tables["root"] / "hemibrain.lance").rglob("*.faiss"))  # nothing beside the user's data
    # a fresh index is kept
    assert reg.index("hemi")["built"] is False
    ids = hb.column("bodyId").to_numpy()
    rng = np.random.default_rng(7)
    qrows = rng.choice(np.flatnonzero(ok), 200, replace=False)
    r = reg.similar("hemi", vector=F[qrows], k=10)
    md = r.metadata
    assert md["search"] == "ann" and md["index"]["factory"] == "IVF64,PQ4x6" and md["index"]["refine"] == 10
    assert md["candidates"] == 100 and md["model_version"] == "hemibrain-meta-8d-v1"
    got = r.arrow().to_pydict()
    hits = 0
    for b, qr in enumerate(qrows):
        want, _ = _oracle(F, ok, F[qr], 10, "l2")
        mine = [bid for qq, bid in zip(got["_query"], got["bodyId"], strict=True) if qq == b]
        assert mine[0] == ids[qr]  # its own nearest neighbour
        hits += len(set(mine) & set(ids[want].tolist()))
    recall = hits / (10 * len(qrows))
    assert recall >= 0.95, recall
    # without re-ranking (refine=1, PQ distances only for the order) recall is lower: re-ranking matters
    r1 = reg.similar("hemi", vector=F[qrows], k=10, refine=1, nprobe=8).arrow().to_pydict()
    hits1 = sum(len({bid for qq, bid in zip(r1["_query"], r1["bodyId"], strict=True) if qq == b}
                    & set(ids[_oracle(F, ok, F[qr], 10, "l2")[0]].tolist())) for b, qr in enumerate(qrows))
    assert hits1 / (10 * len(qrows)) < recall
    with pytest.raises(vectors.InvalidArgument) as ei:
        reg.similar("hemi", vector=F[qrows[0]], nprobe=65)
    assert ei.value.detail["field"] == "nprobe" and "nlist (64)" in ei.value.message
    # exact=True ignores the index and equals the brute force exactly
    e = reg.similar("hemi", vector=F[qrows[:20]], k=10, exact=True)
    assert e.metadata["search"] == "exact" and e.metadata["index"] == "exact"
    ed = e.arrow().to_pydict()
    for b, qr in enumerate(qrows[:20]):
        want, dist = _oracle(F, ok, F[qr], 10, "l2")
        sel = [i for i, qq in enumerate(ed["_query"]) if qq == b]
        assert [ed["bodyId"][i] for i in sel] == ids[want].tolist()
        np.testing.assert_allclose([ed["_distance"][i] for i in sel], dist, atol=1e-4)
    # a filtered ANN search (the bitmap selector; normally used when > 50,000 rows match)
    monkeypatch.setattr(vectors, "EXACT_FILTER_ROWS", 0)
    f = reg.similar("hemi", vector=F[qrows[:50]], k=10, filter="cell_class = 'CX'")
    assert f.metadata["search"] == "ann"
    fd = f.df()
    assert (fd["cell_class"] == "CX").all() and len(fd) == 500
    cx = np.array(hb.column("cell_class").to_pylist()) == "CX"
    hits = sum(len(set(fd[fd["_query"] == b]["bodyId"]) & set(ids[_oracle(F, ok, F[qr], 10, "l2", cx)[0]].tolist()))
               for b, qr in enumerate(qrows[:50]))
    assert hits / 500 >= 0.9


def test_stale_index_detected_and_rebuilt(lake, tables, tmp_path):
    import lance
    import pyarrow.parquet as pq

    from neurolake.errors import CorruptData

    reg = lake.features
    ce = tables["ce"]
    loc = tmp_path / "ce.lance"
    lance.write_dataset(ce, str(loc))
    reg.register(name="ce_versions", datastack="celegans", location=str(loc), vectors=DECL)
    meta = reg.index("ce_versions")
    assert meta["factory"].endswith(",Flat") and meta["fingerprint"] == {"kind": "lance_version", "value": 1}
    assert reg.similar("ce_versions", id="AVAL").metadata["search"] == "ann"
    # the table is rewritten (a new Lance version without the AVA neurons) and the entry updated
    lance.write_dataset(ce.filter(np.array([not n.startswith("AVA") for n in ce.column("neuron").to_pylist()])),
                        str(loc), mode="overwrite")
    assert reg.update("ce_versions", location=str(loc))["fingerprint"]["value"] == 2
    info = reg.index_info("ce_versions")
    assert info["stale"] and "registered fingerprint" in info["stale"][0]
    r = reg.similar("ce_versions", id="AVBL", k=10)
    md = r.metadata
    assert md["search"] == "exact" and md["index_stale"]["index_fingerprint"]["value"] == 1
    assert "stale" in md["warnings"][0] and not {"AVAL", "AVAR"} & set(r.df()["neuron"])
    r = reg.similar("ce_versions", id="AVBL", k=10, rebuild=True)
    assert r.metadata["search"] == "ann" and "index_stale" not in r.metadata
    assert reg.index_info("ce_versions")["stale"] == []
    # a Parquet file rewritten in place (not re-registered): refused, not silently searched
    p = tmp_path / "ce.parquet"
    pq.write_table(ce, p)
    reg.register(name="ce_rewritten", datastack="celegans", location=str(p), vectors=DECL)
    reg.index("ce_rewritten")
    pq.write_table(ce.slice(0, 200), p)
    with pytest.raises(CorruptData, match="changed since registration"):
        reg.similar("ce_rewritten", id="AVAL")
    # … updated: the index is stale (files rewritten, fingerprint changed)
    reg.update("ce_rewritten", location=str(p))
    md = reg.similar("ce_rewritten", id="ADAL").metadata
    assert md["search"] == "exact" and any("fingerprint" in s for s in md["index_stale"]["reasons"])


# -- faces -------------------------------------------------------------------------------------------------
def test_http_route_rights_and_quota(lake, tables):
    from fastapi.testclient import TestClient

    from neurolake.server.app import create_app

    acc = lake.access
    tok = {}
    for user, role, quota in (("vi", "viewer", None), ("ed", "editor", None), ("out", None, None),
                              ("q", "viewer", 2)):
        acc.add_user(user, quota_requests=quota, quota_period_s=3600 if quota else None)
        if role:
            acc.grant(user, "celegans", role)
        tok[user] = acc.create_token(user, "t")["token"]
    client = TestClient(create_app(lake, auth=True), raise_server_exceptions=True)

    def post(user, body, name="ce_parquet"):
        h = {"Authorization": f"Bearer {tok[user]}"} if user else {}
        return client.post(f"/api/v1/features/{name}/similar", json=body, headers=h)

    r = post("vi", {"id": "AVAL", "k": 3, "filter": "n_out > 50"})
    assert r.status_code == 200, r.text
    body = r.json()
    neurons, emb = tables["ce"].column("neuron").to_pylist(), tables["emb"]
    want, dist = _oracle(emb, tables["ok"], emb[neurons.index("AVAL")], 3, "cosine",
                         np.array(tables["ce"].column("n_out").to_pylist()) > 50)
    assert [x["neuron"] for x in body["rows"]] == [neurons[j] for j in want]
    np.testing.assert_allclose([x["_distance"] for x in body["rows"]], dist, atol=1e-6)
    assert body["count"] == 3 and body["columns"][-1] == "_distance" and body["rows"][0]["neuron"] == "AVAL"
    assert body["metadata"]["fingerprint"] == lake.features.get("ce_parquet")["fingerprint"]
    assert body["metadata"]["model_version"] == DECL["emb"]["model_version"]
    assert all(x["n_out"] > 50 for x in body["rows"])
    vec = tables["emb"][5].tolist()
    assert post("vi", {"vector": vec, "k": 2, "exact": True, "datastack": "celegans"}).json()["metadata"][
        "search"] == "exact"
    assert post(None, {"id": "AVAL"}).status_code == 401
    r = post("out", {"id": "AVAL"})
    assert r.status_code == 403 and r.json()["error"] == "permission_denied"
    assert "AVAL" not in r.text and "ce_parquet" in r.text  # the same 403 as for a table that does not exist
    assert post("out", {"id": "AVAL"}, name="nosuch").status_code == 403
    r = post("vi", {"id": "AVAL", "rebuild": True})
    assert r.status_code == 403 and r.json()["detail"]["required"] == "editor"
    assert post("ed", {"id": "AVAL", "rebuild": True}).json()["metadata"]["search"] == "ann"
    # the index routes: viewers read its state, editors build it
    h = {u: {"Authorization": f"Bearer {tok[u]}"} for u in tok}
    r = client.get("/api/v1/features/ce_parquet/index", headers=h["vi"])
    assert r.status_code == 200 and r.json()["stale"] == [] and r.json()["index"]["kind"] == "ivf_flat"
    assert client.get("/api/v1/features/ce_parquet/index", headers=h["out"]).status_code == 403
    r = client.post("/api/v1/features/ce_parquet/index", json={"nlist": 8}, headers=h["vi"])
    assert r.status_code == 403 and r.json()["detail"]["required"] == "editor"
    r = client.post("/api/v1/features/ce_parquet/index", json={"nlist": 8, "nprobe": 2}, headers=h["ed"])
    assert r.status_code == 200 and r.json()["built"] is True and r.json()["index"]["factory"] == "IVF8,Flat"
    r = client.post("/api/v1/features/ce_parquet/index", json={"train_rows": "all"}, headers=h["ed"])
    assert r.status_code == 400 and r.json()["detail"]["field"] == "train_rows"
    assert post("vi", {"id": "AVAL"}).json()["metadata"]["index"]["nlist"] == 8
    r = post("vi", {"id": "AVAL", "filter": "1; DROP TABLE t"})
    assert r.status_code == 400 and r.json()["detail"]["field"] == "filter"
    r = post("vi", {"id": "AVAL", "kk": 3})
    assert r.status_code == 400 and r.json()["detail"]["field"] == "kk"
    assert post("vi", {"id": "NOSUCH"}).status_code == 404
    # the same request quota as every other read
    assert [post("q", {"id": "AVAL", "k": 1}).status_code for _ in range(3)] == [200, 200, 429]


def test_http_route_on_a_real_server(serve_lake, tmp_path, tables):
    import httpx

    from neurolake import init_lake

    lk = init_lake(tmp_path / "lake")
    lk.create_datastack("celegans", (1, 1, 1), public=False)
    lk.features.register(name="ce", datastack="celegans", location=str(tables["root"] / "celegans.lance"),
                         vectors=DECL)
    lk.access.add_user("vi")
    lk.access.grant("vi", "celegans", "viewer")
    lk.access.add_user("out")
    tv, to = lk.access.create_token("vi")["token"], lk.access.create_token("out")["token"]
    lk.close()
    base = serve_lake(tmp_path / "lake", "--auth")
    url = base + "/api/v1/features/ce/similar"
    r = httpx.post(url, json={"id": "DA01", "k": 4}, headers={"Authorization": f"Bearer {tv}"})
    assert r.status_code == 200 and r.json()["rows"][0]["neuron"] == "DA01"
    assert httpx.post(url, json={"id": "DA01"}, headers={"Authorization": f"Bearer {to}"}).status_code == 403


def test_cli_index_and_similar(lake, tables):
    from typer.testing import CliRunner

    from neurolake.cli import app

    run = CliRunner()
    L = ["--lake", str(lake.root)]
    r = run.invoke(app, ["features", "index", "ce_delta", *L, "--column", "emb", "--rebuild"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["built"] is True
    r = run.invoke(app, ["features", "similar", "ce_delta", *L, "--id", "DA01", "-k", "3", "--filter",
                         "class = 'DA'"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rows"][0]["neuron"] == "DA01" and all(x["class"] == "DA" for x in out["rows"])
    assert out["metadata"]["table"] == "ce_delta" and len(out["rows"]) == 3
    vec = json.dumps(tables["emb"][0].tolist())
    r = run.invoke(app, ["features", "similar", "ce_delta", *L, "--vector", vec, "-k", "2", "--exact"])
    assert r.exit_code == 0 and json.loads(r.output)["metadata"]["search"] == "exact"
    r = run.invoke(app, ["features", "similar", "ce_delta", *L, "--vector", "[1, 2"])
    assert r.exit_code != 0 and "--vector must be a JSON list" in str(r.exception)
    r = run.invoke(app, ["features", "index", "ce_delta", *L, "--info"])
    assert r.exit_code == 0 and json.loads(r.output)["stale"] == []


# -- results in SQL ----------------------------------------------------------------------------------------
def test_saved_result_is_a_feature_table_joinable_in_sql(lake, tables):
    """``save_as`` registers the result; SQL joins it with the lake's tables (here the full C. elegans table),
    equal to a pandas merge of the same rows, and the run's manifest pins the saved table's fingerprint."""
    from neurolake.errors import AlreadyExists, InvalidArgument

    res = lake.features.similar("ce_parquet", id="AVAL", k=8, save_as="near_aval")
    saved = res.metadata["saved_as"]
    assert saved["name"] == "near_aval" and saved["fingerprint"]
    entry = lake.features.get("near_aval")
    assert entry["derived_from"] == ["ce_parquet"] and "similarity-result" in entry["tags"]
    q = lake.sql("SELECT s.neuron, s._distance, c.n_in FROM features.near_aval s "
                 "JOIN features.ce_parquet c ON c.neuron = s.neuron ORDER BY s._distance, s.neuron")
    got = q.df()
    want = res.df()[["neuron", "_distance"]].merge(tables["ce"].to_pandas()[["neuron", "n_in"]], on="neuron")
    want = want.sort_values(["_distance", "neuron"]).reset_index(drop=True)
    assert got["neuron"].tolist() == want["neuron"].tolist() and got["neuron"].iloc[0] == "AVAL"
    np.testing.assert_allclose(got["_distance"], want["_distance"])
    assert got["n_in"].tolist() == want["n_in"].tolist()
    names = {i["name"] for i in q.manifest["run"]["facets"]["neurolake"]["inputs"]}
    assert "features.celegans.near_aval" in names
    with pytest.raises(AlreadyExists):  # the name is taken: nothing written, the saved table unchanged
        lake.features.similar("ce_parquet", id="AVAR", k=8, save_as="near_aval")
    assert lake.features.get("near_aval")["fingerprint"] == saved["fingerprint"]
    assert lake.sql("SELECT count(*) AS n FROM features.near_aval").df()["n"].iloc[0] == 8
    with pytest.raises(InvalidArgument):
        lake.features.similar("ce_parquet", id="AVAL", k=8, save_as="../escape")
