"""The scan's daily partitions: one per UTC day, from the configured start date, today included."""

from dagster import DailyPartitionsDefinition

from backup_pipeline.config.settings import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    # end_offset=1: today's partition exists (a scan evaluates today's cycles as they close).
    return DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC", end_offset=1)
