"""Restore drills in tests: a drill folder the drill user can reach, the drills' environment (binaries,
user, template) prepared once per session, real sample dumps made once per session, and a site — an
agent whose databases each stage one kind of dump, scanned once — shared by a module's tests.

Sharing is safe where it is: the template and the sample dumps are read-only; a site's tests each
drill their own databases (one per outcome), so their order does not matter.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard
from click.testing import CliRunner

from backup_pipeline.app.sample_databases import MariadbSampleServer, SampleDatabase, SampleServer
from backup_pipeline.config.settings import Settings
from backup_pipeline.drill.restore import DrillEnvironment
from backup_pipeline.drill.run import prepare_environment
from backup_pipeline_tests.conftest import Workspace, reachable_folder
from backup_pipeline_tests.support.deposit_builder import Agent
from backup_pipeline_tests.support.scan_harness import create_database, drop_database

SITE = "ACME_DOUALA_PORT"


@pytest.fixture(scope="session")
def drill_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's drill folder, in its base folder (which the drill user may cross)."""
    folder = reachable_folder(tmp_path_factory, "drills")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def drill_environment(drill_dir: Path) -> DrillEnvironment:
    return prepare_environment(Settings(drill_dir=drill_dir, home=drill_dir / "home"))


class SampleDumps:
    """pg_dump output of sample databases, each made once per session."""

    def __init__(self, server: SampleServer) -> None:
        self.server = server
        self._cache: dict[tuple[SampleDatabase, str], bytes] = {}

    def get(
        self, name: str, fmt: str = "plain", *, rows: int = 300, version: int = 0, empty: bool = False
    ) -> bytes:
        key = (SampleDatabase(name, rows=rows, version=version, empty=empty), fmt)
        if key not in self._cache:
            self._cache[key] = self.server.dump(*key)
        return self._cache[key]


@pytest.fixture(scope="session")
def sample_dumps(drill_environment: DrillEnvironment) -> Iterator[SampleDumps]:
    with SampleServer(drill_environment) as server:
        yield SampleDumps(server)


class MariadbDumps:
    """mariadb-dump output of sample databases of a MariaDB source server started by the tests (the
    drills' own MariaDB, socket only), each made once per session."""

    def __init__(self, server: MariadbSampleServer) -> None:
        self.server = server
        self._cache: dict[SampleDatabase, bytes] = {}

    def get(self, name: str, *, rows: int = 300, version: int = 0, empty: bool = False) -> bytes:
        key = SampleDatabase(name, rows=rows, version=version, empty=empty)
        if key not in self._cache:
            self._cache[key] = self.server.dump(key)
        return self._cache[key]


@pytest.fixture(scope="session")
def mariadb_dumps(drill_environment: DrillEnvironment) -> Iterator[MariadbDumps]:
    with MariadbSampleServer(drill_environment) as server:
        yield MariadbDumps(server)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


DAY1, DAY2 = "2025-11-20", "2025-11-21"
CYCLE_HOUR = 13


def cycle(day: str) -> str:
    return f"{day}T{CYCLE_HOUR}:00:00Z"


@dataclass
class Site:
    """One agent's databases, each staging the dumps given per day, scanned: a workspace to drill."""

    ws: Workspace
    agent: Agent
    dumps: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)  # db -> day -> (name, bytes)

    def drill(self, *args: str, expect_ok: bool = True) -> Any:
        return self.ws.cli("drill", *args, expect_ok=expect_ok)

    def drill_json(self, database: str, day: str, *more: str) -> dict[str, Any]:
        (row,) = self.ws.json("drill", "--agent", SITE, "--database", database, "--cycle", cycle(day), *more)
        return row


