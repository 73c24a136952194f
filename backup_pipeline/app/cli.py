"""`backup-pipeline`: the command line. Tables for people, `--json` arrays for scripts.

The edge of the product: settings are read here (environment and `.env`), user input is parsed
here once (an `--at` instant becomes the `as_of` every layer below receives). Expected errors (a bad
jobs file, an unreachable database, a missing deposit root) print one actionable line on stderr and
exit non-zero, without a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from backup_pipeline.app import render, views
from backup_pipeline.app.errors import ScanError
from backup_pipeline.app.progress import progress, progress_bars
from backup_pipeline.config.jobs_file import JobsFileError
from backup_pipeline.config.settings import Settings, load_settings
from backup_pipeline.core.cycles import parse_instant
from backup_pipeline.storage.database import (
    DatabaseFailure,
    DatabaseUnavailable,
    db_error_line,
    open_database,
)

if TYPE_CHECKING:  # loaded only by the commands that use them
    from backup_pipeline.drill.restore import DrillEnvironment
    from backup_pipeline.notify.deliver import NotifySummary

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (JobsFileError, DatabaseUnavailable, ScanError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.ClickException(f"invalid configuration or argument: {exc}") from None
        except DatabaseFailure as exc:  # PostgreSQL went away mid-command: the driver's words, never the URL
            raise click.ClickException(f"PostgreSQL unreachable or failing: {db_error_line(exc)}") from None

    return wrapper


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings()
    except Exception as exc:  # pydantic's ValidationError: say which variable is wrong
        raise click.ClickException(f"invalid environment configuration: {exc}") from None
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


def _as_of(value: str | None) -> datetime:
    """`--at`, parsed once: the instant everything below is "as of" (the real clock when absent)."""
    if not value:
        return datetime.now(UTC)
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 date and time", param_hint="--at") from None


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option) from None


def emit(
    rows: list[dict[str, Any]], as_json: bool, columns: Iterable[str] | None = None, *, wide: bool = False
) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    click.echo(render.table(rows, list(columns) if columns else None, wide=wide))


wide_option = click.option("--wide", is_flag=True, help="Show hashes and run ids in full.")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the scan does.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Watch the database backups of a fleet of remote sites."""
    ctx.obj = {"log_level": "INFO" if verbose else "WARNING"}
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


# ---------------------------------------------------------------- expected backups


@main.group()
def backups() -> None:
    """The expected backups (declared in the jobs file, synced into PostgreSQL)."""


@backups.command("sync")
@click.option(
    "--file",
    "jobs_file",
    type=click.Path(path_type=Path),
    help="Jobs file (default BACKUP_PIPELINE_JOBS_FILE). Scans keep it until that one changes.",
)
@click.option("--at", help="The instant new expected backups are created at (ISO-8601, default now).")
@friendly_errors
def backups_sync(jobs_file: Path | None, at: str | None) -> None:
    """Upsert the jobs file into PostgreSQL; expected backups no longer declared become inactive."""
    from backup_pipeline.scan.sync import sync_jobs_file

    settings = _settings()
    summary = sync_jobs_file(settings, open_database(settings), _as_of(at), path=jobs_file)
    click.echo(f"{summary.active} active job(s): {summary.added} added, {summary.deactivated} deactivated")


@backups.command("list")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def backups_list(as_json: bool) -> None:
    """Every expected backup known to PostgreSQL, active or not."""
    emit(views.backup_rows(open_database(_settings()), active_only=False), as_json, views.BACKUP_COLUMNS)


# `jobs` is the first design's word (docs/design.md §1), kept as an alias: `jobs sync` still works.
main.add_command(
    click.Group("jobs", commands=backups.commands, hidden=True, help="Alias of `backups`."), "jobs"
)


# ---------------------------------------------------------------- scanning


