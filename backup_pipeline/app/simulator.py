"""An agent simulator: writes a realistic deposit tree and the matching jobs file.

Each simulated agent runs one operation per day for all its databases, dumps and compresses them
(gzip or zstd), stages them under `database/`, and drops one report in `log/` in either the
canonical v2 format or the loose format real agents write. A fraction of database-cycles gets one
of the failure kinds of docs/design.md §5; the intended outcome of every cycle is written to
`expected_outcomes.json` so tests and demos can check the scanner against the simulator's intent.

Dumps are SQL-like text by default (fast: what scans measure). With `dumps="real"` they are real
dumps of small real databases (`sample_databases`): pg_dump's plain SQL or custom-format archives,
and mariadb-dump's SQL where this machine has MariaDB's binaries; a fraction (`drill_faults`) of the
good cycles gets one of the failure kinds of restore drills: a dump truncated mid-statement (yet a
valid gzip/zstd stream), the dump of the wrong database, an empty schema, a custom archive with a
damaged table of contents, a MySQL 8 dump of a dialect MariaDB lacks, a shrunk database.
`expected_drill` then says what a restore drill of each good cycle should find when the cycles are
drilled in order.
"""

from __future__ import annotations

import contextlib
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

from backup_pipeline.app.sample_databases import MariadbSampleServer, SampleDatabase, SampleServer
from backup_pipeline.drill.restore import DrillEnvironment

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
# Restore-drill failure kinds (real dumps only) and what a drill of the cycle finds.
DRILL_FAULTS = (
    "truncated_dump",  # cut mid-statement, then compressed whole: the archive is sound
    "wrong_database",  # the dump of another database
    "empty_schema",  # a database without any table
    "damaged_toc",  # a custom archive whose table of contents is zeroed (custom format only)
    "mysql_dump",  # a MySQL 8 dump of a dialect MariaDB lacks
    "shrunk_database",  # a tenth of the rows
)
EXPECTED_DRILL = {
    None: "RESTORED",
    "truncated_dump": "RESTORE_FAILED",
    "wrong_database": "RESTORE_FAILED",
    "empty_schema": "RESTORE_FAILED",
    "damaged_toc": "RESTORE_FAILED",
    "mysql_dump": "NOT_DRILLABLE",
    "shrunk_database": "RESTORE_SHRANK",  # restored, far smaller than the previous drill
}
HISTORY_FAULTS = ("wrong_database", "shrunk_database")  # told by comparison with an earlier drill


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
    dumps: str = "synthetic"  # synthetic | real (pg_dump or mariadb-dump of small real databases)
    dump_format: str = "mixed"  # real dumps: plain | custom | mariadb | mixed (by database)
    drill_faults: float = 0.0  # real dumps: fraction of good cycles given a drill failure kind


@dataclass
class SimulationResult:
    root: Path
    jobs_file: Path
    agents: list[str]
    reports: int = 0
    dumps: int = 0
    dump_bytes: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    # content of each (agent, database)'s last successful cycle, to predict HASH_MISMATCH
    last_success_version: dict[tuple[str, str], object] = field(default_factory=dict)
    # (agent, database) that have a cycle a drill restores: later drills are compared with it
    restorable: set[tuple[str, str]] = field(default_factory=set)


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


def simulate(
    spec: SimulationSpec,
    environment: DrillEnvironment | None = None,
    on_agent: Callable[[], object] | None = None,
) -> SimulationResult:
    """Write the deposit tree, the jobs file and the intended outcomes; real dumps need the drills'
    environment (binaries, user, folder); `on_agent` is called as each agent's cycles are written
    (progress)."""
    if spec.dumps == "real":
        if environment is None:
            raise ValueError("real dumps need PostgreSQL binaries: pass the drill environment")
        mariadb = environment.mariadb is not None and environment.mariadb.tools is not None
        if spec.dump_format == "mariadb" and not mariadb:
            missing = environment.mariadb.missing if environment.mariadb else "no MariaDB binaries"
            raise ValueError(f"MariaDB dumps need MariaDB's binaries: {missing}")
        with SampleServer(environment) as server, contextlib.ExitStack() as stack:
            other = stack.enter_context(MariadbSampleServer(environment)) if mariadb else None
            return _simulate(spec, _RealDumps(spec, server, other), on_agent)
    return _simulate(spec, None, on_agent)


def _simulate(
    spec: SimulationSpec, real: _RealDumps | None, on_agent: Callable[[], object] | None
) -> SimulationResult:
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
            _simulate_cycle(spec, rng, agent, spec.at.date() - timedelta(days=offset), result, real)
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
    spec: SimulationSpec,
    rng: random.Random,
    agent: _Agent,
    day: date,
    result: SimulationResult,
    real: _RealDumps | None = None,
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
        drill_fault = (
            real.fault(agent, db, result) if real is not None and not (agent_fault or fault) else None
        )
        dump = real.dump(agent, db, day, fault, drill_fault) if real is not None else None
        section = _simulate_database(spec, agent, db, day, start, end, fault, result, dump)
        if section is not None:
            databases[db] = section
        content = hashlib.sha256(dump.raw).hexdigest() if dump is not None else _content_version(day, fault)
        outcome = {
            "agent_id": agent.agent_id,
            "database_name": db,
            "cycle_expected_at": expected_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fault": agent_fault or fault,
            "expected_status": _expected(result, agent, db, agent_fault or fault, content),
        }
        if real is not None:
            outcome |= real.expectation(agent, db, outcome["expected_status"], drill_fault, result)
        result.outcomes.append(outcome)
    if agent_fault == "no_report":
        return
    _write_report(agent, start, end, databases, agent_fault == "invalid_report", spec.root)
    result.reports += 1