def build_site(
    ws: Workspace,
    dumps: dict[str, dict[str, tuple[str, bytes]]],
    *,
    restore_drill: dict[str, Any] | None = None,
    per_job: dict[str, dict[str, Any]] | None = None,
    notify: list[str] | None = None,
) -> Site:
    """Stage every dump, write the jobs file and one report per day, scan both days."""
    agent = Agent(ws.root, SITE)
    jobs = []
    for database in dumps:
        job: dict[str, Any] = {
            "agent_id": SITE,
            "database_name": database,
            "expected_hour_utc": CYCLE_HOUR,
            "expected_minute_utc": 0,
        }
        job |= (per_job or {}).get(database, {})
        if notify:
            job["notify"] = notify
        jobs.append(job)
    document: dict[str, Any] = {"jobs": jobs}
    if restore_drill is not None:
        document = {"defaults": {"restore_drill": restore_drill}} | document
    ws.jobs_file.write_text(yaml.safe_dump(document, sort_keys=False))
    days = sorted({day for per_day in dumps.values() for day in per_day})
    for day in days:
        sections = {}
        for database, per_day in dumps.items():
            if day in per_day:
                name, data = per_day[day]
                agent.stage(name, data)
                sections[database] = agent.database_section(name, data)
        end = datetime.fromisoformat(f"{day}T{CYCLE_HOUR}:05:00+00:00").astimezone(UTC)
        agent.report(end, sections)
    last = datetime.fromisoformat(days[-1]).replace(tzinfo=UTC) + timedelta(days=1)
    ws.cli("scan", "--at", f"{last:%Y-%m-%d}T00:30:00Z", *[a for d in days for a in ("--partition", d)])
    return Site(ws, agent, dumps)


def staged(database: str, day: str, data: bytes, suffix: str) -> tuple[str, bytes]:
    return f"{database}_{day.replace('-', '')}{suffix}", data


@pytest.fixture(scope="module")
def module_workspace(
    pg_server: str, drill_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    """A workspace (its own database, deposit and environment) shared by a module's tests."""
    folder = tmp_path_factory.mktemp("site")
    url = create_database(pg_server)
    root = folder / "deposit"
    root.mkdir()
    ws = Workspace(root, folder / "jobs.yaml", folder / "home", url, CliRunner())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "BACKUP_STORAGE_ROOT": str(root),
            "BACKUP_PIPELINE_JOBS_FILE": str(ws.jobs_file),
            "BACKUP_PIPELINE_DATABASE_URL": url,
            "BACKUP_PIPELINE_HOME": str(ws.home),
            "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
            "BACKUP_PIPELINE_DRILL_DIR": str(drill_dir),
        }.items():
            patch.setenv(name, value)
        for name in ("DAGSTER_HOME", "SCANNER_REPORT_COLLECTION_WINDOW_MINUTES", "MAX_STATUS_FILE_AGE_DAYS"):
            patch.delenv(name, raising=False)
        patch.chdir(folder)
        yield ws
    from backup_pipeline.storage import database as db_module

    db_module.close_all()
    drop_database(pg_server, url)


@pytest.fixture
def drill_workspace(workspace: Workspace, drill_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The test's own workspace, drilling into the session's drill folder."""
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_DIR", str(drill_dir))
    return workspace


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(drill_dir: Path) -> list[str]:
    """Folders of drills still present under the drill folder (the session's sample server aside)."""
    return sorted(p.name for p in drill_dir.glob("run-*") if not p.name.startswith("run-sample-"))


def drill_processes(drill_dir: Path) -> list[int]:
    """Processes whose working directory is under the drill folder (the session's sample server aside)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
                if cwd.startswith(str(drill_dir)) and "/run-sample-" not in cwd:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def described(pids: list[int]) -> str:
    """Each process's command line and working directory: what a failing test names."""
    lines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                args = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
            text = Path(f"/proc/{pid}/status").read_text()
            status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            lines.append(
                f"{pid}: {args} (in {os.readlink(f'/proc/{pid}/cwd')}; parent {status['PPid'].strip()}, "
                f"state {status['State'].strip()})"
            )
        except OSError:
            lines.append(f"{pid}: gone")
    return "; ".join(lines)
