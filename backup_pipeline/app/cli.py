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
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from backup_pipeline.app import render, views
from backup_pipeline.app.errors import ConfigurationError, ScanError
from backup_pipeline.app.progress import progress, progress_bars
from backup_pipeline.config.jobs_file import JobsFileError
from backup_pipeline.config.settings import (
    ENV_FILE_NAME,
    Settings,
    SettingsError,
    find_env_file,
    load_settings,
)
from backup_pipeline.core.cycles import instant_problem, parse_instant
from backup_pipeline.core.sizes import format_byte_size, parse_byte_size
from backup_pipeline.core.text import visible
from backup_pipeline.storage.database import (
    Database,
    DatabaseFailure,
    DatabaseUnavailable,
    db_error_line,
    open_database,
)
from backup_pipeline.storage.embedded import EmbeddedServerError, embedded_server_exists, stop_embedded_server

if TYPE_CHECKING:  # loaded only by the commands that use them
    from backup_pipeline.app.runner import PartitionRun
    from backup_pipeline.drill.restore import DrillEnvironment
    from backup_pipeline.notify.deliver import NotifySummary

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (
            JobsFileError,
            DatabaseUnavailable,
            ScanError,
            ConfigurationError,
            FileNotFoundError,
            SettingsError,
            EmbeddedServerError,
        ) as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.ClickException(f"invalid configuration or argument: {exc}") from None
        except DatabaseFailure as exc:  # PostgreSQL went away mid-command: the driver's words, never the URL
            raise click.ClickException(f"PostgreSQL unreachable or failing: {db_error_line(exc)}") from None

    return wrapper


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:  # one line: the variable, its value, where it was set, what is expected
        raise click.ClickException(str(exc)) from None
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


def _must_exist(path: Path, what: str, named_by: str, *, folder: bool = False) -> None:
    if not (path.is_dir() if folder else path.is_file()):
        raise click.ClickException(
            f"{what} {path.resolve()} not found or not a {'folder' if folder else 'file'} "
            f"({named_by} names it, in the environment or a .env)"
        )


def _stored(settings: Settings) -> Database:
    """The product's database for a command that reads (or acts on) what is stored: never a new,
    empty embedded server in whatever folder the command happens to run from."""
    if settings.database_url is None and not embedded_server_exists(settings.embedded_pgdata):
        where = find_env_file()
        raise click.ClickException(
            f"no database: BACKUP_PIPELINE_DATABASE_URL is unset and there is no embedded PostgreSQL "
            f"in {settings.embedded_pgdata.resolve()}\n"
            + (
                f"hint: {where} does not set BACKUP_PIPELINE_HOME to where your data is"
                if where
                else "hint: run it where the demo ran (its .env says where everything is), or start "
                "with `backup-pipeline backups sync` or `scan`"
            )
        )
    return open_database(settings)


class ByteSizeParam(click.ParamType):
    """A byte size in the form settings and the jobs file accept (4096, 512MiB, 16GiB)."""

    name = "size"

    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            size = value if isinstance(value, int) else parse_byte_size(str(value))
        except ValueError as exc:
            self.fail(f"{value!r} {exc}", param, ctx)
        if size < self.minimum:
            self.fail(f"{value!r} is less than {format_byte_size(self.minimum)}", param, ctx)
        return size


def _as_of(value: str | None) -> datetime:
    """`--at`, parsed once: the instant everything below is "as of" (the real clock when absent)."""
    if not value:
        return datetime.now(UTC)
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 date and time", param_hint="--at") from None


def _bounded_as_of(value: str | None, settings: Settings, option: str = "--at") -> datetime:
    """`--at` of a command that records what it decides: between the fleet's start date and a few
    minutes after now (core.cycles.instant_problem), checked before anything is done."""
    when = _as_of(value)
    problem = instant_problem(when, first_day=settings.start_date, now=datetime.now(UTC))
    if problem is not None:
        raise click.BadParameter(problem, param_hint=option)
    return when


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option) from None


def emit(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: Iterable[str] | None = None,
    *,
    wide: bool = False,
    keep: Iterable[str] | None = None,
) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    shown(
        render.table(rows, list(columns) if columns else None, wide=wide, keep=list(keep) if keep else None)
    )


