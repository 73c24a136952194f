"""Drilling entries, and deciding which are due.

`drill_entries` is what both the Dagster job's steps and `backup-pipeline drill` run: for each entry,
under an advisory lock on it, skip it when it is already drilled (unless a re-drill is asked),
restore and check it (`restore.restore_entry`), compare it with the expected backup's previous
successful drill, and record the drill and the alerts it raises in one transaction. A drill that
could not run (the machine's binaries, user, folder or disk) records nothing and raises
DrillUnavailable, so the entry stays due.

`plan_drills` picks the due drills of a run (`core.drills.plan_due`: never drilled first, then the
oldest drill, within the run's time budget) and groups them into batches by estimated time: one
Dagster step each, passing entry ids only. `batch_chosen` groups the entries a person chose the same way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from backup_pipeline.adapters.drill_host import (
    DrillUnavailable,
    Limits,
    clean_leftovers,
    drill_user,
    find_mariadb_tools,
    find_sandbox,
    find_tools,
    prepare_root,
)
from backup_pipeline.adapters.scratch_cluster import ensure_template
from backup_pipeline.config.jobs_file import RestoreDrillSpec
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.domain import SUCCESS_STATUSES
from backup_pipeline.core.drills import (
    ChosenDrill,
    DrillBatch,
    DrillCandidate,
    DrillOutcome,
    DrillPolicy,
    Figures,
    batch_by_time,
    compare,
    is_slow,
    measured_cost,
    plan_due,
)
from backup_pipeline.drill.alert import record_drill_alerts
from backup_pipeline.drill.restore import DrillEnvironment, MariadbSetup, RestoreReport, restore_entry
from backup_pipeline.drill.restore_mariadb import restore_in_mariadb
from backup_pipeline.storage import drills as stored_drills
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.drills import DrillTarget
from backup_pipeline.storage.locks import Lock, advisory_lock
from backup_pipeline.storage.orm import RestoreDrillRow
from backup_pipeline.storage.scratch import TABLE_FIGURES_CAP, prepare_template
from backup_pipeline.storage.scratch_mariadb import prepare_mariadb_template

__all__ = ["DrillResult", "DrillUnavailable", "batch_chosen", "drill_entries", "plan_drills"]

log = logging.getLogger(__name__)


class DrillResult(BaseModel):
    """One drill as people and Dagster steps see it (small: ids, figures, words)."""

    entry_id: int
    job_id: int
    agent_id: str
    database_name: str
    name: str  # the expected backup's name
    cycle_expected_at: datetime
    drill_id: int | None = None
    attempt: int | None = None
    outcome: str | None = None  # None: no drill ran (see `skipped`)
    reason: str | None = None
    failing_statement: str | None = None
    detected_kind: str | None = None
    tables: int | None = None
    rows: int | None = None
    bytes: int | None = None
    shrank: bool = False
    comparison: str | None = None
    amcheck: str | None = None
    engine: str | None = None  # postgresql or mariadb (None: not told, or not a database dump)
    checks: list[dict[str, Any]] = []  # each validation query: {name, passed, detail}
    objective_seconds: float | None = None  # the restore-time objective in force
    slow: bool = False  # restored, but slower than its objective (RESTORE_SLOW)
    duration_seconds: float | None = None
    finished_at: datetime | None = None
    tool_versions: dict[str, str] = {}
    skipped: str | None = None  # why nothing ran: already drilled, being drilled, budget spent…
    alerts: int = 0
    ran: bool = False  # this call drilled it (False: an earlier drill is shown)


def environment_policy(settings: Settings) -> DrillPolicy:
    return DrillPolicy(
        enabled=True,
        every_days=settings.drill_every_days,
        max_minutes=settings.drill_max_minutes,
        max_bytes=settings.drill_max_bytes,
        shrink_below=settings.drill_shrink_below,
    )


def policy_of(stored: dict[str, Any] | None, settings: Settings) -> DrillPolicy:
    """An expected backup's drill policy: its jobs-file values over the environment's."""
    return RestoreDrillSpec.from_stored(stored).policy(environment_policy(settings))


# ---------------------------------------------------------------- the environment


def prepare_environment(settings: Settings) -> DrillEnvironment:
    """Binaries, user, sandbox, folder and template, checked; leftovers of killed drills removed first."""
    tools = find_tools(settings.drill_pg_bin)
    user = drill_user(settings.drill_user, forbidden_uids=_database_owners(settings))
    sandbox = find_sandbox(settings.drill_bwrap, tools, user)
    root = prepare_root(settings.drill_root, user)
    removed = clean_leftovers(root)
    if removed:
        log.warning("removed %d folder(s) left by interrupted drills: %s", len(removed), ", ".join(removed))
    limits = Limits(memory_bytes=settings.drill_memory_bytes, file_bytes=settings.drill_max_bytes)
    template = ensure_template(root, tools, user, limits, sandbox, prepare_template)
    mariadb = MariadbSetup(
        settings.drill_mariadb_bin,
        root=root,
        user=user,
        sandbox=sandbox,
        memory_bytes=settings.drill_memory_bytes,
        find=find_mariadb_tools,
        prepare=prepare_mariadb_template,
        restore=restore_in_mariadb,
    )
    return DrillEnvironment(
        tools=tools,
        user=user,
        sandbox=sandbox,
        root=root,
        template=template,
        memory_bytes=settings.drill_memory_bytes,
        statement_timeout=float(settings.drill_statement_timeout_seconds),
        mariadb=mariadb,
    )


def _database_owners(settings: Settings) -> set[int]:
    """The owner of the product's embedded database files: never the drill user."""
    try:
        return {os.stat(settings.embedded_pgdata).st_uid}
    except OSError:
        return set()


