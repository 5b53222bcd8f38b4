"""The HTTP service: FastAPI app with one router module per protocol or resource."""

from neurolake.server.app import create_app

__all__ = ["create_app"]
