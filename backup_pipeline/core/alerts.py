"""Alerts, the pure part: which events a cycle raises, when they are held, how a notification reads.

No I/O and no third-party imports, like the rest of the core. The shells decide *when* to call
these (`alerting.py` while evaluating, `notifications.py` while sending) and store the results.

- An evaluated cycle raises at most one event per status (FAILED, MISSING, TRANSFER_INTEGRITY_FAILED,
  HASH_MISMATCH as information), plus SIZE_ANOMALY when its staged size is far from the job's
  trailing median, plus RECOVERED when it ends a notified problem.
- A silence (``silenced_until`` or a recurring maintenance window) holds the events of every cycle
  whose deadline falls inside it: they are recorded, never sent.
- The events of one scan are sent grouped, one message per target.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from backup_pipeline.core.domain import PROBLEM_STATUSES, SUCCESS_STATUSES, EntryStatus
from backup_pipeline.core.text import visible

# ---------------------------------------------------------------- events


class AlertEvent(enum.StrEnum):
    """What a notification is about, most severe first (the order of a message's lines)."""

    MISSING = "MISSING"
    FAILED = "FAILED"
    TRANSFER_INTEGRITY_FAILED = "TRANSFER_INTEGRITY_FAILED"
    RESTORE_FAILED = "RESTORE_FAILED"  # a restore drill: the dump does not restore
    SIZE_ANOMALY = "SIZE_ANOMALY"
    RESTORE_SHRANK = "RESTORE_SHRANK"  # a restore drill: far less came back than last time
    RESTORE_SLOW = "RESTORE_SLOW"  # a restore drill: it restored, slower than its objective
    HASH_MISMATCH = "HASH_MISMATCH"
    RECOVERED = "RECOVERED"
    RESTORE_RECOVERED = "RESTORE_RECOVERED"  # a drill restores again after a notified failure
    RESTORE_SLOW_RECOVERED = "RESTORE_SLOW_RECOVERED"  # a drill within its objective after a slow one

    @property
    def level(self) -> Level:
        if self in PROBLEM_EVENTS:
            return Level.FAILURE
        return {
            AlertEvent.RESTORE_FAILED: Level.FAILURE,
            AlertEvent.SIZE_ANOMALY: Level.WARNING,
            AlertEvent.RESTORE_SHRANK: Level.WARNING,
            AlertEvent.RESTORE_SLOW: Level.WARNING,
            AlertEvent.HASH_MISMATCH: Level.INFO,
            AlertEvent.RECOVERED: Level.SUCCESS,
            AlertEvent.RESTORE_RECOVERED: Level.SUCCESS,
            AlertEvent.RESTORE_SLOW_RECOVERED: Level.SUCCESS,
        }[self]


class Level(enum.StrEnum):
    """A notification's overall level (the values are Apprise's notify types)."""

    FAILURE = "failure"
    WARNING = "warning"
    INFO = "info"
    SUCCESS = "success"


PROBLEM_EVENTS = frozenset(AlertEvent(status.value) for status in PROBLEM_STATUSES)


def cycle_events(
    status: str, size_anomaly: str | None, *, notify_hash_mismatch: bool = True
) -> list[AlertEvent]:
    """The events an evaluated cycle raises (recovery aside, which depends on the job's history)."""
    events: list[AlertEvent] = []
    if status in PROBLEM_STATUSES:
        events.append(AlertEvent(status))
    elif status == EntryStatus.HASH_MISMATCH and notify_hash_mismatch:
        events.append(AlertEvent.HASH_MISMATCH)
    if size_anomaly is not None and status in SUCCESS_STATUSES:
        events.append(AlertEvent.SIZE_ANOMALY)
    return events


def drill_events(outcome: str, *, shrank: bool, slow: bool = False) -> list[AlertEvent]:
    """The events a restore drill raises (its recoveries aside): a failed restore is a problem, a
    restore far smaller than the previous one or slower than its objective a warning; a dump that is
    not drillable is neither."""
    if outcome == "RESTORE_FAILED":
        return [AlertEvent.RESTORE_FAILED]
    if outcome != "RESTORED":
        return []
    return [e for e, on in ((AlertEvent.RESTORE_SHRANK, shrank), (AlertEvent.RESTORE_SLOW, slow)) if on]


def recovers(
    cycle: datetime,
    *,
    last_problem: datetime | None,
    last_problem_held: bool,
    last_recovery: datetime | None,
    previous_success: datetime | None,
) -> bool:
    """Whether a successful `cycle` ends a problem people were told about.

    `last_problem` is the cycle of the job's latest problem alert, `last_recovery` of its latest
    recovery notice, `previous_success` its last successful cycle before `cycle`. A problem already
    followed by a success, or that was never sent (held by a silence), gets no recovery notice.
    """
    if last_problem is None or last_problem_held or last_problem > cycle:
        return False
    if last_recovery is not None and last_recovery >= last_problem:
        return False
    return previous_success is None or previous_success < last_problem


# ---------------------------------------------------------------- size anomalies


class SizeAnomalyKind(enum.StrEnum):
    TOO_SMALL = "TOO_SMALL"
    TOO_LARGE = "TOO_LARGE"


@dataclass(frozen=True)
class SizePolicy:
    """Compare with the median of the last `history` successful cycles, once `min_history` exist."""

    enabled: bool = True
    history: int = 14
    min_history: int = 3
    below: float = 0.5
    above: float = 3.0


@dataclass(frozen=True)
class SizeAssessment:
    """A staged size next to the job's trailing median; `kind` is set when it is an anomaly."""

    size: int
    median: float
    ratio: float | None  # None when the median is 0
    history: int  # successful cycles the median is taken over
    kind: SizeAnomalyKind | None
    policy: SizePolicy = field(default_factory=SizePolicy)

    @property
    def message(self) -> str:
        if self.kind is None:
            return ""
        ratio = f"{self.ratio:.2f}×" if self.ratio is not None else "infinitely larger than"
        bound = (
            f"flagged below {self.policy.below:g}×"
            if self.kind is SizeAnomalyKind.TOO_SMALL
            else f"flagged above {self.policy.above:g}×"
        )
        word = "too small" if self.kind is SizeAnomalyKind.TOO_SMALL else "too large"
        return (
            f"size anomaly ({word}): {self.size:,} bytes is {ratio} the median {self.median:,.0f} bytes "
            f"of the last {self.history} successful cycles ({bound})"
        )


def assess_size(
    size: int | None, median: float | None, history: int, policy: SizePolicy
) -> SizeAssessment | None:
    """The staged `size` against the trailing `median` of `history` successful cycles."""
    if not policy.enabled or size is None or median is None or history < policy.min_history:
        return None
    ratio: float | None = size / median if median > 0 else (None if size > 0 else 1.0)
    kind = None
    if ratio is None or ratio > policy.above:
        kind = SizeAnomalyKind.TOO_LARGE
    elif ratio < policy.below:
        kind = SizeAnomalyKind.TOO_SMALL
    return SizeAssessment(size=size, median=median, ratio=ratio, history=history, kind=kind, policy=policy)


# ---------------------------------------------------------------- silences

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly recurring window: on `days` (0 = Monday), from `start` to `end` minutes after local
    midnight in `tz`. `end` <= `start` means the window crosses midnight into the next day."""

    days: frozenset[int]
    start: int  # minutes, 0..1439
    end: int  # minutes, 1..1440
    tz: tzinfo = UTC
    tz_name: str = "UTC"
    name: str | None = None

    def covers(self, instant: datetime) -> bool:
        local = instant.astimezone(self.tz)
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )

    def describe(self) -> str:
        if len(self.days) == 7:
            days = "daily"
        else:
            days = ",".join(WEEKDAYS[d].capitalize() for d in sorted(self.days))
        span = f"{days} {_hhmm(self.start)}–{_hhmm(self.end)} {self.tz_name}"
        return f"'{self.name}' ({span})" if self.name else span


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Silence:
    """When a job's notifications are held."""

    until: datetime | None = None
    windows: tuple[MaintenanceWindow, ...] = ()

    def reason(self, deadline: datetime) -> str | None:
        """Why a cycle with this deadline is silenced, or None."""
        if self.until is not None and deadline < self.until:
            return f"silenced until {self.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        for window in self.windows:
            if window.covers(deadline):
                return f"maintenance window {window.describe()}"
        return None


def annotate_message(status: str, message: str, *, silenced: str | None, size: SizeAssessment | None) -> str:
    """An entry's message with what alerting adds: the silence that covers a MISSING, the anomaly."""
    if status == EntryStatus.MISSING and silenced:
        message = f"{message} (during {silenced}: notifications held)"
    if size is not None and size.kind is not None and status in SUCCESS_STATUSES:
        message = f"{message}; {size.message}"
    return message


# ---------------------------------------------------------------- notifications


@dataclass(frozen=True)
class AlertLine:
    """One alert as it appears in a notification."""

    event: AlertEvent
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    reason: str
    link: str | None = None

    def sort_key(self) -> tuple[int, str, str, datetime]:
        return (list(AlertEvent).index(self.event), self.agent_id, self.database_name, self.cycle_expected_at)


@dataclass(frozen=True)
class Notice:
    """One message to one target."""

    title: str
    body: str
    level: Level


MAX_LINES = 50
MAX_REASON = 500
_NOUNS = {
    AlertEvent.RESTORE_FAILED: ("failed restore drill", "failed restore drills"),
    AlertEvent.SIZE_ANOMALY: ("size anomaly", "size anomalies"),
    AlertEvent.RESTORE_SHRANK: ("shrunk restore", "shrunk restores"),
    AlertEvent.RESTORE_SLOW: ("slow restore", "slow restores"),
    AlertEvent.HASH_MISMATCH: ("content change", "content changes"),
    AlertEvent.RECOVERED: ("recovered", "recovered"),
    AlertEvent.RESTORE_RECOVERED: ("restore recovered", "restores recovered"),
    AlertEvent.RESTORE_SLOW_RECOVERED: (
        "restore within its objective again",
        "restores within their objective again",
    ),
}


def compose(
    lines: Sequence[AlertLine], *, max_lines: int = MAX_LINES, product: str = "backup_pipeline"
) -> Notice:
    """One message listing every alert (the most severe first), capped at `max_lines` alerts."""
    ordered = sorted(lines, key=AlertLine.sort_key)
    counts = Counter(line.event for line in ordered)
    problems = sum(n for e, n in counts.items() if e in PROBLEM_EVENTS)
    parts = [f"{problems} problem{'s' if problems != 1 else ''}"] if problems else []
    for event, (one, many) in _NOUNS.items():
        if counts[event]:
            parts.append(f"{counts[event]} {one if counts[event] == 1 else many}")
    title = f"[{product}] " + ", ".join(parts)
    blocks = [_block(line) for line in ordered[:max_lines]]
    if len(ordered) > max_lines:
        blocks.append(
            f"… and {len(ordered) - max_lines} more alert(s): "
            "see `backup-pipeline notify alerts` or the Dagster UI."
        )
    return Notice(title=title, body="\n\n".join(blocks), level=overall_level(line.event for line in ordered))


def overall_level(events: Iterable[AlertEvent]) -> Level:
    levels = {e.level for e in events}
    for level in (Level.FAILURE, Level.WARNING, Level.INFO):
        if level in levels:
            return level
    return Level.SUCCESS


def _block(line: AlertLine) -> str:
    reason = visible(" ".join(line.reason.split()))
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    header = (
        f"{line.event.value} — {line.agent_id} / {line.database_name} — "
        f"cycle {line.cycle_expected_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    )
    return "\n".join([header, f"  {reason}", *([f"  {line.link}"] if line.link else [])])


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>&~])")


RETRY_DELAY_CAP = timedelta(hours=1)


def retry_delay(failed_attempts: int, base: timedelta, cap: timedelta = RETRY_DELAY_CAP) -> timedelta:
    """How long a target that failed `failed_attempts` times in a row is left alone: doubling from
    `base`, at most `cap`, so a target that is down is not hammered by every sensor-started scan."""
    if failed_attempts <= 0 or base <= timedelta(0):
        return timedelta(0)
    return min(base * 2 ** min(failed_attempts - 1, 32), cap)


def escape_markdown(text: str) -> str:
    """Text from agents (error messages, logs) made inert in markdown, and in the HTML even a renderer
    that lets raw HTML through makes of it: one line, every character with a markdown or HTML meaning
    backslash-escaped (CommonMark renders `\\<` as a literal `<`), so no link, image, emphasis,
    table cell or tag can be smuggled in."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", visible(" ".join(text.split())))


def size_part(message: str) -> str:
    """The size-anomaly sentence of an entry's message (the whole message when it has none)."""
    index = message.rfind("size anomaly (")
    return message[index:] if index >= 0 else message
