"""The SQL console (issue 13, point 6): SQL in, a paged table out, the run's manifest, reproduce, downloads.

Routes (all ``Need.authenticated()``: the engine checks the principal's rights on every table the SQL
reads, so an unreadable datastack is a 403 page with the engine's message):

- ``GET /ui/query?sql=…&mode=exploratory|production`` shows the form with the SQL (the URL shares it);
  ``&run=1`` runs an **exploratory** query (reading is not a state change). A **production** run also
  only reads, but its pins protect its inputs from expiry and vacuum (a side effect on the lake), so it
  runs only from the form's ``POST /ui/query`` with the CSRF token. ``&page=N`` (100 rows a page) and
  ``&id=RUN`` page through a result kept in memory (the newest :data:`KEEP` results), without re-running.
- ``POST /ui/query`` (``sql``, ``mode``, ``csrf``): run either mode.
- ``POST /ui/query/reproduce`` (``run_id``, ``csrf``): :func:`neurolake.query.replay.reproduce` as the
  principal; shows its status and message.
- ``GET /ui/query/download?run=RUN&format=parquet|csv|manifest``: Parquet with the manifest in its
  key-value metadata (key ``openlineage``, :func:`neurolake.query.engine.write_result`); CSV (plain RFC 4180
  rows with a header, nothing else, so every CSV reader reads it) whose manifest is the ``format=manifest``
  download (``RUN.csv.manifest.json``) linked beside it and named in the response's ``Link`` header. The
  rows are the kept result; else the run's saved result file; else the query re-run at its recorded pins,
  served only when its SHA-256 equals the recorded one (409 otherwise).

Errors of the engine (bad SQL 400, forbidden SQL or table 403, unknown table 404) are shown in the page
with the engine's message and its status.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from neurolake.errors import Conflict, InvalidArgument, NeurolakeError, PermissionDenied
from neurolake.server.access import Need, may_read, request_principal
from neurolake.server.routing import APIRouter
from neurolake.web.render import PageRoute, check_csrf, page

router = APIRouter(route_class=PageRoute)

PAGE_ROWS = 100
KEEP = 8                    # results kept in memory for paging and downloads
MAX_SQL = 100_000
EXAMPLE = "SELECT * FROM ds.v1.table LIMIT 100"


class Results:
    """The newest :data:`KEEP` query results of the server: ``{run_id: {"result", "owner"}}``."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, res, owner: str | None) -> None:
        with self.lock:
            self.items[res.run_id] = {"result": res, "owner": owner}
            while len(self.items) > KEEP:
                self.items.popitem(last=False)

    def get(self, run_id: str | None, owner: str | None):
        if not run_id:
            return None
        with self.lock:
            e = self.items.get(run_id.strip().lower())
        if e is None or (owner is not None and e["owner"] not in (None, owner)):
            return None
        return e["result"]


def results(lake) -> Results:
    return lake.state("web.query_results", Results)


def _owner(request: Request) -> str | None:
    p = request_principal(request)
    return None if p is None else p.name


def _mode(mode: str | None) -> str:
    mode = mode or "exploratory"
    if mode not in ("exploratory", "production"):
        raise InvalidArgument(f"mode {mode!r} must be exploratory or production", field="mode", value=mode,
                              allowed=["exploratory", "production"])
    return mode


def _url(**q: Any) -> str:
    return "/ui/query?" + urlencode({k: v for k, v in q.items() if v not in (None, "")})


