"""What leaves a scan's evaluation: its counts and the entries it wrote (for Dagster events, logs and
the CLI), and the per-agent summary of a day that large fleets show as one asset per agent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.core.domain import SUCCESS_STATUSES, integrity_passes
from backup_pipeline.scan.context import ScanContext, Summary
from backup_pipeline.storage import entries


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


class AgentDay(Summary):
    """All of one agent's entries for a day, for the agent-level asset of large fleets."""

    agent_id: str
    day: date
    statuses: dict[str, int]
    problems: list[str]
    total_size: int
    entries: int
    anomalies: list[str] = []  # size anomalies of successful cycles

    @property
    def passed(self) -> bool:
        """The agent's integrity verdict for the day, as the on-demand check gives it."""
        return integrity_passes(status for status, n in self.statuses.items() for _ in range(n))


def agent_days(ctx: ScanContext, agents: Sequence[str], day: date) -> list[AgentDay]:
    start, end = day_bounds(day)
    with ctx.database.sessions() as session:
        rows = entries.day_entries_of_agents(session, agents, start, end)
    summaries: dict[str, AgentDay] = {}
    for row in rows:
        summary = summaries.setdefault(
            row.agent_id,
            AgentDay(agent_id=row.agent_id, day=day, statuses={}, problems=[], total_size=0, entries=0),
        )
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
    return [summaries[a] for a in sorted(summaries)]
