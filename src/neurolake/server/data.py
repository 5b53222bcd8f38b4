"""``/data/v1/…``: the files of registered feature tables, served through signed URLs only.

``GET|HEAD /data/v1/{table_id}/{expires}/{user}/{signature}/{path}`` (scheme in
:mod:`neurolake.storage.signing`). The signature is the credential (no token needed, also under
``--auth``): tampered or expired → 403, a path outside the table → 403, a missing file → 404.
Files stream from disk with ``Accept-Ranges``; ``Range: bytes=a-b``, ``a-`` and suffix ``-N`` → 206
with ``Content-Range``, unsatisfiable → 416 (Starlette ``FileResponse``, 4 MiB chunks), as DuckDB
httpfs, Polars and pyarrow need. Each request and its body bytes count against the quota of
``user`` (429 once used up) and are summed per (user, table) into ``data.bytes_served`` audit events,
written at most once a second. Under ``--auth`` a valid signature is not enough: ``user`` must still exist,
be enabled and may read the table's datastack (403 otherwise; checked at most
:data:`PRINCIPAL_SECONDS` ago).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import anyio
from fastapi import Request
from starlette.responses import FileResponse

from neurolake.errors import NotFound, PermissionDenied
from neurolake.server.access import Need
from neurolake.server.models import Count, OctetStream
from neurolake.server.routing import APIRouter
from neurolake.storage import is_s3
from neurolake.storage.signing import Signer, lake_key, safe_relpath

router = APIRouter(prefix="/data", tags=["data"])
CACHE_SECONDS = 2.0
BAD_SIGNATURE = ("signed URL signature does not match (tampered, for another table, for a table that is no longer "
                 "registered, or the signing key was rotated)")
PRINCIPAL_SECONDS = 5.0  # = neurolake.access.core.CACHE_SECONDS: how long a disabled user's URLs may still work


class _MeteredFile(FileResponse):
    """FileResponse with 4 MiB chunks that reports the body bytes it sent to ``on_done(nbytes)``."""

    chunk_size = 4 * 1024 * 1024

    def __init__(self, path, on_done, **kw) -> None:
        super().__init__(path, **kw)
        self.on_done = on_done

    async def __call__(self, scope, receive, send) -> None:
        sent = 0

        async def counting_send(message) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        ext = scope.get("extensions") or {}
        if "http.response.pathsend" in ext:  # count real bytes: no zero-copy path send
            scope = {**scope, "extensions": {k: v for k, v in ext.items() if k != "http.response.pathsend"}}
        try:
            await super().__call__(scope, receive, counting_send)
        finally:
            await self.on_done(sent)


class DataState:
    """Per-app caches (table id → location, user → principal) and the served-bytes audit buffer."""

    def __init__(self, lake) -> None:
        self.lake = lake
        self.signer = Signer(lake_key(lake))
        self.tables: dict[int, tuple[float, tuple[str, str] | None]] = {}
        self.principals: dict[str, tuple[float, object]] = {}
        self.served: dict[tuple[str, int, str, str], list[int]] = {}
        self.lock = threading.Lock()
        self.last_audit = time.monotonic()

    def table(self, tid: int) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self.tables.get(tid)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        found = self.lake.features.location_of(tid)
        val = (found[0], found[1] + "\0" + found[2]) if found is not None else None
        self.tables[tid] = (now, val)
        return val

    def principal(self, user: str, datastack: str, auth: bool):
        """The principal of the user a URL was issued to. With ``auth`` (``serve --auth``) that user must
        still exist, be enabled and may read ``datastack`` (role or public), else PermissionDenied: a URL
        stops working within :data:`PRINCIPAL_SECONDS` of disabling its user or revoking their role (at
        once when the change was made through this process's lake)."""
        acc = self.lake.access
        now = time.monotonic()
        hit = self.principals.get(user)
        if hit and now - hit[0] < PRINCIPAL_SECONDS and hit[2] == acc.generation:
            p = hit[1]
        else:
            gen = acc.generation
            try:
                p = acc.active_principal(user) if auth else acc.principal(user)
            except PermissionDenied as exc:
                p = exc.message  # cached as the reason: a new error per request
            self.principals[user] = (now, p, gen)
        if isinstance(p, str):
            raise PermissionDenied(p, user=user)
        if auth and not acc.allowed(p, datastack, "viewer"):
            raise PermissionDenied(f"signed URL was issued to user {user!r}, who may no longer read datastack "
                                   f"{datastack!r}; request a new one", user=user, datastack=datastack)
        return p

    def cached(self, tid: int, user: str) -> bool:
        """True when a request for table ``tid`` signed for ``user`` needs no catalog I/O."""
        acc = self.lake.access
        now = time.monotonic()
        t, u = self.tables.get(tid), self.principals.get(user)
        return bool(t and u and now - t[0] < CACHE_SECONDS and now - u[0] < PRINCIPAL_SECONDS
                    and u[2] == acc.generation and acc.public_cached())

    def note(self, user: str, tid: int, table: str, ds: str, nbytes: int, flush: bool = True) -> bool:
        with self.lock:
            c = self.served.setdefault((user, tid, table, ds), [0, 0])
            c[0] += 1
            c[1] += nbytes
            due = time.monotonic() - self.last_audit >= 1.0
        if due and flush:
            self.flush()
        return due

    def flush(self) -> None:
        with self.lock:
            served, self.served = self.served, {}
            self.last_audit = time.monotonic()
        acc = self.lake.access
        for (user, tid, table, ds), (req, nb) in served.items():
            acc.audit(user, "data.bytes_served", table, ds, id=tid, requests=req, bytes=nb)


def data_state(request: Request) -> DataState:
    st = getattr(request.app.state, "data_state", None)
    if st is None:
        st = request.app.state.data_state = DataState(request.app.state.lake)
    return st


def _resolve(st: DataState, table_id: int, expires: str, user: str, signature: str, path: str, auth: bool):
    t = st.table(table_id)
    if t is None:  # the same answer as a bad signature: a URL never tells which table ids exist
        raise PermissionDenied(BAD_SIGNATURE, table_id=table_id)
    location, key = t
    st.signer.verify(table_id, location, user, expires, signature)
    p = st.principal(user, key.split("\0")[1], auth)  # the user still exists, is enabled, may read
    if is_s3(location):
        raise NotFound("this table lives in S3: use its S3 presigned URLs", table_id=table_id)
    rel = safe_relpath(path)
    base = Path(location)
    if base.is_file():
        if rel != base.name:
            raise PermissionDenied(f"path {path!r} is outside the signed table", path=path)
        target = base
    else:
        target = base / rel
        real = os.path.realpath(target)
        if not real.startswith(os.path.realpath(base) + os.sep):
            raise PermissionDenied(f"path {path!r} is outside the signed table", path=path)
    if not target.is_file():
        raise NotFound(f"file {rel!r} does not exist in the table", path=rel)
    return target, key, p, None


@router.api_route("/v1/{table_id}/{expires}/{user}/{signature}/{path:path}", access=Need.public("signed URL: the signature is the credential, checked by the handler"), methods=["GET", "HEAD"],
                  summary="A file of a feature table, through a signed URL (Range, HEAD)")
async def signed_file(request: Request, table_id: Count, expires: str, user: str, signature: str, path: str) -> OctetStream:
    st = data_state(request)
    quotas = request.app.state.quotas
    # the common case (table and user cached, no quota I/O) runs inline: no thread hop per request
    auth = bool(getattr(request.app.state, "auth", False))
    if st.cached(table_id, user):
        target, key, p, _ = _resolve(st, table_id, expires, user, signature, path, auth)
        if quotas.needs_io(p):
            await anyio.to_thread.run_sync(quotas.check, p)
        else:
            quotas.check(p)
    else:
        target, key, p, _ = await anyio.to_thread.run_sync(_resolve, st, table_id, expires, user, signature, path,
                                                           auth)
        await anyio.to_thread.run_sync(quotas.check, p)
    name, ds = key.split("\0")

    async def account(sent: int) -> None:
        due = quotas.add(p, 1, sent, flush=False)
        if st.note(p.name, table_id, name, ds, sent, flush=False) or due:
            def flush() -> None:
                quotas.flush()
                st.flush()
            await anyio.to_thread.run_sync(flush)

    return _MeteredFile(target, account, media_type="application/octet-stream")
