"""Celery: a bytes-heavy fleet scanned by one worker, by two workers, and by the multiprocess executor;
restore drills on one worker and on two.

8 agents × 4 staged dumps of 256 MiB (8 GiB of zstd, built once under benchmarks/out/celery/ and
reused; page cache warmed before each scan) are scanned in one run of this benchmark three ways,
each from the same fresh database and deposit: the multiprocess executor (the default: two step
processes), one `backup-pipeline worker` pinned to one core (`taskset`), and two workers pinned to
one core each, through a Redis broker on a free loopback port. For each: the Dagster run's wall
time, the measurement throughput (staged bytes per second), and the per-step overhead, taken from
an idle re-scan of the same day (six trivial steps one after the other: run time minus the steps'
own time, per step). The speed-up of two workers over one is the figure of interest; the machine's
load average is printed with the figures, since other work on a shared machine takes cores away.

Drills: 8 gzip plain dumps of one sample database (1,000,000 invoices, built once with the drills'
sample server), staged for 4 agents × 2 databases and scanned, then drilled by one run of the drill
job (one drill per step: `BACKUP_PIPELINE_DRILL_BATCH_SECONDS` below one drill's estimate) on one pinned
worker, then again from a fresh database on two: drills per hour per worker (each drill's scratch
PostgreSQL runs on its worker's core: it inherits the pinning). `--parts` runs only some parts.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard

from benchmarks.common import SCRATCH, Report

AGENTS, DUMPS, DUMP_MIB = 8, 4, 256
DAY = "2025-11-21"
CYCLE = datetime(2025, 11, 21, 1, 0, tzinfo=UTC)
AT, IDLE_AT = "2025-11-21T23:00:00Z", "2025-11-21T23:30:00Z"
CHUNK = 8 << 20
BIN = Path(sys.executable).parent


def _agent(index: int) -> str:
    return f"BENCH_AGENT_{index:02d}"


def _staged(root: Path, agent: str, db: int) -> Path:
    return root / agent / "database" / f"db_{db}.zst"


def build(work: Path) -> tuple[Path, Path, int]:
    """The deposit's dumps (reused when there), pristine reports aside, the jobs file; total bytes."""
    root, reports = work / "deposit", work / "reports"
    noise = os.urandom(CHUNK)
    total = 0
    jobs = []
    for a in range(AGENTS):
        agent = _agent(a)
        sections = {}
        for d in range(DUMPS):
            path = _staged(root, agent, d)
            if not path.exists() or path.stat().st_size < DUMP_MIB << 20:
                _write_dump(path, noise, a * DUMPS + d)
            size, digest = _hash(path)
            total += size
            sections[f"db_{d}"] = _section(path.name, size, digest)
            jobs.append({"agent_id": agent, "database_name": f"db_{d}", "expected_hour_utc": CYCLE.hour})
        end = CYCLE + timedelta(minutes=5)
        report = {
            "operation_start_time": (end - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operation_end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "agent_id": agent,
            "databases": sections,
        }
        (reports / agent).mkdir(parents=True, exist_ok=True)
        (reports / agent / f"{end:%Y%m%d_%H%M%S}_{agent}.json").write_text(json.dumps(report))
    (work / "jobs.yaml").write_text(json.dumps({"jobs": [j | {"expected_minute_utc": 0} for j in jobs]}))
    return root, reports, total


def _write_dump(path: Path, noise: bytes, seed: int) -> None:
    """A zstd stream of SQL-like text mixed with noise, so that it reaches its size from a few GiB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = b"".join(
        b"INSERT INTO ledger VALUES (%d, %d);\n" % (i, i * 7919 + seed) for i in range(CHUNK // 40)
    )
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    with path.open("wb") as out, compressor.stream_writer(out, closefd=False) as writer:
        step = 0
        while out.tell() < DUMP_MIB << 20:
            writer.write(text[(step * 4099) % 4096 :][: CHUNK // 2] + noise[seed % 64 :][: CHUNK // 2])
            writer.flush(zstandard.FLUSH_BLOCK)
            step += 1


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _section(name: str, size: int, digest: str) -> dict[str, Any]:
    start = CYCLE - timedelta(minutes=25)
    t = lambda m: (start + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "BACKUP": {
            "status": True,
            "start_time": t(0),
            "end_time": t(5),
            "sha256_checksum": digest,
            "size": size,
        },
        "COMPRESS": {
            "status": True,
            "start_time": t(6),
            "end_time": t(15),
            "sha256_checksum": digest,
            "size": size,
        },
        "TRANSFER": {"status": True, "start_time": t(20), "end_time": t(29), "error_message": None},
        "staged_file_name": name,
    }


def warm(root: Path) -> None:
    for path in sorted(root.glob("*/database/*.zst")):
        with path.open("rb") as f:
            while f.read(CHUNK):
                pass


# ---------------------------------------------------------------- the services


def stop_server(pgdata: Path) -> None:
    """Stop the embedded PostgreSQL this benchmark started (from a fresh process: this one holds a
    handle that was told to leave it running)."""
    code = (
        "import sys, pathlib; from benchmarks.fleet import _stop_embedded_server as stop; "
        "stop(pathlib.Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(pgdata)], check=False, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _wait(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: never said {text!r}\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def workers(env: dict[str, str], cores: list[int], work: Path) -> Iterator[None]:
    """One `backup-pipeline worker -c 1` per core, each pinned to its core."""
    started = []
    try:
        for i, core in enumerate(cores):
            log = work / f"worker{i}.log"
            process = _start(
                ["taskset", "-c", str(core), str(BIN / "backup-pipeline"), "worker", "-c", "1"], log, env
            )
            started.append(process)
            _wait(log, " ready.", process)
        yield
    finally:
        for process in started:
            _stop(process)


# ---------------------------------------------------------------- one scan


def reset(env: dict[str, str], work: Path, root: Path, reports: Path) -> None:
    """A fresh product database with the jobs synced, and the reports back in every log/."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    url = make_url(env["BACKUP_PIPELINE_DATABASE_URL"])
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    for agent_reports in reports.iterdir():
        log = root / agent_reports.name / "log"
        shutil.rmtree(log, ignore_errors=True)
        shutil.copytree(agent_reports, log)
    sync = [str(BIN / "backup-pipeline"), "backups", "sync", "--at", "2025-11-20T00:00:00Z"]
    subprocess.run(sync, env=env, check=True, capture_output=True)


def scan(env: dict[str, str], work: Path, at: str) -> dict[str, float]:
    """One run of the scan job for DAY through `dagster job execute`; its figures from the instance."""
    config = work / "run.yaml"
    config.write_text(json.dumps({"ops": {"ingest_reports": {"config": {"as_of": at, "automatic": True}}}}))
    command = [
        str(BIN / "dagster"), "job", "execute", "-m", "backup_pipeline.definitions", "-a", "defs",
        "-j", "backup_scan", "--tags", json.dumps({"dagster/partition": DAY}), "-c", str(config),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    if done.returncode != 0 or "RUN_SUCCESS" not in done.stdout + done.stderr:
        raise RuntimeError(f"the scan failed:\n{(done.stdout + done.stderr)[-5000:]}")
    return run_figures(env)


def run_figures(env: dict[str, str], job: str = "backup_scan") -> dict[str, float]:
    """Wall time of the latest run, its steps, their own time, and the time between them per step."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        record = instance.get_run_records(RunsFilter(job_name=job), limit=1)[0]
        stats = instance.get_run_stats(record.dagster_run.run_id)
        starts, in_steps, measuring = {}, 0.0, 0.0
        for entry in instance.all_logs(record.dagster_run.run_id):
            kind = entry.dagster_event_type
            if kind == DagsterEventType.STEP_START:
                starts[entry.step_key] = entry.timestamp
            elif kind == DagsterEventType.STEP_SUCCESS:
                in_steps += entry.timestamp - starts[entry.step_key]
                if entry.step_key.startswith("measure_staged_files["):
                    measuring += entry.timestamp - starts[entry.step_key]
    wall = (stats.end_time or 0) - (stats.start_time or 0)
    return {
        "wall": wall,
        "steps": len(starts),
        "in_steps": in_steps,
        "measuring": measuring,
        "overhead": (wall - in_steps) / len(starts),
    }


# ---------------------------------------------------------------- rows


ROW_AGENTS, ROW_DATABASES = 200, 20
ROW_JOBS = ROW_AGENTS * ROW_DATABASES


def rows_per_worker(work: Path, celery: dict[str, str]) -> float:
    """Jobs per hour one worker (one core) evaluates: a simulated fleet of small dumps, one scan."""
    from backup_pipeline.storage.database import ensure_database
    from backup_pipeline.storage.embedded import embedded_server_url

    folder = work / "rows"
    env = celery | {
        "BACKUP_STORAGE_ROOT": str(folder / "deposit"),
        "BACKUP_PIPELINE_JOBS_FILE": str(folder / "jobs.yaml"),
        "BACKUP_PIPELINE_DATABASE_URL": ensure_database(
            embedded_server_url((work / "pgdata").resolve()), "backup_pipeline_rows"
        ),
        "BACKUP_PIPELINE_MEASURE_BATCH_BYTES": str(4 << 30),
    }
    if not (folder / "reports").exists():
        simulate = [
            str(BIN / "backup-pipeline"), "simulate", "--root", str(folder / "deposit"),
            "--jobs-file", str(folder / "jobs.yaml"), "--agents", str(ROW_AGENTS),
            "--databases", str(ROW_DATABASES), "--size", "2048", "--at", "2025-11-21T23:30:00Z",
        ]  # fmt: skip
        subprocess.run(simulate, env=env, check=True, capture_output=True)
        for log in (folder / "deposit").glob("*/log"):
            shutil.copytree(log, folder / "reports" / log.parent.name)
    reset(env, work, folder / "deposit", folder / "reports")
    with workers(env, [0], work):
        wall = scan(env, work, "2025-11-22T00:30:00Z")["wall"]
    return ROW_JOBS / wall * 3600


# ---------------------------------------------------------------- drills


DRILL_AGENTS, DRILL_DATABASES, DRILL_ROWS = 4, 2, 1_000_000
DRILLS = DRILL_AGENTS * DRILL_DATABASES


def drill_fleet(folder: Path, drill_dir: Path) -> tuple[Path, Path, int, int]:
    """The sample dump (built once), staged for every agent's databases; the pristine reports and the
    jobs file; the staged and the plain bytes of one dump. The drill folder's template is made here,
    before anything is timed."""
    from backup_pipeline.app.sample_databases import SampleDatabase, SampleServer
    from backup_pipeline.config.settings import Settings
    from backup_pipeline.drill.run import prepare_environment

    prepared = prepare_environment(Settings(drill_dir=drill_dir, home=folder / "home"))
    dump, plain = folder / "sample.sql.gz", folder / "sample.plain_bytes"
    if not dump.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with SampleServer(prepared) as server:
            data = server.dump(SampleDatabase("bench_db", rows=DRILL_ROWS), "plain")
        (folder / "sample.partial").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        plain.write_text(str(len(data)))
        (folder / "sample.partial").replace(dump)
    size, digest = _hash(dump)
    root, reports, jobs = folder / "deposit", folder / "reports", []
    for a in range(DRILL_AGENTS):
        agent, sections = f"BENCH_DRILLS_{a:02d}", {}
        for d in range(DRILL_DATABASES):
            staged = root / agent / "database" / f"db_{d}.sql.gz"
            if not staged.exists():
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dump, staged)  # a copy: the scan refuses hard links
            sections[f"db_{d}"] = _section(staged.name, size, digest)
            jobs.append({"agent_id": agent, "database_name": f"db_{d}", "expected_hour_utc": CYCLE.hour})
        end = CYCLE + timedelta(minutes=5)
        report = {"operation_end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "agent_id": agent}
        (reports / agent).mkdir(parents=True, exist_ok=True)
        (reports / agent / f"{end:%Y%m%d_%H%M%S}_{agent}.json").write_text(
            json.dumps(report | {"databases": sections})
        )
    (folder / "jobs.yaml").write_text(json.dumps({"jobs": [j | {"expected_minute_utc": 0} for j in jobs]}))
    return root, reports, size, int(plain.read_text())


def drill_run(env: dict[str, str], work: Path) -> dict[str, float]:
    """One run of the drill job for DAY through `dagster job execute`: its figures, all drills restored."""
    import sqlalchemy as sa

    config = work / "drill_run.yaml"
    config.write_text(json.dumps({"ops": {"plan_drills": {"config": {"as_of": AT}}}}))
    command = [
        str(BIN / "dagster"), "job", "execute", "-m", "backup_pipeline.definitions", "-a", "defs",
        "-j", "restore_drills", "--tags", json.dumps({"dagster/partition": DAY}), "-c", str(config),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    if done.returncode != 0 or "RUN_SUCCESS" not in done.stdout + done.stderr:
        raise RuntimeError(f"the drill run failed:\n{(done.stdout + done.stderr)[-5000:]}")
    engine = sa.create_engine(env["BACKUP_PIPELINE_DATABASE_URL"])
    with engine.connect() as conn:
        outcomes = conn.execute(sa.text("SELECT outcome, duration_seconds FROM restore_drills")).all()
    engine.dispose()
    if [o for o, _ in outcomes] != ["RESTORED"] * DRILLS:
        raise RuntimeError(f"expected {DRILLS} restored drills, got {outcomes}")
    return run_figures(env, "restore_drills") | {"drilling": sum(d for _, d in outcomes)}


def drills_per_worker(work: Path, celery: dict[str, str]) -> dict[str, dict[str, float]]:
    """The drill job on one pinned worker, then on two, each from a freshly scanned database."""
    folder = work / "drills"
    # Short, and reachable by the drill user: a scratch cluster's socket path must fit in 107 bytes.
    drill_dir = Path(tempfile.mkdtemp(prefix="bp-bench-drills-", dir="/tmp"))
    os.chmod(drill_dir, 0o711)
    try:
        return _drill_runs(work, folder, drill_dir, celery)
    finally:
        shutil.rmtree(drill_dir, ignore_errors=True)


def _drill_runs(
    work: Path, folder: Path, drill_dir: Path, celery: dict[str, str]
) -> dict[str, dict[str, float]]:
    from backup_pipeline.storage.database import ensure_database
    from backup_pipeline.storage.embedded import embedded_server_url

    root, reports, staged, plain = drill_fleet(folder, drill_dir)
    env = celery | {
        "BACKUP_STORAGE_ROOT": str(root),
        "BACKUP_PIPELINE_JOBS_FILE": str(folder / "jobs.yaml"),
        "BACKUP_PIPELINE_DATABASE_URL": ensure_database(
            embedded_server_url((work / "pgdata").resolve()), "backup_pipeline_drills"
        ),
        "BACKUP_PIPELINE_DRILL_DIR": str(drill_dir),
        "BACKUP_PIPELINE_DRILL_BATCH_SECONDS": "0.001",  # one drill per step
    }
    figures = {}
    for name, cores in (("1 worker", [0]), ("2 workers", [0, 1])):
        reset(env, work, root, reports)
        scan_now = [str(BIN / "backup-pipeline"), "scan", "--at", AT, "--partition", DAY]
        subprocess.run(scan_now, env=env, check=True, capture_output=True)
        with workers(env, cores, work):
            figures[name] = drill_run(env, work) | {"staged": staged, "plain": plain}
        print(f"drills, {name}: {json.dumps(figures[name])}", flush=True)
    return figures


def add_drill_figures(report: Report, figures: dict[str, dict[str, float]]) -> None:
    one, two = figures["1 worker"], figures["2 workers"]
    note = f"{DRILLS} drills of {one['staged'] / 2**20:.0f} MiB gzip ({one['plain'] / 2**20:.0f} MiB of SQL)"
    report.add("drills: run on 1 worker (1 core)", one["wall"], "s", note=note)
    report.add("drills: run on 2 workers (1 core each)", two["wall"], "s", note=f"{int(two['steps'])} steps")
    report.add("drills: speed-up, 2 workers vs 1", one["wall"] / two["wall"], "x", note="ideal 2.0")
    report.add("drills: one drill's own time (1 worker)", one["drilling"] / DRILLS, "s", note="recorded")
    per_hour = DRILLS / one["wall"] * 3600
    report.add("per-worker drills (1 worker)", per_hour, "drills/h", note="whole run, overheads included")
    drilled = per_hour * one["staged"] / 2**30
    report.add("per-worker drilled bytes (1 worker)", drilled, "GiB/h", note="staged (gzip)")


# ---------------------------------------------------------------- the benchmark


def environment(work: Path) -> dict[str, str]:
    from backup_pipeline.storage.database import ensure_database
    from backup_pipeline.storage.embedded import embedded_server_url

    server = embedded_server_url((work / "pgdata").resolve())
    values = {
        "BACKUP_PIPELINE_HOME": str(work / "home"),
        "BACKUP_STORAGE_ROOT": str(work / "deposit"),
        "BACKUP_PIPELINE_JOBS_FILE": str(work / "jobs.yaml"),
        "BACKUP_PIPELINE_DATABASE_URL": ensure_database(server, "backup_pipeline"),
        "BACKUP_PIPELINE_DAGSTER_PG_URL": ensure_database(server, "dagster"),
        "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
        # One step per dump: the steps spread over the workers whatever agent the dumps belong to.
        "BACKUP_PIPELINE_MEASURE_BATCH_BYTES": str(DUMP_MIB << 20),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    (work / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        Path(__file__).resolve().parents[1] / "dagster.yaml", work / "dagster_home" / "dagster.yaml"
    )
    os.environ.update(values)
    return dict(os.environ)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "celery")
    parser.add_argument(
        "--parts", default="scans,rows,drills", help="comma-separated: scans (the bytes), rows, drills"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    root, reports, total = build(work) if "scans" in parts else (work / "deposit", work / "reports", 0)
    env = environment(work)
    gib = total / 2**30
    load_before = os.getloadavg()
    port = _free_port()
    redis = _start(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        work / "redis.log",
        env,
    )
    figures: dict[str, dict[str, float]] = {}
    try:
        _wait(work / "redis.log", "Ready to accept connections", redis)
        celery = env | {
            "BACKUP_PIPELINE_EXECUTOR": "celery",
            "BACKUP_PIPELINE_CELERY_BROKER": f"redis://127.0.0.1:{port}/0",
        }
        ways: list[tuple[str, dict[str, str], list[int] | None]] = [
            ("multiprocess executor", env | {"BACKUP_PIPELINE_EXECUTOR": "multiprocess"}, None),
            ("celery, 1 worker (1 core)", celery, [0]),
            ("celery, 2 workers (1 core each)", celery, [0, 1]),
        ]
        for name, way_env, cores in ways if "scans" in parts else []:
            reset(way_env, work, root, reports)
            warm(root)
            with workers(way_env, cores, work) if cores else contextlib.nullcontext():
                first = scan(way_env, work, AT)
                idle = scan(way_env, work, IDLE_AT)
            figures[name] = {
                "first": first["wall"],
                "steps": first["steps"],
                "measuring": first["measuring"],
                "idle_overhead": idle["overhead"],
            }
            print(f"{name}: {json.dumps(figures[name])}", flush=True)
        rows = rows_per_worker(work, celery) if "rows" in parts else None
        drills = drills_per_worker(work, celery) if "drills" in parts else None
    finally:
        _stop(redis)
        stop_server(work / "pgdata")
    load_after = os.getloadavg()
    report = Report("celery: a bytes-heavy fleet and restore drills on Celery workers")
    if figures:
        add_scan_figures(report, figures, gib)
    if rows is not None:
        note = f"{ROW_JOBS} jobs of 2 KiB dumps, one scan"
        report.add("per-worker jobs (1 worker)", rows, "jobs/h", note=note)
    if drills is not None:
        add_drill_figures(report, drills)
    report.add("load average before / after", load_before[0], "", note=f"after {load_after[0]:.2f} (2 cores)")
    report.print()
    return report


def add_scan_figures(report: Report, figures: dict[str, dict[str, float]], gib: float) -> None:
    report.add(
        "data", gib, "GiB", note=f"{AGENTS} agents x {DUMPS} zstd dumps of {DUMP_MIB} MiB, one step each"
    )
    for name, f in figures.items():
        report.add(f"{name}: scan", f["first"], "s", note=f"{int(f['steps'])} steps")
        report.add(f"{name}: throughput", gib / f["first"], "GiB/s")
        report.add(f"{name}: measurement steps' own time", f["measuring"], "s", note="summed over steps")
        report.add(f"{name}: per-step overhead", f["idle_overhead"], "s", note="idle re-scan, 6 steps")
    one, two = (
        figures["celery, 1 worker (1 core)"]["first"],
        figures["celery, 2 workers (1 core each)"]["first"],
    )
    report.add("speed-up, 2 workers vs 1", one / two, "x", note="ideal 2.0 on two idle cores")
    mp = figures["multiprocess executor"]["first"]
    report.add("2 workers vs multiprocess executor", mp / two, "x", note="> 1: the workers are faster")
    report.add("per-worker throughput (1 worker)", gib / one * 3600, "GiB/h")


if __name__ == "__main__":
    main()
