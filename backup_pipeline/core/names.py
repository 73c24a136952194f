"""How monitored databases are named in the Dagster UI: asset paths made of the characters Dagster
allows. Pure, so that notifications can link to an asset without depending on Dagster."""

from __future__ import annotations

import re

BACKUPS_PREFIX = "backups"


def dagster_name(text: str) -> str:
    """Dagster names allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def backup_asset_path(agent_id: str, database_name: str, hour: int, minute: int) -> list[str]:
    """The asset of one expected backup (fleets up to the per-database threshold)."""
    return [BACKUPS_PREFIX, dagster_name(agent_id), f"{dagster_name(database_name)}_{hour:02d}{minute:02d}"]


def agent_asset_path(agent_id: str) -> list[str]:
    """The asset of one agent (larger fleets: one asset summarises the agent's databases)."""
    return [BACKUPS_PREFIX, dagster_name(agent_id)]
