"""The expected jobs, declared as code in YAML and validated with errors that name the line and field."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backup_pipeline.core.domain import ContentPolicy, ExpectedJob
from backup_pipeline.core.reports import is_valid_agent_id, staged_base_name

log = logging.getLogger(__name__)
DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]{0,127}")


class JobsFileError(ValueError):
    """A jobs file that cannot be used; the message names the file, line and field."""


class JobDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_minutes: int | None = Field(default=None, ge=1, le=720)
    timezone: str = "UTC"
    content_change: ContentPolicy = ContentPolicy.CHANGED

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _check_zone(value)


class JobSpec(BaseModel):
    """One expected job as written in the jobs file."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    database_name: str
    expected_hour_utc: int = Field(ge=0, le=23)
    expected_minute_utc: int = Field(ge=0, le=59)
    window_minutes: int | None = Field(default=None, ge=1, le=720)
    timezone: str | None = None
    staged_file_name: str | None = None
    content_change: ContentPolicy | None = None

    @field_validator("agent_id")
    @classmethod
    def _agent(cls, value: str) -> str:
        if not is_valid_agent_id(value):
            raise ValueError("must look like ENTREPRISE_VILLE_QUARTIER (letters, digits, '-', 3+ '_' parts)")
        return value

    @field_validator("database_name")
    @classmethod
    def _database(cls, value: str) -> str:
        if not DATABASE_NAME_RE.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '_', '.', '$' or '-'")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _check_zone(value)

    @field_validator("staged_file_name")
    @classmethod
    def _staged(cls, value: str | None) -> str | None:
        if value is not None and staged_base_name(value) != value:
            raise ValueError("must be a plain file name (no directory part)")
        return value

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.agent_id, self.database_name, self.expected_hour_utc, self.expected_minute_utc)


class ResolvedJob(BaseModel):
    """A job with the file's defaults and the environment's window applied."""

    agent_id: str
    database_name: str
    expected_hour_utc: int
    expected_minute_utc: int
    window_minutes: int
    timezone: str
    staged_file_name: str | None
    content_change: ContentPolicy

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.agent_id, self.database_name, self.expected_hour_utc, self.expected_minute_utc)

    def to_domain(self) -> ExpectedJob:
        return to_domain_job(self)


def to_domain_job(job: Any) -> ExpectedJob:
    """An ExpectedJob from anything carrying the job's fields (a ResolvedJob or a stored row)."""
    return ExpectedJob(
        agent_id=job.agent_id,
        database_name=job.database_name,
        expected_hour_utc=job.expected_hour_utc,
        expected_minute_utc=job.expected_minute_utc,
        window_minutes=job.window_minutes,
        timezone=ZoneInfo(job.timezone),
        staged_file_name=job.staged_file_name,
        content_change=ContentPolicy(job.content_change),
    )


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Africa/Douala)") from None
    return value


def _line_of(node: yaml.Node, key: str | None) -> int:
    if key is not None and isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if getattr(key_node, "value", None) == key:
                return key_node.start_mark.line + 1
    return node.start_mark.line + 1


def _errors(exc: ValidationError, path: Path, node: yaml.Node, where: str) -> list[str]:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else None
        label = f"field {field!r}" if field else "entry"
        lines.append(f"{path}:{_line_of(node, field)}: {where}, {label}: {error['msg']}")
    return lines


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 20,000-job file loads in ~1 s


_cache: dict[tuple[str, int, int, int], list[ResolvedJob]] = {}
CACHE_VERSION = 1  # bump when ResolvedJob or the resolution rules change
DISK_CACHE_MIN_JOBS = 1000


def load_jobs_file(path: Path, default_window: int) -> list[ResolvedJob]:
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
        _cache[key] = _load_with_disk_cache(path, default_window)
    return list(_cache[key])


def _disk_cache_dir() -> Path:
    return Path(os.environ.get("BACKUP_PIPELINE_HOME") or ".backup_pipeline") / "cache"


