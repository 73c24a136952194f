"""Drills: restore-drill throughput on a 1 GiB plain dump and a custom-format dump of the same
database, vs a bare `psql -f` / `pg_restore` of the same file into a fresh cluster, in the same run.

The dumps are pg_dump output of a sample database of a little over 1 GiB of COPY text (built once
with the drills' own sample server, then kept under benchmarks/out/drills/). The references run in a
fresh scratch cluster started exactly as drills start theirs (same binaries, same settings), and only
the restore command is timed. The drill is timed end to end: `backup-pipeline drill` in its own
process (start-up, cluster copy and start, streaming through the guard, the checks, the bookkeeping),
its peak RSS measured for that process alone (the PostgreSQL processes are not the product's). Each
drill runs beside a reference, in both orders, three times: the figure is the median of the pairs'
ratios, which a shared machine's changing load moves least.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import PYTHON, SCRATCH, Report, run
from benchmarks.fleet import _stop_embedded_server

AGENTS = {"plain": "BENCH_DRILL_PLAIN", "custom": "BENCH_DRILL_CUSTOM"}  # each stages bench_db
DAY = "2025-11-21"
ROWS = 16_000_000  # invoices: a little over 1 GiB of plain dump with their customers


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


def environment(root: Path):  # type: ignore[no-untyped-def]
    from backup_pipeline.config.settings import Settings
    from backup_pipeline.drill.run import prepare_environment

    root.mkdir(parents=True, exist_ok=True)
    return prepare_environment(Settings(drill_dir=root / "drills", home=root / "home"))


def build_dumps(deposit: Path, env, rows: int) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The plain and custom dumps of the sample database, staged in their agents' folders of the
    deposit (reused when already built; never hard-linked there: the scan refuses hard links)."""
    from backup_pipeline.app.sample_databases import SampleDatabase, SampleServer

    paths = {
        "plain": deposit / AGENTS["plain"] / "database" / "bench_db.sql",
        "custom": deposit / AGENTS["custom"] / "database" / "bench_db.dump",
    }
    if all(p.exists() and p.stat().st_size > 0 for p in paths.values()):
        return paths
    db = SampleDatabase("bench_db", rows=rows)
    with SampleServer(env) as server:
        for fmt, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                server.dump_to(db, fmt, fd)
            finally:
                os.close(fd)
            partial.replace(path)
    return paths