def shown(text: str) -> None:
    """Text for people: click strips colours from a pipe unless FORCE_COLOR asked for them."""
    click.echo(text, color=render.colours_wanted(render.on_terminal()))


wide_option = click.option(
    "--wide",
    is_flag=True,
    help="Every column, hashes and run ids in full, never wrapped (for a pager or a file).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="The rows as a JSON array, every field.")
GLOBAL_FLAGS = ("-v", "--verbose")


class _Main(click.Group):
    """The command group: its options are accepted after the command's name too, and errors a person
    causes (a usage error included) are one line, with a hint."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
        rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
        return super().parse_args(ctx, flags + rest + args[end:])

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "backup-pipeline"
            click.echo(f"Error: {exc.format_message()}", err=True)
            click.echo(f"hint: `{command} --help` lists what it takes", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_Main, name="backup-pipeline")
@click.option("-v", "--verbose", is_flag=True, help="Log what the command does (also after the command).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Watch the database backups of a fleet of remote sites."""
    ctx.obj = {"log_level": "INFO" if verbose else "WARNING"}
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if verbose:  # the product's own words; its libraries' stay at warnings
        logging.getLogger("backup_pipeline").setLevel(logging.INFO)


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
    when = _bounded_as_of(at, settings)
    _must_exist(jobs_file or settings.jobs_file, "jobs file", "--file or BACKUP_PIPELINE_JOBS_FILE")
    summary = sync_jobs_file(settings, open_database(settings), when, path=jobs_file)
    click.echo(
        f"{summary.active} active expected backup(s): {summary.added} added, "
        f"{summary.deactivated} deactivated"
    )
    if summary.changed:  # the UI's assets are read from the synced fleet when the code location loads
        from backup_pipeline.defs.reload import reload_code_location

        click.echo(reload_code_location(settings).message)


@backups.command("list")
@json_option
@wide_option
@friendly_errors
def backups_list(as_json: bool, wide: bool) -> None:
    """Every expected backup known to PostgreSQL, active or not."""
    rows = views.backup_rows(_stored(_settings()), active_only=False)
    emit(rows, as_json, views.BACKUP_COLUMNS, wide=wide, keep=views.BACKUP_KEEP)


# `jobs` is the first design's word (docs/design.md §1), kept as an alias: `jobs sync` still works.
main.add_command(
    click.Group("jobs", commands=backups.commands, hidden=True, help="Alias of `backups`."), "jobs"
)


# ---------------------------------------------------------------- scanning


@main.command()
@click.option("--at", help="The instant the evaluation is as of (ISO-8601, default the real clock).")
@click.option("--partition", "partitions", multiple=True, help="Day to evaluate (YYYY-MM-DD); repeatable.")
@click.option("--rehash", is_flag=True, help="Measure staged files again instead of reusing stored results.")
@json_option
@wide_option
@click.pass_context
@friendly_errors
def scan(
    ctx: click.Context, at: str | None, partitions: tuple[str, ...], rehash: bool, as_json: bool, wide: bool
) -> None:
    """Run the Dagster scan job in process: the days owed, or those named (its runs show in the UI
    of DAGSTER_HOME, or of the home `dev` prepared)."""
    from backup_pipeline.app.run_progress import RunProgress
    from backup_pipeline.app.runner import run_scan

    days = [_day(p, "--partition") for p in partitions]
    settings = _settings()
    when = _bounded_as_of(at, settings)
    # Said before anything is started (a new embedded server, say) for a mistyped setting.
    _must_exist(settings.jobs_file, "jobs file", "BACKUP_PIPELINE_JOBS_FILE")
    _must_exist(settings.storage_root, "deposit root", "BACKUP_STORAGE_ROOT", folder=True)
    with progress_bars() as bars:  # each run's steps, on a terminal only
        runs = run_scan(
            settings,
            when,
            partitions=days or None,
            rehash=rehash,
            log_level=ctx.obj["log_level"],
            progress=RunProgress(bars),
        )
    failed = [r for r in runs if not r.success]
    _show_runs(settings, runs, as_json=as_json, wide=wide)
    notified = _notification_line([r.notified for r in runs if r.notified is not None])
    if notified:
        click.echo(notified, err=as_json)
    if not days and not failed and (unowed := _unowed_days(runs)):
        listed = " ".join(f"--partition {day}" for day in unowed)
        click.echo(
            f"reports were recorded for {', '.join(unowed)}: days before the expected backups were "
            f"declared, which an automatic scan does not judge; `backup-pipeline scan {listed}` does",
            err=as_json,
        )
    if failed:
        raise click.ClickException(f"scan of {failed[0].day} failed: {visible(str(failed[0].error))}")
    unarchived = [e for r in runs if r.archived for e in r.archived.errors]
    if unarchived:  # the verdicts stand; the reports stay in log/ and the next scan retries
        raise click.ClickException(
            f"{len(unarchived)} report(s) could not be archived (left in log/, retried by the next scan): "
            + "; ".join(visible(e) for e in unarchived[:3])
            + ("; …" if len(unarchived) > 3 else "")
        )


def _show_runs(settings: Settings, runs: list[PartitionRun], *, as_json: bool, wide: bool) -> None:
    """One row per run, then the scanned days' entries per status (in JSON: with each run)."""
    rows = views.run_rows(runs)
    try:
        counts = views.status_counts(open_database(settings), [r.day for r in runs])
    except DatabaseFailure:
        if all(r.success for r in runs):
            raise
        counts = []  # PostgreSQL went away with the run: the run's failure says so
    if as_json:
        by_day = {c["day"]: {k: v for k, v in c.items() if k != "day"} for c in counts}
        emit([row | {"entries": by_day.get(row["partition"], {})} for row in rows], True)
    elif not runs:
        click.echo("nothing to scan: every cycle due so far has its entry, and no report is waiting")
    else:
        emit(rows, False, views.RUN_COLUMNS, wide=wide, keep=views.RUN_KEEP)
        if counts:
            emit(counts, False, wide=wide)


def _unowed_days(runs: list[PartitionRun]) -> list[str]:
    """The days the recorded reports bear on that an automatic scan did not evaluate."""
    scanned = {run.day for run in runs}
    touched = {day for run in runs if run.ingested for day in run.ingested.touched_days}
    return [day.isoformat() for day in sorted(touched - scanned)]


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
@json_option
@wide_option
@friendly_errors
def status(as_json: bool, wide: bool) -> None:
    """One row per active expected backup with its current status."""
    rows = views.backup_rows(_stored(_settings()), active_only=True)
    # The contract's fields exactly (`backups list` shows the whole row).
    rows = [{c: row[c] for c in views.STATUS_COLUMNS} for row in rows]
    emit(rows, as_json, views.STATUS_COLUMNS, wide=wide, keep=views.STATUS_KEEP)


@main.command()
@json_option
@click.option("--agent", help="Only this agent's.")
@click.option("--database", help="Only this database's.")
@click.option("--since", help="First cycle day (YYYY-MM-DD).")
@wide_option
@friendly_errors
def entries(as_json: bool, agent: str | None, database: str | None, since: str | None, wide: bool) -> None:
    """One row per evaluated cycle."""
    since_day = _day(since, "--since") if since else None
    rows = views.entry_rows(_stored(_settings()), agent, database, since_day)
    emit(rows, as_json, views.ENTRY_COLUMNS, wide=wide, keep=views.ENTRY_KEEP)


@main.command()
@json_option
@wide_option
@friendly_errors
def reports(as_json: bool, wide: bool) -> None:
    """Every status report file recorded, accepted or rejected, and where it was archived."""
    rows = views.report_rows(_stored(_settings()))
    emit(rows, as_json, views.REPORT_COLUMNS, wide=wide, keep=views.REPORT_KEEP)


# ---------------------------------------------------------------- restore drills


@main.command()
@click.option("--agent", help="The agent whose backups to drill.")
@click.option("--database", help="The database to drill.")
@click.option("--cycle", help="The cycle to drill (ISO-8601); default each backup's latest good one.")
@click.option("--due", is_flag=True, help="Drill what is due by the policy (what the daily drill job does).")
@click.option("--redrill", is_flag=True, help="Drill again an entry already drilled (a new attempt).")
@click.option("--at", help="The instant the drills are as of (ISO-8601, default the real clock).")
@json_option
@wide_option
@friendly_errors
@click.pass_context
def drill(
    ctx: click.Context,
    agent: str | None,
    database: str | None,
    cycle: str | None,
    due: bool,
    redrill: bool,
    at: str | None,
    as_json: bool,
    wide: bool,
) -> None:
    """Restore backups into throw-away PostgreSQL clusters and check what comes back: a run of the
    drill job in process (it shows in the UI when DAGSTER_HOME is set).

    Exit code 0 when the drills ran, whatever their outcomes; 1 when they could not run.
    """
    from backup_pipeline.app.run_progress import RunProgress
    from backup_pipeline.app.runner import run_drills
    from backup_pipeline.scan.sync import sync_before_scan
    from backup_pipeline.storage.drills import chosen_entries

    if due == bool(agent or database or cycle):
        raise click.UsageError("give either --due, or --agent/--database (and --cycle)")
    settings = _settings()
    when = _bounded_as_of(at, settings)
    db = _stored(settings)
    sync_before_scan(settings, db, when)
    entry_ids = None
    if not due:
        with db.sessions() as session:
            entry_ids = chosen_entries(session, agent, database, _cycle(cycle), when)
        if not entry_ids:
            raise click.ClickException("no entry to drill: no good (SUCCESS or HASH_MISMATCH) cycle matches")
    with progress_bars() as bars:
        run = run_drills(
            settings,
            when,
            entry_ids=entry_ids,
            redrill=redrill,
            log_level=ctx.obj["log_level"],
            progress=RunProgress(bars),
        )
    if not run.success:
        raise click.ClickException(run.error or "the drills could not run")
    emit(
        views.drill_rows(run.results),
        as_json,
        [*views.DRILL_COLUMNS, "note"],
        wide=wide,
        keep=views.DRILL_KEEP,
    )
    notified = _notification_line([run.notified] if run.notified else [])
    if notified:
        click.echo(notified, err=as_json)
    refused = [r for r in run.results if r.outcome is None and r.skipped and not due]
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
@click.option("--agents", default=3, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--databases", default=4, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--days", default=1, show_default=True, type=click.IntRange(1, 3660))
@click.option(
    "--size",
    default="64KiB",
    show_default=True,
    type=ByteSizeParam(minimum=64),
    help="Dump size (4096, 64KiB, 2MiB).",
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

    given_at = options.pop("at")
    options["at"] = _as_of(given_at)
    environment = None
    if options["dumps"] == "real":
        from backup_pipeline.drill.run import DrillUnavailable, prepare_environment

        try:
            environment = prepare_environment(_settings())
        except DrillUnavailable as exc:
            raise click.ClickException(f"real dumps need PostgreSQL's binaries: {exc}") from None
    with progress("simulating agents", total=options["agents"]) as task:
        result = run(SimulationSpec(**options), environment, on_agent=task.advance)
    days = sorted({o["cycle_expected_at"][:10] for o in result.outcomes})
    if not days:
        raise click.ClickException(
            f"nothing simulated: no agent's daily operation had ended by {options['at']:%Y-%m-%d %H:%M}Z "
            "(each runs at its own time of day, 01:00 to 22:45 UTC)\n"
            "hint: give --days 2 (or more) to simulate earlier days too, or a later --at"
        )
    click.echo(
        f"simulated {len(result.agents)} agent(s): {result.reports} report(s), {result.dumps} dump(s) "
        f"({format_byte_size(result.dump_bytes)}) under {result.root} for {', '.join(days)}; "
        f"jobs file {result.jobs_file}"
    )
    click.echo(_how_to_scan(_settings(), result.root, result.jobs_file, days, given_at))


def _how_to_scan(settings: Settings, root: Path, jobs_file: Path, days: list[str], at: str | None) -> str:
    """The commands that judge a simulation: its days named, since an automatic scan owes nothing
    before the expected backups are declared (now)."""
    variables = []
    if root.resolve() != settings.storage_root.resolve():
        variables.append(f"BACKUP_STORAGE_ROOT={shlex.quote(str(root))}")
    if jobs_file.resolve() != settings.jobs_file.resolve():
        variables.append(f"BACKUP_PIPELINE_JOBS_FILE={shlex.quote(str(jobs_file))}")
    prefix = " ".join(variables) + " " if variables else ""
    partitions = " ".join(f"--partition {day}" for day in days)
    when = f" --at {shlex.quote(at)}" if at else ""
    return f"to judge these days: {prefix}backup-pipeline scan{when} {partitions}"


@main.command()
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535), metavar="PORT")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option(
    "--print-env",
    is_flag=True,
    help="Print, as export lines, what dagster-webserver, dagster-daemon and `dagster definitions "
    "validate` need to run on this set-up, instead of starting anything.",
)
@friendly_errors
def dev(port: int, host: str, print_env: bool) -> None:
    """Start the Dagster UI and daemon (dagster dev) on the product's PostgreSQL."""
    from backup_pipeline.app.launcher import dagster_environment, run_dagster_dev
    from backup_pipeline.scan.sync import sync_before_scan

    settings = _settings()
    if print_env:
        for variable, value in sorted(dagster_environment(settings, host=host, port=port).items()):
            click.echo(f"export {variable}={shlex.quote(value)}")
        return
    if settings.jobs_file.exists():  # the UI shows the synced fleet: the jobs file as a scan would sync it
        sync_before_scan(settings, open_database(settings), datetime.now(UTC))
    sys.exit(run_dagster_dev(settings, host=host, port=port))


