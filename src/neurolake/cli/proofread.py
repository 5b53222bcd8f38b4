"""``neurolake proofread …``: make a datastack proofreadable, edit it (merge, split, undo, redo,
rollback) and look it up (roots, leaves, lineage, log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import AuthorOpt, DsOpt, LakeOpt, echo_json, open_lake, parse_ids

app = typer.Typer(help="Proofread a datastack's segmentation: merge, split, undo, lookups, lineage.",
                  no_args_is_help=True)

RootsOpt = Annotated[str | None, typer.Option(help="root ids the edit is based on, comma-separated (409 if stale)")]


def _seg(lake, datastack: str):
    return open_lake(lake)[datastack].segmentation


@app.command("init")
def pr_init(datastack: DsOpt, lake: LakeOpt = None,
            layer: Annotated[str | None, typer.Option(help="supervoxel layer")] = None,
            boundary_layer: Annotated[str | None, typer.Option(help="boundary map for affinities")] = None,
            agglomeration: Annotated[str | None, typer.Option(help="each | threshold | edges | mapping")] = None,
            threshold: float = 0.5,
            mapping: Annotated[Path | None, typer.Option(help="CSV supervoxel_id,object")] = None,
            overwrite: bool = False):
    """Make the datastack proofreadable from its supervoxel layer (RAG + initial agglomeration)."""
    m = None
    if mapping is not None:
        import pandas as pd

        m = pd.read_csv(mapping)
    seg = open_lake(lake)[datastack].create_segmentation(
        layer=layer, boundary_layer=boundary_layer, agglomeration=agglomeration, threshold=threshold, mapping=m,
        overwrite=overwrite)
    echo_json(seg.info())


@app.command("info")
def pr_info(datastack: DsOpt, lake: LakeOpt = None):
    """Supervoxel layer, counts and number of operations."""
    echo_json(_seg(lake, datastack).info())


@app.command("merge")
def pr_merge(datastack: DsOpt, sv_a: int, sv_b: int, lake: LakeOpt = None, author: AuthorOpt = None,
             roots: RootsOpt = None):
    """Merge the roots of supervoxels SV_A and SV_B."""
    echo_json(_seg(lake, datastack).merge(sv_a, sv_b, author=author,
                                          roots=parse_ids(roots, "roots") if roots else None))


@app.command("split")
def pr_split(datastack: DsOpt,
             sources: Annotated[str, typer.Option(help="source supervoxel ids, comma-separated")],
             sinks: Annotated[str, typer.Option(help="sink supervoxel ids, comma-separated")],
             lake: LakeOpt = None, author: AuthorOpt = None, roots: RootsOpt = None):
    """Split a root by a minimum cut between sources and sinks."""
    echo_json(_seg(lake, datastack).split(parse_ids(sources, "sources"), parse_ids(sinks, "sinks"), author=author,
                                          roots=parse_ids(roots, "roots") if roots else None))


@app.command("undo")
def pr_undo(datastack: DsOpt, operation_id: int, lake: LakeOpt = None, author: AuthorOpt = None):
    """Undo operation OPERATION_ID."""
    echo_json(_seg(lake, datastack).undo(operation_id, author=author))


@app.command("redo")
def pr_redo(datastack: DsOpt, operation_id: int, lake: LakeOpt = None, author: AuthorOpt = None):
    """Redo the undone operation OPERATION_ID."""
    echo_json(_seg(lake, datastack).redo(operation_id, author=author))


@app.command("rollback")
def pr_rollback(datastack: DsOpt, user: str,
                since: Annotated[str, typer.Option(help="ISO time: revert USER's edits made since then")],
                lake: LakeOpt = None, author: AuthorOpt = None):
    """Revert all edits of USER since a time (one operation)."""
    echo_json(_seg(lake, datastack).rollback(user, since, author=author))


@app.command("log")
def pr_log(datastack: DsOpt, lake: LakeOpt = None,
           author: Annotated[str | None, typer.Option(help="only this author's operations")] = None,
           since: Annotated[str | None, typer.Option(help="ISO time: only operations since then")] = None):
    """The edit log (JSON)."""
    echo_json(_seg(lake, datastack).operations(author=author, since=since))


@app.command("roots")
def pr_roots(datastack: DsOpt, supervoxels: str, lake: LakeOpt = None,
             timestamp: Annotated[str | None, typer.Option(help="ISO time (default now)")] = None):
    """Root ids of SUPERVOXELS (comma-separated) at a time."""
    svs = parse_ids(supervoxels, "supervoxels")
    roots = _seg(lake, datastack).roots(svs, timestamp)
    echo_json({str(s): int(r) for s, r in zip(svs, roots, strict=True)})


@app.command("leaves")
def pr_leaves(datastack: DsOpt, root_id: int, lake: LakeOpt = None):
    """Supervoxels of ROOT_ID."""
    echo_json([int(x) for x in _seg(lake, datastack).leaves(root_id)])


@app.command("lineage")
def pr_lineage(datastack: DsOpt, root_id: int, lake: LakeOpt = None):
    """Lineage graph of ROOT_ID (node-link JSON) and its latest roots."""
    seg = _seg(lake, datastack)
    echo_json({"root": seg.root_info(root_id), "latest_roots": [int(r) for r in seg.latest_roots(root_id)],
               "lineage": seg.lineage([root_id])})
