"""Imports every package's catalog models so that ``Base.metadata`` knows all tables.

Add one import line per package that defines models.
"""

import neurolake.access.models  # noqa: F401
import neurolake.annotations.models  # noqa: F401
import neurolake.catalog.models  # noqa: F401
import neurolake.jobs.models  # noqa: F401
import neurolake.materialize.models  # noqa: F401
import neurolake.proofreading.models  # noqa: F401
import neurolake.provenance.models  # noqa: F401
import neurolake.volumes.models  # noqa: F401
