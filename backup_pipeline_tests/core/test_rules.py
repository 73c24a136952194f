"""The decision rules of docs/design.md §5, one cycle at a time (pure: no database, no files)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backup_pipeline.core.cycles import Cycle, cycles_on
from backup_pipeline.core.domain import (
    BackupStatus,
    ContentPolicy,
    Decision,
    EntryStatus,
    ExpectedBackup,
    PreviousSuccess,
    RecordedReport,
    RejectedReport,
    ReportRef,
    StagedFileCheck,
)
from backup_pipeline.core.reports import parse_report
from backup_pipeline.core.rules import (
    decide,
    later_reports,
    needs_staged_file,
    relevant_rejection,
    relevant_report,
    staged_file_name,
    unlisted_reports,
)
from backup_pipeline.core.schedules import Schedule

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DB = "compta_db"
DAY = date(2025, 11, 21)
T = datetime(2025, 11, 21, 13, 0, tzinfo=UTC)  # the 13:00 cycle on DAY
AFTER = T + timedelta(hours=2)  # past the default deadline (14:00)
DOUALA = ZoneInfo("Africa/Douala")
SERVER_HASH = "3f" * 32
SIZE = 19972513
FILE = "compta_db.sql.gz"


def job(**overrides: Any) -> ExpectedBackup:
    """A daily-UTC expected backup (13:00, a 60-minute window unless told)."""
    hour, minute = overrides.pop("expected_hour_utc", 13), overrides.pop("expected_minute_utc", 0)
    window = overrides.pop("window_minutes", 60)
    fields: dict[str, Any] = {
        "agent_id": AGENT,
        "database_name": DB,
        "schedule": Schedule.daily_utc(hour, minute),
        "early_minutes": window,
        "grace_minutes": window,
    }
    fields.update(overrides)
    return ExpectedBackup(**fields)


def cycle_on(backup: ExpectedBackup, day: date) -> Cycle:
    """The daily backup's one cycle of the day."""
    (cycle,) = cycles_on(backup, day)
    return cycle


def section(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "BACKUP": {"status": "True", "sha256": "11" * 32, "size": "188178944"},
        "COMPRESS": {"status": "True", "sha256": SERVER_HASH, "size": str(SIZE)},
        "TRANSFER": {"status": "True", "error_message": "null"},
        "staged_file_name": f"/home/lam/Backup/{FILE}",
    }
    value.update(overrides)
    return value


def recorded(
    report_id: int, end: str, databases: dict[str, Any] | None = None, *, file_name: str | None = None
) -> RecordedReport:
    """A report as the parser reads it (so hashes are lowercased, strings coerced...), then recorded."""
    payload = {
        "operation_end_time": end,
        "agent_id": AGENT,
        "databases": {DB: section()} if databases is None else databases,
    }
    outcome = parse_report(
        json.dumps(payload).encode(),
        agent_id=AGENT,
        as_of=datetime(2025, 11, 25, tzinfo=UTC),
        max_age=timedelta(days=30),
    )
    assert outcome.report is not None, outcome.reason
    if file_name is None:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
        file_name = f"{moment:%Y%m%d_%H%M%S}_{AGENT}.json"
    return RecordedReport(ReportRef(report_id, file_name), outcome.report)


def check(**overrides: Any) -> StagedFileCheck:
    fields: dict[str, Any] = {
        "file_name": FILE,
        "sha256": SERVER_HASH,
        "size": SIZE,
        "content_fingerprint": "fp-today",
    }
    fields.update(overrides)
    return StagedFileCheck(**fields)


def rejection(
    report_id: int, named: datetime | None, reason: str = "invalid JSON: Expecting value"
) -> RejectedReport:
    name = f"{named:%Y%m%d_%H%M%S}_{AGENT}.json" if named else f"broken_{AGENT}.json"
    return RejectedReport(ReportRef(report_id, name), named, reason)


