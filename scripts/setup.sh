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
# The package's bytecode, written once: every command, code server and run worker imports it, and where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) each would compile it again (a quarter of
# a second of CPU per process, measured). Stale files are recompiled by the next run of this script.
.venv/bin/python -m compileall -q -j 0 backup_pipeline
