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
from neurolake.storage.config import StorageConfig, is_s3, split_s3, storage_config

__all__ = ["StorageConfig", "endpoint_url", "filesystem", "iceberg_properties", "is_s3", "lance_storage_options", "normalize_location",
           "region", "split_s3", "storage_config", "storage_options"]


def endpoint_url() -> str | None:
    return storage_config().endpoint_url


def region() -> str:
    return storage_config().region


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
    return storage_config().pyarrow_fs(location)


def storage_options(location: str) -> dict[str, str]:
    """Options for object_store-based readers (deltalake, lance) for ``location``."""
    return storage_config().delta_options(location)


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
