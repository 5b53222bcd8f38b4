"""``neurolake mesh …``: meshes of segmentation layers and proofread roots (see neurolake.meshes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import Bar, DsOpt, LakeOpt, echo_json, open_lake, parse_triple, say

app = typer.Typer(help="Meshes of segmentation objects and proofread roots (Neuroglancer precomputed).",
                  no_args_is_help=True)
LayerOpt = Annotated[str, typer.Option("--layer", help="Segmentation layer name (-l is the lake).")]


@app.command("build")
def build(datastack: DsOpt, layer: LayerOpt, lake: LakeOpt = None,
          draco: Annotated[bool, typer.Option(help="name the Draco multi-resolution folder in the info")] = False,
          block: Annotated[str | None, typer.Option(help="block size x,y,z voxels (default 256,256,128)")] = None,
          simplify: Annotated[float | None, typer.Option(
              help="simplify with this maximum error in nm (zmesh; ~30x slower, far fewer vertices)")] = None,
          scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, 'threads' or 'local'")] = None,
          overwrite: Annotated[bool, typer.Option(help="mesh every block again (default: resume)")] = False):
    """Mesh every object of a segmentation layer (zmesh, one Dask task per block; resumable).

    Prints the summary with its provenance record as JSON."""
    from neurolake.meshes import build_meshes

    lk = open_lake(lake)
    with Bar() as bar:
        summary = build_meshes(lk, datastack, layer, draco=draco, block=parse_triple(block, "block", int),
                               simplify=simplify,
                               scheduler=scheduler, overwrite=overwrite, progress=lambda d, t: bar("meshing blocks", d, t))
    say(f"{datastack}/{layer}: {summary['objects']} objects, {summary['fragments']} fragments, "
        f"{summary['bytes']} bytes in {summary['seconds']} s")
    echo_json(summary)


@app.command("info")
def info(datastack: DsOpt, layer: LayerOpt, lake: LakeOpt = None):
    """The mesh record of a layer: block size, info folder, progress, provenance (JSON)."""
    from neurolake.meshes import mesh_info

    echo_json(mesh_info(open_lake(lake), datastack, layer))


@app.command("export")
def export(datastack: DsOpt, object_id: Annotated[int, typer.Argument(help="segment id, or root id with --root")],
           output: Annotated[Path, typer.Argument(help="file to write: .ply, .obj, .stl (trimesh)")],
           lake: LakeOpt = None,
           layer: Annotated[str | None, typer.Option("--layer", help="segmentation layer (not with --root)")] = None,
           root: Annotated[bool, typer.Option(help="the id is a proofread root id")] = False):
    """Write the mesh of one object (nm coordinates) to a file."""
    import trimesh

    from neurolake.errors import InvalidArgument
    from neurolake.meshes import root_mesh, segment_mesh

    lk = open_lake(lake)
    if root == (layer is not None):
        raise InvalidArgument("give either --layer (a segment id of that layer) or --root (a proofread root id)",
                              field="layer")
    v, f = root_mesh(lk, datastack, object_id) if root else segment_mesh(lk, datastack, layer, object_id)
    trimesh.Trimesh(v, f, process=False).export(output)
    say(f"wrote {output} ({len(v)} vertices, {len(f)} triangles)")
