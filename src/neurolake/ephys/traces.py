"""Raw patch-clamp traces kept in the lake, chunked, so plots and re-analysis never need the source file again.

One Zarr v3 group per file: ``<lake>/datastacks/<ds>/ephys/traces/<file_sha256>.zarr`` with, per recorded
channel ``c``, the arrays ``response_c<c>`` and (when the file has a command waveform) ``command_c<c>``, each of
shape **(sweep, sample)**, float64, chunks (1, 65536), Blosc-zstd compressed; sweeps shorter than the longest
are padded with NaN (the ``sweeps`` table has each sweep's ``n_samples``). Units: response in mV (current
clamp) or pA (voltage clamp), command in pA or mV — the group's attributes name them per channel, with the
sampling rate (Hz) per sweep. The group is written to a temporary folder and renamed into place: a killed
writer leaves no half store under the final name.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np

from neurolake.base.names import not_found
from neurolake.ephys.model import Recording
from neurolake.ephys.tables import os_fsync_dir, root
from neurolake.errors import InvalidArgument, NotFound

CHUNK_SAMPLES = 65_536


def store_path(lake, datastack: str, file_sha256: str) -> Path:
    return root(lake, datastack) / "traces" / f"{file_sha256}.zarr"


def write(lake, datastack: str, file_sha256: str, recording: Recording) -> Path:
    """Write ``recording``'s sweeps as the file's trace store (replacing an older one of the same hash)."""
    import zarr
    from zarr.codecs import BloscCodec

    final = store_path(lake, datastack, file_sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{file_sha256}.{uuid.uuid4().hex}.tmp"
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    channels = sorted({s.channel for s in recording.sweeps})
    units: dict[str, dict] = {}
    for c in channels:
        sweeps = sorted((s for s in recording.sweeps if s.channel == c), key=lambda s: s.number)
        n = max(s.number for s in sweeps) + 1
        width = max(s.n_samples for s in sweeps)
        comp = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
        resp = np.full((n, width), np.nan)
        cmd = np.full((n, width), np.nan) if any(s.command is not None for s in sweeps) else None
        for s in sweeps:
            resp[s.number, :s.n_samples] = s.response
            if cmd is not None and s.command is not None:
                cmd[s.number, :s.command.shape[0]] = s.command
        chunks = (1, min(CHUNK_SAMPLES, width))
        g.create_array(f"response_c{c}", data=resp, chunks=chunks, compressors=comp, fill_value=np.nan)
        if cmd is not None:
            g.create_array(f"command_c{c}", data=cmd, chunks=chunks, compressors=comp, fill_value=np.nan)
        units[str(c)] = {"response_unit": sweeps[0].response_unit, "command_unit": sweeps[0].command_unit,
                         "sampling_rate_hz": {str(s.number): s.sampling_rate_hz for s in sweeps},
                         "n_samples": {str(s.number): s.n_samples for s in sweeps}}
    g.attrs.update({"neurolake_traces": 1, "file_sha256": file_sha256, "axes": ["sweep", "sample"],
                    "channels": units})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    os_fsync_dir(final.parent)
    return final


def delete(lake, datastack: str, file_sha256: str) -> None:
    shutil.rmtree(store_path(lake, datastack, file_sha256), ignore_errors=True)


def read(lake, datastack: str, file_sha256: str, sweep: int, channel: int = 0) -> dict:
    """One sweep: ``{"time_s", "response", "command" (None without one)}`` as (sample,) float64 arrays, plus
    ``response_unit``, ``command_unit``, ``sampling_rate_hz``. Raises NotFound for an unknown file, sweep or
    channel."""
    import zarr

    path = store_path(lake, datastack, file_sha256)
    if not (path / "zarr.json").exists():
        raise NotFound(f"no traces of file {file_sha256[:12]}… in datastack {datastack!r}",
                       field="file_sha256", value=file_sha256)
    g = zarr.open_group(str(path), mode="r")
    chans = g.attrs["channels"]
    if str(channel) not in chans:
        raise not_found("channel", str(channel), sorted(chans), field="channel")
    info = chans[str(channel)]
    if str(sweep) not in info["n_samples"]:
        raise not_found("sweep", str(sweep), sorted(info["n_samples"], key=int), field="sweep")
    n = int(info["n_samples"][str(sweep)])
    rate = float(info["sampling_rate_hz"][str(sweep)])
    response = np.asarray(g[f"response_c{channel}"][sweep, :n])
    command = np.asarray(g[f"command_c{channel}"][sweep, :n]) if f"command_c{channel}" in g else None
    return {"time_s": np.arange(n) / rate, "response": response, "command": command,
            "response_unit": info["response_unit"], "command_unit": info["command_unit"],
            "sampling_rate_hz": rate}


def decimated(lake, datastack: str, file_sha256: str, sweep: int, channel: int = 0, max_points: int = 4000):
    """The sweep reduced for plotting to at most ``max_points`` points by min/max decimation (each bucket of
    samples contributes its minimum and maximum in time order, so spikes survive). Returns a pandas DataFrame
    (time_s, response, command). Raises InvalidArgument for ``max_points`` < 2."""
    import pandas as pd

    if max_points < 2:
        raise InvalidArgument("max_points must be ≥ 2", field="max_points", value=max_points)
    tr = read(lake, datastack, file_sha256, sweep, channel)
    t, y, c = tr["time_s"], tr["response"], tr["command"]
    n = t.shape[0]
    if n <= max_points:
        idx = np.arange(n)
    else:
        buckets = max_points // 2
        edges = np.linspace(0, n, buckets + 1).astype(np.int64)
        # positions of each bucket's min and max, in time order
        idx = []
        for b in range(buckets):
            seg = y[edges[b]:edges[b + 1]]
            i_lo = edges[b] + int(np.argmin(seg)) if seg.size else edges[b]
            i_hi = edges[b] + int(np.argmax(seg)) if seg.size else edges[b]
            idx.extend(sorted((i_lo, i_hi)))
        idx = np.asarray(idx, dtype=np.int64)
    out = {"time_s": t[idx], "response": y[idx], "command": c[idx] if c is not None else np.full(idx.size, np.nan)}
    return pd.DataFrame(out)


def describe(lake, datastack: str, file_sha256: str) -> dict:
    """The store's attributes (channels, units, rates) as JSON-able dict."""
    path = store_path(lake, datastack, file_sha256) / "zarr.json"
    if not path.exists():
        raise NotFound(f"no traces of file {file_sha256[:12]}…", field="file_sha256", value=file_sha256)
    return json.loads(path.read_text()).get("attributes", {})
