"""Fixtures of the CAVE tests: a throw-away HOME (caveclient writes under ``~``), loopback without proxy."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="nl-cave-home-")
os.environ["HOME"] = _HOME
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
