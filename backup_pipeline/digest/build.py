"""The daily fleet digest: the whole fleet on one day, built once (rendered by `digest.render`).

`build_digest` reads the day's entries, the cycles the day owes (from each expected backup's
schedule: a weekly backup owes nothing on most days) and each one's last success up to the end of
the day, and summarises them with pandas: one row per agent (expected
backups, entries per status, cycles not evaluated yet, size anomalies, the oldest last success
among its databases) plus a TOTAL row, the day's problems and its size anomalies. The Dagster asset
`fleet_digest` and the CLI's `backup-pipeline digest` both build it the same way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.core.domain import PROBLEM_STATUSES, EntryStatus
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.digest import digest_rows
from backup_pipeline.storage.drills import drills_finished_between

if TYPE_CHECKING:  # pandas is imported when a digest is built: every process loading the
    import pandas as pd  # definitions (CLI scans included) would pay for it otherwise

STATUSES = [status.value for status in reversed(EntryStatus)]  # SUCCESS first: the usual case
TOTAL = "TOTAL"
ModelT = TypeVar("ModelT", bound=BaseModel)


class AgentHealth(BaseModel):
    agent_id: str
    jobs: int = 0
    evaluated: int = 0
    success: int = 0
    hash_mismatch: int = 0
    transfer_integrity_failed: int = 0
    failed: int = 0
    missing: int = 0
    pending: int = 0  # cycles of the day without an entry yet (still open, or not scanned)
    size_anomalies: int = 0
    oldest_last_success: datetime | None = None  # the most neglected of the agent's databases
    oldest_last_success_database: str | None = None
    never_succeeded: int = 0  # expected backups without any successful cycle up to the end of the day


class Problem(BaseModel):
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    status: str
    message: str


class Anomaly(BaseModel):
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    kind: str
    size: int | None
    median: float | None
    ratio: float | None


class DrillTally(BaseModel):
    """The restore drills that ran on the day (as of an instant of that day)."""

    drills: int = 0
    restored: int = 0
    restore_failed: int = 0
    not_drillable: int = 0
    shrank: int = 0
    slow: int = 0


class DrillProblem(BaseModel):
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    outcome: str  # RESTORE_FAILED, or RESTORE_SHRANK / RESTORE_SLOW for a restore that shrank or was slow
    reason: str


class FleetDigest(BaseModel):
    day: date
    generated_at: datetime
    agents: list[AgentHealth]
    total: AgentHealth
    problems: list[Problem]
    anomalies: list[Anomaly]
    drills: DrillTally = DrillTally()
    drill_problems: list[DrillProblem] = []

    @property
    def headline(self) -> str:
        t = self.total
        line = (
            f"Fleet health on {self.day}: {len(self.agents)} agent(s), {t.jobs} expected backup(s), "
            f"{t.evaluated} evaluated, {len(self.problems)} problem(s), "
            f"{len(self.anomalies)} size anomaly(ies), {t.pending} pending"
        )
        if self.drills.drills:
            line += f"; {self.drills.drills} restore drill(s), {self.drills.restore_failed} failed"
        return line


# ---------------------------------------------------------------- building


def build_digest(database: Database, day: date) -> FleetDigest:
    start, end = day_bounds(day)
    with database.sessions() as session:
        rows = digest_rows(session, start, end)
        drilled = [
            (drill, backup.agent_id_responsible, backup.database_name)
            for drill, backup in drills_finished_between(session, start, end)
        ]
    digest = summarise(
        day, rows.backups, expected_cycles(rows.backups, day), rows.entries, rows.last_successes
    )
    digest.drills, digest.drill_problems = tally_drills(drilled)
    return digest


def tally_drills(drilled: list[tuple[Any, str, str]]) -> tuple[DrillTally, list[DrillProblem]]:
    """The day's drills counted by outcome, and the ones that failed or shrank."""
    tally = DrillTally(drills=len(drilled))
    problems = []
    for drill, agent, database in drilled:
        outcome = drill.outcome.lower()
        setattr(tally, outcome, getattr(tally, outcome) + 1)
        tally.shrank += bool(drill.shrank)
        tally.slow += bool(drill.slow)
        if drill.outcome == "RESTORE_FAILED":
            kind, reason = drill.outcome, drill.reason
        elif drill.shrank:
            kind, reason = "RESTORE_SHRANK", drill.comparison
        elif drill.slow:
            kind = "RESTORE_SLOW"
            reason = (
                f"restored in {drill.duration_seconds:.0f} s, objective {drill.objective_seconds or 0:.0f} s"
            )
        else:
            continue
        problems.append(
            DrillProblem(
                agent_id=agent,
                database_name=database,
                cycle_expected_at=drill.cycle_expected_at,
                outcome=kind,
                reason=reason or "",
            )
        )
    return tally, sorted(problems, key=lambda p: (p.agent_id, p.database_name, p.cycle_expected_at))


