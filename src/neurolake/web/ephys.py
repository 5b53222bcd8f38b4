"""Electrophysiology pages (issue 18, point 5; docs/ui.md): the recordings of a datastack, one file's sweeps
with plots, MEA plates.

- ``GET /ui/ephys/{ds}``: loaded files (format, cell/plate, sweeps, spikes, flags), the errors table, the f–I
  curves of every cell and the per-well heatmap across DIV of MEA plates;
- ``GET /ui/ephys/{ds}/files/{file}?sweep=&channel=&well=``: a patch-clamp file's sweeps (clamp mode,
  stimulus class and amplitude, the rule that classified it, QC result and reasons), the chosen sweep's trace
  with spike markers and stimulus, the ISI histogram and the cell features with their statuses; for an MEA
  file its wells (rates, bursts, treatment, DIV), the plate heatmap and the chosen well's raster.

Pages only translate: figures come from :meth:`neurolake.ephys.Ephys.plot`, rows from ``Ephys.table``.
"""

from __future__ import annotations

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from neurolake.server.access import Need
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute, figure, page

router = APIRouter(route_class=PageRoute)
MAX_POINTS = 8_000  # points of a sweep plot (min/max decimation keeps the spikes)


def _ephys(request: Request, datastack: str):
    return request.app.state.lake[datastack].ephys


@router.get("/ui/ephys/{datastack}", access=Need.read(), include_in_schema=False, response_class=HTMLResponse)
def ephys_page(datastack: str, request: Request) -> HTMLResponse:
    ep = _ephys(request, datastack)
    present = ep.tables()
    files = sorted(ep.table("files").arrow().to_pylist(), key=lambda r: (r["format"], r["name"]))
    errors = ep.table("errors").arrow().to_pylist()
    fi = figure(ep.plot("fi"), height=420) if "sweep_features" in present and "sweeps" in present else None
    heats = []  # one plate heatmap per multi-well plate (a single-array recording is one "well": no layout)
    if "mea_wells" in present:
        wells = ep.table("mea_wells", columns=["plate", "well"]).df()
        for plate, n in wells.groupby("plate")["well"].nunique().items():
            if n > 1:
                heats.append((plate, figure(ep.plot("heatmap", plate=plate), height=480)))
    return page(request, "ephys.html", title=f"{datastack}: electrophysiology", dsname=datastack,
                files=files, errors=errors, fi=fi, heats=heats, tables=present,
                crumbs=[("Home", "/ui"), (datastack, f"/ui/datastacks/{datastack}"), ("ephys", None)])


@router.get("/ui/ephys/{datastack}/files/{file}", access=Need.read(), include_in_schema=False,
            response_class=HTMLResponse)
def file_page(datastack: str, file: str, request: Request, sweep: int | None = Query(None, ge=0),
              channel: int = Query(0, ge=0), well: str | None = None) -> HTMLResponse:
    ep = _ephys(request, datastack)
    f = ep.file(file)  # NotFound names the loaded files
    sha = f["file_sha256"]
    crumbs = [("Home", "/ui"), (datastack, f"/ui/datastacks/{datastack}"), ("ephys", f"/ui/ephys/{datastack}"),
              (f["name"], None)]
    if f["format"] in ("axion_spike_list", "spike_times_h5"):
        wells = ep.table("mea_wells", file_sha256=sha).arrow().to_pylist()
        busy = [w["well"] for w in wells if w["n_spikes"]]
        well = well if well is not None else (busy[0] if busy else None)
        raster = figure(ep.plot("raster", file=sha, well=well), height=420) if well in busy else None
        return page(request, "ephys_mea.html", title=f["name"], dsname=datastack, f=f, wells=wells,
                    well=well, heat=figure(ep.plot("heatmap", file=sha), height=420), raster=raster, crumbs=crumbs)
    sweeps = sorted(ep.table("sweeps", file_sha256=sha).arrow().to_pylist(), key=lambda r: (r["sweep"], r["channel"]))
    if sweep is None:  # the first sweep with spikes, else the first sweep
        spiking = ep.table("spikes", file_sha256=sha, columns=["sweep"]).arrow()["sweep"].to_pylist()
        sweep = min(spiking) if spiking else min(r["sweep"] for r in sweeps)
    fig = figure(ep.plot("sweep", file=sha, sweep=sweep, channel=channel, max_points=MAX_POINTS), height=520)
    isi = figure(ep.plot("isi", file=sha), height=320) if len(ep.table("spikes", file_sha256=sha,
                                                                         columns=["spike"]).arrow()) > 1 else None
    cells = sorted(ep.table("cell_features", file_sha256=sha).arrow().to_pylist(),
                   key=lambda r: (r["channel"], r["feature"]))
    return page(request, "ephys_file.html", title=f["name"], dsname=datastack, f=f, sweeps=sweeps, sweep=sweep,
                channel=channel, fig=fig, isi=isi, cells=cells, crumbs=crumbs)
