"""An agent simulator: writes a realistic deposit tree and the matching jobs file.

Each simulated agent runs one operation per day for all its databases, dumps and compresses them
(gzip or zstd), stages them under `database/`, and drops one report in `log/` in either the
canonical v2 format or the loose format real agents write. A fraction of database-cycles gets one
of the failure kinds of DESIGN.md §5; the intended outcome of every cycle is written to
`expected_outcomes.json` so tests and demos can check the scanner against the simulator's intent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
import zstandard

COMPANIES = ["SIRPACAM", "SOCIA", "CAMTEL", "ORANGE", "EDEN", "BRASSCO", "SABC", "NEXTEL"]
CITIES = ["DOUALA", "YAOUNDE", "BAFOUSSAM", "GAROUA", "BAMENDA", "LIMBE", "KRIBI", "EDEA"]
QUARTERS = ["NEWBELL", "AKWA", "BONAPRISO", "BASTOS", "CAMPUS", "GARE", "MARCHE", "PORT"]
DATABASES = ["compta_db", "paie_db", "stock_db", "ventes_db", "clients_db", "rh_db", "achats_db", "crm_db"]
FIELD_TZ = "Africa/Douala"
FAULTS = (
    "missing_database",  # MISSING: the report does not list the database
    "failed_backup",  # FAILED
    "failed_transfer",  # FAILED
    "hash_mismatch",  # TRANSFER_INTEGRITY_FAILED
    "size_mismatch",  # TRANSFER_INTEGRITY_FAILED
    "absent_file",  # TRANSFER_INTEGRITY_FAILED
    "corrupt_archive",  # FAILED (archive corrupt)
    "content_changed",  # HASH_MISMATCH under the default `changed` policy
)
EXPECTED = {
    None: "SUCCESS",
    "missing_database": "MISSING",
    "failed_backup": "FAILED",
    "failed_transfer": "FAILED",
    "hash_mismatch": "TRANSFER_INTEGRITY_FAILED",
    "size_mismatch": "TRANSFER_INTEGRITY_FAILED",
    "absent_file": "TRANSFER_INTEGRITY_FAILED",
    "corrupt_archive": "FAILED",
    "content_changed": "HASH_MISMATCH",
    "invalid_report": "FAILED",
    "no_report": "MISSING",
}


@dataclass(frozen=True)
class SimulationSpec:
    root: Path
    agents: int = 3
    databases: int = 4
    days: int = 1
    size: int = 64 * 1024
    compression: str = "gz"  # gz | zst
    style: str = "mixed"  # canonical | field | mixed
    faults: float = 0.0
    seed: int = 0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    jobs_file: Path | None = None


@dataclass
class SimulationResult:
    root: Path
    jobs_file: Path
    agents: list[str]
    reports: int = 0
    dumps: int = 0
    dump_bytes: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    # content version of each (agent, database)'s last successful cycle, to predict HASH_MISMATCH
    last_success_version: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Agent:
    agent_id: str
    style: str
    hour: int
    minute: int
    databases: tuple[str, ...]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(FIELD_TZ if self.style == "field" else "UTC")


def agent_names(count: int, rng: random.Random) -> list[str]:
    names: list[str] = []
    combos = [(c, v, q) for c in COMPANIES for v in CITIES for q in QUARTERS]
    rng.shuffle(combos)
    for i in range(count):
        company, city, quarter = combos[i % len(combos)]
        suffix = f"_{i // len(combos) + 1}" if i >= len(combos) else ""
        names.append(f"{company}_{city}_{quarter}{suffix}")
    return names


def database_names(count: int) -> list[str]:
    return [DATABASES[i] if i < len(DATABASES) else f"base_{i + 1:03d}_db" for i in range(count)]


def simulate(spec: SimulationSpec, on_agent: Callable[[], object] | None = None) -> SimulationResult:
    """Write the deposit tree, the jobs file and the intended outcomes; `on_agent` is called as each
    agent's cycles are written (progress)."""
    rng = random.Random(spec.seed)
    spec.root.mkdir(parents=True, exist_ok=True)
    agents = [
        _Agent(
            agent_id=name,
            style=spec.style if spec.style != "mixed" else ("canonical" if i % 2 == 0 else "field"),
            hour=rng.choice([1, 2, 13, 20, 22]),
            minute=rng.choice([0, 15, 30, 45]),
            databases=tuple(database_names(spec.databases)),
        )
        for i, name in enumerate(agent_names(spec.agents, rng))
    ]
    jobs_file = spec.jobs_file or spec.root / "jobs.yaml"
    result = SimulationResult(root=spec.root, jobs_file=jobs_file, agents=[a.agent_id for a in agents])
    for agent in agents:
        for offset in range(spec.days - 1, -1, -1):
            _simulate_cycle(spec, rng, agent, spec.at.date() - timedelta(days=offset), result)
        if on_agent is not None:
            on_agent()
    _write_jobs_file(jobs_file, agents)
    if spec.faults > 0:
        stray = spec.root / "incoming_tmp" / "log"
        stray.mkdir(parents=True, exist_ok=True)
        (stray / "notes.json").write_text("{}")
    (spec.root / "expected_outcomes.json").write_text(json.dumps(result.outcomes, indent=1))
    return result