@main.group()
def db() -> None:
    """The product's PostgreSQL: the embedded server (when BACKUP_PIPELINE_DATABASE_URL is unset)."""


@db.command("stop")
@friendly_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL (the next command that needs it starts it again)."""
    settings = _settings()
    if settings.database_url:
        raise click.ClickException(
            "BACKUP_PIPELINE_DATABASE_URL is set: the product uses your PostgreSQL server, "
            "and stops no server but its embedded one"
        )
    pgdata = settings.embedded_pgdata.resolve()
    if stop_embedded_server(pgdata):
        click.echo(f"stopped the embedded PostgreSQL in {pgdata}")
    else:
        click.echo(f"the embedded PostgreSQL in {pgdata} was not running")


@main.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    help="Steps run at once (default: the number of CPUs).",
)
@click.option(
    "--queue",
    "-Q",
    "queues",
    multiple=True,
    help="Queue(s) to consume, repeated or comma-separated (default: both the scan queue, "
    "BACKUP_PIPELINE_CELERY_QUEUE, and the drill queue, BACKUP_PIPELINE_CELERY_DRILL_QUEUE).",
)
@friendly_errors
def worker(concurrency: int | None, queues: tuple[str, ...]) -> None:
    """Run a Celery worker that executes the steps of the product's runs (BACKUP_PIPELINE_EXECUTOR=celery)."""
    import os

    from backup_pipeline.app.launcher import ensure_dagster_storage_url
    from backup_pipeline.defs.celery_app import broker_problem, celery_queues
    from backup_pipeline.defs.workers import run_worker

    consumed = _queues(queues)
    settings = _settings()
    if settings.executor != "celery":
        raise click.ClickException(
            "a worker runs steps sent through a broker: set BACKUP_PIPELINE_EXECUTOR=celery and "
            "BACKUP_PIPELINE_CELERY_BROKER (the same for the daemon, the webserver and every worker)"
        )
    if problem := broker_problem(settings):
        raise click.ClickException(problem)
    open_database(settings)  # reachable and migrated before the first step arrives
    # The steps' processes rebuild the definitions from their environment: make it these settings,
    # and give Dagster's own storage the URL the shipped dagster.yaml reads.
    settings.export()
    ensure_dagster_storage_url(settings)
    run_worker(
        settings,
        concurrency=concurrency or os.cpu_count() or 1,
        queues=consumed or celery_queues(settings),
    )


