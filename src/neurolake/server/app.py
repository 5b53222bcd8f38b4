"""The FastAPI application: ``create_app(lake)`` wires the routers to one open lake."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from neurolake import __version__
from neurolake.lake import Lake, open_lake
from neurolake.server import (
    annotations,
    api,
    bodies,
    boss,
    cave,
    cave_annotation,
    ephys,
    errors,
    features,
    graphene,
    meshes,
    ocp,
    precomputed,
    proofreading,
    query,
    skeletons,
    tiles,
    viewer,
    zarr,
)
from neurolake.server import http as http_hygiene
from neurolake.server.access import Need, check_app_routes, visible_datastacks
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute


def create_app(lake: Lake | str | Path, max_cutout_bytes: int | None = None, auth: bool = False) -> FastAPI:
    """Build the app for ``lake`` (an open Lake or its path).

    ``max_cutout_bytes`` overrides ``NEUROLAKE_MAX_CUTOUT_BYTES`` for this app. ``auth=True`` requires an
    API token (``neurolake.access.http``) and the role each route declares (``access=Need...`` on its
    decorator, :mod:`neurolake.server.access`); otherwise one local user has every right. Raises
    RuntimeError when a route declares no access need.
    """
    if not isinstance(lake, Lake):
        lake = open_lake(lake)
    app = FastAPI(title="neurolake", version=__version__, docs_url=None, redoc_url=None,  # offline: see below
                  description="Volumes, cutouts and metadata of a neurolake installation. "
                              "Coordinates are x, y, z voxels at the requested mip; arrays are (z, y, x).")
    app.state.lake = lake
    app.state.auth = auth
    app.state.max_cutout_bytes = max_cutout_bytes or lake.settings.max_cutout_bytes
    errors.install(app)
    bodies.install(app, lake.settings.max_body_bytes)  # 413 beyond NEUROLAKE_MAX_BODY_BYTES, as bodies arrive
    app.include_router(api.router)  # /api/v1/datastacks: JSON metadata
    app.include_router(ocp.router)  # /ocp/ca: OCP cutouts and planes
    # Fixed segments under /precomputed/{ds}/ (annotations) must come BEFORE precomputed.router,
    # whose /precomputed/{ds}/{layer}/... would otherwise match them.
    app.include_router(annotations.router)  # /api/v1/.../tables, /precomputed/{ds}/annotations/{table}
    app.include_router(boss.router)  # /v1: BossDB API for intern
    app.include_router(meshes.router)  # /precomputed{,-roots}/{ds}/{layer}/mesh*: before precomputed routers
    app.include_router(skeletons.router)  # /precomputed/{ds}/{layer}/skeletons/*: before precomputed.router
    app.include_router(precomputed.router)  # /precomputed/{ds}/{layer}: Neuroglancer precomputed
    app.include_router(zarr.router)  # /zarr/{ds}/{layer}: the stored OME-Zarr
    app.include_router(tiles.router)  # /catmaid: tiles with cache and prefetch
    app.include_router(viewer.router)  # /viewer/{ds}: bundled Neuroglancer
    features.install(app, lake, auth=auth)  # /api/v1/features, /data signed URLs, auth + quotas
    graphene.install(app, auth)  # /graphene data_dir, /meshing manifests; cloud-volume's hex tokens (after auth)
    app.include_router(cave.router)  # CAVE subset for caveclient
    app.include_router(cave_annotation.router)  # CAVE annotation engine + schema service
    app.include_router(proofreading.router)  # /api/v1/.../segmentation, versions, connectome
    app.include_router(proofreading.roots_router)  # /precomputed-roots
    app.include_router(query.router)  # /api/v1/query, /api/v1/runs: SQL with provenance
    app.include_router(ephys.router)  # /api/v1/datastacks/{ds}/ephys: recordings, features, traces, plots
    from neurolake.server import jobs as jobs_routes

    app.include_router(jobs_routes.router)  # /api/v1/jobs: heavy steps and their progress
    from neurolake import web

    app.include_router(web.router())  # /ui: the browser UI (server-rendered pages)

    root = APIRouter(route_class=PageRoute)  # a browser's error on / is an HTML page (401: the login page)

    @root.get("/", include_in_schema=False, access=Need.authenticated(), response_model=None)
    def index(request: Request) -> dict | Response:
        """JSON for API clients; the home page for browsers (``Accept: text/html``)."""
        if "text/html" in request.headers.get("accept", ""):
            from neurolake.web.browse import home_page

            return home_page(request)
        return {"neurolake": __version__, "datastacks": visible_datastacks(request), "docs": "/docs"}

    # /docs and /redoc with Swagger UI and ReDoc served by neurolake itself (fastapi-offline's copies, at
    # /ui/static/...): FastAPI's own pages load them from a CDN and are blank without internet
    @root.get("/docs", include_in_schema=False, access=Need.public("the API description"))
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="neurolake API",
                                   swagger_js_url="/ui/static/swagger-ui-bundle.js",
                                   swagger_css_url="/ui/static/swagger-ui.css",
                                   swagger_favicon_url="/ui/static/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io

    @root.get("/redoc", include_in_schema=False, access=Need.public("the API description"))
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title="neurolake API",
                              redoc_js_url="/ui/static/redoc.standalone.js",
                              redoc_favicon_url="/ui/static/favicon.png", with_google_fonts=False)

    app.include_router(root)

    # CORS + Accept-Ranges on every response, OPTIONS -> 204. Keep this the LAST add_middleware call
    # (the outermost one) so responses of other middleware (e.g. 401) carry CORS headers too.
    http_hygiene.install(app)
    check_app_routes(app)  # every route declares its access need (RuntimeError otherwise)
    return app


def app_from_env() -> FastAPI:
    """The app of one worker process of ``neurolake serve --workers N`` (uvicorn's factory, imported by
    name in each spawned worker): the lake at ``NEUROLAKE_LAKE``, ``--auth`` when ``NEUROLAKE_SERVE_AUTH=1``.
    Raises NotFound when ``NEUROLAKE_LAKE`` is not a lake."""
    from neurolake.base.settings import settings
    from neurolake.web import warm_up

    st = settings()
    app = create_app(st.lake, auth=st.serve_auth)
    warm_up()  # the explorers' libraries, before this worker's first request
    return app
