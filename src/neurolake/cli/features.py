"""``neurolake features …``: the feature-table registry (register, list, show, publish, verify, signed
URLs, crawl). Output is JSON on stdout (pipe it to ``jq``) unless said otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from neurolake.cli._common import DsOpt, LakeOpt, MaybeDsOpt, echo_json, open_lake, parse_csv
from neurolake.errors import InvalidArgument

app = typer.Typer(help="Feature-table registry: register, list, publish, crawl, signed URLs.", no_args_is_help=True)


def _registry(lake):
    return open_lake(lake).features


@app.command("register")
def register(
    name: str,
    location: str,
    datastack: DsOpt,
    lake: LakeOpt = None,
    format: Annotated[str | None, typer.Option("--format", "-f", help="parquet|delta|iceberg|lance")] = None,
    description: str = "",
    tags: Annotated[str | None, typer.Option(help="comma-separated tags")] = None,
    owner_team: str = "",
    owner_person: str = "",
    materialization_version: Annotated[int | None, typer.Option("--version", help="materialization version")] = None,
    pipeline: str = "",
    licence: str = "",
    citation: str = "",
    status: str = "draft",
    spec: Annotated[Path | None, typer.Option(help="JSON file with more fields (see docs/features.md)")] = None,
    vectors: Annotated[str | None, typer.Option(help='vector columns as JSON: \'{"emb": {"dimension": 128, '
                                                     '"metric": "cosine", "embeds": "...", "model_version": "..."}}\'')]
    = None,
):
    """Validate and register the table at LOCATION (local path or s3://) as NAME."""
    fields: dict[str, Any] = json.loads(spec.read_text()) if spec else {}
    given = {"name": name, "location": location, "datastack": datastack, "format": format,
             "description": description or None, "tags": parse_csv(tags), "owner_team": owner_team or None,
             "owner_person": owner_person or None, "materialization_version": materialization_version,
             "pipeline": pipeline or None, "licence": licence or None, "citation": citation or None,
             "status": status}
    fields.update({k: v for k, v in given.items() if v is not None})
    if vectors is not None:
        try:
            fields["vectors"] = json.loads(vectors)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"--vectors must be a JSON object: {exc}", field="vectors",
                                  value=vectors[:100]) from None
    echo_json(_registry(lake).register(fields))


@app.command("list")
def list_(
    lake: LakeOpt = None,
    datastack: Annotated[str | None, typer.Option("--datastack", "-d", help="only this datastack")] = None,
    name: Annotated[str | None, typer.Option(help="substring of the name (* wildcards)")] = None,
    tag: Annotated[str | None, typer.Option(help="has this tag")] = None,
    version: Annotated[int | None, typer.Option(help="materialization version")] = None,
    status: Annotated[str | None, typer.Option(help="draft, published or deprecated")] = None,
    owner: Annotated[str | None, typer.Option(help="owner team or person")] = None,
    column: Annotated[str | None, typer.Option(help="has a column of this name")] = None,
    q: Annotated[str | None, typer.Option("--q", "-q", help="full-text words")] = None,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json", help="full entries as JSON")] = False,
):
    """List registered tables; every filter given must match (none: all). One line per table, or --json."""
    rows = _registry(lake).search(name=name, tag=tag, datastack=datastack, version=version, status=status,
                                  owner=owner, column=column, q=q, limit=limit)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['datastack']}/{r['name']}\t{r['format']}\t{r['status']}\trows={r['row_count']}\t"
                   f"v={r['materialization_version']}\t{','.join(r['tags'])}\t{r['location']}")


@app.command("show")
def show(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None,
         files: Annotated[bool, typer.Option(help="include the file list")] = False):
    """One entry as JSON."""
    echo_json(_registry(lake).get(name, datastack, with_files=files))


@app.command("status")
def status_(name: str, status: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None,
            note: Annotated[str | None, typer.Option(help="deprecation note")] = None):
    """Move NAME to STATUS (draft → published → deprecated)."""
    echo_json(_registry(lake).set_status(name, status, datastack, deprecation=note))


@app.command("update")
def update(name: str, changes: Annotated[str, typer.Argument(help='JSON object, e.g. \'{"tags": ["x"]}\'')],
           lake: LakeOpt = None, datastack: MaybeDsOpt = None):
    """Change fields (drafts: any; published: status, deprecation, derived_from, superseded_by)."""
    try:
        ch = json.loads(changes)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"changes must be a JSON object: {exc}", field="changes", value=changes) from None
    if not isinstance(ch, dict):
        raise InvalidArgument("changes must be a JSON object", field="changes", value=changes)
    echo_json(_registry(lake).update(name, datastack, **ch))


@app.command("verify")
def verify(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None):
    """Re-read the data and compare its fingerprint with the registered one (exit 1 if it differs)."""
    res = _registry(lake).verify(name, datastack)
    echo_json(res)
    if not res["ok"]:
        raise typer.Exit(1)


