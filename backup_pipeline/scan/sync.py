"""Syncing the jobs file into PostgreSQL: explicitly (`backup-pipeline jobs sync`), or by every scan.

The rule that keeps a scan from undoing what a person just did: a scan syncs the configured jobs
file only when that file changed since it was last synced. An explicit sync always applies the file
it is given (`--file OTHER` included), and stands until the configured file itself changes.
Either way, a file whose content the expected backups already reflect costs one small query.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_pipeline.config.jobs_file import jobs_file_digest, load_jobs_file
from backup_pipeline.config.settings import Settings
from backup_pipeline.storage import expected_backups
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.expected_backups import SyncSummary

log = logging.getLogger(__name__)


def sync_jobs_file(
    settings: Settings, database: Database, as_of: datetime, *, path: Path | None = None
) -> SyncSummary:
    """A person's sync of `path` (default: the configured jobs file). Syncing another file also
    records the configured file as it is now, so that scans leave the person's choice alone until
    the configured file changes."""
    path = (path or settings.jobs_file).resolve()
    digest = jobs_file_digest(path, settings.window_minutes)
    summary = None
    if digest is not None:
        with database.sessions() as session:
            active = expected_backups.synced_jobs_file(session, digest)
        if active is not None:
            summary = SyncSummary(active=active, added=0, deactivated=0)
    if summary is None:
        summary = _apply(settings, database, as_of, path, digest)
    configured = settings.jobs_file.resolve()
    if path != configured and (current := jobs_file_digest(configured, settings.window_minutes)):
        with database.sessions() as session:
            expected_backups.remember_jobs_file(session, configured, current)
            session.commit()
    return summary


def sync_before_scan(settings: Settings, database: Database, as_of: datetime) -> SyncSummary | None:
    """A scan's sync of the configured jobs file: only when it changed since it was last synced
    (None when left alone)."""
    path = settings.jobs_file.resolve()
    digest = jobs_file_digest(path, settings.window_minutes)
    if digest is not None:
        with database.sessions() as session:
            if not expected_backups.jobs_file_changed_since_sync(session, path, digest):
                return None
    return _apply(settings, database, as_of, path, digest)


def _apply(
    settings: Settings, database: Database, as_of: datetime, path: Path, digest: str | None
) -> SyncSummary:
    declared = load_jobs_file(path, settings.window_minutes, settings.cache_dir)
    with database.sessions() as session:
        return expected_backups.sync_backups(session, declared, as_of, digest=digest, path=path)


def synced_fleet(settings: Settings, database: Database, as_of: datetime) -> list[Any]:
    """The fleet as scans evaluate it, for everything else that shows or schedules it (Dagster's
    assets, schedules and sensor): the active expected backups synced into PostgreSQL. Only a
    database that never had a jobs file synced gets the configured one first (a fresh install): any
    later change is synced by a scan or by `backups sync`, never by loading definitions — every run
    worker and Celery step loads them, some from a copy of the jobs file of their own."""
    with database.sessions() as session:
        bootstrap = not expected_backups.ever_synced(session)
    if bootstrap and settings.jobs_file.exists():
        sync_jobs_file(settings, database, as_of)
    elif bootstrap:
        log.warning("no jobs file at %s and none synced yet: no expected backup to show", settings.jobs_file)
    with database.sessions() as session:
        return expected_backups.backup_timings(session)
