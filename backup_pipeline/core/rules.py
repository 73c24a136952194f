"""The decision rules: one cycle of one expected backup in, one status and message out.

Rules are tried in order and the first match wins, which gives the severity order
MISSING > FAILED > TRANSFER_INTEGRITY_FAILED > HASH_MISMATCH > SUCCESS (docs/design.md §5).
Evaluation needs the staged file's measurement only when the agent claims every step succeeded;
`needs_staged_file` tells the caller when to measure, `decide` does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backup_pipeline.core import fingerprints
from backup_pipeline.core.cycles import Cycle
from backup_pipeline.core.domain import (
    ContentPolicy,
    DatabaseReport,
    Decision,
    EntryStatus,
    PreviousSuccess,
    RecordedReport,
    RejectedReport,
    StagedFileCheck,
    Step,
)
from backup_pipeline.core.reports import staged_base_name


def report_end(report: RecordedReport, cycle: Cycle) -> datetime:
    return report.report.operation_end_time.in_utc(cycle.backup.timezone)


def relevant_report(cycle: Cycle, reports: Sequence[RecordedReport]) -> RecordedReport | None:
    """The valid report for this cycle: it lists the database and ended inside the window; latest wins."""
    candidates = [
        r
        for r in reports
        if cycle.backup.database_name in r.report.databases and cycle.contains(report_end(r, cycle))
    ]
    return max(candidates, key=lambda r: (report_end(r, cycle), r.ref.report_id), default=None)


def relevant_rejection(cycle: Cycle, rejected: Sequence[RejectedReport]) -> RejectedReport | None:
    """A rejected report of the agent whose file-name time falls inside the window."""
    tz = cycle.backup.timezone

    def named_at(r: RejectedReport) -> datetime | None:
        if r.file_name_time is None:
            return None
        try:
            return r.file_name_time.replace(tzinfo=tz).astimezone(cycle.expected_at.tzinfo)
        except OverflowError:  # year 1 or 9999 in a file name: no cycle of ours
            return None

    candidates = [(at, r) for r in rejected if (at := named_at(r)) is not None and cycle.contains(at)]
    return max(candidates, key=lambda c: (c[0], c[1].ref.report_id), default=(None, None))[1]


# The steps in their order, once: iterating the enum costs more than the check (20,000 times a scan).
STEPS = tuple(Step)


def failed_steps(database: DatabaseReport) -> list[Step]:
    return [step for step in STEPS if (s := database.step(step)) is not None and not s.status]


def needs_staged_file(database: DatabaseReport) -> bool:
    """Only a report claiming full success is checked against the staged file."""
    return not database.problems and all(
        (s := database.step(step)) is not None and s.status for step in STEPS
    )


def staged_file_name(cycle: Cycle, database: DatabaseReport) -> str | None:
    """The backup's configured name wins; otherwise the base name of what the agent wrote."""
    return cycle.backup.staged_file_name or staged_base_name(database.staged_file_name)


def decide(
    cycle: Cycle,
    as_of: datetime,
    *,
    report: RecordedReport | None,
    rejection: RejectedReport | None = None,
    check: StagedFileCheck | None = None,
    previous: PreviousSuccess | None = None,
    later_reports: Sequence[RecordedReport] = (),
    unlisted_in: Sequence[RecordedReport] = (),
) -> Decision | None:
    """The cycle's outcome as of `as_of`, or None while it is still open with nothing to judge."""
    if report is None:
        return _without_report(cycle, as_of, rejection, unlisted_in)
    database = report.report.databases[cycle.backup.database_name]
    if database.problems:
        return _decision(EntryStatus.FAILED, _compromised(database), report, database, check)
    failed = failed_steps(database)
    if failed:
        return _decision(EntryStatus.FAILED, _failure_message(database, failed), report, database, check)
    if check is None:
        raise ValueError(f"{cycle.backup.label} {cycle.label}: a staged file check is needed to decide")
    integrity = _integrity_problem(cycle, report, database, check, later_reports)
    if integrity:
        return _decision(EntryStatus.TRANSFER_INTEGRITY_FAILED, integrity, report, database, check)
    if check.archive_problem:
        return _decision(EntryStatus.FAILED, archive_message(check), report, database, check)
    return _content_decision(cycle, report, database, check, previous)


# How the measurement says a staged archive went past a decompression limit (adapters.staged_files).
EXPANDS_BEYOND = "expands beyond"


def archive_message(check: StagedFileCheck) -> str:
    """Why a staged archive failed: corrupt, or expanding past a decompression limit (which one)."""
    problem = check.archive_problem or ""
    if problem.startswith(EXPANDS_BEYOND):
        return f"archive {problem}: {check.file_name} (its content was not verified)"
    return f"archive corrupt: {check.file_name} {problem}"


def _decision(
    status: EntryStatus,
    message: str,
    report: RecordedReport | None,
    database: DatabaseReport | None,
    check: StagedFileCheck | None,
    previous: PreviousSuccess | None = None,
) -> Decision:
    return Decision(status, message, report, database, check, previous)