def evaluate(
    j: ExpectedBackup,
    day: date,
    now: datetime,
    reports: Sequence[RecordedReport] = (),
    rejected: Sequence[RejectedReport] = (),
    staged: StagedFileCheck | None = None,
    previous: PreviousSuccess | None = None,
) -> Decision | None:
    """What the evaluation phase does with the public rules, in order."""
    cycle = cycle_on(j, day)
    report = relevant_report(cycle, reports)
    return decide(
        cycle,
        now,
        report=report,
        rejection=relevant_rejection(cycle, rejected),
        check=staged if report is not None and needs_staged_file(report.report.databases[DB]) else None,
        previous=previous,
        later_reports=later_reports(cycle, report, reports) if report is not None else (),
        unlisted_in=unlisted_reports(cycle, reports),
    )


# ---------------------------------------------------------------- cycles


def test_cycle_on_gives_window_and_deadline() -> None:
    cycle = cycle_on(job(window_minutes=90), DAY)
    assert cycle.expected_at == T
    assert cycle.opens_at == T - timedelta(minutes=90)
    assert cycle.deadline == T + timedelta(minutes=90)
    assert cycle.label == "2025-11-21T13:00Z"
    assert cycle.contains(cycle.opens_at) and cycle.contains(cycle.deadline)
    assert not cycle.is_due(cycle.deadline)
    assert cycle.is_due(cycle.deadline + timedelta(microseconds=1))


# ---------------------------------------------------------------- 1. MISSING / report invalid


def test_no_report_is_nothing_before_the_deadline() -> None:
    assert evaluate(job(), DAY, T + timedelta(minutes=30)) is None
    assert evaluate(job(), DAY, T + timedelta(minutes=60)) is None  # deadline itself: still open


def test_no_report_after_the_deadline_is_missing() -> None:
    decision = evaluate(job(), DAY, T + timedelta(minutes=60, seconds=1))
    assert decision is not None
    assert decision.status is EntryStatus.MISSING
    assert decision.message == "no report for compta_db ended within 2025-11-21 12:00–2025-11-21 14:00 UTC"
    assert decision.report is None and decision.check is None
    assert BackupStatus.from_entry(decision.status) is BackupStatus.MISSING


def test_missing_names_reports_of_the_window_that_do_not_list_the_database() -> None:
    other = recorded(7, "2025-11-21T13:05:00Z", {"paie_db": section()})
    cycle = cycle_on(job(), DAY)
    assert relevant_report(cycle, [other]) is None
    assert unlisted_reports(cycle, [other]) == [other]
    decision = evaluate(job(), DAY, AFTER, [other])
    assert decision is not None and decision.status is EntryStatus.MISSING
    assert f"do not list it: 20251121_130500_{AGENT}.json" in decision.message


def test_rejected_report_in_the_window_is_failed_report_invalid() -> None:
    bad = rejection(3, datetime(2025, 11, 21, 13, 5, 12), "required field agent_id is missing")
    cycle = cycle_on(job(), DAY)
    assert relevant_rejection(cycle, [bad]) == bad
    decision = evaluate(job(), DAY, AFTER, rejected=[bad])
    assert decision is not None
    assert decision.status is EntryStatus.FAILED
    assert decision.message == (
        f"report invalid: required field agent_id is missing (20251121_130512_{AGENT}.json)"
    )
    assert evaluate(job(), DAY, T + timedelta(minutes=10), rejected=[bad]) is None  # still open


def test_rejected_report_outside_the_window_or_without_time_is_missing() -> None:
    early = rejection(1, datetime(2025, 11, 21, 11, 59, 59))
    nameless = rejection(2, None)
    cycle = cycle_on(job(), DAY)
    assert relevant_rejection(cycle, [early, nameless]) is None
    decision = evaluate(job(), DAY, AFTER, rejected=[early, nameless])
    assert decision is not None and decision.status is EntryStatus.MISSING


def test_latest_rejection_in_the_window_is_named() -> None:
    first = rejection(1, datetime(2025, 11, 21, 12, 30), "empty file")
    second = rejection(2, datetime(2025, 11, 21, 13, 30), "report is older than 7 days")
    decision = evaluate(job(), DAY, AFTER, rejected=[second, first])
    assert decision is not None
    assert decision.message.startswith("report invalid: report is older than 7 days (20251121_133000_")


