#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install the package with the given extras.
# Sourced by demo.sh and test.sh; safe to run again (pip only installs what changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
