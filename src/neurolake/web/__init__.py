"""The browser UI (issue 13, docs/ui.md): server-rendered pages under ``/`` and ``/ui/``, served offline.

A face like :mod:`neurolake.server`: pages translate a request into core calls and render a Jinja2
template; no core module imports this package. One module per page family, each with its own ``router``:

- :mod:`~neurolake.web.browse`: home, datastacks (layers, tables, versions, edit log), feature tables, runs;
- :mod:`~neurolake.web.image`: the 2-D pan/zoom view over the tile route, links into Neuroglancer;
- :mod:`~neurolake.web.graph`: the graph explorer (a version's connectome or an uploaded edge list);
- :mod:`~neurolake.web.vectors`: the vector explorer (a table or an uploaded CSV);
- :mod:`~neurolake.web.console`: the SQL console (paged rows, the run's manifest, reproduce, downloads);
- :mod:`~neurolake.web.ephys`: electrophysiology: files, sweeps with plots, cell features, MEA plates.

:mod:`~neurolake.web.render` holds the shared machinery: the Jinja2 environment, the page context (nav,
user, CSRF token), Plotly figures as HTML (plotly.js served by neurolake itself), static files.
"""

from __future__ import annotations

from neurolake.server.routing import APIRouter


def router() -> APIRouter:
    """Every page route (``create_app`` includes it)."""
    from neurolake.web import browse, console, ephys, graph, image, render, vectors

    r = APIRouter()
    for mod in (render, browse, image, graph, vectors, console, ephys):
        r.include_router(mod.router)
    return r


def warm_up() -> None:
    """Import the explorers' heavy libraries (plotly, igraph, leidenalg, scikit-learn; ~1–8 s) before a
    server answers (``neurolake serve`` calls it), so the first graph or vector page does not pay for
    them. Synchronous on purpose: importing them in a thread while a request imports them too can
    deadlock on the import locks."""
    import importlib

    for name in ("plotly.graph_objects", "igraph", "leidenalg", "sklearn.decomposition"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a page reports a missing library when it needs it
            pass
