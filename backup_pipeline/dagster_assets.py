"""The monitored databases as Dagster assets: partitioned assets from the jobs file, checks, events.

Assets are views of the scan's entries, not executable by themselves: the scan job reports a
materialization (and an integrity check result) for a day whenever an entry is created or changes.

Granularity follows the fleet's size. Up to `per_database_assets_max` jobs, every expected job is an
asset (grouped by agent). Above it, every agent is one asset whose materialization summarises its
databases: Dagster stores a few hundred events per second, so one event per database would make a
20,000-database scan last minutes.
"""

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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

from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.evaluation import AgentDay, EntryOutcome
from backup_pipeline.jobs_file import JobsFileError, ResolvedJob, load_jobs_file
from backup_pipeline.settings import Settings

log = logging.getLogger(__name__)

REPORTS_ASSET = AssetKey(["backup_reports"])
INTEGRITY_CHECK = "integrity"
SIZE_CHECK = "size"  # WARNING: the staged size is far from the job's trailing median (issue 4)
PASSING = {"SUCCESS", "HASH_MISMATCH"}
CHECKS_PER_DEFINITION = 50  # one multi-asset check holding thousands of specs validates very slowly


def _name(text: str) -> str:
    """Dagster names allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def asset_key(agent_id: str, database_name: str, hour: int, minute: int) -> AssetKey:
    return AssetKey(["backups", _name(agent_id), f"{_name(database_name)}_{hour:02d}{minute:02d}"])


def agent_asset_key(agent_id: str) -> AssetKey:
    return AssetKey(["backups", _name(agent_id)])


def declared_jobs(settings: Settings) -> list[ResolvedJob]:
    """The jobs file as the code location sees it; a missing file declares no database asset."""
    try:
        return load_jobs_file(settings.jobs_file, settings.window_minutes)
    except JobsFileError as exc:
        if not settings.jobs_file.exists():
            log.warning("no jobs file at %s: no database assets declared", settings.jobs_file)
            return []
        raise JobsFileError(f"the code location cannot load its database assets: {exc}") from None


@dataclass(frozen=True)
class FleetAssets:
    """How the fleet is shown in Dagster, decided once per code location load."""

    jobs: list[ResolvedJob]
    per_database: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> "FleetAssets":
        jobs = declared_jobs(settings)
        return cls(jobs=jobs, per_database=len(jobs) <= settings.per_database_assets_max)

    def specs(self, partitions: PartitionsDefinition) -> list[AssetSpec]:
        reports = AssetSpec(
            key=REPORTS_ASSET,
            partitions_def=partitions,
            group_name="deposit",
            description="Status reports recorded from the deposit area (every report file, accepted or not).",
        )
        backups = (
            database_specs(self.jobs, partitions) if self.per_database else agent_specs(self.jobs, partitions)
        )
        return [reports, *backups]

    def checks(self, settings: Settings) -> list[AssetsDefinition]:
        if self.per_database:
            per_agent: dict[str, list[AssetKey]] = defaultdict(list)
            for j in self.jobs:
                per_agent[j.agent_id].append(_job_key(j))
            groups = [(f"integrity_{_name(agent)}", keys) for agent, keys in sorted(per_agent.items())]
        else:
            agents = sorted({j.agent_id for j in self.jobs})
            chunks = [
                agents[i : i + CHECKS_PER_DEFINITION] for i in range(0, len(agents), CHECKS_PER_DEFINITION)
            ]
            groups = [
                (f"integrity_agents_{n + 1:04d}", [agent_asset_key(a) for a in c])
                for n, c in enumerate(chunks)
            ]
        return [_check_definition(name, keys, self, settings) for name, keys in groups]

    def owner(self, key: AssetKey) -> tuple[str, list[ResolvedJob]]:
        """The agent and the jobs an asset stands for."""
        index: dict[AssetKey, list[ResolvedJob]] = defaultdict(list)
        for j in self.jobs:
            index[_job_key(j) if self.per_database else agent_asset_key(j.agent_id)].append(j)
        jobs = index[key]
        return jobs[0].agent_id, jobs


def _job_key(job: ResolvedJob) -> AssetKey:
    return asset_key(job.agent_id, job.database_name, job.expected_hour_utc, job.expected_minute_utc)


def database_specs(jobs: Sequence[ResolvedJob], partitions: PartitionsDefinition) -> list[AssetSpec]:
    return [
        AssetSpec(
            key=_job_key(j),
            partitions_def=partitions,
            group_name=_name(j.agent_id),
            deps=[REPORTS_ASSET],
            description=(
                f"Backup of database `{j.database_name}` by agent `{j.agent_id}`, expected daily at "
                f"{j.expected_hour_utc:02d}:{j.expected_minute_utc:02d} UTC (window {j.window_minutes} min, "
                f"content policy {j.content_change.value})."
            ),
            metadata={"agent_id": j.agent_id, "database_name": j.database_name},
        )
        for j in jobs
    ]


def agent_specs(jobs: Sequence[ResolvedJob], partitions: PartitionsDefinition) -> list[AssetSpec]:
    per_agent: dict[str, list[ResolvedJob]] = defaultdict(list)
    for j in jobs:
        per_agent[j.agent_id].append(j)
    return [
        AssetSpec(
            key=agent_asset_key(agent),
            partitions_def=partitions,
            group_name=_name(agent.split("_")[0]),
            deps=[REPORTS_ASSET],
            description=(
                f"Backups of agent `{agent}`: {len(agent_jobs)} expected job(s) "
                f"({', '.join(sorted({j.database_name for j in agent_jobs})[:20])}"
                f"{', …' if len(agent_jobs) > 20 else ''})."
            ),
            metadata={"agent_id": agent, "databases": len(agent_jobs)},
        )
        for agent, agent_jobs in sorted(per_agent.items())
    ]


def _check_definition(
    name: str, keys: list[AssetKey], fleet: FleetAssets, settings: Settings
) -> AssetsDefinition:
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
                "Warns when a successful backup's staged size is far from the median of the job's last "
                "successful cycles (size anomaly)."
            ),
        )
        for key in keys
    ]

    @multi_asset_check(specs=specs, name=name, can_subset=True)
    def _check(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        """Re-publish integrity from each asset's latest recorded entries."""
        from backup_pipeline.storage.database import open_database
        from backup_pipeline.views import latest_entries

        database = open_database(settings)
        for check_key in context.selected_asset_check_keys:
            agent, jobs = fleet.owner(check_key.asset_key)
            latest = latest_entries(
                database, agent, [(j.database_name, j.expected_hour_utc, j.expected_minute_utc) for j in jobs]
            )
            if check_key.name == SIZE_CHECK:
                yield _size_result(check_key.asset_key, latest)
                continue
            failing = [e for e in latest if e["status"] not in PASSING]
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=INTEGRITY_CHECK,
                passed=bool(latest) and not failing,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "evaluated": len(latest),
                    "problems": "\n".join(
                        f"{e['database_name']}: {e['status']}: {e['message']}" for e in failing
                    )
                    or ("none" if latest else "no cycle evaluated yet"),
                },
            )

    return _check


