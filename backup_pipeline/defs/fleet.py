"""The monitored databases as Dagster assets: partitioned assets from the jobs file, checks, events.

Assets are views of the scan's entries, not executable by themselves: the scan job reports a
materialization (and integrity and size check results) for a day whenever an entry is created or
changes.

Granularity follows the fleet's size. Up to `per_database_assets_max` expected backups, each one is
an asset (grouped by agent). Above it, every agent is one asset whose materialization summarises its
databases: Dagster stores a few hundred events per second, so one event per database would make a
20,000-database scan last minutes.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    MetadataValue,
    PartitionsDefinition,
    multi_asset_check,
)

from backup_pipeline.config.jobs_file import DeclaredBackup, JobsFileError, load_jobs_file
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.domain import SUCCESS_STATUSES, integrity_passes
from backup_pipeline.core.names import agent_asset_path, backup_asset_path, dagster_name
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.defs.restorable import RESTORABLE_CHECK, on_demand_result, restorable_spec, stored_drill
from backup_pipeline.scan.outcomes import AgentDay, EntryOutcome
from backup_pipeline.storage import drills, entries
from backup_pipeline.storage.orm import BackupEntryRow

log = logging.getLogger(__name__)

REPORTS_ASSET = AssetKey(["backup_reports"])
INTEGRITY_CHECK = "integrity"
SIZE_CHECK = "size"  # WARNING: the staged size is far from the expected backup's trailing median
CHECKS_PER_DEFINITION = 50  # one multi-asset check holding thousands of specs validates very slowly
NOT_EVALUATED = "no cycle evaluated yet"
Event = AssetMaterialization | AssetCheckEvaluation


def asset_key(agent_id: str, database_name: str, name: str) -> AssetKey:
    return AssetKey(backup_asset_path(agent_id, database_name, name))


def agent_asset_key(agent_id: str) -> AssetKey:
    return AssetKey(agent_asset_path(agent_id))


def backup_key(backup: DeclaredBackup) -> AssetKey:
    return asset_key(backup.agent_id, backup.database_name, backup.name)


def declared_backups(settings: Settings) -> list[DeclaredBackup]:
    """The jobs file as the code location sees it; a missing file declares no database asset."""
    try:
        return load_jobs_file(settings.jobs_file, settings.window_minutes, settings.cache_dir)
    except JobsFileError as exc:
        if not settings.jobs_file.exists():
            log.warning("no jobs file at %s: no database assets declared", settings.jobs_file)
            return []
        raise JobsFileError(f"the code location cannot load its database assets: {exc}") from None


@dataclass(frozen=True)
class FleetAssets:
    """How the fleet is shown in Dagster, decided once per code location load (a resource of the
    scan job's evaluate steps, which report their events accordingly)."""

    backups: list[DeclaredBackup]
    per_database: bool
    _owners: dict[AssetKey, list[DeclaredBackup]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FleetAssets":
        backups = declared_backups(settings)
        return cls.of(backups, per_database=len(backups) <= settings.per_database_assets_max)

    @classmethod
    def of(cls, backups: list[DeclaredBackup], *, per_database: bool) -> "FleetAssets":
        owners: dict[AssetKey, list[DeclaredBackup]] = defaultdict(list)
        for backup in backups:
            owners[backup_key(backup) if per_database else agent_asset_key(backup.agent_id)].append(backup)
        return cls(backups, per_database, dict(owners))

    def specs(self, partitions: PartitionsDefinition) -> list[AssetSpec]:
        reports = AssetSpec(
            key=REPORTS_ASSET,
            partitions_def=partitions,
            group_name="deposit",
            description="Status reports recorded from the deposit area (every report file, accepted or not).",
        )
        specs = database_specs if self.per_database else agent_specs
        return [reports, *specs(self.backups, partitions)]

    def checks(self) -> list[AssetsDefinition]:
        """On-demand integrity, size and restorable checks, grouped in a few multi-asset checks (validation of
        one holding thousands of specs is slow)."""
        if self.per_database:
            per_agent: dict[str, list[AssetKey]] = defaultdict(list)
            for backup in self.backups:
                per_agent[backup.agent_id].append(backup_key(backup))
            groups = [(f"integrity_{dagster_name(agent)}", keys) for agent, keys in sorted(per_agent.items())]
        else:
            agents = sorted({b.agent_id for b in self.backups})
            chunks = [
                agents[i : i + CHECKS_PER_DEFINITION] for i in range(0, len(agents), CHECKS_PER_DEFINITION)
            ]
            groups = [
                (f"integrity_agents_{n + 1:04d}", [agent_asset_key(a) for a in c])
                for n, c in enumerate(chunks)
            ]
        return [_check_definition(name, keys, self) for name, keys in groups]

    def knows(self, key: AssetKey) -> bool:
        return key in self._owners

    def owner(self, key: AssetKey) -> tuple[str, list[DeclaredBackup]]:
        """The agent and the expected backups an asset stands for."""
        backups = self._owners[key]
        return backups[0].agent_id, backups

    def outcome_events(self, outcomes: Iterable[EntryOutcome], day: date) -> Iterator[Event]:
        return outcome_events(outcomes, day)

    def agent_events(self, days: Iterable[AgentDay]) -> Iterator[Event]:
        return agent_events(days)


def database_specs(backups: Sequence[DeclaredBackup], partitions: PartitionsDefinition) -> list[AssetSpec]:
    return [
        AssetSpec(
            key=backup_key(b),
            partitions_def=partitions,
            group_name=dagster_name(b.agent_id),
            deps=[REPORTS_ASSET],
            description=(
                f"Backup of database `{b.database_name}` by agent `{b.agent_id}`, expected "
                f"{b.schedule_text} (from {b.early_minutes} min early to {b.grace_minutes} min late, "
                f"content policy {b.content_change.value})."
            ),
            metadata={"agent_id": b.agent_id, "database_name": b.database_name, "schedule": b.schedule_text},
        )
        for b in backups
    ]


def agent_specs(backups: Sequence[DeclaredBackup], partitions: PartitionsDefinition) -> list[AssetSpec]:
    per_agent: dict[str, list[DeclaredBackup]] = defaultdict(list)
    for b in backups:
        per_agent[b.agent_id].append(b)
    return [
        AssetSpec(
            key=agent_asset_key(agent),
            partitions_def=partitions,
            group_name=dagster_name(agent.split("_")[0]),
            deps=[REPORTS_ASSET],
            description=(
                f"Backups of agent `{agent}`: {len(agent_backups)} expected backup(s) "
                f"({', '.join(sorted({b.database_name for b in agent_backups})[:20])}"
                f"{', …' if len(agent_backups) > 20 else ''})."
            ),
            metadata={"agent_id": agent, "databases": len(agent_backups)},
        )
        for agent, agent_backups in sorted(per_agent.items())
    ]


def _check_definition(name: str, keys: list[AssetKey], fleet: FleetAssets) -> AssetsDefinition:
    specs = [
        AssetCheckSpec(
            name=INTEGRITY_CHECK,
            asset=key,
            description="Passes when the latest cycle's backup arrived intact (SUCCESS or HASH_MISMATCH).",
        )
        for key in keys
    ] + [
        AssetCheckSpec(
            name=SIZE_CHECK,
            asset=key,
            description=(
                "Warns when a successful backup's staged size is far from the median of its expected "
                "backup's last successful cycles (size anomaly)."
            ),
        )
        for key in keys
    ]
    specs += [restorable_spec(key) for key in keys]

    @multi_asset_check(specs=specs, name=name, can_subset=True)
    def _check(context: AssetCheckExecutionContext, database: DatabaseResource) -> Iterator[AssetCheckResult]:
        """Re-publish integrity and size from each asset's latest recorded entries."""
        with database.get().sessions() as session:
            for check_key in context.selected_asset_check_keys:
                agent, backups = fleet.owner(check_key.asset_key)
                wanted = {(b.database_name, b.name) for b in backups}
                if check_key.name == RESTORABLE_CHECK:
                    drilled = [
                        stored_drill(drill, backup.database_name)
                        for drill, backup in drills.latest_drills_of_agent(session, agent)
                        if (backup.database_name, backup.name) in wanted
                    ]
                    yield on_demand_result(check_key.asset_key, drilled, per_database=fleet.per_database)
                    continue
                latest = [
                    (entry, backup.database_name)
                    for entry, backup in entries.latest_entries_of_agent(session, agent)
                    if (backup.database_name, backup.name) in wanted
                ]
                if check_key.name == SIZE_CHECK:
                    yield _size_result(check_key.asset_key, latest)
                else:
                    yield _integrity_result(check_key.asset_key, latest)

    return _check


def _integrity_result(key: AssetKey, latest: list[tuple[BackupEntryRow, str]]) -> AssetCheckResult:
    """`latest`: each backup's latest entry with its database's name (the entry row has none)."""
    failing = [(e, name) for e, name in latest if e.status not in SUCCESS_STATUSES]
    return AssetCheckResult(
        asset_key=key,
        check_name=INTEGRITY_CHECK,
        passed=integrity_passes(e.status for e, _ in latest),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "evaluated": len(latest),
            "problems": "\n".join(f"{name}: {e.status}: {e.message}" for e, name in failing)
            or ("none" if latest else NOT_EVALUATED),
        },
    )


def _size_result(key: AssetKey, latest: list[tuple[BackupEntryRow, str]]) -> AssetCheckResult:
    anomalous = [(e, name) for e, name in latest if e.size_anomaly]
    return AssetCheckResult(
        asset_key=key,
        check_name=SIZE_CHECK,
        passed=not anomalous,
        severity=AssetCheckSeverity.WARN,
        metadata={"anomalies": "\n".join(f"{name}: {e.message}" for e, name in anomalous) or "none"},
    )


def size_evaluation(
    key: AssetKey, partition: str, o: EntryOutcome, cycle: str
) -> AssetCheckEvaluation | None:
    """The size check of a successful cycle (WARNING when it is an anomaly), None for the others."""
    if o.status not in SUCCESS_STATUSES:
        return None
    metadata: dict[str, object] = {"cycle_expected_at": cycle, "size": _int(o.server_size)}
    if o.size_median is not None:
        metadata |= {
            "median": MetadataValue.float(o.size_median),
            "ratio": MetadataValue.float(o.size_ratio) if o.size_ratio is not None else MetadataValue.null(),
            "history": _int(o.size_history),
        }
    else:
        metadata["note"] = "not enough successful cycles yet to compare sizes"
    if o.size_anomaly:
        metadata["anomaly"] = o.size_anomaly
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=SIZE_CHECK,
        passed=o.size_anomaly is None,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        partition=partition,
    )


