"""What leaves a scan's evaluation: its counts and the entries it wrote (for Dagster events, logs and
the CLI), and the summary of an asset's day (one expected backup's, or one agent's in large fleets)
that says whether the day holds a good backup for every cycle owed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from backup_pipeline.config.jobs_file import to_expected_backup
from backup_pipeline.core.cycles import cycles_on, day_bounds
from backup_pipeline.core.domain import SUCCESS_STATUSES, DayVerdict, day_verdict, integrity_passes
from backup_pipeline.scan.context import Summary
from backup_pipeline.storage import entries, expected_backups
from backup_pipeline.storage.database import Database


class EntryOutcome(Summary):
    entry_id: int
    backup_id: int
    agent_id: str
    database_name: str
    backup_name: str  # with agent and database, the expected backup's identity (its asset)
    schedule: str  # readable, e.g. "At 02:30 on Sunday (Europe/Paris)"
    cycle_expected_at: datetime
    status: str
    message: str
    report_file: str | None
    server_hash: str | None
    server_size: int | None
    agent_hash: str | None
    agent_size: int | None
    changed: bool
    # The staged size against the backup's trailing median (set after successful cycles with history).
    size_anomaly: str | None = None
    size_median: float | None = None
    size_ratio: float | None = None
    size_history: int | None = None


class BatchResult(Summary):
    key: str
    day: date
    backups: int = 0
    evaluated: int = 0
    written: int = 0
    still_open: int = 0  # cycles before their deadline with nothing to judge yet
    not_owed: int = 0  # automatic scans: cycles due before the backup existed
    superseded: int = 0  # re-evaluations: entries at instants the backup's schedule no longer has
    measured_files: int = 0
    measured_bytes: int = 0
    # Created or changed entries; in an explicit re-evaluation, every entry written (`changed` tells).
    outcomes: list[EntryOutcome] = []

    @property
    def changed(self) -> list[EntryOutcome]:
        return [o for o in self.outcomes if o.changed]


class AssetDay(Summary):
    """One asset's day: all the entries of one expected backup (per-database assets) or of one
    agent's expected backups (per-agent assets), and the cycles owed that day still undecided."""

    agent_id: str
    database_name: str | None = None  # with `name`: the expected backup; None for the agent's asset
    name: str | None = None
    day: date
    statuses: dict[str, int]
    problems: list[str]
    total_size: int
    entries: int
    undecided: int = 0  # cycles owed that day (since the backup exists) without an entry yet
    anomalies: list[str] = []  # size anomalies of successful cycles

    @property
    def passed(self) -> bool:
        """The integrity verdict for the day, as the on-demand check gives it."""
        return integrity_passes(status for status, n in self.statuses.items() for _ in range(n))

    @property
    def verdict(self) -> DayVerdict:
        """GOOD only when a good backup exists for every cycle owed that day."""
        return day_verdict((status for status, n in self.statuses.items() for _ in range(n)), self.undecided)


def asset_days(database: Database, agents: Sequence[str], day: date, *, per_database: bool) -> list[AssetDay]:
    """The day of every asset of these agents: one per active expected backup with a cycle or an
    entry that day (per-database assets), or one per agent."""
    start, end = day_bounds(day)
    with database.sessions() as session:
        rows = entries.day_entries_of_agents(session, agents, start, end)
        timings = expected_backups.backup_timings(session, agents=agents)
    decided = {(row.job_id, row.cycle_expected_at) for row in rows}
    days: dict[tuple[str, ...], AssetDay] = {}

    def of(agent: str, database: str, name: str) -> AssetDay:
        key = (agent, database, name) if per_database else (agent,)
        if key not in days:
            backup = {"database_name": database, "name": name} if per_database else {}
            days[key] = AssetDay(
                agent_id=agent, day=day, statuses={}, problems=[], total_size=0, entries=0, **backup
            )
        return days[key]

    for timing in timings:
        cycles = cycles_on(to_expected_backup(timing), day)
        if cycles:  # cycles due before the backup existed are not owed (never evaluated automatically)
            of(timing.agent_id, timing.database_name, timing.name).undecided += sum(
                c.deadline >= timing.created_at and (timing.id, c.expected_at) not in decided for c in cycles
            )
    for row in rows:
        summary = of(row.agent_id, row.database_name, row.name)
        summary.entries += 1
        summary.statuses[row.status] = summary.statuses.get(row.status, 0) + 1
        summary.total_size += row.size or 0
        if row.status not in SUCCESS_STATUSES:
            summary.problems.append(
                f"{row.database_name} {row.cycle_expected_at:%H:%MZ} {row.status}: {row.message}"
            )
        elif row.size_anomaly:
            summary.anomalies.append(
                f"{row.database_name} {row.cycle_expected_at:%H:%MZ} {row.size_anomaly}: "
                f"{row.size} bytes, median {row.size_median:.0f}"
            )
    return [days[key] for key in sorted(days)]
