"""The monitored databases as Dagster assets: one partitioned asset per expected job, checks, events.

Assets are declared from the jobs file (they are views of the scan's entries, not executable by
themselves): the scan job reports a materialization for a database's day whenever that cycle's
entry is created or changes, and an integrity check result alongside it.
"""

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
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

from backup_pipeline.evaluation import EntryOutcome
from backup_pipeline.jobs_file import JobsFileError, ResolvedJob, load_jobs_file
from backup_pipeline.settings import Settings

log = logging.getLogger(__name__)

REPORTS_ASSET = AssetKey(["backup_reports"])
INTEGRITY_CHECK = "integrity"
PASSING = {"SUCCESS", "HASH_MISMATCH"}


def _name(text: str) -> str:
    """Dagster names allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def asset_key(agent_id: str, database_name: str, hour: int, minute: int) -> AssetKey:
    return AssetKey(["backups", _name(agent_id), f"{_name(database_name)}_{hour:02d}{minute:02d}"])


def declared_jobs(settings: Settings) -> list[ResolvedJob]:
    """The jobs file as the code location sees it; a missing file declares no database asset."""
    try:
        return load_jobs_file(settings.jobs_file, settings.window_minutes)
    except JobsFileError as exc:
        if not settings.jobs_file.exists():
            log.warning("no jobs file at %s: no database assets declared", settings.jobs_file)
            return []
        raise JobsFileError(f"the code location cannot load its database assets: {exc}") from None


def reports_asset(partitions: PartitionsDefinition) -> AssetSpec:
    return AssetSpec(
        key=REPORTS_ASSET,
        partitions_def=partitions,
        group_name="deposit",
        description="Status reports recorded from the deposit area (every report file, accepted or not).",
    )


def database_assets(jobs: Sequence[ResolvedJob], partitions: PartitionsDefinition) -> list[AssetSpec]:
    return [
        AssetSpec(
            key=asset_key(j.agent_id, j.database_name, j.expected_hour_utc, j.expected_minute_utc),
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


def integrity_checks(jobs: Sequence[ResolvedJob], settings: Settings) -> list[AssetsDefinition]:
    """One multi-asset check per agent (one holding every database does not scale)."""
    per_agent: dict[str, list[ResolvedJob]] = defaultdict(list)
    for j in jobs:
        per_agent[j.agent_id].append(j)
    return [_agent_check(agent, agent_jobs, settings) for agent, agent_jobs in sorted(per_agent.items())]


def _agent_check(agent_id: str, jobs: list[ResolvedJob], settings: Settings) -> AssetsDefinition:
    keys = {
        asset_key(j.agent_id, j.database_name, j.expected_hour_utc, j.expected_minute_utc): j for j in jobs
    }
    specs = [
        AssetCheckSpec(
            name=INTEGRITY_CHECK,
            asset=key,
            description="Passes when the latest cycle's backup arrived intact (SUCCESS or HASH_MISMATCH).",
        )
        for key in keys
    ]

    @multi_asset_check(specs=specs, name=f"integrity_{_name(agent_id)}", can_subset=True)
    def _check(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        """Re-publish each database's integrity from its latest recorded entry."""
        from backup_pipeline.storage.database import open_database
        from backup_pipeline.views import entry_rows

        database = open_database(settings)
        for check_key in context.selected_asset_check_keys:
            job = keys[check_key.asset_key]
            rows = [
                r
                for r in entry_rows(database, job.agent_id, job.database_name, None)
                if r["cycle_expected_at"][11:16]
                == f"{job.expected_hour_utc:02d}:{job.expected_minute_utc:02d}"
            ]
            latest = rows[-1] if rows else None
            passed = latest is not None and latest["status"] in PASSING
            yield AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=INTEGRITY_CHECK,
                passed=passed,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "status": latest["status"] if latest else "UNKNOWN",
                    "cycle": latest["cycle_expected_at"] if latest else "none yet",
                    "message": latest["message"] if latest else "no cycle evaluated yet",
                },
            )

    return _check


def outcome_events(
    outcomes: Iterable[EntryOutcome], day: date
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    """A materialization and a check evaluation per created or changed entry."""
    partition = day.isoformat()
    for o in outcomes:
        at = o.cycle_expected_at
        key = asset_key(o.agent_id, o.database_name, at.hour, at.minute)
        metadata = {
            "status": o.status,
            "message": o.message,
            "cycle_expected_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "server_sha256": o.server_hash or "",
            "server_size": MetadataValue.int(o.server_size)
            if o.server_size is not None
            else MetadataValue.null(),
            "agent_sha256": o.agent_hash or "",
            "agent_size": MetadataValue.int(o.agent_size)
            if o.agent_size is not None
            else MetadataValue.null(),
            "report_file": o.report_file or "",
            "entry_id": MetadataValue.int(o.entry_id),
        }
        yield AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
        yield AssetCheckEvaluation(
            asset_key=key,
            check_name=INTEGRITY_CHECK,
            passed=o.status in PASSING,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "status": o.status,
                "message": o.message,
                "cycle_expected_at": metadata["cycle_expected_at"],
            },
            partition=partition,
        )
