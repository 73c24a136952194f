"""The fleet as a `prometheus_client` collector: register it in any registry (the exporter's own HTTP
path encodes the same families itself, see `exposition`).

PostgreSQL is read at each collection: nothing is cached between scrapes (nothing can go stale), and
a collection costs the same few queries whatever the fleet's size (`storage.metrics.fleet_snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_pipeline.metrics.families import Family
from backup_pipeline.metrics.fleet import fleet_families
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.metrics import fleet_snapshot


def read_families(database: Database) -> list[Family]:
    """The fleet's families, from one consistent snapshot of the database."""
    with database.sessions() as session:
        return fleet_families(fleet_snapshot(session))


class BackupCollector(Collector):
    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        for family in read_families(self._database()):
            yield _library_family(family)


def _library_family(family: Family) -> Metric:
    if family.kind == "counter":
        name = family.name.removesuffix("_total")
        metric: Metric = CounterMetricFamily(name, family.help, labels=family.label_names, unit=family.unit)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=family.label_names, unit=family.unit)
    for labels, value in family.samples:
        metric.add_metric([v for _, v in labels.items], value)  # type: ignore[attr-defined]
    return metric
