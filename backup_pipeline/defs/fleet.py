"""The monitored databases as Dagster assets: partitioned assets of the synced fleet, their checks and
the events scans and drills report on them.

One source: the expected backups synced into PostgreSQL, the fleet scans evaluate (`scan.sync.
synced_fleet`: the configured jobs file is synced first when it changed, as a scan would). One rule
for the granularity (`core.names.per_database_assets`): up to `per_database_assets_max` expected
backups each one is an asset, grouped by agent; above it every agent is one asset summarising its
databases (Dagster stores a few hundred events a second: one event per database would make a
20,000-database scan last minutes). Every key an event names is decided here, from the same synced
fleet as the definitions' assets; a sync that changes the fleet asks the UI to reload them (`reload`).

A materialization of a partition means a good backup: per expected backup, the cycle is SUCCESS or
HASH_MISMATCH; per agent, every cycle owed that day is decided and good (`AssetDay.verdict`). A bad
cycle (or an agent's bad or still undecided day) is an `AssetObservation` with the same metadata,
beside its failing checks for that partition. Partition bars then show green exactly for the days
with good backups, and "missing" for the others, which a backfill of the scan job re-evaluates.
Assets are views of the scan's entries, not executable by themselves.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    MetadataValue,
    PartitionsDefinition,
    multi_asset_check,
)

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.domain import SUCCESS_STATUSES, DayVerdict, EntryStatus
from backup_pipeline.core.names import asset_path, dagster_name, per_database_assets
from backup_pipeline.defs.freshness import agent_policy, backup_policy
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.defs.restorable import (
    RESTORABLE_CHECK,
    agent_evaluation,
    database_evaluation,
    drill_observation,
    not_drilled_evaluation,
    stored_drill,
)
from backup_pipeline.scan.outcomes import AssetDay, EntryOutcome, asset_days
from backup_pipeline.scan.sync import synced_fleet
from backup_pipeline.storage import drills, entries
from backup_pipeline.storage.database import Database, open_database

REPORTS_ASSET = AssetKey(["backup_reports"])
INTEGRITY_CHECK = "integrity"
SIZE_CHECK = "size"  # WARNING: the staged size is far from the expected backup's trailing median
CHECKS_PER_DEFINITION = 50  # one multi-asset check holding thousands of specs validates very slowly
NOT_EVALUATED = "no cycle evaluated yet"
Event = AssetMaterialization | AssetObservation | AssetCheckEvaluation


@dataclass(frozen=True)
class FleetAssets:
    """How the fleet is shown in Dagster, decided once per load of the definitions (a resource of
    the scan's evaluate steps and the drills' steps, which report their events through it)."""

    backups: list[Any]  # synced expected backups (rows, or declared backups in tests)
    per_database: bool
    _owners: dict[AssetKey, list[Any]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, settings: Settings, database: Database | None = None) -> "FleetAssets":
        backups = synced_fleet(settings, database or open_database(settings), datetime.now(UTC))
        return cls.of(
            backups, per_database=per_database_assets(len(backups), settings.per_database_assets_max)
        )

    @classmethod
    def of(cls, backups: Sequence[Any], *, per_database: bool) -> "FleetAssets":
        owners: dict[AssetKey, list[Any]] = defaultdict(list)
        for backup in backups:
            owners[_key(backup.agent_id, backup.database_name, backup.name, per_database)].append(backup)
        return cls(list(backups), per_database, dict(owners))

    def key_of(self, agent_id: str, database_name: str, name: str) -> AssetKey:
        """The asset an expected backup's cycles and drills are shown on."""
        return _key(agent_id, database_name, name, self.per_database)

    def knows(self, key: AssetKey) -> bool:
        return key in self._owners

    def owner(self, key: AssetKey) -> tuple[str, list[Any]]:
        """The agent and the expected backups an asset stands for."""
        backups = self._owners[key]
        return backups[0].agent_id, backups

    # ---------------------------------------------------------------- definitions

    def specs(self, partitions: PartitionsDefinition) -> list[AssetSpec]:
        reports = AssetSpec(
            key=REPORTS_ASSET,
            partitions_def=partitions,
            group_name="deposit",
            description="Status reports recorded from the deposit area (every report file, accepted or not).",
        )
        return [reports, *(self._spec(key, backups, partitions) for key, backups in self._owners.items())]

    def _spec(self, key: AssetKey, backups: list[Any], partitions: PartitionsDefinition) -> AssetSpec:
        agent = backups[0].agent_id
        common = {
            "key": key,
            "partitions_def": partitions,
            "deps": [REPORTS_ASSET],
            "freshness_policy": backup_policy(backups[0]) if self.per_database else agent_policy(backups),
        }
        if self.per_database:
            (b,) = backups
            return AssetSpec(
                **common,
                group_name=dagster_name(agent),
                description=(
                    f"Backup of database `{b.database_name}` by agent `{agent}`, expected "
                    f"{schedule_of(b).text} (from {b.early_minutes} min early to {b.grace_minutes} min "
                    f"late, content policy {b.content_change}). Materialized for a day by a good backup "
                    "(SUCCESS or HASH_MISMATCH); a bad one is an observation and a failed check."
                ),
                metadata={
                    "agent_id": agent,
                    "database_name": b.database_name,
                    "schedule": schedule_of(b).text,
                },
            )
        names = sorted({b.database_name for b in backups})
        return AssetSpec(
            **common,
            group_name=dagster_name(agent.split("_")[0]),
            description=(
                f"Backups of agent `{agent}`: {len(backups)} expected backup(s) "
                f"({', '.join(names[:20])}{', …' if len(names) > 20 else ''}). Materialized for a day "
                "when every cycle owed that day is decided and good."
            ),
            metadata={"agent_id": agent, "databases": len(backups)},
        )

    def checks(self, partitions: PartitionsDefinition) -> list[AssetsDefinition]:
        """Integrity, size and restorable checks for each day, grouped in a few multi-asset checks
        (validation of one holding thousands of specs is slow)."""
        per_agent: dict[str, list[AssetKey]] = defaultdict(list)
        for key, backups in self._owners.items():
            per_agent[backups[0].agent_id].append(key)
        if self.per_database:
            groups = [(f"integrity_{dagster_name(agent)}", keys) for agent, keys in sorted(per_agent.items())]
        else:
            agents = sorted(per_agent)
            chunks = [
                agents[i : i + CHECKS_PER_DEFINITION] for i in range(0, len(agents), CHECKS_PER_DEFINITION)
            ]
            groups = [
                (f"integrity_agents_{n + 1:04d}", [k for a in chunk for k in per_agent[a]])
                for n, chunk in enumerate(chunks)
            ]
        return [_check_definition(name, keys, self, partitions) for name, keys in groups]

    # ---------------------------------------------------------------- events

    def scan_events(self, database: Database, outcomes: Sequence[EntryOutcome], day: date) -> Iterator[Event]:
        """A run's events for the entries it wrote on `day`: per-database assets, an event and checks
        per entry; per-agent assets, one per agent whose day the run wrote. Materialization or
        observation follows the asset's whole day (read back after the entries were committed)."""
        agents = sorted({o.agent_id for o in outcomes})
        if not agents:
            return
        days = {
            self._day_key(d): d for d in asset_days(database, agents, day, per_database=self.per_database)
        }
        if self.per_database:
            for o in outcomes:
                key = self.key_of(o.agent_id, o.database_name, o.backup_name)
                yield from entry_events(key, o, days[key])
        else:
            for key in sorted({self.key_of(o.agent_id, o.database_name, o.backup_name) for o in outcomes}):
                yield from agent_day_events(key, days[key])

    def drill_events(self, database: Database, ran: Sequence[Any]) -> list[Event]:
        """The restorable check and an observation with the restore's figures, on the drilled cycle's
        day: per drill (per-database assets), or per agent over its backups' latest drills."""
        if self.per_database:
            events: list[Event] = []
            for r in ran:
                drill = r.model_dump() | {"id": r.drill_id}
                key = self.key_of(r.agent_id, r.database_name, r.name)
                events += [database_evaluation(key, drill), drill_observation(key, [drill])]
            return events
        per_agent: dict[str, list[Any]] = defaultdict(list)
        for r in ran:
            per_agent[r.agent_id].append(r)
        events = []
        with database.sessions() as session:
            for agent, results in sorted(per_agent.items()):
                key = self.key_of(agent, "", "")
                latest = [
                    stored_drill(d, j.database_name) for d, j in drills.latest_drills_of_agent(session, agent)
                ]
                day = max(r.cycle_expected_at for r in results).date().isoformat()
                this_run = [r.model_dump() | {"id": r.drill_id} for r in results]
                events += [agent_evaluation(key, latest, day), drill_observation(key, this_run, day)]
        return events

    def on_synced_fleet(
        self, settings: Settings, database: Database, events_of: Callable[["FleetAssets"], Iterable[Event]]
    ) -> tuple[list[Event], bool]:
        """A step's events, on assets these definitions declare; when some name an asset they do not
        (the fleet was synced since the definitions were loaded, and the sync asked the UI to reload
        them, see `reload`), on the assets of the fleet as synced now instead. True in that case."""
        events = list(events_of(self))
        if all(self.knows(event.asset_key) for event in events):
            return events, False
        return list(events_of(FleetAssets.load(settings, database))), True

    def _day_key(self, d: AssetDay) -> AssetKey:
        return self.key_of(d.agent_id, d.database_name or "", d.name or "")


