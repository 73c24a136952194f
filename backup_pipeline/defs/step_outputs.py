"""The IO manager of the product's jobs: step outputs as JSON in PostgreSQL.

Steps hand each other small pydantic summaries (ids and counts, never payloads). Dagster's default
IO manager pickles them under the run's DAGSTER_HOME, on the disk of the machine that ran the step:
with steps on Celery workers of several hosts, the next step may run where that file is not. Here
they go to the product's PostgreSQL, which every process already reaches, and are read back as the
type the producing op declared (validated by pydantic, never unpickled).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext
from pydantic import BaseModel, TypeAdapter

from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.storage import step_outputs

PRUNE_EVERY_SECONDS = 3600.0  # each process forgets expired outputs at most this often
_pruned_at: list[float] = [0.0]
_prune_lock = threading.Lock()


class StepOutputs(ConfigurableIOManager):
    """Step outputs in the product's PostgreSQL, readable from any worker of any host."""

    database: DatabaseResource

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(
                f"step {context.step_key} output {context.name!r} is a {type(obj).__name__}: the product's "
                "steps hand each other pydantic summaries only"
            )
        with self.database.get().sessions() as session:
            step_outputs.store(session, _key(context.get_identifier()), obj.model_dump_json())
            if _prune_due():
                step_outputs.prune(session)
            session.commit()

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None, "the product's inputs all come from other steps"
        key = _key(upstream.get_identifier())
        with self.database.get().sessions() as session:
            value = step_outputs.load(session, key)
        if value is None:
            run_id, step_key, name, _ = key
            raise Failure(
                f"output {name!r} of step {step_key} of run {run_id} is not stored (outputs are kept "
                f"{step_outputs.RETENTION.days} days): re-execute the whole run instead"
            )
        return TypeAdapter(upstream.dagster_type.typing_type).validate_json(value)


def _key(identifier: list[str]) -> tuple[str, str, str, str]:
    """Dagster's identifier of an output: run, step, output name and, for a mapped output, its key."""
    run_id, step_key, name, *mapping = identifier
    return run_id, step_key, name, mapping[0] if mapping else ""


def _prune_due() -> bool:
    with _prune_lock:
        now = time.monotonic()
        if now - _pruned_at[0] < PRUNE_EVERY_SECONDS and _pruned_at[0]:
            return False
        _pruned_at[0] = now
        return True
