"""neurolake: a lakehouse for connectomics.

``open_lake(path)`` opens an installation; see README.md and docs/ for the rest.
"""

__version__ = "0.1.0"

from neurolake.lake import Lake, init_lake, open_lake  # noqa: E402

__all__ = ["Lake", "__version__", "init_lake", "open_lake"]
