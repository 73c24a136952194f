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
# third worker fills (measured: 24-25 min in one process; 500 s on three, 479 s on four, the cores busy
# 92-99%). Tests sharing a module-scoped fixture go to one worker together, the others one by one, the
# long modules first (backup_pipeline_tests/support/scheduling.py, docs/testing.md).
pytest=(.venv/bin/python -m pytest -n "${BACKUP_PIPELINE_TEST_WORKERS:-3}" --dist loadgroup --no-loadscope-reorder "$@")
# The tests' files (base folders, clusters, deposits, the embedded server's data) on a RAM file system:
# they create and delete many thousands of files, and on a disk's file system the kernel's inode
# bookkeeping alone took a tenth of the machine's CPU (this machine's ext4 has no journal, so every new
# inode is checked against recent deletions). As root, a tmpfs is mounted in a mount namespace of the
# run's own (nobody else sees it, and it goes away with the run, whatever happens) on a folder under
# the temporary folder, which TMPDIR then names. BACKUP_PIPELINE_TEST_TMPFS=0 keeps them on disk, for
# a look at a failed session's files afterwards.
# Where either is refused (a container without the right), the files stay on disk, and it says so.
if [ "${BACKUP_PIPELINE_TEST_TMPFS:-1}" = 1 ] && [ "$(id -u)" = 0 ] \
  && unshare --mount --propagation private true 2> /dev/null; then
  ram="$(mktemp -d "${TMPDIR:-/tmp}/bp-tests-ram-XXXXXX")"
  trap 'rmdir "$ram"' EXIT
  set +e
  unshare --mount --propagation private -- bash -c '
    if mount -t tmpfs -o mode=1777 bp-tests "$0"; then export TMPDIR="$0"
    else echo "test.sh: no tmpfs could be mounted: the tests'"'"' files stay on disk" >&2; fi
    exec "$@"' "$ram" "${pytest[@]}"
  exit $?
fi
exec "${pytest[@]}"