@main.command()
@click.option("--at", help="The instant the evaluation is as of (ISO-8601, default the real clock).")
@click.option("--partition", "partitions", multiple=True, help="Day to evaluate (YYYY-MM-DD); repeatable.")
@click.option("--rehash", is_flag=True, help="Measure staged files again instead of reusing stored results.")
@wide_option
@click.pass_context
@friendly_errors
def scan(ctx: click.Context, at: str | None, partitions: tuple[str, ...], rehash: bool, wide: bool) -> None:
    """Run the Dagster scan job in process (its runs show in the UI when DAGSTER_HOME is set)."""
    from backup_pipeline.app.run_progress import RunProgress
    from backup_pipeline.app.runner import run_scan

    days = [_day(p, "--partition") for p in partitions]
    settings = _settings()
    with progress_bars() as bars:  # each run's steps, on a terminal only
        runs = run_scan(
            settings,
            _as_of(at),
            partitions=days or None,
            rehash=rehash,
            log_level=ctx.obj["log_level"],
            progress=RunProgress(bars),
        )
    click.echo(render.table(views.run_rows(runs), wide=wide))
    failed = [r for r in runs if not r.success]
    try:
        click.echo(render.table(views.status_counts(open_database(settings), [r.day for r in runs])))
    except DatabaseFailure:
        if not failed:
            raise
    notified = _notification_line([r.notified for r in runs if r.notified is not None])
    if notified:
        click.echo(notified)
    if failed:
        raise click.ClickException(f"scan of {failed[0].day} failed: {failed[0].error}")
    unarchived = [e for r in runs if r.archived for e in r.archived.errors]
    if unarchived:  # the verdicts stand; the reports stay in log/ and the next scan retries
        raise click.ClickException(
            f"{len(unarchived)} report(s) could not be archived (left in log/, retried by the next scan): "
            + "; ".join(unarchived[:3])
            + ("; …" if len(unarchived) > 3 else "")
        )


def _notification_line(summaries: list[NotifySummary]) -> str | None:
    """What the notify steps did, with redacted target labels only."""
    sent = sum(s.sent for s in summaries)
    failed = sum(s.failed for s in summaries)
    held = sum(s.held for s in summaries)
    deferred = sum(s.deferred for s in summaries)
    if not (sent or failed or held or deferred):
        return None
    line = f"notifications: {sent} alert(s) delivered, {failed} failed, {held} held by a silence"
    if deferred:
        line += f", {deferred} waiting to retry a failing target"
    down = sorted({f"{t.target} [{t.target_id}]" for s in summaries for t in s.targets if not t.sent})
    if down:
        line += f" (retried by the next scan; failing: {', '.join(down)})"
    return line


@main.command()
@click.option("--json", "as_json", is_flag=True)
@wide_option
@friendly_errors
def status(as_json: bool, wide: bool) -> None:
    """One row per active expected backup with its current status."""
    rows = views.backup_rows(open_database(_settings()), active_only=True)
    # The contract's fields exactly (`backups list` shows the whole row).
    emit(
        [{c: row[c] for c in views.STATUS_COLUMNS} for row in rows], as_json, views.STATUS_COLUMNS, wide=wide
    )


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--agent")
@click.option("--database")
@click.option("--since", help="First cycle day (YYYY-MM-DD).")
@click.option("--wide", is_flag=True, help="Every column, hashes and run ids in full.")
@friendly_errors
def entries(as_json: bool, agent: str | None, database: str | None, since: str | None, wide: bool) -> None:
    """One row per evaluated cycle."""
    since_day = _day(since, "--since") if since else None
    rows = views.entry_rows(open_database(_settings()), agent, database, since_day)
    emit(rows, as_json, None if as_json or wide else views.ENTRY_COLUMNS, wide=wide)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@wide_option
@friendly_errors
def reports(as_json: bool, wide: bool) -> None:
    """Every status report file recorded, accepted or rejected, and where it was archived."""
    emit(views.report_rows(open_database(_settings())), as_json, wide=wide)


# ---------------------------------------------------------------- restore drills


