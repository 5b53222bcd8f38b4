"""The browser UI (issue 13, docs/ui.md): server-rendered pages under ``/`` and ``/ui/``, served offline.

A face like :mod:`neurolake.server`: pages translate a request into core calls and render a Jinja2
template; no core module imports this package. One module per page family, each with its own ``router``:

- :mod:`~neurolake.web.browse`: home, datastacks (layers, tables, versions, edit log), feature tables, runs;
- :mod:`~neurolake.web.image`: the 2-D pan/zoom view over the tile route, links into Neuroglancer;
- :mod:`~neurolake.web.graph`: the graph explorer (a version's connectome or an uploaded edge list);
- :mod:`~neurolake.web.vectors`: the vector explorer (a table or an uploaded CSV);
- :mod:`~neurolake.web.console`: the SQL console (paged rows, the run's manifest, reproduce, downloads).

:mod:`~neurolake.web.render` holds the shared machinery: the Jinja2 environment, the page context (nav,
user, CSRF token), Plotly figures as HTML (plotly.js served by neurolake itself), static files.
"""

from __future__ import annotations

from neurolake.server.routing import APIRouter


def router() -> APIRouter:
    """Every page route (``create_app`` includes it)."""
    from neurolake.web import browse, console, graph, image, render, vectors

    r = APIRouter()
    for mod in (render, browse, image, graph, vectors, console):
        r.include_router(mod.router)
    return r