def _key(agent_id: str, database_name: str, name: str, per_database: bool) -> AssetKey:
    return AssetKey(asset_path(agent_id, database_name, name, per_database=per_database))


# ---------------------------------------------------------------- checks run from the UI


def _check_definition(
    name: str, keys: list[AssetKey], fleet: FleetAssets, partitions: PartitionsDefinition
) -> AssetsDefinition:
    specs = [
        AssetCheckSpec(
            name=INTEGRITY_CHECK,
            asset=key,
            partitions_def=partitions,
            description="Passes for a day when its decided cycles are all SUCCESS or HASH_MISMATCH.",
        )
        for key in keys
    ]
    specs += [
        AssetCheckSpec(
            name=SIZE_CHECK,
            asset=key,
            partitions_def=partitions,
            description=(
                "Warns when a successful backup's staged size is far from the median of its expected "
                "backup's last successful cycles (size anomaly)."
            ),
        )
        for key in keys
    ]
    specs += [
        AssetCheckSpec(
            name=RESTORABLE_CHECK,
            asset=key,
            partitions_def=partitions,
            description=(
                "Passes when the latest restore drill restored the backup into a scratch server and its "
                "validation queries passed; warns when it shrank since the previous drill, was slower than "
                "its restore-time objective, or is not drillable here; fails when it does not restore."
            ),
        )
        for key in keys
    ]

    @multi_asset_check(specs=specs, name=name, can_subset=True)
    def _check(context: AssetCheckExecutionContext, database: DatabaseResource) -> Iterator[Any]:
        """Publish again each asset's latest verdicts, each for the day it judges. Dagster 1.13 runs a
        check from the UI without a partition, so the verdicts are logged with their own day."""
        for event in on_demand_events(database.get(), fleet, context.selected_asset_check_keys):
            context.op_execution_context.log_event(event)
        yield from ()

    return _check


