"""The Alembic migrations and the typed ORM describe the same schema, and migrations go both ways."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from backup_pipeline.storage.database import MIGRATIONS_DIR, migrate
from backup_pipeline.storage.orm import Base

VERSION_TABLE = "backup_pipeline_alembic_version"  # as set in migrations/env.py


def differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, Base.metadata))


def test_the_migrated_schema_is_the_orm_schema(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_every_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        tables = set(sa.inspect(engine).get_table_names())
        assert tables <= {VERSION_TABLE}, tables
        migrate(engine)
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_a_database_at_the_newest_migration_is_recognised_without_alembic(database_url: str) -> None:
    """`migrate` skips Alembic when the version table names the head read from the scripts."""
    from alembic.script import ScriptDirectory

    from backup_pipeline.storage.database import at_head, head_revision

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    engine = sa.create_engine(database_url)
    try:
        assert at_head(engine)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "-1")
        assert not at_head(engine)
        migrate(engine)
        assert at_head(engine) and differences(engine) == []
    finally:
        engine.dispose()
