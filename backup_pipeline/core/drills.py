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