def test_rejection_file_name_time_is_read_in_the_job_zone() -> None:
    bad = rejection(1, datetime(2025, 11, 21, 14, 20))  # 13:20 UTC in Douala
    assert relevant_rejection(cycle_on(job(window_minutes=30, timezone=DOUALA), DAY), [bad]) == bad
    assert relevant_rejection(cycle_on(job(window_minutes=30), DAY), [bad]) is None


@pytest.mark.parametrize("named", [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)])
@pytest.mark.parametrize("zone", [DOUALA, ZoneInfo("America/New_York")])
def test_extreme_rejection_times_do_not_crash(named: datetime, zone: ZoneInfo) -> None:
    assert relevant_rejection(cycle_on(job(timezone=zone), DAY), [rejection(1, named)]) is None


def test_a_valid_report_wins_over_a_rejected_one() -> None:
    good = recorded(2, "2025-11-21T13:05:00Z")
    bad = rejection(1, datetime(2025, 11, 21, 13, 10))
    decision = evaluate(job(), DAY, AFTER, [good], [bad], staged=check())
    assert decision is not None and decision.status is EntryStatus.SUCCESS


def test_latest_of_several_relevant_reports_wins() -> None:
    failing = section(BACKUP={"status": "False", "error_message": "pg_dump: connection refused"})
    early = recorded(1, "2025-11-21T12:30:00Z", {DB: section()})
    late = recorded(2, "2025-11-21T13:40:00Z", {DB: failing})
    cycle = cycle_on(job(), DAY)
    assert relevant_report(cycle, [late, early]) == late
    assert relevant_report(cycle, [early, late]) == late
    decision = evaluate(job(), DAY, AFTER, [early, late], staged=check())
    assert decision is not None
    assert decision.status is EntryStatus.FAILED
    assert decision.report == late


def test_equal_end_times_pick_the_last_recorded() -> None:
    a = recorded(4, "2025-11-21T13:05:00Z", file_name="a.json")
    b = recorded(9, "2025-11-21T13:05:00Z", file_name="b.json")
    assert relevant_report(cycle_on(job(), DAY), [b, a]) == b


@pytest.mark.parametrize(
    ("end", "relevant"),
    [
        ("2025-11-21T11:59:59Z", False),
        ("2025-11-21T12:00:00Z", True),
        ("2025-11-21T13:00:00Z", True),
        ("2025-11-21T14:00:00Z", True),
        ("2025-11-21T14:00:01Z", False),
        ("2025-11-20T13:05:00Z", False),
        ("2025-11-22T13:05:00Z", False),
    ],
)
def test_report_outside_the_window_is_not_used(end: str, relevant: bool) -> None:
    report = recorded(1, end)
    cycle = cycle_on(job(), DAY)
    assert (relevant_report(cycle, [report]) == report) is relevant
    decision = evaluate(job(), DAY, AFTER, [report], staged=check())
    assert decision is not None
    assert decision.status is (EntryStatus.SUCCESS if relevant else EntryStatus.MISSING)


# ---------------------------------------------------------------- 2. FAILED steps, compromised reports


@pytest.mark.parametrize("step", ["BACKUP", "COMPRESS", "TRANSFER"])
def test_each_failed_step_is_failed(step: str) -> None:
    db = section(logs_summary="see /var/log/agent.log")
    db[step] = {"status": "False", "error_message": f"{step.lower()} went wrong"}
    report = recorded(1, "2025-11-21T13:05:00Z", {DB: db})
    assert not needs_staged_file(report.report.databases[DB])
    decision = evaluate(job(), DAY, T + timedelta(minutes=10), [report])  # no staged check needed
    assert decision is not None
    assert decision.status is EntryStatus.FAILED
    assert decision.message == (
        f"agent reported failed step(s): {step} — error: {step}: {step.lower()} went wrong"
        " — logs: see /var/log/agent.log"
    )
    assert decision.report == report and decision.database == report.report.databases[DB]
    assert decision.check is None


def test_all_failed_steps_are_named() -> None:
    db = section(
        BACKUP={"status": "False", "error_message": "disk full"},
        COMPRESS={"status": False},
        TRANSFER={"status": "false", "error_message": "null"},
    )
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: db})])
    assert decision is not None and decision.status is EntryStatus.FAILED
    assert (
        decision.message
        == "agent reported failed step(s): BACKUP, COMPRESS, TRANSFER — error: BACKUP: disk full"
    )


