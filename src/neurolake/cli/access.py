"""``neurolake users | tokens | usage | audit``: access control (JSON on stdout)."""

from __future__ import annotations

from typing import Annotated

import typer

from neurolake.cli._common import DsOpt, LakeOpt, echo_json, open_lake
from neurolake.errors import InvalidArgument

users_app = typer.Typer(help="Users and their roles per datastack.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)


def _access(lake):
    return open_lake(lake).access


# -- users ----------------------------------------------------------------------------------------
@users_app.command("add")
def users_add(name: str, lake: LakeOpt = None,
              admin: Annotated[bool, typer.Option("--admin", help="lake admin (every role everywhere)")] = False,
              role: Annotated[list[str] | None, typer.Option("--role", help="DATASTACK:viewer|editor|admin")] = None,
              quota_bytes: Annotated[int | None, typer.Option(help="bytes served per period (0 = unlimited)")] = None,
              quota_requests: Annotated[int | None, typer.Option(help="requests per period (0 = unlimited)")] = None,
              quota_period: Annotated[int | None, typer.Option(help="quota period in seconds")] = None):
    """Add user NAME (optionally with roles: --role hemibrain:editor, repeatable)."""
    pairs = []
    for r in role or []:
        ds, sep, rl = r.rpartition(":")
        if not sep or not ds:
            raise InvalidArgument(f"--role {r!r} must be DATASTACK:ROLE", field="role", value=r)
        pairs.append((ds, rl))
    acc = _access(lake)
    out = acc.add_user(name, admin=admin, quota_bytes=quota_bytes, quota_requests=quota_requests,
                       quota_period_s=quota_period)
    for ds, rl in pairs:
        out = acc.grant(name, ds, rl)
    echo_json(out)


@users_app.command("list")
def users_list(lake: LakeOpt = None):
    """Users with roles and quotas."""
    echo_json(_access(lake).users())


@users_app.command("grant")
def users_grant(name: str, role: str, datastack: DsOpt, lake: LakeOpt = None):
    """Give NAME the ROLE (viewer|editor|admin) on the datastack."""
    echo_json(_access(lake).grant(name, datastack, role))


@users_app.command("revoke")
def users_revoke(name: str, datastack: DsOpt, lake: LakeOpt = None):
    """Remove NAME's role on the datastack."""
    _access(lake).revoke(name, datastack)


@users_app.command("quota")
def users_quota(name: str, lake: LakeOpt = None,
                bytes_: Annotated[int | None, typer.Option("--bytes", help="bytes per period (0 = unlimited)")] = None,
                requests: Annotated[int | None, typer.Option(help="requests per period (0 = unlimited)")] = None,
                period: Annotated[int | None, typer.Option(help="seconds")] = None):
    """Set NAME's quotas (0 = unlimited)."""
    echo_json(_access(lake).set_quota(name, quota_bytes=bytes_, quota_requests=requests, quota_period_s=period))


@users_app.command("disable")
def users_disable(name: str, lake: LakeOpt = None):
    """Disable NAME (its tokens stop working)."""
    _access(lake).disable_user(name)


# -- tokens ---------------------------------------------------------------------------------------
@tokens_app.command("create")
def tokens_create(user: str, lake: LakeOpt = None, name: str = "",
                  expires: Annotated[float | None, typer.Option(help="lifetime in seconds")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="the whole token record as JSON")] = False):
    """Create a token for USER and print it (the only time it is shown)."""
    t = _access(lake).create_token(user, name, expires)
    if as_json:
        echo_json(t)
    else:
        typer.echo(t["token"])


@tokens_app.command("list")
def tokens_list(lake: LakeOpt = None, user: Annotated[str | None, typer.Option(help="only this user's")] = None):
    """Tokens (id, prefix, user; never the secret)."""
    echo_json(_access(lake).tokens(user))


@tokens_app.command("revoke")
def tokens_revoke(token_id: int, lake: LakeOpt = None):
    """Revoke a token by id."""
    _access(lake).revoke_token(token_id)


# -- usage / audit --------------------------------------------------------------------------------
def usage(user: str, lake: LakeOpt = None):
    """USER's requests and bytes in the current quota window (as flushed by the servers)."""
    from neurolake.access import Quotas

    lk = open_lake(lake)
    echo_json(Quotas(lk).usage(lk.access.principal(user)))


def audit(lake: LakeOpt = None,
          action: Annotated[str | None, typer.Option(help="action prefix, e.g. feature.")] = None,
          user: Annotated[str | None, typer.Option(help="only this user's actions")] = None,
          datastack: Annotated[str | None, typer.Option("--datastack", "-d", help="only this datastack")] = None,
          limit: int = 100):
    """The audit log, newest first."""
    echo_json(_access(lake).audit_log(user=user, action=action, datastack=datastack, limit=limit))


def register(app: typer.Typer) -> None:
    """Add ``users``, ``tokens``, ``usage`` and ``audit`` to the ``neurolake`` command."""
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.command("usage")(usage)
    app.command("audit")(audit)
