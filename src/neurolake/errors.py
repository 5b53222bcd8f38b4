"""The exception hierarchy of neurolake.

Every error a user can cause is a :class:`NeurolakeError` subclass carrying a machine-readable
``code``, a human ``message`` that names the field, the value and what is allowed, a ``detail`` dict,
and the HTTP status the server answers with. The server turns these into
``{"error": code, "message": ..., "detail": {...}}`` bodies (DESIGN.md, "Errors"); BossDB-compatible
routes translate them into BossDB's own body instead.
"""

from __future__ import annotations

from typing import Any


class NeurolakeError(Exception):
    """Base class. ``http_status`` is what the HTTP service answers with."""

    code = "neurolake_error"
    http_status = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "detail": self.detail}


class InvalidArgument(NeurolakeError):
    """A value is malformed or not allowed (HTTP 400)."""

    code = "invalid_argument"
    http_status = 400


class OutOfBounds(InvalidArgument):
    """A box or point lies (partly) outside the layer's bounds (HTTP 400)."""

    code = "out_of_bounds"


class Unsupported(InvalidArgument):
    """A file format or feature neurolake does not read (HTTP 400); the message says what to do instead."""

    code = "unsupported"


class NotFound(NeurolakeError):
    """A named thing (datastack, layer, table, id …) does not exist (HTTP 404)."""

    code = "not_found"
    http_status = 404


class AlreadyExists(NeurolakeError):
    """Creating something whose name is taken (HTTP 409)."""

    code = "already_exists"
    http_status = 409


class Conflict(NeurolakeError):
    """The request is based on a state that is no longer current (HTTP 409)."""

    code = "conflict"
    http_status = 409


class NotReady(NeurolakeError):
    """The resource exists but is incomplete, e.g. an interrupted ingest (HTTP 409)."""

    code = "not_ready"
    http_status = 409


class TooLarge(NeurolakeError):
    """A request exceeds a configured size limit (HTTP 413)."""

    code = "too_large"
    http_status = 413


class Unauthorized(NeurolakeError):
    """No valid credentials were given (HTTP 401)."""

    code = "unauthorized"
    http_status = 401


class PermissionDenied(NeurolakeError):
    """Credentials are valid but do not allow this action (HTTP 403)."""

    code = "permission_denied"
    http_status = 403


class QuotaExceeded(NeurolakeError):
    """A usage quota is exhausted (HTTP 429); detail gives limit, usage and reset time."""

    code = "quota_exceeded"
    http_status = 429


class CorruptData(NeurolakeError):
    """A stored or uploaded file cannot be decoded (HTTP 422 for uploads)."""

    code = "corrupt_data"
    http_status = 422