def _size_result(key: AssetKey, latest: list[dict]) -> AssetCheckResult:
    anomalous = [e for e in latest if e.get("size_anomaly")]
    return AssetCheckResult(
        asset_key=key,
        check_name=SIZE_CHECK,
        passed=not anomalous,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "anomalies": "\n".join(f"{e['database_name']}: {e['message']}" for e in anomalous) or "none",
        },
    )


def size_evaluation(
    key: AssetKey, partition: str, o: EntryOutcome, cycle: str
) -> AssetCheckEvaluation | None:
    """The size check of a successful cycle (WARNING when it is an anomaly), None for the others."""
    if o.status not in PASSING:
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


def outcome_events(
    outcomes: Iterable[EntryOutcome], day: date
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    """Per-database fleets: a materialization and a check evaluation per entry written by the run
    (created or changed; in an explicit re-evaluation, every one)."""
    partition = day.isoformat()
    for o in outcomes:
        at = o.cycle_expected_at
        key = asset_key(o.agent_id, o.database_name, at.hour, at.minute)
        cycle = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata = {
            "status": o.status,
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
            passed=o.status in PASSING,
            severity=AssetCheckSeverity.ERROR,
            metadata={"status": o.status, "message": o.message, "cycle_expected_at": cycle},
            partition=partition,
        )
        size = size_evaluation(key, partition, o, cycle)
        if size is not None:
            yield size


def agent_events(days: Iterable[AgentDay]) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    """Large fleets: one materialization and check per agent whose day the run wrote."""
    for d in days:
        key, partition = agent_asset_key(d.agent_id), d.day.isoformat()
        problems = "\n".join(f"- {escape_markdown(p)}" for p in d.problems) or "none"  # agents' texts
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
            passed=not d.problems,
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
