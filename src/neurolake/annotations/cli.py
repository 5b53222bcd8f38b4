"""``neurolake annotations …``: create, load, detect, query, update history of annotation tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from neurolake.errors import InvalidArgument

app = typer.Typer(help="Annotation tables: synapses, cell types, nuclei, tags.", no_args_is_help=True)

LakeOpt = Annotated[Path, typer.Option("--lake", "-l", envvar="NEUROLAKE_LAKE", help="Lake folder.")]
DsOpt = Annotated[str, typer.Option("--datastack", "-d", help="Datastack name.")]
TableOpt = Annotated[str, typer.Option("--table", "-t", help="Annotation table name.")]


def _open(lake: Path):
    from neurolake import open_lake

    return open_lake(lake)


def _say(msg: str) -> None:
    from neurolake.cli import console

    console.print(msg)


def _pairs(items: list[str] | None, what: str, sep: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if sep not in item:
            raise InvalidArgument(f"{what} {item!r} must look like a{sep}b", field=what, value=item)
        a, b = item.split(sep, 1)
        out[a.strip()] = b.strip()
    return out


def _triple(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3:
        raise InvalidArgument(f"voxel resolution {text!r} must be three numbers like 8,8,8 (x, y, z nm)",
                              field="voxel_resolution", value=text)
    return vals


@app.command("list")
def list_cmd(lake: LakeOpt, datastack: DsOpt):
    """List the annotation tables of a datastack (JSON metadata)."""
    from neurolake.annotations import get_table, list_tables

    lk = _open(lake)
    typer.echo(json.dumps([get_table(lk, datastack, n).metadata() for n in list_tables(lk, datastack)], indent=2))


@app.command()
def create(lake: LakeOpt, datastack: DsOpt, table: TableOpt,
           schema: Annotated[str, typer.Option(help="synapse, cell_type, nucleus, bound_tag, point, line, box")],
           voxel_resolution: Annotated[str | None, typer.Option(help="x,y,z nm per voxel of positions")] = None,
           prop: Annotated[list[str] | None, typer.Option("--property", help="extra column name:type")] = None,
           segmentation_layer: Annotated[str | None, typer.Option(help="layer for supervoxel lookup")] = None,
           optional_point: Annotated[list[str] | None, typer.Option(help="a point that may be empty")] = None,
           description: str = ""):
    """Create an empty annotation table."""
    from neurolake.annotations import create_table

    t = create_table(_open(lake), datastack, table, schema, description=description,
                     voxel_resolution=_triple(voxel_resolution), properties=_pairs(prop, "property", ":"),
                     segmentation_layer=segmentation_layer, optional_points=optional_point or ())
    _say(f"created {t!r}")


@app.command()
def load(file: Annotated[Path, typer.Argument(help="CSV/TSV (.gz), Parquet or Arrow IPC file")],
         lake: LakeOpt, datastack: DsOpt, table: TableOpt,
         rename: Annotated[list[str] | None, typer.Option(help="rename a file column: old=new")] = None,
         batch_rows: Annotated[int, typer.Option(help="rows per validated batch")] = 262_144,
         bind: Annotated[bool, typer.Option(help="look up supervoxels")] = True):
    """Load a file into a table as ONE commit: a bad row or a truncated file leaves the table unchanged."""
    import time

    from neurolake.annotations import get_table
    from neurolake.annotations.io import read_batches

    t = get_table(_open(lake), datastack, table)
    t0 = time.perf_counter()
    ids = t.append_stream(read_batches(file, batch_rows, _pairs(rename, "rename", "=")), bind=bind)
    dt = time.perf_counter() - t0
    _say(f"loaded {len(ids)} rows into {datastack}/{table} in {dt:.2f} s "
         f"({len(ids) / dt if dt else 0:,.0f} rows/s); version {t.version}")


@app.command()
def detect(lake: LakeOpt, datastack: DsOpt,
           mask: Annotated[str, typer.Option(help="label layer holding the synapse mask")],
           value: Annotated[int, typer.Option(help="label value of synapse voxels")],
           table: Annotated[str, typer.Option("--table", "-t")] = "synapses",
           mip: int = 0, connectivity: int = 26,
           min_size: Annotated[int, typer.Option(help="smallest component kept (voxels)")] = 1,
           segmentation_layer: Annotated[str | None, typer.Option(help="layer for supervoxel lookup")] = None,
           replace: Annotated[bool, typer.Option(help="soft-delete the table's current rows first")] = False):
    """Turn a label mask into a synapse table (3-D connected components → centroid, size, bbox)."""
    from neurolake.annotations.detect import detect_synapses

    t = detect_synapses(_open(lake), datastack, mask, value, table, mip=mip, connectivity=connectivity,
                        min_size=min_size, segmentation_layer=segmentation_layer, replace=replace)
    _say(f"{t.count()} synapses in {datastack}/{table} (version {t.version})")


@app.command()
def query(lake: LakeOpt, datastack: DsOpt, table: TableOpt,
          bbox: Annotated[str | None, typer.Option(help="x0,y0,z0,x1,y1,z1")] = None,
          units: Annotated[str, typer.Option(help="bbox units: nm or voxels")] = "nm",
          ids: Annotated[str | None, typer.Option(help="comma-separated ids")] = None,
          filter: Annotated[list[str] | None, typer.Option(help="column=value")] = None,
          timestamp: Annotated[str | None, typer.Option(help="ISO time: rows valid then")] = None,
          output: Annotated[Path | None, typer.Option("-o", "--output", help=".parquet or .csv (else print)")] = None):
    """Query a table; writes Parquet/CSV or prints CSV."""
    from neurolake.annotations import get_table

    box = None
    if bbox:
        vals = [float(v) for v in bbox.split(",")]
        if len(vals) != 6:
            raise InvalidArgument(f"bbox {bbox!r} must be 6 numbers", field="bbox", value=bbox)
        box = [vals[:3], vals[3:]]
    df = get_table(_open(lake), datastack, table).query(
        bbox=box, units=units, ids=[int(i) for i in ids.split(",")] if ids else None,
        filters=_pairs(filter, "filter", "=") or None, timestamp=timestamp)
    if output is None:
        df.to_csv(sys.stdout, index=False)
    elif output.suffix == ".parquet":
        df.to_parquet(output)
        _say(f"wrote {len(df)} rows to {output}")
    else:
        df.to_csv(output, index=False)
        _say(f"wrote {len(df)} rows to {output}")


@app.command()
def history(lake: LakeOpt, datastack: DsOpt, table: TableOpt):
    """Commits of a table, newest first (JSON)."""
    from neurolake.annotations import get_table

    typer.echo(json.dumps(get_table(_open(lake), datastack, table).history(), indent=2))


@app.command()
def delete(lake: LakeOpt, datastack: DsOpt, table: TableOpt,
           ids: Annotated[str, typer.Option(help="comma-separated ids")]):
    """Soft-delete rows (they stay readable at earlier timestamps)."""
    from neurolake.annotations import get_table

    n = get_table(_open(lake), datastack, table).delete([int(i) for i in ids.split(",")])
    _say(f"deleted {n} rows")