def reference(env, dump: Path, fmt: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds of a bare psql -f / pg_restore of `dump` into a fresh cluster (as its superuser)."""
    from backup_pipeline.adapters.drill_host import Limits
    from backup_pipeline.adapters.scratch_cluster import ScratchCluster
    from backup_pipeline.core.drills import DrillPolicy
    from backup_pipeline.drill.restore import StderrTail, server_settings

    policy = DrillPolicy()
    limits = Limits(env.memory_bytes, policy.max_bytes)
    with ScratchCluster(env.root, env.tools, env.user, limits, "reference", env.sandbox) as c:
        c.create()
        c.start_from(env.template, server_settings(policy, env.statement_timeout))
        if fmt == "plain":  # the dump is read from stdin, as drills do: the sandbox cannot see its folder
            args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "drill", "-f", "-"]
            tool = "psql"
        else:
            args, tool = ["--exit-on-error", "-d", "drill"], "pg_restore"
        warm(dump)
        start = time.perf_counter()
        with open(dump, "rb") as source:
            process = c.client(tool, args, admin=True, stdin=source)
        errors = StderrTail(process.stderr)
        code = process.wait()
        elapsed = time.perf_counter() - start
        errors.join()
        if code != 0:
            raise RuntimeError(f"the reference {tool} failed: {errors.text[-2000:]}")
        return elapsed


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 << 20):
            pass


def workspace(
    root: Path, dumps: dict[str, Path], env_vars: dict[str, str], agents: dict[str, str] = AGENTS
) -> None:
    """Each dump staged for one cycle of its agent (`agents`, by dump), scanned (once: the entries
    are kept)."""
    marker = root / "scanned.json"
    stamp = json.dumps({k: [str(p), p.stat().st_size, p.stat().st_mtime] for k, p in dumps.items()})
    if marker.exists() and marker.read_text() == stamp:
        return
    for fmt, path in dumps.items():
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
        section = {
            "BACKUP": {"status": True},
            "COMPRESS": {"status": True, "sha256_checksum": digest.hexdigest(), "size": path.stat().st_size},
            "TRANSFER": {"status": True},
            "staged_file_name": path.name,
        }
        agent = agents[fmt]
        report = {
            "operation_end_time": f"{DAY}T13:05:00Z",
            "agent_id": agent,
            "databases": {"bench_db": section},
        }
        log = root / "deposit" / agent / "log"
        log.mkdir(parents=True, exist_ok=True)
        (log / f"20251121_130500_{agent}.json").write_text(json.dumps(report))
    jobs = [
        {"agent_id": agent, "database_name": "bench_db", "expected_hour_utc": 13, "expected_minute_utc": 0}
        for agent in agents.values()
    ]
    (root / "jobs.yaml").write_text(json.dumps({"jobs": jobs}))
    scan = [PYTHON, "-m", "backup_pipeline.app.cli", "scan", "--at", f"{DAY}T23:00:00Z", "--partition", DAY]
    run(scan, env=env_vars)
    marker.write_text(stamp)


DRILL = """
import json, resource, sys, time
from click.testing import CliRunner
from backup_pipeline.app.cli import main
start = time.perf_counter()
result = CliRunner().invoke(main, sys.argv[1:], catch_exceptions=False)
elapsed = time.perf_counter() - start
assert result.exit_code == 0, result.output
rows = json.loads(result.stdout)
print(json.dumps({"seconds": elapsed, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": rows}))
"""


def drill(env_vars: dict[str, str], agent: str, dump: Path) -> tuple[float, float, dict]:  # type: ignore[type-arg]
    """(wall seconds of the whole command, its peak RSS in MiB, the drill's row)."""
    warm(dump)
    args = ["drill", "--agent", agent, "--cycle", f"{DAY}T13:00:00Z", "--redrill", "--json"]
    start = time.perf_counter()
    _, out = run([PYTHON, "-c", DRILL, *args], env=env_vars)
    wall = time.perf_counter() - start
    result = json.loads(out.strip().splitlines()[-1])
    (row,) = result["rows"]
    if row["outcome"] != "RESTORED":
        raise RuntimeError(f"the drill of {agent}'s bench_db did not restore: {row}")
    return wall, result["rss_mib"], row


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "drills")
    parser.add_argument("--rows", type=int, default=ROWS, help="invoices in the sample database")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs, interleaved in both orders")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    before = load()
    env = environment(root)
    dumps = build_dumps(root / "deposit", env, args.rows)
    env_vars = os.environ | {
        "BACKUP_STORAGE_ROOT": str(root / "deposit"),
        "BACKUP_PIPELINE_JOBS_FILE": str(root / "jobs.yaml"),
        "BACKUP_PIPELINE_HOME": str(root / "home"),
        "BACKUP_PIPELINE_DRILL_DIR": str(root / "drills"),
        "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
    }
    env_vars.pop("BACKUP_PIPELINE_DATABASE_URL", None)
    env_vars.pop("DAGSTER_HOME", None)
    workspace(root, dumps, env_vars)

    report = Report("drills: restore drill vs bare psql / pg_restore")
    size = dumps["plain"].stat().st_size
    report.add(
        "plain dump",
        size / 2**30,
        "GiB",
        note=f"custom archive {dumps['custom'].stat().st_size / 2**30:.2f} GiB",
    )
    for fmt, tool in (("plain", "psql -f"), ("custom", "pg_restore")):
        # Interleaved, best of `repeat` each: a shared machine's load moves between two runs.
        bares, walls, inner, rss = [], [], [], 0.0
        for round_ in range(args.repeat):
            if round_ % 2:  # the other order too: what ran just before leaves the machine warmer
                wall, peak, row = drill(env_vars, AGENTS[fmt], dumps[fmt])
                bares.append(reference(env, dumps[fmt], fmt))
            else:
                bares.append(reference(env, dumps[fmt], fmt))
                wall, peak, row = drill(env_vars, AGENTS[fmt], dumps[fmt])
            walls.append(wall)
            inner.append(row["duration_seconds"])
            rss = max(rss, peak)
        # Each drill against the reference run beside it; the median of those pairs is the figure.
        ratio = statistics.median(w / b for b, w in zip(bares, walls, strict=True))
        bare, wall = min(bares), min(walls)
        runs = ", ".join(f"{b:.1f}/{w:.1f}" for b, w in zip(bares, walls, strict=True))
        report.add(f"{fmt}: bare {tool} (reference)", bare, "s", note=f"runs reference/drill: {runs} s")
        report.add(
            f"{fmt}: backup-pipeline drill", wall, "s", note=f"{row['tables']} tables, {row['rows']:,} rows"
        )
        report.add(
            f"{fmt}: of which the drill itself", min(inner), "s", note="cluster, restore, checks (recorded)"
        )
        report.add(
            f"{fmt}: drill / reference",
            ratio,
            "x",
            target="<= 1.2",
            met=ratio <= 1.2,
            note="median of the pairs",
        )
        report.add(f"{fmt}: peak RSS of the drill's process", rss, "MiB", target="< 300", met=rss < 300)
    report.add(
        "machine load before / after", 0, "", note=f"{before} / {load()} at {datetime.now(UTC):%H:%M}Z"
    )
    report.print()
    _stop_embedded_server(root / "home" / "pgdata")  # the CLI left it running: nothing else uses it
    return report


if __name__ == "__main__":
    main()
