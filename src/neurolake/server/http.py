"""HTTP hygiene shared by every data route: CORS, HEAD, byte ranges, ETags, gzip.

What the real clients need (see ``CLIENTS.md``; RFC 9110 §13-14 for the semantics):

- :class:`CORSMiddleware` (pure ASGI, installed by ``create_app``) adds to *every* response, errors
  and 404s and unhandled errors (500, answered here) included, ``Access-Control-Allow-Origin: *``, ``Access-Control-Expose-Headers: Content-Range,
  Content-Length, Content-Encoding, ETag`` and ``Accept-Ranges: bytes``, and answers every ``OPTIONS``
  (CORS preflight) with 204 without calling the application. Neuroglancer runs on another origin and
  loads nothing without these headers.
- :func:`bytes_response` serves an in-memory body as a static file would: ``HEAD`` with the true
  ``Content-Length`` and no ``Content-Encoding``; ``Range: bytes=a-b`` / ``a-`` / ``-N`` → 206 with
  ``Content-Range`` (416 when unsatisfiable); ``ETag`` + ``If-None-Match`` → 304 (``If-Range`` honoured);
  ``Content-Encoding: gzip`` only on whole 200 bodies of compressible types when the client accepts
  gzip — never on 206 (cloud-volume and tensorstore slice the identity bytes) and never ``deflate``.

Routers that serve static-looking trees must register with ``methods=["GET", "HEAD"]`` (FastAPI
does not add HEAD by itself) and return ``bytes_response(request, body, media_type)``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXPOSE_HEADERS = ("Content-Range, Content-Length, Content-Encoding, ETag, X-Neurolake-Run-Id, X-Neurolake-Sha256, "
                  "X-Neurolake-Partial, Link")
ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
    (b"accept-ranges", b"bytes"),
]
# Media types whose bodies are already compressed: gzip would only cost time.
INCOMPRESSIBLE = ("image/jpeg", "image/png", "image/webp", "application/gzip", "application/zstd",
                  "application/x-blosc")
GZIP_MIN_BYTES = 512
GZIP_LEVEL = 1  # fast: chunk throughput matters more than the last bytes

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class CORSMiddleware:
    """Pure-ASGI middleware: CORS + ``Accept-Ranges`` on every HTTP response; OPTIONS → 204.

    Install it as the outermost middleware (``app.add_middleware`` last) so that errors raised by
    inner middleware (e.g. 401 from authentication) also carry the CORS headers; a preflight
    ``OPTIONS`` never reaches authentication, as browsers send preflights without credentials.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            req_headers = dict(scope.get("headers") or [])
            allow_headers = req_headers.get(b"access-control-request-headers", b"*")
            await send({"type": "http.response.start", "status": 204, "headers": CORS_HEADERS + [
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", allow_headers),
                (b"access-control-max-age", b"86400"),
                (b"content-length", b"0"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return

        started = False

        async def send_with_cors(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in CORS_HEADERS if k not in names]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        except Exception as exc:
            # An unhandled error: answer 500 here, with CORS headers (so that a browser client sees the
            # error, not a CORS failure), then re-raise so that the server logs the traceback.
            if not started:
                body = json.dumps({"error": "internal", "message": f"internal error: {type(exc).__name__}",
                                   "detail": {}}).encode()
                await send({"type": "http.response.start", "status": 500, "headers": CORS_HEADERS + [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            raise


def make_etag(body: bytes) -> str:
    """A strong entity tag (quoted) from a 128-bit BLAKE2b digest of ``body``."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2) of an If-None-Match list against ``etag``."""
    if header.strip() == "*":
        return True
    core = etag.removeprefix("W/")
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/")
        if tag == core or tag == core[:-1] + '-gzip"':
            return True
    return False


def parse_byte_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse one ``Range`` header against a body of ``total`` bytes.

    Returns the inclusive ``(first, last)`` byte positions, ``None`` when the header should be ignored
    (not a single ``bytes=`` range, e.g. multiple ranges: the whole body is then sent with 200), and
    raises :class:`RangeNotSatisfiable` when the range selects nothing (first ≥ total, or ``-0``).
    """
    m = _RANGE.match(header)
    if not m:
        return None
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":  # suffix: the last N bytes
        n = int(b)
        if n == 0 or total == 0:
            raise RangeNotSatisfiable(total)
        return max(0, total - n), total - 1
    first = int(a)
    last = total - 1 if b == "" else min(int(b), total - 1)
    if b != "" and int(b) < first:
        return None  # syntactically invalid: RFC 9110 says ignore the header
    if first >= total:
        raise RangeNotSatisfiable(total)
    return first, last


class RangeNotSatisfiable(Exception):
    def __init__(self, total: int) -> None:
        super().__init__(f"range not satisfiable for {total} bytes")
        self.total = total


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


def bytes_response(request: Request, body: bytes, media_type: str, *, etag: str | None = None,
                   compress: bool | None = None, headers: dict[str, str] | None = None,
                   cache_control: str | None = "no-cache") -> Response:
    """Serve ``body`` like a static file, honouring HEAD, Range, If-None-Match/If-Range and gzip.

    ``etag`` (quoted, as it will appear in the header) defaults to a hash of ``body``; ``compress``
    forces gzip on/off for whole 200 bodies (default: on for compressible media types of at least
    512 bytes when ``Accept-Encoding`` allows gzip; sent only if it saves at least 10 %).
    ``headers`` are added to every response.
    Status codes: 200 whole body, 206 partial (``Content-Range: bytes a-b/total``), 304 not modified,
    416 unsatisfiable range (``Content-Range: bytes */total``).
    """
    return _respond(request, len(body), lambda a, b: body[a:b], media_type, etag or make_etag(body),
                    compress, headers, cache_control)


def file_response(request: Request, path: os.PathLike | str, media_type: str, *, compress: bool | None = None,
                  headers: dict[str, str] | None = None, cache_control: str | None = "no-cache") -> Response:
    """Serve a file with the rules of :func:`bytes_response`, reading only the requested byte span.

    The ETag is derived from the file's size and modification time (nanoseconds). Raises
    ``FileNotFoundError`` / ``IsADirectoryError`` for a missing key (callers turn it into 404).
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(str(path))
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        fd = f.fileno()
        return _respond(request, st.st_size, lambda a, b: os.pread(fd, b - a, a), media_type, etag,
                        compress, headers, cache_control)


def not_modified(request: Request, etag: str, cache_control: str | None = "no-cache") -> Response | None:
    """The 304 answer when the request's ``If-None-Match`` matches ``etag`` (as :func:`bytes_response` would
    give it), else None: lets a route skip reading and encoding a body the client already has."""
    inm = request.headers.get("if-none-match")
    if inm is None or not _etag_matches(inm, etag):
        return None
    headers = {"ETag": etag, "Vary": "Accept-Encoding"}
    if cache_control:
        headers["Cache-Control"] = cache_control
    return Response(status_code=304, headers=headers)


def _respond(request: Request, total: int, read, media_type: str, etag: str, compress: bool | None,
             headers: dict[str, str] | None, cache_control: str | None) -> Response:
    base = {"ETag": etag, "Vary": "Accept-Encoding", **(headers or {})}
    if cache_control:
        base["Cache-Control"] = cache_control
    is_head = request.method == "HEAD"

    inm = request.headers.get("if-none-match")
    if inm is not None and _etag_matches(inm, etag):
        return Response(status_code=304, headers=base)

    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if rng is not None and if_range is not None and (if_range.strip().startswith("W/")
                                                     or not _etag_matches(if_range, etag)):
        rng = None  # the client's copy is stale: send the whole body (RFC 9110 §13.1.5)
    if rng is not None:
        try:
            span = parse_byte_range(rng, total)
        except RangeNotSatisfiable:
            return Response(status_code=416, headers={**base, "Content-Range": f"bytes */{total}"},
                            media_type=media_type)
        if span is not None:
            first, last = span
            hdrs = {**base, "Content-Range": f"bytes {first}-{last}/{total}"}
            if is_head:
                return Response(status_code=206, headers={**hdrs, "Content-Length": str(last - first + 1)},
                                media_type=media_type)
            return Response(read(first, last + 1), status_code=206, headers=hdrs, media_type=media_type)

    if is_head:
        return Response(status_code=200, headers={**base, "Content-Length": str(total)}, media_type=media_type)
    body = read(0, total)
    if compress is None:
        compress = total >= GZIP_MIN_BYTES and not media_type.startswith(INCOMPRESSIBLE)
    if compress and _accepts_gzip(request):
        gz = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        if len(gz) < 0.9 * total:  # not worth a decode on the client otherwise
            tag = etag[:-1] + '-gzip"' if etag.endswith('"') else etag
            return Response(gz, headers={**base, "ETag": tag, "Content-Encoding": "gzip"}, media_type=media_type)
    return Response(body, headers=base, media_type=media_type)


def count(request: Request, what: str, n: int = 1) -> None:
    """Add ``n`` to the served-request counter ``what`` (reported by ``GET /api/v1/stats``)."""
    counts = getattr(request.app.state, "serving_counts", None)
    if counts is None:
        counts = request.app.state.serving_counts = {}
    counts[what] = counts.get(what, 0) + n  # a lost increment under a race is acceptable for stats


def install(app) -> None:
    """Add :class:`neurolake.server.routing.FastRoutes` (hot data routes without FastAPI's per-request
    machinery, only without ``--auth``) and, outermost, :class:`CORSMiddleware` (call after any other
    ``add_middleware``)."""
    from neurolake.server.routing import FastRoutes

    app.add_middleware(FastRoutes, fastapi_app=app)
    app.add_middleware(CORSMiddleware)
