"""Restore drills, the pure part: outcomes, the policy, which drills are due, how a restore compares
with the previous one.

A restore drill takes one entry whose backup is good (SUCCESS or HASH_MISMATCH, staged file unchanged),
restores the dump into a throw-away PostgreSQL cluster and checks what came back. This module decides
nothing about processes or SQL: the drill service (`backup_pipeline.drill`) feeds it figures and
history and records what it answers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

GIB = 1 << 30


class DrillOutcome(enum.StrEnum):
    RESTORED = "RESTORED"  # restored cleanly and passed the sanity checks
    RESTORE_FAILED = "RESTORE_FAILED"  # the dump does not restore (or restores nothing usable)
    NOT_DRILLABLE = "NOT_DRILLABLE"  # not a PostgreSQL dump (MySQL, SQL Server, unknown bytes…)


@dataclass(frozen=True)
class DrillPolicy:
    """How often an expected backup is drilled and within which limits."""

    enabled: bool = True
    every_days: int = 7
    max_minutes: float = 30  # wall-clock limit of one drill, cluster start and checks included
    max_bytes: int = 16 * GIB  # disk the scratch cluster may use; also the decompressed dump's cap
    shrink_below: float = 0.5  # rows or restored size below this ratio of the previous drill: shrank

    @property
    def max_seconds(self) -> float:
        return self.max_minutes * 60.0


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
