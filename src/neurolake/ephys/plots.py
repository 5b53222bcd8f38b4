"""Plotly figures of electrophysiology tables, and self-contained offline HTML.

Every function takes pandas DataFrames with the columns of the ephys Delta tables (docs/ephys.md; the
``sweeps``, ``spikes``, ``sweep_features``, ``mea_spikes`` and ``mea_wells`` tables, or the decimated trace
frame ``time_s, response, command`` of :mod:`neurolake.ephys.traces`) and returns a
:class:`plotly.graph_objects.Figure` whose traces carry the data unchanged (no resampling here: decimate
before plotting). :func:`to_html` writes a figure as one HTML page with plotly.js inlined, so it opens with
no network (no CDN, no external ``<script src>``).

Units follow the tables: time in s (ISIs in ms), membrane potential in mV, current in pA, rates in Hz.
Errors: a missing column, an empty selection or an ambiguous selection (several wells or plates where one
is needed) raise :class:`neurolake.errors.InvalidArgument` naming the field, the value and what is allowed.

This is a core module: it imports pandas, numpy and plotly, never the faces (cli, server, web).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from neurolake.errors import InvalidArgument

__all__ = ["sweep_figure", "fi_curve", "isi_histogram", "mea_raster", "well_heatmap", "plate_shape",
           "parse_well", "to_html", "PLATE_FORMATS"]

# (rows, columns) of the standard multi-well plate formats (ANSI/SLAS 1-2004); Axion Maestro 48-well = 6 x 8
PLATE_FORMATS: tuple[tuple[int, int], ...] = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24))
_WELL = re.compile(r"^\s*([A-Pa-p])\s*0*(\d{1,2})\s*$")
_GL_POINTS = 5_000  # above this many points a scatter trace uses WebGL (Scattergl)

# default axis units by clamp mode when the sweep row names none: (response, command)
_UNITS = {"current_clamp": ("mV", "pA"), "voltage_clamp": ("pA", "mV")}


# -- helpers --------------------------------------------------------------------------------------
def _need(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidArgument(f"{what} lacks column(s) {missing}; it has {list(df.columns)}", field=what,
                              value=missing, allowed=list(cols))


def _row_get(row: Mapping[str, Any] | pd.Series | None, key: str) -> Any:
    if row is None:
        return None
    try:
        v = row[key]
    except (KeyError, IndexError):
        return None
    try:
        missing = v is None or bool(pd.isna(v))
    except (TypeError, ValueError):  # list-like values (flags, qc_reasons)
        missing = False
    return None if missing else v


def _one_plate(df: pd.DataFrame, plate: str | None, what: str) -> pd.DataFrame:
    """The rows of ``plate`` (or all rows when the frame holds at most one plate, or has no ``plate`` column).
    Raises InvalidArgument for a plate not in the frame, or no plate named when it holds several."""
    if "plate" not in df.columns:
        return df
    plates = sorted(df["plate"].dropna().astype(str).unique())
    if plate is not None:
        if plate not in plates:
            raise InvalidArgument(f"plate {plate!r} is not in {what}; plates: {plates}", field="plate",
                                  value=plate, allowed=plates)
        return df[df["plate"].astype(str) == plate]
    if len(plates) > 1:
        raise InvalidArgument(f"{what} holds {len(plates)} plates; choose one: {plates}", field="plate",
                              value=None, allowed=plates)
    return df


def _scatter(n: int):
    return go.Scattergl if n > _GL_POINTS else go.Scatter


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{v:g}"
    return str(v)


# -- patch clamp ----------------------------------------------------------------------------------
def sweep_figure(trace: pd.DataFrame, spikes: pd.DataFrame | None = None,
                 sweep: Mapping[str, Any] | pd.Series | None = None, *, title: str | None = None) -> go.Figure:
    """One sweep: the response on top with a marker at each spike's peak (and threshold), the stimulus below,
    sharing the time axis.

    ``trace``: columns ``time_s`` (s from the sweep start), ``response`` (mV in current clamp, pA in voltage
    clamp) and optionally ``command`` (pA / mV; absent or all-NaN → no stimulus panel). ``spikes``: rows of
    the ``spikes`` table (``peak_time_s``, ``peak_mv``, optionally ``threshold_time_s``, ``threshold_mv``);
    when they carry ``sweep``/``channel`` (and ``cell``/``file_sha256``) and ``sweep`` names them, only that
    sweep's spikes are drawn. ``sweep``: a row of the ``sweeps`` table (dict or Series) giving the axis units
    (``response_unit``, ``command_unit``, else from ``clamp_mode``) and the title (cell, sweep, channel,
    stimulus, and "QC failed (reasons)" when ``qc_passed`` is False).

    Traces: ``fig.data[0]`` the response (x = time_s, y = response, unchanged), then ``"spike peaks"``
    (one marker per spike) and ``"spike thresholds"`` when given, then ``"stimulus"``.
    Raises InvalidArgument when a needed column is missing.
    """
    _need(trace, ("time_s", "response"), "trace")
    mode = _row_get(sweep, "clamp_mode")
    d_resp, d_cmd = _UNITS.get(mode, ("mV", "pA") if mode is None else ("", ""))
    r_unit = _row_get(sweep, "response_unit") or d_resp
    c_unit = _row_get(sweep, "command_unit") or d_cmd
    t = trace["time_s"].to_numpy(dtype=np.float64)
    has_cmd = "command" in trace.columns and bool(trace["command"].notna().any())
    rows = 2 if has_cmd else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.72, 0.28] if has_cmd else [1.0])
    sc = _scatter(len(t))
    fig.add_trace(sc(x=t, y=trace["response"].to_numpy(dtype=np.float64), mode="lines", name="response",
                     line={"width": 1, "color": "#1f4e79"}), row=1, col=1)
    if spikes is not None and len(spikes):
        sp = _sweep_spikes(spikes, sweep)
        if len(sp):
            _need(sp, ("peak_time_s", "peak_mv"), "spikes")
            fig.add_trace(go.Scatter(x=sp["peak_time_s"].to_numpy(dtype=np.float64),
                                     y=sp["peak_mv"].to_numpy(dtype=np.float64), mode="markers",
                                     name="spike peaks", marker={"symbol": "triangle-down", "size": 8,
                                                                 "color": "#c0392b"}), row=1, col=1)
            if {"threshold_time_s", "threshold_mv"} <= set(sp.columns) and sp["threshold_mv"].notna().any():
                th = sp[sp["threshold_mv"].notna()]
                fig.add_trace(go.Scatter(x=th["threshold_time_s"].to_numpy(dtype=np.float64),
                                         y=th["threshold_mv"].to_numpy(dtype=np.float64), mode="markers",
                                         name="spike thresholds", marker={"symbol": "circle-open", "size": 7,
                                                                          "color": "#e67e22"}), row=1, col=1)
    if has_cmd:
        fig.add_trace(sc(x=t, y=trace["command"].to_numpy(dtype=np.float64), mode="lines", name="stimulus",
                         line={"width": 1, "color": "#555555"}), row=2, col=1)
        fig.update_yaxes(title_text=f"stimulus ({c_unit})" if c_unit else "stimulus", row=2, col=1)
    fig.update_yaxes(title_text=f"response ({r_unit})" if r_unit else "response", row=1, col=1)
    fig.update_xaxes(title_text="time (s)", row=rows, col=1)
    if title is None and sweep is not None:
        parts = [_fmt(_row_get(sweep, k)) for k in ("cell",) if _row_get(sweep, k) is not None]
        for key, label in (("sweep", "sweep"), ("channel", "ch")):
            if _row_get(sweep, key) is not None:
                parts.append(f"{label} {_fmt(_row_get(sweep, key))}")
        cls, amp = _row_get(sweep, "stimulus_class"), _row_get(sweep, "stimulus_amplitude_pa")
        if cls:
            parts.append(f"{cls}" + (f" {amp:g} pA" if amp is not None else ""))
        passed = _row_get(sweep, "qc_passed")
        if passed is not None and not bool(passed):
            reasons = _row_get(sweep, "qc_reasons")
            reasons = ", ".join(str(r) for r in reasons) if reasons is not None and len(reasons) else ""
            parts.append("QC failed" + (f" ({reasons})" if reasons else ""))
        title = " · ".join(parts) or None
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified", height=520 if has_cmd else 400,
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return fig


def _sweep_spikes(spikes: pd.DataFrame, sweep: Mapping[str, Any] | pd.Series | None) -> pd.DataFrame:
    """The spikes of the sweep row ``sweep`` (all of ``spikes`` when it names no sweep)."""
    sp = spikes
    for key in ("file_sha256", "cell", "sweep", "channel"):
        v = _row_get(sweep, key)
        if v is not None and key in sp.columns:
            sp = sp[sp[key] == v]
    return sp


def fi_curve(sweep_features: pd.DataFrame, sweeps: pd.DataFrame | None = None, *,
             rate_feature: str = "mean_frequency_hz",
             stimulus_classes: Iterable[str] | None = ("long_square", "square")) -> go.Figure:
    """The f–I curve: spike frequency (Hz) against stimulus amplitude (pA), one line per cell.

    ``sweep_features``: the long-format ``sweep_features`` table (``cell``, ``sweep``, ``channel``,
    ``feature``, ``value``, ``status``). The amplitude comes from its ``stimulus_amplitude_pa`` column if it
    has one, else from ``sweeps`` (the ``sweeps`` table), joined on ``file_sha256`` (when both have it),
    ``cell``, ``sweep``, ``channel``. A sweep's frequency is its ``rate_feature`` value when that is ``ok``;
    a sweep whose ``spike_count`` is ``ok`` and 0 counts as 0 Hz (eFEL gives no mean frequency without
    spikes); other sweeps (failed, qc_excluded, not applicable) are left out. Only current-clamp sweeps of
    ``stimulus_classes`` (None: all) with a known amplitude are drawn, sorted by amplitude.

    Traces: one per cell (cells with several channels: one per (cell, channel)), x = amplitude in pA,
    y = frequency in Hz. Raises InvalidArgument when columns are missing or no sweep qualifies.
    """
    _need(sweep_features, ("cell", "sweep", "channel", "feature", "value", "status"), "sweep_features")
    keys = ["cell", "sweep", "channel"]
    if "file_sha256" in sweep_features.columns and (sweeps is None or "file_sha256" in sweeps.columns):
        keys = ["file_sha256", *keys]
    sf = sweep_features
    ok = sf["status"] == "ok"
    rate = sf[ok & (sf["feature"] == rate_feature)].set_index(keys)["value"].astype(float)
    count = sf[ok & (sf["feature"] == "spike_count")].set_index(keys)["value"].astype(float)
    freq = pd.concat([rate, (count[count == 0] * 0.0).rename("value")])
    freq = freq[~freq.index.duplicated(keep="first")].rename("frequency_hz").reset_index()
    if "stimulus_amplitude_pa" in sf.columns:
        amp = sf[keys + ["stimulus_amplitude_pa"] + [c for c in ("stimulus_class", "clamp_mode") if c in sf.columns]]
        amp = amp.drop_duplicates(keys)
    elif sweeps is not None:
        _need(sweeps, (*keys, "stimulus_amplitude_pa"), "sweeps")
        amp = sweeps[keys + ["stimulus_amplitude_pa"] + [c for c in ("stimulus_class", "clamp_mode")
                                                         if c in sweeps.columns]].drop_duplicates(keys)
    else:
        raise InvalidArgument("fi_curve needs the stimulus amplitudes: pass the sweeps table or a "
                              "stimulus_amplitude_pa column in sweep_features", field="sweeps", value=None)
    df = freq.merge(amp, on=keys, how="inner")
    df = df[df["stimulus_amplitude_pa"].notna()]
    if "clamp_mode" in df.columns:
        df = df[df["clamp_mode"].isna() | (df["clamp_mode"] == "current_clamp")]
    if stimulus_classes is not None and "stimulus_class" in df.columns:
        df = df[df["stimulus_class"].isin(list(stimulus_classes))]
    if df.empty:
        raise InvalidArgument(f"no sweep has an ok {rate_feature!r} (or spike_count 0) and a stimulus amplitude"
                              + (f" among stimulus classes {list(stimulus_classes)}" if stimulus_classes else ""),
                              field="rate_feature", value=rate_feature)
    fig = go.Figure()
    group = [k for k in ("file_sha256", "cell") if k in df.columns]
    n_channels = df.groupby(group, sort=True)["channel"].nunique().to_dict()
    for gkey, g in df.groupby(group + ["channel"], sort=True):
        cell, ch = gkey[-2], gkey[-1]
        ckey = gkey[:-1] if len(group) > 1 else gkey[0]
        name = str(cell) if n_channels[ckey] == 1 else f"{cell} ch {ch}"
        g = g.sort_values(["stimulus_amplitude_pa", "sweep"])
        fig.add_trace(go.Scatter(x=g["stimulus_amplitude_pa"].to_numpy(dtype=np.float64),
                                 y=g["frequency_hz"].to_numpy(dtype=np.float64), mode="lines+markers", name=name,
                                 customdata=g["sweep"].to_numpy(),
                                 hovertemplate="%{x:g} pA → %{y:.3g} Hz (sweep %{customdata})<extra>%{fullData.name}"
                                               "</extra>"))
    fig.update_layout(title="f–I curve", template="plotly_white", xaxis_title="stimulus amplitude (pA)",
                      yaxis_title=f"spike frequency (Hz): {rate_feature}")
    return fig


def isi_histogram(spikes: pd.DataFrame, *, time_column: str | None = None, by: str | None = None,
                  bin_ms: float | None = None, log_x: bool = False) -> go.Figure:
    """Histogram of inter-spike intervals in ms, one overlaid histogram per group.

    ``spikes``: the patch-clamp ``spikes`` table (ISIs between successive spikes of one sweep and channel, from
    ``peak_time_s``) or the ``mea_spikes`` table (ISIs per electrode, from ``time_s``); ``time_column``
    overrides the time column (s). ``by``: the column naming a histogram (default ``cell`` for patch clamp,
    ``well`` for MEA). ``bin_ms``: bin width in ms (default: Plotly's automatic bins). ``log_x``: histogram
    of log10(ISI/ms) instead (the x axis says so).

    Traces: one ``go.Histogram`` per group, ``x`` = the ISIs in ms (log10 ms when ``log_x``) in the order of
    the input. Raises InvalidArgument on missing columns or when no group has two spikes.
    """
    mea = "electrode" in spikes.columns and "time_s" in spikes.columns
    tcol = time_column or ("time_s" if mea else "peak_time_s")
    part = [c for c in (("file_sha256", "plate", "well", "electrode") if mea
                        else ("file_sha256", "cell", "sweep", "channel")) if c in spikes.columns]
    by = by or ("well" if mea else "cell")
    _need(spikes, (tcol, by), "spikes")
    df = spikes[part + ([by] if by not in part else []) + [tcol]].dropna(subset=[tcol])
    df = df.sort_values(part + [tcol], kind="stable")
    isi_ms = df.groupby(part, sort=False)[tcol].diff() * 1000.0 if part else df[tcol].diff() * 1000.0
    df = df.assign(isi_ms=isi_ms).dropna(subset=["isi_ms"])
    if df.empty:
        raise InvalidArgument("no sweep/electrode has two spikes: no inter-spike interval to plot",
                              field="spikes", value=len(spikes))
    fig = go.Figure()
    xbins = None
    if bin_ms is not None:
        if not bin_ms > 0:
            raise InvalidArgument(f"bin_ms {bin_ms!r} must be > 0", field="bin_ms", value=bin_ms)
        xbins = {"size": math.log10(1 + bin_ms) if log_x else bin_ms}
    for key, g in df.groupby(by, sort=True):
        x = g["isi_ms"].to_numpy(dtype=np.float64)
        if log_x:
            x = np.log10(x[x > 0])
        fig.add_trace(go.Histogram(x=x, name=str(key), opacity=0.6, xbins=xbins))
    fig.update_layout(title="inter-spike intervals", template="plotly_white", barmode="overlay",
                      xaxis_title="log10(ISI / ms)" if log_x else "inter-spike interval (ms)",
                      yaxis_title="count")
    return fig


# -- MEA ------------------------------------------------------------------------------------------
def mea_raster(mea_spikes: pd.DataFrame, well: str | None = None, *, plate: str | None = None,
               t_start_s: float | None = None, t_end_s: float | None = None) -> go.Figure:
    """Spike raster of one MEA well: one row per electrode (y), spike times in s (x).

    ``mea_spikes``: the ``mea_spikes`` table (``well``, ``electrode``, ``time_s``; ``plate`` optional). ``well``
    selects the well (e.g. ``"D3"``; needed when the frame holds several), ``plate`` the plate likewise.
    ``t_start_s``/``t_end_s`` cut the time window (s).

    Traces: ``fig.data[0]``, one marker per spike, x = ``time_s`` and y = ``electrode`` in the input order
    (electrodes ordered on the axis by name). Raises InvalidArgument on missing columns, an unknown or
    ambiguous well/plate, or an empty selection.
    """
    _need(mea_spikes, ("well", "electrode", "time_s"), "mea_spikes")
    df = _one_plate(mea_spikes, plate, "the spikes")
    wells = sorted(df["well"].dropna().astype(str).unique())
    if well is None:
        if len(wells) != 1:
            raise InvalidArgument(f"choose a well: the spikes hold {len(wells)} wells {wells[:20]}", field="well",
                                  value=None, allowed=wells)
        well = wells[0]
    if well not in wells:
        raise InvalidArgument(f"well {well!r} has no spikes; wells with spikes: {wells}", field="well", value=well,
                              allowed=wells)
    df = df[df["well"].astype(str) == well]
    if t_start_s is not None:
        df = df[df["time_s"] >= t_start_s]
    if t_end_s is not None:
        df = df[df["time_s"] < t_end_s]
    if df.empty:
        raise InvalidArgument(f"well {well!r} has no spike in [{t_start_s}, {t_end_s}) s", field="t_start_s",
                              value=[t_start_s, t_end_s])
    electrodes = sorted(df["electrode"].astype(str).unique())
    fig = go.Figure(go.Scattergl(x=df["time_s"].to_numpy(dtype=np.float64), y=df["electrode"].astype(str).to_numpy(),
                                 mode="markers", name=f"well {well}",
                                 marker={"symbol": "line-ns-open", "size": 9, "line": {"width": 1},
                                         "color": "#1f4e79"},
                                 hovertemplate="%{y}: %{x:.4f} s<extra></extra>"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=electrodes, title_text="electrode",
                     autorange="reversed", dtick=1)
    fig.update_xaxes(title_text="time (s)")
    fig.update_layout(title=f"well {well}: {len(df)} spikes on {len(electrodes)} electrodes",
                      template="plotly_white", height=max(300, 40 + 22 * len(electrodes)), showlegend=False)
    return fig


def parse_well(name: str) -> tuple[int, int]:
    """``"D3"`` → ``(3, 2)``: 0-based (row, column) of a well named row letter + column number.
    Raises InvalidArgument for anything else."""
    m = _WELL.match(str(name))
    if not m or int(m.group(2)) < 1:
        raise InvalidArgument(f"well {name!r} must be a row letter A-P and a column number, like 'D3'",
                              field="well", value=name)
    return ord(m.group(1).upper()) - ord("A"), int(m.group(2)) - 1


def plate_shape(wells: Iterable[str]) -> tuple[int, int]:
    """(rows, columns) of the smallest standard plate (:data:`PLATE_FORMATS`: 6, 12, 24, 48, 96, 384 wells)
    holding every named well; e.g. wells up to F8 → (6, 8), a Maestro 48-well plate. Raises InvalidArgument
    on a malformed well name or no wells."""
    pos = [parse_well(w) for w in wells]
    if not pos:
        raise InvalidArgument("no wells to lay out", field="wells", value=[])
    need_r, need_c = max(p[0] for p in pos) + 1, max(p[1] for p in pos) + 1
    for r, c in PLATE_FORMATS:
        if r >= need_r and c >= need_c:
            return r, c
    return need_r, need_c


def well_heatmap(mea_wells: pd.DataFrame, value: str = "firing_rate_hz", *, plate: str | None = None,
                 shape: tuple[int, int] | None = None, panels_per_row: int = 4) -> go.Figure:
    """Per-well ``value`` in the plate's layout, one heatmap panel per DIV (days in vitro), sharing one colour
    scale.

    ``mea_wells``: the ``mea_wells`` table (``well``, ``value``; ``div``, ``plate`` optional). The layout (rows ×
    columns) is the smallest standard plate holding the wells (:func:`plate_shape`; 48-well Maestro: 6 × 8,
    rows A–F top to bottom, columns 1–8) unless ``shape`` gives it. Several rows for one (well, DIV) (e.g.
    two recordings) are averaged; the hover says how many. Wells without a row are empty (NaN).

    Traces: one ``go.Heatmap`` per DIV in ascending DIV order (name ``"DIV <n>"``, or ``"DIV ?"`` for rows
    without a DIV), ``z[row][col]`` = the value of the well at that 0-based (row, column), ``y`` = row
    letters, ``x`` = column numbers. Raises InvalidArgument on a missing or non-numeric ``value`` column, a
    well outside ``shape``, or several plates without ``plate``.
    """
    _need(mea_wells, ("well",), "mea_wells")
    if value not in mea_wells.columns or not pd.api.types.is_numeric_dtype(mea_wells[value]):
        numeric = [c for c in mea_wells.columns if pd.api.types.is_numeric_dtype(mea_wells[c]) and c != "div"]
        raise InvalidArgument(f"value {value!r} is not a numeric column of mea_wells; numeric columns: {numeric}",
                              field="value", value=value, allowed=numeric)
    df = _one_plate(mea_wells, plate, "mea_wells")
    if df.empty:
        raise InvalidArgument("no wells to plot", field="mea_wells", value=0)
    pos = [parse_well(w) for w in df["well"].astype(str)]
    n_rows, n_cols = shape if shape is not None else plate_shape(df["well"].astype(str))
    bad = [w for w, (r, c) in zip(df["well"].astype(str), pos, strict=True) if r >= n_rows or c >= n_cols]
    if bad:
        raise InvalidArgument(f"wells {sorted(set(bad))} lie outside a {n_rows} x {n_cols} plate", field="shape",
                              value=list(shape or (n_rows, n_cols)))
    df = df.assign(_r=[p[0] for p in pos], _c=[p[1] for p in pos],
                   _div=df["div"] if "div" in df.columns else np.nan)
    divs = sorted(df["_div"].dropna().unique().tolist()) + ([None] if df["_div"].isna().any() else [])
    vals = df[value].astype(float)
    zmin, zmax = (float(np.nanmin(vals)), float(np.nanmax(vals))) if vals.notna().any() else (0.0, 1.0)
    n_panels = len(divs)
    ncols = max(1, min(panels_per_row, n_panels))
    nrows = math.ceil(n_panels / ncols)
    names = [f"DIV {_fmt(d)}" if d is not None else "DIV ?" for d in divs]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=names, horizontal_spacing=0.04,
                        vertical_spacing=0.12 if nrows > 1 else 0.08)
    row_labels = [chr(ord("A") + i) for i in range(n_rows)]
    col_labels = [str(i + 1) for i in range(n_cols)]
    for i, (d, name) in enumerate(zip(divs, names, strict=True)):
        sub = df[df["_div"].isna()] if d is None else df[df["_div"] == d]
        agg = sub.groupby(["_r", "_c"])[value].agg(["mean", "count"])
        z = np.full((n_rows, n_cols), np.nan)
        n = np.zeros((n_rows, n_cols), dtype=int)
        for (r, c), a in agg.iterrows():
            z[int(r), int(c)] = a["mean"]
            n[int(r), int(c)] = int(a["count"])
        wells = np.array([[f"{row_labels[r]}{c + 1}" for c in range(n_cols)] for r in range(n_rows)])
        fig.add_trace(go.Heatmap(z=z, x=col_labels, y=row_labels, name=name, zmin=zmin, zmax=zmax,
                                 coloraxis="coloraxis", customdata=np.dstack([wells, n]), xgap=2, ygap=2,
                                 hovertemplate="well %{customdata[0]}: %{z:.3g}" + f" ({value})"
                                               "<br>%{customdata[1]} recording(s)<extra>" + name + "</extra>"),
                      row=i // ncols + 1, col=i % ncols + 1)
    fig.update_yaxes(autorange="reversed", type="category", scaleanchor=None)
    fig.update_xaxes(type="category", side="bottom")
    title = f"{value} per well" + (f", plate {plate}" if plate else "")
    fig.update_layout(title=title, template="plotly_white", coloraxis={"colorscale": "Viridis",
                                                                       "colorbar": {"title": {"text": value}}},
                      height=max(360, 90 + nrows * (50 + 34 * n_rows)), width=max(520, 120 + ncols * (30 + 34 * n_cols)))
    return fig


# -- output ---------------------------------------------------------------------------------------
def to_html(fig: go.Figure, *, full_html: bool = True, title: str | None = None) -> str:
    """The figure as one HTML document (or a ``<div>`` when not ``full_html``) that works offline: plotly.js
    (about 4.8 MB) is inlined, no CDN and no external ``<script src>``; MathJax is not used."""
    html = fig.to_html(include_plotlyjs=True, full_html=full_html, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})
    if title and full_html:
        from html import escape

        html = html.replace("<head>", f"<head><title>{escape(title)}</title>", 1)
    return html