def outcome_events(outcomes: Iterable[EntryOutcome], day: date) -> Iterator[Event]:
    """Per-database fleets: a materialization and a check evaluation per entry written by the run
    (created or changed; in an explicit re-evaluation, every one)."""
    partition = day.isoformat()
    for o in outcomes:
        key = asset_key(o.agent_id, o.database_name, o.backup_name)
        cycle = o.cycle_expected_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata = {
            "status": o.status,
            "schedule": o.schedule,
            "message": o.message,
            "cycle_expected_at": cycle,
            "server_sha256": o.server_hash or "",
            "server_size": _int(o.server_size),
            "agent_sha256": o.agent_hash or "",
            "agent_size": _int(o.agent_size),
            "report_file": o.report_file or "",
            "entry_id": MetadataValue.int(o.entry_id),
            "changed": MetadataValue.bool(o.changed),
        }
        if o.size_anomaly:
            metadata["size_anomaly"] = o.size_anomaly
        yield AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
        yield AssetCheckEvaluation(
            asset_key=key,
            check_name=INTEGRITY_CHECK,
            passed=integrity_passes([o.status]),
            severity=AssetCheckSeverity.ERROR,
            metadata={"status": o.status, "message": o.message, "cycle_expected_at": cycle},
            partition=partition,
        )
        size = size_evaluation(key, partition, o, cycle)
        if size is not None:
            yield size


