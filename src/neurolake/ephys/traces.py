"""Raw patch-clamp traces kept in the lake, chunked, so plots and re-analysis never need the source file again.

One Zarr v3 group per file: ``<lake>/datastacks/<ds>/ephys/traces/<file_sha256>.zarr`` with two arrays,
``response`` and ``command``, each of shape **(channel, sweep, sample)**, float64, chunks (1, 1, 65536),
Blosc-lz4 with byte shuffle; sweeps shorter than the longest are padded with NaN, and ``command`` is NaN where
a channel has no command waveform. Units: response in mV (current clamp) or pA (voltage clamp), command in pA
or mV; the group's attributes name them per channel (``channels[<channel number>]``: ``index`` on the first
axis, units, sampling rate and sample count per sweep). Any Zarr v3 reader opens it (zarr-python, tensorstore).

Written with tensorstore (the library the volumes use) into a temporary folder; :func:`write` returns a
:class:`PendingWrite` whose ``commit()`` waits for the bytes and renames the folder into place, so the ETL
overlaps compression and I/O with the next file's analysis, and a killed writer leaves no half store under the
final name. On a lake on object storage (no rename) the arrays are written under the final prefix and the group's
``zarr.json`` is written by ``commit()`` after them: a store without it is unfinished (readers say NotFound, and
the next ingest removes it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.base.names import not_found
from neurolake.ephys.model import Recording
from neurolake.ephys.tables import os_fsync_dir, root
from neurolake.errors import InvalidArgument, NotFound
from neurolake.storage.config import is_s3, storage_config
from neurolake.storage.files import remove_tree

CHUNK_SAMPLES = 65_536
ARRAYS = ("response", "command")


def store_path(lake, datastack: str, file_sha256: str) -> Path | Any:
    return root(lake, datastack) / "traces" / f"{file_sha256}.zarr"


def stored_names(lake, datastack: str) -> list[str]:
    """Names of the entries of the datastack's ``traces/`` folder (one listdir, or one LIST on object storage)."""
    folder = root(lake, datastack) / "traces"
    if is_s3(folder):
        try:
            return [k.rstrip("/").rsplit("/", 1)[-1] for k in folder.fs.ls(folder.path, detail=False, refresh=True)]
        except (FileNotFoundError, NotADirectoryError):
            return []
    return [z.name for z in folder.iterdir()] if folder.is_dir() else []


def _kvstore(path: Path | Any) -> dict[str, Any]:
    if is_s3(path):
        return storage_config().kvstore(path)
    return {"driver": "file", "path": str(path)}


def _context(lake) -> Any:
    """The lake's tensorstore context on object storage (its S3 credentials and concurrency), else None."""
    return lake.context if getattr(lake, "remote", False) else None


def _spec(path: Path | Any, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"driver": "zarr3", "kvstore": _kvstore(path),
            "metadata": {"shape": list(shape), "data_type": "float64",
                         "chunk_grid": {"name": "regular",
                                        "configuration": {"chunk_shape": [1, 1, min(CHUNK_SAMPLES, shape[2])]}},
                         "chunk_key_encoding": {"name": "default"},
                         "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                    {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5,
                                                                        "shuffle": "shuffle", "typesize": 8,
                                                                        "blocksize": 0}}],
                         "fill_value": "NaN", "dimension_names": ["channel", "sweep", "sample"]}}


@dataclass
class PendingWrite:
    """A trace store being written: ``commit()`` waits for tensorstore and renames it into place (idempotent);
    ``abort()`` removes the temporary folder."""

    tmp: Path | Any
    final: Path | Any
    futures: list[Any]
    done: bool = False
    group: str | None = None  # object storage: the group's zarr.json, written by commit() after the arrays

    def commit(self) -> Path | Any:
        if not self.done and self.group is not None:
            for f in self.futures:
                f.result()
            (self.final / "zarr.json").write_text(self.group)
            self.done = True
        if not self.done:
            for f in self.futures:
                f.result()
            if self.final.exists():
                shutil.rmtree(self.final)
            self.tmp.rename(self.final)
            os_fsync_dir(self.final.parent)
            self.done = True
        return self.final

    def abort(self) -> None:
        for f in self.futures:
            try:
                f.result()
            except Exception:  # noqa: BLE001 - aborting anyway
                pass
        remove_tree(self.tmp)


