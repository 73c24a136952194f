"""The fleet as a `prometheus_client` collector: register it in any registry (the exporter's own HTTP
path encodes the same families itself, see `exposition`).

PostgreSQL is read at each collection: nothing is cached between scrapes (nothing can go stale), and
a collection costs the same few queries whatever the fleet's size (`storage.metrics.fleet_snapshot`).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_pipeline.metrics.families import Family
from backup_pipeline.metrics.fleet import fleet_families
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.metrics import fleet_snapshot


def read_families(database: Database) -> list[Family]:
    """The fleet's families, from one consistent snapshot of the database."""
    with _cyclic_gc_paused(), database.sessions() as session:
        return fleet_families(fleet_snapshot(session))


_paused = 0
_pause_lock = threading.Lock()


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A scrape makes hundreds of thousands of small tuples, none in a reference cycle: the cyclic
    collector, triggered every few hundred allocations, would walk the whole heap again and again
    (half of the scrape's time on 20,000 expected backups). Reference counting frees them all."""
    global _paused
    with _pause_lock:
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _pause_lock:
            _paused -= 1
            if not _paused:  # the last concurrent scrape gives it back
                gc.enable()


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