@main.command()
@click.option("--agent", help="The agent whose backups to drill.")
@click.option("--database", help="The database to drill.")
@click.option("--cycle", help="The cycle to drill (ISO-8601); default each backup's latest good one.")
@click.option("--due", is_flag=True, help="Drill what is due by the policy (what the daily drill job does).")
@click.option("--redrill", is_flag=True, help="Drill again an entry already drilled (a new attempt).")
@click.option("--at", help="The instant the drills are as of (ISO-8601, default the real clock).")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def drill(
    agent: str | None,
    database: str | None,
    cycle: str | None,
    due: bool,
    redrill: bool,
    at: str | None,
    as_json: bool,
) -> None:
    """Restore backups into throw-away PostgreSQL clusters and check what comes back.

    Exit code 0 when the drills ran, whatever their outcomes; 1 when they could not run.
    """
    from backup_pipeline.drill.run import DrillUnavailable, drill_entries, plan_drills
    from backup_pipeline.notify.deliver import notify
    from backup_pipeline.scan.sync import sync_before_scan
    from backup_pipeline.storage.drills import chosen_entries

    if due == bool(agent or database or cycle):
        raise click.UsageError("give either --due, or --agent/--database (and --cycle)")
    when = _as_of(at)
    settings = _settings()
    db = open_database(settings)
    sync_before_scan(settings, db, when)
    deadline = None
    if due:
        entry_ids = [i for batch in plan_drills(settings, db, when) for i in batch.entry_ids]
        deadline = datetime.now(UTC) + timedelta(minutes=settings.drill_budget_minutes)
    else:
        with db.sessions() as session:
            entry_ids = chosen_entries(session, agent, database, _cycle(cycle), when)
        if not entry_ids:
            raise click.ClickException("no entry to drill: no good (SUCCESS or HASH_MISMATCH) cycle matches")
    try:
        with progress("restore drills", total=len(entry_ids)) as task:
            results = drill_entries(
                settings,
                db,
                entry_ids,
                when,
                redrill=redrill,
                deadline=deadline,
                on_drill=lambda _: task.advance(),
            )
    except DrillUnavailable as exc:
        raise click.ClickException(f"the drills could not run: {exc}") from None
    emit(views.drill_rows(results), as_json, [*views.DRILL_COLUMNS, "note"])
    notified = _notification_line([notify(settings, db, None)])
    if notified:
        click.echo(notified, err=as_json)
    refused = [r for r in results if r.outcome is None and r.skipped and not due]
    if refused:
        raise click.ClickException(f"{len(refused)} drill(s) could not run: {refused[0].skipped}")


def _cycle(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 date and time", param_hint="--cycle"
        ) from None


# ---------------------------------------------------------------- simulation, UI, demo


