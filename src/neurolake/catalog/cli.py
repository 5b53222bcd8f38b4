"""``neurolake features …`` (registry) and ``neurolake users|tokens|usage|audit …`` (access control).

Registered in ``neurolake/cli.py`` with ``app.add_typer``. Output is JSON on stdout (pipe it to ``jq``);
errors print ``error (code): message`` and exit with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

LakeOpt = Annotated[Path, typer.Option("--lake", "-l", envvar="NEUROLAKE_LAKE", help="Lake folder.")]
DsOpt = Annotated[str | None, typer.Option("--datastack", "-d", help="Datastack (needed when a name is ambiguous)")]

features_app = typer.Typer(help="Feature-table registry: register, search, publish, crawl, signed URLs.",
                           no_args_is_help=True)
users_app = typer.Typer(help="Users and their roles per datastack.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)


def _open(lake: Path):
    from neurolake import open_lake

    return open_lake(lake)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@features_app.command("register")
def register(
    lake: LakeOpt,
    name: str,
    location: str,
    datastack: Annotated[str, typer.Option("--datastack", "-d", help="Datastack")],
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
):
    """Validate and register the table at LOCATION (local path or s3://) as NAME."""
    from neurolake.catalog import FeatureRegistry

    fields: dict[str, Any] = json.loads(spec.read_text()) if spec else {}
    given = {"name": name, "location": location, "datastack": datastack, "format": format,
             "description": description or None, "tags": _csv(tags), "owner_team": owner_team or None,
             "owner_person": owner_person or None, "materialization_version": materialization_version,
             "pipeline": pipeline or None, "licence": licence or None, "citation": citation or None,
             "status": status}
    fields.update({k: v for k, v in given.items() if v is not None})
    _print(FeatureRegistry(_open(lake)).register(fields))


@features_app.command("list")
def list_(
    lake: LakeOpt,
    name: Annotated[str | None, typer.Option(help="substring of the name (* wildcards)")] = None,
    tag: str | None = None,
    datastack: str | None = None,
    version: Annotated[int | None, typer.Option(help="materialization version")] = None,
    status: str | None = None,
    owner: str | None = None,
    column: str | None = None,
    q: Annotated[str | None, typer.Option("--q", "-q", help="full-text words")] = None,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json", help="full entries as JSON")] = False,
):
    """Search the registry (every filter must match)."""
    from neurolake.catalog import FeatureRegistry

    rows = FeatureRegistry(_open(lake)).search(name=name, tag=tag, datastack=datastack, version=version,
                                               status=status, owner=owner, column=column, q=q, limit=limit)
    if as_json:
        _print(rows)
        return
    for r in rows:
        typer.echo(f"{r['datastack']}/{r['name']}\t{r['format']}\t{r['status']}\trows={r['row_count']}\t"
                   f"v={r['materialization_version']}\t{','.join(r['tags'])}\t{r['location']}")


features_app.command("search")(list_)


@features_app.command("show")
def show(lake: LakeOpt, name: str, datastack: DsOpt = None,
         files: Annotated[bool, typer.Option(help="include the file list")] = False):
    """One entry as JSON."""
    from neurolake.catalog import FeatureRegistry

    _print(FeatureRegistry(_open(lake)).get(name, datastack, with_files=files))


@features_app.command("status")
def status_(lake: LakeOpt, name: str, status: str, datastack: DsOpt = None,
            note: Annotated[str | None, typer.Option(help="deprecation note")] = None):
    """Move NAME to STATUS (draft → published → deprecated)."""
    from neurolake.catalog import FeatureRegistry

    _print(FeatureRegistry(_open(lake)).set_status(name, status, datastack, deprecation=note))


@features_app.command("update")
def update(lake: LakeOpt, name: str, changes: Annotated[str, typer.Argument(help='JSON object, e.g. \'{"tags": ["x"]}\'')],
           datastack: DsOpt = None):
    """Change fields (drafts: any; published: status, deprecation, derived_from, superseded_by)."""
    from neurolake.catalog import FeatureRegistry
    from neurolake.errors import InvalidArgument

    try:
        ch = json.loads(changes)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"changes must be a JSON object: {exc}", field="changes", value=changes) from None
    if not isinstance(ch, dict):
        raise InvalidArgument("changes must be a JSON object", field="changes", value=changes)
    _print(FeatureRegistry(_open(lake)).update(name, datastack, **ch))


@features_app.command("verify")
def verify(lake: LakeOpt, name: str, datastack: DsOpt = None):
    """Re-read the data and compare its fingerprint with the registered one."""
    from neurolake.catalog import FeatureRegistry

    res = FeatureRegistry(_open(lake)).verify(name, datastack)
    _print(res)
    if not res["ok"]:
        raise typer.Exit(1)


@features_app.command("url")
def url(lake: LakeOpt, name: str, datastack: DsOpt = None,
        expires: Annotated[int, typer.Option("--expires", help="lifetime in seconds")] = 3600,
        base_url: Annotated[str | None, typer.Option(help="public URL of the server "
                                                          "(default NEUROLAKE_PUBLIC_URL or http://127.0.0.1:8000)")]
        = None,
        as_json: Annotated[bool, typer.Option("--json", help="the whole grant as JSON")] = False):
    """Temporary signed URLs of NAME's files (one per line)."""
    from neurolake.catalog import FeatureRegistry

    reg = FeatureRegistry(_open(lake))
    g = reg.signed_urls(name, datastack, expires_in_s=expires, base_url=base_url)
    reg.access.flush_audit()
    if as_json:
        _print(g)
        return
    for u in g["urls"]:
        typer.echo(u)


