"""``neurolake ephys ingest|tables|show|plot``: electrophysiology recordings as tables (docs/ephys.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurolake.cli._common import Bar, DsOpt, LakeOpt, echo_json, open_lake, parse_pairs, say

app = typer.Typer(help="Electrophysiology: ingest ABF/NWB/MEA files, read the tables, plot.", no_args_is_help=True)


@app.command("ingest")
def ingest(folder: Annotated[str, typer.Argument(help="a folder (searched recursively), one file, or "
                                                  "s3://bucket/prefix (or one object)")],
           datastack: DsOpt, lake: LakeOpt = None,
           lab: Annotated[str | None, typer.Option(help="the lab that recorded the files")] = None,
           condition: Annotated[list[str] | None, typer.Option(
               "--condition", help="KEY=VALUE tag stored with every file, repeatable (e.g. drug=TTX)")] = None,
           qc: Annotated[list[str] | None, typer.Option(
               "--qc", help="KEY=VALUE: override a QC limit, repeatable (e.g. slow_noise_rms_mv_max=1.0); "
                            "the rows record the limits used")] = None,
           json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
           scheduler: Annotated[str | None, typer.Option(
               help="analyse the patch-clamp files on Dask: tcp://host:port, 'local' or 'threads' "
                    "(default: in this process)")] = None) -> None:
    """Load every ABF, NWB, Axion spike list (+ plate log) and retinal-wave HDF5 file of FOLDER. Running it
    again adds nothing; a changed file replaces its rows; bad files are recorded in the errors table."""
    from neurolake.ephys.etl import ingest as run_ingest

    lk = open_lake(lake)
    conds = parse_pairs(condition, "condition", "=")
    limits = {k: _number(k, v) for k, v in parse_pairs(qc, "qc", "=").items()}
    with Bar() as bar:  # the datastack is created when missing
        report = run_ingest(lk, datastack, folder, lab=lab, conditions=conds or None,
                            qc_thresholds=limits or None, scheduler=scheduler,
                            progress=lambda done, total, path: bar("files", done, total))
    if json_out:
        echo_json(report.to_dict())
        return
    say(f"{len(report.loaded)} loaded, {len(report.replaced)} replaced, {len(report.skipped)} unchanged or "
        f"duplicate, {len(report.errors)} errors, {len(report.ignored)} other files ignored")
    for e in report.errors:
        say(f"  error {Path(e['path']).name}: {e['error_code']}: {e['message']}")
    if report.orphans_removed:
        say(f"  removed rows of an interrupted ingest: {report.orphans_removed}")


def _number(key: str, text: str) -> float:
    from neurolake.errors import InvalidArgument

    try:
        return float(text)
    except ValueError:
        raise InvalidArgument(f"--qc {key}={text!r}: the limit must be a number", field="qc", value=text) from None


@app.command("tables")
def tables(datastack: DsOpt, lake: LakeOpt = None) -> None:
    """The ephys tables of DATASTACK with their Delta version and row count (SQL: DATASTACK.ephys.TABLE)."""
    from neurolake.ephys import tables as et

    lk = open_lake(lake)
    ep = lk[datastack].ephys
    echo_json([{"table": t, "sql": f"{datastack}.ephys.{t}", "version": et.version(lk, datastack, t),
                "rows": ep.table(t, columns=[et.SCHEMAS[t].names[0]]).arrow().num_rows} for t in ep.tables()])


@app.command("show")
def show(table: Annotated[str, typer.Argument(help="files, sweeps, spikes, sweep_features, cell_features, "
                                                   "mea_spikes, mea_electrodes, mea_wells, mea_network_bursts, "
                                                   "errors")],
         datastack: DsOpt, lake: LakeOpt = None,
         file: Annotated[str | None, typer.Option(help="only this file (SHA-256 prefix, path or name)")] = None,
         cell: Annotated[str | None, typer.Option(help="only this cell")] = None,
         limit: Annotated[int, typer.Option(help="rows to print")] = 20,
         fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table") -> None:
    """Rows of an ephys table."""
    import sys

    lk = open_lake(lake)
    ep = lk[datastack].ephys
    sha = ep.file(file)["file_sha256"] if file else None
    df = ep.table(table, file_sha256=sha, cell=cell).df().head(limit)
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        typer.echo(df.to_json(orient="records", date_format="iso"))
    else:
        from rich.table import Table

        from neurolake.cli._common import console

        t = Table(*[str(c) for c in df.columns])
        for row in df.itertuples(index=False):
            t.add_row(*[str(v)[:40] for v in row])
        console().print(t)


@app.command("plot")
def plot(kind: Annotated[str, typer.Argument(help="sweep, fi, isi, raster or heatmap")],
         datastack: DsOpt, output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")],
         lake: LakeOpt = None,
         file: Annotated[str | None, typer.Option(help="file (SHA-256 prefix, path or name): sweep, isi, raster")]
         = None,
         sweep: Annotated[int | None, typer.Option(help="sweep number (sweep plot)")] = None,
         channel: Annotated[int, typer.Option(help="channel (sweep plot)")] = 0,
         cell: Annotated[str | None, typer.Option(help="cell (fi, isi)")] = None,
         well: Annotated[str | None, typer.Option(help="well, e.g. B3 (raster)")] = None,
         value: Annotated[str, typer.Option(help="mea_wells column of the heatmap")] = "firing_rate_hz",
         plate: Annotated[str | None, typer.Option(help="plate of the heatmap (when there are several)")] = None
         ) -> None:
    """Write a self-contained, offline Plotly page (plotly.js inlined: no network needed to open it)."""
    from neurolake.ephys.plots import to_html

    lk = open_lake(lake)
    fig = lk[datastack].ephys.plot(kind, file=file, sweep=sweep, channel=channel, cell=cell, well=well, value=value,
                                   plate=plate)
    output.write_text(to_html(fig))
    say(f"wrote {output}")