def on_demand_events(database: Database, fleet: FleetAssets, check_keys: Iterable[Any]) -> list[Event]:
    """The latest verdict of each asked check: integrity and size over the asset's latest day with
    entries, restorable over its backups' latest drills."""
    events: list[Event] = []
    with database.sessions() as session:
        for check_key in check_keys:
            agent, backups = fleet.owner(check_key.asset_key)
            wanted = {(b.database_name, b.name) for b in backups}
            if check_key.name == RESTORABLE_CHECK:
                drilled = [
                    stored_drill(drill, backup.database_name)
                    for drill, backup in drills.latest_drills_of_agent(session, agent)
                    if (backup.database_name, backup.name) in wanted
                ]
                if not drilled:
                    events.append(not_drilled_evaluation(check_key.asset_key))
                elif fleet.per_database and len(drilled) == 1:
                    events.append(database_evaluation(check_key.asset_key, drilled[0]))
                else:
                    events.append(agent_evaluation(check_key.asset_key, drilled, _latest_day(drilled)))
                continue
            latest = [
                e
                for e, b in entries.latest_entries_of_agent(session, agent)
                if (b.database_name, b.name) in wanted
            ]
            day = max((e.cycle_expected_at.astimezone(UTC).date() for e in latest), default=None)
            events.append(_day_check(check_key.asset_key, check_key.name, database, fleet, day))
    return events


def _latest_day(drilled: list[Mapping[str, Any]]) -> str:
    return max(d["cycle_expected_at"] for d in drilled).astimezone(UTC).date().isoformat()


def _day_check(key: AssetKey, check: str, database: Database, fleet: FleetAssets, day: date | None) -> Event:
    if day is None:
        summary = None
    else:
        agent, _ = fleet.owner(key)
        found = [
            d
            for d in asset_days(database, [agent], day, per_database=fleet.per_database)
            if fleet._day_key(d) == key
        ]
        summary = found[0] if found else None
    if summary is None:
        return AssetCheckEvaluation(
            asset_key=key,
            check_name=check,
            passed=False,
            severity=AssetCheckSeverity.ERROR if check == INTEGRITY_CHECK else AssetCheckSeverity.WARN,
            metadata={"problems": NOT_EVALUATED},
        )
    return _integrity(key, summary) if check == INTEGRITY_CHECK else _size(key, summary)


