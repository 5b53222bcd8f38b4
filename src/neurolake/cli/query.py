"""``neurolake sql``, ``explain``, ``runs list|show``, ``reproduce``: SQL over the lake with provenance
(:mod:`neurolake.query`, docs/query.md).

Rows go to stdout (a Rich table preview, CSV or JSON); the run id, result SHA-256 and runtime class go to
stderr, so ``neurolake sql … --format csv > out.csv`` keeps the file clean. Exit codes of ``reproduce``:
0 identical, 1 different, 2 an input is gone (or any other error: ``error (code): message``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from neurolake.cli._common import LakeOpt, MaybeDsOpt, echo_json, open_lake, say
from neurolake.errors import InvalidArgument

runs_app = typer.Typer(help="Recorded query runs: list, show.", no_args_is_help=True)

FORMATS = ("table", "csv", "json")
MODES = ("exploratory", "production")
PinOpt = Annotated[list[str] | None, typer.Option(
    "--pin", help="NAME=PIN, repeatable: pin a table the SQL names without one (e.g. pinky100.synapses=7, "
                  "pinky100.latest.synapses=2, features.bouton_size=3f2a)")]
ModeOpt = Annotated[str, typer.Option("--mode", help="exploratory (sample/timeout allowed) or production (pinned "
                                                     "inputs only; its pins protect them)")]


# -- parsing --------------------------------------------------------------------------------------
def _value(text: str) -> Any:
    """A command-line value: a JSON literal (``7``, ``1.5``, ``true``, ``null``, ``[1, 2]``, ``"x"``) or the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pins(items: list[str] | None) -> dict[str, Any] | None:
    """``["pinky100.synapses=7"]`` → ``{"pinky100.synapses": 7}`` (integers as numbers). Raises InvalidArgument."""
    pins: dict[str, Any] = {}
    for item in items or []:
        name, sep, pin = item.partition("=")
        if not sep or not name.strip() or not pin.strip():
            raise InvalidArgument(f"--pin {item!r} must look like NAME=PIN (e.g. pinky100.synapses=7)", field="pin",
                                  value=item)
        pin = pin.strip()
        pins[name.strip()] = int(pin) if pin.isdigit() else pin
    return pins or None


def parse_params(items: list[str] | None) -> list[Any] | dict[str, Any] | None:
    """``--param`` values: all ``NAME=VALUE`` (for ``$name`` in the SQL) or all plain values (for ``?``, in
    order); values are JSON literals or text. Raises InvalidArgument when the two kinds are mixed."""
    if not items:
        return None
    named = [i.partition("=") for i in items]
    is_named = [bool(sep) and k.strip().isidentifier() for k, sep, _ in named]
    if all(is_named):
        return {k.strip(): _value(v) for k, _, v in named}
    if any(is_named):
        raise InvalidArgument("--param values must be all NAME=VALUE (for $name) or all plain values (for ?), "
                              f"not both: {items}", field="param", value=items)
    return [_value(i) for i in items]


# -- output ---------------------------------------------------------------------------------------
def _stdout_console():
    from rich.console import Console

    con = Console(soft_wrap=False)
    return con if con.is_terminal else Console(width=10_000, soft_wrap=False)  # pipes: natural width, no wrap


