"""The jobs file: the expected backups, declared as code in YAML and validated with errors that name
the line and the field."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from backup_pipeline.config.schedules import check_cron, cron_schedule, overlap
from backup_pipeline.core.alerts import WEEKDAYS, MaintenanceWindow, Silence, SizePolicy
from backup_pipeline.core.domain import ContentPolicy, ExpectedBackup
from backup_pipeline.core.drills import DrillPolicy, ValidationCheck
from backup_pipeline.core.names import shared_asset_names
from backup_pipeline.core.reports import (
    MAX_AGENT_ID,
    MAX_FILE_NAME_BYTES,
    agent_id_problem,
    staged_base_name,
)
from backup_pipeline.core.schedules import Schedule
from backup_pipeline.core.sizes import parse_byte_size

log = logging.getLogger(__name__)
DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]{0,127}")


class JobsFileError(ValueError):
    """A jobs file that cannot be used; the message names the file, line and field."""


# ---------------------------------------------------------------- alerting (issue 4)

_TIME_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_DAY_GROUPS = {
    "daily": WEEKDAYS,
    "weekdays": WEEKDAYS[:5],
    "weekends": WEEKDAYS[5:],
}


def _check_notify_url(value: str) -> str:
    from backup_pipeline.adapters.notify_targets import problem

    issue = problem(value)
    if issue:
        raise ValueError(f"this notification target {issue}")
    return value.strip()


NotifyUrl = Annotated[str, AfterValidator(_check_notify_url)]


def on_off(value: Any) -> Any:
    """A settings block written `off` or `on` (or false/true): only its `enabled` field."""
    if value is False or (isinstance(value, str) and value.lower() == "off"):
        return {"enabled": False}
    if value is True or (isinstance(value, str) and value.lower() == "on"):
        return {"enabled": True}
    return value


class SizeAnomalySpec(BaseModel):
    """Size-anomaly settings of a job or of the defaults; unset fields fall back (job → defaults →
    environment). `size_anomaly: off` disables the check."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    history: int | None = Field(default=None, ge=3, le=365)
    min_history: int | None = Field(default=None, ge=3, le=365)
    below: float | None = Field(default=None, gt=0, lt=1)
    above: float | None = Field(default=None, gt=1)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return on_off(value)

    def over(self, base: SizeAnomalySpec | None) -> SizeAnomalySpec:
        """These settings, completed by `base`."""
        inherited = base.model_dump(exclude_none=True) if base else {}
        return SizeAnomalySpec(**(inherited | self.model_dump(exclude_none=True)))

    def policy(self, environment: SizePolicy) -> SizePolicy:
        history = self.history or environment.history
        return SizePolicy(
            enabled=environment.enabled if self.enabled is None else self.enabled,
            history=history,
            min_history=min(self.min_history or environment.min_history, history),
            below=self.below or environment.below,
            above=self.above or environment.above,
        )


