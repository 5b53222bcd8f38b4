"""What every command group shares: the ``--lake`` and ``--datastack`` options, opening the lake,
JSON output, parsing of ranges / triples / id lists, the progress bar and the error exit.

Only light modules are imported here (Typer, the standard library, :mod:`neurolake.errors`), so that
``neurolake --help`` stays fast; numpy, tensorstore, pandas, pyarrow, deltalake and the catalog are
imported inside the command functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from neurolake.errors import InvalidArgument, NeurolakeError

# -- options shared by every command group --------------------------------------------------------
LakeOpt = Annotated[str | None, typer.Option(
    "--lake", "-l", envvar="NEUROLAKE_LAKE", show_default=False,
    help="Lake folder or s3://bucket/prefix (default: $NEUROLAKE_LAKE, else the current folder).")]
DsOpt = Annotated[str, typer.Option("--datastack", "-d", help="Datastack name.")]
MaybeDsOpt = Annotated[str | None, typer.Option(
    "--datastack", "-d", help="Datastack name (needed only when a name is ambiguous).")]
TableOpt = Annotated[str, typer.Option("--table", "-t", help="Annotation table name.")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="who edits (default: NEUROLAKE_USER or login)")]


def lake_path(lake: str | Path | None) -> Path | str:
    """The lake of a command: ``--lake``, else ``NEUROLAKE_LAKE``, else the current folder. A folder is
    returned as a Path, an ``s3://bucket/prefix`` URL as given."""
    from neurolake.storage.config import is_s3

    if lake is None:
        from neurolake.base.settings import Settings

        lake = Settings().lake
    return str(lake) if is_s3(str(lake)) else Path(lake)


def open_lake(lake: str | Path | None, create: bool = False):
    """Open the command's lake (see :func:`lake_path`); closed when the command ends.

    Raises NotFound when the folder is not a lake (unless ``create``).
    """
    import click

    from neurolake import open_lake as _open

    lk = _open(lake_path(lake), create=create)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lk.close)
    return lk


# -- output ---------------------------------------------------------------------------------------
_console = None


def console():
    """The Rich console on stderr (messages and progress; stdout carries the command's output)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, soft_wrap=True)
    return _console


def say(msg: str) -> None:
    """Print a message on stderr (Rich markup allowed)."""
    console().print(msg)


VERSION_KEYS = ("version", "timestamp", "expires_on", "valid", "status", "rows")


def pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``d`` named in ``keys`` (in that order; missing keys skipped)."""
    return {k: d[k] for k in keys if k in d}


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (pipe it to ``jq``)."""
    typer.echo(json.dumps(obj, indent=2, default=str))


class Bar:
    """A Rich progress bar fed by ``progress(phase, done, total)`` callbacks, one row per phase.

    Silent when stderr is not a terminal (pipes, tests, logs). Use as a context manager.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        con = console()
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=con, disable=not con.is_terminal)
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.p.add_task(phase, total=total)
        self.p.update(self.tasks[phase], completed=done, total=total)

    def __enter__(self) -> Bar:
        self.p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.p.stop()


# -- parsing --------------------------------------------------------------------------------------
def parse_triple(text: str | None, what: str, kind: type = float) -> tuple | None:
    """``"4,4,40"`` (or ``"4x4x40"``) → ``(4.0, 4.0, 40.0)``; None stays None. Raises InvalidArgument."""
    if text is None:
        return None
    try:
        vals = tuple(kind(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise InvalidArgument(f"{what} {text!r} must be three numbers like 4,4,40", field=what, value=text)
    return vals


def parse_range(text: str | None, axis: str) -> tuple[int, int] | None:
    """``"0,512"`` or ``"0:512"`` → ``(0, 512)`` (half-open voxel range); None stays None.
    The URL grammar (:func:`neurolake.base.integers.parse_range`); raises InvalidArgument for anything else."""
    from neurolake.base.integers import parse_range as parse

    return None if text is None else parse(axis, text)


def parse_ids(text: str, what: str) -> list[int]:
    """``"1,2,3"`` → ``[1, 2, 3]``. Raises InvalidArgument."""
    try:
        return [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} must be comma-separated integer ids", field=what,
                              value=text) from None


def parse_csv(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None or empty → None."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def parse_pairs(items: list[str] | None, what: str, sep: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}`` (``sep`` between key and value). Raises InvalidArgument."""
    out = {}
    for item in items or []:
        if sep not in item:
            raise InvalidArgument(f"{what} {item!r} must look like a{sep}b", field=what, value=item)
        a, b = item.split(sep, 1)
        out[a.strip()] = b.strip()
    return out


# -- the error exit -------------------------------------------------------------------------------
def run(app: typer.Typer) -> None:
    """Run ``app``; a NeurolakeError prints ``error (code): message`` on stderr and exits with status 2."""
    try:
        app()
    except NeurolakeError as exc:
        from rich.markup import escape

        console().print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", highlight=False)
        sys.exit(2)
