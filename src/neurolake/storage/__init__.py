"""Where bytes live: local folders and ``s3://`` prefixes; temporary signed URLs.

- :func:`filesystem` gives a :mod:`pyarrow.fs` filesystem and a path for a location (a local path,
  ``file://`` URL or ``s3://bucket/key``); S3 settings come from the standard AWS environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION``) plus
  ``AWS_ENDPOINT_URL`` for S3-compatible endpoints (MinIO, moto, Ceph).
- :mod:`neurolake.storage.signing` issues and verifies HMAC-SHA256 signed URLs served by ``/data/…``
  and S3 presigned URLs (AWS Signature Version 4 query authentication) for ``s3://`` locations.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from neurolake.errors import InvalidArgument


def is_s3(location: str) -> bool:
    return str(location).startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key/...`` → ``(bucket, "key/...")``; raises InvalidArgument."""
    p = urlparse(url)
    if p.scheme != "s3" or not p.netloc:
        raise InvalidArgument(f"location {url!r} is not an s3://bucket/key URL", field="location", value=url)
    return p.netloc, p.path.lstrip("/")


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def normalize_location(location: str) -> str:
    """A canonical location: ``s3://bucket/prefix`` (no trailing slash) or an absolute local path."""
    loc = str(location).strip()
    if not loc:
        raise InvalidArgument("location must not be empty", field="location", value=location)
    if is_s3(loc):
        split_s3(loc)
        return loc.rstrip("/")
    if loc.startswith("file://"):
        loc = urlparse(loc).path
    elif "://" in loc:
        raise InvalidArgument(f"location {location!r} has an unsupported scheme; use a local path or s3://bucket/key",
                              field="location", value=location, allowed=["local path", "file://", "s3://"])
    return str(Path(loc).expanduser().resolve())


def filesystem(location: str):
    """``(pyarrow.fs.FileSystem, path)`` for a normalised location."""
    import pyarrow.fs as pafs

    if is_s3(location):
        bucket, key = split_s3(location)
        ep = endpoint_url()
        kw = {"region": region()}
        if ep:
            u = urlparse(ep)
            kw.update(endpoint_override=u.netloc, scheme=u.scheme or "https")
        return pafs.S3FileSystem(**kw), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), location


def storage_options(location: str) -> dict[str, str]:
    """Options for object_store-based readers (deltalake, lance) for ``location``."""
    if not is_s3(location):
        return {}
    opts = {"AWS_REGION": region()}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(k):
            opts[k] = os.environ[k]
    ep = endpoint_url()
    if ep:
        opts["AWS_ENDPOINT_URL"] = ep
        if ep.startswith("http://"):  # a local S3-compatible endpoint (MinIO, moto): plain HTTP/1.1
            opts["AWS_ALLOW_HTTP"] = "true"
            opts["http1_only"] = "true"
        opts["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    return opts


def lance_storage_options(location: str) -> dict[str, str]:
    o = storage_options(location)
    o.pop("AWS_S3_ALLOW_UNSAFE_RENAME", None)
    return {k.lower(): v for k, v in o.items()}


def iceberg_properties(location: str) -> dict[str, str]:
    if not is_s3(location):
        return {}
    props = {"s3.region": region()}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        props["s3.access-key-id"] = os.environ["AWS_ACCESS_KEY_ID"]
    if os.environ.get("AWS_SECRET_ACCESS_KEY"):
        props["s3.secret-access-key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
    ep = endpoint_url()
    if ep:
        props["s3.endpoint"] = ep
    return props
