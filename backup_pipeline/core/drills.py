"""Restore drills, the pure part: outcomes, the policy, which drills are due, how a restore compares
with the previous one.

A restore drill takes one entry whose backup is good (SUCCESS or HASH_MISMATCH, staged file unchanged),
restores the dump into a throw-away PostgreSQL cluster (or MariaDB server, for MariaDB/MySQL dumps) and
checks what came back: figures, validation queries, the time it took against its objective. This module
decides nothing about processes or SQL: the drill service (`backup_pipeline.drill`) feeds it figures,
query results and history and records what it answers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

GIB = 1 << 30


class DrillOutcome(enum.StrEnum):
    RESTORED = "RESTORED"  # restored cleanly and passed the sanity checks
    RESTORE_FAILED = "RESTORE_FAILED"  # the dump does not restore (or restores nothing usable)
    NOT_DRILLABLE = "NOT_DRILLABLE"  # not a dump a drill restores here (SQL Server, unknown bytes…)


@dataclass(frozen=True)
class ValidationCheck:
    """A query run on the restored database: one row whose first column is true, or the drill fails.
    `:cycle` in it is the cycle's expected instant."""

    name: str
    sql: str


@dataclass(frozen=True)
class DrillPolicy:
    """How often an expected backup is drilled, within which limits, and what it must prove."""

    enabled: bool = True
    every_days: int = 7
    max_minutes: float = 30  # wall-clock limit of one drill, cluster start and checks included
    max_bytes: int = 16 * GIB  # disk the scratch cluster may use; also the decompressed dump's cap
    shrink_below: float = 0.5  # rows or restored size below this ratio of the previous drill: shrank
    checks: tuple[ValidationCheck, ...] = ()
    objective_minutes: float | None = None  # a restore taking longer is slow (RESTORE_SLOW)

    @property
    def max_seconds(self) -> float:
        return self.max_minutes * 60.0

    @property
    def objective_seconds(self) -> float | None:
        return self.objective_minutes * 60.0 if self.objective_minutes is not None else None


def is_slow(outcome: DrillOutcome | str, duration_seconds: float, objective_seconds: float | None) -> bool:
    """A restore that worked but took longer than its objective."""
    return (
        outcome == DrillOutcome.RESTORED
        and objective_seconds is not None
        and duration_seconds > objective_seconds
    )


# ---------------------------------------------------------------- validation queries

CHECK_DETAIL_CAP = 300


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str  # what it returned, or its error, in words (bounded)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def judge_check(name: str, rows: Sequence[Sequence[Any]], *, booleans: bool) -> CheckResult:
    """A validation query's first rows: exactly one, whose first column is true — a boolean true, or
    (`booleans` false: MariaDB, which has no boolean type) a non-zero number."""
    if not rows:
        return CheckResult(name, False, "returned no row")
    if len(rows) > 1:
        return CheckResult(name, False, "returned several rows (one is expected)")
    value = rows[0][0] if rows[0] else None
    if value is None:
        return CheckResult(name, False, "returned NULL")
    if value is True:
        return CheckResult(name, True, "true")
    if value is False:
        return CheckResult(name, False, "returned false")
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if number and not booleans:
        return CheckResult(name, value != 0, "true" if value != 0 else "returned 0 (false)")
    shown = " ".join(str(value).split())
    shown = shown if len(shown) <= 100 else shown[:99] + "…"
    return CheckResult(name, False, f"returned {shown!r}, not true")


def failed_check(name: str, error: str) -> CheckResult:
    return CheckResult(name, False, bounded_detail(f"failed: {error}"))


def bounded_detail(text: str) -> str:
    return text if len(text) <= CHECK_DETAIL_CAP else text[: CHECK_DETAIL_CAP - 1] + "…"


def check_reason(results: Iterable[CheckResult]) -> str | None:
    """The drill's reason when a check did not pass: the first one's name and what it did."""
    failed = next((r for r in results if not r.passed), None)
    return f"check `{failed.name}`: {failed.detail}" if failed is not None else None


_CHECK_TOKENS = re.compile(
    r"""(?P<quoted>'(?:[^'\\]|\\.|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\$(?P<tag>[A-Za-z_]*)\$[\s\S]*?\$(?P=tag)\$)"""
    r"|(?P<comment>--[^\n]*|/\*[\s\S]*?\*/|\#[^\n]*)"
    r"|(?P<cycle>(?<!:):cycle\b)"
    r"|(?P<percent>%)",
)


def bind_cycle(sql: str, *, hash_comments: bool) -> str:
    """The query with `:cycle` as the drivers' named parameter `%(cycle)s` (outside quotes and
    comments; `::cycle` is a cast) and every other `%` doubled. `#` starts a comment in MariaDB only."""

    def replace(match: re.Match[str]) -> str:
        if match.group("cycle"):
            return "%(cycle)s"
        if match.group("percent"):
            return "%%"
        text = match.group(0)
        if match.group("comment") and text.startswith("#") and not hash_comments:
            return "#" + bind_cycle(text[1:], hash_comments=hash_comments)
        return text.replace("%", "%%")

    return _CHECK_TOKENS.sub(replace, sql)


# ---------------------------------------------------------------- what came back


