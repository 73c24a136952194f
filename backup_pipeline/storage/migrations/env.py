"""Alembic environment: migrations run on the connection handed over by `database.migrate`."""

from alembic import context

from backup_pipeline.storage.database import VERSION_TABLE
from backup_pipeline.storage.orm import Base


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
