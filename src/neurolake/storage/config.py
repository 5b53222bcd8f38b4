"""One storage configuration, rendered for every library that touches a lake's bytes.

A lake lives in a local folder or under an ``s3://bucket/prefix`` of any S3-compatible store (AWS, MinIO,
Ceph, moto). :class:`StorageConfig` holds where the store is and how to sign requests — endpoint, region,
credentials and request concurrency — read once from the standard AWS environment:

- ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``: an S3-compatible endpoint (unset = AWS);
- ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (default ``us-east-1``);
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, or ``AWS_PROFILE`` (a profile of
  ``~/.aws/credentials``; its keys are resolved by botocore and passed on to the libraries that cannot read
  profiles);
- ``NEUROLAKE_S3_CONCURRENCY``: parallel requests per process (default 32).

and renders it for each consumer (the keys each library expects are in their documentation):

============================  =====================================================================
consumer                      method
============================  =====================================================================
tensorstore (volumes)         :meth:`kvstore` — the ``s3`` kvstore driver spec, or ``file`` for paths
delta-rs (tables)             :meth:`delta_options` — ``storage_options`` of ``DeltaTable``/``write_deltalake``
fsspec / s3fs (Dask workers)  :meth:`fsspec_options`, :meth:`path` (a ``upath.UPath`` for ``s3://``)
DuckDB httpfs (queries)       :meth:`duckdb_secret` — a ``CREATE SECRET`` statement
boto3 (presigned URLs)        :meth:`boto3_client`
pyarrow.fs                    :meth:`pyarrow_fs`
============================  =====================================================================
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from neurolake.errors import InvalidArgument


def is_s3(location: Any) -> bool:
    """Whether ``location`` (a string, Path or UPath) names an ``s3://`` object prefix."""
    proto = getattr(location, "protocol", None)
    if proto is not None and proto != "":
        return proto in ("s3", "s3a")
    return str(location).startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key/...`` → ``(bucket, "key/...")``. Raises InvalidArgument for anything else."""
    p = urlparse(str(url))
    if p.scheme != "s3" or not p.netloc:
        raise InvalidArgument(f"location {url!r} is not an s3://bucket/key URL", field="location", value=str(url))
    if len(p.netloc) < 3:
        raise InvalidArgument(f"bucket name {p.netloc!r} of {url!r} is shorter than 3 characters",
                              field="location", value=str(url))
    return p.netloc, p.path.lstrip("/")


@dataclass(frozen=True)
class StorageConfig:
    """Where an S3-compatible store is and how to reach it (see the module doc). Build with :meth:`from_env`."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    concurrency: int = 32

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StorageConfig:
        e = os.environ if env is None else env
        key, secret, token = e.get("AWS_ACCESS_KEY_ID"), e.get("AWS_SECRET_ACCESS_KEY"), e.get("AWS_SESSION_TOKEN")
        profile = e.get("AWS_PROFILE") or None
        if profile and not (key and secret):  # libraries without profile support get the profile's keys
            key, secret, token = _profile_keys(profile)
        raw = e.get("NEUROLAKE_S3_CONCURRENCY", "").strip()
        try:
            conc = int(raw) if raw else 32
        except ValueError as exc:
            raise ValueError(f"NEUROLAKE_S3_CONCURRENCY must be a whole number, got {raw!r}") from exc
        return cls(endpoint_url=e.get("AWS_ENDPOINT_URL_S3") or e.get("AWS_ENDPOINT_URL") or None,
                   region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
                   access_key_id=key or None, secret_access_key=secret or None, session_token=token or None,
                   profile=profile, concurrency=max(1, conc))

    @property
    def plain_http(self) -> bool:
        """An ``http://`` endpoint (a local MinIO or moto): clients must be told to allow it."""
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    # -- tensorstore ---------------------------------------------------------------------------------
    def kvstore(self, location: Any) -> dict[str, Any]:
        """Tensorstore kvstore spec of ``location`` (a folder path or ``s3://bucket/prefix``), ending with ``/``.
        Source: https://google.github.io/tensorstore/kvstore/s3/index.html"""
        loc = str(location).rstrip("/") + "/"
        if not is_s3(location):
            return {"driver": "file", "path": loc}
        bucket, key = split_s3(loc)
        spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": key, "aws_region": self.region}
        if self.endpoint_url:
            spec["endpoint"] = self.endpoint_url
        return spec

    def tensorstore_context(self) -> dict[str, Any]:
        """Context resources for S3 kvstores: request concurrency and credentials."""
        ctx: dict[str, Any] = {"s3_request_concurrency": {"limit": self.concurrency}}
        if self.access_key_id and self.secret_access_key:
            ctx["aws_credentials"] = {"type": "environment"}
        elif self.profile:
            ctx["aws_credentials"] = {"type": "profile", "profile": self.profile}
        return ctx

    # -- delta-rs / object_store ---------------------------------------------------------------------
    def delta_options(self, location: Any) -> dict[str, str]:
        """delta-rs ``storage_options`` for ``location`` (empty for a local path). Concurrent commits to one
        table on S3 are serialised by the catalog (the lake's writers hold a database lock per table), so the
        unsafe-rename mode of delta-rs is safe here. Source: https://delta-io.github.io/delta-rs/integrations/object-storage/s3/"""
        if not is_s3(location):
            return {}
        opts = {"AWS_REGION": self.region, "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        if self.access_key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            opts["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.session_token:
            opts["AWS_SESSION_TOKEN"] = self.session_token
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.plain_http:
                opts["AWS_ALLOW_HTTP"] = "true"
                opts["http1_only"] = "true"
        return opts

    # -- fsspec / s3fs -------------------------------------------------------------------------------
    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem`` (and of ``upath.UPath`` for ``s3://``)."""
        # listings are never cached: other processes add and remove objects (pending-write entries, layers)
        kw: dict[str, Any] = {"client_kwargs": {"region_name": self.region}, "max_concurrency": self.concurrency,
                              "use_listings_cache": False}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.access_key_id and self.secret_access_key:
            kw["key"], kw["secret"] = self.access_key_id, self.secret_access_key
            if self.session_token:
                kw["token"] = self.session_token
        elif self.profile:
            kw["profile"] = self.profile
        return kw

    def path(self, location: Any) -> Any:
        """A path object for ``location``: :class:`pathlib.Path` for a folder, ``upath.UPath`` (over s3fs) for
        ``s3://``. Both support ``/``, ``read_text``/``write_text``, ``exists``, ``iterdir``, ``unlink``."""
        if not is_s3(location):
            return Path(str(location))
        from upath import UPath

        split_s3(str(location))
        return UPath(str(location).rstrip("/"), **self.fsspec_options())

    # -- DuckDB httpfs -------------------------------------------------------------------------------
    def duckdb_secret(self, name: str = "neurolake_s3") -> str:
        """A DuckDB ``CREATE OR REPLACE SECRET`` statement for this store (httpfs).
        Source: https://duckdb.org/docs/stable/core_extensions/httpfs/s3api"""
        parts = ["TYPE s3", f"REGION '{_q(self.region)}'"]
        if self.access_key_id and self.secret_access_key:
            parts += [f"KEY_ID '{_q(self.access_key_id)}'", f"SECRET '{_q(self.secret_access_key)}'"]
            if self.session_token:
                parts.append(f"SESSION_TOKEN '{_q(self.session_token)}'")
        elif self.profile:
            parts += ["PROVIDER credential_chain", f"PROFILE '{_q(self.profile)}'"]
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            parts += [f"ENDPOINT '{_q(u.netloc)}'", "URL_STYLE 'path'",
                      f"USE_SSL {'false' if self.plain_http else 'true'}"]
        return f"CREATE OR REPLACE SECRET {name} ({', '.join(parts)})"

    # -- boto3 ---------------------------------------------------------------------------------------
    def boto3_client(self) -> Any:
        """A boto3 S3 client (presigned URLs, bucket administration)."""
        import boto3

        kw: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.access_key_id and self.secret_access_key:
            kw.update(aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                      aws_session_token=self.session_token)
            return boto3.client("s3", **kw)
        return boto3.session.Session(profile_name=self.profile).client("s3", **kw)

    # -- pyarrow -------------------------------------------------------------------------------------
    def pyarrow_fs(self, location: Any) -> tuple[Any, str]:
        """``(pyarrow.fs.FileSystem, path)`` for ``location``."""
        import pyarrow.fs as pafs

        if not is_s3(location):
            return pafs.LocalFileSystem(), str(location)
        bucket, key = split_s3(str(location))
        kw: dict[str, Any] = {"region": self.region}
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            kw.update(endpoint_override=u.netloc, scheme=u.scheme or "https")
        if self.access_key_id and self.secret_access_key:
            kw.update(access_key=self.access_key_id, secret_key=self.secret_access_key,
                      session_token=self.session_token)
        return pafs.S3FileSystem(**kw), f"{bucket}/{key}".rstrip("/")


def _q(text: str) -> str:
    return str(text).replace("'", "''")


@functools.lru_cache(maxsize=8)
def _profile_keys(profile: str) -> tuple[str | None, str | None, str | None]:
    try:
        import boto3

        creds = boto3.session.Session(profile_name=profile).get_credentials()
    except Exception as exc:  # noqa: BLE001 — botocore raises several types for a missing/broken profile
        raise InvalidArgument(f"AWS profile {profile!r} cannot be read: {exc}", field="AWS_PROFILE",
                              value=profile) from exc
    if creds is None:
        return None, None, None
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def storage_config() -> StorageConfig:
    """The storage configuration of this process's environment (read on every call: cheap)."""
    return StorageConfig.from_env()