def _queues(given: tuple[str, ...]) -> list[str]:
    names = [name.strip() for value in given for name in value.split(",")]
    if "" in names:
        raise click.BadParameter("a queue name is empty", param_hint="--queue")
    return list(dict.fromkeys(names))


@main.command()
@click.option("--root", default=Path("demo/deposit"), type=click.Path(path_type=Path), show_default=True)
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535), metavar="PORT")
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
    dagster_home = prepare_dagster_home(settings)
    click.echo(_write_demo_env(settings, dagster_home, f"http://127.0.0.1:{port}"))
    runs = run_scan(settings, as_of, partitions=days)
    emit(views.run_rows(runs), False, views.RUN_COLUMNS, keep=views.RUN_KEEP)
    rows = views.backup_rows(open_database(settings), active_only=True)
    emit(rows, False, views.STATUS_COLUMNS, keep=views.STATUS_KEEP)
    if environment is not None:
        _demo_drills(settings, as_of)
    if not no_ui:
        sys.exit(run_dagster_dev(settings, host="127.0.0.1", port=port))


DEMO_ENV_MARK = "# Written by `backup-pipeline demo`"


def _write_demo_env(settings: Settings, dagster_home: Path, dagster_url: str) -> str:
    """Leave the demo's set-up in `.env` here, so that the commands run afterwards find it; a `.env`
    the demo did not write is left alone. Returns what was done, for the person."""
    from backup_pipeline.app.launcher import DAGSTER_URL_ENV

    env_file = Path(ENV_FILE_NAME)
    if env_file.exists() and not env_file.read_text(errors="replace").startswith(DEMO_ENV_MARK):
        return f"left {env_file.resolve()} alone (not the demo's): the commands after the demo read it"
    here = Path.cwd().resolve()

    def shown(path: Path) -> str:  # relative to the .env's folder when inside it
        path = path.resolve()
        return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)

    lines = [
        f"{DEMO_ENV_MARK} on {datetime.now(UTC):%Y-%m-%d %H:%M}Z: the demo's set-up, read by every",
        "# command run in this folder or below it. Edit it to watch your own sites (README.md),",
        "# or delete it with demo/ and .backup_pipeline/ to start over. Every setting: .env.example.",
        f"BACKUP_STORAGE_ROOT={shown(settings.storage_root)}",
        f"BACKUP_PIPELINE_JOBS_FILE={shown(settings.jobs_file)}",
        f"BACKUP_PIPELINE_HOME={shown(settings.home)}",
        f"BACKUP_PIPELINE_START_DATE={settings.start_date.isoformat()}",
        f"BACKUP_PIPELINE_DAGSTER_URL={os.environ.get('BACKUP_PIPELINE_DAGSTER_URL') or dagster_url}",
        "# For the dagster-* commands run here (Dagster reads this file too), while the embedded",
        "# PostgreSQL runs (`backup-pipeline dev --print-env` starts it and prints these):",
        f"DAGSTER_HOME={dagster_home}",
        f"{DAGSTER_URL_ENV}={os.environ[DAGSTER_URL_ENV]}",
    ]
    env_file.write_text("\n".join(lines) + "\n")
    return f"wrote {env_file.resolve()}: the demo's settings, for the commands you run next"