def _cycle_at(agent: _Agent, day: date) -> datetime:
    return datetime(day.year, day.month, day.day, agent.hour, agent.minute, tzinfo=UTC)


def _simulate_cycle(
    spec: SimulationSpec, rng: random.Random, agent: _Agent, day: date, result: SimulationResult
) -> None:
    expected_at = _cycle_at(agent, day)
    end = expected_at + timedelta(minutes=rng.randint(-20, 25), seconds=rng.randint(0, 59))
    if end > spec.at:
        return  # this cycle's operation has not happened yet
    agent_fault = _agent_fault(rng, spec.faults)
    databases: dict[str, Any] = {}
    start = end - timedelta(minutes=30)
    for db in agent.databases:
        fault = None if agent_fault else _db_fault(rng, spec.faults)
        section = _simulate_database(spec, agent, db, day, start, end, fault, result)
        if section is not None:
            databases[db] = section
        result.outcomes.append(
            {
                "agent_id": agent.agent_id,
                "database_name": db,
                "cycle_expected_at": expected_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "fault": agent_fault or fault,
                "expected_status": _expected(result, agent, db, day, agent_fault or fault),
            }
        )
    if agent_fault == "no_report":
        return
    _write_report(agent, start, end, databases, agent_fault == "invalid_report", spec.root)
    result.reports += 1


def _content_version(day: date, fault: str | None) -> int:
    return (day - date(2000, 1, 1)).days if fault == "content_changed" else 0


def _expected(result: SimulationResult, agent: _Agent, db: str, day: date, fault: str | None) -> str:
    """The status the scanner should give, following the default `changed` content policy."""
    status = EXPECTED[fault]
    if status not in ("SUCCESS", "HASH_MISMATCH"):
        return status
    version = _content_version(day, fault)
    previous = result.last_success_version.get((agent.agent_id, db))
    result.last_success_version[(agent.agent_id, db)] = version
    return "SUCCESS" if previous is None or previous == version else "HASH_MISMATCH"


def _agent_fault(rng: random.Random, fraction: float) -> str | None:
    if fraction > 0 and rng.random() < fraction / 4:
        return rng.choice(["no_report", "invalid_report"])
    return None


def _db_fault(rng: random.Random, fraction: float) -> str | None:
    return rng.choice(FAULTS) if fraction > 0 and rng.random() < fraction else None


