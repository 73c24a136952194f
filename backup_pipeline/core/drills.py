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


# ---------------------------------------------------------------- how long drills take

# What one drill costs whatever its size: the template's copy, the cluster's start, the checks, the
# stop (about a second on the machines measured). Thousands of tiny dumps are thousands of these.
DRILL_FIXED_SECONDS = 1.0
# The restore rate of staged (compressed) bytes assumed until drills have been measured: conservative.
ASSUMED_STAGED_BYTES_PER_SECOND = 4 * 1024 * 1024
# A recorded drill tells the rate only when its bytes, not its fixed cost, took most of its time.
RATE_SAMPLE_MIN_BYTES = 8 * 1024 * 1024
RATE_SAMPLES_NEEDED = 3
RATE_LIMITS = (64 * 1024, 16 * 1024**3)  # bytes per second: a measured rate is kept within these


@dataclass(frozen=True)
class DrillCost:
    """How long a drill is expected to take: a fixed cost, plus its staged bytes at the restore rate."""

    fixed_seconds: float = DRILL_FIXED_SECONDS
    bytes_per_second: float = ASSUMED_STAGED_BYTES_PER_SECOND

    def of_bytes(self, staged_bytes: int) -> float:
        return self.fixed_seconds + max(staged_bytes, 0) / self.bytes_per_second


def measured_cost(drills: Iterable[tuple[int, float]]) -> DrillCost:
    """The restore rate measured on recorded drills, given as (staged bytes, seconds): the bytes of the
    drills large enough to tell, over their time beyond the fixed cost. The assumed rate until
    `RATE_SAMPLES_NEEDED` such drills exist."""
    samples = [(b, s) for b, s in drills if b >= RATE_SAMPLE_MIN_BYTES and s > 0]
    if len(samples) < RATE_SAMPLES_NEEDED:
        return DrillCost()
    restoring = sum(max(s - DRILL_FIXED_SECONDS, s / 2) for _, s in samples)
    rate = sum(b for b, _ in samples) / restoring
    low, high = RATE_LIMITS
    return DrillCost(bytes_per_second=min(max(rate, low), high))


class TimedDrill(Protocol):
    """A drill to estimate and batch: its entry, the bytes of its staged file, and how long the
    backup's previous drill took (None when never drilled)."""

    @property
    def entry_id(self) -> int: ...

    @property
    def staged_bytes(self) -> int: ...

    @property
    def last_duration(self) -> float | None: ...


def estimate_seconds(drill: TimedDrill, cost: DrillCost) -> float:
    """How long a drill is expected to take: its backup's previous drill when there is one (at least
    the fixed cost), else the fixed cost plus its bytes at the restore rate."""
    if drill.last_duration is not None:
        return max(drill.last_duration, cost.fixed_seconds)
    return cost.of_bytes(drill.staged_bytes)


def plan_due(
    candidates: Iterable[DrillCandidate], as_of: datetime, budget_seconds: float, cost: DrillCost
) -> list[DrillCandidate]:
    """The drills a run does: the due ones, never-drilled first then the oldest drill first, as many
    as their estimates fit in the run's budget (always at least one, so a budget smaller than any
    drill cannot starve the fleet)."""
    due = [c for c in candidates if is_due(c, as_of)]
    due.sort(key=_priority)
    planned: list[DrillCandidate] = []
    spent = 0.0
    for candidate in due:
        seconds = estimate_seconds(candidate, cost)
        if planned and spent + seconds > budget_seconds:
            continue  # a smaller drill further down may still fit
        planned.append(candidate)
        spent += seconds
    return planned


def _priority(candidate: DrillCandidate) -> tuple[int, datetime, datetime, int]:
    never = candidate.last_drilled_at is None
    last = candidate.last_drilled_at or candidate.cycle_expected_at
    return (0 if never else 1, last, candidate.cycle_expected_at, candidate.job_id)


@dataclass
class DrillBatch:
    """Consecutive planned drills grouped by estimated time: one Dagster step each."""

    entry_ids: list[int] = field(default_factory=list)
    staged_bytes: int = 0
    estimated_seconds: float = 0.0


@dataclass(frozen=True)
class ChosenDrill:
    """An entry a person chose to drill."""

    entry_id: int
    staged_bytes: int
    last_duration: float | None = None


def batch_by_time(
    planned: Sequence[TimedDrill], max_batch_seconds: float, cost: DrillCost
) -> list[DrillBatch]:
    """Split the plan, in order, into batches of at most `max_batch_seconds` of estimated time (a
    drill longer than that is a batch of its own), whoever's dumps they are: one agent's many large
    dumps are as many steps, which any worker may run, and thousands of tiny dumps, each costing its
    fixed second, are spread over steps too."""
    batches: list[DrillBatch] = []
    for drill in planned:
        seconds = estimate_seconds(drill, cost)
        last = batches[-1] if batches else None
        if last is None or (last.entry_ids and last.estimated_seconds + seconds > max_batch_seconds):
            batches.append(last := DrillBatch())
        last.entry_ids.append(drill.entry_id)
        last.staged_bytes += max(drill.staged_bytes, 0)
        last.estimated_seconds += seconds
    return batches
