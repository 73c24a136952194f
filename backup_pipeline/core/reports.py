"""Reading what agents write: folder names, report file names and report contents.

Agents are remote and untrusted, and real ones write loosely (booleans and sizes as strings,
`"null"`, naive timestamps, Windows paths). Everything here turns bytes into either an
`StatusReport` or a rejection reason a person can act on; nothing here raises on bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from backup_pipeline.core.domain import (
    DatabaseReport,
    ReportTime,
    StatusReport,
    Step,
    StepReport,
)

AGENT_ID_RE = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+){2,}")
_FILE_TS_FORMATS = {
    re.compile(r"\d{8}_\d{6}"): "%Y%m%d_%H%M%S",
    re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"): "%Y-%m-%d_%H-%M-%S",
    re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}"): "%Y-%m-%dT%H-%M-%S",
}
_FILE_NAME_RE = re.compile(
    r"(?P<ts>\d{8}_\d{6}|\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}|\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})"
    r"_(?P<agent>.+)\.json"
)
# A time is required: a bare date is a sign of a broken agent, not a backup time.
_TIMESTAMP_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    re.IGNORECASE,
)
# No control characters, no path separators, no lone UTF-16 surrogates (PostgreSQL refuses them).
_DATABASE_NAME_RE = re.compile(r"[^\x00-\x1f\x7f/\\\ud800-\udfff]{1,128}")
_LONE_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_NULLS = {"", "null", "none", "nil"}
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_STEP_KEYS: dict[Step, tuple[str, ...]] = {
    Step.BACKUP: ("BACKUP", "backup_process"),
    Step.COMPRESS: ("COMPRESS", "compress_process"),
    Step.TRANSFER: ("TRANSFER", "transfer_process"),
}
_HASH_KEYS = ("sha256_checksum", "sha256")
MAX_TEXT = 4000
# Names as the database holds them: each column is as wide as what these checks admit, so nothing an
# agent names is ever refused by PostgreSQL (one refusal there would fail a whole batch).
MAX_AGENT_ID = 128  # expected_jobs.agent_id_responsible, status_reports.agent_id, cycle_watch.agent_id
MAX_FILE_NAME_BYTES = 255  # a file name on disk (NAME_MAX): staged file names, archived report names
# status_reports.file_name: a report's name as recorded, its bytes that are not UTF-8 escaped (four
# characters each at worst: 4 x 255), cut beyond that (a file system with longer names).
MAX_RECORDED_NAME = 1024
MAX_SIZE = 2**63 - 1
FUTURE_TOLERANCE = timedelta(days=1)
# Years whose instants survive any UTC offset without leaving datetime's range (1..9999).
MIN_YEAR, MAX_YEAR = 2, 9998


class ReportRejected(ValueError):
    """Raised inside this module only; callers get a `ParseOutcome` with the reason."""


@dataclass(frozen=True)
class ParseOutcome:
    report: StatusReport | None
    reason: str | None = None  # set when rejected
    notes: tuple[str, ...] = ()  # things ignored without rejecting the report

    @property
    def accepted(self) -> bool:
        return self.report is not None


# ---------------------------------------------------------------- names


def is_valid_agent_id(name: str) -> bool:
    return agent_id_problem(name) is None


def agent_id_problem(name: str) -> str | None:
    """Why `name` cannot be an agent id (a folder of the deposit area, a job's `agent_id`), or None."""
    if AGENT_ID_RE.fullmatch(name) is None:
        return "name is not ENTREPRISE_VILLE_QUARTIER"
    if len(name) > MAX_AGENT_ID:
        return f"name is {len(name)} characters long, above the {MAX_AGENT_ID} an agent id may have"
    return None


def database_name_problem(name: str) -> str | None:
    """Why `name` cannot be a database's name in a report, or None."""
    if _DATABASE_NAME_RE.fullmatch(name) is None or name in (".", ".."):
        return "a database name is 1-128 characters without control characters or path separators"
    return None


def parse_file_name_time(file_name: str) -> datetime | None:
    """The naive timestamp at the start of a report file name, or None when absent or impossible."""
    match = _FILE_NAME_RE.fullmatch(file_name)
    if match is None:
        return None
    ts = match.group("ts")
    for pattern, fmt in _FILE_TS_FORMATS.items():
        if pattern.fullmatch(ts):
            try:
                parsed = datetime.strptime(ts, fmt)
            except ValueError:
                return None
            return parsed if MIN_YEAR <= parsed.year <= MAX_YEAR else None
    return None


def file_name_problem(file_name: str, agent_id: str) -> str | None:
    """Why a report file name breaks the `<timestamp>_<AGENT_ID>.json` rule, or None."""
    match = _FILE_NAME_RE.fullmatch(file_name)
    if match is None:
        return (
            f"file name {file_name!r} does not follow <timestamp>_<AGENT_ID>.json "
            "(timestamp YYYYMMDD_HHMMSS, YYYY-MM-DD_HH-MM-SS or YYYY-MM-DDTHH-MM-SS)"
        )
    if parse_file_name_time(file_name) is None:
        return f"file name {file_name!r} has an impossible timestamp {match.group('ts')!r}"
    if match.group("agent") != agent_id:
        return f"file name {file_name!r} names agent {match.group('agent')!r}, not its folder {agent_id!r}"
    return None


def staged_base_name(raw: str | None) -> str | None:
    """The base name of a staged file as written by an agent (POSIX or Windows path), if usable."""
    if raw is None:
        return None
    base = re.split(r"[\\/]", raw.strip())[-1]
    if base in ("", ".", "..") or any(ord(c) < 32 or c == "\x7f" for c in base):
        return None
    if len(base.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        return None  # no file system holds it: never looked for
    return base


# ---------------------------------------------------------------- JSON


def _no_constants(name: str) -> Any:
    raise ReportRejected(f"invalid JSON: {name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    # Judge the length first: int() of thousands of digits is slow, then refused with Python's advice.
    value = int(text) if len(text.lstrip("-")) <= 19 else MAX_SIZE + 1
    if abs(value) > MAX_SIZE:
        raise ReportRejected(f"invalid JSON: number {text[:30]}… is beyond 64 bits")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ReportRejected(f"invalid JSON: duplicate key {_show(key)}")
        result[key] = value
    return result


def decode_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")  # Windows agents may write a byte-order mark
    except UnicodeDecodeError as exc:
        raise ReportRejected(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise ReportRejected("empty file")
    try:
        return json.loads(
            text,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            object_pairs_hook=_no_duplicates,
        )
    except ReportRejected:
        raise  # already says why (duplicate key, NaN, beyond 64 bits); not "invalid JSON: invalid JSON: ..."
    except json.JSONDecodeError as exc:
        raise ReportRejected(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ReportRejected("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise ReportRejected(f"invalid JSON: {str(exc)[:200]}") from None


# ---------------------------------------------------------------- fields


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)


def _clean_text(value: Any) -> str | None:
    if _is_null(value):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    text = _storable(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _storable(text: str) -> str:
    """Text PostgreSQL can store: JSONB refuses NUL and lone UTF-16 surrogates (JSON allows both)."""
    return _LONE_SURROGATE_RE.sub("\ufffd", text.replace("\x00", ""))


def parse_timestamp(value: Any, field_name: str) -> ReportTime:
    if not isinstance(value, str):
        raise ReportRejected(f"{field_name} must be a timestamp string, got {_type_name(value)}")
    text = value.strip()
    if not _TIMESTAMP_RE.fullmatch(text):
        raise ReportRejected(f"{field_name} {_show(value)} is not a date and time")
    text = text.replace(",", ".")
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        assert digits is not None
        text = head + "." + digits.group()[:6].ljust(6, "0") + tail[digits.end() :]
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ReportRejected(f"{field_name} {_show(value)} is not a valid date and time") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:  # year 1 at +01:00 is before datetime.min in UTC
        raise ReportRejected(f"{field_name} {_show(value)} is out of range")
    return ReportTime(parsed.astimezone(UTC) if parsed.tzinfo else parsed)


def _optional_timestamp(value: Any, field_name: str, problems: list[str]) -> ReportTime | None:
    if _is_null(value):
        return None
    try:
        return parse_timestamp(value, field_name)
    except ReportRejected as exc:
        problems.append(str(exc))
        return None


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def parse_size(value: Any) -> int | None:
    """A byte count from an int or a numeric string; raises ReportRejected when it is not one."""
    if _is_null(value):
        return None
    if isinstance(value, bool):
        raise ReportRejected(f"size {_show(value)} is not a byte count")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,19}\s*", value):
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_SIZE:
        return value
    raise ReportRejected(f"size {_show(value)} is not a byte count")


def _parse_hash(value: Any, where: str, problems: list[str]) -> str | None:
    if _is_null(value):
        return None
    if not isinstance(value, str):
        problems.append(f"{where} hash must be a string, got {_type_name(value)}")
        return None
    text = _storable(value.strip().lower())
    if len(text) > 200:
        problems.append(f"{where} hash is {len(text)} characters long")
        return None
    return text


def _parse_step(step: Step, section: Any, problems: list[str]) -> StepReport | None:
    if not isinstance(section, dict):
        problems.append(f"{step} section must be an object, got {_type_name(section)}")
        return None
    status = parse_bool(section.get("status"))
    if status is None:
        problems.append(f"{step} status {_show(section.get('status'))} is not true or false")
        return None
    size: int | None = None
    try:
        size = parse_size(section.get("size"))
    except ReportRejected as exc:
        problems.append(f"{step} {exc}")
    hash_value = next((section[k] for k in _HASH_KEYS if k in section), None)
    return StepReport(
        status=status,
        start_time=_optional_timestamp(section.get("start_time"), f"{step}.start_time", problems),
        end_time=_optional_timestamp(section.get("end_time"), f"{step}.end_time", problems),
        sha256=_parse_hash(hash_value, str(step), problems),
        size=size,
        error_message=_clean_text(section.get("error_message")),
    )


def parse_database(name: str, section: Any) -> DatabaseReport:
    """One database section; defects make the section compromised, never the whole report."""
    if not isinstance(section, dict):
        return DatabaseReport(name=name, problems=(f"section must be an object, got {_type_name(section)}",))
    problems: list[str] = []
    steps: dict[Step, StepReport] = {}
    for step, keys in _STEP_KEYS.items():
        key = next((k for k in keys if k in section), None)
        if key is None:
            problems.append(f"no {step} section")
            continue
        parsed = _parse_step(step, section[key], problems)
        if parsed is not None:
            steps[step] = parsed
    staged = section.get("staged_file_name")
    if not _is_null(staged) and not isinstance(staged, str):
        problems.append(f"staged_file_name must be a string, got {_type_name(staged)}")
        staged = None
    return DatabaseReport(
        name=name,
        steps=steps,
        staged_file_name=_clean_text(staged),
        logs_summary=_clean_text(section.get("logs_summary")),
        problems=tuple(problems),
    )


def _required(payload: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in payload:
            return payload[key]
    raise ReportRejected(f"required field {keys[0]} is missing")


def parse_report(
    data: bytes,
    *,
    agent_id: str,
    as_of: datetime,
    max_age: timedelta,
    agent_tz: tzinfo = UTC,
) -> ParseOutcome:
    """Validate a report found in `agent_id`'s folder, as of `as_of`."""
    try:
        return _parse_report(data, agent_id=agent_id, as_of=as_of, max_age=max_age, agent_tz=agent_tz)
    except ReportRejected as exc:
        return ParseOutcome(report=None, reason=str(exc))


def _parse_report(
    data: bytes, *, agent_id: str, as_of: datetime, max_age: timedelta, agent_tz: tzinfo
) -> ParseOutcome:
    payload = decode_json(data)
    if not isinstance(payload, dict):
        raise ReportRejected(f"report must be a JSON object, got {_type_name(payload)}")
    end_time = parse_timestamp(
        _required(payload, "operation_end_time", "operation_timestamp"), "operation_end_time"
    )
    reported_agent = _required(payload, "agent_id")
    if not isinstance(reported_agent, str):
        raise ReportRejected(f"agent_id must be a string, got {_type_name(reported_agent)}")
    if reported_agent != agent_id:
        raise ReportRejected(f"agent_id {_show(reported_agent)} differs from its folder {agent_id!r}")
    databases = _required(payload, "databases")
    if not isinstance(databases, dict):
        raise ReportRejected(f"databases must be an object, got {_type_name(databases)}")
    ended = end_time.in_utc(agent_tz)
    if ended < as_of - max_age:
        raise ReportRejected(
            f"report is older than {max_age.days} days (operation ended {ended:%Y-%m-%d %H:%M} UTC)"
        )
    if ended > as_of + FUTURE_TOLERANCE:
        raise ReportRejected(f"operation_end_time {ended:%Y-%m-%d %H:%M} UTC is in the future")
    notes: list[str] = []
    parsed: dict[str, DatabaseReport] = {}
    for name, section in databases.items():
        if database_name_problem(name) is not None:
            notes.append(f"ignored database with unusable name {_show(name)}")
            continue
        parsed[name] = parse_database(name, section)
    start_problems: list[str] = []
    start_time = _optional_timestamp(
        payload.get("operation_start_time"), "operation_start_time", start_problems
    )
    overall = payload.get("overall_status")
    return ParseOutcome(
        report=StatusReport(
            agent_id=agent_id,
            operation_end_time=end_time,
            databases=parsed,
            operation_start_time=start_time,
            overall_status=_clean_text(overall) if isinstance(overall, str) else None,
        ),
        notes=tuple(notes + start_problems),
    )


# ---------------------------------------------------------------- stored form


def _time_json(value: ReportTime | None) -> str | None:
    return value.to_json() if value else None


def _time_from(value: str | None) -> ReportTime | None:
    return ReportTime.from_json(value) if value else None


def report_to_payload(report: StatusReport) -> dict[str, Any]:
    """The normalised report as stored (JSON-safe), keeping naive times naive."""
    return {
        "agent_id": report.agent_id,
        "operation_start_time": _time_json(report.operation_start_time),
        "operation_end_time": report.operation_end_time.to_json(),
        "overall_status": report.overall_status,
        "databases": {
            name: {
                "steps": {
                    str(step): {
                        "status": s.status,
                        "start_time": _time_json(s.start_time),
                        "end_time": _time_json(s.end_time),
                        "sha256": s.sha256,
                        "size": s.size,
                        "error_message": s.error_message,
                    }
                    for step, s in db.steps.items()
                },
                "staged_file_name": db.staged_file_name,
                "logs_summary": db.logs_summary,
                "problems": list(db.problems),
            }
            for name, db in report.databases.items()
        },
    }


class StoredDatabases(Mapping[str, DatabaseReport]):
    """A stored report's database sections, each rebuilt on first use.

    Evaluation looks at one or two databases of a report at a time; rebuilding every section of
    every loaded report would cost more than the decisions themselves.
    """

    def __init__(self, sections: dict[str, Any]) -> None:
        self._sections = sections
        self._built: dict[str, DatabaseReport] = {}

    def __getitem__(self, name: str) -> DatabaseReport:
        if name not in self._built:
            self._built[name] = _database_from_payload(name, self._sections[name])
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self._sections

    def __iter__(self) -> Iterator[str]:
        return iter(self._sections)

    def __len__(self) -> int:
        return len(self._sections)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]


def _database_from_payload(name: str, db: dict[str, Any]) -> DatabaseReport:
    return DatabaseReport(
        name=name,
        steps={
            Step(step): StepReport(
                status=s["status"],
                start_time=_time_from(s["start_time"]),
                end_time=_time_from(s["end_time"]),
                sha256=s["sha256"],
                size=s["size"],
                error_message=s["error_message"],
            )
            for step, s in db["steps"].items()
        },
        staged_file_name=db["staged_file_name"],
        logs_summary=db["logs_summary"],
        problems=tuple(db["problems"]),
    )


def report_from_payload(payload: dict[str, Any]) -> StatusReport:
    return StatusReport(
        agent_id=payload["agent_id"],
        operation_end_time=ReportTime.from_json(payload["operation_end_time"]),
        databases=StoredDatabases(payload["databases"]),  # type: ignore[arg-type]
        operation_start_time=_time_from(payload.get("operation_start_time")),
        overall_status=payload.get("overall_status"),
    )
