#!/usr/bin/env bash
# Install everything neurolake, its tests and its demo need on a fresh Debian 12 machine:
# Debian packages (PostgreSQL server for catalog tests, Chromium + driver for browser tests, strace for the
# fault-injection tests, wrk for the server benchmark),
# uv, and the locked Python environment in .venv. Safe to run again; skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)  # fault-injection tests stop a process at a syscall
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # benchmarks/scale_server.py: a load client that needs little CPU
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install -q --disable-pip-version-check uv 2>/dev/null || python3 -m pip install -q --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen -q 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import neurolake, tensorstore" || { echo "setup: the Python environment is broken" >&2; exit 1; }
echo "setup: ready (.venv)"
