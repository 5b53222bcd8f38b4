"""neurolake.estimate and `neurolake estimate`: the users' worked example ($30.54 for 1,328 GB, $30.50 for
the items as listed, $0.00023 / $0.0004 for 580 GET), prices and scenario files with their errors, and the
lake mode on a real lake (the demo volumes, an annotation table, ephys Delta tables and a trace Zarr built
from the shipped recordings)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from neurolake import estimate as est
from neurolake.errors import InvalidArgument, NotFound, Unsupported

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "estimate.md"
ABF = ROOT / "data" / "ephys" / "abf"


def _doc_toml(name: str) -> str:
    """The ```toml block of docs/estimate.md whose first line is ``# <name>``."""
    for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(f"# {name}"):
            return block
    raise AssertionError(f"docs/estimate.md has no toml block for {name}")


# -- the worked example ------------------------------------------------------------------------------
def test_example_rounded_size_gives_30_54():
    e = est.estimate([est.parse_item("total=1328")])
    assert e.storage_usd == Decimal("30.544") and est.money(e.total_usd) == "$30.54"


def test_example_items_as_listed_give_30_50_and_pro_rata_requests():
    items = [est.parse_item("mea_raw=5.5x240"), est.parse_item("csv=6"), est.parse_item("abf=1.3MBx100")]
    e = est.estimate(items, est.make_requests(get=580))
    assert e.storage_gb == Decimal("1326.13")
    assert e.storage_usd == Decimal("30.50099") and est.money(e.storage_usd) == "$30.50"
    assert e.requests_usd == Decimal("0.000232") and est.money(e.requests_usd) == "$0.00023"
    assert est.money(e.total_usd) == "$30.50"
    assert any("pro rata" in r for r in e.rules) and any("10^9" in r for r in e.rules)


def test_example_slips_as_documented():
    # the example's sum counts 100 x 1.3 MB as 1.3 GB: 1,327.3 GB → $30.53, not its $30.54
    wrong = est.estimate([est.parse_item("raw=5.5x240"), est.parse_item("csv=6"), est.parse_item("abf=1.3")])
    assert wrong.storage_gb == Decimal("1327.3") and est.money(wrong.total_usd) == "$30.53"
    # the request charge: one whole unit of 1,000 under per-1000-ceil
    one = est.estimate([], est.make_requests(get=580), requests_billing="per-1000-ceil")
    assert one.requests_usd == Decimal("0.0004") and est.money(one.total_usd) == "$0.0004"
    assert one.lines[0].billed == 1000 and any("whole started units" in r for r in one.rules)
    assert est.estimate([], est.make_requests(get=1001), requests_billing="per-1000-ceil").requests_usd \
        == Decimal("0.0008")
    assert est.estimate([], est.make_requests(get=1000), requests_billing="per-1000-ceil").requests_usd \
        == Decimal("0.0004")
    text = DOC.read_text()
    for s in ("1,327.3 GB", "1,328 GB", "$30.54", "1,326.13 GB", "$30.50", "0.13 GB", "$0.000232", "$0.0004"):
        assert s in text, s


def test_example_scenario_file_of_the_docs(tmp_path):
    f = tmp_path / "pipeline.toml"
    f.write_text(_doc_toml("pipeline.toml"))
    sc = est.load_scenario(f)
    assert [i.count for i in sc.items] == [240, 1, 100] and sc.items[2].gb == Decimal("0.0013")
    e = est.estimate(sc.items, sc.requests)
    assert e.storage_gb == Decimal("1326.13") and est.money(e.total_usd) == "$30.50"
    assert sc.requests.get == 580 and est.money(e.requests_usd) == "$0.00023"
    # the same scenario as JSON
    j = tmp_path / "pipeline.json"
    j.write_text(json.dumps({"items": [{"name": "raw", "gb": 5.5, "count": 240}, {"name": "csv", "gb": 6},
                                       {"name": "abf", "bytes": 1_300_000, "count": 100}],
                             "requests": {"get": 580}}))
    assert est.estimate(est.load_scenario(j).items).storage_gb == Decimal("1326.13")


def test_requests_and_egress_lines():
    e = est.estimate([est.parse_item("x=100")], est.make_requests(get=2_000_000, put=30_000, egress_gb=50))
    kinds = {ln.kind: ln for ln in e.lines}
    assert kinds["get"].usd == Decimal("0.8") and kinds["put"].usd == Decimal("0.15")
    assert kinds["egress"].usd == Decimal("4.5") and e.egress_usd == Decimal("4.5")
    assert e.total_usd == Decimal("2.3") + Decimal("0.8") + Decimal("0.15") + Decimal("4.5")
    d = e.to_dict()
    assert d["monthly"]["total"]["text"] == "$7.75" and d["gb_bytes"] == 10**9
    json.dumps(d)


# -- money, items, prices, scenarios ------------------------------------------------------------------
def test_money_display():
    assert est.money(Decimal("30.544")) == "$30.54" and est.money(Decimal("30.545")) == "$30.55"
    assert est.money(Decimal("0.000232")) == "$0.00023" and est.money(Decimal("0.0004")) == "$0.0004"
    assert est.money(Decimal("0.00999")) == "$0.01" and est.money(0) == "$0.00"
    assert est.money(Decimal("1234567.891")) == "$1,234,567.89"
    assert est.money(Decimal("3"), "EUR") == "3.00 EUR"
    assert est.price_text(Decimal("0.023")) == "$0.023"


def test_parse_item_forms_and_errors():
    assert est.parse_item("a=5.5x240") == est.Item("a", Decimal("5.5"), 240)
    assert est.parse_item("b = 1.3 MB x 100").gb == Decimal("0.0013")
    assert est.parse_item("c=2TB").gb == Decimal("2000") and est.parse_item("d=500kb").gb == Decimal("0.0005")
    assert est.parse_item("e=1,320").gb == Decimal("1320")
    for bad in ("5.5", "=5", "a=", "a=-1", "a=5.5x", "a=5 PB", "a=1.5x2.5", "a=nan"):
        with pytest.raises(InvalidArgument):
            est.parse_item(bad)


def test_prices_file_and_overrides(tmp_path):
    t = tmp_path / "p.toml"
    t.write_text(_doc_toml("my-prices.toml"))
    p = est.load_prices(t)
    assert p.storage_gb_month == Decimal("0.0125") and p.get_per_1000 == Decimal("0.001")
    assert p.put_per_1000 == Decimal("0.005") and str(t) in p.source  # left out → default
    assert est.money(est.estimate([est.parse_item("x=1000")], prices=p).total_usd) == "$12.50"
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"egress_per_gb": 0.05, "currency": "eur"}))
    q = est.load_prices(j, p)
    assert q.egress_per_gb == Decimal("0.05") and q.currency == "EUR" and q.storage_gb_month == Decimal("0.0125")
    assert est.Prices().override({"storage_gb_month": "0.021"}).storage_gb_month == Decimal("0.021")


def test_prices_errors(tmp_path):
    with pytest.raises(InvalidArgument, match="unknown price 'storage'"):
        est.Prices().override({"storage": 1})
    with pytest.raises(InvalidArgument, match=">= 0"):
        est.Prices().override({"get_per_1000": -1})
    with pytest.raises(NotFound):
        est.load_prices(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("storage_gb_month = = 1\n")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        est.load_prices(bad)
    yml = tmp_path / "p.yaml"
    yml.write_text("a: 1")
    with pytest.raises(InvalidArgument, match=".toml or .json"):
        est.load_prices(yml)


def test_scenario_errors(tmp_path):
    def load(obj):
        f = tmp_path / "s.json"
        f.write_text(json.dumps(obj))
        return est.load_scenario(f)

    with pytest.raises(InvalidArgument, match="non-empty items"):
        load({"items": []})
    with pytest.raises(InvalidArgument, match="unknown keys"):
        load({"items": [{"name": "a", "gb": 1}], "months": 3})
    with pytest.raises(InvalidArgument, match="exactly one size"):
        load({"items": [{"name": "a", "gb": 1, "mb": 3}]})
    with pytest.raises(InvalidArgument, match="count"):
        load({"items": [{"name": "a", "gb": 1, "count": 2.5}]})
    with pytest.raises(InvalidArgument, match="get, put and egress_gb"):
        load({"items": [{"name": "a", "gb": 1}], "requests": {"list": 3}})
    with pytest.raises(InvalidArgument, match="requests_billing"):
        est.estimate([est.parse_item("a=1")], requests_billing="per-request")
    with pytest.raises(InvalidArgument, match="nothing to estimate"):
        est.estimate([])


# -- lake mode ---------------------------------------------------------------------------------------
def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def ephys_lake(demo_lake_path, tmp_path_factory):
    """A copy of the demo lake with the demo synapse table, two datastacks' ephys Delta tables (files rows of
    real ABF files, one file listed in both) and a trace Zarr of a real ABF sweep set."""
    import pandas as pd
    import pyabf
    import zarr
    from deltalake import write_deltalake

    from neurolake import open_lake
    from neurolake.annotations.demo import demo_synapses

    root = tmp_path_factory.mktemp("estimate") / "lake"
    shutil.copytree(demo_lake_path, root)
    lake = open_lake(root)
    try:
        demo_synapses(lake, lambda m: None)
    finally:
        lake.close()
    files = sorted(ABF.glob("*.abf"))[:4]
    rows = [{"file_sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "path": str(f), "name": f.name,
             "format": "abf", "bytes": f.stat().st_size} for f in files]
    for ds, part in (("gerhard2013", rows[:3]), ("gala_fibsem", rows[2:])):  # rows[2] in both
        base = root / "datastacks" / ds / "ephys"
        write_deltalake(str(base / "files"), pd.DataFrame(part))
        write_deltalake(str(base / "sweeps"), pd.DataFrame({"file_sha256": [r["file_sha256"] for r in part],
                                                            "sweep": list(range(len(part)))}))
    abf = pyabf.ABF(str(ABF / "17o05028_ic_steps.abf"))
    resp = np.stack([abf.setSweep(s) or abf.sweepY.astype(np.float32) for s in range(abf.sweepCount)])
    g = zarr.open_group(str(root / "datastacks" / "gerhard2013" / "ephys" / "traces" / f"{rows[0]['file_sha256']}.zarr"),
                        mode="w")
    g.create_array("response", data=resp, chunks=(1, 20000))
    return root, rows, resp


def test_lake_usage_by_category(ephys_lake):
    import zarr

    root, rows, resp = ephys_lake
    u = est.lake_usage(root)
    cats = {c.category: c for c in u.categories}
    assert list(cats) == [c for c in est.CATEGORIES if c in cats]
    assert {"volumes", "annotation tables", "ephys tables", "ephys traces", "catalog"} <= set(cats)
    ds = root / "datastacks"
    assert cats["volumes"].bytes == sum(_du(d) for d in ds.glob("*/volumes"))
    assert cats["annotation tables"].bytes == sum(_du(d) for d in ds.glob("*/tables")) > 0
    assert cats["ephys tables"].bytes == sum(_du(d / t) for d in ds.glob("*/ephys") for t in ("files", "sweeps"))
    assert cats["ephys traces"].bytes == _du(ds / "gerhard2013" / "ephys" / "traces")
    assert u.total_bytes == _du(root)  # every byte of the folder is in one category
    assert cats["volumes"].files == sum(1 for d in ds.glob("*/volumes") for p in d.rglob("*") if p.is_file())
    assert cats["volumes"].by_datastack.keys() == {"gerhard2013", "gala_fibsem"}
    # uncompressed = zarr's own nbytes of every array (+ the metadata files as stored)
    nbytes = meta = 0
    for layer in ds.glob("*/volumes/*"):
        grp = zarr.open_group(str(layer), mode="r")
        nbytes += sum(a.nbytes for _, a in grp.arrays())
        meta += sum(p.stat().st_size for p in layer.rglob("zarr.json"))
    assert cats["volumes"].uncompressed_bytes == nbytes + meta
    tr = cats["ephys traces"]
    assert tr.uncompressed_bytes - sum(p.stat().st_size for p in (ds / "gerhard2013" / "ephys").rglob("zarr.json")) \
        == resp.nbytes
    assert cats["ephys tables"].uncompressed_bytes > 0 and cats["catalog"].uncompressed_bytes is None
    # raw sources: the files tables' bytes, the file listed in two datastacks once
    raw = u.raw_sources
    assert raw.files == 4 and raw.bytes == sum(r["bytes"] for r in rows)
    assert raw.bytes == sum((ABF / r["name"]).stat().st_size for r in rows)


def test_estimate_lake_prices_every_byte(ephys_lake):
    root, rows, _ = ephys_lake
    e = est.estimate_lake(root, est.make_requests(get=580))
    u = e.usage
    raw = sum(r["bytes"] for r in rows)
    assert e.storage_gb == Decimal(u.total_bytes + raw) / 10**9
    assert e.storage_usd == e.storage_gb * Decimal("0.023")
    assert e.items[-1].name == "raw source files" and e.mode == "lake"
    no_raw = est.estimate_lake(root, requests_billing="per-1000-ceil", include_raw_sources=False)
    assert no_raw.storage_gb == Decimal(u.total_bytes) / 10**9
    assert any("not priced" in n for n in no_raw.notes)
    json.dumps(e.to_dict())


def test_lake_mode_errors_and_broken_files_table(ephys_lake, tmp_path):
    root, _, _ = ephys_lake
    with pytest.raises(NotFound, match="not a lake"):
        est.lake_usage(tmp_path)
    with pytest.raises(Unsupported, match="scenario"):
        est.lake_usage("gs://bucket/lake")  # s3:// lakes are estimated: tests/s3/test_s3_estimate.py
    # a files table whose log is damaged is reported, the rest still counted
    broken = tmp_path / "lake"
    shutil.copytree(root, broken, ignore=shutil.ignore_patterns("volumes"))
    log = broken / "datastacks" / "gala_fibsem" / "ephys" / "files" / "_delta_log"
    for f in log.glob("*.json"):
        f.write_text("{not json")
    u = est.lake_usage(broken)
    assert any("gala_fibsem/ephys/files" in n and "not readable" in n for n in u.notes)
    assert u.raw_sources.files == 3  # the gerhard2013 table still counts


# -- the CLI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    from neurolake.cli import estimate as cmd

    app = typer.Typer()
    cmd.register(app)
    app.command("version")(lambda: None)  # two commands, so `estimate` stays a subcommand as in neurolake
    return app


def test_cli_scenario_table_and_rules(cli):
    r = CliRunner().invoke(cli, ["estimate", "--item", "mea_raw=5.5x240", "--item", "csv=6", "--item",
                                 "abf=1.3MBx100", "--get", "580"])
    assert r.exit_code == 0, r.output
    assert "1,326.13" in r.stdout and "$30.50" in r.stdout and "$0.00023" in r.stdout
    assert "10^9 bytes" in r.stdout and "pro rata" in r.stdout and "$0.023 per GB-month" in r.stdout
    r = CliRunner().invoke(cli, ["estimate", "--item", "total=1328", "--get", "580", "--requests-billing",
                                 "per-1000-ceil"])
    assert r.exit_code == 0 and "$30.54" in r.stdout and "$0.0004 " in r.stdout and "billed as 1,000" in r.stdout


def test_cli_scenario_file_json_and_price_overrides(cli, tmp_path):
    f = tmp_path / "pipeline.toml"
    f.write_text(_doc_toml("pipeline.toml"))
    r = CliRunner().invoke(cli, ["estimate", "--scenario", str(f), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["storage_gb"] == pytest.approx(1326.13) and d["monthly"]["total"]["text"] == "$30.50"
    assert d["requests"]["get"] == 580 and d["requests_billing"] == "pro-rata"
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"prices": {"storage_gb_month": 0.01}}))
    r = CliRunner().invoke(cli, ["estimate", "--scenario", str(f), "--prices", str(p), "--get", "0",
                                 "--price", "put_per_1000=0.01", "--put", "1000", "--egress-gb", "10", "--json"])
    d = json.loads(r.stdout)
    assert d["prices"]["storage_gb_month"] == 0.01 and d["requests"] == {"get": 0, "put": 1000, "egress_gb": 10.0}
    assert d["monthly"]["total"]["amount"] == pytest.approx(13.2613 + 0.01 + 0.9)


def test_cli_lake_mode(cli, ephys_lake):
    root, _, _ = ephys_lake
    r = CliRunner().invoke(cli, ["estimate", "--lake", str(root)])
    assert r.exit_code == 0, r.output
    for s in ("volumes", "annotation tables", "ephys tables", "ephys traces", "raw source files",
              "uncompressed", "total per month"):
        assert s in r.stdout, s
    d = json.loads(CliRunner().invoke(cli, ["estimate", "--lake", str(root), "--no-raw", "--json"]).stdout)
    assert d["mode"] == "lake" and d["lake"]["total_bytes"] == _du(root)
    assert d["storage_gb"] == pytest.approx(_du(root) / 1e9)
    r = CliRunner(env={"NEUROLAKE_LAKE": str(root)}).invoke(cli, ["estimate", "--json"])
    assert json.loads(r.stdout)["lake"]["root"] == str(root)


def test_cli_errors(cli, tmp_path):
    for args, exc, msg in ((["--requests-billing", "monthly"], InvalidArgument, "per-1000-ceil"),
                           (["--item", "abf"], InvalidArgument, "NAME=GB"),
                           (["--price", "storage=1", "--item", "a=1"], InvalidArgument, "unknown price"),
                           (["--scenario", str(tmp_path / "none.toml")], NotFound, "does not exist"),
                           (["--lake", str(tmp_path)], NotFound, "not a lake")):
        r = CliRunner().invoke(cli, ["estimate", *args])
        assert isinstance(r.exception, exc) and msg in r.exception.message, (args, r.output)
    r = CliRunner().invoke(cli, ["estimate", "--get", "-1", "--item", "a=1"])
    assert r.exit_code == 2 and "greater than or equal to 0" in r.output  # Typer's own range check


def test_core_module_imports_no_face():
    for mod in ("neurolake/estimate.py", "neurolake/ephys/plots.py"):
        text = (ROOT / "src" / mod).read_text()
        assert not re.search(r"^\s*(from|import) neurolake\.(cli|server|web)\b", text, re.M), mod