# ---------------------------------------------------------------- drilling


def drill_entries(
    settings: Settings,
    database: Database,
    entry_ids: Sequence[int],
    as_of: datetime,
    *,
    run_id: str | None = None,
    redrill: bool = False,
    deadline: datetime | None = None,
    environment: DrillEnvironment | None = None,
    on_drill: Callable[[DrillResult], object] | None = None,
) -> list[DrillResult]:
    """Drill these entries one after the other; DrillUnavailable when the machine cannot. `on_drill`
    hears of each entry as it is done with (progress)."""
    if entry_ids and not settings.storage_root.is_dir():  # an unmounted share: no dump is judged gone
        raise DrillUnavailable(
            f"the deposit area {settings.storage_root} is not a folder (BACKUP_STORAGE_ROOT)"
        )
    with database.sessions() as session:
        targets = stored_drills.drill_targets(session, entry_ids)
    results: list[DrillResult] = []
    for target in targets:
        if deadline is not None and datetime.now(UTC) >= deadline:
            result = _shown(target, skipped="the run's time budget is spent: drilled by a later run")
        else:
            environment = environment or prepare_environment(settings)
            with advisory_lock(database, Lock.DRILL, wait=False, item=target.entry_id) as held:
                result = (
                    _drill_one(settings, database, environment, target, as_of, run_id, redrill)
                    if held
                    else _shown(target, skipped="being drilled by another process")
                )
        results.append(result)
        if on_drill is not None:
            on_drill(result)
    return results


def _drill_one(
    settings: Settings,
    database: Database,
    environment: DrillEnvironment,
    target: DrillTarget,
    as_of: datetime,
    run_id: str | None,
    redrill: bool,
) -> DrillResult:
    with database.sessions() as session:
        existing = stored_drills.latest_attempt(session, target.entry_id)
    if existing is not None and not redrill:
        return _shown(target, existing, skipped="already drilled (ask for a re-drill to drill it again)")
    if target.status not in SUCCESS_STATUSES:
        return _shown(
            target, skipped=f"its cycle is {target.status}: only SUCCESS and HASH_MISMATCH are drilled"
        )
    policy = policy_of(target.restore_drill, settings)
    started_at, started = datetime.now(UTC), time.monotonic()
    report = restore_entry(environment, target, policy, settings.storage_root)
    duration = time.monotonic() - started
    values = _drill_values(target, report, policy, existing, as_of, run_id)
    values |= {"started_at": started_at, "finished_at": datetime.now(UTC), "duration_seconds": duration}
    with database.sessions() as session:
        previous = stored_drills.previous_restored(session, target.job_id, target.cycle_expected_at)
        _compare(values, report, previous, policy)
        values["slow"] = is_slow(values["outcome"], duration, policy.objective_seconds)
        drill_id = stored_drills.record_drill(session, values)
        if drill_id is None:  # recorded meanwhile by another process (its lock was lost with its session)
            session.rollback()
            return _shown(target, skipped="drilled meanwhile by another process")
        raised = record_drill_alerts(session, target, values, drill_id, as_of=as_of, run_id=run_id)
        session.commit()
    log.info(
        "drill of %s/%s %s: %s",
        target.agent_id,
        target.database_name,
        target.cycle_expected_at,
        values["outcome"],
    )
    return _result(target, values, drill_id, alerts=raised)


def _drill_values(
    target: DrillTarget,
    report: RestoreReport,
    policy: DrillPolicy,
    existing: RestoreDrillRow | None,
    as_of: datetime,
    run_id: str | None,
) -> dict[str, Any]:
    found = report.inspection
    detected = report.detected
    tables = found.tables if found is not None else []
    return {
        "job_id": target.job_id,
        "entry_id": target.entry_id,
        "cycle_expected_at": target.cycle_expected_at,
        "attempt": (existing.attempt + 1) if existing is not None else 1,
        "as_of": as_of,
        "outcome": report.outcome.value,
        "reason": report.reason,
        "failing_statement": report.failing_statement,
        "detected_kind": detected.kind if detected else None,
        "dump_format": detected.format.value if detected and detected.format else None,
        "compression": detected.compression.value if detected and detected.compression else None,
        "staged_file_name": target.staged_file_name,
        "staged_sha256": report.staged_sha256,
        "staged_size": report.staged_size,
        "tables": len(tables) if found is not None else None,
        "rows": found.rows if found is not None else None,
        "bytes": found.database_bytes if found is not None else None,
        "table_figures": [
            {"name": t.name, "rows": t.rows, "bytes": t.bytes}
            for t in sorted(tables, key=lambda t: -t.bytes)[:TABLE_FIGURES_CAP]
        ],
        "amcheck": found.amcheck if found is not None else None,
        "engine": report.engine.value if report.engine is not None else None,
        "checks": [check.record() for check in report.checks],
        "objective_seconds": policy.objective_seconds,
        "left_out": report.left_out,
        "shrank": False,
        "comparison": None,
        "previous_drill_id": None,
        "tool_versions": report.versions,
        "dagster_run_id": run_id,
    }


