#!/usr/bin/env bash
# Quick start 2/2: install, lint, check the import layering, and run the whole test suite against a real PostgreSQL
# (embedded, or the server at BACKUP_PIPELINE_DATABASE_URL when set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
# Three worker processes on the two cores CI has (pytest-xdist; BACKUP_PIPELINE_TEST_WORKERS=N for another
# count, `-n 0` among the arguments for none): the end-to-end tests wait on daemons and servers, which a
# third worker fills (measured: 24-25 min in one process, 13.1 min on two workers, 11.6-13.6 on three,
# the cores 97% busy). Tests sharing a module-scoped fixture go to one worker together, the others one by
# one, the long modules first (backup_pipeline_tests/support/scheduling.py, docs/testing.md).
exec .venv/bin/python -m pytest -n "${BACKUP_PIPELINE_TEST_WORKERS:-3}" --dist loadgroup --no-loadscope-reorder "$@"