def _demo_drill_environment() -> DrillEnvironment | None:
    """The drills' environment when this machine can drill (the demo then writes real dumps); else
    the demo says why and goes on with synthetic dumps."""
    from backup_pipeline.drill.run import DrillUnavailable, prepare_environment

    try:
        return prepare_environment(_settings())
    except DrillUnavailable as exc:
        click.echo(f"restore drills left out of the demo: {exc}")
        return None


def _demo_drills(settings: Settings, as_of: datetime) -> None:
    """The restore drills that are due, in a run of the daily drill job (it shows in the UI)."""
    from backup_pipeline.app.run_progress import RunProgress
    from backup_pipeline.app.runner import run_drills

    with progress_bars() as bars:
        run = run_drills(settings, as_of, progress=RunProgress(bars))
    if not run.success:
        click.echo(f"restore drills could not run: {run.error}")
        return
    click.echo("\nRestore drills of each database's latest good backup:")
    emit(views.drill_rows(run.results), False, views.DRILL_COLUMNS, keep=views.DRILL_KEEP)


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
@json_option
@wide_option
@friendly_errors
def notify_test(as_json: bool, wide: bool) -> None:
    """Send a test message to every configured target and print each result (targets redacted)."""
    from backup_pipeline.notify.deliver import send_test

    settings = _settings()
    results = send_test(settings, _stored(settings), _declared_notify_lists(settings))
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
    emit(rows, as_json, views.TARGET_COLUMNS, wide=wide, keep=views.TARGET_KEEP)
    failed = [r for r in results if not r.sent]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} target(s) could not be notified")


