"""The domain's vocabulary: statuses, what an agent reports, what an expected job is.

Pure data: no I/O, no third-party imports, so every rule built on it is trivially testable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from backup_pipeline.core.schedules import Schedule


class EntryStatus(enum.StrEnum):
    """Outcome of one cycle, most severe first (the order of the decision rules)."""

    MISSING = "MISSING"
    FAILED = "FAILED"
    TRANSFER_INTEGRITY_FAILED = "TRANSFER_INTEGRITY_FAILED"
    HASH_MISMATCH = "HASH_MISMATCH"
    SUCCESS = "SUCCESS"

    @property
    def is_success(self) -> bool:
        """SUCCESS and HASH_MISMATCH are technical successes: the backup is there and intact."""
        return self in SUCCESS_STATUSES

    @property
    def is_problem(self) -> bool:
        """MISSING, FAILED and TRANSFER_INTEGRITY_FAILED: people must hear about it."""
        return self in PROBLEM_STATUSES


# The one place the two families of outcomes are spelled out (SQL binds them as parameters).
SUCCESS_STATUSES = frozenset({EntryStatus.SUCCESS, EntryStatus.HASH_MISMATCH})
PROBLEM_STATUSES = frozenset({EntryStatus.MISSING, EntryStatus.FAILED, EntryStatus.TRANSFER_INTEGRITY_FAILED})


def integrity_passes(statuses: Iterable[str]) -> bool:
    """The integrity verdict over some cycles' statuses: at least one evaluated, and every one a
    technical success. Nothing evaluated yet is not a pass (there is nothing to vouch for)."""
    seen = list(statuses)
    return bool(seen) and all(status in SUCCESS_STATUSES for status in seen)


class DayVerdict(enum.StrEnum):
    """What one day of an expected backup (or of an agent's backups) amounts to, in Dagster's terms: a
    partition is materialized only when a good backup exists for every cycle of it."""

    GOOD = "GOOD"  # every cycle owed that day is decided, each a technical success
    BAD = "BAD"  # a cycle is decided and is not a technical success
    OPEN = "OPEN"  # nothing bad so far, but a cycle owed that day is not decided yet


def day_verdict(statuses: Iterable[str], undecided: int) -> DayVerdict:
    """The verdict over a day's decided cycles' statuses and its number of cycles still undecided."""
    seen = list(statuses)
    if any(status not in SUCCESS_STATUSES for status in seen):
        return DayVerdict.BAD
    return DayVerdict.GOOD if seen and not undecided else DayVerdict.OPEN


class BackupStatus(enum.StrEnum):
    """An expected backup's current status, which follows its latest cycle."""

    OK = "OK"
    FAILED = "FAILED"
    TRANSFER_INTEGRITY_FAILED = "TRANSFER_INTEGRITY_FAILED"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def from_entry(cls, status: EntryStatus) -> BackupStatus:
        return cls.OK if status.is_success else cls(status.value)


class ContentPolicy(enum.StrEnum):
    """When a technically successful backup is flagged HASH_MISMATCH."""

    CHANGED = "changed"  # design v2: content differs from the previous success
    UNCHANGED = "unchanged"  # design v1: content identical (stale database or re-sent dump)
    OFF = "off"


class Step(enum.StrEnum):
    BACKUP = "BACKUP"
    COMPRESS = "COMPRESS"
    TRANSFER = "TRANSFER"


@dataclass(frozen=True)
class ReportTime:
    """A timestamp as the agent wrote it: aware (kept in UTC) or naive (read in the job's time zone)."""

    value: datetime  # naive when the agent gave no offset, else UTC

    @property
    def is_naive(self) -> bool:
        return self.value.tzinfo is None

    def in_utc(self, agent_tz: tzinfo = UTC) -> datetime:
        if self.value.tzinfo is None:
            return self.value.replace(tzinfo=agent_tz).astimezone(UTC)
        return self.value

    def to_json(self) -> str:
        return self.value.isoformat()

    @classmethod
    def from_json(cls, text: str) -> ReportTime:
        return cls(datetime.fromisoformat(text))


@dataclass(frozen=True)
class StepReport:
    """One step (BACKUP, COMPRESS or TRANSFER) of one database as the agent reported it."""

    status: bool
    start_time: ReportTime | None = None
    end_time: ReportTime | None = None
    sha256: str | None = None
    size: int | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class DatabaseReport:
    """One database section of a report. `problems` lists why the section cannot be trusted."""

    name: str
    steps: dict[Step, StepReport] = field(default_factory=dict)
    staged_file_name: str | None = None  # as written by the agent (maybe a full path)
    logs_summary: str | None = None
    problems: tuple[str, ...] = ()

    def step(self, step: Step) -> StepReport | None:
        return self.steps.get(step)


@dataclass(frozen=True)
class StatusReport:
    """A validated status report (the JSON file an agent drops in log/): one agent, one operation,
    many databases."""

    agent_id: str
    operation_end_time: ReportTime
    databases: Mapping[str, DatabaseReport]
    operation_start_time: ReportTime | None = None
    overall_status: str | None = None


@dataclass(frozen=True)
class ReportRef:
    """Where a recorded report came from, for messages and entries."""

    report_id: int
    file_name: str


@dataclass(frozen=True)
class RecordedReport:
    """An accepted report as recorded in storage, ready for evaluation."""

    ref: ReportRef
    report: StatusReport


@dataclass(frozen=True)
class RejectedReport:
    """A rejected report of an agent; its file-name time ties it to a cycle."""

    ref: ReportRef
    file_name_time: datetime | None  # naive, as in the file name
    reason: str


@dataclass(frozen=True)
class ExpectedBackup:
    """One database of one agent expected at the instants of a schedule (the first design's "expected
    job", docs/design.md §1; one entry of the jobs file). Its identity is (agent, database, name)."""

    agent_id: str
    database_name: str
    schedule: Schedule
    name: str = ""
    early_minutes: int = 60
    grace_minutes: int = 60
    timezone: tzinfo = UTC  # how the agent's naive timestamps are read
    staged_file_name: str | None = None
    content_change: ContentPolicy = ContentPolicy.CHANGED

    @property
    def label(self) -> str:
        return f"{self.agent_id}/{self.database_name}@{self.name or self.schedule.text}"


@dataclass(frozen=True)
class StagedFileCheck:
    """The server's own look at a staged file; `problem` set when it could not be read safely."""

    file_name: str
    problem: str | None = None
    sha256: str | None = None
    size: int | None = None
    content_fingerprint: str | None = None
    archive_problem: str | None = None  # the compressed stream does not decompress cleanly
    modified_at: float | None = None  # the file's mtime when measured (epoch seconds), if measured now

    @property
    def readable(self) -> bool:
        return self.problem is None and self.sha256 is not None


@dataclass(frozen=True)
class PreviousSuccess:
    """The last successful cycle before the one evaluated, for the content policy."""

    cycle_expected_at: datetime
    staged_hash: str | None
    content_fingerprint: str | None


@dataclass(frozen=True)
class Decision:
    """The outcome of one cycle: everything an entry records, minus storage details."""

    status: EntryStatus
    message: str
    report: RecordedReport | None = None
    database: DatabaseReport | None = None
    check: StagedFileCheck | None = None
    previous: PreviousSuccess | None = None