def test_real_agent_failed_database_is_failed() -> None:
    empty = {"status": "False", "start_time": "", "end_time": "", "sha256": "", "size": "0"}
    db = {
        "BACKUP": empty,
        "COMPRESS": empty,
        "TRANSFER": {**empty, "error_message": "null"},
        "staged_file_name": "",
    }
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: db})])
    assert decision is not None and decision.status is EntryStatus.FAILED
    assert decision.message == "agent reported failed step(s): BACKUP, COMPRESS, TRANSFER"


def test_missing_step_section_is_failed_compromised() -> None:
    db = section()
    del db["COMPRESS"]
    report = recorded(1, "2025-11-21T13:05:00Z", {DB: db})
    assert not needs_staged_file(report.report.databases[DB])
    decision = evaluate(job(), DAY, AFTER, [report])
    assert decision is not None and decision.status is EntryStatus.FAILED
    assert decision.message == "report compromised for compta_db: no COMPRESS section"


def test_unknown_status_is_failed_compromised() -> None:
    decision = evaluate(
        job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: section(TRANSFER={"status": "maybe"})})]
    )
    assert decision is not None and decision.status is EntryStatus.FAILED
    assert (
        decision.message == "report compromised for compta_db: TRANSFER status 'maybe' is not true or false"
    )


def test_full_success_claim_needs_a_staged_check() -> None:
    report = recorded(1, "2025-11-21T13:05:00Z")
    assert needs_staged_file(report.report.databases[DB])
    with pytest.raises(ValueError, match="a staged file check is needed"):
        decide(cycle_on(job(), DAY), AFTER, report=report)


# ---------------------------------------------------------------- 3. TRANSFER_INTEGRITY_FAILED


def test_absent_staged_file_is_transfer_integrity_failed() -> None:
    problem = "staged file compta_db.sql.gz is absent from the agent's database folder"
    decision = evaluate(
        job(),
        DAY,
        AFTER,
        [recorded(1, "2025-11-21T13:05:00Z")],
        staged=check(problem=problem, sha256=None, size=None),
    )
    assert decision is not None
    assert decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert decision.message == problem
    assert BackupStatus.from_entry(decision.status) is BackupStatus.TRANSFER_INTEGRITY_FAILED


def test_agent_hash_in_upper_case_matches() -> None:
    db = section(COMPRESS={"status": "True", "sha256": SERVER_HASH.upper(), "size": str(SIZE)})
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: db})], staged=check())
    assert decision is not None and decision.status is EntryStatus.SUCCESS


def test_hash_mismatch_is_transfer_integrity_failed() -> None:
    other = "9a" * 32
    db = section(COMPRESS={"status": True, "sha256_checksum": other.upper(), "size": SIZE})
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: db})], staged=check())
    assert decision is not None
    assert decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert decision.message == f"staged file {FILE}: sha256 differs: server {SERVER_HASH}, agent {other}"
    assert "later report" not in decision.message


def test_size_mismatch_is_transfer_integrity_failed() -> None:
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z")], staged=check(size=SIZE - 1))
    assert decision is not None
    assert decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert (
        decision.message == f"staged file {FILE}: size differs: server {SIZE - 1} bytes, agent {SIZE} bytes"
    )


def test_no_agent_hash_cannot_be_verified() -> None:
    db = section(COMPRESS={"status": True, "sha256": "null", "size": SIZE})
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z", {DB: db})], staged=check())
    assert decision is not None
    assert decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert "the agent reported no COMPRESS hash to verify against" in decision.message