def write(lake, datastack: str, file_sha256: str, recording: Recording) -> PendingWrite:
    """Start writing ``recording``'s sweeps as the file's trace store; call ``.commit()`` on the result."""
    import tensorstore as ts

    final = store_path(lake, datastack, file_sha256)
    remote = is_s3(final)
    if remote:  # no rename: written in place, its zarr.json last (commit)
        remove_tree(final)
        tmp = final
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{file_sha256}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
    channels = sorted({s.channel for s in recording.sweeps})
    index = {c: i for i, c in enumerate(channels)}
    n_sweeps = max(s.number for s in recording.sweeps) + 1
    width = max(s.n_samples for s in recording.sweeps)
    resp = np.full((len(channels), n_sweeps, width), np.nan)
    cmd = np.full((len(channels), n_sweeps, width), np.nan)
    info: dict[str, dict] = {}
    for s in recording.sweeps:
        i = index[s.channel]
        resp[i, s.number, :s.n_samples] = s.response
        if s.command is not None:
            cmd[i, s.number, :s.command.shape[0]] = s.command
        ch = info.setdefault(str(s.channel), {"index": i, "response_unit": s.response_unit,
                                              "command_unit": s.command_unit, "sampling_rate_hz": {},
                                              "n_samples": {}})
        ch["sampling_rate_hz"][str(s.number)] = s.sampling_rate_hz
        ch["n_samples"][str(s.number)] = s.n_samples
    group = json.dumps({
        "zarr_format": 3, "node_type": "group",
        "attributes": {"neurolake_traces": 2, "file_sha256": file_sha256, "axes": ["channel", "sweep", "sample"],
                       "channels": info}})
    if not remote:
        (tmp / "zarr.json").write_text(group)
    futures = []
    ctx = _context(lake)
    for name, data in (("response", resp), ("command", cmd)):
        spec = _spec(tmp / name, data.shape)
        arr = (ts.open(spec, create=True, context=ctx) if ctx is not None else ts.open(spec, create=True)).result()
        futures.append(arr.write(data))
    return PendingWrite(tmp, final, futures, group=group if remote else None)


def delete(lake, datastack: str, file_sha256: str) -> None:
    path = store_path(lake, datastack, file_sha256)
    if is_s3(path):
        (path / "zarr.json").unlink(missing_ok=True)  # the marker first: readers then say NotFound
        remove_tree(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def describe(lake, datastack: str, file_sha256: str) -> dict:
    """The store's attributes (channels, units, rates) as a JSON-able dict. Raises NotFound."""
    path = store_path(lake, datastack, file_sha256) / "zarr.json"
    if not path.exists():
        raise NotFound(f"no traces of file {file_sha256[:12]}… in datastack {datastack!r}",
                       field="file_sha256", value=file_sha256)
    return json.loads(path.read_text()).get("attributes", {})


def read(lake, datastack: str, file_sha256: str, sweep: int, channel: int = 0) -> dict:
    """One sweep: ``{"time_s", "response", "command" (None without one)}`` as (sample,) float64 arrays, plus
    ``response_unit``, ``command_unit``, ``sampling_rate_hz``. Raises NotFound for an unknown file, sweep or
    channel."""
    import tensorstore as ts

    attrs = describe(lake, datastack, file_sha256)
    chans = attrs["channels"]
    if str(channel) not in chans:
        raise not_found("channel", str(channel), sorted(chans), field="channel")
    info = chans[str(channel)]
    if str(sweep) not in info["n_samples"]:
        raise not_found("sweep", str(sweep), sorted(info["n_samples"], key=int), field="sweep")
    n = int(info["n_samples"][str(sweep)])
    rate = float(info["sampling_rate_hz"][str(sweep)])
    base = store_path(lake, datastack, file_sha256)
    out = {}
    ctx = _context(lake)
    for name in ARRAYS:
        spec = {"driver": "zarr3", "kvstore": _kvstore(base / name)}
        arr = (ts.open(spec, open=True, context=ctx) if ctx is not None else ts.open(spec, open=True)).result()
        out[name] = np.asarray(arr[info["index"], sweep, :n].read().result())
    command = out["command"] if info.get("command_unit") is not None and not np.isnan(out["command"]).all() else None
    return {"time_s": np.arange(n) / rate, "response": out["response"], "command": command,
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
        idx = []
        for b in range(buckets):
            seg = y[edges[b]:edges[b + 1]]
            if not seg.size:
                continue
            i_lo, i_hi = edges[b] + int(np.nanargmin(seg)), edges[b] + int(np.nanargmax(seg))
            idx.extend(sorted((i_lo, i_hi)))
        idx = np.asarray(idx, dtype=np.int64)
    out = {"time_s": t[idx], "response": y[idx], "command": c[idx] if c is not None else np.full(idx.size, np.nan)}
    return pd.DataFrame(out)
