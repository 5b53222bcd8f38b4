"""``neurolake materialize`` and ``neurolake versions …``: materialization versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import (
    VERSION_KEYS,
    Bar,
    DsOpt,
    LakeOpt,
    TableOpt,
    echo_json,
    open_lake,
    parse_csv,
    pick,
    say,
)
from neurolake.errors import InvalidArgument

app = typer.Typer(help="Materialization versions: list, show, expire, query.", no_args_is_help=True)


def materialize(datastack: DsOpt, lake: LakeOpt = None,
                timestamp: Annotated[str | None, typer.Option(help="ISO time (default now)")] = None,
                tables: Annotated[str | None, typer.Option(help="comma-separated table names (default all)")] = None,
                expires_in_days: Annotated[float | None, typer.Option(help="days until the version expires")] = None,
                scheduler: Annotated[str | None, typer.Option(
                    help="run on Dask: a scheduler address tcp://host:port, 'local' (a LocalCluster) or 'threads'; "
                         "default: in this process")] = None):
    """Freeze a new materialization version of the datastack at a timestamp (annotations bound to root ids)."""
    ds = open_lake(lake)[datastack]
    with Bar() as bar:
        v = ds.versions.create(timestamp, tables=parse_csv(tables), expires_in=expires_in_days, progress=bar,
                               scheduler=scheduler)
    echo_json(pick(v, (*VERSION_KEYS, "tables", "path")))


@app.command("list")
def v_list(datastack: DsOpt, lake: LakeOpt = None,
           expired: Annotated[bool, typer.Option(help="include expired versions")] = False):
    """Versions (valid only unless --expired)."""
    echo_json([pick(v, VERSION_KEYS) for v in open_lake(lake)[datastack].versions.list(expired=expired)])


@app.command("show")
def v_show(datastack: DsOpt, version: int, lake: LakeOpt = None):
    """Metadata of VERSION."""
    echo_json(open_lake(lake)[datastack].versions.get(version))


@app.command("expire")
def v_expire(datastack: DsOpt, version: int, lake: LakeOpt = None,
             force: Annotated[bool, typer.Option("--force", help="expire even if production query runs pinned it "
                                                 "(they become irreproducible)")] = False):
    """Expire VERSION (never the newest valid one; one pinned by production query runs only with --force)."""
    v = open_lake(lake)[datastack].versions.expire(version, force=force)
    if v.get("broken_runs"):
        say(f"warning: {len(v['broken_runs'])} production query run(s) can no longer be reproduced: "
            + ", ".join(v["broken_runs"]))
    echo_json(v)


@app.command("query")
def v_query(datastack: DsOpt, version: int, table: TableOpt,
            output: Annotated[Path, typer.Option("-o", "--output", help="out.parquet or out.csv")],
            lake: LakeOpt = None,
            root_id: Annotated[int | None, typer.Option(help="rows whose any *_root_id equals this")] = None):
    """Write the rows of a table in VERSION to a Parquet or CSV file."""
    if output.suffix not in (".csv", ".parquet"):
        raise InvalidArgument(f"output {output.name!r} must end in .parquet or .csv", field="output")
    import pandas as pd

    df = open_lake(lake)[datastack].versions.query(table, version=version).df()
    if root_id is not None:
        cols = [c for c in df.columns if c.endswith("_root_id")]
        df = df[pd.concat([df[c] == root_id for c in cols], axis=1).any(axis=1)] if cols else df.iloc[:0]
    if output.suffix == ".csv":
        df.to_csv(output, index=False)
    else:
        df.to_parquet(output, index=False)
    say(f"wrote {len(df)} rows to {output}")
