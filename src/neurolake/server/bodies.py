"""Request bodies without decompression bombs: a byte limit on every body, and Arrow IPC uploads whose
declared sizes are checked before anything is decompressed.

- :class:`BodyLimitMiddleware` (installed by ``create_app``) counts the bytes of every request body as they
  arrive and refuses (413, ``too_large``) a body larger than the request's limit — at the first read when
  ``Content-Length`` already announces more — so no route, including those whose JSON body FastAPI parses
  into a model, buffers more than the limit. The limit is the server's ``max_body_bytes``
  (``NEUROLAKE_MAX_BODY_BYTES``) unless the route raised it for this request before reading
  (:func:`neurolake.server.deps.read_body`; cutout uploads: the box's size plus format overhead).
- :func:`read_arrow` reads an Arrow IPC stream or file after checking, message by message, the sizes its
  metadata declares: the uncompressed length of every LZ4/ZSTD-compressed buffer and the value count of every
  field, against a cap. A compressed body that would inflate beyond the cap is refused before inflating.

Request bodies are never decompressed by the server stack (Starlette and uvicorn do not decode a request's
``Content-Encoding``): a gzip'd JSON body is refused by the JSON parser as it stands, compressed.
"""

from __future__ import annotations

import struct

import pyarrow as pa
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neurolake.errors import CorruptData, TooLarge

BODY_LIMIT_KEY = "neurolake.max_body_bytes"  # scope key: the byte limit of this request's body


class BodyTooLarge(TooLarge, HTTPException):
    """TooLarge (413) raised while a request body is being received. It is also a Starlette HTTPException so
    that FastAPI re-raises it from its own body parsing (which turns other errors into a 400) and the
    NeurolakeError handler answers it (the handler is found first in the exception's MRO)."""

    def __init__(self, message: str, **detail) -> None:
        TooLarge.__init__(self, message, **detail)
        self.status_code = 413
        self.headers = None


def too_large(limit: int, what: str = "request body", size: int | None = None) -> BodyTooLarge:
    """The 413 of a body over ``limit`` bytes (``size``: what its Content-Length announced)."""
    said = f" of {size} bytes (Content-Length)" if size is not None else ""
    hint = " (NEUROLAKE_MAX_BODY_BYTES)" if what == "request body" else ""
    return BodyTooLarge(f"{what}{said} exceeds the limit of {limit} bytes{hint}", limit=limit,
                        **({"size": size} if size is not None else {}))


def content_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers") or ():
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Pure-ASGI middleware: refuse (413) a request body beyond ``scope[BODY_LIMIT_KEY]`` (default
    ``max_body_bytes``), read lazily so that a route may raise the limit before it reads its body."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault(BODY_LIMIT_KEY, self.max_body_bytes)
        declared = content_length(scope)
        total = 0

        async def limited() -> Message:
            nonlocal total
            limit = scope[BODY_LIMIT_KEY]
            if declared is not None and declared > limit:
                raise too_large(limit, size=declared)
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited, send)


def install(app, max_body_bytes: int) -> None:
    """Set ``app.state.max_body_bytes`` and add :class:`BodyLimitMiddleware` (call before the CORS
    middleware is added, so that CORS stays the outermost layer)."""
    app.state.max_body_bytes = int(max_body_bytes)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=int(max_body_bytes))


# -- Arrow IPC ------------------------------------------------------------------------------------
# Just enough of a FlatBuffers reader for Arrow's Message.fbs / File.fbs (format/*.fbs of Apache Arrow).
class _Table:
    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vt = pos - _i32(buf, pos)
        self.vt, self.vt_len = vt, _u16(buf, vt)

    def _off(self, field: int) -> int:
        o = 4 + 2 * field
        return _u16(self.buf, self.vt + o) if o + 2 <= self.vt_len else 0

    def scalar(self, field: int, fmt: str, default=0):
        o = self._off(field)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def table(self, field: int) -> _Table | None:
        o = self._off(field)
        if not o:
            return None
        p = self.pos + o
        return _Table(self.buf, p + _u32(self.buf, p))

    def structs(self, field: int, fmt: str) -> list[tuple]:
        """A vector of structs of layout ``fmt`` (little-endian struct format)."""
        o = self._off(field)
        if not o:
            return []
        p = self.pos + o
        p += _u32(self.buf, p)
        n, size = _u32(self.buf, p), struct.calcsize("<" + fmt)
        if p + 4 + n * size > len(self.buf):
            raise ValueError("vector runs past the end of the metadata")
        return [struct.unpack_from("<" + fmt, self.buf, p + 4 + i * size) for i in range(n)]