@notify.command("log")
@json_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@wide_option
@friendly_errors
def notify_log(as_json: bool, limit: int, wide: bool) -> None:
    """Every notification attempt, newest first: target, cycle, event, sent or failed, error."""
    rows = views.attempt_rows(_stored(_settings()), limit)
    emit(rows, as_json, views.ATTEMPT_COLUMNS, wide=wide, keep=views.ATTEMPT_KEEP)


@notify.command("alerts")
@json_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@wide_option
@friendly_errors
def notify_alerts(as_json: bool, limit: int, wide: bool) -> None:
    """The latest alerts, held or not, with the state of their delivery to each target."""
    rows = views.alert_rows(_stored(_settings()), limit)
    emit(rows, as_json, views.ALERT_COLUMNS, wide=wide, keep=views.ALERT_KEEP)


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
@wide_option
@friendly_errors
def digest(day: str | None, fmt: str, wide: bool) -> None:
    """The fleet's health on one day (the digest the `fleet_digest` asset materializes)."""
    from backup_pipeline.digest.build import build_digest
    from backup_pipeline.digest.render import to_csv, to_json

    settings = _settings()
    when = _day(day, "--date") if day else datetime.now(UTC).date()
    today = datetime.now(UTC).date()
    if not settings.start_date <= when <= today + timedelta(days=1):
        raise click.BadParameter(
            f"{when} is outside the fleet's days, {settings.start_date} (BACKUP_PIPELINE_START_DATE) "
            f"to {today + timedelta(days=1)}",
            param_hint="--date",
        )
    built = build_digest(_stored(settings), when)
    if fmt == "csv":
        click.echo(to_csv(built), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(to_json(built), indent=1))
    else:
        shown(render.digest_text(built, wide=wide))