def _without_report(
    cycle: Cycle,
    as_of: datetime,
    rejection: RejectedReport | None,
    unlisted_in: Sequence[RecordedReport],
) -> Decision | None:
    if not cycle.is_due(as_of):
        return None
    if rejection is not None:
        return _decision(
            EntryStatus.FAILED,
            f"report invalid: {rejection.reason} ({rejection.ref.file_name})",
            None,
            None,
            None,
        )
    window = f"{cycle.opens_at:%Y-%m-%d %H:%M}–{cycle.deadline:%Y-%m-%d %H:%M} UTC"
    message = f"no report for {cycle.backup.database_name} ended within {window}"
    if unlisted_in:
        names = ", ".join(r.ref.file_name for r in unlisted_in)
        message += f"; the agent's report(s) in that window do not list it: {names}"
    return _decision(EntryStatus.MISSING, message, None, None, None)


def _compromised(database: DatabaseReport) -> str:
    return f"report compromised for {database.name}: " + "; ".join(database.problems)


def _failure_message(database: DatabaseReport, failed: list[Step]) -> str:
    parts = [f"agent reported failed step(s): {', '.join(failed)}"]
    errors = [f"{step}: {e}" for step in failed if (e := database.steps[step].error_message)]
    if errors:
        parts.append("error: " + "; ".join(errors))
    if database.logs_summary:
        parts.append(f"logs: {database.logs_summary}")
    return " — ".join(parts)


def _integrity_problem(
    cycle: Cycle,
    report: RecordedReport,
    database: DatabaseReport,
    check: StagedFileCheck,
    later_reports: Sequence[RecordedReport],
) -> str | None:
    if check.problem:
        return check.problem
    compress = database.steps[Step.COMPRESS]
    problems = []
    if compress.sha256 is None:
        problems.append("the agent reported no COMPRESS hash to verify against")
    elif compress.sha256 != check.sha256:
        problems.append(f"sha256 differs: server {check.sha256}, agent {compress.sha256}")
    if compress.size is not None and compress.size != check.size:
        problems.append(f"size differs: server {check.size} bytes, agent {compress.size} bytes")
    if not problems:
        return None
    message = f"staged file {check.file_name}: " + "; ".join(problems)
    overwritten_by = _later_match(cycle, report, check, later_reports)
    if overwritten_by is not None:
        message += (
            f". The file now matches the later report {overwritten_by.ref.file_name}: the next cycle "
            "overwrote it before this cycle was evaluated, so this cycle's own file could not be verified"
        )
    return message


def _later_match(
    cycle: Cycle, report: RecordedReport, check: StagedFileCheck, later_reports: Sequence[RecordedReport]
) -> RecordedReport | None:
    ended = report_end(report, cycle)
    for later in sorted(later_reports, key=lambda r: report_end(r, cycle)):
        database = later.report.databases.get(cycle.backup.database_name)
        compress = database.step(Step.COMPRESS) if database else None
        if report_end(later, cycle) > ended and compress is not None and compress.sha256 == check.sha256:
            return later
    return None


def _content_decision(
    cycle: Cycle,
    report: RecordedReport,
    database: DatabaseReport,
    check: StagedFileCheck,
    previous: PreviousSuccess | None,
) -> Decision:
    policy = cycle.backup.content_change
    verified = f"backup verified: {check.file_name}, {check.size} bytes, sha256 {check.sha256}"
    if policy is ContentPolicy.OFF or previous is None or previous.content_fingerprint is None:
        return _decision(EntryStatus.SUCCESS, verified, report, database, check, previous)
    same = fingerprints.same_content(previous.content_fingerprint, check.content_fingerprint)
    since = f"the last successful cycle {previous.cycle_expected_at:%Y-%m-%dT%H:%MZ}"
    if same is None:  # fingerprints of two algorithms say nothing about each other
        message = (
            f"content not compared with {since}: it was fingerprinted with "
            f"{', '.join(fingerprints.algorithms(previous.content_fingerprint))}, this cycle with "
            f"{', '.join(fingerprints.algorithms(check.content_fingerprint))} (policy: {policy.value}); "
            f"{verified}"
        )
        return _decision(EntryStatus.SUCCESS, message, report, database, check, previous)
    if policy is ContentPolicy.CHANGED and not same:
        message = f"content changed since {since} (policy: changed); {verified}"
        return _decision(EntryStatus.HASH_MISMATCH, message, report, database, check, previous)
    if policy is ContentPolicy.UNCHANGED and same:
        message = (
            f"content identical to {since}: the database did not change or an old dump was re-sent "
            f"(policy: unchanged); {verified}"
        )
        return _decision(EntryStatus.HASH_MISMATCH, message, report, database, check, previous)
    return _decision(EntryStatus.SUCCESS, verified, report, database, check, previous)


def unlisted_reports(cycle: Cycle, reports: Sequence[RecordedReport]) -> list[RecordedReport]:
    """The agent's reports inside the window that do not mention the database at all."""
    return [
        r
        for r in reports
        if cycle.backup.database_name not in r.report.databases and cycle.contains(report_end(r, cycle))
    ]


def later_reports(
    cycle: Cycle, chosen: RecordedReport, reports: Sequence[RecordedReport]
) -> list[RecordedReport]:
    """Reports of the same database that ended after the chosen one (a later cycle's)."""
    ended = report_end(chosen, cycle)
    return [
        r
        for r in reports
        if cycle.backup.database_name in r.report.databases and report_end(r, cycle) > ended
    ]