def test_file_overwritten_by_a_later_report_says_so() -> None:
    tomorrow_hash = "c0" * 32
    today = recorded(1, "2025-11-21T13:05:00Z")
    tomorrow = recorded(
        2,
        "2025-11-22T13:04:00Z",
        {DB: section(COMPRESS={"status": True, "sha256": tomorrow_hash, "size": 777})},
    )
    cycle = cycle_on(job(), DAY)
    assert later_reports(cycle, today, [today, tomorrow]) == [tomorrow]
    assert later_reports(cycle, tomorrow, [today, tomorrow]) == []
    staged = check(sha256=tomorrow_hash, size=777)
    decision = evaluate(
        job(), DAY, datetime(2025, 11, 22, 15, 0, tzinfo=UTC), [today, tomorrow], staged=staged
    )
    assert decision is not None
    assert decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert decision.report == today
    assert decision.message.startswith(
        f"staged file {FILE}: sha256 differs: server {tomorrow_hash}, agent {SERVER_HASH}"
    )
    assert f"The file now matches the later report 20251122_130400_{AGENT}.json" in decision.message
    assert "this cycle's own file could not be verified" in decision.message


def test_later_report_not_matching_the_file_is_not_blamed() -> None:
    today = recorded(1, "2025-11-21T13:05:00Z")
    tomorrow = recorded(
        2, "2025-11-22T13:04:00Z", {DB: section(COMPRESS={"status": True, "sha256": "c0" * 32})}
    )
    decision = evaluate(job(), DAY, AFTER, [today, tomorrow], staged=check(sha256="ee" * 32))
    assert decision is not None and decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED
    assert "later report" not in decision.message


# ---------------------------------------------------------------- 4. archive corrupt


def test_corrupt_archive_is_failed() -> None:
    staged = check(archive_problem="does not decompress: truncated zstd stream")
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z")], staged=staged)
    assert decision is not None
    assert decision.status is EntryStatus.FAILED
    assert decision.message == f"archive corrupt: {FILE} does not decompress: truncated zstd stream"
    assert decision.check == staged


def test_integrity_comes_before_archive_corruption() -> None:
    staged = check(size=1, archive_problem="truncated gzip stream")
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z")], staged=staged)
    assert decision is not None and decision.status is EntryStatus.TRANSFER_INTEGRITY_FAILED


# ---------------------------------------------------------------- 5/6. content policy, SUCCESS


PREVIOUS_DAY = datetime(2025, 11, 20, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "same_content", "expected"),
    [
        (ContentPolicy.CHANGED, False, EntryStatus.HASH_MISMATCH),
        (ContentPolicy.CHANGED, True, EntryStatus.SUCCESS),
        (ContentPolicy.UNCHANGED, True, EntryStatus.HASH_MISMATCH),
        (ContentPolicy.UNCHANGED, False, EntryStatus.SUCCESS),
        (ContentPolicy.OFF, True, EntryStatus.SUCCESS),
        (ContentPolicy.OFF, False, EntryStatus.SUCCESS),
    ],
)
def test_content_policies(policy: ContentPolicy, same_content: bool, expected: EntryStatus) -> None:
    previous = PreviousSuccess(PREVIOUS_DAY, "77" * 32, "fp-today" if same_content else "fp-yesterday")
    decision = evaluate(
        job(content_change=policy),
        DAY,
        AFTER,
        [recorded(1, "2025-11-21T13:05:00Z")],
        staged=check(),
        previous=previous,
    )
    assert decision is not None
    assert decision.status is expected
    assert decision.previous == previous
    assert BackupStatus.from_entry(decision.status) is BackupStatus.OK
    verified = f"backup verified: {FILE}, {SIZE} bytes, sha256 {SERVER_HASH}"
    if expected is EntryStatus.SUCCESS:
        assert decision.message == verified
    elif policy is ContentPolicy.CHANGED:
        assert decision.message == (
            f"content changed since the last successful cycle 2025-11-20T13:00Z (policy: changed); {verified}"
        )
    else:
        assert decision.message.startswith("content identical to the last successful cycle 2025-11-20T13:00Z")
        assert "(policy: unchanged)" in decision.message and decision.message.endswith(verified)


def test_default_policy_is_changed() -> None:
    assert job().content_change is ContentPolicy.CHANGED


def test_first_success_has_nothing_to_compare() -> None:
    decision = evaluate(job(), DAY, AFTER, [recorded(1, "2025-11-21T13:05:00Z")], staged=check())
    assert decision is not None
    assert decision.status is EntryStatus.SUCCESS
    assert decision.message == f"backup verified: {FILE}, {SIZE} bytes, sha256 {SERVER_HASH}"
    assert decision.report is not None and decision.report.ref.report_id == 1
    assert decision.database is not None and decision.database.name == DB
    assert decision.check == check()
    assert decision.previous is None