def _context(res, page_no: int, sql: str, mode: str) -> dict[str, Any]:
    """The template context of a result: its rows on page ``page_no`` and its manifest."""
    table = res.arrow()
    n = table.num_rows
    pages = max(1, -(-n // PAGE_ROWS))
    if page_no < 1 or page_no > pages:
        raise InvalidArgument(f"page {page_no} is outside 1…{pages} ({n} rows, {PAGE_ROWS} a page)", field="page",
                              value=page_no)
    start = (page_no - 1) * PAGE_ROWS
    rows = table.slice(start, PAGE_ROWS).to_pylist()
    run = res.run

    def link(p: int) -> str:
        return _url(sql=sql, mode=mode, run=1 if mode == "exploratory" else None, id=run["run_id"], page=p)

    return {"result": {"run": run, "rows": rows, "columns": table.column_names, "n": n, "page": page_no,
                       "pages": pages, "first": start + 1, "last": start + len(rows),
                       "prev": link(page_no - 1) if page_no > 1 else None,
                       "next": link(page_no + 1) if page_no < pages else None,
                       "manifest_json": json.dumps(res.manifest, indent=2, default=str)}}


def _render(request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
    base = {"sql": "", "mode": "exploratory", "example": EXAMPLE, "result": None, "error": None, "note": None,
            "reproduce": None}
    base.update(ctx)
    base["share"] = _url(sql=base["sql"], mode=base["mode"], run=1 if base["mode"] == "exploratory" else None) \
        if base["sql"] else None
    return page(request, "console_page.html", title="Query console", status_code=status, **base)


def _run(request: Request, sql: str, mode: str):
    from neurolake.query.engine import run

    if not sql.strip():
        raise InvalidArgument("the SQL is empty: write one SELECT statement", field="sql")
    if len(sql) > MAX_SQL:
        raise InvalidArgument(f"the SQL is {len(sql):,} characters; at most {MAX_SQL:,}", field="sql")
    res = run(request.app.state.lake, sql, mode=mode, principal=request_principal(request), job=None)
    results(request.app.state.lake).put(res, _owner(request))
    return res


@router.get("/ui/query", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def console(request: Request, sql: str = "", mode: str = "exploratory", page: int = 1, run: int = 0,
            id: str | None = None) -> HTMLResponse:  # noqa: A002 - the URL's parameter name
    ctx: dict[str, Any] = {"sql": sql, "mode": mode if mode in ("exploratory", "production") else "exploratory"}
    try:
        mode = _mode(mode)
        res = results(request.app.state.lake).get(id, _owner(request))
        if res is not None and res.run["sql"] == sql:
            return _render(request, **ctx, **_context(res, page, sql, mode))
        if sql and run:
            if mode == "production":
                return _render(request, **ctx, note="A production run protects its inputs from expiry and vacuum, "
                               "so it runs only from the Run button (a POST with the form's CSRF token); press Run.")
            res = _run(request, sql, mode)
            return _render(request, **ctx, **_context(res, page, sql, mode))
        return _render(request, **ctx)
    except NeurolakeError as exc:
        return _render(request, exc.http_status, **ctx, error=exc.message)


@router.post("/ui/query", access=Need.authenticated(), include_in_schema=False, response_class=HTMLResponse)
def console_run(request: Request, sql: str = Form(""), mode: str = Form("exploratory"),
                csrf: str | None = Form(None)) -> HTMLResponse:
    ctx: dict[str, Any] = {"sql": sql, "mode": mode if mode in ("exploratory", "production") else "exploratory"}
    try:
        check_csrf(request, csrf)
        mode = _mode(mode)
        res = _run(request, sql, mode)
        return _render(request, **ctx, **_context(res, 1, sql, mode))
    except NeurolakeError as exc:
        return _render(request, exc.http_status, **ctx, error=exc.message)


@router.post("/ui/query/reproduce", access=Need.authenticated(), include_in_schema=False,
             response_class=HTMLResponse)
def console_reproduce(request: Request, run_id: str = Form(""), csrf: str | None = Form(None)) -> HTMLResponse:
    from neurolake.query.replay import reproduce

    lake = request.app.state.lake
    ctx: dict[str, Any] = {}
    try:
        check_csrf(request, csrf)
        if not run_id.strip():
            raise InvalidArgument("no run id given", field="run_id")
        rep = reproduce(lake, run_id.strip(), principal=request_principal(request))
        res = results(lake).get(rep.get("run_id"), _owner(request))
        if res is not None:
            ctx.update(sql=res.run["sql"], mode=res.run["mode"], **_context(res, 1, res.run["sql"], res.run["mode"]))
        return _render(request, **ctx, reproduce=rep)
    except NeurolakeError as exc:
        return _render(request, exc.http_status, **ctx, error=exc.message)


def _readable(request: Request, run: dict[str, Any]) -> None:
    """Refuse (403) a principal who may not read every datastack the run read."""
    p = request_principal(request)
    lake = request.app.state.lake
    for inp in run.get("inputs") or []:
        ds = inp.get("datastack")
        if ds and not may_read(lake, p, ds):
            raise PermissionDenied(f"run {run.get('run_id')} read {inp.get('name')}; you may not read datastack "
                                   f"{ds!r}", field="run", value=run.get("run_id"))


def _rows(request: Request, run_id: str):
    """``(arrow table, manifest, run record)`` of run ``run_id`` (see the module docstring)."""

    from neurolake.provenance.runs import get_run
    from neurolake.query.engine import run
    from neurolake.query.replay import recorded_pins, run_facet

    lake = request.app.state.lake
    res = results(lake).get(run_id, _owner(request))
    if res is not None:
        return res.arrow(), res.manifest, res.run
    stored = get_run(lake, run_id)
    manifest = stored["manifest"]
    facet = run_facet(manifest)
    _readable(request, facet)
    f = facet.get("result_file")
    table = _saved_result(f) if f else None
    if table is not None:
        return table.replace_schema_metadata(None), manifest, facet
    if facet.get("partial"):
        raise Conflict(f"run {facet['run_id']} was cut short by its time bound and its rows were not saved",
                       field="run", value=facet["run_id"])
    again = run(lake, facet["sql"], facet.get("params"), mode=facet.get("mode") or "exploratory",
                pins=recorded_pins(facet), sample=(facet.get("sample") or {}).get("fraction"),
                principal=request_principal(request), datastack=facet.get("datastack"), record=False)
    if again.sha256 != facet.get("result_sha256"):
        raise Conflict(f"run {facet['run_id']}'s rows are no longer in memory, and re-running it at its pins gives "
                       f"other rows (sha256 {again.sha256[:16]}… ≠ {str(facet.get('result_sha256'))[:16]}…); "
                       "`neurolake reproduce` says what changed", field="run", value=facet["run_id"])
    return again.arrow(), manifest, facet


def _saved_result(location: str):
    """The saved result Parquet of a run (a local file, or an ``s3://`` object of a lake on object storage), or
    None when it is gone."""
    import pyarrow.parquet as pq

    from neurolake.storage.config import is_s3, storage_config

    if is_s3(location):
        fs, path = storage_config().pyarrow_fs(location)
        try:
            return pq.read_table(path, filesystem=fs)
        except (FileNotFoundError, OSError):
            return None
    return pq.read_table(location) if Path(location).is_file() else None


@router.get("/ui/query/download", access=Need.authenticated(), include_in_schema=False)
def console_download(request: Request, run: str = "", format: str = "parquet") -> Response:  # noqa: A002
    try:
        if format not in ("parquet", "csv", "manifest"):
            raise InvalidArgument(f"format {format!r} must be parquet, csv or manifest", field="format",
                                  value=format, allowed=["parquet", "csv", "manifest"])
        if not run.strip():
            raise InvalidArgument("no run id given (?run=RUN_ID)", field="run")
        if format == "manifest":
            from neurolake.provenance.runs import get_run
            from neurolake.query.replay import run_facet

            res = results(request.app.state.lake).get(run.strip(), _owner(request))
            manifest = res.manifest if res is not None else get_run(request.app.state.lake, run.strip())["manifest"]
            facet = run_facet(manifest)
            _readable(request, facet)
            return Response(json.dumps(manifest, indent=2, default=str), media_type="application/json",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{facet["run_id"]}.csv.manifest.json"'})
        table, manifest, facet = _rows(request, run.strip())
        rid = facet["run_id"]
        if format == "parquet":
            from neurolake.query.engine import write_result

            with tempfile.TemporaryDirectory(prefix="neurolake-dl-") as tmp:
                path = write_result(table, manifest, Path(tmp) / f"{rid}.parquet")
                data = path.read_bytes()
            return Response(data, media_type="application/vnd.apache.parquet",
                            headers={"Content-Disposition": f'attachment; filename="{rid}.parquet"'})
        import io

        import pyarrow.csv as pcsv

        buf = io.BytesIO()
        pcsv.write_csv(table, buf)
        murl = f"/ui/query/download?{urlencode({'run': rid, 'format': 'manifest'})}"
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{rid}.csv"',
                                 "Link": f'<{murl}>; rel="describedby"; type="application/json"'})
    except NeurolakeError as exc:
        return _render(request, exc.http_status, error=exc.message)
