"""``neurolake skeleton build|swc|table``: skeletons of segmentation layers (:mod:`neurolake.skeletons`,
docs/skeletons.md).

``build`` skeletonizes a whole layer with kimimaro on Dask (progress bar, provenance); run again with the same
parameters it does nothing, with other parameters it is refused unless ``--overwrite``. ``swc`` writes SWC files,
``table`` prints the skeleton table (cable length, branch points … per segment). The layer is ``--layer``
(``-l`` is the lake, as in every command).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import Bar, DsOpt, LakeOpt, echo_json, open_lake, parse_ids, say
from neurolake.errors import InvalidArgument

app = typer.Typer(help="Skeletons of segmentation layers: build (kimimaro on Dask), swc, table.",
                  no_args_is_help=True)

LayerOpt = Annotated[str, typer.Option("--layer", help="Segmentation layer name.")]


@app.command("build")
def build(datastack: DsOpt, layer: LayerOpt, lake: LakeOpt = None,
          mip: Annotated[int, typer.Option(help="mip to skeletonize")] = 0,
          dust_threshold: Annotated[int, typer.Option(help="segments with fewer voxels (at the mip) get no skeleton")]
          = 1000,
          teasar: Annotated[str | None, typer.Option(
              help='TEASAR parameters as JSON (nm), e.g. \'{"scale": 4, "const": 500}\' (kimimaro defaults otherwise)')]
          = None,
          fix_branching: bool = True, fix_borders: bool = True, fill_holes: bool = False, fix_avocados: bool = False,
          ids_per_task: Annotated[int, typer.Option(help="segments per Dask task at most")] = 16,
          overwrite: Annotated[bool, typer.Option(help="replace skeletons made differently")] = False,
          scheduler: Annotated[str | None, typer.Option(
              "--scheduler", help="threads (default), local (a LocalCluster) or tcp://host:port")] = "threads",
          as_json: Annotated[bool, typer.Option("--json", help="print the provenance record as JSON")] = False) -> None:
    """Skeletonize every segment of a segmentation layer (kimimaro), store precomputed skeletons and the table."""
    from neurolake.skeletons import skeletonize_layer

    try:
        tp = json.loads(teasar) if teasar else None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--teasar is not JSON: {exc}", field="teasar", value=teasar) from None
    if tp is not None and not isinstance(tp, dict):
        raise InvalidArgument("--teasar must be a JSON object of TEASAR parameters", field="teasar", value=teasar)
    lk = open_lake(lake)
    with Bar() as bar:
        prov = skeletonize_layer(lk, datastack, layer, mip=mip, teasar_params=tp, dust_threshold=dust_threshold,
                                 fix_branching=fix_branching, fix_borders=fix_borders, fill_holes=fill_holes,
                                 fix_avocados=fix_avocados, ids_per_task=ids_per_task, overwrite=overwrite,
                                 scheduler=scheduler, progress=bar, say=None if as_json else say)
    if as_json:
        echo_json(prov)


@app.command("swc")
def swc(datastack: DsOpt, layer: LayerOpt,
        ids: Annotated[str, typer.Argument(help="segment ids, comma-separated")],
        lake: LakeOpt = None,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="file (one id) or folder (<id>.swc each); default: print one id's SWC")] = None
        ) -> None:
    """Export skeletons as SWC (nm)."""
    from neurolake.skeletons import swc as to_swc

    lk = open_lake(lake)
    seg_ids = parse_ids(ids, "ids")
    if output is None:
        if len(seg_ids) != 1:
            raise InvalidArgument("several ids need --output FOLDER", field="output")
        typer.echo(to_swc(lk, datastack, layer, seg_ids[0]), nl=False)
        return
    if len(seg_ids) == 1 and output.suffix == ".swc":
        output.write_text(to_swc(lk, datastack, layer, seg_ids[0]))
        say(f"wrote {output}")
        return
    output.mkdir(parents=True, exist_ok=True)
    for sid in seg_ids:
        (output / f"{sid}.swc").write_text(to_swc(lk, datastack, layer, sid))
    say(f"wrote {len(seg_ids)} SWC files to {output}")


@app.command("table")
def table(datastack: DsOpt, layer: LayerOpt, lake: LakeOpt = None,
          version: Annotated[int | None, typer.Option(help="Delta version (default: newest)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False) -> None:
    """Print the skeleton table (one row per skeleton; SQL: DS.skeletons.LAYER)."""
    from neurolake.skeletons import skeleton_table

    tab = skeleton_table(open_lake(lake), datastack, layer, version)
    if as_json:
        echo_json(tab.to_pylist())
    else:
        typer.echo(tab.to_pandas().to_string(index=False))