class MaintenanceWindowSpec(BaseModel):
    """A recurring window, e.g. `{name: weekly, days: [sun], start: "00:00", end: "06:00"}`.
    `end` before `start` crosses midnight; `end: "24:00"` is the end of the day."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=80)
    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS))
    start: str
    end: str
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names:
            raise ValueError("must be a day (mon…sun, daily, weekdays, weekends) or a list of days")
        days: list[str] = []
        for name in names:
            key = str(name).strip().lower()
            if key in _DAY_GROUPS:
                days += _DAY_GROUPS[key]
            elif key[:3] in WEEKDAYS and key in (key[:3], _full_day(key[:3])):
                days.append(key[:3])
            else:
                raise ValueError(f"unknown day {name!r} (use mon, tue, wed, thu, fri, sat, sun)")
        return sorted(set(days), key=WEEKDAYS.index)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any, info: Any) -> str:
        text = value.strftime("%H:%M") if isinstance(value, time) else value
        if isinstance(text, str) and (
            _TIME_RE.match(text.strip()) or (info.field_name == "end" and text.strip() == "24:00")
        ):
            hours, minutes = text.strip().split(":")
            return f"{int(hours):02d}:{minutes}"
        raise ValueError("must be a time of day HH:MM, e.g. 06:00")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindowSpec:
        if _minutes(self.start) == _minutes(self.end) % 1440:
            raise ValueError("start and end are the same time: the window would be empty")
        return self

    def to_domain(self) -> MaintenanceWindow:
        return MaintenanceWindow(
            days=frozenset(WEEKDAYS.index(d) for d in self.days),
            start=_minutes(self.start),
            end=_minutes(self.end),
            tz=ZoneInfo(self.timezone),
            tz_name=self.timezone,
            name=self.name,
        )


def _full_day(short: str) -> str:
    return {
        "mon": "monday",
        "tue": "tuesday",
        "wed": "wednesday",
        "thu": "thursday",
        "fri": "friday",
        "sat": "saturday",
        "sun": "sunday",
    }[short]


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _instant(value: Any) -> Any:
    """`silenced_until`: an ISO date-time (naive means UTC) or a date (its midnight UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _instant(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            raise ValueError("must be an ISO-8601 date or date-time, e.g. 2025-12-01T06:00:00Z") from None
    return value


class BackupAlerting(BaseModel):
    """An expected backup's alerting configuration, resolved from the file and stored with it."""

    notify: list[str] = []
    notify_hash_mismatch: bool = True
    size_anomaly: SizeAnomalySpec = SizeAnomalySpec()
    silenced_until: datetime | None = None
    maintenance: list[MaintenanceWindowSpec] = []

    def stored(self) -> dict[str, Any]:
        """The JSON kept in expected_jobs.alerting: only what differs from the defaults."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude_none=True)

    @classmethod
    def from_stored(cls, value: dict[str, Any] | None) -> BackupAlerting:
        return cls.model_validate(value) if value else _NO_ALERTING

    def silence(self) -> Silence:
        return Silence(until=self.silenced_until, windows=tuple(w.to_domain() for w in self.maintenance))


_NO_ALERTING = BackupAlerting()


class _AlertingFields(BaseModel):
    """Alerting fields accepted both in `defaults:` and in an expected backup."""

    model_config = ConfigDict(extra="forbid")

    notify_hash_mismatch: bool | None = None
    size_anomaly: SizeAnomalySpec | None = None
    silenced_until: datetime | None = None
    maintenance: list[MaintenanceWindowSpec] | None = None

    @field_validator("silenced_until", mode="before")
    @classmethod
    def _until(cls, value: Any) -> Any:
        return _instant(value)


# ---------------------------------------------------------------- restore drills (issue 11)


def _byte_size(value: Any) -> Any:
    """A size as a number of bytes or with a unit: 20GiB, 512 MB, 1.5TiB."""
    return parse_byte_size(value) if isinstance(value, str) else value


CHECK_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .:-]{0,63}$")


class CheckSpec(BaseModel):
    """A validation query of `restore_drill.checks`: `{name, sql}`. It must return one row whose first
    column is true; `:cycle` is the cycle's expected instant."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sql: str = Field(max_length=20_000)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if isinstance(value, str) and not CHECK_NAME_RE.fullmatch(value.strip()):
            raise ValueError("must be 1-64 letters, digits, spaces or '_.:-' (a check's name)")
        return value.strip() if isinstance(value, str) else value

    @field_validator("sql")
    @classmethod
    def _sql(cls, value: str) -> str:
        if not value.strip().rstrip(";").strip():
            raise ValueError("must not be empty (a query returning one row whose first column is true)")
        return value.strip()

    def to_domain(self) -> ValidationCheck:
        return ValidationCheck(self.name, self.sql)


class RestoreDrillSpec(BaseModel):
    """`restore_drill:` of a job or of the defaults; unset fields fall back (job → defaults →
    environment; a job's `checks` replace the defaults'). `restore_drill: off` never drills the
    backup."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    every_days: int | None = Field(default=None, ge=1, le=366)
    max_minutes: float | None = Field(default=None, gt=0, le=24 * 60)
    max_bytes: int | None = Field(default=None, ge=64 * 1024**2)
    shrink_below: float | None = Field(default=None, gt=0, lt=1)
    checks: list[CheckSpec] | None = Field(default=None, max_length=50)
    objective_minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)

    def duplicate_check(self) -> tuple[int, str] | None:
        """(index, name) of the first check named like an earlier one."""
        seen: set[str] = set()
        for index, check in enumerate(self.checks or []):
            if check.name in seen:
                return index, check.name
            seen.add(check.name)
        return None

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return on_off(value)

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _byte_size(value)

    def over(self, base: RestoreDrillSpec | None) -> RestoreDrillSpec:
        inherited = base.model_dump(exclude_none=True) if base else {}
        return RestoreDrillSpec(**(inherited | self.model_dump(exclude_none=True)))

    def stored(self) -> dict[str, Any]:
        """The JSON kept in expected_jobs.restore_drill: only what the file sets."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_stored(cls, value: dict[str, Any] | None) -> RestoreDrillSpec:
        return cls.model_validate(value or {})

    def policy(self, environment: DrillPolicy) -> DrillPolicy:
        return DrillPolicy(
            enabled=environment.enabled if self.enabled is None else self.enabled,
            every_days=self.every_days or environment.every_days,
            max_minutes=self.max_minutes or environment.max_minutes,
            max_bytes=self.max_bytes or environment.max_bytes,
            shrink_below=self.shrink_below or environment.shrink_below,
            checks=tuple(c.to_domain() for c in self.checks or []),
            objective_minutes=self.objective_minutes or environment.objective_minutes,
        )


# ---------------------------------------------------------------- expected backups


class _WindowFields(BaseModel):
    """A window, symmetric (`window_minutes`) or not (`early_minutes`, `grace_minutes`): a report is
    relevant to a cycle at T when it ends within [T - early, T + grace]; the deadline is T + grace."""

    window_minutes: int | None = Field(default=None, ge=1, le=720)
    early_minutes: int | None = Field(default=None, ge=0, le=720)
    grace_minutes: int | None = Field(default=None, ge=1, le=720)

    def window_problem(self) -> tuple[str, str] | None:
        """(field, message) when one mapping sets both forms of the window."""
        if self.window_minutes is not None and (
            self.early_minutes is not None or self.grace_minutes is not None
        ):
            return "window_minutes", "give either window_minutes or early_minutes/grace_minutes, not both"
        return None


class BackupDefaults(_AlertingFields, _WindowFields):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    content_change: ContentPolicy = ContentPolicy.CHANGED
    restore_drill: RestoreDrillSpec | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _check_zone(value)


NAME_RE = re.compile(r"[A-Za-z0-9_]{1,64}")


class BackupSpec(_AlertingFields, _WindowFields):
    """One expected backup as written in the jobs file (an item of its `jobs:` list): daily at
    `expected_hour_utc`:`expected_minute_utc` UTC, or at the instants of a cron `schedule` read in
    its `timezone`."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    database_name: str
    name: str | None = None
    expected_hour_utc: int | None = Field(default=None, ge=0, le=23)
    expected_minute_utc: int | None = Field(default=None, ge=0, le=59)
    schedule: str | None = None
    timezone: str | None = None
    staged_file_name: str | None = None
    content_change: ContentPolicy | None = None
    notify: list[NotifyUrl] = []  # Apprise URLs, in addition to BACKUP_PIPELINE_NOTIFY_URLS
    restore_drill: RestoreDrillSpec | None = None

    @field_validator("agent_id")
    @classmethod
    def _agent(cls, value: str) -> str:
        problem = agent_id_problem(value)
        if problem is not None and len(value) > MAX_AGENT_ID:
            raise ValueError(f"is {len(value)} characters long; an agent id has at most {MAX_AGENT_ID}")
        if problem is not None:
            raise ValueError("must look like ENTREPRISE_VILLE_QUARTIER (letters, digits, '-', 3+ '_' parts)")
        return value

    @field_validator("database_name")
    @classmethod
    def _database(cls, value: str) -> str:
        if not DATABASE_NAME_RE.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '_', '.', '$' or '-'")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits or '_'")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _check_zone(value)

    @field_validator("staged_file_name")
    @classmethod
    def _staged(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > MAX_FILE_NAME_BYTES:
            raise ValueError(
                f"is {len(value.encode())} bytes long; a file name has at most {MAX_FILE_NAME_BYTES}"
            )
        if value is not None and staged_base_name(value) != value:
            raise ValueError("must be a plain file name (no directory part)")
        return value

    def form_problem(self) -> tuple[str, str] | None:
        """(field, message) when the job does not say when it is expected in exactly one way."""
        daily = (self.expected_hour_utc, self.expected_minute_utc)
        if self.schedule is not None:
            if daily != (None, None):
                field = "expected_hour_utc" if self.expected_hour_utc is not None else "expected_minute_utc"
                return field, "give either schedule or expected_hour_utc/expected_minute_utc, not both"
            return self.window_problem()
        if None in daily:
            field = "expected_hour_utc" if self.expected_hour_utc is None else "expected_minute_utc"
            return field, 'Field required (or give a cron schedule instead, e.g. schedule: "30 2 * * 0")'
        return self.window_problem()

    @property
    def backup_name(self) -> str:
        """Its identity beside agent and database: `name`, else HHMM for the daily-UTC form (as
        before schedules existed), else empty (one cron-scheduled backup per database unless named)."""
        if self.name is not None:
            return self.name
        if self.expected_hour_utc is not None and self.expected_minute_utc is not None:
            return f"{self.expected_hour_utc:02d}{self.expected_minute_utc:02d}"
        return ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.agent_id, self.database_name, self.backup_name)


class DeclaredBackup(BaseModel):
    """An expected backup with the file's defaults and the environment's window applied."""

    agent_id: str
    database_name: str
    name: str
    expected_hour_utc: int | None = None
    expected_minute_utc: int | None = None
    schedule: str | None = None  # a cron expression read in `timezone`; None: daily at hour:minute UTC
    early_minutes: int
    grace_minutes: int
    timezone: str
    staged_file_name: str | None
    content_change: ContentPolicy
    alerting: BackupAlerting = BackupAlerting()
    restore_drill: RestoreDrillSpec = RestoreDrillSpec()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.agent_id, self.database_name, self.name)

    def to_domain(self) -> ExpectedBackup:
        return to_expected_backup(self)

    @property
    def schedule_text(self) -> str:
        return schedule_of(self).text


def schedule_of(backup: Any) -> Schedule:
    """The schedule of anything carrying a backup's fields (a DeclaredBackup or a stored row)."""
    if backup.schedule is None:
        return Schedule.daily_utc(backup.expected_hour_utc, backup.expected_minute_utc)
    return cron_schedule(backup.schedule, backup.timezone)


def to_expected_backup(backup: Any) -> ExpectedBackup:
    """An ExpectedBackup from anything carrying its fields (a DeclaredBackup or a stored row)."""
    return ExpectedBackup(
        agent_id=backup.agent_id,
        database_name=backup.database_name,
        schedule=schedule_of(backup),
        name=backup.name,
        early_minutes=backup.early_minutes,
        grace_minutes=backup.grace_minutes,
        timezone=ZoneInfo(backup.timezone),
        staged_file_name=backup.staged_file_name,
        content_change=ContentPolicy(backup.content_change),
    )


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Africa/Douala)") from None
    return value


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The line of the deepest YAML node along a validation error's location."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((pair for pair in node.value if getattr(pair[0], "value", None) == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_label(loc: tuple[Any, ...]) -> str:
    """('maintenance', 0, 'start') -> maintenance[0].start"""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _errors(exc: ValidationError, path: Path, node: yaml.Node, where: str) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        label = f"field {_field_label(loc)!r}" if loc else "entry"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}:{_line_of(node, loc)}: {where}, {label}: {message}")
    return lines


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 20,000-job file loads in ~1 s


