"""The product's Dagster definitions as the tests use them: built for the test's own settings (the
environment its fixtures set), and scan runs executed in process with a scan's run configuration."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from backup_pipeline.config.settings import Settings, load_settings
from backup_pipeline.defs import SCAN_JOB, build_definitions
from backup_pipeline.defs.scan_job import ScanConfig, scan_run_config


def definitions(settings: Settings | None = None) -> Definitions:
    """The definitions a code location would load with these settings (default: the environment's)."""
    return build_definitions(settings or load_settings())


def scan_config(at: str | None = None, **config: Any) -> dict[str, Any]:
    """Run configuration of a scan run evaluated as of `at`."""
    return scan_run_config(ScanConfig(as_of=at, **config))


def run_scan_job(
    day: str,
    at: str,
    instance: DagsterInstance | None = None,
    *,
    defs: Definitions | None = None,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
    **config: Any,
) -> ExecuteInProcessResult:
    """One in-process run of the scan job for partition `day`."""
    job = (defs or definitions()).resolve_job_def(SCAN_JOB)
    return job.execute_in_process(
        partition_key=day,
        instance=instance,
        run_config=scan_config(at, **config),
        tags=tags,
        raise_on_error=raise_on_error,
    )
