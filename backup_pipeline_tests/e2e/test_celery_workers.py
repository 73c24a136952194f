"""Scans and restore drills on Celery workers of two hosts, through a real broker, the daemon and the
shipped dagster.yaml.

One module-wide cluster: Redis (Debian's `redis-server`, with a password) on a free loopback port,
the Dagster webserver and daemon with `BACKUP_PIPELINE_EXECUTOR=celery`, and two `backup-pipeline
worker` processes, each in its own UTS namespace with its own hostname (node1, node2), its own
working directory, jobs file copy, product home, drill folder and DAGSTER_HOME, and its own mount
namespace in which the orchestrator's DAGSTER_HOME is an empty tmpfs: all a worker shares with the
rest is PostgreSQL and the deposit area, so a step that needed a file from the orchestrator's disk
fails.

The fleet is the robustness tests' stage (3 agents, 7 expected backups, two days: successes, failed
steps, a tampered dump, a broken report, a late report). Every scenario runs the same two automatic
runs (day 1, then day 2, as of the same instant) as a control made with the multiprocess executor
(`dagster job execute`), and must end in its exact state. Staged files are measured one per step
(`BACKUP_PIPELINE_MEASURE_BATCH_BYTES=1`) so that measurement fans out too; drills likewise one per
step (`BACKUP_PIPELINE_DRILL_BATCH_SECONDS=0.001`), of the fleet's good entries and of one more agent's
real pg_dump output, against an in-process `backup-pipeline drill --due` of the same entries.

Both workers consume both queues (scans' and drills'), as `backup-pipeline worker` does by default; one
test restarts them on one queue each, to show a scan completing while a long drill holds the drill
worker. Every test leaves the cluster as it found it (a killed worker or broker is started again), so
the tests pass in any order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from sqlalchemy.engine import make_url

from backup_pipeline.app.launcher import DAGSTER_URL_ENV, SHIPPED_INSTANCE_CONFIG
from backup_pipeline.defs.workers import WORKER_EVENT
from backup_pipeline_tests.conftest import reachable_folder
from backup_pipeline_tests.support.dagster_servers import (
    BIN,
    PROJECT,
    Servers,
    free_port,
    signal_group,
    stop_automation,
    wait_ready,
)
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.drill_fixtures import SampleDumps, leftovers
from backup_pipeline_tests.support.fleet import (
    AT,
    D1,
    D2,
    EXPECTED,
    SYNC_AT,
    Stage,
    prepared_stage,
    statuses,
)
from backup_pipeline_tests.support.scan_harness import (
    ScanEnv,
    cli_command,
    create_database,
    database_name,
    drop_database,
    finish,
    ok,
    run_cli,
    snapshot,
)

pytestmark = [pytest.mark.slow]

PASSWORD = "broker-secret-0x5eed"
HOSTS = ("node1", "node2")
RUN_WAIT = 240.0  # seconds a run (and the daemon's re-executions of it) may take here
ISOLATED = 'hostname "$0" && mount -t tmpfs -o size=64m tmpfs "$MASKED" && cd "$WORKDIR" && exec "$@"'
# The measurement step that finds the shared `arm` file first (renaming it: one step only) records
# its host and stops there, until its worker is killed.
PAUSE_WHEN_ARMED = """
import functools as _ft, os as _os, pathlib as _pl, socket as _socket, time as _time
import backup_pipeline.scan.measure as _measure
_original = _measure.measure_batch
@_ft.wraps(_original)
def _paused(*args, **kwargs):
    try:
        _os.rename(_os.environ["TEST_ARM"], _os.environ["TEST_ARM"] + ".taken")
    except FileNotFoundError:
        return _original(*args, **kwargs)
    _pl.Path(_os.environ["TEST_PAUSED"]).write_text(_socket.gethostname())
    while True:
        _time.sleep(1)
