"""Temporary signed URLs for the files of a registered feature table.

Local tables (scheme ``neurolake-signed-url-v1``)::

    {base}/data/v1/{table_id}/{expires}/{user}/{signature}/{relative path of a file of the table}

``expires`` is a Unix time in seconds; ``signature`` is the hex HMAC-SHA256 (RFC 2104, FIPS 180-4)
under the lake's signing key of ``"neurolake-signed-url-v1\\n{table_id}\\n{location}\\n{user}\\n{expires}"``.
The signature covers the table (its id *and* its current location) but not the file path, so one
signature is a prefix grant: any file under the table's location can be read with it, nothing else
(paths are normalised and ``..`` is refused). A changed id, user, expiry or signature, a moved table,
or a time past ``expires`` → 403 (:class:`~neurolake.errors.PermissionDenied`). Bytes served count
against the quota of ``user`` (the user the URL was issued to).

The key is ``NEUROLAKE_SIGNING_KEY`` (any string; hex is decoded) when set, otherwise 32 random bytes
created on first use and kept in the catalog table ``access_secrets`` so that every server process of
the lake verifies the same URLs. Rotating it (delete the row) invalidates every outstanding URL.

``s3://`` tables get S3 presigned ``GET`` URLs instead (AWS Signature Version 4 query-string
authentication, via ``boto3`` ``generate_presigned_url``; at most 7 days), valid for the object store
directly; those bytes never pass through the server and are therefore not counted in quotas.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import secrets
import time
from urllib.parse import quote

from neurolake.errors import InvalidArgument, PermissionDenied

SCHEME = "neurolake-signed-url-v1"
MAX_EXPIRES_S = 7 * 24 * 3600
S3_MAX_EXPIRES_S = 7 * 24 * 3600


def lake_key(lake) -> bytes:
    """The signing key of ``lake`` (see module docstring)."""
    return lake.state("signing.key", lambda: _load_key(lake))


def _load_key(lake) -> bytes:
    env = lake.settings.signing_key
    if env:
        try:
            key = bytes.fromhex(env)
        except ValueError:
            key = env.encode()
    else:
        from neurolake.access.models import Secret

        with lake.catalog.session() as s:
            row = s.get(Secret, "signed_url_key")
            if row is None:
                row = Secret(name="signed_url_key", value=secrets.token_hex(32))
                s.add(row)
            key = bytes.fromhex(row.value)
    return key


class Signer:
    """Signs and verifies ``/data/v1/…`` URLs with an HMAC-SHA256 key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InvalidArgument("signing key must have at least 16 bytes", field="signing_key")
        self.key = key

    def signature(self, table_id: int, location: str, user: str, expires: int) -> str:
        msg = f"{SCHEME}\n{table_id}\n{location}\n{user}\n{expires}".encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def prefix(self, table_id: int, location: str, user: str, expires: int) -> str:
        """The path prefix ``/data/v1/{id}/{expires}/{user}/{sig}`` (append ``/`` + a file's path)."""
        return f"/data/v1/{table_id}/{expires}/{quote(user, safe='')}/{self.signature(table_id, location, user, expires)}"

    def verify(self, table_id: int, location: str, user: str, expires: int | str, signature: str,
               now: float | None = None) -> None:
        """Raise PermissionDenied for a tampered or expired URL."""
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            raise PermissionDenied("signed URL is malformed: expiry is not a Unix time", expires=str(expires)) from None
        good = self.signature(table_id, location, user, exp)
        if not hmac.compare_digest(good, str(signature)):
            raise PermissionDenied("signed URL signature does not match (tampered, for another table, or the "
                                   "signing key was rotated)", table_id=table_id)
        now = time.time() if now is None else now
        if now >= exp:
            raise PermissionDenied(f"signed URL expired {int(now - exp)} s ago (at Unix time {exp}); request a new one",
                                   table_id=table_id, expires=exp)


def check_expires_in(expires_in_s, maximum: int = MAX_EXPIRES_S) -> int:
    """Validate a lifetime in seconds (1 … 7 days); raises InvalidArgument."""
    if isinstance(expires_in_s, bool) or not isinstance(expires_in_s, (int, float)) or not (
            1 <= expires_in_s <= maximum):
        raise InvalidArgument(f"expires_in_s must be a number of seconds between 1 and {maximum}, got {expires_in_s!r}",
                              field="expires_in_s", value=repr(expires_in_s), allowed=[1, maximum])
    return int(expires_in_s)


def safe_relpath(path: str) -> str:
    """Normalise a file path inside a table folder; raise PermissionDenied if it leaves the folder."""
    p = posixpath.normpath("/" + path.replace("\\", "/")).lstrip("/")
    if p in ("", ".") or p.startswith("..") or "/../" in f"/{p}/" or "\x00" in p:
        raise PermissionDenied(f"path {path!r} is outside the signed table", path=path)
    return p


def s3_client():
    import boto3
    from botocore.config import Config

    from neurolake.storage import endpoint_url, region

    return boto3.client("s3", endpoint_url=endpoint_url(), region_name=region(),
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def presign_s3(urls: list[str], expires_in_s: int, client=None) -> list[str]:
    """S3 presigned GET URLs (SigV4 query authentication) for ``s3://bucket/key`` object URLs."""
    from neurolake.storage import split_s3

    client = client or s3_client()
    out = []
    for u in urls:
        bucket, key = split_s3(u)
        out.append(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                 ExpiresIn=min(int(expires_in_s), S3_MAX_EXPIRES_S)))
    return out
