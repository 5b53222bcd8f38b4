#!/usr/bin/env bash
# Run the whole test suite (installs what is missing first). Extra arguments go to pytest.
# Two pytest-xdist workers, one test file each at a time (module fixtures, e.g. servers, start once):
# much of the suite waits on server processes and sockets, so two workers on two cores halve the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
