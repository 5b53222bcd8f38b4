"""``neurolake serve | demo``: the HTTP server and the demo on the shipped data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import Bar, LakeOpt, lake_path, open_lake, say

ENV_LAKE = "NEUROLAKE_LAKE"  # read by neurolake.server.app.app_from_env in each worker process
ENV_AUTH = "NEUROLAKE_SERVE_AUTH"


def serve(lake: LakeOpt = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
          auth: Annotated[bool, typer.Option("--auth", help="require an API token on every route")] = False,
          workers: Annotated[int, typer.Option(
              "--workers", min=1, help="server processes sharing the port (> 1 needs the catalog on PostgreSQL)")] = 1):
    """Serve the lake over HTTP (OCP cutouts, JSON API, docs at /docs).

    ``--workers N`` (N > 1) starts N uvicorn worker processes, each with its own open lake
    (:func:`neurolake.server.app.app_from_env`); they share what the catalog and the lake folder hold
    (quotas, grants, edits, layer generations). Raises InvalidArgument when N > 1 on a SQLite catalog.
    """
    import uvicorn

    lk = open_lake(lake)
    if workers > 1:
        import os

        from neurolake.errors import InvalidArgument

        if lk.catalog.engine.dialect.name == "sqlite":
            raise InvalidArgument("--workers > 1 needs the catalog on PostgreSQL (NEUROLAKE_DATABASE_URL); "
                                  "a SQLite catalog is served by one process", field="workers", value=workers)
        os.environ[ENV_LAKE] = str(lk.root)  # the worker processes (spawned) inherit these
        os.environ[ENV_AUTH] = "1" if auth else "0"
        say(f"serving {lk.root} on http://{host}:{port} with {workers} worker processes "
            f"(docs: http://{host}:{port}/docs)")
        lk.close()
        uvicorn.run("neurolake.server.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level)
        return
    from neurolake.server import create_app

    app_ = create_app(lk, auth=auth)
    from neurolake.web import warm_up

    warm_up()  # the explorers' libraries, before the first request
    say(f"serving {lk.root} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


DEMO_LAKE = Path("demo-lake")


def demo(
    lake: Annotated[str | None, typer.Option(
        "--lake", "-l", envvar="NEUROLAKE_LAKE", show_default=False,
        help="Lake folder or s3://bucket/prefix (its catalog: $NEUROLAKE_DATABASE_URL) (default: $NEUROLAKE_LAKE, "
             "else ./demo-lake, created if missing).")] = None,
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
