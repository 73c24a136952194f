"""The resources every op, sensor and schedule of the product receives: its settings and its database.

The settings are the object the definitions were built with (`build_definitions(settings)`): the
code location loads them once from the environment, the CLI passes the ones it parsed. Every process
that rebuilds the definitions (a run worker, a step subprocess, a Celery worker) loads them again
from an environment the launcher made complete (`Settings.export`), so all of them see the same
values. Settings are a plain object resource (`ResourceParam[Settings]`): never serialized into run
configuration, so no secret in them reaches Dagster's storage or UI.
"""

from dagster import ConfigurableResource, ResourceDependency

from backup_pipeline.config.settings import Settings
from backup_pipeline.storage.database import Database, open_database

SETTINGS = "settings"
DATABASE = "database"


class DatabaseResource(ConfigurableResource):
    """The product's PostgreSQL database (migrated on first use, shared within the process)."""

    settings: ResourceDependency[Settings]

    def get(self) -> Database:
        return open_database(self.settings)


def product_resources(settings: Settings) -> dict[str, object]:
    return {SETTINGS: settings, DATABASE: DatabaseResource(settings=settings)}
