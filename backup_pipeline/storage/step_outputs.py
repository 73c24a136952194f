"""Dagster step outputs in PostgreSQL: every worker of every host reads what another one wrote.

An output is identified as Dagster identifies it (run, step, output, mapping key); a re-executed run
reads the outputs of the steps it does not run again under its parent run's id. Outputs are small
JSON summaries; they are kept `RETENTION` long, enough to re-execute any recent run from a failure.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.storage.orm import StepOutputRow

RETENTION = timedelta(days=30)


def store(session: Session, key: tuple[str, str, str, str], value: str) -> None:
    """Write (or, for a step retried within its run, overwrite) one output."""
    run_id, step_key, output_name, mapping_key = key
    statement = insert(StepOutputRow).values(
        run_id=run_id, step_key=step_key, output_name=output_name, mapping_key=mapping_key, value=value
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "step_key", "output_name", "mapping_key"],
            set_={"value": statement.excluded.value, "stored_at": sa.func.now()},
        )
    )


def load(session: Session, key: tuple[str, str, str, str]) -> str | None:
    run_id, step_key, output_name, mapping_key = key
    return session.scalar(
        sa.select(StepOutputRow.value).where(
            StepOutputRow.run_id == run_id,
            StepOutputRow.step_key == step_key,
            StepOutputRow.output_name == output_name,
            StepOutputRow.mapping_key == mapping_key,
        )
    )


def prune(session: Session) -> int:
    """Forget the outputs stored more than `RETENTION` ago; how many."""
    result = session.execute(
        sa.delete(StepOutputRow).where(StepOutputRow.stored_at < sa.func.now() - RETENTION)
    )
    return result.rowcount or 0
