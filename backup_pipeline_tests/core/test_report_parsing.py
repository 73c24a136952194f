"""Reading what agents write: file names, agent ids, staged paths and report contents (pure, no I/O).

Covers the canonical v2 report, the real field reports in samples/real-agent, the loose forms real
agents use, every rejection reason of docs/design.md §3 and the stored (payload) round trip.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backup_pipeline.core.domain import ReportTime, StatusReport, Step
from backup_pipeline.core.reports import (
    ParseOutcome,
    ReportRejected,
    file_name_problem,
    is_valid_agent_id,
    parse_bool,
    parse_file_name_time,
    parse_report,
    parse_size,
    parse_timestamp,
    report_from_payload,
    report_to_payload,
    staged_base_name,
)
from backup_pipeline_tests.support.paths import FIXTURES

AGENT = "SIRPACAM_DOUALA_NEWBELL"
NOW = datetime(2025, 11, 21, 14, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=7)
DOUALA = ZoneInfo("Africa/Douala")
DUMP_HASH = "1" * 64
ARCHIVE_HASH = "ab" * 32
REAL_AGENT = FIXTURES / "real_agent"


def database(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "BACKUP": {
            "status": True,
            "start_time": "2025-11-21T12:53:52Z",
            "end_time": "2025-11-21T12:58:10Z",
            "sha256_checksum": DUMP_HASH,
            "size": 188178944,
        },
        "COMPRESS": {
            "status": True,
            "start_time": "2025-11-21T12:58:11Z",
            "end_time": "2025-11-21T13:02:40Z",
            "sha256_checksum": ARCHIVE_HASH,
            "size": 19972513,
        },
        "TRANSFER": {
            "status": True,
            "start_time": "2025-11-21T13:02:41Z",
            "end_time": "2025-11-21T13:05:10Z",
            "error_message": None,
        },
        "staged_file_name": "compta_db.sql.gz",
        "logs_summary": "dump ok",
    }
    section.update(overrides)
    return section


def canonical(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "operation_start_time": "2025-11-21T12:53:52Z",
        "operation_end_time": "2025-11-21T13:05:12Z",
        "agent_id": AGENT,
        "overall_status": "completed",
        "databases": {"compta_db": database()},
    }
    report.update(overrides)
    return report


def parse(
    payload: dict[str, Any] | bytes,
    *,
    agent_id: str = AGENT,
    as_of: datetime = NOW,
    max_age: timedelta = MAX_AGE,
    agent_tz: Any = UTC,
) -> ParseOutcome:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_report(data, agent_id=agent_id, as_of=as_of, max_age=max_age, agent_tz=agent_tz)


def accepted(payload: dict[str, Any] | bytes, **kwargs: Any) -> StatusReport:
    outcome = parse(payload, **kwargs)
    assert outcome.reason is None
    assert outcome.accepted and outcome.report is not None
    return outcome.report


def rejected(payload: dict[str, Any] | bytes, **kwargs: Any) -> str:
    outcome = parse(payload, **kwargs)
    assert outcome.report is None and not outcome.accepted
    assert outcome.reason
    assert outcome.notes == ()
    return outcome.reason


def round_trip(report: StatusReport) -> StatusReport:
    return report_from_payload(json.loads(json.dumps(report_to_payload(report))))


# ---------------------------------------------------------------- canonical report


def test_canonical_v2_report_is_read_field_by_field() -> None:
    outcome = parse(canonical())
    assert outcome.accepted and outcome.reason is None and outcome.notes == ()
    report = outcome.report
    assert report is not None
    assert report.agent_id == AGENT
    assert report.operation_end_time == ReportTime(datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC))
    assert not report.operation_end_time.is_naive
    assert report.operation_start_time == ReportTime(datetime(2025, 11, 21, 12, 53, 52, tzinfo=UTC))
    assert report.overall_status == "completed"
    assert list(report.databases) == ["compta_db"]
    db = report.databases["compta_db"]
    assert db.name == "compta_db"
    assert db.problems == ()
    assert db.staged_file_name == "compta_db.sql.gz"
    assert db.logs_summary == "dump ok"
    backup, compress, transfer = (db.step(s) for s in Step)
    assert backup is not None and compress is not None and transfer is not None
    assert backup.status is True
    assert backup.sha256 == DUMP_HASH and backup.size == 188178944
    assert backup.start_time == ReportTime(datetime(2025, 11, 21, 12, 53, 52, tzinfo=UTC))
    assert compress.sha256 == ARCHIVE_HASH and compress.size == 19972513
    assert compress.end_time == ReportTime(datetime(2025, 11, 21, 13, 2, 40, tzinfo=UTC))
    assert transfer.status is True and transfer.error_message is None
    assert transfer.sha256 is None and transfer.size is None


def test_overall_status_is_optional() -> None:
    payload = canonical()
    del payload["overall_status"]
    report = accepted(payload)
    assert report.overall_status is None
    assert report.databases["compta_db"].problems == ()


# ---------------------------------------------------------------- real field reports


def _sample(name: str) -> tuple[bytes, str]:
    """A committed report in the format real agents write (fixtures/real_agent/)."""
    agent_id = name.split("_", 2)[2].removesuffix(".json")
    return (REAL_AGENT / name).read_bytes(), agent_id


LINUX_AGENT_REPORT = "2025-07-14_22-15-31_SIRPACAM_DSCHANG_MARCHE.json"
WINDOWS_AGENT_REPORT = "2025-07-03_06-12-44_SOCIA_KRIBI_PORT_2.json"


def test_a_linux_field_report_is_accepted() -> None:
    """Naive local times with microseconds, `sha256`, every value a string, POSIX paths, no status."""
    name = LINUX_AGENT_REPORT
    data, agent_id = _sample(name)
    assert agent_id == "SIRPACAM_DSCHANG_MARCHE"
    assert is_valid_agent_id(agent_id)
    assert file_name_problem(name, agent_id) is None
    assert parse_file_name_time(name) == datetime(2025, 7, 14, 22, 15, 31)

    outcome = parse(data, agent_id=agent_id, as_of=datetime(2025, 7, 15, 0, 0, tzinfo=UTC))
    assert outcome.accepted and outcome.notes == ()
    report = outcome.report
    assert report is not None
    assert report.agent_id == agent_id
    assert report.overall_status is None  # real agents write none
    # naive "2025-07-14 22:15:31.482113": kept naive, read in the agent's zone (default UTC)
    assert report.operation_end_time.is_naive
    assert report.operation_end_time.value == datetime(2025, 7, 14, 22, 15, 31, 482113)
    assert report.operation_end_time.in_utc() == datetime(2025, 7, 14, 22, 15, 31, 482113, tzinfo=UTC)
    assert len(report.databases) == 12
    assert all(db.problems == () for db in report.databases.values())
    db = report.databases["COMPTA_DSCHANG_2025"]
    backup, compress, transfer = db.steps[Step.BACKUP], db.steps[Step.COMPRESS], db.steps[Step.TRANSFER]
    assert backup.status is True and backup.size == 31690718  # "True", "31690718"
    assert backup.sha256 == "24673cf7df6ce774a94c8a969c1362a270a33381f432de3c7310666e813ef4ca"  # "sha256"
    assert compress.size == 2640893
    assert compress.sha256 == "8d06df3ae4967236a8cffa9a01cba93c81eda1bf74779c1fc6bf855086cf5702"
    assert compress.start_time == ReportTime(datetime(2025, 7, 14, 21, 51, 2, 766181))
    assert transfer.error_message is None  # "null"
    assert db.staged_file_name == "/home/sauvegarde/Backup/COMPTA_DSCHANG_2025.zst"
    assert staged_base_name(db.staged_file_name) == "COMPTA_DSCHANG_2025.zst"
    assert round_trip(report) == report


def test_a_windows_field_report_is_accepted_with_failed_databases() -> None:
    """Naive ISO times, failed databases as "False"/""/"0", placeholders for hashes, Windows paths,
    and a file named the morning after its operation."""
    name = WINDOWS_AGENT_REPORT
    data, agent_id = _sample(name)
    assert agent_id == "SOCIA_KRIBI_PORT_2"
    assert file_name_problem(name, agent_id) is None

    report = accepted(data, agent_id=agent_id, as_of=datetime(2025, 7, 3, 7, 0, tzinfo=UTC))
    assert report.operation_end_time.value == datetime(2025, 7, 2, 19, 30)
    assert len(report.databases) == 16
    assert all(db.problems == () for db in report.databases.values())

    failed = report.databases["SOCIA_KRIBI_PORT_2025_1"]  # "False", "", "0", "null"
    for step in Step:
        s = failed.steps[step]
        assert s.status is False
        assert s.start_time is None and s.end_time is None and s.sha256 is None
    assert failed.steps[Step.BACKUP].size == 0
    assert failed.staged_file_name is None

    ok = report.databases["SOCIA_KRIBI_PORT_2025_2"]
    assert all(ok.steps[step].status for step in Step)
    assert ok.steps[Step.COMPRESS].size == 9
    assert ok.steps[Step.COMPRESS].end_time == ReportTime(datetime(2025, 7, 2, 19, 12, 24))
    assert staged_base_name(ok.staged_file_name) == "SOCIA_KRIBI_PORT_2025_2.zst"  # Windows path

    bogus = report.databases["SOCIA_KRIBI_PORT_2025_7"]  # not a hash: kept (lowercased) for the check
    assert bogus.problems == ()
    assert bogus.steps[Step.COMPRESS].sha256 == "placeholder_hash_7"
    assert round_trip(report) == report


def test_a_field_report_s_naive_times_follow_the_agent_zone() -> None:
    data, agent_id = _sample(LINUX_AGENT_REPORT)
    report = accepted(data, agent_id=agent_id, as_of=datetime(2025, 7, 15, 0, 0, tzinfo=UTC), agent_tz=DOUALA)
    assert report.operation_end_time.in_utc(DOUALA) == datetime(2025, 7, 14, 21, 15, 31, 482113, tzinfo=UTC)


# ---------------------------------------------------------------- loose forms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("True", True),
        ("False", False),
        ("true", True),
        (" FALSE ", False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
        ("maybe", None),
        ("", None),
        ("null", None),
        (None, None),
        (2, None),
        (1.0, None),
        ([], None),
    ],
)
def test_parse_bool(raw: Any, expected: bool | None) -> None:
    assert parse_bool(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (62233088, 62233088),
        ("62233088", 62233088),
        (" 42 ", 42),
        ("0", 0),
        (0, 0),
        (4.0, 4),
        (2**63 - 1, 2**63 - 1),
        (None, None),
        ("null", None),
        ("None", None),
        ("", None),
    ],
)
def test_parse_size_accepts_counts(raw: Any, expected: int | None) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize(
    "raw", [True, False, -1, "-1", "12a", "1e6", 1.5, float("inf"), float("nan"), 2**63, "9" * 20, [], {}]
)
def test_parse_size_refuses_non_counts(raw: Any) -> None:
    with pytest.raises(ReportRejected, match="is not a byte count"):
        parse_size(raw)


def test_strings_for_booleans_sizes_and_null_in_a_report() -> None:
    section = database(
        BACKUP={"status": "True", "sha256": DUMP_HASH, "size": "62233088"},
        COMPRESS={"status": "True", "sha256": ARCHIVE_HASH, "size": "4386290", "start_time": "null"},
        TRANSFER={"status": "False", "error_message": "null"},
        logs_summary="null",
        staged_file_name="null",
    )
    db = accepted(canonical(databases={"compta_db": section})).databases["compta_db"]
    assert db.problems == ()
    assert db.steps[Step.BACKUP].status is True and db.steps[Step.BACKUP].size == 62233088
    assert db.steps[Step.COMPRESS].size == 4386290 and db.steps[Step.COMPRESS].start_time is None
    assert db.steps[Step.TRANSFER].status is False
    assert db.steps[Step.TRANSFER].error_message is None
    assert db.logs_summary is None and db.staged_file_name is None


@pytest.mark.parametrize("key", ["sha256", "sha256_checksum"])
def test_both_hash_keys_are_read_and_lowercased(key: str) -> None:
    section = database(COMPRESS={"status": True, key: ARCHIVE_HASH.upper(), "size": 10})
    db = accepted(canonical(databases={"compta_db": section})).databases["compta_db"]
    assert db.steps[Step.COMPRESS].sha256 == ARCHIVE_HASH


def test_canonical_hash_key_wins_over_the_short_one() -> None:
    section = database(COMPRESS={"status": True, "sha256_checksum": ARCHIVE_HASH, "sha256": "f" * 64})
    db = accepted(canonical(databases={"compta_db": section})).databases["compta_db"]
    assert db.steps[Step.COMPRESS].sha256 == ARCHIVE_HASH


def test_older_draft_keys_are_accepted() -> None:
    section = {
        "backup_process": {"status": True, "sha256_checksum": DUMP_HASH, "size": 100},
        "compress_process": {"status": True, "sha256_checksum": ARCHIVE_HASH, "size": 10},
        "transfer_process": {"status": False, "error_message": "scp: connection reset"},
        "staged_file_name": "compta_db.sql.gz",
    }
    payload = {"operation_timestamp": "2025-11-21T13:05:12Z", "agent_id": AGENT, "databases": {"db": section}}
    report = accepted(payload)
    assert report.operation_end_time.in_utc() == datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)
    db = report.databases["db"]
    assert db.problems == ()
    assert db.steps[Step.BACKUP].size == 100
    assert db.steps[Step.COMPRESS].sha256 == ARCHIVE_HASH
    assert db.steps[Step.TRANSFER].status is False
    assert db.steps[Step.TRANSFER].error_message == "scp: connection reset"


def test_naive_times_read_in_the_agent_zone_for_the_age_limit() -> None:
    # 7 days before `now` is 2025-06-20 09:00 UTC; 09:40 naive is 09:40 UTC but 08:40 UTC in Douala.
    now = datetime(2025, 6, 27, 9, 0, tzinfo=UTC)
    payload = canonical(operation_end_time="2025-06-20 09:40:05.208307", operation_start_time=None)
    report = accepted(payload, as_of=now, agent_tz=UTC)
    assert report.operation_end_time.value == datetime(2025, 6, 20, 9, 40, 5, 208307)
    assert report.operation_end_time.in_utc(DOUALA) == datetime(2025, 6, 20, 8, 40, 5, 208307, tzinfo=UTC)
    reason = rejected(payload, as_of=now, agent_tz=DOUALA)
    assert reason == "report is older than 7 days (operation ended 2025-06-20 08:40 UTC)"


def test_aware_times_are_stored_in_utc() -> None:
    report = accepted(canonical(operation_end_time="2025-11-21T14:05:12+01:00"), agent_tz=DOUALA)
    assert report.operation_end_time.value == datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)
    assert report.operation_end_time.value.utcoffset() == timedelta(0)
    assert not report.operation_end_time.is_naive


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-11-21T13:05:12Z", datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)),
        ("2025-11-21t13:05:12z", datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)),
        ("2025-11-21T14:05:12+01:00", datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)),
        ("2025-11-21T14:05:12+0100", datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)),
        ("2025-11-21 13:05", datetime(2025, 11, 21, 13, 5)),
        ("2025-06-20 09:40:05.208307", datetime(2025, 6, 20, 9, 40, 5, 208307)),
        ("2025-06-24T08:30:00", datetime(2025, 6, 24, 8, 30)),
        ("2025-11-21T13:05:12.123456789Z", datetime(2025, 11, 21, 13, 5, 12, 123456, tzinfo=UTC)),
        ("2025-11-21T13:05:12,5", datetime(2025, 11, 21, 13, 5, 12, 500000)),
        ("  2025-11-21T13:05:12Z  ", datetime(2025, 11, 21, 13, 5, 12, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts(raw: str, expected: datetime) -> None:
    parsed = parse_timestamp(raw, "operation_end_time")
    assert parsed.value == expected
    assert parsed.is_naive == (expected.tzinfo is None)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (1763730312, "operation_end_time must be a timestamp string, got number"),
        (None, "operation_end_time must be a timestamp string, got null"),
        (["2025-11-21T13:05:12Z"], "must be a timestamp string, got array"),
        ("2025-11-21", "is not a date and time"),
        ("yesterday", "is not a date and time"),
        ("21/11/2025 13:05", "is not a date and time"),
        ("2025-13-01T00:00:00", "is not a valid date and time"),
        ("2025-02-30T00:00:00", "is not a valid date and time"),
        ("2025-11-21T13:05:12+25:00", "is not a valid date and time"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
        ("9999-12-31T23:59:59", "is out of range"),
    ],
)
def test_parse_timestamp_refuses(raw: Any, fragment: str) -> None:
    with pytest.raises(ReportRejected, match=fragment):
        parse_timestamp(raw, "operation_end_time")


def test_extreme_end_times_are_rejected_not_crashing() -> None:
    # year 1 at +01:00 (or read in Douala) is before datetime.min in UTC; year 9999 read west of UTC after max
    assert "out of range" in rejected(canonical(operation_end_time="0001-01-01T00:30:00+01:00"))
    assert "out of range" in rejected(canonical(operation_end_time="0001-01-01T00:00"), agent_tz=DOUALA)
    far = rejected(canonical(operation_end_time="9999-12-31T23:59"), agent_tz=ZoneInfo("America/New_York"))
    assert "out of range" in far


def test_extreme_step_time_compromises_only_its_database() -> None:
    section = database(BACKUP={"status": True, "start_time": "0001-01-01T00:00:00+05:00"})
    report = accepted(canonical(databases={"compta_db": section, "other": database()}))
    assert report.databases["compta_db"].problems == (
        "BACKUP.start_time '0001-01-01T00:00:00+05:00' is out of range",
    )
    assert report.databases["other"].problems == ()


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("compta_db.sql.gz", "compta_db.sql.gz"),
        ("/home/lam/Backup/EL_HADJ_BAFOUSSAM_2025.zst", "EL_HADJ_BAFOUSSAM_2025.zst"),
        ("scanner_test_root\\SOCIA_BLU_GARE_4\\databases\\X_2025.zst", "X_2025.zst"),
        ("C:\\Backups\\compta_db.sql.gz", "compta_db.sql.gz"),
        ("D:/mixed\\separators/compta_db.sql.gz", "compta_db.sql.gz"),
        ("  /tmp/x.zst  ", "x.zst"),
        (None, None),
        ("", None),
        ("/home/lam/Backup/", None),
        ("C:\\Backups\\", None),
        ("..", None),
        ("/srv/..", None),
        (".", None),
        ("x" * 256, None),
        ("bad\nname.zst", None),
        ("bad\x00name.zst", None),
    ],
)
def test_staged_base_name(raw: str | None, expected: str | None) -> None:
    assert staged_base_name(raw) == expected


@pytest.mark.parametrize(
    "name",
    ["SIRPACAM_DOUALA_NEWBELL", "SIRPACAM_BAFOUSSAM_CAMPUS_1", "SOCIA_BLU_GARE_4", "A-B_C_D-2"],
)
def test_valid_agent_ids(name: str) -> None:
    assert is_valid_agent_id(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "SIRPACAM_DOUALA",
        "SIRPACAM__NEWBELL",
        "_SIRPACAM_DOUALA_NEWBELL",
        "SIRPACAM_DOUALA_NEWBELL_",
        "SIRPACAM DOUALA_NEWBELL_X",
        "SIRPACAM_DOUALA_NEWBELL\n",
        "SIRPACAM_DOUALA_../..",
        "SIRPACAM_DOUALA_NEWBÉLL",
    ],
)
def test_invalid_agent_ids(name: str) -> None:
    assert not is_valid_agent_id(name)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        (f"20251121_130512_{AGENT}.json", datetime(2025, 11, 21, 13, 5, 12)),
        (f"2025-11-21_13-05-12_{AGENT}.json", datetime(2025, 11, 21, 13, 5, 12)),
        (f"2025-11-21T13-05-12_{AGENT}.json", datetime(2025, 11, 21, 13, 5, 12)),
    ],
)
def test_file_name_formats(file_name: str, expected: datetime) -> None:
    assert parse_file_name_time(file_name) == expected
    assert file_name_problem(file_name, AGENT) is None


@pytest.mark.parametrize(
    ("file_name", "fragment"),
    [
        (f"{AGENT}.json", "does not follow <timestamp>_<AGENT_ID>.json"),
        (f"20251121_{AGENT}.json", "does not follow"),
        (f"20251121-130512_{AGENT}.json", "does not follow"),
        (f"20251121_130512_{AGENT}.json.tmp", "does not follow"),
        (f"20251121_130512_{AGENT}.JSON", "does not follow"),
        (f"2025-11-21 13:05:12_{AGENT}.json", "does not follow"),
        ("", "does not follow"),
        (f"20251341_130512_{AGENT}.json", "has an impossible timestamp '20251341_130512'"),
        (f"20251121_250000_{AGENT}.json", "has an impossible timestamp"),
        (f"00010101_000000_{AGENT}.json", "has an impossible timestamp"),
        ("20251121_130512_SIRPACAM_DOUALA_AKWA.json", "names agent 'SIRPACAM_DOUALA_AKWA', not its folder"),
        (f"20251121_130512_x_{AGENT}.json", "not its folder"),
    ],
)
def test_file_name_problems(file_name: str, fragment: str) -> None:
    problem = file_name_problem(file_name, AGENT)
    assert problem is not None
    assert fragment in problem


def test_file_name_time_none_when_absent_or_impossible() -> None:
    assert parse_file_name_time("notes.json") is None
    assert parse_file_name_time(f"20250230_120000_{AGENT}.json") is None
    assert parse_file_name_time(f"99991231_235959_{AGENT}.json") is None
    # the agent part does not matter for the time
    assert parse_file_name_time("20251121_130512_OTHER_AGENT_NAME.json") == datetime(2025, 11, 21, 13, 5, 12)


# ---------------------------------------------------------------- rejections


def test_invalid_json_is_rejected() -> None:
    reason = rejected(b"{not json}")
    assert reason.startswith("invalid JSON: ")
    assert "line 1 column 2" in reason


def test_truncated_json_is_rejected() -> None:
    data = json.dumps(canonical(), indent=2).encode()
    reason = rejected(data[: len(data) // 2])
    assert reason.startswith("invalid JSON: ")


@pytest.mark.parametrize("data", [b"", b"   \n\t", b"\xef\xbb\xbf"])
def test_empty_file_is_rejected(data: bytes) -> None:
    assert rejected(data) == "empty file"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[]", "array"),
        (b"[{}]", "array"),
        (b"42", "number"),
        (b'"report"', "string"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_top_level_must_be_an_object(data: bytes, kind: str) -> None:
    assert rejected(data) == f"report must be a JSON object, got {kind}"


@pytest.mark.parametrize("field", ["operation_end_time", "agent_id", "databases"])
def test_missing_required_field(field: str) -> None:
    payload = canonical()
    del payload[field]
    assert rejected(payload) == f"required field {field} is missing"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"operation_end_time": 1763730312}, "operation_end_time must be a timestamp string, got number"),
        ({"operation_end_time": None}, "operation_end_time must be a timestamp string, got null"),
        ({"operation_end_time": "soon"}, "operation_end_time 'soon' is not a date and time"),
        ({"agent_id": 42}, "agent_id must be a string, got number"),
        ({"agent_id": None}, "agent_id must be a string, got null"),
        ({"databases": []}, "databases must be an object, got array"),
        ({"databases": "compta_db"}, "databases must be an object, got string"),
        ({"databases": None}, "databases must be an object, got null"),
    ],
)
def test_required_field_of_wrong_type(overrides: dict[str, Any], expected: str) -> None:
    assert rejected(canonical(**overrides)) == expected


def test_agent_id_must_match_its_folder() -> None:
    reason = rejected(canonical(agent_id="SIRPACAM_DOUALA_AKWA"))
    assert reason == "agent_id 'SIRPACAM_DOUALA_AKWA' differs from its folder 'SIRPACAM_DOUALA_NEWBELL'"


def test_report_older_than_max_age_is_rejected() -> None:
    reason = rejected(canonical(operation_end_time="2025-11-14T13:59:59Z"))
    assert reason == "report is older than 7 days (operation ended 2025-11-14 13:59 UTC)"
    assert accepted(canonical(operation_end_time="2025-11-14T14:00:00Z"))  # exactly 7 days: kept


def test_report_far_in_the_future_is_rejected() -> None:
    reason = rejected(canonical(operation_end_time="2025-11-22T14:00:01Z"))
    assert reason == "operation_end_time 2025-11-22 14:00 UTC is in the future"
    assert accepted(canonical(operation_end_time="2025-11-22T02:00:00Z"))  # clock skew tolerated


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(constant: str) -> None:
    data = json.dumps(canonical()).replace("19972513", constant).encode()
    reason = rejected(data)
    assert reason == f"invalid JSON: {constant} is not a number JSON allows"


def test_duplicate_keys_are_rejected() -> None:
    data = json.dumps(canonical()).replace('"agent_id":', '"agent_id": "X_Y_Z", "agent_id":').encode()
    assert rejected(data) == "invalid JSON: duplicate key 'agent_id'"
    nested = json.dumps(canonical()).replace('"size": 19972513', '"size": 1, "size": 19972513').encode()
    assert rejected(nested) == "invalid JSON: duplicate key 'size'"


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"agent_id": "SIRPACAM_DOUALA_NEWBELL", "databases": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
)
def test_ten_thousand_levels_of_nesting_are_rejected(data: bytes) -> None:
    assert rejected(data) == "invalid JSON: nested too deeply"


@pytest.mark.parametrize("number", [2**63, 2**64, -(2**63), 10**40])
def test_integers_beyond_64_bits_are_rejected(number: int) -> None:
    data = json.dumps(canonical()).replace("19972513", str(number)).encode()
    reason = rejected(data)
    assert reason.startswith("invalid JSON: number ")
    assert reason.endswith("is beyond 64 bits")


def test_thousands_of_digits_are_rejected() -> None:
    data = json.dumps(canonical()).replace("19972513", "9" * 5000).encode()
    reason = rejected(data)
    assert reason.startswith("invalid JSON: ")
    assert reason.count("invalid JSON") == 1
    assert len(reason) < 300


def test_largest_64_bit_size_is_accepted() -> None:
    data = json.dumps(canonical()).replace("19972513", str(2**63 - 1)).encode()
    db = accepted(data).databases["compta_db"]
    assert db.steps[Step.COMPRESS].size == 2**63 - 1


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b'{"agent_id": "\xff"}', 14),
        ('{"logs": "échec"}'.encode("latin-1"), 10),
        (b"\xfe\xff\x00{", 0),
    ],
)
def test_non_utf8_bytes_are_rejected(data: bytes, offset: int) -> None:
    assert rejected(data) == f"not UTF-8 text (invalid byte at offset {offset})"


def test_utf8_bom_is_accepted() -> None:
    report = accepted(b"\xef\xbb\xbf" + json.dumps(canonical()).encode())
    assert report.agent_id == AGENT
    assert report.databases["compta_db"].problems == ()


def test_utf16_report_is_rejected_not_crashing() -> None:
    reason = rejected(json.dumps(canonical()).encode("utf-16"))
    assert reason.startswith("not UTF-8 text")


# ---------------------------------------------------------------- per-database defects


def test_missing_compress_section_compromises_only_that_database() -> None:
    broken = database()
    del broken["COMPRESS"]
    outcome = parse(canonical(databases={"compta_db": broken, "paie_db": database()}))
    assert outcome.accepted and outcome.reason is None
    report = outcome.report
    assert report is not None
    assert report.databases["compta_db"].problems == ("no COMPRESS section",)
    assert Step.COMPRESS not in report.databases["compta_db"].steps
    assert report.databases["compta_db"].steps[Step.BACKUP].status is True
    assert report.databases["paie_db"].problems == ()


def test_unknown_status_compromises_the_database() -> None:
    section = database(BACKUP={"status": "maybe", "size": 10})
    report = accepted(canonical(databases={"compta_db": section, "paie_db": database()}))
    db = report.databases["compta_db"]
    assert db.problems == ("BACKUP status 'maybe' is not true or false",)
    assert Step.BACKUP not in db.steps
    assert report.databases["paie_db"].problems == ()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("compta_db.sql.gz", "section must be an object, got string"),
        (None, "section must be an object, got null"),
        (database(TRANSFER=[True]), "TRANSFER section must be an object, got array"),
        (database(TRANSFER={"error_message": "x"}), "TRANSFER status None is not true or false"),
        (database(COMPRESS={"status": True, "size": "lots"}), "COMPRESS size 'lots' is not a byte count"),
        (database(COMPRESS={"status": True, "size": -5}), "COMPRESS size -5 is not a byte count"),
        (database(COMPRESS={"status": True, "sha256": 12}), "COMPRESS hash must be a string, got number"),
        (database(COMPRESS={"status": True, "sha256": "a" * 201}), "COMPRESS hash is 201 characters long"),
        (
            database(BACKUP={"status": True, "start_time": "noon"}),
            "BACKUP.start_time 'noon' is not a date and time",
        ),
        (database(staged_file_name=["a.zst"]), "staged_file_name must be a string, got array"),
    ],
)
def test_section_defects_become_problems(section: Any, problem: str) -> None:
    report = accepted(canonical(databases={"compta_db": section, "paie_db": database()}))
    assert problem in report.databases["compta_db"].problems
    assert report.databases["paie_db"].problems == ()


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "..",
        ".",
        "bad\x00name",
        "tab\tname",
        "x" * 10_000,
        "",
        "lone\ud800",
    ],
)
def test_unusable_database_names_are_ignored_with_a_note(name: str) -> None:
    payload = canonical(databases={name: database(), "compta_db": database()})
    outcome = parse(payload)
    assert outcome.accepted and outcome.report is not None
    assert list(outcome.report.databases) == ["compta_db"]
    assert len(outcome.notes) == 1
    note = outcome.notes[0]
    assert note.startswith("ignored database with unusable name ")
    assert len(note) < 120  # a 10,000-character name is not copied into the note
    assert "\x00" not in note


def test_long_texts_are_bounded_and_nul_free() -> None:
    section = database(
        logs_summary="x" * 100_000,
        TRANSFER={"status": False, "error_message": "disk\x00full"},
    )
    db = accepted(canonical(databases={"compta_db": section})).databases["compta_db"]
    assert db.logs_summary is not None and len(db.logs_summary) == 4000
    assert db.steps[Step.TRANSFER].error_message == "diskfull"


def test_texts_are_storable_in_postgresql() -> None:
    # JSONB refuses NUL and lone surrogates, which JSON allows: they must not reach the payload
    data = (
        b'{"operation_end_time": "2025-11-21T13:05:12Z", "agent_id": "SIRPACAM_DOUALA_NEWBELL", '
        b'"overall_status": "ok\\ud800", "databases": {"compta_db": {'
        b'"BACKUP": {"status": true}, "COMPRESS": {"status": true, "sha256": "ab\\u0000cd\\udc00"}, '
        b'"TRANSFER": {"status": false, "error_message": "\\udbff"}, "logs_summary": "\\ud83d\\ude00 ok"}}}'
    )
    report = accepted(data)
    db = report.databases["compta_db"]
    assert db.steps[Step.COMPRESS].sha256 == "abcd\ufffd"
    assert db.steps[Step.TRANSFER].error_message == "\ufffd"
    assert db.logs_summary == "\U0001f600 ok"  # a proper surrogate pair is one character
    assert report.overall_status == "ok\ufffd"
    json.dumps(report_to_payload(report), ensure_ascii=False).encode("utf-8")  # strict: would raise


def test_non_string_texts_are_kept_as_json() -> None:
    section = database(logs_summary={"lines": 3}, TRANSFER={"status": True, "error_message": 7})
    db = accepted(canonical(databases={"compta_db": section})).databases["compta_db"]
    assert db.logs_summary == '{"lines": 3}'
    assert db.steps[Step.TRANSFER].error_message == "7"


def test_bad_operation_start_time_is_a_note_not_a_rejection() -> None:
    outcome = parse(canonical(operation_start_time="whenever"))
    assert outcome.accepted and outcome.report is not None
    assert outcome.report.operation_start_time is None
    assert outcome.notes == ("operation_start_time 'whenever' is not a date and time",)


# ---------------------------------------------------------------- stored form


def test_payload_round_trip_keeps_everything() -> None:
    broken = database(BACKUP={"status": "maybe"})
    del broken["COMPRESS"]
    naive = database(
        BACKUP={"status": "True", "start_time": "2025-11-21 12:00:00.5", "sha256": DUMP_HASH, "size": "7"},
        TRANSFER={"status": "False", "error_message": "timeout"},
    )
    report = accepted(canonical(databases={"compta_db": database(), "broken": broken, "naive": naive}))
    payload = report_to_payload(report)
    assert payload["operation_end_time"] == "2025-11-21T13:05:12+00:00"
    assert payload["databases"]["naive"]["steps"]["BACKUP"]["start_time"] == "2025-11-21T12:00:00.500000"
    assert payload["databases"]["broken"]["problems"] == [
        "BACKUP status 'maybe' is not true or false",
        "no COMPRESS section",
    ]
    back = round_trip(report)
    assert back == report
    assert back.databases["naive"].steps[Step.BACKUP].start_time == ReportTime(
        datetime(2025, 11, 21, 12, 0, 0, 500000)
    )
    assert back.databases["naive"].steps[Step.BACKUP].start_time.is_naive


def test_payload_round_trip_of_naive_report() -> None:
    payload = canonical(operation_end_time="2025-06-24T08:30:00", operation_start_time="2025-06-24T08:00:00")
    report = accepted(payload, as_of=datetime(2025, 6, 24, 12, 0, tzinfo=UTC))
    stored = report_to_payload(report)
    assert stored["operation_end_time"] == "2025-06-24T08:30:00"
    assert stored["operation_start_time"] == "2025-06-24T08:00:00"
    back = round_trip(report)
    assert back == report
    assert back.operation_end_time.is_naive
