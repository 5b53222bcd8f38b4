"""The ``neurolake`` command (Typer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from neurolake.errors import InvalidArgument, NeurolakeError

app = typer.Typer(help="neurolake: a lakehouse for connectomics.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)

LakeOpt = Annotated[Path, typer.Option("--lake", "-l", envvar="NEUROLAKE_LAKE", help="Lake folder.")]


def _triple(text: str | None, what: str, kind=float):
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        vals = tuple(kind(p) for p in parts)
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} must be three numbers like 4,4,40", field=what, value=text) from None
    if len(vals) != 3:
        raise InvalidArgument(f"{what} {text!r} must be three numbers like 4,4,40", field=what, value=text)
    return vals


def _range(text: str, axis: str) -> tuple[int, int]:
    from neurolake.server.deps import parse_range

    return parse_range(axis, text)


class _Bar:
    """A Rich progress bar fed by ``(phase, done, total)`` callbacks; silent when not on a terminal."""

    def __init__(self) -> None:
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, disable=not console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.p.add_task(phase, total=total)
        self.p.update(self.tasks[phase], completed=done, total=total)

    def __enter__(self):
        self.p.start()
        return self

    def __exit__(self, *exc):
        self.p.stop()


def _open(lake: Path, create: bool = False):
    from neurolake import open_lake

    return open_lake(lake, create=create)


def main() -> None:
    try:
        app()
    except NeurolakeError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        sys.exit(2)


@app.command()
def init(path: Path, database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the catalog")] = None):
    """Create a lake (a folder + its catalog database)."""
    from neurolake import init_lake

    lake = init_lake(path, database_url=database_url)
    console.print(f"lake ready at {lake.root} (catalog {lake.catalog.engine.url.render_as_string()})")


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Folder of TIFF/PNG slices, .tif, file.h5:/dataset, Zarr folder or .npy")],
    lake: LakeOpt,
    datastack: Annotated[str, typer.Option("--datastack", "-d")],
    layer: Annotated[str, typer.Option("--layer")],
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
    lk = _open(lake, create=True)
    with _Bar() as bar:
        la = lk.ingest(source, datastack, layer, voxel_size=_triple(voxel_size, "voxel size"), layer_type=type,
                       dtype=dtype, chunk=_triple(chunk, "chunk", int), shard=_triple(shard, "shard", int),
                       compression=compression, scheduler=scheduler, overwrite=overwrite, progress=bar,
                       say=console.print)
    console.print(f"ingested {la!r}")


@app.command()
def info(lake: LakeOpt, datastack: Annotated[str | None, typer.Argument()] = None,
         layer: Annotated[str | None, typer.Argument()] = None):
    """Show datastacks, one datastack, or one layer (JSON)."""
    lk = _open(lake)
    if datastack is None:
        out = lk.datastacks()
    elif layer is None:
        out = lk.datastack(datastack)
    else:
        out = lk.layer(datastack, layer).info()
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command()
def cutout(
    lake: LakeOpt,
    datastack: Annotated[str, typer.Argument()],
    layer: Annotated[str, typer.Argument()],
    x: Annotated[str, typer.Option(help="x0,x1 voxels")],
    y: Annotated[str, typer.Option(help="y0,y1 voxels")],
    z: Annotated[str, typer.Option(help="z0,z1 voxels")],
    output: Annotated[Path, typer.Option("-o", "--output", help="out.npy or out.tif (axes z, y, x)")],
    mip: int = 0,
):
    """Write a cutout to a .npy or multi-page .tif file (axes z, y, x)."""
    import numpy as np

    suffix = output.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise InvalidArgument(f"output {output.name!r} must end in .npy, .tif or .tiff", field="output")
    arr = _open(lake).layer(datastack, layer).cutout(_range(x, "x"), _range(y, "y"), _range(z, "z"), mip=mip)
    if suffix == ".npy":
        np.save(output, arr)
    else:
        import tifffile

        tifffile.imwrite(output, arr)
    console.print(f"wrote {output} shape (z, y, x) = {arr.shape} {arr.dtype}")


@app.command()
def serve(lake: LakeOpt, host: str = "127.0.0.1", port: int = 8000,
          log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
          auth: Annotated[bool, typer.Option("--auth", help="require an API token on every route")] = False):
    """Serve the lake over HTTP (OCP cutouts, JSON API, docs at /docs)."""
    import uvicorn

    from neurolake.server import create_app

    app_ = create_app(_open(lake), auth=auth)
    console.print(f"serving {lake} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


@app.command()
def demo(
    lake: Annotated[Path, typer.Option("--lake", "-l", help="Lake folder for the demo")] = Path("demo-lake"),
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="serve after ingesting")] = True,
    host: str = "127.0.0.1",
    port: int = 8000,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, or 'threads'")] = None,
):
    """Ingest the shipped real EM data (Gerhard et al. 2013, gala FIB-SEM), build pyramids and serve."""
    from neurolake.demo import example_urls, run_demo

    lk = _open(lake, create=True)
    with _Bar() as bar:
        run_demo(lk, console.print, scheduler=scheduler, progress=bar)
    base = f"http://{host}:{port}"
    console.print("\n[bold]Try:[/bold]")
    for label, url in example_urls(base):
        console.print(f"  {label:20s} {url}")
    if serve_:
        serve(lake=lake, host=host, port=port)


from neurolake.catalog.cli import register_commands  # noqa: E402  (features, users, tokens, usage, audit)

register_commands(app)

from neurolake.annotations.cli import app as _annotations_app  # noqa: E402

app.add_typer(_annotations_app, name="annotations")

from neurolake.proofreading import cli as _pr_cli  # noqa: E402  (issue 5: proofreading, versions, connectome)

app.add_typer(_pr_cli.proofread_app, name="proofread")
app.add_typer(_pr_cli.segment_app, name="segment")
app.add_typer(_pr_cli.versions_app, name="versions")
app.add_typer(_pr_cli.connectome_app, name="connectome")
app.command("materialize")(_pr_cli.materialize_cmd)


if __name__ == "__main__":
    main()