def _figures(tables: int | None, rows: int | None, size: int | None, names: Any) -> Figures:
    return Figures(tables or 0, rows or 0, size or 0, frozenset(t["name"] for t in names or []))


def _compare(
    values: dict[str, Any], report: RestoreReport, previous: RestoreDrillRow | None, policy: DrillPolicy
) -> None:
    """The restore next to the previous successful drill: shrank (a warning), or the tables of
    another database altogether (a failure)."""
    if report.outcome is not DrillOutcome.RESTORED or previous is None:
        return
    current = _figures(values["tables"], values["rows"], values["bytes"], values["table_figures"])
    before = _figures(previous.tables, previous.rows, previous.bytes, previous.table_figures)
    comparison = compare(current, before, previous.cycle_expected_at, policy.shrink_below)
    if comparison is None:
        return
    values["previous_drill_id"] = previous.id
    if comparison.foreign:
        values["outcome"], values["reason"] = DrillOutcome.RESTORE_FAILED.value, comparison.message
    elif comparison.shrank:
        values["shrank"], values["comparison"] = True, comparison.message


def _shown(
    target: DrillTarget, drill: RestoreDrillRow | None = None, *, skipped: str | None = None
) -> DrillResult:
    """A result for an entry this call did not drill (with its earlier drill, if any)."""
    result = DrillResult(
        entry_id=target.entry_id,
        job_id=target.job_id,
        agent_id=target.agent_id,
        database_name=target.database_name,
        name=target.name,
        cycle_expected_at=target.cycle_expected_at,
        skipped=skipped,
    )
    if drill is None:
        return result
    return result.model_copy(update=_recorded(drill))


def _recorded(drill: RestoreDrillRow | dict[str, Any]) -> dict[str, Any]:
    get = drill.get if isinstance(drill, dict) else lambda name: getattr(drill, name)
    fields = ("attempt", "outcome", "reason", "failing_statement", "detected_kind", "tables", "rows", "bytes")
    fields += ("shrank", "comparison", "amcheck", "duration_seconds", "finished_at", "tool_versions")
    fields += ("engine", "checks", "objective_seconds", "slow")
    values = {name: get(name) for name in fields}
    values["drill_id"] = get("id")
    return values


def _result(target: DrillTarget, values: dict[str, Any], drill_id: int, *, alerts: int) -> DrillResult:
    result = _shown(target).model_copy(update=_recorded(values | {"id": drill_id}))
    return result.model_copy(update={"alerts": alerts, "ran": True})


# ---------------------------------------------------------------- what is due


def plan_drills(settings: Settings, database: Database, as_of: datetime) -> list[DrillBatch]:
    """The due drills of a run at `as_of`, within its budget, in batches by estimated time (a fixed
    cost per drill plus its bytes at the restore rate measured on recent drills: the budget counts
    the same estimates)."""
    with database.sessions() as session:
        rows = stored_drills.drill_candidates(session, as_of)
        cost = measured_cost(stored_drills.recent_restores(session))
    candidates = [
        DrillCandidate(
            job_id=row.job_id,
            entry_id=row.entry_id,
            cycle_expected_at=row.cycle_expected_at,
            staged_bytes=row.staged_size or 0,
            policy=policy_of(row.restore_drill, settings),
            last_drilled_at=row.last_drilled_at,
            last_duration=row.last_duration,
        )
        for row in rows
    ]
    planned = plan_due(candidates, as_of, settings.drill_budget_minutes * 60.0, cost)
    return batch_by_time(planned, settings.drill_batch_seconds, cost)


def batch_chosen(settings: Settings, database: Database, entry_ids: Sequence[int]) -> list[DrillBatch]:
    """The entries a person chose (in their order; unknown ids left out), in batches by estimated
    time from the staged bytes the scans measured, as due drills are."""
    with database.sessions() as session:
        targets = stored_drills.drill_targets(session, entry_ids)
        cost = measured_cost(stored_drills.recent_restores(session))
    chosen = [ChosenDrill(t.entry_id, t.staged_size or 0) for t in targets]
    return batch_by_time(chosen, settings.drill_batch_seconds, cost)