class _Loader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """YAML 1.1 without base-60 integers (`end: 23:30` is a time of day, not the number 1410), and
    without silently keeping the last of two equal keys (a job written `expected_hour_utc` twice
    would be expected at whichever came last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                line = first_line.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if line != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {line})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT_TAG]
    for first, resolvers in _BASE_LOADER.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_LOADER = _Loader


_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,40}")
_cache: dict[tuple[str, int, int, int], list[DeclaredBackup]] = {}
CACHE_VERSION = 6  # bump when DeclaredBackup or resolution rules change (6: asset names, checks, objectives)
DISK_CACHE_MIN_BACKUPS = 1000


def load_jobs_file(path: Path, default_window: int, cache_dir: Path | None = None) -> list[DeclaredBackup]:
    """Read and validate a jobs file; raise JobsFileError listing every problem with its line.

    The result is kept while the file is unchanged: a scan reads it in several places, and a
    fleet's file of 20,000 jobs takes seconds to parse.
    """
    try:
        st = path.stat()
    except OSError:
        return _load_jobs_file(path, default_window)  # reports the missing or unreadable file
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, default_window)
    if key not in _cache:
        _cache.clear()
        _cache[key] = _load_with_disk_cache(path, default_window, cache_dir)
    return list(_cache[key])


# A fleet's file of 20,000 jobs is a few MiB: anything far larger is not a jobs file.
MAX_JOBS_FILE_BYTES = 64 << 20


def read_jobs_file(path: Path) -> bytes:
    """The bytes of a jobs file; JobsFileError (one line) when it is missing, not a regular file (a
    device, a FIFO: never opened) or larger than MAX_JOBS_FILE_BYTES (never read)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise JobsFileError(
            f"jobs file {path} not found (BACKUP_PIPELINE_JOBS_FILE names it, in the environment or a .env)"
        ) from None
    except OSError as exc:
        raise JobsFileError(f"jobs file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise JobsFileError(f"jobs file {path} is not a regular file (not read)")
    if st.st_size > MAX_JOBS_FILE_BYTES:
        raise JobsFileError(
            f"jobs file {path} is {st.st_size} bytes, above the {MAX_JOBS_FILE_BYTES}-byte limit (not read)"
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JOBS_FILE_BYTES + 1)
    except OSError as exc:
        raise JobsFileError(f"jobs file {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_JOBS_FILE_BYTES:
        raise JobsFileError(f"jobs file {path} grew past the {MAX_JOBS_FILE_BYTES}-byte limit (not read)")
    return data


def jobs_file_digest(path: Path, default_window: int) -> str | None:
    """What the resolved jobs depend on (the file's bytes and the default window), or None when the
    file cannot be read (loading it then says why)."""
    try:
        return _digest(read_jobs_file(path), default_window)
    except JobsFileError:
        return None


def _digest(data: bytes, default_window: int) -> str:
    return hashlib.sha256(data + f"|{default_window}|{CACHE_VERSION}".encode()).hexdigest()


def _load_with_disk_cache(path: Path, default_window: int, cache_dir: Path | None) -> list[DeclaredBackup]:
    """Large files: the validated backups are kept as JSON under `cache_dir`, keyed by the file's
    content.

    Every scan process (CLI, Dagster run worker, code server) reads the jobs file; libyaml needs
    ~1.5 s for 20,000 jobs where reading back validated JSON takes a fraction of that.
    """
    data = read_jobs_file(path)
    if cache_dir is None:
        return _load_jobs_file(path, default_window, data)
    digest = _digest(data, default_window)
    cached = cache_dir / f"jobs-{digest}.json"
    try:
        return [DeclaredBackup.model_validate(item) for item in json.loads(cached.read_bytes())]
    except (OSError, ValueError, ValidationError):
        pass
    backups = _load_jobs_file(path, default_window, data)
    if len(backups) >= DISK_CACHE_MIN_BACKUPS:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            temporary = cached.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps([b.model_dump(mode="json") for b in backups]))
            temporary.replace(cached)
        except OSError as exc:  # a read-only home only costs speed
            log.debug("cannot cache the jobs file: %s", exc)
    return backups


def _load_jobs_file(path: Path, default_window: int, data: bytes | None = None) -> list[DeclaredBackup]:
    if data is None:
        data = read_jobs_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobsFileError(
            f"jobs file {path} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    try:
        document = yaml.load(text, Loader=_LOADER)  # safe: refuses !!python tags
    except (yaml.YAMLError, TypeError) as exc:  # TypeError: unhashable keys such as lists
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise JobsFileError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if document is None:
        return []
    nodes = _Nodes(text)
    if not isinstance(document, dict):
        raise JobsFileError(f"{path}:{nodes.root_line()}: expected a mapping with 'defaults' and 'jobs'")
    return _resolve(path, document, nodes, default_window)


class _Nodes:
    """Line numbers for error messages, composed from the text only when an error needs one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._root: yaml.Node | None = None

    def root(self) -> yaml.Node:
        if self._root is None:
            self._root = yaml.compose(self.text, Loader=_LOADER)
        return self._root

    def root_line(self) -> int:
        return self.root().start_mark.line + 1

    def section(self, name: str) -> yaml.Node:
        root = self.root()
        for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
            if key.value == name:
                return value
        return root

    def job(self, index: int) -> yaml.Node:
        jobs = self.section("jobs")
        return jobs.value[index] if isinstance(jobs, yaml.SequenceNode) else jobs


def _resolve(
    path: Path, document: dict[str, Any], nodes: _Nodes, default_window: int
) -> list[DeclaredBackup]:
    unknown = set(document) - {"defaults", "jobs"}
    if unknown:
        # Named when they look like keys (a typo); a file that is no jobs file is never quoted.
        names = sorted((k for k in unknown if isinstance(k, str) and _KEY_LIKE.fullmatch(k)), key=str)
        others = len(unknown) - len(names)
        said = f"unknown top-level key(s): {names}" if names else "unknown top-level keys"
        if others:
            said += f"{' and' if names else ':'} {others} that are not names (is this a jobs file?)"
        raise JobsFileError(f"{path}:{nodes.root_line()}: {said}")
    errors: list[str] = []
    defaults = BackupDefaults()
    if "defaults" in document:
        try:
            defaults = BackupDefaults.model_validate(document["defaults"] or {})
        except ValidationError as exc:
            errors += _errors(exc, path, nodes.section("defaults"), "defaults")
        if problem := defaults.window_problem():
            errors.append(_field_error(path, nodes.section("defaults"), "defaults", *problem))
        if problem_text := _duplicate_check(
            defaults.restore_drill, path, nodes.section("defaults"), "defaults"
        ):
            errors.append(problem_text)
    jobs = document.get("jobs")
    if "jobs" not in document:
        if errors:
            raise JobsFileError(_invalid(errors))
        return []
    if not isinstance(jobs, list):
        raise JobsFileError(f"{path}:{nodes.section('jobs').start_mark.line + 1}: 'jobs' must be a list")
    resolved: list[DeclaredBackup] = []
    indices: list[int] = []  # each resolved backup's job index, for the asset-name check below
    seen: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(jobs):
        where = f"job #{index + 1}"
        try:
            spec = BackupSpec.model_validate(item)
        except ValidationError as exc:
            errors += _errors(exc, path, nodes.job(index), where)
            continue
        if problem := spec.form_problem():
            errors.append(_field_error(path, nodes.job(index), where, *problem))
            continue
        if problem_text := _duplicate_check(spec.restore_drill, path, nodes.job(index), where):
            errors.append(problem_text)
            continue
        if spec.key in seen:
            first, line = seen[spec.key], nodes.job(index).start_mark.line + 1
            errors.append(
                f"{path}:{line}: {where} repeats the job declared at line "
                f"{nodes.job(first).start_mark.line + 1} (same agent, database and name"
                f"{'' if spec.name else '; give one of them a `name:`'})"
            )
            continue
        seen[spec.key] = index
        backup = _apply_defaults(spec, defaults, default_window)
        if backup.schedule is not None and (
            problem_text := overlap(schedule_of(backup), backup.early_minutes, backup.grace_minutes)
        ):
            errors.append(_field_error(path, nodes.job(index), where, "schedule", problem_text))
            continue
        resolved.append(backup)
        indices.append(index)
    errors += _shared_asset_names(path, nodes, resolved, indices)
    if errors:
        raise JobsFileError(_invalid(errors))
    return resolved


def _shared_asset_names(
    path: Path, nodes: _Nodes, backups: list[DeclaredBackup], indices: list[int]
) -> list[str]:
    """Two expected backups that Dagster would show as one asset (names that differ only in what an
    asset key cannot hold): refused, never merged."""
    errors = []
    for shared in shared_asset_names(b.key for b in backups):
        first, second = indices[shared.first], indices[shared.second]
        a, b = backups[shared.first], backups[shared.second]
        what = "agents" if len(shared.path) == 2 else "expected backups"
        errors.append(
            f"{path}:{nodes.job(second).start_mark.line + 1}: job #{second + 1} ({_identity(b)}) and job "
            f"#{first + 1} at line {nodes.job(first).start_mark.line + 1} ({_identity(a)}) would share the "
            f"Dagster asset `{'/'.join(shared.path)}`: rename one of these {what} (asset keys keep letters, "
            "digits and `_` only)"
        )
    return errors


def _identity(backup: DeclaredBackup) -> str:
    name = f", name {backup.name!r}" if backup.name else ""
    return f"agent {backup.agent_id!r}, database {backup.database_name!r}{name}"


def _duplicate_check(spec: RestoreDrillSpec | None, path: Path, node: yaml.Node, where: str) -> str | None:
    """Two checks of one `restore_drill:` with one name: the second one's line."""
    found = spec.duplicate_check() if spec is not None else None
    if found is None:
        return None
    index, name = found
    line = _line_of(node, ("restore_drill", "checks", index))
    return (
        f"{path}:{line}: {where}, field 'restore_drill.checks[{index}].name': a second check named "
        f"{name!r} (each check of a backup needs a name of its own)"
    )


def _invalid(errors: list[str]) -> str:
    """One problem fits on one line; several are listed one per line."""
    if len(errors) == 1:
        return f"invalid jobs file: {errors[0]}"
    return "invalid jobs file:\n  " + "\n  ".join(errors)


def _field_error(path: Path, node: yaml.Node, where: str, field: str, message: str) -> str:
    return f"{path}:{_line_of(node, (field,))}: {where}, field {field!r}: {message}"


def _side(side: str, spec: BackupSpec, defaults: BackupDefaults, default_window: int) -> int:
    """One side of the window: the job's own, else the file's defaults, else the environment's
    symmetric window (`window_minutes` sets both sides)."""
    for fields in (spec, defaults):
        for value in (getattr(fields, side), fields.window_minutes):
            if value is not None:
                return int(value)
    return default_window


def _apply_defaults(spec: BackupSpec, defaults: BackupDefaults, default_window: int) -> DeclaredBackup:
    return DeclaredBackup(
        agent_id=spec.agent_id,
        database_name=spec.database_name,
        name=spec.backup_name,
        expected_hour_utc=spec.expected_hour_utc,
        expected_minute_utc=spec.expected_minute_utc,
        schedule=spec.schedule,
        early_minutes=_side("early_minutes", spec, defaults, default_window),
        grace_minutes=_side("grace_minutes", spec, defaults, default_window),
        timezone=spec.timezone or defaults.timezone,
        staged_file_name=spec.staged_file_name,
        content_change=spec.content_change or defaults.content_change,
        alerting=_alerting(spec, defaults),
        restore_drill=(spec.restore_drill or RestoreDrillSpec()).over(defaults.restore_drill),
    )


def _alerting(spec: BackupSpec, defaults: BackupDefaults) -> BackupAlerting:
    """The job's alerting settings: its own values, else the file's defaults."""
    if not (spec.model_fields_set & _ALERTING_FIELDS or defaults.model_fields_set & _ALERTING_FIELDS):
        return _NO_ALERTING
    size = spec.size_anomaly or SizeAnomalySpec()
    return BackupAlerting(
        notify=spec.notify,
        notify_hash_mismatch=next(
            (v for v in (spec.notify_hash_mismatch, defaults.notify_hash_mismatch) if v is not None), True
        ),
        size_anomaly=size.over(defaults.size_anomaly),
        silenced_until=spec.silenced_until or defaults.silenced_until,
        maintenance=spec.maintenance if spec.maintenance is not None else (defaults.maintenance or []),
    )


_ALERTING_FIELDS = {"notify", *_AlertingFields.model_fields}