def dump_content(agent_id: str, db: str, size: int, version: int = 0) -> bytes:
    """A deterministic SQL-like dump of about `size` bytes for (agent, database, content version)."""
    rng = random.Random(f"{agent_id}/{db}/{version}")
    header = f"-- dump of {db} on {agent_id}\nCREATE TABLE t (id bigint, label text, amount numeric);\n"
    rows = [
        f"INSERT INTO t VALUES ({i}, '{rng.choice(DATABASES)}-{rng.randrange(10**6)}', "
        f"{rng.random() * 1e4:.2f});\n"
        for i in range(min(2048, size // 40 + 1))
    ]
    block = "".join(rows).encode()
    out = io.BytesIO()
    out.write(header.encode())
    counter = 0
    while out.tell() < size:
        out.write(f"-- block {counter}\n".encode())
        out.write(block[: size - out.tell()] if size - out.tell() < len(block) else block)
        counter += 1
    return out.getvalue()[: max(size, len(header))]


def compress(data: bytes, kind: str, mtime: float) -> bytes:
    if kind == "zst":
        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    return gzip.compress(data, compresslevel=6, mtime=int(mtime))


def _staged_name(spec: SimulationSpec, db: str, day: date) -> str:
    """One file per day when several days are simulated, so every cycle stays verifiable."""
    ext = ".zst" if spec.compression == "zst" else ".sql.gz"
    return f"{db}_{day:%Y%m%d}{ext}" if spec.days > 1 else f"{db}{ext}"


def _simulate_database(
    spec: SimulationSpec,
    agent: _Agent,
    db: str,
    day: date,
    start: datetime,
    end: datetime,
    fault: str | None,
    result: SimulationResult,
) -> dict[str, Any] | None:
    if fault == "missing_database":
        return None
    raw = dump_content(agent.agent_id, db, spec.size, _content_version(day, fault))
    packed = compress(raw, spec.compression, end.timestamp())
    name = _staged_name(spec, db, day)
    steps_ok = fault not in ("failed_backup", "failed_transfer")
    agent_hash = hashlib.sha256(packed).hexdigest()
    agent_size = len(packed)
    if fault == "corrupt_archive":
        packed = packed[: max(10, len(packed) // 2)]
        agent_hash, agent_size = hashlib.sha256(packed).hexdigest(), len(packed)
    written = packed
    if fault == "hash_mismatch":
        written = bytearray(packed)
        written[len(written) // 2] ^= 0xFF
        written = bytes(written)
    elif fault == "size_mismatch":
        agent_size += 1024
    if steps_ok and fault != "absent_file":
        staged = spec.root / agent.agent_id / "database" / name
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(written)
        os.utime(staged, (end.timestamp(), end.timestamp()))
        result.dumps += 1
        result.dump_bytes += len(written)
    return _section(agent, name, start, end, raw, agent_hash, agent_size, fault)


def _section(
    agent: _Agent,
    name: str,
    start: datetime,
    end: datetime,
    raw: bytes,
    agent_hash: str,
    agent_size: int,
    fault: str | None,
) -> dict[str, Any]:
    backup_ok = fault != "failed_backup"
    transfer_ok = fault != "failed_transfer"
    field_style = agent.style == "field"

    def t(moment: datetime) -> str:
        if field_style:
            return (
                moment.astimezone(agent.tz).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            )
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def b(value: bool) -> Any:
        return str(value) if field_style else value

    def n(value: int) -> Any:
        return str(value) if field_style else value

    hash_key = "sha256" if field_style else "sha256_checksum"
    error = None if transfer_ok else "connection reset by peer during upload"
    section: dict[str, Any] = {
        "BACKUP": {
            "status": b(backup_ok),
            "start_time": t(start),
            "end_time": t(start + timedelta(minutes=5)),
            hash_key: hashlib.sha256(raw).hexdigest() if backup_ok else ("" if field_style else None),
            "size": n(len(raw) if backup_ok else 0),
        },
        "COMPRESS": {
            "status": b(backup_ok),
            "start_time": t(start + timedelta(minutes=6)),
            "end_time": t(start + timedelta(minutes=15)),
            hash_key: agent_hash if backup_ok else ("" if field_style else None),
            "size": n(agent_size if backup_ok else 0),
        },
        "TRANSFER": {
            "status": b(backup_ok and transfer_ok),
            "start_time": t(end - timedelta(minutes=3)),
            "end_time": t(end - timedelta(seconds=5)),
            "error_message": error if error or not field_style else "null",
        },
        "staged_file_name": f"/home/agent/Backup/{name}" if field_style else name,
    }
    if not backup_ok:
        section["logs_summary"] = "pg_dump: error: connection to server failed: FATAL: role does not exist"
    return section


def _write_report(
    agent: _Agent, start: datetime, end: datetime, databases: dict[str, Any], invalid: bool, root: Path
) -> None:
    log_dir = root / agent.agent_id / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    if agent.style == "field":
        local_end = end.astimezone(agent.tz)
        name = f"{local_end:%Y-%m-%d_%H-%M-%S}_{agent.agent_id}.json"
        report: dict[str, Any] = {
            "operation_start_time": start.astimezone(agent.tz).replace(tzinfo=None).isoformat(sep=" "),
            "operation_end_time": local_end.replace(tzinfo=None).isoformat(sep=" "),
            "agent_id": agent.agent_id,
            "databases": databases,
        }
    else:
        name = f"{end:%Y%m%d_%H%M%S}_{agent.agent_id}.json"
        report = {
            "operation_start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operation_end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "agent_id": agent.agent_id,
            "overall_status": "completed",
            "databases": databases,
        }
    text = json.dumps(report, indent=2)
    if invalid:
        text = text[: len(text) // 2]  # an upload cut short: truncated JSON
    path = log_dir / name
    path.write_text(text)
    os.utime(path, (end.timestamp(), end.timestamp()))


def _write_jobs_file(path: Path, agents: list[_Agent]) -> None:
    jobs = []
    for agent in agents:
        for db in agent.databases:
            job: dict[str, Any] = {
                "agent_id": agent.agent_id,
                "database_name": db,
                "expected_hour_utc": agent.hour,
                "expected_minute_utc": agent.minute,
            }
            if agent.style == "field":
                job["timezone"] = FIELD_TZ
            jobs.append(job)
    document = {
        "defaults": {"window_minutes": 60, "timezone": "UTC", "content_change": "changed"},
        "jobs": jobs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=200))