@main.command()
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Deposit root to write.")
@click.option("--agents", default=3, show_default=True, type=click.IntRange(1))
@click.option("--databases", default=4, show_default=True, type=click.IntRange(1))
@click.option("--days", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--size", default=64 * 1024, show_default=True, type=click.IntRange(64), help="Dump size in bytes."
)
@click.option("--compression", type=click.Choice(["gz", "zst"]), default="gz", show_default=True)
@click.option(
    "--style", type=click.Choice(["canonical", "field", "mixed"]), default="mixed", show_default=True
)
@click.option("--faults", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option(
    "--dumps",
    type=click.Choice(["synthetic", "real"]),
    default="synthetic",
    show_default=True,
    help="real: pg_dump (and mariadb-dump, where MariaDB is installed) of small real databases (for "
    "restore drills).",
)
@click.option(
    "--dump-format",
    type=click.Choice(["plain", "custom", "mariadb", "mixed"]),
    default="mixed",
    show_default=True,
)
@click.option(
    "--drill-faults",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Real dumps: fraction of good cycles given a restore-drill failure kind.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--at", help="The simulated 'now' (ISO-8601, default the real clock).")
@click.option(
    "--jobs-file",
    type=click.Path(path_type=Path),
    help="Where to write the jobs file (default ROOT/jobs.yaml).",
)
@friendly_errors
def simulate(**options: Any) -> None:
    """Write a simulated deposit tree (reports, dumps, faults) and its jobs file."""
    from backup_pipeline.app.simulator import SimulationSpec
    from backup_pipeline.app.simulator import simulate as run

    options["at"] = _as_of(options.pop("at"))
    environment = None
    if options["dumps"] == "real":
        from backup_pipeline.drill.run import DrillUnavailable, prepare_environment

        try:
            environment = prepare_environment(_settings())
        except DrillUnavailable as exc:
            raise click.ClickException(f"real dumps need PostgreSQL's binaries: {exc}") from None
    with progress("simulating agents", total=options["agents"]) as task:
        result = run(SimulationSpec(**options), environment, on_agent=task.advance)
    click.echo(
        f"simulated {len(result.agents)} agent(s): {result.reports} report(s), {result.dumps} dump(s) "
        f"({result.dump_bytes} bytes) under {result.root}; jobs file {result.jobs_file}"
    )


@main.command()
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@friendly_errors
def dev(port: int, host: str) -> None:
    """Start the Dagster UI and daemon (dagster dev) on the product's PostgreSQL."""
    from backup_pipeline.app.launcher import run_dagster_dev

    sys.exit(run_dagster_dev(_settings(), host=host, port=port))


@main.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    help="Steps run at once (default: the number of CPUs).",
)
@click.option(
    "--queue", "-Q", "queues", multiple=True, help="Queue to consume (default: BACKUP_PIPELINE_CELERY_QUEUE)."
)
@friendly_errors
def worker(concurrency: int | None, queues: tuple[str, ...]) -> None:
    """Run a Celery worker that executes the steps of the product's runs (BACKUP_PIPELINE_EXECUTOR=celery)."""
    import os

    from backup_pipeline.app.launcher import ensure_dagster_storage_url
    from backup_pipeline.defs.workers import run_worker

    settings = _settings()
    if settings.executor != "celery":
        raise click.ClickException(
            "a worker runs steps sent through a broker: set BACKUP_PIPELINE_EXECUTOR=celery and "
            "BACKUP_PIPELINE_CELERY_BROKER (the same for the daemon, the webserver and every worker)"
        )
    open_database(settings)  # reachable and migrated before the first step arrives
    # The steps' processes rebuild the definitions from their environment: make it these settings,
    # and give Dagster's own storage the URL the shipped dagster.yaml reads.
    settings.export()
    ensure_dagster_storage_url(settings)
    run_worker(
        settings,
        concurrency=concurrency or os.cpu_count() or 1,
        queues=list(queues) or [settings.celery_queue],
    )


@main.command()
@click.option("--root", default=Path("demo/deposit"), type=click.Path(path_type=Path), show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--no-ui", is_flag=True, help="Stop after printing the status table.")
@friendly_errors
def demo(root: Path, port: int, no_ui: bool) -> None:
    """Simulate a small fleet, scan it, print its status, then open the Dagster UI on it."""
    from backup_pipeline.app.launcher import prepare_dagster_home, run_dagster_dev
    from backup_pipeline.app.runner import run_scan
    from backup_pipeline.app.simulator import SimulationSpec
    from backup_pipeline.app.simulator import simulate as run

    as_of = datetime.now(UTC)
    jobs_file = root.parent / "jobs.yaml"
    environment = _demo_drill_environment()
    sim = run(
        SimulationSpec(
            root=root,
            agents=4,
            databases=5,
            days=3,
            faults=0.25,
            seed=7,
            at=as_of,
            jobs_file=jobs_file,
            dumps="real" if environment is not None else "synthetic",
            drill_faults=0.15,
        ),
        environment,
    )
    click.echo(f"simulated {len(sim.agents)} agents, {sim.reports} reports, {sim.dumps} dumps under {root}")
    days = sorted({date.fromisoformat(o["cycle_expected_at"][:10]) for o in sim.outcomes})
    # The UI's daily partitions start at the simulated fleet's first day, not years of empty days.
    settings = _settings(storage_root=root, jobs_file=jobs_file, start_date=days[0])
    settings.export()
    prepare_dagster_home(settings)
    runs = run_scan(settings, as_of, partitions=days)
    click.echo(render.table(views.run_rows(runs)))
    emit(views.backup_rows(open_database(settings), active_only=True), False, views.STATUS_COLUMNS)
    if environment is not None:
        _demo_drills(settings, environment, as_of)
    if not no_ui:
        sys.exit(run_dagster_dev(settings, host="127.0.0.1", port=port))


def _demo_drill_environment() -> DrillEnvironment | None:
    """The drills' environment when this machine can drill (the demo then writes real dumps); else
    the demo says why and goes on with synthetic dumps."""
    from backup_pipeline.drill.run import DrillUnavailable, prepare_environment

    try:
        return prepare_environment(_settings())
    except DrillUnavailable as exc:
        click.echo(f"restore drills left out of the demo: {exc}")
        return None


def _demo_drills(settings: Settings, environment: DrillEnvironment, as_of: datetime) -> None:
    """The restore drills that are due, as the daily drill job would run them."""
    from backup_pipeline.drill.run import DrillUnavailable, drill_entries, plan_drills

    db = open_database(settings)
    entry_ids = [i for batch in plan_drills(settings, db, as_of) for i in batch.entry_ids]
    try:
        with progress("restore drills", total=len(entry_ids)) as task:
            results = drill_entries(
                settings, db, entry_ids, as_of, environment=environment, on_drill=lambda _: task.advance()
            )
    except DrillUnavailable as exc:
        click.echo(f"restore drills could not run: {exc}")
        return
    click.echo("\nRestore drills of each database's latest good backup:")
    emit(views.drill_rows(results), False, views.DRILL_COLUMNS)


# ---------------------------------------------------------------- notifications and the digest


@main.group()
def notify() -> None:
    """Notifications: test the targets, see every alert and attempt."""


def _declared_notify_lists(settings: Settings) -> list[list[str]]:
    """Each declared expected backup's `notify:` list, from the jobs file (none without one)."""
    from backup_pipeline.config.jobs_file import load_jobs_file

    if not settings.jobs_file.exists():
        return []
    declared = load_jobs_file(settings.jobs_file, settings.window_minutes, settings.cache_dir)
    return [backup.alerting.notify for backup in declared]


@notify.command("test")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def notify_test(as_json: bool) -> None:
    """Send a test message to every configured target and print each result (targets redacted)."""
    from backup_pipeline.notify.deliver import send_test

    settings = _settings()
    results = send_test(settings, open_database(settings), _declared_notify_lists(settings))
    if not results:
        raise click.ClickException(
            "no notification target configured: set BACKUP_PIPELINE_NOTIFY_URLS or add `notify:` to a job"
        )
    rows = [
        {
            "target": r.target,
            "target_id": r.target_id,
            "configured_in": r.source,
            "result": "sent" if r.sent else "FAILED",
            "error": r.error,
        }
        for r in results
    ]
    emit(rows, as_json)
    failed = [r for r in results if not r.sent]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} target(s) could not be notified")


@notify.command("log")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@friendly_errors
def notify_log(as_json: bool, limit: int) -> None:
    """Every notification attempt, newest first: target, cycle, event, sent or failed, error."""
    rows = views.attempt_rows(open_database(_settings()), limit)
    columns = ["attempted_at", "target", "kind", "agent_id", "database_name", "cycle_expected_at", "event"]
    emit(rows, as_json, None if as_json else [*columns, "result", "error"])


@notify.command("alerts")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@friendly_errors
def notify_alerts(as_json: bool, limit: int) -> None:
    """The latest alerts, held or not, with the state of their delivery to each target."""
    rows = views.alert_rows(open_database(_settings()), limit)
    columns = ["raised_at", "agent_id", "database_name", "cycle_expected_at", "event", "held_by"]
    emit(rows, as_json, None if as_json else [*columns, "deliveries"])


@main.command()
@click.option("--date", "day", help="The day to digest (YYYY-MM-DD, default today UTC).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="csv: one row per agent and a TOTAL row, as the file the Dagster asset writes.",
)
@friendly_errors
def digest(day: str | None, fmt: str) -> None:
    """The fleet's health on one day (the digest the `fleet_digest` asset materializes)."""
    from backup_pipeline.digest.build import build_digest
    from backup_pipeline.digest.render import to_csv, to_json

    when = _day(day, "--date") if day else datetime.now(UTC).date()
    built = build_digest(open_database(_settings()), when)
    if fmt == "csv":
        click.echo(to_csv(built), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(to_json(built), indent=1))
    else:
        click.echo(render.digest_text(built))


main.add_command(
    click.Command(
        "report", params=digest.params, callback=digest.callback, hidden=True, help="Alias of `digest`."
    ),
    "report",
)


# ---------------------------------------------------------------- Prometheus metrics and status badges


@main.group()
def metrics() -> None:
    """Prometheus metrics and status badges of the fleet, read from PostgreSQL at each request."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@friendly_errors
def metrics_serve(host: str, port: int) -> None:
    """Serve /metrics (Prometheus), /healthz and /badge/AGENT[/DATABASE].svg|.json until stopped."""
    from backup_pipeline.app.metrics_server import serve

    settings = _settings()
    open_database(settings)  # a wrong URL or an unreachable server is said now, not at the first scrape
    try:
        serve(lambda: open_database(settings), host, port, lambda url: click.echo(f"serving {url}/metrics"))
    except OSError as exc:  # the port is taken, the address is not this machine's...
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass


@metrics.command("dump")
@friendly_errors
def metrics_dump() -> None:
    """Print the metrics once in Prometheus' text format (e.g. for node_exporter's textfile collector)."""
    from backup_pipeline.app.metrics_server import exposition

    click.echo(exposition(open_database(_settings())).decode(), nl=False)


if __name__ == "__main__":
    main()