def expected_cycles(backups: list[Any], day: date) -> list[tuple[int, datetime]]:
    """(backup, instant) of every cycle the day owes: the active backups' instants that day whose
    deadline is not before the backup was declared, as automatic scans see them."""
    owed = []
    for backup in backups:
        if not backup.is_active:
            continue
        grace = timedelta(minutes=backup.grace_minutes)
        owed += [
            (backup.id, at) for at in schedule_of(backup).instants_on(day) if at + grace >= backup.created_at
        ]
    return owed


def summarise(
    day: date,
    backups: list[Any],
    expected: list[tuple[int, datetime]],
    entries: list[Any],
    last_success: list[Any],
) -> FleetDigest:
    """The digest from plain rows (expected backups: id, agent, database; the day's owed cycles; its
    entries; last successes). A cycle is pending while owed without an entry."""
    import pandas as pd  # imported when a digest is built: most commands never need it

    backup_frame = pd.DataFrame(
        [(b.id, b.agent_id, b.database_name) for b in backups],
        columns=["job_id", "agent_id", "database_name"],
    )
    entry_frame = pd.DataFrame(
        [tuple(e) for e in entries],
        columns=["job_id", "cycle", "status", "message", "size", "anomaly", "median", "ratio"],
    )
    owed_frame = pd.DataFrame(expected, columns=["job_id", "cycle"])
    for cycle_frame in (entry_frame, owed_frame):  # one dtype on both sides of the merge
        cycle_frame["cycle"] = pd.to_datetime(cycle_frame["cycle"], utc=True)
    cycles = owed_frame.merge(entry_frame, on=["job_id", "cycle"], how="outer")
    success_frame = pd.DataFrame([tuple(s) for s in last_success], columns=["job_id", "last_success"])
    frame = backup_frame.merge(cycles, on="job_id", how="inner").merge(success_frame, on="job_id", how="left")

    agents = [_agent_row(agent, group) for agent, group in frame.groupby("agent_id", sort=True)]
    listed = frame.rename(columns={"cycle": "cycle_expected_at", "anomaly": "kind"})
    problems = _models(Problem, listed[listed["status"].isin(PROBLEM_STATUSES)])
    anomalies = _models(Anomaly, listed[listed["kind"].notna()])
    return FleetDigest(
        day=day,
        generated_at=datetime.now(UTC),
        agents=agents,
        total=_agent_row(TOTAL, frame),
        problems=problems,
        anomalies=anomalies,
    )


def _agent_row(agent: str, group: pd.DataFrame) -> AgentHealth:
    counts = group["status"].value_counts()
    oldest_at, oldest_db = None, None
    succeeded = group[group["last_success"].notna()]
    if not succeeded.empty:
        row = succeeded.loc[succeeded["last_success"].idxmin()]
        oldest_at, oldest_db = row["last_success"].to_pydatetime(), row["database_name"]
        if agent == TOTAL:
            oldest_db = f"{row['agent_id']}/{row['database_name']}"
    return AgentHealth(
        agent_id=agent,
        jobs=int(group["job_id"].nunique()),
        evaluated=int(group["status"].notna().sum()),
        pending=int(group["status"].isna().sum()),
        size_anomalies=int(group["anomaly"].notna().sum()),
        oldest_last_success=oldest_at,
        oldest_last_success_database=oldest_db,
        never_succeeded=int(group.loc[group["last_success"].isna(), "job_id"].nunique()),
        **{status.lower(): int(counts.get(status, 0)) for status in STATUSES},
    )


def _models(model: type[ModelT], frame: pd.DataFrame) -> list[ModelT]:
    """One `model` per row, sorted by agent, database and cycle; NaN becomes None."""
    ordered = frame.sort_values(["agent_id", "database_name", "cycle_expected_at"])
    fields = list(model.model_fields)
    return [
        model(**{f: None if _missing(v) else v for f, v in zip(fields, row, strict=True)})
        for row in ordered[fields].itertuples(index=False)
    ]


def _missing(value: Any) -> bool:
    import pandas as pd

    return not isinstance(value, str | datetime) and bool(pd.isna(value))
