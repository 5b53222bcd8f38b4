"""The ``neurolake`` command (Typer): one module per command group.

=====================  ==========================================================
module                 commands
=====================  ==========================================================
``volumes``            ``init``, ``ingest``, ``info``, ``cutout``, ``repair``
``serve``              ``serve``, ``demo``
``annotations``        ``annotations create|load|detect|query|history|delete|list|vacuum``
``proofread``          ``proofread init|info|merge|split|undo|redo|rollback|log|roots|leaves|lineage``
``segment``            ``segment watershed``
``versions``           ``materialize``, ``versions list|show|expire|query``
``connectome``         ``connectome summary|partners|matrix|motifs|export``
``features``           ``features register|list|show|status|update|verify|url|crawl|delete``
``access``             ``users …``, ``tokens …``, ``usage``, ``audit``
``ephys``              ``ephys ingest|tables|show|plot``
``estimate``           ``estimate`` (storage and access cost), ``scale`` (a model at MICrONS/H01 scale)
``process``            ``process intensity|align|train|classify|supervoxels|agglomerate|initial-roots``, ``evaluate``
``skeletons``          ``skeleton build|swc|table``
``meshes``             ``mesh build|info|export``
``jobs``               ``jobs list|show``
=====================  ==========================================================

Every command takes the lake as ``--lake/-l`` (default ``$NEUROLAKE_LAKE``, else the current folder;
``demo`` defaults to ``./demo-lake``) and a datastack as ``--datastack/-d``. A
:class:`neurolake.errors.NeurolakeError` prints ``error (code): message`` on stderr and exits with
status 2 (see :func:`main`). Heavy libraries are imported inside the commands, so ``--help`` is fast.
"""

# no ``from __future__ import annotations`` here: it would shadow the ``annotations`` submodule
import typer

from neurolake.cli import (
    access,
    annotations,
    connectome,
    ephys,
    estimate,
    features,
    jobs,
    meshes,
    process,
    proofread,
    query,
    segment,
    serve,
    skeletons,
    versions,
    volumes,
)
from neurolake.cli._common import run

app = typer.Typer(help="neurolake: a lakehouse for connectomics.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

volumes.register(app)
serve.register(app)
app.add_typer(annotations.app, name="annotations")
app.add_typer(proofread.app, name="proofread")
app.add_typer(segment.app, name="segment")
app.command("materialize")(versions.materialize)
app.add_typer(versions.app, name="versions")
app.add_typer(connectome.app, name="connectome")
app.add_typer(features.app, name="features")
app.add_typer(ephys.app, name="ephys")
estimate.register(app)
app.add_typer(process.app, name="process")
app.add_typer(meshes.app, name="mesh")
app.add_typer(skeletons.app, name="skeleton")
app.command("evaluate")(process.evaluate)
access.register(app)
query.register(app)  # sql, explain, runs list|show, reproduce
app.add_typer(jobs.app, name="jobs")  # jobs list|show


def main() -> None:
    """Entry point of the ``neurolake`` script: run :data:`app`; NeurolakeError → ``error (code): message``, exit 2."""
    run(app)


__all__ = ["app", "main"]
