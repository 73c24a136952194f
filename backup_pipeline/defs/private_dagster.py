"""Every private part of Dagster the product builds on, in one place (the seam with `dagster._…`).

Dagster's public API does not let an executor report a lost step, a worker execute one step of a run,
or a storage plug into `dagster.yaml` with connections of its own. What the product needs for those
is imported from here only, each with the assumption it rests on, checked by
`backup_pipeline_tests/defs/test_private_seams.py` (which fails naming the symbol and the assumption
when an upgrade breaks one; docs/upgrading-dagster.md says how to upgrade the pinned family). What is
public is imported from `dagster` where it is used.

The executor (`celery_executor`):
- `get_retries_config()` and `RetryMode.from_config(value)`: the executor's `retries` setting, as
  Dagster's own executors take it; `RetryMode.for_inner_plan()`: what a step's own process runs with.
- `EngineEventData.engine_error(SerializableErrorInfo(message=, stack=, cls_name=))`: the engine
  event a lost step is reported with, before `Executor.log_failure_or_retry_event_after_error(
  step_context, error, known_state)` (public class, undocumented method) fails or retries it.
- `ExecuteStepArgs(job_origin=, run_id=, step_keys_to_execute=, instance_ref=, retry_mode=,
  known_state=)`: what Dagster sends a step's process; it travels as `dagster.serialize_value` text.

The worker's task (`workers`), as `dagster api execute_step` runs a step:
- `ReconstructableJob.from_dict(job.to_dict())`: the run's job, rebuilt in the worker's process.
- `create_execution_plan(job, run_config, step_keys_to_execute=, known_state=)` and
  `execute_plan_iterator(execution_plan=, job=, dagster_run=, instance=, retry_mode=, run_config=)`.
- `EngineEventData(metadata, marker_end=)`: the worker's first event, closing the queue-wait marker.

The storage (`app.dagster_storage`):
- `DagsterStorage`: the storage `dagster.yaml` names, made of run, event-log and schedule storages;
  `pg_config()`: the configuration schema of `storage: postgres:`; `ConfigurableClassData`: the
  storage's own configuration, given back by `inst_data`.
"""

from __future__ import annotations

from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.events import EngineEventData
from dagster._core.execution.api import create_execution_plan, execute_plan_iterator
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.config import pg_config
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import ConfigurableClassData
from dagster._utils.error import SerializableErrorInfo

__all__ = [
    "ConfigurableClassData",
    "DagsterStorage",
    "EngineEventData",
    "ExecuteStepArgs",
    "ReconstructableJob",
    "RetryMode",
    "SerializableErrorInfo",
    "create_execution_plan",
    "execute_plan_iterator",
    "get_retries_config",
    "pg_config",
]