@app.command("url")
def url(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None,
        expires: Annotated[int, typer.Option("--expires", help="lifetime in seconds")] = 3600,
        base_url: Annotated[str | None, typer.Option(help="public URL of the server "
                                                          "(default NEUROLAKE_PUBLIC_URL or http://127.0.0.1:8000)")]
        = None,
        as_json: Annotated[bool, typer.Option("--json", help="the whole grant as JSON")] = False):
    """Temporary signed URLs of NAME's files (one per line)."""
    reg = _registry(lake)
    g = reg.signed_urls(name, datastack, expires_in_s=expires, base_url=base_url)
    reg.access.flush_audit()
    if as_json:
        echo_json(g)
        return
    for u in g["urls"]:
        typer.echo(u)


@app.command("crawl")
def crawl_(prefix: str, datastack: DsOpt, lake: LakeOpt = None,
           tags: Annotated[str | None, typer.Option(help="comma-separated tags for every table")] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be registered")] = False):
    """Find tables under PREFIX (folder or s3://) and register them as drafts."""
    from neurolake.catalog import crawl

    res = crawl(open_lake(lake), prefix, datastack, tags=parse_csv(tags), dry_run=dry_run)
    echo_json({"found": len(res["found"]), "registered": [f"{r['name']}\t{r['format']}\t{r['location']}"
                                                          for r in res["registered"]],
               "skipped": res["skipped"], "errors": res["errors"]})


@app.command("delete")
def delete(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None):
    """Delete a draft entry (the data is not touched)."""
    _registry(lake).delete(name, datastack)


@app.command("index")
def index(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None,
          column: Annotated[str | None, typer.Option("--column", "-c", help="vector column (default: the only one)")]
          = None,
          rebuild: Annotated[bool, typer.Option("--rebuild", help="rebuild even when the index is fresh")] = False,
          kind: Annotated[str, typer.Option(help="auto | ivf_pq | ivf_flat")] = "auto",
          nlist: Annotated[int | None, typer.Option(help="inverted lists (default ≈ √rows)")] = None,
          m: Annotated[int | None, typer.Option(help="PQ sub-quantisers (must divide the dimension)")] = None,
          nbits: Annotated[int | None, typer.Option(help="bits per PQ code (default 8)")] = None,
          nprobe: Annotated[int | None, typer.Option(help="default lists searched per query")] = None,
          refine: Annotated[int | None, typer.Option(help="default candidates per result re-ranked exactly")] = None,
          info: Annotated[bool, typer.Option("--info", help="only show the index and whether it is stale")] = False):
    """Build the ANN index of a vector column of NAME (kept when fresh; see docs/features.md)."""
    from neurolake.cli._common import Bar

    reg = _registry(lake)
    if info:
        echo_json(reg.index_info(name, column, datastack))
        return
    with Bar() as bar:
        meta = reg.index(name, column, datastack, kind=kind, nlist=nlist, m=m, nbits=nbits, nprobe=nprobe,
                         refine=refine, rebuild=rebuild, progress=bar)
    reg.access.flush_audit()
    echo_json(meta)


@app.command("similar")
def similar(name: str, lake: LakeOpt = None, datastack: MaybeDsOpt = None,
            id: Annotated[str | None, typer.Option("--id", help="key of the query row (the declared id_column)")]
            = None,
            vector: Annotated[str | None, typer.Option("--vector", help="query vector as JSON: [0.1, 0.2, …]")] = None,
            k: Annotated[int, typer.Option("-k", "--k", help="number of results")] = 10,
            filter: Annotated[str | None, typer.Option("--filter", help="SQL predicate, e.g. \"cell_type = 'L2/3'\"")]
            = None,
            exact: Annotated[bool, typer.Option("--exact", help="exact search (no index)")] = False,
            refine: Annotated[int | None, typer.Option(help="candidates per result re-ranked exactly")] = None,
            nprobe: Annotated[int | None, typer.Option(help="inverted lists searched")] = None,
            column: Annotated[str | None, typer.Option("--column", "-c", help="vector column")] = None,
            id_column: Annotated[str | None, typer.Option(help="key column for --id (default: declared)")] = None,
            columns: Annotated[str | None, typer.Option(help="comma-separated columns to return")] = None,
            rebuild: Annotated[bool, typer.Option("--rebuild", help="rebuild a stale index first")] = False,
            save_as: Annotated[str | None, typer.Option(
                "--save-as", help="also register the result as feature table SAVE_AS (SQL: features.SAVE_AS)")] = None):
    """The K rows of NAME nearest to --id's vector or --vector: JSON {"metadata", "rows"}."""
    q = None
    if vector is not None:
        try:
            q = json.loads(vector)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"--vector must be a JSON list of numbers: {exc}", field="vector",
                                  value=vector[:100]) from None
    res = _registry(lake).similar(name, vector=q, id=id, k=k, filter=filter, exact=exact, refine=refine,
                                  nprobe=nprobe, column=column, datastack=datastack, columns=parse_csv(columns),
                                  id_column=id_column, rebuild=rebuild, save_as=save_as)
    echo_json({"metadata": res.metadata, "rows": res.arrow().to_pylist()})