_measure.measure_batch = _paused
# The drill step that finds the shared `drill_arm` file first records its host and waits until the
# `drill_release` file appears (a long drill). Patched before the definitions import it.
import backup_pipeline.drill.run as _drill_run
_drill_original = _drill_run.drill_entries
@_ft.wraps(_drill_original)
def _long_drill(*args, **kwargs):
    try:
        _os.rename(_os.environ["TEST_DRILL_ARM"], _os.environ["TEST_DRILL_ARM"] + ".taken")
    except FileNotFoundError:
        return _drill_original(*args, **kwargs)
    _pl.Path(_os.environ["TEST_DRILL_PAUSED"]).write_text(_socket.gethostname())
    while not _os.path.exists(_os.environ["TEST_DRILL_RELEASE"]):
        _time.sleep(0.2)
    return _drill_original(*args, **kwargs)
_drill_run.drill_entries = _long_drill
"""
LAUNCH = """mutation Launch($job: String!, $config: RunConfigData, $tags: [ExecutionTag!]) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "backup_pipeline", repositoryName: "__repository__",
               jobName: $job},
    runConfigData: $config, executionMetadata: {tags: $tags}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } } }"""


SCAN_CONFIG = {"ops": {"ingest_reports": {"config": {"as_of": AT, "automatic": True}}}}
DRILL_CONFIG = {"ops": {"plan_drills": {"config": {"as_of": AT}}}}
DRILL_SITE = "ACME_DOUALA_PORT"
GOOD = {"SUCCESS", "HASH_MISMATCH"}  # the entries drills restore
TEST_SECONDS = 420  # each test's hard limit


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    """Fail a test still running after TEST_SECONDS (its fixtures then stop every process)."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"test still running after {TEST_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- processes


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # a restarted process's log follows its previous one
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped with everything it starts, by its process group
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_for(what: str, probe: Any, timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.5)
    tails = "\n".join(
        f"----- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-60:]) for p in logs
    )
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@dataclass
class Worker:
    host: str
    folder: Path
    process: subprocess.Popen[bytes]
    drills: Path  # its drill folder: local to the host (where the drill user reaches it)
    env: dict[str, str]
    masked: Path
    queues: tuple[str, ...] = ()  # its --queue options: none, both queues (the default)

    @property
    def log(self) -> Path:
        return self.folder / "worker.log"


@dataclass
class Cluster:
    stage: Stage
    env: ScanEnv  # the product's settings of the orchestrator side (and the shared database)
    servers: Servers
    instance: DagsterInstance
    redis: subprocess.Popen[bytes]
    workers: dict[str, Worker]
    control: dict[str, Any]
    arm: Path
    paused: Path
    redis_port: int
    redis_folder: Path

    def logs(self) -> list[Path]:
        return [w.log for w in self.workers.values()] + [self.servers.log(n) for n in self.servers.processes]

    def reset(self) -> None:
        """The stage's pristine deposit and database, under the same path and database name."""
        root = self.env.root
        shutil.rmtree(root)
        shutil.copytree(self.stage.pristine, root, symlinks=True)
        recreate_database(self.stage.server, self.env.database_url, database_name(self.stage.template_db))

    def launch(self, day: str, **tags: str) -> str:
        tags = {"dagster/partition": day, "backup_pipeline/automatic": "true"} | tags
        return self.launch_job("backup_scan", SCAN_CONFIG, tags)

    def launch_job(self, job: str, config: dict[str, Any], tags: dict[str, str]) -> str:
        launched = self.servers.graphql(
            LAUNCH, job=job, config=config, tags=[{"key": k, "value": v} for k, v in tags.items()]
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        assert self.run(run_id).run_config == config, self.run(run_id).run_config
        return run_id

    def restart_worker(self, host: str, queues: tuple[str, ...] = ()) -> None:
        """The host's worker started again (stopped first if it runs), consuming `queues` (none: the
        default)."""
        old = self.workers[host]
        stop(old.process)
        self.workers[host] = start_worker(
            host, old.folder, old.env, old.masked, old.folder / "jobs.yaml", old.drills, queues
        )

    @contextlib.contextmanager
    def consuming(self, queues: dict[str, tuple[str, ...]]) -> Iterator[None]:
        """Workers restarted on the given queues, then on the default ones again."""
        try:
            for host, names in queues.items():
                self.restart_worker(host, names)
            yield
        finally:
            for host in queues:
                self.restart_worker(host)

    def restart_redis(self) -> None:
        """The broker again, on its port (after a test stopped it), and workers connected to it."""
        stop(self.redis)
        self.redis, _ = start_redis(self.redis_folder, self.redis_port)
        for host in self.workers:
            self.restart_worker(host)

    def run(self, run_id: str) -> Any:
        return self.instance.get_run_by_id(run_id)

    def finished(self, run_id: str, timeout: float = RUN_WAIT) -> Any:
        def probe() -> Any:
            run = self.run(run_id)
            return run if run is not None and run.is_finished else None

        return wait_for(f"run {run_id} to end", probe, timeout, self.logs())

    def succeeded_retry(self, root_run_id: str) -> Any:
        """The daemon's successful re-execution of a failed run."""

        def probe() -> Any:
            retries = [
                r
                for r in self.instance.get_runs()
                if r.tags.get("dagster/root_run_id") == root_run_id and r.status == DagsterRunStatus.SUCCESS
            ]
            return retries[0] if retries else None

        return wait_for(f"a successful re-execution of {root_run_id}", probe, RUN_WAIT, self.logs())


def recreate_database(server: str, url: str, template: str) -> None:
    """Drop the database at `url` (cutting the servers' connections: they reconnect) and clone it
    again from `template`."""
    admin = sa.create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = database_name(url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()


def dagster_home(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, folder / "dagster.yaml")
    return folder


def start_redis(folder: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is absent: .ci/run installs Debian's redis-server")
    port = port or free_port()
    log = folder / "redis.log"
    log.unlink(missing_ok=True)
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = start([*command, "--requirepass", PASSWORD], folder / "redis.log", dict(os.environ), folder)
    wait_for(
        "redis",
        lambda: "Ready to accept connections" in (folder / "redis.log").read_text(),
        30,
        [folder / "redis.log"],
    )
    return process, port


def start_worker(
    host: str,
    folder: Path,
    env: dict[str, str],
    masked: Path,
    jobs_file: Path,
    drills: Path,
    queues: tuple[str, ...] = (),
) -> Worker:
    """`backup-pipeline worker` on its own "host": UTS and mount namespaces, folder, home, drill
    folder, DAGSTER_HOME; consuming `queues` (none given: the default, both)."""
    if os.geteuid() != 0:
        pytest.fail("the worker hosts need `unshare --uts --mount`: run as root (CI does)")
    folder.mkdir(parents=True, exist_ok=True)
    if jobs_file != folder / "jobs.yaml":
        shutil.copyfile(jobs_file, folder / "jobs.yaml")  # the deployment's configuration, on each host
    own = env | {
        "BACKUP_PIPELINE_JOBS_FILE": str(folder / "jobs.yaml"),
        "BACKUP_PIPELINE_HOME": str(folder / "home"),
        "BACKUP_PIPELINE_DRILL_DIR": str(drills),
        "DAGSTER_HOME": str(dagster_home(folder / "dagster_home")),
        "MASKED": str(masked),
        "WORKDIR": str(folder),
    }
    options = [option for name in queues for option in ("--queue", name)]
    command = cli_command("worker", "--concurrency", "1", *options, prelude=PAUSE_WHEN_ARMED)
    log = folder / "worker.log"
    ready = f"backup-pipeline@{host} ready"
    ready_before = log.read_text(errors="replace").count(ready) if log.exists() else 0
    process = start(
        ["unshare", "--uts", "--mount", "sh", "-c", ISOLATED, host, *command],
        folder / "worker.log",
        own,
        folder,
    )
    worker = Worker(host, folder, process, drills, env, masked, queues)
    wait_for(
        f"worker {host}",
        lambda: (
            worker.log.read_text(errors="replace").count(ready) > ready_before or process.poll() is not None
        ),
        90,
        [worker.log],
    )
    assert process.poll() is None, worker.log.read_text()
    return worker


# ---------------------------------------------------------------- events


@dataclass
class StepRun:
    host: str
    pid: int


def step_runs(instance: DagsterInstance, run_id: str) -> tuple[int, dict[str, StepRun]]:
    """The run's own process id, and where each step ran: the host and process its worker event
    names, checked against the process that recorded the step's start."""
    records = instance.all_logs(run_id)
    run_pid = next(r.dagster_event.pid for r in records if r.dagster_event_type == DagsterEventType.RUN_START)
    placed: dict[str, StepRun] = {}
    for r in records:
        event = r.dagster_event
        if r.dagster_event_type == DagsterEventType.ENGINE_EVENT and WORKER_EVENT in (event.message or ""):
            meta = event.engine_event_data.metadata
            placed[r.step_key] = StepRun(meta["host"].value, meta["pid"].value)
    starts = {
        r.step_key: r.dagster_event.pid
        for r in records
        if r.dagster_event_type == DagsterEventType.STEP_START
    }
    assert starts, f"run {run_id} started no step"
    for step, pid in starts.items():
        assert step in placed, f"step {step} did not run in a Celery worker"
        assert placed[step].pid == pid != run_pid, (
            f"step {step}: started by process {pid}, worker {placed[step]}"
        )
    return run_pid, {k: placed[k] for k in starts}


def failure_messages(instance: DagsterInstance, run_id: str) -> str:
    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE, DagsterEventType.ENGINE_EVENT}
    return "\n".join(
        (r.user_message or "") + " " + str(getattr(r.dagster_event, "event_specific_data", "") or "")
        for r in instance.all_logs(run_id)
        if r.dagster_event_type in kinds
    )


def secret_rows(dagster_url: str) -> list[str]:
    """The tables and columns of Dagster's storage holding the broker's password anywhere."""
    engine = sa.create_engine(dagster_url)
    found = []
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                    "'public' AND data_type IN ('text', 'character varying', 'bytea', 'jsonb')"
                )
            ).all()
            for table, column in columns:
                hit = conn.execute(
                    sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE :p'),
                    {"p": f"%{PASSWORD}%"},
                ).scalar()
                if hit:
                    found.append(f"{table}.{column}")
    finally:
        engine.dispose()
    return found


# ---------------------------------------------------------------- the cluster


def run_control(stage: Stage, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """Day 1 then day 2 with the multiprocess executor, as `dagster job execute` runs them, on the
    stage's deposit path (stored archive paths point there)."""
    control = stage.restore()
    run_env = (
        control.environ()
        | env
        | {"BACKUP_PIPELINE_EXECUTOR": "multiprocess", "DAGSTER_HOME": str(dagster_home(folder))}
    )
    (folder / "run.yaml").write_text(yaml.safe_dump(SCAN_CONFIG))
    try:
        for day in (D1, D2):
            tags = f'{{"dagster/partition": "{day}", "backup_pipeline/automatic": "true"}}'
            command = [
                str(BIN / "dagster"), "job", "execute", "-m", "backup_pipeline.definitions", "-a", "defs",
                "-j", "backup_scan", "--tags", tags, "-c", str(folder / "run.yaml"),
            ]  # fmt: skip
            process = subprocess.Popen(
                command, cwd=folder, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,  # its step processes go with it when it is stopped
            )  # fmt: skip
            out, err = finish(process, 300, f"the control run of {day}")
            said = out + err
            assert process.returncode == 0 and "RUN_SUCCESS" in said, said
            assert "Multiprocess executor: parent process exiting" in said
        state = snapshot(control)
    finally:
        stage.discard(control)
    assert statuses(state) == EXPECTED
    return state


@pytest.fixture(scope="module")
def cluster(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("celery")
    processes: list[subprocess.Popen[bytes]] = []
    dagster_db = create_database(pg_server, template="template0")
    servers: Servers | None = None
    instance: DagsterInstance | None = None
    drill_dirs: list[Path] = []
    with prepared_stage(pg_server, base / "stage") as stage:
        live: ScanEnv | None = None
        try:
            redis, port = start_redis(base)
            processes.append(redis)
            shared = {
                "BACKUP_PIPELINE_MEASURE_BATCH_BYTES": "1",
                "BACKUP_PIPELINE_DRILL_BATCH_SECONDS": "0.001",
                DAGSTER_URL_ENV: dagster_db,
            }
            control = run_control(stage, base / "control", shared)
            live = stage.restore()
            settings = (
                live.environ()
                | shared
                | {
                    "BACKUP_PIPELINE_EXECUTOR": "celery",
                    "BACKUP_PIPELINE_CELERY_BROKER": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
                    "TEST_ARM": str(base / "arm"),
                    "TEST_PAUSED": str(base / "paused"),
                    "TEST_DRILL_ARM": str(base / "drill_arm"),
                    "TEST_DRILL_PAUSED": str(base / "drill_paused"),
                    "TEST_DRILL_RELEASE": str(base / "drill_release"),
                    "PYTHONUNBUFFERED": "1",
                }
            )
            home = dagster_home(base / "dagster_home")
            servers = Servers(
                port=free_port(), home=home, env=settings | {"DAGSTER_HOME": str(home)}, artifacts="celery"
            )
            # Only the runs the tests launch: the sensor and the schedule are off before the daemon starts.
            stop_automation(servers, "sensor", "deposit_sensor")
            stop_automation(servers, "schedule", "scan_every_15_minutes")
            stop_automation(servers, "schedule", "daily_restore_drills")
            servers.start("dagster-webserver", "-h", "127.0.0.1", "-p", str(servers.port))
            servers.start("dagster-daemon", "run")
            workers = {}
            for host in HOSTS:
                drills = reachable_folder(tmp_path_factory, f"drills-{host}")
                drill_dirs.append(drills)
                workers[host] = start_worker(host, base / host, settings, home, live.jobs_file, drills)
                processes.append(workers[host].process)
            wait_ready(servers)
            os.environ[DAGSTER_URL_ENV] = dagster_db  # read while the instance is built, then no more
            try:
                instance = DagsterInstance.from_config(str(home))
            finally:
                os.environ.pop(DAGSTER_URL_ENV)
            arm, paused = base / "arm", base / "paused"
            cluster = Cluster(
                stage, live, servers, instance, redis, workers, control, arm, paused, port, redis_folder=base
            )
            yield cluster
            processes = [cluster.redis] + [w.process for w in cluster.workers.values()]
        finally:
            if instance is not None:
                instance.dispose()
            if servers is not None:
                servers.stop()
            for process in processes:
                stop(process)
            for worker in (base / h / "worker.log" for h in HOSTS):
                if worker.exists():
                    shutil.copyfile(worker, PROJECT / "test-artifacts" / f"celery-{worker.parent.name}.log")
            if live is not None:
                stage.discard(live)
            drop_database(pg_server, dagster_db)
            for drills in drill_dirs:
                shutil.rmtree(drills, ignore_errors=True)


# ---------------------------------------------------------------- the tests


def test_a_scan_runs_its_steps_on_both_worker_hosts_and_decides_as_the_multiprocess_executor(
    cluster: Cluster,
) -> None:
    cluster.reset()
    placed: dict[str, StepRun] = {}
    for day in (D1, D2):
        run = cluster.finished(cluster.launch(day))
        assert run.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, run.run_id)
        assert run.tags["dagster/max_runtime"] == str(6 * 3600)  # the settings' limit, on every scan run
        _, steps = step_runs(cluster.instance, run.run_id)
        placed |= {f"{day} {step}": where for step, where in steps.items()}

    def hosts(kind: str) -> set[str]:
        return {where.host for step, where in placed.items() if step.split(" ", 1)[1].startswith(kind)}

    assert hosts("evaluate[") == set(HOSTS), placed
    assert hosts("measure_staged_files[") == set(HOSTS), placed
    assert snapshot(cluster.env) == cluster.control
    assert secret_rows(cluster.servers.env[DAGSTER_URL_ENV]) == []


# ---------------------------------------------------------------- drills

DRILL_ROWS = sa.text(
    """
    SELECT j.agent_id_responsible, j.database_name, d.cycle_expected_at, d.attempt, d.as_of, d.outcome,
           d.reason, d.failing_statement, d.detected_kind, d.dump_format, d.compression, d.staged_file_name,
           d.staged_sha256, d.staged_size, d.tables, d.rows, d.bytes, d.table_figures, d.amcheck,
           d.left_out, d.shrank, d.comparison, d.previous_drill_id IS NULL AS first, d.tool_versions
    FROM restore_drills d JOIN expected_jobs j ON j.id = d.job_id
    ORDER BY 1, 2, 3
    """
)


def drills_recorded(database_url: str) -> tuple[list[tuple[Any, ...]], set[str | None]]:
    """The restore_drills rows, free of ids, instants of the clock and durations; the runs named."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(DRILL_ROWS)]
            runs = set(conn.execute(sa.text("SELECT dagster_run_id FROM restore_drills")).scalars())
    finally:
        engine.dispose()
    return rows, runs


def scanned_with_real_dumps(cluster: Cluster, dumps: SampleDumps, drill_dir: Path) -> ScanEnv:
    """The pristine stage, one more agent staging real pg_dump output on D2 (a plain gzip dump, a
    custom-format one, a truncated one), its jobs synced as of the stage's, and the scan at AT:
    entries to drill, from the stage's fake dumps and the real ones."""
    cluster.reset()
    agent = Agent(cluster.env.root, DRILL_SITE)
    staged = {
        "sales": ("sales.sql.gz", gz(dumps.get("sales"))),
        "ledger": ("ledger.dump", dumps.get("ledger", "custom")),
        "broken": ("broken.sql.gz", gz(dumps.get("broken")[:-500])),
    }
    sections = {}
    for database, (name, data) in staged.items():
        agent.stage(name, data)
        sections[database] = agent.database_section(name, data)
    agent.report(utc(f"{D2}T13:05:00Z"), sections)
    jobs = yaml.safe_load(cluster.env.jobs_file.read_text())["jobs"]
    jobs += [
        {"agent_id": DRILL_SITE, "database_name": d, "expected_hour_utc": 13, "expected_minute_utc": 0}
        for d in staged
    ]
    env = ScanEnv(
        cluster.env.root,
        cluster.env.root.parent / "drill_jobs.yaml",
        cluster.env.home,
        cluster.env.database_url,
        {"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)},
    )
    env.write_jobs(jobs)
    ok(run_cli(env, "jobs", "sync", "--at", SYNC_AT))
    ok(run_cli(env, "scan", "--at", AT))
    return env


def test_drills_run_on_both_worker_hosts_and_record_what_an_in_process_drill_records(
    cluster: Cluster, sample_dumps: SampleDumps, drill_dir: Path
) -> None:
    env = scanned_with_real_dumps(cluster, sample_dumps, drill_dir)
    ok(run_cli(env, "drill", "--due", "--at", AT))
    control, runs = drills_recorded(env.database_url)
    assert len(runs) == 1 and None not in runs  # the CLI runs the drill job in process: one Dagster run
    outcomes = {(r[0], r[1]): r[5] for r in control}
    assert {d: outcomes[(DRILL_SITE, d)] for d in ("sales", "ledger", "broken")} == {
        "sales": "RESTORED",
        "ledger": "RESTORED",
        "broken": "RESTORE_FAILED",
    }
    good = {(a, d, cycle[11:]) for (a, d, cycle), status in EXPECTED.items() if status in GOOD}
    assert len(control) == len(good) + 3  # each backup's latest good entry: the stage's are text, not dumps

    env = scanned_with_real_dumps(cluster, sample_dumps, drill_dir)
    run_id = cluster.launch_job("restore_drills", DRILL_CONFIG, {"dagster/partition": D2})
    run = cluster.finished(run_id)
    assert run.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, run_id)
    _, steps = step_runs(cluster.instance, run_id)  # every step in a worker process
    drilled_on = {where.host for step, where in steps.items() if step.startswith("drill_batch[")}
    assert drilled_on == set(HOSTS), steps
    assert len([s for s in steps if s.startswith("drill_batch[")]) == len(control)  # a step per drill

    recorded, runs = drills_recorded(env.database_url)
    assert recorded == control
    assert runs == {run_id}
    for worker in cluster.workers.values():  # each host drilled in its own folder, and cleaned up
        assert list((worker.drills / "templates").iterdir()), worker.host
        assert leftovers(worker.drills) == []
    assert not (cluster.env.home / "drills").exists()  # nothing on the orchestrator's side


def test_a_worker_killed_in_the_middle_of_a_step_leaves_the_state_of_an_uninterrupted_scan(
    cluster: Cluster,
) -> None:
    cluster.reset()
    first = cluster.finished(cluster.launch(D1))
    assert first.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, first.run_id)
    cluster.arm.touch()
    interrupted = cluster.launch(D2)
    host = wait_for(
        "a measurement step to start on a worker",
        lambda: cluster.paused.exists() and cluster.paused.read_text(),
        120,
        cluster.logs(),
    )
    cluster.paused.unlink()
    try:
        stop(cluster.workers[host].process)  # SIGKILL to the worker and its pool: a host lost mid-step
        _a_killed_worker_costs_one_step(cluster, interrupted, host)
    finally:
        cluster.restart_worker(host)


def _a_killed_worker_costs_one_step(cluster: Cluster, interrupted: str, host: str) -> None:
    run = cluster.finished(interrupted)
    assert run.status == DagsterRunStatus.FAILURE
    assert f"Celery worker backup-pipeline@{host} stopped answering" in failure_messages(
        cluster.instance, interrupted
    )
    retry = cluster.succeeded_retry(interrupted)  # the daemon's run_retries, from the failed step
    _, steps = step_runs(cluster.instance, retry.run_id)
    assert {where.host for where in steps.values()} == set(HOSTS) - {host}
    assert snapshot(cluster.env) == cluster.control


def test_a_broker_stopped_during_a_run_fails_it_clearly_within_its_limit(cluster: Cluster) -> None:
    cluster.reset()
    cluster.arm.touch()
    limit = 150
    run_id = cluster.launch(D1, **{"dagster/max_runtime": str(limit)})
    wait_for("a measurement step to start on a worker", cluster.paused.exists, 120, cluster.logs())
    cluster.paused.unlink()
    stop(cluster.redis)
    stopped = time.monotonic()
    try:
        _the_run_fails_clearly(cluster, run_id, limit, stopped)
    finally:
        cluster.restart_redis()  # and the workers, whose paused step was never acknowledged


def _the_run_fails_clearly(cluster: Cluster, run_id: str, limit: int, stopped: float) -> None:
    run = cluster.finished(run_id, timeout=limit + 150)  # the limit, and one run-monitoring interval
    assert run.status == DagsterRunStatus.FAILURE
    assert time.monotonic() - stopped < limit
    said = failure_messages(cluster.instance, run_id)
    assert "Celery broker redis://:**@127.0.0.1" in said or "Celery result backend is unreachable" in said, (
        said
    )
    assert PASSWORD not in said
    assert secret_rows(cluster.servers.env[DAGSTER_URL_ENV]) == []


# ---------------------------------------------------------------- queues


def test_a_scan_completes_while_a_long_drill_holds_the_drill_worker(cluster: Cluster) -> None:
    """node1 consumes the drill queue only and is held by a long drill; node2, on the scan queue, runs
    a whole scan meanwhile (were drill steps sent to the scan queue, node2 would take the long drill
    and the scan would wait behind it)."""
    base = cluster.arm.parent
    drill_arm, drill_paused, release = base / "drill_arm", base / "drill_paused", base / "drill_release"
    cluster.reset()
    with cluster.consuming({"node1": ("drills",), "node2": ("dagster",)}):
        first = cluster.finished(cluster.launch(D1))
        assert first.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, first.run_id)
        drill_arm.touch()
        try:
            drills = cluster.launch_job("restore_drills", DRILL_CONFIG, {"dagster/partition": D2})
            held_on = wait_for(
                "a drill step to start on a worker",
                lambda: drill_paused.exists() and drill_paused.read_text(),
                120,
                cluster.logs(),
            )
            assert held_on == "node1"
            scan = cluster.finished(cluster.launch(D2))
            assert scan.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, scan.run_id)
            assert cluster.run(drills).status == DagsterRunStatus.STARTED  # the drill still holds node1
            _, steps = step_runs(cluster.instance, scan.run_id)
            assert {where.host for where in steps.values()} == {"node2"}, steps
        finally:
            release.touch()
        run = cluster.finished(drills)
        assert run.status == DagsterRunStatus.SUCCESS, failure_messages(cluster.instance, drills)
        _, steps = step_runs(cluster.instance, drills)
        assert {where.host for where in steps.values()} == {"node1"}, steps
    for path in (release, drill_paused, drill_arm, Path(f"{drill_arm}.taken")):
        path.unlink(missing_ok=True)