# ---------------------------------------------------------------- Prometheus metrics and status badges


@main.group()
def metrics() -> None:
    """Prometheus metrics and status badges of the fleet, read from PostgreSQL at each request."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers", default=4, show_default=True, type=click.IntRange(1, 64), help="Requests answered at once."
)
@click.option(
    "--read-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds a client has for each read, and to send its request.",
)
@friendly_errors
def metrics_serve(host: str, port: int, workers: int, read_timeout: float) -> None:
    """Serve /metrics (Prometheus), /healthz and /badge/AGENT[/DATABASE].svg|.json until stopped."""
    from backup_pipeline.app.metrics_server import serve
    from backup_pipeline.storage.database import serving_database

    settings = _settings()
    _stored(settings)  # a wrong URL or an unreachable server is said now, not at the first scrape
    # One connection per worker: a request that waits longer than the read timeout for one is a 503.
    database = serving_database(settings, connections=workers, wait_seconds=read_timeout)
    try:
        serve(
            lambda: database,
            host,
            port,
            lambda url: click.echo(f"serving {url}/metrics"),
            workers=workers,
            read_timeout=read_timeout,
        )
    except OSError as exc:  # the port is taken, the address is not this machine's...
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass


@metrics.command("dump")
@friendly_errors
def metrics_dump() -> None:
    """Print the metrics once in Prometheus' text format (e.g. for node_exporter's textfile collector)."""
    from backup_pipeline.app.metrics_server import exposition

    click.echo(exposition(_stored(_settings())).decode(), nl=False)


if __name__ == "__main__":
    main()
