"""neurolake: a lakehouse for connectomics.

One client, in caveclient's shape::

    import neurolake
    lake = neurolake.open_lake("demo-lake")
    image = lake["gerhard2013"].layer("image")[3:13, 200:712, 100:612]   # numpy (z, y, x)

See README.md and docs/python.md. The names below are imported on first use, so ``import neurolake`` stays
fast (no numpy, tensorstore or database library is loaded until a lake is opened).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Datastack", "Lake", "Result", "Settings", "__version__", "init_lake", "open_lake"]

_LAZY = {
    "Lake": "neurolake.lake",
    "open_lake": "neurolake.lake",
    "init_lake": "neurolake.lake",
    "Datastack": "neurolake.datastack",
    "Result": "neurolake.base.results",
    "Settings": "neurolake.base.settings",
}

if TYPE_CHECKING:
    from neurolake.base.results import Result
    from neurolake.base.settings import Settings
    from neurolake.datastack import Datastack
    from neurolake.lake import Lake, init_lake, open_lake


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'neurolake' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
