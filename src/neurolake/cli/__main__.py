"""``python -m neurolake.cli …`` runs the ``neurolake`` command."""

from neurolake.cli import main

main()
