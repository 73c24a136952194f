#!/usr/bin/env bash
# Quick start 2/2: install, lint, check the import layering, and run the whole test suite against a real PostgreSQL
# (embedded, or the server at BACKUP_PIPELINE_DATABASE_URL when set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
