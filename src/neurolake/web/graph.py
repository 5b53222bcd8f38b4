"""Page module of the web UI (see :mod:`neurolake.web`): not built yet."""

from __future__ import annotations

from neurolake.server.routing import APIRouter

router = APIRouter()
