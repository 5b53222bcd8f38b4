"""Error responses: every NeurolakeError becomes ``{"error", "message", "detail"}`` with its status.

Unhandled exceptions are answered 500 ``{"error": "internal", ...}`` by the outermost CORS middleware
(:class:`neurolake.server.http.CORSMiddleware`), so that they carry CORS headers too, and logged by the
server with their traceback."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurolake.errors import NeurolakeError


def error_body(code: str, message: str, detail: dict | None = None) -> dict:
    return {"error": code, "message": message, "detail": detail or {}}


def install(app: FastAPI) -> None:
    @app.exception_handler(NeurolakeError)
    async def _neurolake(request: Request, exc: NeurolakeError):
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = [{"field": ".".join(str(p) for p in e.get("loc", [])), "message": e.get("msg")} for e in exc.errors()]
        msg = "; ".join(f"{e['field']}: {e['message']}" for e in errs) or "invalid request"
        return JSONResponse(error_body("invalid_argument", msg, {"errors": errs}), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        msg = str(exc.detail) if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
        return JSONResponse(error_body(code, msg), status_code=exc.status_code, headers=getattr(exc, "headers", None))

