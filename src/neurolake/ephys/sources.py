"""Recordings on object storage: the ``s3://`` sources of the ephys ETL (:func:`neurolake.ephys.etl.ingest`).

A source ``s3://bucket/prefix`` is every object under ``prefix/`` (recursively, as a local folder's walk: object
names starting with ``.`` and ``…/`` folder markers are left out); ``s3://bucket/key`` naming one object is that
object. The readers (pyabf, pynwb/h5py, the MEA CSV readers) need local files, so each object is downloaded —
streamed in 1 MiB blocks and hashed (SHA-256 of its bytes, as a local file's) on the way — into a temporary
spill folder that holds one object at a time (:class:`Spool`), read there and deleted before the next one.
The ``files`` table keeps the object's ``s3://bucket/key`` URL as its path. Endpoint, region and credentials
are the lake's one storage configuration (:func:`neurolake.storage.config.storage_config`: the AWS
environment), through boto3. Errors: a missing bucket, key or an empty prefix raises NotFound; refused or
missing credentials PermissionDenied; an unreachable endpoint NotReady.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from neurolake.errors import CorruptData, NeurolakeError, NotFound, NotReady, PermissionDenied, Unsupported
from neurolake.storage.config import split_s3, storage_config

BLOCK = 1 << 20     # bytes per streamed block of a download
HEAD = 1 << 20      # bytes of an object read to tell its format by content (CSV headers)
_MISSING = ("404", "NoSuchKey", "NotFound")
_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
            "TokenRefreshRequired", "AllAccessDisabled", "403", "Forbidden", "AuthorizationHeaderMalformed")


@dataclass(frozen=True)
class RemoteFile:
    """One object of a source: ``url`` (``s3://bucket/key``) and ``size`` in bytes as listed (None: not listed).
    ``str()`` is the URL (the ``path`` of its rows); ``name``/``suffix`` are those of the key's last part."""

    url: str
    size: int | None = None

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix


def is_url(source: Any) -> bool:
    """Whether ``source`` is a URL (``scheme://…``) rather than a local path."""
    return "://" in str(source)


def remote(source: Any) -> bool:
    """Whether ``source`` is an ``s3://`` URL; raises Unsupported for another scheme (``http://``, ``gs://`` …)."""
    if not is_url(source):
        return False
    if str(source).startswith(("s3://", "s3a://")):
        return True
    raise Unsupported(f"recordings are read from local files or s3:// URLs, not from {str(source)[:200]!r}: "
                      "copy them to a folder or a bucket first", field="source", value=str(source)[:200],
                      allowed=["a local folder or file", "s3://bucket/prefix", "s3://bucket/key"])


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _error(exc: Exception, url: str) -> NeurolakeError:
    """A boto3/botocore failure on ``url`` as the neurolake error it is (the original stays ``__cause__``)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    cfg = storage_config()
    where = f"endpoint {cfg.endpoint_url}" if cfg.endpoint_url else "AWS S3"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionDenied(f"no S3 credentials to read {url!r} ({where}): set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", source=url)
    if isinstance(exc, EndpointConnectionError):
        return NotReady(f"cannot reach {where} to read {url!r}: {exc}", source=url)
    if isinstance(exc, ClientError):
        code = _code(exc)
        bucket = split_s3(url)[0]
        if code == "NoSuchBucket":
            return NotFound(f"no bucket {bucket!r} ({where}) for the source {url!r}", field="source", value=url)
        if code in _MISSING:
            return NotFound(f"no object {url!r} ({where})", field="source", value=url)
        if code in _REFUSED:
            return PermissionDenied(f"the S3 store ({where}) refused to let these credentials read {url!r}: "
                                    f"{code}: {exc.response.get('Error', {}).get('Message') or exc}; check "
                                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket's "
                                    "policy", source=url, s3_error=code)
    return NeurolakeError(f"reading {url!r} from {where} failed: {type(exc).__name__}: {exc}", source=url)


def _client() -> Any:
    return storage_config().boto3_client()


def list_source(url: str, client: Any = None) -> list[RemoteFile]:
    """The objects of ``url``: the one object ``s3://bucket/key`` names, else every object under
    ``s3://bucket/key/`` (the whole bucket for ``s3://bucket``), sorted by URL; names starting with ``.`` and
    folder markers are left out. Raises NotFound for a missing bucket or an empty prefix, PermissionDenied
    for refused or missing credentials, InvalidArgument for a malformed URL."""
    from botocore.exceptions import BotoCoreError, ClientError

    url = "s3://" + str(url).split("://", 1)[1]  # s3a:// is the same store
    bucket, key = split_s3(url)
    client = client or _client()
    out: list[RemoteFile] = []
    n = 0
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return [RemoteFile(f"s3://{bucket}/{key}", int(head["ContentLength"]))]
            except ClientError as exc:
                if _code(exc) not in _MISSING:
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                k = o["Key"]
                if k.endswith("/"):
                    continue
                n += 1
                if k.rsplit("/", 1)[-1].startswith("."):
                    continue
                out.append(RemoteFile(f"s3://{bucket}/{k}", int(o["Size"])))
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, url) from exc
    if n == 0:
        raise NotFound(f"no object {url!r} and no object under {f's3://{bucket}/{prefix}'!r}: nothing to ingest",
                       field="source", value=url)
    return sorted(out, key=str)


class Spool:
    """A temporary spill folder holding at most one downloaded object (the one being read). :meth:`fetch`
    downloads an object (removing the previous one); :meth:`local` gives the local copy of an object, downloading
    it if it is not the one held; :meth:`release` removes it; closing removes the folder. One boto3 client,
    made on first use (a local-only ingest never makes one). Not thread-safe: one per thread or task."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._client: Any = None
        self._held: tuple[str, Path, str] | None = None  # url, local path, sha256

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _client()
        return self._client

    def _dir(self, sub: str = "") -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="neurolake-ephys-s3-")
        d = Path(self._tmp.name) / sub
        d.mkdir(exist_ok=True)
        return d

    def _stream(self, obj: RemoteFile, fh: Any) -> str:
        """Stream ``obj`` into ``fh`` (None: nowhere), returning the SHA-256 of its bytes."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(obj.url)
        h, n = hashlib.sha256(), 0
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            for block in body.iter_chunks(BLOCK):
                h.update(block)
                n += len(block)
                if fh is not None:
                    fh.write(block)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, obj.url) from exc
        if obj.size is not None and n != obj.size:
            raise CorruptData(f"{obj.url} changed while being read: listed with {obj.size} bytes, read {n}; "
                              "ingest again", path=obj.url, expected_bytes=obj.size, actual_bytes=n)
        return h.hexdigest()

    def sha256(self, obj: RemoteFile) -> str:
        """SHA-256 of the object's bytes, streamed (nothing written to disk)."""
        return self._stream(obj, None)

    def fetch(self, obj: RemoteFile) -> str:
        """Download ``obj`` into the spill folder (as ``<folder>/<object name>``: readers that look at the name
        see the object's), replacing the object held before; returns the SHA-256 of its bytes."""
        self.release()
        dest = self._dir("obj") / obj.name
        try:
            with open(dest, "wb") as fh:
                sha = self._stream(obj, fh)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        self._held = (obj.url, dest, sha)
        return sha

    def local(self, obj: RemoteFile, sha: str | None = None) -> Path:
        """The local copy of ``obj`` (downloaded unless it is the one held). With ``sha``: raises CorruptData if
        the object's bytes are no longer those (it changed since they were hashed)."""
        if self._held is None or self._held[0] != obj.url:
            self.fetch(obj)
        assert self._held is not None
        if sha is not None and self._held[2] != sha:
            self.release()
            raise CorruptData(f"{obj.url} changed while being ingested (its SHA-256 is no longer {sha}): ingest "
                              "again", path=obj.url)
        return self._held[1]

    def head(self, obj: RemoteFile, n: int = HEAD) -> Path:
        """A local file named as ``obj`` holding its first ``n`` bytes (the format sniffers read ≤ 4 KiB, after
        gunzip for ``.gz``); it is replaced by the next call and removed with the folder."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(obj.url)
        d = self._dir("head")
        shutil.rmtree(d)
        d.mkdir()
        dest = d / obj.name
        try:
            if obj.size == 0:
                data = b""
            else:
                data = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{n - 1}")["Body"].read()
        except ClientError as exc:
            if _code(exc) != "InvalidRange":  # an empty object
                raise _error(exc, obj.url) from exc
            data = b""
        except BotoCoreError as exc:
            raise _error(exc, obj.url) from exc
        dest.write_bytes(data)
        return dest

    def release(self) -> None:
        """Remove the object held (if any)."""
        if self._held is not None:
            self._held[1].unlink(missing_ok=True)
            self._held = None

    def close(self) -> None:
        self.release()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