@features_app.command("crawl")
def crawl_(lake: LakeOpt, prefix: str, datastack: Annotated[str, typer.Option("--datastack", "-d")],
           tags: Annotated[str | None, typer.Option(help="comma-separated tags for every table")] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be registered")] = False):
    """Find tables under PREFIX (folder or s3://) and register them as drafts."""
    from neurolake.catalog import crawl

    res = crawl(_open(lake), prefix, datastack, tags=_csv(tags), dry_run=dry_run)
    _print({"found": len(res["found"]), "registered": [f"{r['name']}\t{r['format']}\t{r['location']}"
                                                       for r in res["registered"]],
            "skipped": res["skipped"], "errors": res["errors"]})


@features_app.command("delete")
def delete(lake: LakeOpt, name: str, datastack: DsOpt = None):
    """Delete a draft entry (the data is not touched)."""
    from neurolake.catalog import FeatureRegistry

    FeatureRegistry(_open(lake)).delete(name, datastack)


# -- users / tokens / usage / audit ---------------------------------------------------------------
@users_app.command("add")
def users_add(lake: LakeOpt, name: str,
              admin: Annotated[bool, typer.Option("--admin", help="lake admin (every role everywhere)")] = False,
              role: Annotated[list[str] | None, typer.Option("--role", help="DATASTACK:viewer|editor|admin")] = None,
              quota_bytes: Annotated[int | None, typer.Option(help="bytes served per period (0 = unlimited)")] = None,
              quota_requests: Annotated[int | None, typer.Option(help="requests per period (0 = unlimited)")] = None,
              quota_period: Annotated[int | None, typer.Option(help="quota period in seconds")] = None):
    """Add a user (optionally with roles: --role hemibrain:editor)."""
    from neurolake.access import access
    from neurolake.errors import InvalidArgument

    acc = access(_open(lake))
    pairs = []
    for r in role or []:
        ds, sep, rl = r.rpartition(":")
        if not sep or not ds:
            raise InvalidArgument(f"--role {r!r} must be DATASTACK:ROLE", field="role", value=r)
        pairs.append((ds, rl))
    out = acc.add_user(name, admin=admin, quota_bytes=quota_bytes, quota_requests=quota_requests,
                       quota_period_s=quota_period)
    for ds, rl in pairs:
        out = acc.grant(name, ds, rl)
    _print(out)


@users_app.command("list")
def users_list(lake: LakeOpt):
    """Users with roles and quotas."""
    from neurolake.access import access

    _print(access(_open(lake)).users())


@users_app.command("grant")
def users_grant(lake: LakeOpt, name: str, datastack: str, role: str):
    """Give NAME ROLE (viewer|editor|admin) on DATASTACK."""
    from neurolake.access import access

    _print(access(_open(lake)).grant(name, datastack, role))


@users_app.command("revoke")
def users_revoke(lake: LakeOpt, name: str, datastack: str):
    """Remove NAME's role on DATASTACK."""
    from neurolake.access import access

    access(_open(lake)).revoke(name, datastack)


@users_app.command("quota")
def users_quota(lake: LakeOpt, name: str, bytes_: Annotated[int | None, typer.Option("--bytes")] = None,
                requests: int | None = None,
                period: Annotated[int | None, typer.Option(help="seconds")] = None):
    """Set NAME's quotas (0 = unlimited)."""
    from neurolake.access import access

    _print(access(_open(lake)).set_quota(name, quota_bytes=bytes_, quota_requests=requests, quota_period_s=period))


@users_app.command("disable")
def users_disable(lake: LakeOpt, name: str):
    """Disable NAME (its tokens stop working)."""
    from neurolake.access import access

    access(_open(lake)).disable_user(name)


@tokens_app.command("create")
def tokens_create(lake: LakeOpt, user: str, name: str = "",
                  expires: Annotated[float | None, typer.Option(help="lifetime in seconds")] = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False):
    """Create a token for USER and print it (the only time it is shown)."""
    from neurolake.access import access

    t = access(_open(lake)).create_token(user, name, expires)
    if as_json:
        _print(t)
    else:
        typer.echo(t["token"])


@tokens_app.command("list")
def tokens_list(lake: LakeOpt, user: str | None = None):
    """Tokens (id, prefix, user; never the secret)."""
    from neurolake.access import access

    _print(access(_open(lake)).tokens(user))


@tokens_app.command("revoke")
def tokens_revoke(lake: LakeOpt, token_id: int):
    """Revoke a token by id."""
    from neurolake.access import access

    access(_open(lake)).revoke_token(token_id)


def usage(lake: LakeOpt, user: str):
    """USER's requests and bytes in the current quota window (as flushed by the servers)."""
    from neurolake.access import Quotas, access

    lk = _open(lake)
    _print(Quotas(lk).usage(access(lk).principal(user)))


def audit(lake: LakeOpt, action: Annotated[str | None, typer.Option(help="action prefix, e.g. feature.")] = None,
          user: str | None = None, datastack: str | None = None, limit: int = 100):
    """The audit log, newest first."""
    from neurolake.access import access

    _print(access(_open(lake)).audit_log(user=user, action=action, datastack=datastack, limit=limit))


def register_commands(app: typer.Typer) -> None:
    """Add ``features``, ``users``, ``tokens``, ``usage`` and ``audit`` to the ``neurolake`` command."""
    app.add_typer(features_app, name="features")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.command("usage")(usage)
    app.command("audit")(audit)
