"""How monitored databases are named in the Dagster UI: asset paths made of the characters Dagster
allows. Pure, so that notifications can link to an asset without depending on Dagster."""

from __future__ import annotations

import re

BACKUPS_PREFIX = "backups"


def dagster_name(text: str) -> str:
    """Dagster names allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def backup_asset_path(agent_id: str, database_name: str, name: str) -> list[str]:
    """The asset of one expected backup (fleets up to the per-database threshold), named like its
    identity: `compta_db_1300` for a daily-UTC backup (its name is HHMM), `compta_db_weekly` for a
    named one, `compta_db` for the unnamed cron-scheduled one."""
    last = f"{dagster_name(database_name)}_{dagster_name(name)}" if name else dagster_name(database_name)
    return [BACKUPS_PREFIX, dagster_name(agent_id), last]


def agent_asset_path(agent_id: str) -> list[str]:
    """The asset of one agent (larger fleets: one asset summarises the agent's databases)."""
    return [BACKUPS_PREFIX, dagster_name(agent_id)]
