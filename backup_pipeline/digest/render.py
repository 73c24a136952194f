"""The daily fleet digest rendered for people and files: CSV (the file and `--format csv`), JSON,
and markdown (the Dagster asset's metadata, with agents' texts made inert)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.digest.build import AgentHealth, Anomaly, DrillProblem, FleetDigest, Problem

AGENT_COLUMNS = list(AgentHealth.model_fields)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def agent_rows(digest: FleetDigest) -> list[dict[str, str]]:
    return [{c: _cell(getattr(a, c)) for c in AGENT_COLUMNS} for a in [*digest.agents, digest.total]]


def problem_rows(digest: FleetDigest) -> list[dict[str, str]]:
    return [{k: _cell(v) for k, v in p} for p in digest.problems]


def anomaly_rows(digest: FleetDigest) -> list[dict[str, str]]:
    return [{k: _cell(v) for k, v in a} for a in digest.anomalies]


def drill_rows(digest: FleetDigest) -> list[dict[str, str]]:
    """The day's restore drills that failed, shrank or were slow."""
    return [{k: _cell(v) for k, v in p} for p in digest.drill_problems]


def drill_counts(digest: FleetDigest) -> str:
    d = digest.drills
    return (
        f"{d.drills} restore drill(s): {d.restored} restored ({d.shrank} shrank, {d.slow} slow), "
        f"{d.restore_failed} failed, {d.not_drillable} not drillable"
    )


def to_csv(digest: FleetDigest) -> str:
    """One row per agent and a TOTAL row (the problems and anomalies are in the JSON and markdown)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=AGENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(agent_rows(digest))
    return out.getvalue()


def to_json(digest: FleetDigest) -> dict[str, Any]:
    return digest.model_dump(mode="json")


def to_markdown(digest: FleetDigest) -> str:
    parts = [f"**{digest.headline}**", "", _md_table(agent_rows(digest), AGENT_COLUMNS)]
    if digest.problems:
        parts += ["", "**Problems**", "", _md_table(problem_rows(digest), list(Problem.model_fields))]
    if digest.anomalies:
        parts += ["", "**Size anomalies**", "", _md_table(anomaly_rows(digest), list(Anomaly.model_fields))]
    if digest.drills.drills:
        parts += ["", f"**Restore drills**: {drill_counts(digest)}"]
    if digest.drill_problems:
        parts += ["", _md_table(drill_rows(digest), list(DrillProblem.model_fields))]
    return "\n".join(parts)


def _md_table(rows: list[dict[str, str]], columns: list[str]) -> str:
    def clean(text: str) -> str:  # cells quote agents' texts: shortened, then made inert
        text = " ".join(text.split())
        return escape_markdown(text if len(text) <= 200 else text[:199] + "…")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(clean(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