def _load_with_disk_cache(path: Path, default_window: int) -> list[ResolvedJob]:
    """Large files: the validated jobs are kept as JSON keyed by the file's content.

    Every scan process (CLI, Dagster run worker, code server) reads the jobs file; libyaml needs
    ~1.5 s for 20,000 jobs where reading back validated JSON takes a fraction of that.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return _load_jobs_file(path, default_window)
    digest = hashlib.sha256(data + f"|{default_window}|{CACHE_VERSION}".encode()).hexdigest()
    cached = _disk_cache_dir() / f"jobs-{digest}.json"
    try:
        return [ResolvedJob.model_validate(item) for item in json.loads(cached.read_bytes())]
    except (OSError, ValueError, ValidationError):
        pass
    jobs = _load_jobs_file(path, default_window)
    if len(jobs) >= DISK_CACHE_MIN_JOBS:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            temporary = cached.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps([job.model_dump(mode="json") for job in jobs]))
            temporary.replace(cached)
        except OSError as exc:  # a read-only home only costs speed
            log.debug("cannot cache the jobs file: %s", exc)
    return jobs


def _load_jobs_file(path: Path, default_window: int) -> list[ResolvedJob]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobsFileError(
            f"jobs file {path} not found (set BACKUP_PIPELINE_JOBS_FILE or pass --file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobsFileError(f"jobs file {path} cannot be read: {exc}") from None
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


def _resolve(path: Path, document: dict[str, Any], nodes: _Nodes, default_window: int) -> list[ResolvedJob]:
    unknown = set(document) - {"defaults", "jobs"}
    if unknown:
        raise JobsFileError(
            f"{path}:{nodes.root_line()}: unknown top-level key(s): {sorted(unknown, key=str)}"
        )
    errors: list[str] = []
    defaults = JobDefaults()
    if "defaults" in document:
        try:
            defaults = JobDefaults.model_validate(document["defaults"] or {})
        except ValidationError as exc:
            errors += _errors(exc, path, nodes.section("defaults"), "defaults")
    jobs = document.get("jobs")
    if "jobs" not in document:
        if errors:
            raise JobsFileError(_invalid(errors))
        return []
    if not isinstance(jobs, list):
        raise JobsFileError(f"{path}:{nodes.section('jobs').start_mark.line + 1}: 'jobs' must be a list")
    resolved: list[ResolvedJob] = []
    seen: dict[tuple[str, str, int, int], int] = {}
    for index, item in enumerate(jobs):
        try:
            spec = JobSpec.model_validate(item)
        except ValidationError as exc:
            errors += _errors(exc, path, nodes.job(index), f"job #{index + 1}")
            continue
        if spec.key in seen:
            first, line = seen[spec.key], nodes.job(index).start_mark.line + 1
            errors.append(
                f"{path}:{line}: job #{index + 1} repeats the job declared at line "
                f"{nodes.job(first).start_mark.line + 1}"
            )
            continue
        seen[spec.key] = index
        resolved.append(_apply_defaults(spec, defaults, default_window))
    if errors:
        raise JobsFileError(_invalid(errors))
    return resolved


def _invalid(errors: list[str]) -> str:
    """One problem fits on one line; several are listed one per line."""
    if len(errors) == 1:
        return f"invalid jobs file: {errors[0]}"
    return "invalid jobs file:\n  " + "\n  ".join(errors)


def _apply_defaults(spec: JobSpec, defaults: JobDefaults, default_window: int) -> ResolvedJob:
    return ResolvedJob(
        agent_id=spec.agent_id,
        database_name=spec.database_name,
        expected_hour_utc=spec.expected_hour_utc,
        expected_minute_utc=spec.expected_minute_utc,
        window_minutes=spec.window_minutes or defaults.window_minutes or default_window,
        timezone=spec.timezone or defaults.timezone,
        staged_file_name=spec.staged_file_name,
        content_change=spec.content_change or defaults.content_change,
    )
