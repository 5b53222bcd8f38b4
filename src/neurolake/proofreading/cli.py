"""CLI groups: ``neurolake proofread …`` (edits and lookups), ``neurolake materialize DS``,
``neurolake versions …``, ``neurolake connectome …``, ``neurolake segment watershed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from neurolake.errors import InvalidArgument

LakeOpt = Annotated[Path, typer.Option("--lake", "-l", envvar="NEUROLAKE_LAKE", help="Lake folder.")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="who edits (default: NEUROLAKE_USER or login)")]

proofread_app = typer.Typer(help="Proofread a datastack's segmentation: merge, split, undo, lookups, lineage.",
                            no_args_is_help=True)
versions_app = typer.Typer(help="Materialization versions: list, show, expire, query.", no_args_is_help=True)
connectome_app = typer.Typer(help="The connectome of a materialization version.", no_args_is_help=True)
segment_app = typer.Typer(help="Automated segmentation jobs.", no_args_is_help=True)


def _lake(path: Path):
    from neurolake import open_lake

    return open_lake(path)


def _seg(lake: Path, ds: str):
    from neurolake.proofreading import segmentation

    return segmentation(_lake(lake), ds)


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _ids(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} must be comma-separated integer ids", field=what) from None


# -- proofread ------------------------------------------------------------------------------------
@proofread_app.command("init")
def pr_init(datastack: str, lake: LakeOpt,
            layer: Annotated[str | None, typer.Option(help="supervoxel layer")] = None,
            boundary_layer: Annotated[str | None, typer.Option(help="boundary map for affinities")] = None,
            agglomeration: Annotated[str | None, typer.Option(help="each | threshold | edges | mapping")] = None,
            threshold: float = 0.5,
            mapping: Annotated[Path | None, typer.Option(help="CSV supervoxel_id,object")] = None,
            overwrite: bool = False):
    """Make DATASTACK proofreadable from its supervoxel layer (RAG + initial agglomeration)."""
    from neurolake.proofreading import create_segmentation

    m = None
    if mapping is not None:
        import pandas as pd

        m = pd.read_csv(mapping)
    seg = create_segmentation(_lake(lake), datastack, layer=layer, boundary_layer=boundary_layer,
                              agglomeration=agglomeration, threshold=threshold, mapping=m, overwrite=overwrite)
    _echo(seg.info())


@proofread_app.command("info")
def pr_info(datastack: str, lake: LakeOpt):
    """Supervoxel layer, counts and number of operations."""
    _echo(_seg(lake, datastack).info())


@proofread_app.command("merge")
def pr_merge(datastack: str, sv_a: int, sv_b: int, lake: LakeOpt, author: AuthorOpt = None,
             roots: Annotated[str | None, typer.Option(help="root ids the edit is based on (409 if stale)")] = None):
    """Merge the roots of two supervoxels."""
    _echo(_seg(lake, datastack).merge(sv_a, sv_b, author=author, roots=_ids(roots, "roots") if roots else None))


@proofread_app.command("split")
def pr_split(datastack: str, lake: LakeOpt,
             sources: Annotated[str, typer.Option(help="source supervoxel ids, comma-separated")],
             sinks: Annotated[str, typer.Option(help="sink supervoxel ids, comma-separated")],
             author: AuthorOpt = None, roots: Annotated[str | None, typer.Option()] = None):
    """Split a root by a minimum cut between sources and sinks."""
    _echo(_seg(lake, datastack).split(_ids(sources, "sources"), _ids(sinks, "sinks"), author=author,
                                      roots=_ids(roots, "roots") if roots else None))


@proofread_app.command("undo")
def pr_undo(datastack: str, operation_id: int, lake: LakeOpt, author: AuthorOpt = None):
    """Undo one operation."""
    _echo(_seg(lake, datastack).undo(operation_id, author=author))


@proofread_app.command("redo")
def pr_redo(datastack: str, operation_id: int, lake: LakeOpt, author: AuthorOpt = None):
    """Redo an undone operation."""
    _echo(_seg(lake, datastack).redo(operation_id, author=author))


@proofread_app.command("rollback")
def pr_rollback(datastack: str, user: str, lake: LakeOpt,
                since: Annotated[str, typer.Option(help="ISO time: revert USER's edits made since then")],
                author: AuthorOpt = None):
    """Revert all edits of USER since a time (one operation)."""
    _echo(_seg(lake, datastack).rollback(user, since, author=author))


@proofread_app.command("log")
def pr_log(datastack: str, lake: LakeOpt, author: Annotated[str | None, typer.Option()] = None,
           since: Annotated[str | None, typer.Option()] = None):
    """The edit log (JSON)."""
    _echo(_seg(lake, datastack).operations(author=author, since=since))


@proofread_app.command("roots")
def pr_roots(datastack: str, supervoxels: str, lake: LakeOpt,
             timestamp: Annotated[str | None, typer.Option(help="ISO time (default now)")] = None):
    """Root ids of supervoxels (comma-separated) at a time."""
    svs = _ids(supervoxels, "supervoxels")
    roots = _seg(lake, datastack).get_roots(svs, timestamp)
    _echo({str(s): int(r) for s, r in zip(svs, roots, strict=True)})


@proofread_app.command("leaves")
def pr_leaves(datastack: str, root_id: int, lake: LakeOpt):
    """Supervoxels of a root."""
    _echo([int(x) for x in _seg(lake, datastack).get_leaves(root_id)])


@proofread_app.command("lineage")
def pr_lineage(datastack: str, root_id: int, lake: LakeOpt):
    """Lineage graph of a root (node-link JSON) and its latest roots."""
    seg = _seg(lake, datastack)
    _echo({"root": seg.root_info(root_id), "latest_roots": [int(r) for r in seg.latest_roots(root_id)],
           "lineage": seg.lineage([root_id])})


# -- materialize / versions -----------------------------------------------------------------------
def materialize_cmd(datastack: Annotated[str, typer.Argument()], lake: LakeOpt,
                    timestamp: Annotated[str | None, typer.Option(help="ISO time (default now)")] = None,
                    tables: Annotated[str | None, typer.Option(help="comma-separated table names (default all)")] = None,
                    expires_in_days: Annotated[float | None, typer.Option(help="days until the version expires")] = None):
    """Freeze a new materialization version of DATASTACK at a timestamp (annotations bound to root ids)."""
    from neurolake.materialize import materialize

    v = materialize(_lake(lake), datastack, timestamp=timestamp,
                    tables=tables.split(",") if tables else None, expires_in=expires_in_days)
    _echo({k: v[k] for k in ("version", "time_stamp", "expires_on", "valid", "rows", "tables", "path")})


@versions_app.command("list")
def v_list(datastack: str, lake: LakeOpt, expired: bool = False):
    """Versions (valid only unless --expired)."""
    from neurolake.materialize import versions

    _echo([{k: v[k] for k in ("version", "time_stamp", "expires_on", "valid", "status", "rows")}
           for v in versions(_lake(lake), datastack, expired=expired)])


@versions_app.command("show")
def v_show(datastack: str, version: int, lake: LakeOpt):
    """Metadata of one version."""
    from neurolake.materialize import get_version

    _echo(get_version(_lake(lake), datastack, version))


@versions_app.command("expire")
def v_expire(datastack: str, version: int, lake: LakeOpt):
    """Expire a version (never the newest valid one)."""
    from neurolake.materialize import expire

    _echo(expire(_lake(lake), datastack, version))


@versions_app.command("query")
def v_query(datastack: str, version: int, table: str, lake: LakeOpt,
            output: Annotated[Path, typer.Option("-o", "--output", help="out.parquet or out.csv")],
            root_id: Annotated[int | None, typer.Option(help="rows whose any *_root_id equals this")] = None):
    """Write the rows of TABLE in VERSION to a Parquet or CSV file."""
    import pandas as pd

    from neurolake.materialize import query_version

    df = query_version(_lake(lake), datastack, version, table)
    if root_id is not None:
        cols = [c for c in df.columns if c.endswith("_root_id")]
        df = df[pd.concat([df[c] == root_id for c in cols], axis=1).any(axis=1)] if cols else df.iloc[:0]
    if output.suffix == ".csv":
        df.to_csv(output, index=False)
    elif output.suffix == ".parquet":
        df.to_parquet(output, index=False)
    else:
        raise InvalidArgument(f"output {output.name!r} must end in .parquet or .csv", field="output")
    typer.echo(f"wrote {len(df)} rows to {output}", err=True)


# -- connectome -----------------------------------------------------------------------------------
def _conn(lake, datastack, version, synapse_table, cell_type_table):
    from neurolake.connectome import Connectome

    return Connectome.from_version(_lake(lake), datastack, version, synapse_table, cell_type_table=cell_type_table)


VersionOpt = Annotated[int | None, typer.Option("--version", "-v", help="materialization version (default newest)")]
SynOpt = Annotated[str, typer.Option(help="synapse table")]
CtOpt = Annotated[str | None, typer.Option(help="cell type table")]


@connectome_app.command("summary")
def c_summary(datastack: str, lake: LakeOpt, version: VersionOpt = None, synapse_table: SynOpt = "synapses"):
    """Nodes, edges, synapses and reciprocal pairs."""
    _echo(_conn(lake, datastack, version, synapse_table, None).summary())


@connectome_app.command("partners")
def c_partners(datastack: str, root_id: int, lake: LakeOpt, version: VersionOpt = None,
               synapse_table: SynOpt = "synapses", cell_type_table: CtOpt = None, min_synapses: int = 1):
    """Upstream and downstream partners of ROOT_ID."""
    c = _conn(lake, datastack, version, synapse_table, cell_type_table)
    _echo({"upstream": json.loads(c.upstream(root_id, min_synapses).to_json(orient="records")),
           "downstream": json.loads(c.downstream(root_id, min_synapses).to_json(orient="records"))})


@connectome_app.command("matrix")
def c_matrix(datastack: str, lake: LakeOpt, version: VersionOpt = None, synapse_table: SynOpt = "synapses",
             cell_type_table: CtOpt = None, group_by: str = "cell_type"):
    """Connectivity matrix grouped by a node attribute (CSV on stdout)."""
    typer.echo(_conn(lake, datastack, version, synapse_table, cell_type_table).connectivity_matrix(group_by).to_csv())


@connectome_app.command("motifs")
def c_motifs(datastack: str, lake: LakeOpt, version: VersionOpt = None, synapse_table: SynOpt = "synapses",
             min_synapses: int = 1):
    """Triad census (16 directed 3-node motif classes)."""
    _echo(_conn(lake, datastack, version, synapse_table, None).motifs(min_synapses))


@connectome_app.command("export")
def c_export(datastack: str, lake: LakeOpt, output: Annotated[Path, typer.Option("-o", "--output",
                                                                                  help="edges.parquet or graph.graphml")],
             version: VersionOpt = None, synapse_table: SynOpt = "synapses", cell_type_table: CtOpt = None):
    """Export the graph as a Parquet edge list or GraphML."""
    c = _conn(lake, datastack, version, synapse_table, cell_type_table)
    if output.suffix == ".parquet":
        c.to_parquet(output)
    elif output.suffix == ".graphml":
        c.to_graphml(output)
    else:
        raise InvalidArgument(f"output {output.name!r} must end in .parquet or .graphml", field="output")
    typer.echo(f"wrote {output} ({len(c.nodes)} nodes, {len(c.edges)} edges)", err=True)


# -- segment --------------------------------------------------------------------------------------
@segment_app.command("watershed")
def s_watershed(datastack: str, lake: LakeOpt,
                boundary_layer: Annotated[str, typer.Option(help="boundary map or label layer")],
                output: Annotated[str, typer.Option(help="name of the new supervoxel layer")] = "supervoxels",
                boundary_values: Annotated[str | None, typer.Option(
                    help="label values meaning boundary, e.g. 0,32,64,96,128; else a probability map")] = None,
                threshold: float = 0.5, min_distance: int = 8,
                x: Annotated[str | None, typer.Option(help="x0,x1 box (default all)")] = None,
                y: Annotated[str | None, typer.Option()] = None, z: Annotated[str | None, typer.Option()] = None,
                overwrite: bool = False,
                init: Annotated[bool, typer.Option(help="also make the datastack proofreadable from it")] = False):
    """Supervoxels by per-section seeded watershed of a boundary map (see neurolake.segment)."""
    from neurolake.segment import watershed_layer
    from neurolake.server.deps import parse_range

    lk = _lake(lake)
    box = {a: parse_range(a, v) if v else None for a, v in (("x", x), ("y", y), ("z", z))}
    la = watershed_layer(lk, datastack, boundary_layer, output,
                         boundary_values=_ids(boundary_values, "boundary_values") if boundary_values else None,
                         threshold=threshold, min_distance=min_distance, overwrite=overwrite, **box)
    typer.echo(f"wrote {la!r}", err=True)
    if init:
        from neurolake.proofreading import create_segmentation

        _echo(create_segmentation(lk, datastack, layer=output, overwrite=overwrite).info())
