"""The Dagster definitions of backup_pipeline, built by one function from the settings.

`build_definitions(settings)` assembles the scan job (`scan_job`), the monitored databases as
assets with their checks and freshness policies (`fleet`, `freshness`), read from the fleet synced into
PostgreSQL, the schedule and sensor that start scans (`automation`), and the
daily digest's asset, job and schedule (`digest`), the restore drills' job and schedule
(`drill_job`, with the `restorable` checks of `restorable`), with the settings and the database as resources
(`resources`). Nothing is read at import time: the code location's entry point
(`backup_pipeline.definitions`) calls it with the settings of the environment, the CLI with its own.
"""

import warnings

from dagster import BetaWarning, Definitions, PreviewWarning

from backup_pipeline.config.settings import Settings
from backup_pipeline.defs.automation import build_deposit_sensor, build_scan_schedule
from backup_pipeline.defs.digest import build_digest_asset, build_digest_job, build_digest_schedule
from backup_pipeline.defs.drill_job import DRILL_JOB, build_drill_job, build_drill_schedule
from backup_pipeline.defs.fleet import FleetAssets
from backup_pipeline.defs.partitions import daily_partitions
from backup_pipeline.defs.resources import DatabaseResource, product_resources
from backup_pipeline.defs.scan_job import SCAN_JOB, build_scan_job
from backup_pipeline.defs.step_outputs import StepOutputs

# Dagster 1.13's sensor decorator passes its own beta `owners` parameter: a warning on every load of
# these definitions (every CLI scan) that nobody can act on.
warnings.filterwarnings("ignore", message=".*`owners`.*", category=BetaWarning)
# The checks declare their daily partitions (so each day's verdict shows in the UI's check partition
# view), a preview feature of Dagster 1.13 that warns on every load.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*", category=PreviewWarning)

__all__ = ["DRILL_JOB", "SCAN_JOB", "build_definitions"]


def build_definitions(settings: Settings, fleet: FleetAssets | None = None) -> Definitions:
    """Everything Dagster shows and runs, for these settings and the fleet synced into PostgreSQL
    (the jobs file they name is synced first when it changed), unless a `fleet` is given."""
    fleet = fleet or FleetAssets.load(settings)
    partitions = daily_partitions(settings)
    scan_job = build_scan_job(partitions, settings)
    digest_job = build_digest_job(partitions)
    drill_job = build_drill_job(partitions, settings)
    return Definitions(
        jobs=[scan_job, digest_job, drill_job],
        assets=[*fleet.specs(partitions), build_digest_asset(partitions)],
        asset_checks=fleet.checks(partitions),
        schedules=[
            build_scan_schedule(scan_job),
            build_digest_schedule(digest_job, fleet.backups),
            build_drill_schedule(drill_job, settings),
        ],
        sensors=[build_deposit_sensor(scan_job, fleet.backups)],
        resources={
            **product_resources(settings),
            "fleet": fleet,
            # Steps may run on other hosts (the Celery executor): outputs go to PostgreSQL.
            "io_manager": StepOutputs(database=DatabaseResource(settings=settings)),
        },
    )