def test_success_is_decided_before_the_deadline_too() -> None:
    decision = evaluate(
        job(), DAY, T + timedelta(minutes=6), [recorded(1, "2025-11-21T13:05:00Z")], staged=check()
    )
    assert decision is not None and decision.status is EntryStatus.SUCCESS


# ---------------------------------------------------------------- midnight, several jobs, time zones


def test_report_after_midnight_belongs_to_the_2350_cycle() -> None:
    late_job = job(expected_hour_utc=23, expected_minute_utc=50)
    report = recorded(1, "2025-11-22T00:20:00Z")
    assert relevant_report(cycle_on(late_job, DAY), [report]) == report
    assert relevant_report(cycle_on(late_job, DAY + timedelta(days=1)), [report]) is None
    assert evaluate(late_job, DAY, datetime(2025, 11, 22, 0, 40, tzinfo=UTC)) is None  # deadline 00:50
    decision = evaluate(late_job, DAY, datetime(2025, 11, 22, 1, 0, tzinfo=UTC), [report], staged=check())
    assert decision is not None and decision.status is EntryStatus.SUCCESS
    missing = evaluate(late_job, DAY, datetime(2025, 11, 22, 1, 0, tzinfo=UTC))
    assert missing is not None and missing.status is EntryStatus.MISSING
    assert "2025-11-21 22:50–2025-11-22 00:50 UTC" in missing.message


def test_two_jobs_a_day_each_pick_their_own_report() -> None:
    afternoon, evening = job(), job(expected_hour_utc=20)
    one = recorded(1, "2025-11-21T13:05:00Z")
    two = recorded(
        2, "2025-11-21T20:10:00Z", {DB: section(COMPRESS={"status": True, "sha256": "0e" * 32, "size": 5})}
    )
    reports = [one, two]
    assert relevant_report(cycle_on(afternoon, DAY), reports) == one
    assert relevant_report(cycle_on(evening, DAY), reports) == two
    late = datetime(2025, 11, 21, 22, 0, tzinfo=UTC)
    first = evaluate(afternoon, DAY, late, reports, staged=check())
    second = evaluate(evening, DAY, late, reports, staged=check(sha256="0e" * 32, size=5))
    assert first is not None and first.status is EntryStatus.SUCCESS and first.report == one
    assert second is not None and second.status is EntryStatus.SUCCESS and second.report == two


def test_naive_report_times_are_read_in_the_job_zone() -> None:
    report = recorded(1, "2025-11-21T14:05:00", file_name=f"20251121_140500_{AGENT}.json")  # naive
    douala, utc = job(window_minutes=30, timezone=DOUALA), job(window_minutes=30)
    assert relevant_report(cycle_on(douala, DAY), [report]) == report  # 13:05 UTC
    assert relevant_report(cycle_on(utc, DAY), [report]) is None  # 14:05 UTC
    decision = evaluate(douala, DAY, AFTER, [report], staged=check())
    assert decision is not None and decision.status is EntryStatus.SUCCESS
    missing = evaluate(utc, DAY, AFTER, [report])
    assert missing is not None and missing.status is EntryStatus.MISSING


def test_aware_report_times_ignore_the_job_zone() -> None:
    report = recorded(1, "2025-11-21T13:05:00Z")
    assert relevant_report(cycle_on(job(window_minutes=30, timezone=DOUALA), DAY), [report]) == report


# ---------------------------------------------------------------- staged file name


def test_staged_file_name_from_job_or_agent_path() -> None:
    windows = recorded(
        1, "2025-11-21T13:05:00Z", {DB: section(staged_file_name="root\\SITE\\databases\\X.zst")}
    )
    database = windows.report.databases[DB]
    assert staged_file_name(cycle_on(job(), DAY), database) == "X.zst"
    assert staged_file_name(cycle_on(job(staged_file_name="compta.zst"), DAY), database) == "compta.zst"
    nameless = recorded(2, "2025-11-21T13:05:00Z", {DB: section(staged_file_name="")}).report.databases[DB]
    assert staged_file_name(cycle_on(job(), DAY), nameless) is None