def _u16(b, p):
    return struct.unpack_from("<H", b, p)[0]


def _u32(b, p):
    return struct.unpack_from("<I", b, p)[0]


def _i32(b, p):
    return struct.unpack_from("<i", b, p)[0]


def _root(buf) -> _Table:
    mv = memoryview(buf).cast("B")
    return _Table(mv, _u32(mv, 0))


_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


def _declared(message: pa.ipc.Message) -> tuple[int, int]:
    """(bytes, values) a dictionary or record batch message inflates to: the sum of its buffers' sizes
    (a compressed buffer's size is its 8-byte uncompressed-length prefix) and of its fields' value counts."""
    msg = _root(message.metadata)
    kind = msg.scalar(1, "B")
    if kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        return 0, 0
    header = msg.table(2)
    batch = header.table(1) if (header is not None and kind == _DICTIONARY_BATCH) else header
    if batch is None:
        return 0, 0
    compressed = batch.table(3) is not None
    body = memoryview(message.body).cast("B") if message.body is not None else memoryview(b"")
    nbytes = 0
    for offset, length in batch.structs(2, "qq"):
        if offset < 0 or length < 0 or offset + length > len(body):
            raise ValueError(f"buffer [{offset}, +{length}) outside the message body of {len(body)} bytes")
        if compressed and length >= 8:
            size = struct.unpack_from("<q", body, offset)[0]
            nbytes += length - 8 if size == -1 else size
        else:
            nbytes += length
    values = sum(max(0, n) for n, _ in batch.structs(1, "qq"))
    return nbytes, max(values, batch.scalar(0, "q"))


def _messages(body: bytes):
    """The IPC messages of a stream, or the dictionary and record batch messages a file's footer points at
    (those are what a file reader reads)."""
    if body[:6] == b"ARROW1":
        if len(body) < 18 or body[-6:] != b"ARROW1":
            raise ValueError("an Arrow file must start and end with ARROW1")
        flen = _i32(body, len(body) - 10)
        if flen <= 0 or flen > len(body) - 18:
            raise ValueError(f"footer length {flen} does not fit the file")
        start = len(body) - 10 - flen
        footer = _root(memoryview(body)[start:start + flen])
        data = pa.py_buffer(body)
        for field in (2, 3):  # dictionaries, recordBatches: Block {offset, metaDataLength, (pad), bodyLength}
            for offset, meta_len, _, body_len in footer.structs(field, "qiiq"):
                if offset < 0 or meta_len < 0 or body_len < 0 or offset + meta_len + body_len > len(body):
                    raise ValueError("a footer block points outside the file")
                yield pa.ipc.read_message(pa.BufferReader(data.slice(offset, meta_len + body_len)))
        return
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(body))
    while True:
        try:
            yield reader.read_next_message()
        except StopIteration:
            return


def read_arrow(body: bytes, max_bytes: int, what: str = "Arrow IPC body") -> pa.Table:
    """The table of an Arrow IPC stream (or file, starting ``ARROW1``), refused before anything is
    decompressed when its batches declare more than ``max_bytes`` bytes of buffers (compressed buffers count
    with their uncompressed size) or more than ``max_bytes`` values in all.

    Raises TooLarge (413), CorruptData (not readable Arrow IPC)."""
    total = values = 0
    try:
        for message in _messages(body):
            n, v = _declared(message)
            total, values = total + n, values + v
            if total > max_bytes or values > max_bytes:
                what_over = f"{total} bytes" if total > max_bytes else f"{values} values"
                raise TooLarge(f"{what} declares more than {what_over} once decompressed, over the limit of "
                               f"{max_bytes} (NEUROLAKE_MAX_BODY_BYTES); send smaller uploads",
                               limit=max_bytes, size=max(total, values))
        if body[:6] == b"ARROW1":
            return pa.ipc.open_file(pa.BufferReader(body)).read_all()
        return pa.ipc.open_stream(pa.BufferReader(body)).read_all()
    except TooLarge:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, struct.error) as exc:
        raise CorruptData(f"the body is not a readable Arrow IPC stream or file ({exc})", field="body",
                          bytes=len(body)) from None
