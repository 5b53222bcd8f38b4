"""``neurolake serve | demo``: the HTTP server and the demo on the shipped data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import Bar, LakeOpt, lake_path, open_lake, say


def serve(lake: LakeOpt = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
          auth: Annotated[bool, typer.Option("--auth", help="require an API token on every route")] = False):
    """Serve the lake over HTTP (OCP cutouts, JSON API, docs at /docs)."""
    import uvicorn

    from neurolake.server import create_app

    lk = open_lake(lake)
    app_ = create_app(lk, auth=auth)
    from neurolake.web import warm_up

    warm_up()  # the explorers' libraries, before the first request
    say(f"serving {lk.root} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


DEMO_LAKE = Path("demo-lake")


def demo(
    lake: Annotated[Path | None, typer.Option(
        "--lake", "-l", envvar="NEUROLAKE_LAKE", show_default=False,
        help="Lake folder (default: $NEUROLAKE_LAKE, else ./demo-lake, created if missing).")] = None,
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="serve after ingesting")] = True,
    host: str = "127.0.0.1",
    port: int = 8000,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, or 'threads'")] = None,
):
    """Ingest the shipped real EM data (Gerhard et al. 2013, gala FIB-SEM), build pyramids and serve."""
    from neurolake.demo import example_urls, run_demo

    path = lake_path(lake) if lake is not None else DEMO_LAKE
    lk = open_lake(path, create=True)
    with Bar() as bar:
        run_demo(lk, say, scheduler=scheduler, progress=bar)
    base = f"http://{host}:{port}"
    say("\n[bold]Try:[/bold]")
    for label, url in example_urls(base):
        say(f"  {label:20s} {url}")
    if serve_:
        serve(lake=path, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``demo`` to the ``neurolake`` command."""
    app.command()(serve)
    app.command()(demo)
