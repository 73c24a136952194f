"""Restore drills as Dagster shows them: the `restorable` asset check of each monitored database (or
agent, in large fleets), with the drill's figures as metadata.

Passed when the latest drill restored; a warning when the restore shrank since the previous drill,
took longer than its restore-time objective, or the dump is not drillable here (never shown as a
failure); an error when it does not restore (or a validation query does not pass). The drill job
reports an evaluation per drill on the drilled cycle's day, and an observation with the restore's
figures (rows, bytes, seconds) that the asset's plots graph; the check can also be run from the UI,
which publishes the latest recorded drills again.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetObservation,
    MetadataValue,
)

from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.drills import DrillOutcome

RESTORABLE_CHECK = "restorable"
NOT_DRILLED = "no restore drill yet"


def verdict(drills: Iterable[Mapping[str, Any]]) -> tuple[bool, AssetCheckSeverity]:
    """Over one or several backups' latest drills: the worst one decides."""
    outcomes = [(d["outcome"], bool(d.get("shrank")) or bool(d.get("slow"))) for d in drills]
    if not outcomes:
        return False, AssetCheckSeverity.WARN
    if any(outcome == DrillOutcome.RESTORE_FAILED for outcome, _ in outcomes):
        return False, AssetCheckSeverity.ERROR
    if all(outcome == DrillOutcome.RESTORED and not warned for outcome, warned in outcomes):
        return True, AssetCheckSeverity.WARN
    return False, AssetCheckSeverity.WARN


def drill_metadata(d: Mapping[str, Any]) -> dict[str, Any]:
    """One drill's figures, numbers under stable keys for the asset's plots (agents' and dumps' texts
    are plain text metadata, never markdown)."""
    cycle = d["cycle_expected_at"]
    metadata: dict[str, Any] = {
        "outcome": d["outcome"],
        "cycle_expected_at": cycle.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **drill_figures([d]),
        "detected": d.get("detected_kind") or "",
        "amcheck": d.get("amcheck") or "",
        "engine": d.get("engine") or "",
        "tool_versions": MetadataValue.json(dict(d.get("tool_versions") or {})),
    }
    if d.get("checks"):
        metadata["checks"] = MetadataValue.json(list(d["checks"]))
    if d.get("objective_seconds") is not None:
        metadata["objective_seconds"] = MetadataValue.float(float(d["objective_seconds"]))
    if d.get("slow"):
        metadata["slow"] = (
            f"restored in {float(d.get('duration_seconds') or 0):.0f} s, over its objective of "
            f"{float(d.get('objective_seconds') or 0):.0f} s"
        )
    if d.get("reason"):
        metadata["reason"] = d["reason"]
    if d.get("shrank"):
        metadata["shrank"] = d.get("comparison") or "shrank"
    if d.get("drill_id") or d.get("id"):
        metadata["drill_id"] = MetadataValue.int(int(d.get("drill_id") or d.get("id")))
    return metadata


def drill_figures(drills: Iterable[Mapping[str, Any]]) -> dict[str, MetadataValue]:
    """Restored tables, rows and bytes and the drills' seconds, summed (null when none restored)."""
    drills = list(drills)

    def total(field: str) -> MetadataValue:
        values = [d.get(field) for d in drills if d.get(field) is not None]
        return MetadataValue.int(sum(values)) if values else MetadataValue.null()

    return {
        "restored_tables": total("tables"),
        "restored_rows": total("rows"),
        "restored_bytes": total("bytes"),
        "drill_seconds": MetadataValue.float(float(sum(d.get("duration_seconds") or 0.0 for d in drills))),
    }


def drill_observation(
    key: AssetKey, drills: list[Mapping[str, Any]], partition: str | None = None
) -> AssetObservation:
    """The drills' figures on the asset itself, where its Plots tab graphs them (a check's metadata is
    not plotted): one drill's on its cycle's day, or an agent's drills of one run."""
    if len(drills) == 1:
        metadata = drill_metadata(drills[0])
    else:
        metadata = {**agent_summary(drills), **drill_figures(drills)}
    day = partition or drills[0]["cycle_expected_at"].date().isoformat()
    return AssetObservation(asset_key=key, partition=day, metadata=metadata)


def database_evaluation(key: AssetKey, d: Mapping[str, Any]) -> AssetCheckEvaluation:
    return _evaluation(key, [d], drill_metadata(d), d["cycle_expected_at"].date().isoformat())


def _evaluation(
    key: AssetKey, drills: list[Mapping[str, Any]], metadata: dict[str, Any], partition: str
) -> AssetCheckEvaluation:
    passed, severity = verdict(drills)
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=RESTORABLE_CHECK,
        passed=passed,
        severity=severity,
        metadata=metadata,
        partition=partition,
    )


def agent_summary(drills: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An agent's backups' latest drills in one metadata set (large fleets: one asset per agent)."""
    lines = [
        f"- {escape_markdown(d['database_name'])}: {d['outcome']}"
        + (
            f" ({escape_markdown(d.get('comparison') or d.get('reason') or '')})"
            if d["outcome"] != "RESTORED" or d.get("shrank")
            else " (slower than its objective)"
            if d.get("slow")
            else ""
        )
        for d in drills
    ]
    return {
        "drilled": MetadataValue.int(len(drills)),
        "restored": MetadataValue.int(sum(d["outcome"] == DrillOutcome.RESTORED for d in drills)),
        "drills": MetadataValue.md("\n".join(lines) or NOT_DRILLED),
    }


def agent_evaluation(key: AssetKey, drills: list[Mapping[str, Any]], partition: str) -> AssetCheckEvaluation:
    return _evaluation(key, drills, agent_summary(drills), partition)


def not_drilled_evaluation(key: AssetKey) -> AssetCheckEvaluation:
    """Asked before any drill of the asset: not a pass (nothing vouches for it), a warning."""
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=RESTORABLE_CHECK,
        passed=False,
        severity=AssetCheckSeverity.WARN,
        metadata={"note": NOT_DRILLED},
    )


def stored_drill(drill: Any, database_name: str) -> dict[str, Any]:
    """A recorded drill (storage row) as the mapping the functions above read."""
    fields = ("id", "outcome", "cycle_expected_at", "tables", "rows", "bytes", "duration_seconds", "reason")
    fields += ("detected_kind", "amcheck", "tool_versions", "shrank", "comparison")
    fields += ("engine", "checks", "objective_seconds", "slow")
    return {name: getattr(drill, name) for name in fields} | {"database_name": database_name}
