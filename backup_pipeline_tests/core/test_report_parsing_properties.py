"""Property tests: nothing an agent writes can make report parsing raise, and accepted reports survive
storage unchanged (docs/design.md §7: untrusted input never crashes a scan)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from backup_pipeline.core.domain import StatusReport, Step
from backup_pipeline.core.reports import (
    ParseOutcome,
    ReportRejected,
    file_name_problem,
    is_valid_agent_id,
    parse_file_name_time,
    parse_report,
    parse_timestamp,
    report_from_payload,
    report_to_payload,
    staged_base_name,
)

AGENT = "SIRPACAM_DOUALA_NEWBELL"
NOW = datetime(2025, 11, 21, 14, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=7)
ZONES = [UTC, ZoneInfo("Africa/Douala"), ZoneInfo("America/New_York"), ZoneInfo("Pacific/Kiritimati")]
FAST = settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------- strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

offsets = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30)), timezone.max]
)


@st.composite
def recent_timestamps(draw: st.DrawFn) -> str:
    """Timestamps around NOW, written the ways agents write them (naive, Z, offsets, spaces)."""
    moment = draw(st.datetimes(min_value=datetime(2025, 11, 13), max_value=datetime(2025, 11, 23)))
    tz = draw(offsets)
    text = moment.replace(tzinfo=tz).isoformat(sep=draw(st.sampled_from(["T", " "])))
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


timestamps = (
    recent_timestamps()
    | st.sampled_from(
        [
            "2025-11-21T13:05:12Z",
            "2025-06-20 09:40:05.208307",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00",
            "9999-12-31T23:59:59",
            "9999-12-31T23:59:59-05:00",
            "2025-02-30T00:00",
            "2025-11-21T13:05:12+24:00",
            "",
            "null",
            "soon",
        ]
    )
    | json_values
)
statuses = (
    st.sampled_from([True, False, "True", "False", "true", "0", "maybe", "null", 1, 0, 2]) | json_values
)
sizes = (
    st.sampled_from(["62233088", "0", "-1", "null", " 7 ", 2**63 - 1, 2**63, 1.5, 4.0])
    | st.integers()
    | json_values
)
hashes = (
    st.sampled_from(["AB" * 32, "ab" * 32, "INVALID_HASH_3_7", "", "a\x00b", "\ud800"])
    | st.text()
    | json_values
)
texts = st.text(max_size=50) | st.sampled_from(["null", "x" * 5000, "nul\x00", "\udfff"]) | json_values

step_sections = st.fixed_dictionaries(
    {},
    optional={
        "status": statuses,
        "start_time": timestamps,
        "end_time": timestamps,
        "sha256": hashes,
        "sha256_checksum": hashes,
        "size": sizes,
        "error_message": texts,
    },
)
step_keys = ["BACKUP", "COMPRESS", "TRANSFER", "backup_process", "compress_process", "transfer_process"]
database_sections = (
    st.fixed_dictionaries(
        {"BACKUP": step_sections, "COMPRESS": step_sections, "TRANSFER": step_sections},
        optional={
            "staged_file_name": st.sampled_from(["/home/lam/Backup/X.zst", "C:\\b\\X.zst", "", ".."]) | texts,
            "logs_summary": texts,
        },
    )
    | st.fixed_dictionaries({}, optional={k: step_sections | json_values for k in step_keys})
    | json_values
)
database_names = st.text(max_size=30) | st.sampled_from(
    ["compta_db", "..", ".", "a/b", "a\\b", "n\x00ul", "x" * 200, "\ud800", "X_2025"]
)
report_like = st.fixed_dictionaries(
    {
        "agent_id": st.just(AGENT) | st.sampled_from(["SIRPACAM_DOUALA_AKWA", ""]) | json_values,
        "databases": st.dictionaries(database_names, database_sections, max_size=4) | json_values,
    },
    optional={
        "operation_end_time": timestamps,
        "operation_timestamp": timestamps,
        "operation_start_time": timestamps,
        "overall_status": texts,
    },
)
# mostly-valid reports, so that the accepted path (and clean databases) are exercised often
good_steps = st.fixed_dictionaries(
    {"status": st.sampled_from([True, False, "True", "False"])},
    optional={
        "start_time": recent_timestamps(),
        "end_time": recent_timestamps() | st.just(""),
        "sha256": st.sampled_from(["AB" * 32, "ab" * 32, "INVALID_HASH_3_7", "null"]),
        "size": st.integers(0, 2**63 - 1) | st.integers(0, 10**9).map(str),
        "error_message": st.text(max_size=20) | st.just("null"),
    },
)
good_sections = st.fixed_dictionaries(
    {"BACKUP": good_steps, "COMPRESS": good_steps, "TRANSFER": good_steps},
    optional={
        "staged_file_name": st.sampled_from(["/home/lam/Backup/X.zst", "s\\X\\databases\\X.zst", "x.sql.gz"]),
        "logs_summary": st.text(max_size=30),
    },
)
good_reports = st.fixed_dictionaries(
    {
        "agent_id": st.just(AGENT),
        "operation_end_time": recent_timestamps(),
        "databases": st.dictionaries(
            st.text(max_size=20) | st.sampled_from(["compta_db", "X_2025"]),
            good_sections | good_sections | database_sections,
            max_size=4,
        ),
    },
    optional={"operation_start_time": timestamps, "overall_status": texts},
)


# ---------------------------------------------------------------- helpers


def parse(data: bytes, agent_tz: Any = UTC) -> ParseOutcome:
    return parse_report(data, agent_id=AGENT, as_of=NOW, max_age=MAX_AGE, agent_tz=agent_tz)


def check_outcome(outcome: ParseOutcome, zone: Any = UTC) -> None:
    assert isinstance(outcome, ParseOutcome)
    assert (outcome.report is None) != (outcome.reason is None)  # accepted xor reason
    assert outcome.accepted == (outcome.report is not None)
    if outcome.reason is not None:
        assert isinstance(outcome.reason, str) and outcome.reason
        assert len(outcome.reason) < 500
        assert outcome.notes == ()
    else:
        assert isinstance(outcome.report, StatusReport)
        check_report(outcome.report, zone or UTC)
        assert all(isinstance(n, str) and len(n) < 500 for n in outcome.notes)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def check_report(report: StatusReport, zone: Any) -> None:
    assert report.agent_id == AGENT
    end = report.operation_end_time.in_utc(zone)  # naive times are read in the agent's zone
    assert NOW - MAX_AGE <= end <= NOW + timedelta(days=1)
    for name, db in report.databases.items():
        assert db.name == name
        assert name not in ("", ".", "..") and len(name) <= 128
        assert not any(c in name for c in "/\\\x00")
        for step, s in db.steps.items():
            assert isinstance(step, Step) and isinstance(s.status, bool)
            assert s.size is None or 0 <= s.size <= 2**63 - 1
        for text in (db.logs_summary, db.staged_file_name):
            assert text is None or len(text) <= 4000
    payload = report_to_payload(report)
    for text in strings_in(payload):  # storable in PostgreSQL JSONB: no NUL, no lone surrogate
        assert "\x00" not in text
        text.encode("utf-8")
    assert report_from_payload(json.loads(json.dumps(payload))) == report


# ---------------------------------------------------------------- properties


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_give_an_outcome(data: bytes) -> None:
    check_outcome(parse(data))


@FAST
@given(good_reports, st.data())
def test_mangled_reports_give_an_outcome(report: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(json.dumps(report).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    check_outcome(parse(bytes(raw)))


@FAST
@given(json_values)
def test_any_json_value_gives_an_outcome(value: Any) -> None:
    outcome = parse(json.dumps(value).encode())
    check_outcome(outcome)
    if not isinstance(value, dict):
        assert not outcome.accepted


@FAST
@given(report_like, st.sampled_from(ZONES))
def test_report_like_structures_give_an_outcome(report: dict[str, Any], zone: Any) -> None:
    check_outcome(parse(json.dumps(report).encode(), agent_tz=zone), zone)


@FAST
@given(good_reports, st.sampled_from(ZONES))
def test_accepted_reports_survive_storage(report: dict[str, Any], zone: Any) -> None:
    outcome = parse(json.dumps(report).encode(), agent_tz=zone)
    check_outcome(outcome, zone)  # includes report_to_payload -> dumps -> loads -> report_from_payload
    if outcome.report is not None:
        stored = report_from_payload(json.loads(json.dumps(report_to_payload(outcome.report))))
        assert stored == outcome.report
        assert stored.operation_end_time.is_naive == outcome.report.operation_end_time.is_naive


@FAST
@given(st.text(), st.text())
def test_file_name_functions_never_raise(file_name: str, agent_id: str) -> None:
    problem = file_name_problem(file_name, agent_id)
    named = parse_file_name_time(file_name)
    assert problem is None or isinstance(problem, str)
    assert named is None or (isinstance(named, datetime) and named.tzinfo is None)
    if named is None:
        assert problem is not None
    is_valid_agent_id(agent_id)


@FAST
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from(["%Y%m%d_%H%M%S", "%Y-%m-%d_%H-%M-%S", "%Y-%m-%dT%H-%M-%S"]),
    st.sampled_from([AGENT, "SIRPACAM_BAFOUSSAM_CAMPUS_1", "SOCIA_BLU_GARE_4"]),
)
@example(datetime(1, 1, 1), "%Y%m%d_%H%M%S", AGENT)
@example(datetime(9999, 12, 31, 23, 59, 59), "%Y-%m-%d_%H-%M-%S", AGENT)
@example(datetime(999, 1, 1), "%Y-%m-%dT%H-%M-%S", AGENT)
def test_well_formed_file_names_are_read(moment: datetime, fmt: str, agent_id: str) -> None:
    stamp = moment.strftime(fmt.replace("%Y", f"{moment.year:04d}"))  # strftime does not pad year 999
    name = f"{stamp}_{agent_id}.json"
    moment = moment.replace(microsecond=0)
    if 2 <= moment.year <= 9998:
        assert parse_file_name_time(name) == moment
        assert file_name_problem(name, agent_id) is None
        assert file_name_problem(name, "OTHER_AGENT_NAME") is not None
    else:  # no cycle can be near year 1 or 9999, and such a time would overflow in any zone
        assert parse_file_name_time(name) is None
        assert file_name_problem(name, agent_id) is not None


@FAST
@given(st.text() | st.none())
def test_staged_base_name_is_a_plain_name(raw: str | None) -> None:
    base = staged_base_name(raw)
    if base is not None:
        assert base and base not in (".", "..") and len(base) <= 255
        assert "/" not in base and "\\" not in base
        assert not any(ord(c) < 32 for c in base)


@FAST
@given(timestamps, st.sampled_from(ZONES))
def test_parse_timestamp_returns_or_rejects(value: Any, zone: Any) -> None:
    try:
        parsed = parse_timestamp(value, "operation_end_time")
    except ReportRejected as exc:
        assert str(exc).startswith("operation_end_time ")
        return
    utc = parsed.in_utc(zone)  # never overflows, whatever the zone
    assert utc.utcoffset() == timedelta(0)
    if not parsed.is_naive:
        assert parsed.value.utcoffset() == timedelta(0)
