"""MariaDB drills: a restore drill of a 1 GiB mariadb-dump, vs a bare `mariadb < dump` into a fresh
server, in the same run.

The dump is mariadb-dump output of a sample database of a little over 1 GiB (rows one a line, as
mariadb-dump 10.11 writes them), built once with the drills' own MariaDB sample server, then kept
under benchmarks/out/mariadb_drills/. The reference runs in a fresh scratch MariaDB started exactly as
drills start theirs (same binaries, same settings, same sandbox), and only the client's restore is
timed: no guard, the admin account. The drill is timed end to end: `backup-pipeline drill` in its own
process (start-up, the template's copy and the server's start, streaming through the guard, the
counts and `CHECK TABLE … EXTENDED`, the bookkeeping), its peak memory measured for that process
alone. Each drill runs beside a reference, in both orders, three times: the figure is the median of
the pairs' ratios, which a shared machine's changing load moves least.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import SCRATCH, Report
from benchmarks.drills import drill, environment, load, warm, workspace
from benchmarks.fleet import _stop_embedded_server

AGENT = "BENCH_DRILL_MARIADB"
ROWS = 16_000_000  # invoices: a little over 1 GiB of mariadb-dump with their customers


def build_dump(deposit: Path, env, rows: int) -> Path:  # type: ignore[no-untyped-def]
    """The mariadb-dump of the sample database, staged in its agent's folder (reused when built)."""
    from backup_pipeline.app.sample_databases import MariadbSampleServer, SampleDatabase

    path = deposit / AGENT / "database" / "bench_db.sql"
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with MariadbSampleServer(env) as server:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            server.dump_to(SampleDatabase("bench_db", rows=rows), fd)
        finally:
            os.close(fd)
    partial.replace(path)
    return path


def reference(env, dump: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds of a bare `mariadb < dump` into a fresh server started as drills start theirs; then,
    apart, the seconds of the drill's checks (counts and CHECK TABLE … EXTENDED) on what it restored."""
    from backup_pipeline.adapters.drill_host import Limits
    from backup_pipeline.adapters.scratch_mariadb import DATABASE
    from backup_pipeline.core.drills import DrillPolicy
    from backup_pipeline.drill.restore import StderrTail
    from backup_pipeline.drill.restore_mariadb import mariadb_server_settings
    from backup_pipeline.storage.scratch_mariadb import inspect_mariadb

    policy = DrillPolicy()
    with env.mariadb.server(Limits(env.memory_bytes, policy.max_bytes), "reference") as server:
        server.create()
        server.start_from(env.mariadb.template(), mariadb_server_settings(policy, env.statement_timeout))
        warm(dump)
        start = time.perf_counter()
        with open(dump, "rb") as source:  # from stdin, as drills do: the sandbox cannot see its folder
            process = server.client([DATABASE], admin=True, stdin=source)
        errors = StderrTail(process.stderr)
        code = process.wait()
        elapsed = time.perf_counter() - start
        errors.join()
        if code != 0:
            raise RuntimeError(f"the reference mariadb failed: {errors.text[-2000:]}")
        start = time.perf_counter()
        inspect_mariadb(server, env.statement_timeout)
        return elapsed, time.perf_counter() - start


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "mariadb_drills")
    parser.add_argument("--rows", type=int, default=ROWS, help="invoices in the sample database")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs, interleaved in both orders")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    before = load()
    env = environment(root)
    if env.mariadb is None or env.mariadb.tools is None:
        raise SystemExit(f"no MariaDB here: {env.mariadb.missing if env.mariadb else ''}")
    dump = build_dump(root / "deposit", env, args.rows)
    env_vars = os.environ | {
        "BACKUP_STORAGE_ROOT": str(root / "deposit"),
        "BACKUP_PIPELINE_JOBS_FILE": str(root / "jobs.yaml"),
        "BACKUP_PIPELINE_HOME": str(root / "home"),
        "BACKUP_PIPELINE_DRILL_DIR": str(root / "drills"),
        "BACKUP_PIPELINE_SETTLE_SECONDS": "0",
    }
    env_vars.pop("BACKUP_PIPELINE_DATABASE_URL", None)
    env_vars.pop("DAGSTER_HOME", None)
    workspace(root, {"mariadb": dump}, env_vars, agents={"mariadb": AGENT})

    report = Report("mariadb_drills: restore drill vs bare mariadb < dump")
    report.add("mariadb-dump", dump.stat().st_size / 2**30, "GiB", note=f"{args.rows:,} invoices")
    bares, checks, walls, inner, rss = [], [], [], [], 0.0
    row: dict = {}  # type: ignore[type-arg]
    for round_ in range(args.repeat):
        if round_ % 2:  # the other order too: what ran just before leaves the machine warmer
            wall, peak, row = drill(env_vars, AGENT, dump)
            bare, checked = reference(env, dump)
        else:
            bare, checked = reference(env, dump)
            wall, peak, row = drill(env_vars, AGENT, dump)
        bares.append(bare)
        checks.append(checked)
        print(
            f"round {round_ + 1}: reference {bare:.1f} s (its checks apart {checked:.1f} s), "
            f"drill {wall:.1f} s (recorded {row['duration_seconds']:.1f} s), {load()}",
            flush=True,
        )
        walls.append(wall)
        inner.append(row["duration_seconds"])
        rss = max(rss, peak)
    ratio = statistics.median(w / b for b, w in zip(bares, walls, strict=True))
    runs = ", ".join(f"{b:.1f}/{w:.1f}" for b, w in zip(bares, walls, strict=True))
    report.add("bare mariadb < dump (reference)", min(bares), "s", note=f"runs reference/drill: {runs} s")
    report.add("backup-pipeline drill", min(walls), "s", note=f"{row['tables']} tables, {row['rows']:,} rows")
    report.add(
        "of which the drill itself", min(inner), "s", note=f"server, restore, checks: {row['amcheck']}"
    )
    report.add("drill / reference", ratio, "x", target="<= 1.2", met=ratio <= 1.2, note="median of the pairs")
    apart = statistics.median((w - c) / b for b, c, w in zip(bares, checks, walls, strict=True))
    report.add(
        "the checks alone (counts, CHECK TABLE … EXTENDED)",
        min(checks),
        "s",
        note="run on the reference's server after its timed restore",
    )
    report.add("drill without its checks / reference", apart, "x", note="median of the pairs")
    report.add("peak memory of the drill's process", rss, "MiB", target="< 300", met=rss < 300)
    report.add(
        "machine load before / after", 0, "", note=f"{before} / {load()} at {datetime.now(UTC):%H:%M}Z"
    )
    report.print()
    _stop_embedded_server(root / "home" / "pgdata")  # the CLI left it running: nothing else uses it
    return report


if __name__ == "__main__":
    main()
