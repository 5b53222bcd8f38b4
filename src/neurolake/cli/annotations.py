"""``neurolake annotations …``: create, load, detect, query, history, delete and vacuum of annotation tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import (
    DsOpt,
    LakeOpt,
    TableOpt,
    echo_json,
    open_lake,
    parse_ids,
    parse_pairs,
    parse_triple,
    say,
)
from neurolake.errors import InvalidArgument

app = typer.Typer(help="Annotation tables: synapses, cell types, nuclei, tags.", no_args_is_help=True)


def _table(lake, datastack: str, table: str):
    return open_lake(lake)[datastack].table(table)


@app.command("list")
def list_cmd(datastack: DsOpt, lake: LakeOpt = None):
    """List the annotation tables of a datastack (JSON metadata)."""
    ds = open_lake(lake)[datastack]
    echo_json([ds.table(n).metadata() for n in ds.tables()])


@app.command()
def create(datastack: DsOpt, table: TableOpt,
           schema: Annotated[str, typer.Option(help="synapse, cell_type, nucleus, bound_tag, point, line, box")],
           lake: LakeOpt = None,
           voxel_size: Annotated[str | None, typer.Option(help="x,y,z nm per voxel of positions (default: the datastack's)")] = None,
           prop: Annotated[list[str] | None, typer.Option("--property", help="extra column name:type")] = None,
           segmentation_layer: Annotated[str | None, typer.Option(help="layer for supervoxel lookup")] = None,
           optional_point: Annotated[list[str] | None, typer.Option(help="a point that may be empty")] = None,
           description: str = ""):
    """Create an empty annotation table."""
    vr = parse_triple(voxel_size, "voxel size")
    t = open_lake(lake)[datastack].create_table(
        table, schema, description=description, voxel_size_nm=list(vr) if vr else None,
        properties=parse_pairs(prop, "property", ":"), segmentation_layer=segmentation_layer,
        optional_points=optional_point or ())
    say(f"created {t!r}")


@app.command()
def load(file: Annotated[Path, typer.Argument(help="CSV/TSV (.gz), Parquet or Arrow IPC file")],
         datastack: DsOpt, table: TableOpt, lake: LakeOpt = None,
         rename: Annotated[list[str] | None, typer.Option(help="rename a file column: old=new")] = None,
         batch_rows: Annotated[int, typer.Option(help="rows per validated batch")] = 262_144,
         bind: Annotated[bool, typer.Option(help="look up supervoxels")] = True):
    """Load a file into a table as ONE commit: a bad row or a truncated file leaves the table unchanged."""
    import time

    from neurolake.annotations.io import read_batches

    t = _table(lake, datastack, table)
    t0 = time.perf_counter()
    ids = t.append_stream(read_batches(file, batch_rows, parse_pairs(rename, "rename", "=")), bind=bind)
    dt = time.perf_counter() - t0
    say(f"loaded {len(ids)} rows into {datastack}/{table} in {dt:.2f} s "
        f"({len(ids) / dt if dt else 0:,.0f} rows/s); version {t.version}")


@app.command()
def detect(datastack: DsOpt,
           mask: Annotated[str, typer.Option(help="label layer holding the synapse mask")],
           value: Annotated[int, typer.Option(help="label value of synapse voxels")],
           lake: LakeOpt = None,
           table: Annotated[str, typer.Option("--table", "-t", help="Annotation table name.")] = "synapses",
           mip: int = 0, connectivity: int = 26,
           min_size: Annotated[int, typer.Option(help="smallest component kept (voxels)")] = 1,
           segmentation_layer: Annotated[str | None, typer.Option(help="layer for supervoxel lookup")] = None,
           append: Annotated[bool, typer.Option(
               help="add the rows to a table that holds another derivation")] = False,
           overwrite: Annotated[bool, typer.Option(
               help="replace the rows of earlier derivations (soft-deleted, one commit)")] = False,
           replace: Annotated[bool, typer.Option(hidden=True, help="old name of --overwrite")] = False):
    """Turn a label mask into a synapse table (3-D connected components → centroid, size, bbox).

    Idempotent: running it again with the same inputs and parameters does nothing; other parameters
    (or a re-ingested layer) are refused unless --append or --overwrite."""
    from neurolake.annotations.detect import detect_synapses

    t = detect_synapses(open_lake(lake), datastack, mask, value, table, mip=mip, connectivity=connectivity,
                        min_size=min_size, segmentation_layer=segmentation_layer, append=append,
                        overwrite=overwrite or replace, say=say)
    say(f"{t.count()} synapses in {datastack}/{table} (version {t.version})")


@app.command()
def query(datastack: DsOpt, table: TableOpt, lake: LakeOpt = None,
          bbox: Annotated[str | None, typer.Option(help="x0,y0,z0,x1,y1,z1")] = None,
          units: Annotated[str, typer.Option(help="bbox units: nm or voxels")] = "nm",
          ids: Annotated[str | None, typer.Option(help="comma-separated ids")] = None,
          filter: Annotated[list[str] | None, typer.Option(help="column=value")] = None,
          timestamp: Annotated[str | None, typer.Option(help="ISO time: rows valid then")] = None,
          output: Annotated[Path | None, typer.Option("-o", "--output", help=".parquet or .csv (else print)")] = None):
    """Query a table; writes Parquet/CSV or prints CSV."""
    box = None
    if bbox:
        try:
            vals = [float(v) for v in bbox.split(",")]
        except ValueError:
            vals = []
        if len(vals) != 6:
            raise InvalidArgument(f"bbox {bbox!r} must be 6 numbers", field="bbox", value=bbox)
        box = [vals[:3], vals[3:]]
    df = _table(lake, datastack, table).query(
        bbox=box, units=units, ids=parse_ids(ids, "ids") if ids else None,
        filters=parse_pairs(filter, "filter", "=") or None, timestamp=timestamp).df()
    if output is None:
        df.to_csv(sys.stdout, index=False)
    elif output.suffix == ".parquet":
        df.to_parquet(output)
        say(f"wrote {len(df)} rows to {output}")
    else:
        df.to_csv(output, index=False)
        say(f"wrote {len(df)} rows to {output}")


@app.command()
def history(datastack: DsOpt, table: TableOpt, lake: LakeOpt = None):
    """Commits of a table, newest first (JSON)."""
    echo_json(_table(lake, datastack, table).history())


@app.command()
def delete(datastack: DsOpt, table: TableOpt, ids: Annotated[str, typer.Option(help="comma-separated ids")],
           lake: LakeOpt = None):
    """Soft-delete rows (they stay readable at earlier timestamps)."""
    n = _table(lake, datastack, table).delete(parse_ids(ids, "ids"))
    say(f"deleted {n} rows")


@app.command()
def vacuum(datastack: DsOpt, table: TableOpt, lake: LakeOpt = None,
           retention_hours: Annotated[float, typer.Option(
               help="keep files that versions of the last H hours still reference")] = 168,
           force: Annotated[bool, typer.Option(
               "--force", help="vacuum even files of versions production query runs pinned")] = False,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="list the files, delete nothing")] = False):
    """Delete old Parquet files of a table (time travel to versions older than the retention stops working).

    Refused when it would delete files of a Delta version a production query run pinned, unless --force."""
    out = _table(lake, datastack, table).vacuum(retention_hours, force=force, dry_run=dry_run)
    if out["broken_runs"]:
        what = "would no longer" if dry_run else "can no longer"
        say(f"warning: {len(out['broken_runs'])} production query run(s) {what} be reproduced: "
            + ", ".join(out["broken_runs"]))
    echo_json(out)
