"""Electrophysiology: patch-clamp (ABF, NWB) and MEA recordings as queryable tables (docs/ephys.md).

``lake["lab"].ephys`` is the :class:`Ephys` client of a datastack::

    ep = lake["slice-lab"].ephys
    report = ep.ingest("recordings/", lab="smith", conditions={"drug": "none"})
    ep.table("cell_features").df()                   # rheobase, f–I slope … with a status per value
    ep.trace(sha, sweep=3).df()                      # the stored trace (time_s, response, command)

Modules: :mod:`~neurolake.ephys.model` (what readers return), ``abf``/``nwb`` (readers), ``stimulus``
(stimulus classes), ``qc`` (per-sweep QC), ``features`` (eFEL features with statuses), ``mea``/``bursts``
(Axion spike lists, plate logs, retinal-wave HDF5, max-interval bursts), :mod:`~neurolake.ephys.tables`
(the Delta tables), :mod:`~neurolake.ephys.traces` (Zarr traces), :mod:`~neurolake.ephys.etl` (the ingest),
``plots`` (Plotly figures).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurolake.base.results import Result
    from neurolake.ephys.etl import IngestReport, Progress


class Ephys:
    """The ephys tables of one datastack. Holds no state beyond the lake and the datastack's name."""

    def __init__(self, lake, datastack: str) -> None:
        self.lake = lake
        self.datastack = datastack

    def __repr__(self) -> str:
        return f"<Ephys of datastack {self.datastack!r}>"

    def ingest(self, source: str | Path | Iterable[str | Path], *, lab: str | None = None,
               conditions: dict[str, str] | None = None, progress: Progress | None = None,
               mea_params: Any = None, qc_thresholds: dict[str, float] | None = None,
               feature_settings: dict[str, Any] | None = None) -> IngestReport:
        """Load a folder (recursively), a file or a list of files; see :func:`neurolake.ephys.etl.ingest`."""
        from neurolake.ephys.etl import ingest

        return ingest(self.lake, self.datastack, source, lab=lab, conditions=conditions, progress=progress,
                      mea_params=mea_params, qc_thresholds=qc_thresholds, feature_settings=feature_settings)

    def tables(self) -> list[str]:
        """Names of the ephys tables that hold data."""
        from neurolake.ephys import tables

        return [t for t in tables.TABLES if tables.exists(self.lake, self.datastack, t)]

    def table(self, name: str, *, version: int | None = None, file_sha256: str | None = None,
              cell: str | None = None, columns: list[str] | None = None) -> Result:
        """Rows of ephys table ``name`` (see :data:`neurolake.ephys.tables.SCHEMAS`), at Delta ``version``
        (None = newest), optionally of one file or cell. Returns a :class:`~neurolake.base.results.Result`
        (``metadata``: datastack, table, version). Raises NotFound for an unknown table name."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        from neurolake.base.results import Result
        from neurolake.ephys import tables

        tables.table_path(self.lake, self.datastack, name)  # NotFound for a bad name
        if columns is not None:
            from neurolake.errors import InvalidArgument

            bad = [c for c in columns if c not in tables.SCHEMAS[name].names]
            if bad:
                raise InvalidArgument(f"ephys table {name} has no column {bad[0]!r}; columns: "
                                      f"{', '.join(tables.SCHEMAS[name].names)}", field="columns", value=bad[0])
        filt = None
        if file_sha256 is not None:
            filt = pc.field("file_sha256") == file_sha256
        if cell is not None and "cell" in tables.SCHEMAS[name].names:
            f = pads.field("cell") == cell
            filt = f if filt is None else filt & f
        out = tables.read(self.lake, self.datastack, name, columns=columns, filter=filt, version=version)
        v = version if version is not None else tables.version(self.lake, self.datastack, name)
        return Result(out, {"datastack": self.datastack, "table": f"ephys.{name}", "version": v,
                            "filters": {"file_sha256": file_sha256, "cell": cell} if (file_sha256 or cell) else None})

    def file(self, ref: str) -> dict[str, Any]:
        """The ``files`` row of a file named by its SHA-256 (or a unique prefix of ≥ 6 characters), its path or
        its file name. Raises NotFound (naming some loaded files) or InvalidArgument (ambiguous)."""
        from neurolake.base.names import not_found
        from neurolake.errors import InvalidArgument

        rows = self.table("files").arrow().to_pylist()
        hits = [r for r in rows if r["path"] == ref or r["name"] == ref
                or (len(ref) >= 6 and r["file_sha256"].startswith(ref))]
        if not hits:
            raise not_found("ephys file", ref, [r["name"] for r in rows], within=("datastack", self.datastack),
                            field="file")
        if len({r["file_sha256"] for r in hits}) > 1:
            raise InvalidArgument(f"{ref!r} names {len(hits)} files; give the SHA-256 or the path",
                                  field="file", value=ref)
        return hits[0]

    def trace(self, file: str, sweep: int, channel: int = 0, *, max_points: int | None = None) -> Result:
        """One stored sweep as a Result with columns time_s (s), response (mV or pA), command (pA or mV; NaN
        without a command); ``max_points`` decimates for plotting (min/max per bucket, spikes survive).
        ``file``: SHA-256 (prefix), path or name. Raises NotFound."""
        import pyarrow as pa

        from neurolake.base.results import Result
        from neurolake.ephys import traces

        sha = self.file(file)["file_sha256"]
        if max_points:
            df = traces.decimated(self.lake, self.datastack, sha, sweep, channel, max_points)
            info = traces.read(self.lake, self.datastack, sha, sweep, channel)
        else:
            info = traces.read(self.lake, self.datastack, sha, sweep, channel)
            import numpy as np
            import pandas as pd

            cmd = info["command"] if info["command"] is not None else np.full(info["time_s"].size, np.nan)
            df = pd.DataFrame({"time_s": info["time_s"], "response": info["response"], "command": cmd})
        return Result(pa.Table.from_pandas(df, preserve_index=False),
                      {"datastack": self.datastack, "table": "ephys.traces", "file_sha256": sha, "sweep": sweep,
                       "channel": channel, "response_unit": info["response_unit"],
                       "command_unit": info["command_unit"], "sampling_rate_hz": info["sampling_rate_hz"],
                       "decimated_to": max_points})

    PLOTS = ("sweep", "fi", "isi", "raster", "heatmap")

    def plot(self, kind: str, *, file: str | None = None, sweep: int | None = None, channel: int = 0,
             cell: str | None = None, well: str | None = None, value: str = "firing_rate_hz",
             plate: str | None = None, max_points: int = 20_000):
        """A Plotly figure (:mod:`neurolake.ephys.plots`; ``plots.to_html`` makes an offline page) of kind:

        - ``sweep``: ``file`` + ``sweep`` (+ ``channel``): the stored trace (min/max-decimated to ``max_points``)
          with spike markers, the stimulus below;
        - ``fi``: the f–I curve of every cell (or ``cell``/``file``) from long-square sweep features;
        - ``isi``: inter-spike-interval histogram of ``file``/``cell`` (patch clamp) or of an MEA ``file``/``well``;
        - ``raster``: MEA spike raster of ``well`` of ``file``;
        - ``heatmap``: per-well ``value`` (a ``mea_wells`` column) in the plate layout, one panel per DIV, of
          ``plate`` (needed when the table holds several plates) or of ``file``.

        Raises InvalidArgument (unknown kind, missing argument), NotFound (unknown file, sweep, well)."""
        import pyarrow.compute as pc

        from neurolake.ephys import plots
        from neurolake.errors import InvalidArgument, NotFound

        if kind not in self.PLOTS:
            raise InvalidArgument(f"plot kind {kind!r} must be one of {', '.join(self.PLOTS)}", field="kind",
                                  value=kind, allowed=list(self.PLOTS))
        sha = self.file(file)["file_sha256"] if file else None

        def need(what: str, v: object) -> None:
            if v is None:
                raise InvalidArgument(f"a {kind} plot needs {what}", field=what)

        if kind == "sweep":
            need("file", sha)
            need("sweep", sweep)
            trace = self.trace(sha, sweep, channel, max_points=max_points).df()
            sw = self.table("sweeps", file_sha256=sha).arrow()
            sw = sw.filter(pc.and_(pc.equal(sw["sweep"], sweep), pc.equal(sw["channel"], channel))).to_pylist()
            spikes = self.table("spikes", file_sha256=sha).df()
            spikes = spikes[(spikes["sweep"] == sweep) & (spikes["channel"] == channel)]
            return plots.sweep_figure(trace, spikes, sw[0] if sw else None)
        if kind == "fi":
            return plots.fi_curve(self.table("sweep_features", file_sha256=sha, cell=cell).df(),
                                  self.table("sweeps", file_sha256=sha, cell=cell).df())
        if kind == "isi":
            if sha and not self.table("spikes", file_sha256=sha, columns=["spike"]).arrow().num_rows:
                mea = self.table("mea_spikes", file_sha256=sha).df()
                if well is not None:
                    mea = mea[mea["well"] == well]
                return plots.isi_histogram(mea, time_column="time_s", by="electrode" if well else "well")
            return plots.isi_histogram(self.table("spikes", file_sha256=sha, cell=cell).df())
        if kind == "raster":
            need("file", sha)
            need("well", well)
            mea = self.table("mea_spikes", file_sha256=sha).df()
            if not (mea["well"] == well).any():
                raise NotFound(f"well {well!r} has no spikes in this file; wells: "
                               f"{', '.join(sorted(mea['well'].unique())[:48])}", field="well", value=well)
            return plots.mea_raster(mea, well)
        wells = self.table("mea_wells", file_sha256=sha).df()
        return plots.well_heatmap(wells, value, plate=plate)


__all__ = ["Ephys"]