def _text(v: Any) -> str:
    if v is None:
        return ""
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    """Rows as a Rich table on stdout."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, no_wrap=True)
    for r in rows:
        t.add_row(*(_text(r.get(c)) for c in columns))
    _stdout_console().print(t)


def _summary(res) -> str:
    rc = res.run.get("runtime_class") or {}
    seconds = rc.get("measured_seconds")
    took = f" in {seconds:.3f} s" if isinstance(seconds, int | float) else ""
    flag = " [yellow]partial (stopped by --timeout)[/yellow]" if res.partial else ""
    return (f"run {res.run_id} ({res.run['mode']}){flag}: {res.num_rows} rows{took}\n"
            f"sha256 {res.sha256}\n"
            f"runtime class: predicted {rc.get('predicted') or '?'}, measured {rc.get('measured') or '?'}")


# -- commands -------------------------------------------------------------------------------------
def sql(query: Annotated[str, typer.Argument(metavar="SQL", help="one SELECT, e.g. "
                                             "\"SELECT count(*) FROM pinky100.v1.synapses\"")],
        lake: LakeOpt = None, datastack: MaybeDsOpt = None, mode: ModeOpt = "exploratory", pin: PinOpt = None,
        param: Annotated[list[str] | None, typer.Option("--param", help="a parameter, repeatable: VALUE for each ? "
                                                        "in order, or NAME=VALUE for $NAME (JSON literals)")] = None,
        sample: Annotated[float | None, typer.Option(help="exploratory: Bernoulli sample fraction (0, 1]")] = None,
        timeout: Annotated[float | None, typer.Option(help="exploratory: stop after S seconds (partial result)")] = None,
        save: Annotated[bool, typer.Option("--save", help="write the result to <lake>/runs/<run_id>.parquet")] = False,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="write the result to FILE.parquet "
                                                    "(manifest in its metadata and FILE.parquet.manifest.json)")] = None,
        fmt: Annotated[str, typer.Option("--format", "-f", help="table (a preview of --rows rows), csv or json "
                                         "(every row)")] = "table",
        rows: Annotated[int, typer.Option("--rows", min=0, help="rows shown by --format table")] = 20,
        manifest: Annotated[Path | None, typer.Option("--manifest", help="write the run's manifest (OpenLineage "
                                                      "RunEvent JSON) to FILE")] = None):
    """Run one SELECT over the lake; print the rows, then the run id, sha256 and runtime class.

    Tables: DS.TABLE (DS."TABLE@7" pins a Delta version), DS.vN.TABLE, DS.vN.connectome, DS.edits,
    features.NAME. Every run is recorded (`neurolake runs list`) and can be re-run (`neurolake reproduce`)."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"--format {fmt!r} must be one of {list(FORMATS)}", field="format", value=fmt,
                              allowed=list(FORMATS))
    if mode not in MODES:
        raise InvalidArgument(f"--mode {mode!r} must be one of {list(MODES)}", field="mode", value=mode,
                              allowed=list(MODES))
    if output is not None and output.suffix != ".parquet":
        raise InvalidArgument(f"--output {output.name!r} must end in .parquet", field="output", value=str(output))
    lk = open_lake(lake)
    res = lk.sql(query, parse_params(param), mode=mode, pins=parse_pins(pin), sample=sample, timeout_s=timeout,
                 datastack=datastack, save=save, output=output)
    table = res.arrow().replace_schema_metadata(None)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = _BytesOut()
        pacsv.write_csv(table, buf)
        sys.stdout.write(buf.text())
    elif fmt == "json":
        typer.echo(table.to_pandas().to_json(orient="records", date_format="iso", date_unit="us"))
    else:
        shown = table.slice(0, rows)
        more = f" (first {shown.num_rows} of {table.num_rows})" if shown.num_rows < table.num_rows else ""
        print_table(shown.to_pylist(), table.column_names, title=f"{table.num_rows} rows{more}")
    if manifest is not None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(res.manifest, indent=2, default=str))
    from rich.markup import escape

    say(_summary(res))
    if res.run.get("result_file"):
        say(f"result written to {escape(str(res.run['result_file']))}")


class _BytesOut:
    """A binary sink for pyarrow's CSV writer whose bytes become text for stdout."""

    def __init__(self) -> None:
        import io

        self.buf = io.BytesIO()

    def write(self, b) -> int:
        return self.buf.write(bytes(b))

    def text(self) -> str:
        return self.buf.getvalue().decode()

    @property
    def closed(self) -> bool:
        return False

    def flush(self) -> None:
        pass


def explain(query: Annotated[str, typer.Argument(metavar="SQL", help="one SELECT")],
            lake: LakeOpt = None, datastack: MaybeDsOpt = None, mode: ModeOpt = "exploratory", pin: PinOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="everything as JSON (plan tree, scans, "
                                                  "operators)")] = False):
    """Before running: the plan, estimated rows and bytes, the predicted runtime class and, per filter column,
    whether the table's layout serves it (and what layout would)."""
    if mode not in MODES:
        raise InvalidArgument(f"--mode {mode!r} must be one of {list(MODES)}", field="mode", value=mode,
                              allowed=list(MODES))
    out = open_lake(lake).explain(query, pins=parse_pins(pin), datastack=datastack, mode=mode)
    if as_json:
        echo_json(out)
        return
    typer.echo(out.get("plan_text") or "")
    typer.echo("inputs:")
    for i in out.get("inputs") or []:
        typer.echo(f"  {i['name']} ({i['kind']}, pinned by {i.get('pinned_by')}): {json.dumps(i.get('pin'), default=str)}")
    typer.echo(f"estimated rows: {out.get('estimated_rows')}")
    typer.echo(f"estimated bytes to scan: {out.get('estimated_bytes')}")
    typer.echo(f"predicted runtime class: {out.get('runtime_class')} (~{out.get('predicted_seconds')} s)")
    layout = out.get("layout") or []
    if not layout:
        typer.echo("filters: none pushed into a Parquet scan")
    for e in layout:
        typer.echo(f"filter {e.get('table')}.{e.get('column')} [{e.get('predicate')}]: served by {e.get('served_by')} "
                   f"({e.get('pruned')} of {e.get('row_groups')} row groups pruned) — {e.get('advice')}")


