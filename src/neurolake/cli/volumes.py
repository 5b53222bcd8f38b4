"""``neurolake init | ingest | info | cutout | repair``: lakes, datastacks and volume layers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from neurolake.cli._common import (
    VERSION_KEYS,
    Bar,
    DsOpt,
    LakeOpt,
    echo_json,
    lake_path,
    open_lake,
    parse_range,
    parse_triple,
    pick,
    say,
)
from neurolake.errors import InvalidArgument

LayerOpt = Annotated[str, typer.Option("--layer", help="Layer name.")]


def init(location: Annotated[str | None, typer.Argument(
             help="folder or s3://bucket/prefix of the new lake (default: --lake)", show_default=False)] = None,
         lake: LakeOpt = None,
         database_url: Annotated[str | None, typer.Option(
             help="SQLAlchemy URL of the catalog (an s3:// lake needs PostgreSQL; default $NEUROLAKE_DATABASE_URL, "
                  "else SQLite in the lake folder)")] = None):
    """Create a lake: a folder, or an s3://bucket/prefix with its catalog on PostgreSQL, plus its catalog
    database (default: --lake, else the current folder)."""
    from neurolake import init_lake

    lk = init_lake(lake_path(location or lake), database_url=database_url)
    try:
        say(f"lake ready at {lk.root} (catalog {lk.catalog.engine.url.render_as_string()})")
    finally:
        lk.close()


def ingest(
    source: Annotated[str, typer.Argument(help="Folder of TIFF/PNG slices, .tif, file.h5:/dataset, Zarr folder or .npy")],
    datastack: DsOpt,
    layer: LayerOpt,
    lake: LakeOpt = None,
    voxel_size: Annotated[str | None, typer.Option(help="x,y,z nm at mip 0 (required for a new datastack)")] = None,
    type: Annotated[str, typer.Option("--type", help="image or segmentation")] = "image",
    dtype: Annotated[str | None, typer.Option(help="stored dtype (default: from the source)")] = None,
    chunk: Annotated[str | None, typer.Option(help="chunk shape z,y,x (default 16,128,128)")] = None,
    shard: Annotated[str | None, typer.Option(help="shard shape z,y,x (default 16,1024,1024)")] = None,
    compression: Annotated[str, typer.Option(help="zstd or blosc")] = "zstd",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, or 'threads'")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing layer")] = False,
):
    """Ingest a volume as a new layer (streams by slabs; resumes an interrupted ingest)."""
    lk = open_lake(lake, create=True)
    with Bar() as bar:
        la = lk.ingest(source, datastack, layer, voxel_size=parse_triple(voxel_size, "voxel size"), layer_type=type,
                       dtype=dtype, chunk=parse_triple(chunk, "chunk", int), shard=parse_triple(shard, "shard", int),
                       compression=compression, scheduler=scheduler, overwrite=overwrite, progress=bar, say=say)
    say(f"ingested {la!r}")


def datastack_overview(lk, name: str) -> dict[str, Any]:
    """Everything ``info -d`` shows: datastack metadata and layers, annotation tables with row counts,
    valid materialization versions and the proofreadable segmentation (None when there is none).
    Raises NotFound for an unknown datastack."""
    ds = lk[name]
    out = ds.info()
    tables = []
    for t in (ds.table(n) for n in ds.tables()):
        tables.append({"name": t.name, "schema": t.schema.name, "rows": t.count(), "description": t.description})
    out["tables"] = tables
    out["versions"] = [pick(v, VERSION_KEYS) for v in ds.versions.list()]
    out["segmentation"] = ds.segmentation.info() if ds.has_segmentation() else None
    return out


def info(lake: LakeOpt = None,
         datastack: Annotated[str | None, typer.Option("--datastack", "-d", help="Datastack name.")] = None,
         layer: Annotated[str | None, typer.Option("--layer", help="Layer name (needs --datastack).")] = None):
    """Show the lake's datastacks; with -d, one datastack (layers, annotation tables with row counts,
    materialization versions, proofreadable segmentation); with --layer, one layer (JSON)."""
    lk = open_lake(lake)
    if datastack is None:
        if layer is not None:
            raise InvalidArgument("--layer needs --datastack", field="layer", value=layer)
        out: Any = []
        for n in lk.datastacks():
            d = lk[n].info()
            out.append({"name": n, "description": d.get("description"), "voxel_size_nm": d.get("voxel_size_nm"),
                        "layers": [la["name"] for la in d.get("layers", [])], "tables": lk[n].tables()})
    elif layer is None:
        out = datastack_overview(lk, datastack)
    else:
        out = lk[datastack].layer(layer).info()
    echo_json(out)


def cutout(
    datastack: DsOpt,
    layer: LayerOpt,
    x: Annotated[str, typer.Option(help="x0,x1 voxels")],
    y: Annotated[str, typer.Option(help="y0,y1 voxels")],
    z: Annotated[str, typer.Option(help="z0,z1 voxels")],
    output: Annotated[Path, typer.Option("-o", "--output", help="out.npy or out.tif (axes z, y, x)")],
    lake: LakeOpt = None,
    mip: int = 0,
):
    """Write a cutout to a .npy or multi-page .tif file (axes z, y, x)."""
    import numpy as np

    suffix = output.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise InvalidArgument(f"output {output.name!r} must end in .npy, .tif or .tiff", field="output")
    arr = open_lake(lake)[datastack].layer(layer).cutout(parse_range(x, "x"), parse_range(y, "y"),
                                                         parse_range(z, "z"), mip=mip)
    if suffix == ".npy":
        np.save(output, arr)
    else:
        import tifffile

        tifffile.imwrite(output, arr)
    say(f"wrote {output} shape (z, y, x) = {arr.shape} {arr.dtype}")


def repair(lake: LakeOpt = None):
    """Finish the pyramid updates that killed writers left pending (coarser mips of their regions are
    recomputed from the finer ones); prints what was finished per layer (JSON)."""
    echo_json(open_lake(lake).repair())


def register(app: typer.Typer) -> None:
    """Add ``init``, ``ingest``, ``info``, ``cutout`` and ``repair`` to the ``neurolake`` command."""
    app.command()(init)
    app.command()(ingest)
    app.command()(info)
    app.command()(cutout)
    app.command()(repair)
