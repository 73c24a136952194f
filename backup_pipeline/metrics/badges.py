"""What a status badge says: an agent's (or one of its databases') current status and its colour.

An agent or database with several expected backups shows its most severe status and how many of its
expected backups are failing (`FAILED: 2 of 5 failing`: one FAILED and one TRANSFER_INTEGRITY_FAILED,
say). Rendering (SVG, shields.io JSON) is `badge_render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backup_pipeline.core.domain import BackupStatus
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.metrics import current_statuses

# Most severe first: a missing or broken backup outranks one never evaluated yet.
SEVERITY = (
    BackupStatus.MISSING,
    BackupStatus.FAILED,
    BackupStatus.TRANSFER_INTEGRITY_FAILED,
    BackupStatus.UNKNOWN,
    BackupStatus.OK,
)
PROBLEMS = frozenset({BackupStatus.MISSING, BackupStatus.FAILED, BackupStatus.TRANSFER_INTEGRITY_FAILED})
COLOURS = {  # shields.io's named colours
    BackupStatus.OK: "brightgreen",
    BackupStatus.UNKNOWN: "lightgrey",
    BackupStatus.MISSING: "red",
    BackupStatus.FAILED: "red",
    BackupStatus.TRANSFER_INTEGRITY_FAILED: "red",
}


@dataclass(frozen=True)
class Badge:
    label: str
    message: str
    colour: str


def badge_for(database: Database, agent_id: str, database_name: str | None = None) -> Badge | None:
    """The badge of an agent, or of one of its databases; None when no active expected backup has
    that name."""
    with database.sessions() as session:
        statuses = current_statuses(session, agent_id, database_name)
    if not statuses:
        return None
    label = agent_id if database_name is None else f"{agent_id}/{database_name}"
    return summarise(label, statuses)


def summarise(label: str, statuses: Sequence[str]) -> Badge:
    """The most severe status; with how many of the expected backups are failing (in any problem
    state, not only the most severe one), or are unknown, when not all of them."""
    known = [BackupStatus(s) if s in BackupStatus.__members__ else BackupStatus.UNKNOWN for s in statuses]
    worst = min(known, key=SEVERITY.index)
    if known.count(worst) == len(known):
        return Badge(label, worst.value, COLOURS[worst])
    if worst in PROBLEMS:
        failing = sum(1 for status in known if status in PROBLEMS)
        return Badge(label, f"{worst.value}: {failing} of {len(known)} failing", COLOURS[worst])
    return Badge(label, f"{worst.value}: {known.count(worst)} of {len(known)}", COLOURS[worst])