# ---------------------------------------------------------------- what each event says


def entry_events(key: AssetKey, o: EntryOutcome, day: AssetDay) -> Iterator[Event]:
    """One expected backup's entry: its cycle's figures on a materialization when the cycle is good,
    on an observation otherwise; the integrity check over its day's cycles; the cycle's size check."""
    partition = day.day.isoformat()
    cycle = o.cycle_expected_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata: dict[str, Any] = {
        "status": o.status,
        "schedule": o.schedule,
        "message": o.message,
        "cycle_expected_at": cycle,
        "staged_bytes": _int(o.server_size),
        "size_ratio": _float(o.size_ratio),
        "size_median_bytes": _float(o.size_median),
        "agent_bytes": _int(o.agent_size),
        "server_sha256": o.server_hash or "",
        "agent_sha256": o.agent_hash or "",
        "report_file": o.report_file or "",
        "entry_id": MetadataValue.int(o.entry_id),
        "changed": MetadataValue.bool(o.changed),
    }
    if o.size_anomaly:
        metadata["size_anomaly"] = o.size_anomaly
    yield _asset_event(key, partition, metadata, good=o.status in SUCCESS_STATUSES)
    yield AssetCheckEvaluation(
        asset_key=key,
        check_name=INTEGRITY_CHECK,
        passed=day.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "status": o.status,
            "message": o.message,
            "cycle_expected_at": cycle,
            "problems": "\n".join(day.problems) or "none",
        },
        partition=partition,
    )
    size = _size_evaluation(key, partition, o, cycle)
    if size is not None:
        yield size


def _size_evaluation(
    key: AssetKey, partition: str, o: EntryOutcome, cycle: str
) -> AssetCheckEvaluation | None:
    """The size check of a successful cycle (WARNING when it is an anomaly), None for the others."""
    if o.status not in SUCCESS_STATUSES:
        return None
    metadata: dict[str, object] = {"cycle_expected_at": cycle, "staged_bytes": _int(o.server_size)}
    if o.size_median is not None:
        metadata |= {
            "size_median_bytes": _float(o.size_median),
            "size_ratio": _float(o.size_ratio),
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


def agent_day_events(key: AssetKey, d: AssetDay) -> Iterator[Event]:
    """One agent's day: counts per status (every status, so that plots have stable series)."""
    metadata: dict[str, Any] = {
        "day": d.verdict.value,
        "entries": MetadataValue.int(d.entries),
        "undecided": MetadataValue.int(d.undecided),
        **{status.lower(): MetadataValue.int(d.statuses.get(status, 0)) for status in EntryStatus},
        "staged_bytes": MetadataValue.int(d.total_size),
        "problems": MetadataValue.md(_problems(d)),
    }
    yield _asset_event(key, d.day.isoformat(), metadata, good=d.verdict is DayVerdict.GOOD)
    yield _integrity(key, d)
    yield _size(key, d)


def _problems(d: AssetDay) -> str:
    # agents' texts, made inert
    return "\n".join(f"- {escape_markdown(p)}" for p in d.problems) or (
        "none" if d.entries else NOT_EVALUATED
    )


def _integrity(key: AssetKey, d: AssetDay) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=INTEGRITY_CHECK,
        passed=d.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"problems": MetadataValue.md(_problems(d))},
        partition=d.day.isoformat(),
    )


def _size(key: AssetKey, d: AssetDay) -> AssetCheckEvaluation:
    anomalies = "\n".join(f"- {escape_markdown(a)}" for a in d.anomalies) or "none"
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=SIZE_CHECK,
        passed=not d.anomalies,
        severity=AssetCheckSeverity.WARN,
        metadata={"anomalies": MetadataValue.md(anomalies)},
        partition=d.day.isoformat(),
    )


def _asset_event(key: AssetKey, partition: str, metadata: dict[str, Any], *, good: bool) -> Event:
    if good:
        return AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
    return AssetObservation(asset_key=key, partition=partition, metadata=metadata)


def _int(value: int | None) -> MetadataValue:
    return MetadataValue.int(value) if value is not None else MetadataValue.null()


def _float(value: float | None) -> MetadataValue:
    return MetadataValue.float(value) if value is not None else MetadataValue.null()
