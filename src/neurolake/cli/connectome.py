"""``neurolake connectome …``: the connectome of a materialization version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import DsOpt, LakeOpt, echo_json, open_lake, say
from neurolake.errors import InvalidArgument

app = typer.Typer(help="The connectome of a materialization version.", no_args_is_help=True)

VersionOpt = Annotated[int | None, typer.Option("--version", "-v", help="materialization version (default newest)")]
SynOpt = Annotated[str | None, typer.Option(help="synapse table (default: the datastack's only synapse table)")]
CtOpt = Annotated[str | None, typer.Option(help="cell type table")]


def _conn(lake, datastack: str, version: int | None, synapse_table: str | None, cell_type_table: str | None):
    return open_lake(lake)[datastack].connectome(version=version, synapse_table=synapse_table,
                                                 cell_type_table=cell_type_table)


@app.command("summary")
def summary(datastack: DsOpt, lake: LakeOpt = None, version: VersionOpt = None, synapse_table: SynOpt = None):
    """Nodes, edges, synapses and reciprocal pairs."""
    echo_json(_conn(lake, datastack, version, synapse_table, None).summary())


@app.command("partners")
def partners(datastack: DsOpt, root_id: int, lake: LakeOpt = None, version: VersionOpt = None,
             synapse_table: SynOpt = None, cell_type_table: CtOpt = None, min_synapses: int = 1):
    """Upstream and downstream partners of ROOT_ID."""
    c = _conn(lake, datastack, version, synapse_table, cell_type_table)
    echo_json({"upstream": json.loads(c.upstream(root_id, min_synapses).df().to_json(orient="records")),
               "downstream": json.loads(c.downstream(root_id, min_synapses).df().to_json(orient="records"))})


@app.command("matrix")
def matrix(datastack: DsOpt, lake: LakeOpt = None, version: VersionOpt = None, synapse_table: SynOpt = None,
           cell_type_table: CtOpt = None, group_by: str = "cell_type"):
    """Connectivity matrix grouped by a node attribute (CSV on stdout)."""
    typer.echo(_conn(lake, datastack, version, synapse_table, cell_type_table).connectivity_matrix(group_by).to_csv())


@app.command("motifs")
def motifs(datastack: DsOpt, lake: LakeOpt = None, version: VersionOpt = None, synapse_table: SynOpt = None,
           min_synapses: int = 1):
    """Triad census (16 directed 3-node motif classes)."""
    echo_json(_conn(lake, datastack, version, synapse_table, None).motifs(min_synapses))


@app.command("export")
def export(datastack: DsOpt,
           output: Annotated[Path, typer.Option("-o", "--output", help="edges.parquet or graph.graphml")],
           lake: LakeOpt = None, version: VersionOpt = None, synapse_table: SynOpt = None,
           cell_type_table: CtOpt = None):
    """Export the graph as a Parquet edge list or GraphML."""
    if output.suffix not in (".parquet", ".graphml"):
        raise InvalidArgument(f"output {output.name!r} must end in .parquet or .graphml", field="output")
    c = _conn(lake, datastack, version, synapse_table, cell_type_table)
    if output.suffix == ".parquet":
        c.to_parquet(output)
    else:
        c.to_graphml(output)
    say(f"wrote {output} ({len(c.nodes)} nodes, {len(c.edges)} edges)")