def agent_events(days: Iterable[AgentDay]) -> Iterator[Event]:
    """Large fleets: one materialization and check per agent whose day the run wrote."""
    for d in days:
        key, partition = agent_asset_key(d.agent_id), d.day.isoformat()
        problems = "\n".join(f"- {escape_markdown(p)}" for p in d.problems) or (
            "none" if d.entries else NOT_EVALUATED
        )  # agents' texts, made inert
        metadata = {
            "entries": MetadataValue.int(d.entries),
            **{status.lower(): MetadataValue.int(n) for status, n in sorted(d.statuses.items())},
            "total_size": MetadataValue.int(d.total_size),
            "problems": MetadataValue.md(problems),
        }
        yield AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
        yield AssetCheckEvaluation(
            asset_key=key,
            check_name=INTEGRITY_CHECK,
            passed=d.passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={"problems": MetadataValue.md(problems)},
            partition=partition,
        )
        anomalies = "\n".join(f"- {escape_markdown(a)}" for a in d.anomalies) or "none"
        yield AssetCheckEvaluation(
            asset_key=key,
            check_name=SIZE_CHECK,
            passed=not d.anomalies,
            severity=AssetCheckSeverity.WARN,
            metadata={"anomalies": MetadataValue.md(anomalies)},
            partition=partition,
        )


def _int(value: int | None) -> MetadataValue:
    return MetadataValue.int(value) if value is not None else MetadataValue.null()
