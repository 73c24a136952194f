#!/usr/bin/env bash
# Quick start 1/2: simulate a small fleet, scan it, print its status, open the Dagster UI.
# Everything is stored in an embedded PostgreSQL under ./.backup_pipeline (no setup needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/backup-pipeline demo "$@"
