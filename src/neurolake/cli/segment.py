"""``neurolake segment …``: automated segmentation jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from neurolake.cli._common import Bar, DsOpt, LakeOpt, echo_json, open_lake, parse_ids, parse_range, say

app = typer.Typer(help="Automated segmentation jobs.", no_args_is_help=True)


@app.command("watershed")
def watershed(datastack: DsOpt,
              boundary_layer: Annotated[str, typer.Option(help="boundary map or label layer")],
              lake: LakeOpt = None,
              output: Annotated[str, typer.Option(help="name of the new supervoxel layer")] = "supervoxels",
              boundary_values: Annotated[str | None, typer.Option(
                  help="label values meaning boundary, e.g. 0,32,64,96,128; else a probability map")] = None,
              threshold: float = 0.5, min_distance: int = 8,
              x: Annotated[str | None, typer.Option(help="x0,x1 box in voxels (default all)")] = None,
              y: Annotated[str | None, typer.Option(help="y0,y1 box in voxels (default all)")] = None,
              z: Annotated[str | None, typer.Option(help="z0,z1 box in voxels (default all)")] = None,
              overwrite: Annotated[bool, typer.Option(
                  help="replace an output layer made differently (same inputs and parameters: recompute)")] = False,
              init: Annotated[bool, typer.Option(help="also make the datastack proofreadable from it")] = False,
              scheduler: Annotated[str | None, typer.Option(
                  help="Dask: threads (default), local (a LocalCluster) or tcp://host:port")] = "threads"):
    """Supervoxels by per-section seeded watershed of a boundary map (see neurolake.segment).

    Idempotent: an output layer made from the same inputs and parameters is kept as it is (nothing to do);
    one made differently is refused unless --overwrite."""
    from neurolake.segment import watershed_layer

    lk = open_lake(lake)
    with Bar() as bar:
        la = watershed_layer(lk, datastack, boundary_layer, output,
                             boundary_values=parse_ids(boundary_values, "boundary_values") if boundary_values else None,
                             threshold=threshold, min_distance=min_distance, overwrite=overwrite,
                             x=parse_range(x, "x"), y=parse_range(y, "y"), z=parse_range(z, "z"),
                             scheduler=scheduler, progress=bar, say=say)
    say(f"wrote {la!r}")
    if init:
        ds = lk[datastack]
        if not overwrite and ds.has_segmentation() and ds.segmentation.info().get("layer") == output:
            say(f"{datastack}: already proofreadable from layer {output}, nothing to do")
            return
        echo_json(ds.create_segmentation(layer=output, overwrite=overwrite).info())