@dataclass(frozen=True)
class Figures:
    """What a restore brought back: table names with their rows, the database's size."""

    tables: int
    rows: int
    bytes: int
    table_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Comparison:
    """A restore next to the expected backup's previous successful drill."""

    previous_cycle: datetime
    previous: Figures
    shrank: tuple[str, ...] = ()  # what dropped, in words; empty when nothing did
    foreign: bool = False  # no table in common: the dump of another database

    @property
    def message(self) -> str:
        at = f"{self.previous_cycle:%Y-%m-%dT%H:%MZ}"
        if self.foreign:
            return (
                f"none of the {self.previous.tables} table(s) restored by the drill of cycle {at} is in "
                "this dump: the dump of another database?"
            )
        if self.shrank:
            return f"restore shrank since the drill of cycle {at}: " + "; ".join(self.shrank)
        return ""


def compare(
    current: Figures, previous: Figures | None, previous_cycle: datetime | None, below: float
) -> Comparison | None:
    """The restore-level twin of the size anomaly: fewer tables, or rows or restored bytes below
    `below` × the previous successful drill's. None without a previous drill."""
    if previous is None or previous_cycle is None:
        return None
    foreign = bool(previous.table_names and current.table_names) and not (
        previous.table_names & current.table_names
    )
    shrank: list[str] = []
    if current.tables < previous.tables:
        shrank.append(f"tables {previous.tables} → {current.tables}")
    for label, now, before in (
        ("rows", current.rows, previous.rows),
        ("bytes", current.bytes, previous.bytes),
    ):
        if before > 0 and now / before < below:
            shrank.append(f"{label} {before:,} → {now:,} ({now / before:.2f}×, flagged below {below:g}×)")
    return Comparison(previous_cycle, previous, tuple(shrank), foreign)


# ---------------------------------------------------------------- which drills are due


@dataclass(frozen=True)
class DrillCandidate:
    """An expected backup whose latest good entry has not been drilled yet."""

    job_id: int
    entry_id: int
    cycle_expected_at: datetime
    staged_bytes: int
    policy: DrillPolicy
    last_drilled_at: datetime | None = None  # the `as_of` of the backup's latest drill
    last_duration: float | None = None  # seconds its latest drill took


def is_due(candidate: DrillCandidate, as_of: datetime) -> bool:
    """Drilled never, or at least `every_days` calendar days (UTC) before `as_of`."""
    if not candidate.policy.enabled:
        return False
    last = candidate.last_drilled_at
    return last is None or (as_of.date() - last.date()).days >= candidate.policy.every_days


# A first drill's duration is unknown: a cluster start plus a conservative restore throughput of
# the staged (compressed) bytes.
FIRST_DRILL_OVERHEAD = 5.0
ASSUMED_STAGED_BYTES_PER_SECOND = 4 * 1024 * 1024


def estimate_seconds(candidate: DrillCandidate) -> float:
    """How long a drill is expected to take: the backup's last drill, else from its staged size."""
    if candidate.last_duration is not None:
        return max(candidate.last_duration, 1.0)
    return FIRST_DRILL_OVERHEAD + candidate.staged_bytes / ASSUMED_STAGED_BYTES_PER_SECOND


def plan_due(
    candidates: Iterable[DrillCandidate], as_of: datetime, budget_seconds: float
) -> list[DrillCandidate]:
    """The drills a run does: the due ones, never-drilled first then the oldest drill first, as many
    as their estimates fit in the run's budget (always at least one, so a budget smaller than any
    drill cannot starve the fleet)."""
    due = [c for c in candidates if is_due(c, as_of)]
    due.sort(key=_priority)
    planned: list[DrillCandidate] = []
    spent = 0.0
    for candidate in due:
        cost = estimate_seconds(candidate)
        if planned and spent + cost > budget_seconds:
            continue  # a smaller drill further down may still fit
        planned.append(candidate)
        spent += cost
    return planned


def _priority(candidate: DrillCandidate) -> tuple[int, datetime, datetime, int]:
    never = candidate.last_drilled_at is None
    last = candidate.last_drilled_at or candidate.cycle_expected_at
    return (0 if never else 1, last, candidate.cycle_expected_at, candidate.job_id)


@dataclass
class DrillBatch:
    """Consecutive planned drills grouped by staged bytes: one Dagster step each."""

    entry_ids: list[int] = field(default_factory=list)
    staged_bytes: int = 0


class StagedDrill(Protocol):
    """A drill to batch: its entry and the bytes of its staged file (a planned candidate, or an
    entry a person chose)."""

    @property
    def entry_id(self) -> int: ...

    @property
    def staged_bytes(self) -> int: ...


@dataclass(frozen=True)
class ChosenDrill:
    entry_id: int
    staged_bytes: int


def batch_by_bytes(planned: Sequence[StagedDrill], max_batch_bytes: int) -> list[DrillBatch]:
    """Split the plan, in order, into batches of at most `max_batch_bytes` staged bytes (a drill
    larger than that is a batch of its own), whoever's dumps they are: one agent's many large dumps
    are as many steps, which any worker may run."""
    batches: list[DrillBatch] = []
    for candidate in planned:
        size = max(candidate.staged_bytes, 0)
        if not batches or (batches[-1].entry_ids and batches[-1].staged_bytes + size > max_batch_bytes):
            batches.append(DrillBatch())
        batches[-1].entry_ids.append(candidate.entry_id)
        batches[-1].staged_bytes += size
    return batches
