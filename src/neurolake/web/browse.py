"""Home and browse pages (see :mod:`neurolake.web`)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from neurolake.server.access import Need
from neurolake.server.routing import APIRouter
from neurolake.web.render import page

router = APIRouter()


@router.get("/ui", access=Need.public("the home page: shows a token form when not logged in"),
            include_in_schema=False, response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    return page(request, "home.html", title="neurolake")