@runs_app.command("list")
def runs_list(lake: LakeOpt = None, datastack: MaybeDsOpt = None,
              user: Annotated[str | None, typer.Option(help="runs of this user")] = None,
              mode: Annotated[str | None, typer.Option(help="exploratory or production")] = None,
              limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
              as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False):
    """Recorded query runs, newest first (filters: --user, --datastack, --mode)."""
    items = open_lake(lake).runs(user=user, datastack=datastack, mode=mode, limit=limit)
    if as_json:
        echo_json(items)
        return
    rows = [{**r, "run_id": r["run_id"][:8], "sha256": (r.get("result_sha256") or "")[:12],
             "datastacks": ",".join(r.get("datastacks") or []), "sql": _short(r.get("sql") or "", 60),
             "protecting": "yes" if r.get("protecting") else ""} for r in items]
    print_table(rows, ["run_id", "created", "user", "mode", "status", "rows", "sha256", "datastacks", "protecting",
                       "sql"], title=f"{len(rows)} runs")


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="a run id or a unique prefix (≥ 8)")],
              lake: LakeOpt = None,
              as_json: Annotated[bool, typer.Option("--json", help="the stored run with its full manifest "
                                                    "(OpenLineage RunEvent) as JSON")] = False):
    """One recorded run: SQL, user, mode, inputs with their pins, rows, sha256, runtime class."""
    rec = open_lake(lake).run(run_id)
    if as_json:
        echo_json(rec)
        return
    facet = ((rec.get("manifest") or {}).get("run") or {}).get("facets", {}).get("neurolake") or {}
    rc = facet.get("runtime_class") or {}
    lines = [f"run {rec['run_id']}", f"  created  {rec['created']} by {rec['user']}",
             f"  mode     {rec['mode']} (status {rec['status']}{', protects its inputs' if rec.get('protecting') else ''})",
             f"  sql      {rec['sql']}"]
    if facet.get("params") is not None:
        lines.append(f"  params   {json.dumps(facet['params'], default=str)}")
    lines += [f"  rows     {rec['rows']}", f"  sha256   {rec.get('result_sha256')}",
              f"  runtime  predicted {rc.get('predicted') or '?'}, measured {rc.get('measured') or '?'} "
              f"({rc.get('measured_seconds')} s)"]
    if rec.get("result_file"):
        lines.append(f"  result   {rec['result_file']}")
    lines.append("  inputs")
    for i in rec.get("inputs") or []:
        lines.append(f"    {i.get('name')} ({i.get('kind')}, pinned by {i.get('pinned_by')}): "
                     f"{json.dumps(i.get('pin'), default=str)}")
    typer.echo("\n".join(lines))


def reproduce(ref: Annotated[str, typer.Argument(metavar="RUN_ID|MANIFEST.json|RESULT.parquet",
                                                 help="a run id (or unique prefix), a manifest JSON file or a result "
                                                      "Parquet file carrying its manifest")],
              lake: LakeOpt = None,
              as_json: Annotated[bool, typer.Option("--json", help="the full report as JSON on stdout")] = False):
    """Re-run a recorded query with every input at its recorded pin and compare the result.

    Prints "identical (sha256 …)" and exits 0; or what differs (rows, columns, first differing row) and
    exits 1; or which input is gone, its pin and why, and exits 2 (other errors also exit 2)."""
    out = open_lake(lake).reproduce(ref)
    if as_json:
        echo_json(out)
    else:
        typer.echo(out["message"])
        for g in out.get("inputs_gone") or []:
            typer.echo(f"  gone: {g['input']} pinned at {g.get('pin_text')}: {g['why']}")
    raise typer.Exit({"identical": 0, "different": 1}.get(out["status"], 2))


def register(app: typer.Typer) -> None:
    """Add ``sql``, ``explain``, ``runs list|show`` and ``reproduce`` to the ``neurolake`` command."""
    app.command("sql")(sql)
    app.command("explain")(explain)
    app.add_typer(runs_app, name="runs")
    app.command("reproduce")(reproduce)
