"""How monitored databases are named in the Dagster UI: asset paths made of the characters Dagster
allows, and the one rule that says whether a fleet is shown one asset per expected backup or one per
agent. Pure, so that notifications can link to an asset without depending on Dagster."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

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


def per_database_assets(active_backups: int, per_database_max: int) -> bool:
    """Whether a fleet of this many active expected backups gets one asset per expected backup (else
    one per agent): Dagster stores a few hundred events a second, so one event per database would
    make a large fleet's scans last minutes. The definitions and the notifications' links both ask
    here, with the count of the synced fleet."""
    return active_backups <= per_database_max


def asset_path(agent_id: str, database_name: str, name: str, *, per_database: bool) -> list[str]:
    """The asset an expected backup's cycles are shown on."""
    return backup_asset_path(agent_id, database_name, name) if per_database else agent_asset_path(agent_id)


@dataclass(frozen=True)
class SharedAssetName:
    """Two identities whose asset paths are the same (Dagster would merge them into one asset)."""

    first: int  # index of the identity that had the path first
    second: int
    path: list[str]


def shared_asset_names(identities: Iterable[tuple[str, str, str]]) -> list[SharedAssetName]:
    """Expected backups (agent, database, name) that would share an asset: as per-database assets
    (`compta.db` and `compta_db` of one agent), or as per-agent assets (agents `A-B_C_D` and
    `A_B_C_D`), whichever the fleet's size makes them."""
    found: list[SharedAssetName] = []
    backups: dict[tuple[str, ...], tuple[int, tuple[str, str, str]]] = {}
    agents: dict[tuple[str, ...], tuple[int, str]] = {}
    for index, identity in enumerate(identities):
        agent, database, name = identity
        path = backup_asset_path(agent, database, name)
        first = backups.setdefault(tuple(path), (index, identity))
        if first[1] != identity:
            found.append(SharedAssetName(first[0], index, path))
            continue
        path = agent_asset_path(agent)
        owner = agents.setdefault(tuple(path), (index, agent))
        if owner[1] != agent:
            found.append(SharedAssetName(owner[0], index, path))
    return found
