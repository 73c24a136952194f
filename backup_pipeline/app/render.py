"""Rendering for people at a terminal: rows as text tables, and the daily digest as text."""

from __future__ import annotations

from typing import Any

import pandas as pd

from backup_pipeline.digest.build import FleetDigest
from backup_pipeline.digest.render import (
    AGENT_COLUMNS,
    agent_rows,
    anomaly_rows,
    drill_counts,
    drill_rows,
    problem_rows,
)


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    frame = pd.DataFrame(rows, columns=columns or list(rows[0]), dtype=object)  # ints stay ints beside None
    with pd.option_context("display.max_colwidth", 90, "display.width", 250):
        return frame.fillna("").to_string(index=False)


def digest_text(digest: FleetDigest) -> str:
    parts = [digest.headline, "", table(agent_rows(digest), AGENT_COLUMNS)]
    if digest.problems:
        parts += ["", "Problems", table(problem_rows(digest))]
    if digest.anomalies:
        parts += ["", "Size anomalies", table(anomaly_rows(digest))]
    if digest.drills.drills:
        parts += ["", f"Restore drills: {drill_counts(digest)}"]
    if digest.drill_problems:
        parts += [table(drill_rows(digest))]
    return "\n".join(parts)
