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

The key never sits in the catalog (whoever can read the catalog database could forge URLs with it). It
is ``NEUROLAKE_SIGNING_KEY`` in the server's environment (any string of ≥ 16 bytes; hex is decoded) when
set, otherwise the file ``<lake>/signing.key`` (:data:`KEY_FILE`: 32 random bytes as hex, mode 0600,
created atomically on first use; for a lake on object storage a file of this machine, see :func:`key_path`). The catalog (``access_secrets``) keeps only the key's id
(:func:`key_id`, row ``signed_url_key_id``): every process of the lake compares its key with it and
refuses to sign or verify with another one (:class:`~neurolake.errors.Conflict` naming both ids) — e.g.
a second host that shares a PostgreSQL catalog but lacks the key file. A key kept in the catalog by an
older version (row ``signed_url_key``) is moved into the key file (or dropped, when the environment
supplies the key) and its row deleted the first time a process loads the key (every ``serve`` does at
start). :func:`rotate_key` makes a new key: every outstanding URL stops working; restart the servers.

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
from pathlib import Path
from urllib.parse import quote

from neurolake.errors import InvalidArgument, PermissionDenied

SCHEME = "neurolake-signed-url-v1"
MAX_EXPIRES_S = 7 * 24 * 3600
S3_MAX_EXPIRES_S = 7 * 24 * 3600


KEY_FILE = "signing.key"
KEY_ID_ROW = "signed_url_key_id"
LEGACY_ROW = "signed_url_key"


def lake_key(lake) -> bytes:
    """The signing key of ``lake`` (see module docstring; loaded once per open lake). Raises Conflict when
    it is not the key the lake's other processes use, InvalidArgument for a key shorter than 16 bytes."""
    return lake.state("signing.key", lambda: _load_key(lake))


def key_id(key: bytes) -> str:
    """The public id of a signing key: 16 hex digits of HMAC-SHA256(key, "neurolake-signing-key-id-v1").
    It tells keys apart without revealing them (for a random key; a guessable ``NEUROLAKE_SIGNING_KEY``
    can be guessed from it, as from any signed URL)."""
    return hmac.new(key, b"neurolake-signing-key-id-v1", hashlib.sha256).hexdigest()[:16]


def _decode_env(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode()


def _read_key_file(path) -> bytes | None:
    import os
    import warnings

    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        warnings.warn(f"signing key file {path} is readable by group/others; chmod 600 it", stacklevel=3)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument(f"signing key file {path} does not hold a hex key", field="signing_key") from None


def _write_key_file(path, key: bytes, replace: bool = False) -> bytes:
    """Create ``path`` (mode 0600) holding ``key`` atomically; when another process created it first, its
    key wins and is returned (``replace=True``: overwrite)."""
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return key
        try:
            os.link(tmp, path)  # atomic and exclusive: never a half-written key file
        except FileExistsError:
            return _read_key_file(path) or key
        return key
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def key_path(lake) -> Path:
    """Where the lake's signing key file is: ``<lake>/signing.key`` for a lake folder; for a lake on object
    storage (whose objects anyone with read access to the bucket could read) a file of this machine,
    ``$XDG_CONFIG_HOME/neurolake/signing-keys/<hash of the lake URL>.key`` (``~/.config`` by default): servers
    of one lake on several machines set ``NEUROLAKE_SIGNING_KEY`` to the same key instead."""
    import os

    if not getattr(lake, "remote", False):
        return lake.root / KEY_FILE
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "neurolake" / "signing-keys"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base / f"{hashlib.sha256(lake.url.encode()).hexdigest()[:16]}.key"


def _load_key(lake) -> bytes:
    from sqlalchemy.exc import IntegrityError

    from neurolake.access.models import Secret
    from neurolake.errors import Conflict

    env = lake.settings.signing_key
    path = key_path(lake)
    key = _decode_env(env) if env else _read_key_file(path)
    with lake.catalog.session() as s:
        legacy = s.get(Secret, LEGACY_ROW)
        if legacy is not None:  # an older version kept the key itself in the catalog: move it out
            if key is None:
                key = _write_key_file(path, bytes.fromhex(legacy.value))
            s.delete(legacy)
        recorded = s.get(Secret, KEY_ID_ROW)
        recorded = recorded.value if recorded is not None else None
    if key is None:
        if recorded is not None:
            raise Conflict(f"the lake's signing key (id {recorded}) is not available to this process: copy "
                           f"{KEY_FILE} from the lake folder of the server that made it, or set "
                           "NEUROLAKE_SIGNING_KEY to the same key (or rotate it: neurolake.storage.signing."
                           "rotate_key)", key_id=recorded)
        key = _write_key_file(path, secrets.token_bytes(32))
    Signer(key)  # ≥ 16 bytes
    kid = key_id(key)
    if recorded is None:
        try:
            with lake.catalog.session() as s:
                s.add(Secret(name=KEY_ID_ROW, value=kid))
            recorded = kid
        except IntegrityError:  # another process recorded its key first
            with lake.catalog.session() as s:
                recorded = s.get(Secret, KEY_ID_ROW).value
    if recorded != kid:
        raise Conflict(f"this process's signing key (id {kid}) is not the lake's (id {recorded}): every server "
                       f"of the lake must use the same key ({KEY_FILE} in the lake folder or "
                       "NEUROLAKE_SIGNING_KEY); URLs signed with one would be refused by the others",
                       key_id=kid, lake_key_id=recorded)
    return key


def rotate_key(lake, key: bytes | None = None) -> str:
    """Make ``key`` (default 32 new random bytes) the lake's signing key and return its id: written to
    ``<lake>/signing.key`` unless ``NEUROLAKE_SIGNING_KEY`` supplies the key (then pass the new value as
    ``key`` and set it in every server's environment), and recorded in the catalog. Every URL signed
    before stops working; running servers keep their old key until restarted. Raises InvalidArgument for
    a key shorter than 16 bytes."""
    from neurolake.access.models import Secret

    key = secrets.token_bytes(32) if key is None else key
    Signer(key)
    if not lake.settings.signing_key:
        _write_key_file(key_path(lake), key, replace=True)
    with lake.catalog.session() as s:
        for name in (KEY_ID_ROW, LEGACY_ROW):
            row = s.get(Secret, name)
            if row is not None:
                s.delete(row)
        s.flush()
        s.add(Secret(name=KEY_ID_ROW, value=key_id(key)))
    lake._state.pop("signing.key", None)
    return key_id(key)


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
            raise PermissionDenied("signed URL signature does not match (tampered, for another table, for a table "
                                   "that is no longer registered, or the signing key was rotated)", table_id=table_id)
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
