"""``neurolake estimate``: storage and access cost of the lake's bytes, or of a scenario (docs/estimate.md).

Without ``--scenario``/``--item`` it walks the lake folder (``--lake``) and prices what is stored, by category,
with the raw source files the ephys ``files`` tables list; with them it prices the items given. The table goes
to stdout (or JSON with ``--json``), followed by the unit and rounding rules applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import LakeOpt, echo_json, lake_path, parse_pairs

BILLING = ("pro-rata", "per-1000-ceil")


def _stdout_console():
    from rich.console import Console

    con = Console(soft_wrap=False)
    return con if con.is_terminal else Console(width=200, soft_wrap=False)


def _gb(v) -> str:
    from neurolake.estimate import _gb_text

    return "" if v is None else _gb_text(v)


def estimate(
        lake: LakeOpt = None,
        prices: Annotated[Path | None, typer.Option("--prices", help="price table, TOML or JSON: storage_gb_month, "
                                                    "get_per_1000, put_per_1000, egress_per_gb, currency")] = None,
        price: Annotated[list[str] | None, typer.Option("--price", help="KEY=VALUE, repeatable: override one price "
                                                        "(e.g. storage_gb_month=0.021)")] = None,
        scenario: Annotated[Path | None, typer.Option("--scenario", help="scenario file (TOML or JSON): [[items]] "
                                                      "name, gb|mb|tb|bytes, count; [requests]; [prices]")] = None,
        item: Annotated[list[str] | None, typer.Option("--item", help="NAME=GB[xCOUNT], repeatable; a unit may "
                                                       "follow the size: abf=1.3MBx100")] = None,
        get: Annotated[int | None, typer.Option("--get", min=0, help="GET requests per month")] = None,
        put: Annotated[int | None, typer.Option("--put", min=0, help="PUT requests per month")] = None,
        egress_gb: Annotated[float | None, typer.Option("--egress-gb", min=0, help="GB transferred out per "
                                                        "month (GB = 10^9 bytes)")] = None,
        requests_billing: Annotated[str, typer.Option("--requests-billing", help="pro-rata (per request) or "
                                                      "per-1000-ceil (whole started units of 1,000)")] = "pro-rata",
        no_raw: Annotated[bool, typer.Option("--no-raw", help="lake mode: leave out the raw source files the "
                                             "ephys files tables list (they live outside the lake)")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="print the estimate as JSON")] = False):
    """Monthly storage and request cost of the lake (bytes by category, compressed vs uncompressed) or of a
    scenario of sizes and counts. GB = 10^9 bytes. Defaults: $0.023 per GB-month, $0.0004 per 1,000 GET,
    $0.005 per 1,000 PUT, $0.09 per GB egress."""
    from neurolake import estimate as est
    from neurolake.errors import InvalidArgument

    if requests_billing not in BILLING:
        raise InvalidArgument(f"--requests-billing {requests_billing!r} must be one of {list(BILLING)}",
                              field="requests_billing", value=requests_billing, allowed=list(BILLING))
    pr = est.Prices()
    sc = est.load_scenario(scenario) if scenario is not None else None
    if sc is not None and sc.prices:
        pr = pr.override(sc.prices, source=str(scenario))
    if prices is not None:
        pr = est.load_prices(prices, pr)
    if price:
        pr = pr.override(parse_pairs(price, "price", "="), source="--price")
    base = sc.requests if sc is not None else est.Requests()
    req = est.make_requests(base.get if get is None else get, base.put if put is None else put,
                            base.egress_gb if egress_gb is None else str(egress_gb))
    if sc is not None or item:
        items = (sc.items if sc is not None else []) + [est.parse_item(t) for t in item or []]
        result = est.estimate(items, req, pr, requests_billing=requests_billing)
    else:
        result = est.estimate_lake(lake_path(lake), req, pr, requests_billing=requests_billing,
                                   include_raw_sources=not no_raw)
    if json_out:
        echo_json(result.to_dict())
        return
    _print(result)


def _print(e) -> None:
    from rich.table import Table

    from neurolake.estimate import GB, money, price_text

    cur = e.prices.currency
    con = _stdout_console()
    if e.mode == "lake":
        t = Table(title=f"lake {e.usage.root}: stored bytes by category", title_justify="left")
        for c, j in (("category", "left"), ("files", "right"), ("stored GB", "right"), ("uncompressed GB", "right"),
                     ("uncompressed / stored", "right"), ("per month", "right")):
            t.add_column(c, justify=j, no_wrap=True)
        for it, ln in zip(e.items, e.lines, strict=False):
            ratio = (f"{it.uncompressed_gb / it.total_gb:.2f}x" if it.uncompressed_gb is not None and it.total_gb
                     else "")
            t.add_row(it.name, f"{it.objects:,}" if it.objects is not None else "", _gb(it.total_gb),
                      _gb(it.uncompressed_gb), ratio, money(ln.usd, cur))
    else:
        t = Table(title="scenario", title_justify="left")
        for c, j in (("item", "left"), ("GB each", "right"), ("count", "right"), ("GB", "right"),
                     ("per month", "right")):
            t.add_column(c, justify=j, no_wrap=True)
        for it, ln in zip(e.items, e.lines, strict=False):
            t.add_row(it.name, _gb(it.gb), f"{it.count:,}", _gb(it.total_gb), money(ln.usd, cur))
    n = len(t.columns)
    t.add_section()
    total_files = sum(it.objects or 0 for it in e.items)
    t.add_row(*(["storage", f"{total_files:,}", _gb(e.storage_gb), "", "", money(e.storage_usd, cur)]
                if e.mode == "lake" else ["storage", "", "", _gb(e.storage_gb), money(e.storage_usd, cur)]))
    for ln in e.lines[len(e.items):]:
        what = (f"{int(ln.quantity):,} {ln.kind.upper()} × {price_text(ln.unit_price, cur)} per 1,000"
                + (f" (billed as {int(ln.billed):,})" if ln.billed != ln.quantity else "")
                if ln.kind != "egress" else f"egress {_gb(ln.quantity)} GB × {price_text(ln.unit_price, cur)} per GB")
        t.add_row(*([what] + [""] * (n - 2) + [money(ln.usd, cur)]))
    t.add_section()
    t.add_row(*(["[bold]total per month[/bold]"] + [""] * (n - 2) + [f"[bold]{money(e.total_usd, cur)}[/bold]"]))
    con.print(t)
    p = e.prices
    con.print(f"prices ({p.source}): {price_text(p.storage_gb_month, cur)} per GB-month, "
              f"{price_text(p.get_per_1000, cur)} per 1,000 GET, {price_text(p.put_per_1000, cur)} per 1,000 PUT, "
              f"{price_text(p.egress_per_gb, cur)} per GB egress; GB = {GB:,} bytes", highlight=False)
    for r in e.rules:
        con.print(f"rule: {r}", highlight=False)
    for note in e.notes:
        con.print(f"note: {note}", highlight=False)


def scale(
        installation: Annotated[str, typer.Option("--installation", "-i", help="microns, h01, or a TOML/JSON file "
                                                  "(name, cells, synapses, supervoxels, [[layers]] …)")] = "microns",
        lake: LakeOpt = None,
        node_ram_gb: Annotated[float | None, typer.Option("--node-ram-gb", help="RAM of the largest host")] = None,
        prices: Annotated[Path | None, typer.Option("--prices", help="price table, TOML or JSON")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Model an installation at scale: objects, requests, catalog, memory, monthly cost, what breaks first.

    With ``--lake`` (or $NEUROLAKE_LAKE) the stored/uncompressed ratios of images and segmentations are measured
    on that lake; otherwise the ratios measured on the demo lake are used.
    """
    from neurolake import scaling
    from neurolake.estimate import load_prices

    inst = (scaling.preset(installation) if installation in ("microns", "h01")
            else scaling.load_installation(installation))
    if node_ram_gb is not None:
        inst.node_ram_gb = node_ram_gb
    report = scaling.model(inst, scaling.measure_constants(lake=lake), load_prices(prices) if prices else None)
    if as_json:
        echo_json(report.to_dict())
    else:
        typer.echo(scaling.report_text(report))


def register(app: typer.Typer) -> None:
    """Add ``estimate`` and ``scale`` to the ``neurolake`` command."""
    app.command("estimate")(estimate)
    app.command("scale")(scale)