def _content_version(day: date, fault: str | None) -> int:
    return (day - date(2000, 1, 1)).days if fault == "content_changed" else 0


def _expected(result: SimulationResult, agent: _Agent, db: str, fault: str | None, version: object) -> str:
    """The status the scanner should give, following the default `changed` content policy."""
    status = EXPECTED[fault]
    if status not in ("SUCCESS", "HASH_MISMATCH"):
        return status
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


def _staged_name(spec: SimulationSpec, db: str, day: date, dump: _Dump | None = None) -> str:
    """One file per day when several days are simulated, so every cycle stays verifiable."""
    ext = ".zst" if spec.compression == "zst" else ".sql.gz"
    if dump is not None:
        ext = (".dump" if dump.format == "custom" else ".sql") + (
            ".zst" if spec.compression == "zst" else ".gz"
        )
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
    dump: _Dump | None = None,
) -> dict[str, Any] | None:
    if fault == "missing_database":
        return None
    if dump is not None:
        raw = dump.raw
    else:
        raw = dump_content(agent.agent_id, db, spec.size, _content_version(day, fault))
    packed = compress(raw, spec.compression, end.timestamp())
    name = _staged_name(spec, db, day, dump)
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


# ---------------------------------------------------------------- real dumps


@dataclass(frozen=True)
class _Dump:
    raw: bytes  # what the agent's pg_dump or mariadb-dump wrote (compressed afterwards like any dump)
    format: str  # plain | custom | mariadb


MYSQL_DUMP = """-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
--
-- Host: localhost    Database: {db}
-- ------------------------------------------------------
-- Server version\t8.0.36

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!50503 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `customers`;
CREATE TABLE `customers` (
  `id` int NOT NULL,
  `name` varchar(200) COLLATE utf8mb4_0900_ai_ci NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
LOCK TABLES `customers` WRITE;
INSERT INTO `customers` VALUES (1,'customer 1'),(2,'customer 2'),(3,'customer 3');
UNLOCK TABLES;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;

-- Dump completed on {day} 13:00:00
"""


class _RealDumps:
    """pg_dump (or mariadb-dump) output for each simulated database cycle, built once per distinct
    content."""

    def __init__(
        self, spec: SimulationSpec, server: SampleServer, mariadb: MariadbSampleServer | None
    ) -> None:
        self.spec, self.server, self.mariadb = spec, server, mariadb
        self.rng = random.Random(f"{spec.seed}/drills")  # apart: the scan's faults stay as they were
        self.rows = max(20, spec.size // 60)
        self._dumps: dict[tuple[Any, ...], bytes] = {}

    def format_of(self, agent: _Agent, db: str) -> str:
        if self.spec.dump_format != "mixed":
            return self.spec.dump_format
        index = agent.databases.index(db)
        if self.mariadb is not None and index % 3 == 2:
            return "mariadb"
        return "custom" if index % 2 else "plain"

    def fault(self, agent: _Agent, db: str, result: SimulationResult) -> str | None:
        if self.spec.drill_faults <= 0 or self.rng.random() >= self.spec.drill_faults:
            return None
        kinds = [k for k in DRILL_FAULTS if k != "damaged_toc" or self.format_of(agent, db) == "custom"]
        if (agent.agent_id, db) not in result.restorable:
            kinds = [k for k in kinds if k not in HISTORY_FAULTS]
        return self.rng.choice(kinds)

    def dump(self, agent: _Agent, db: str, day: date, fault: str | None, drill_fault: str | None) -> _Dump:
        fmt = self.format_of(agent, db)
        if drill_fault == "mysql_dump":
            return _Dump(MYSQL_DUMP.format(db=db, day=day).encode(), "plain")
        sample = SampleDatabase(db, rows=self.rows, version=_content_version(day, fault))
        if drill_fault == "wrong_database":
            sample = SampleDatabase(f"{db}_other", rows=self.rows, version=sample.version)
        elif drill_fault == "empty_schema":
            sample = SampleDatabase(db, empty=True)
        elif drill_fault == "shrunk_database":
            sample = SampleDatabase(db, rows=max(2, self.rows // 10), version=sample.version)
        raw = self._dump(sample, fmt)
        if drill_fault == "truncated_dump":
            raw = raw[: len(raw) * 6 // 10]
        elif drill_fault == "damaged_toc":
            raw = damage_table_of_contents(raw)
        return _Dump(raw, fmt)

    def _dump(self, sample: SampleDatabase, fmt: str) -> bytes:
        key = (sample, fmt)
        if key not in self._dumps:
            if fmt == "mariadb":
                assert self.mariadb is not None
                self._dumps[key] = self.mariadb.dump(sample)
            else:
                self._dumps[key] = self.server.dump(sample, fmt)
        return self._dumps[key]

    def expectation(
        self, agent: _Agent, db: str, status: str, drill_fault: str | None, result: SimulationResult
    ) -> dict[str, Any]:
        """What a drill of this cycle finds, the cycles being drilled in order."""
        if status not in ("SUCCESS", "HASH_MISMATCH"):
            return {"drill_fault": None, "expected_drill": None}
        expected = EXPECTED_DRILL[drill_fault]
        if expected in ("RESTORED", "RESTORE_SHRANK"):
            result.restorable.add((agent.agent_id, db))
        return {
            "drill_fault": drill_fault,
            "expected_drill": expected,
            "dump_format": self.format_of(agent, db),
        }


def damage_table_of_contents(archive: bytes) -> bytes:
    """A custom archive whose table of contents is zeroed past its header: pg_restore cannot read it."""
    start = archive.find(b"SCHEMA")
    start = archive.find(b"TABLE") if start < 0 else start
    start = max(start - 40, 64)
    return archive[:start] + b"\x00" * 64 + archive[start + 64 :]
