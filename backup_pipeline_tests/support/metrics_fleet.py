"""A small scanned fleet for the exporter's tests: every current status, an inactive expected backup,
a rejected report, and helpers to read the exposition back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from backup_pipeline.app.metrics_server import exporter_server
from backup_pipeline.config.settings import load_settings
from backup_pipeline.storage.database import open_database
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

DOUALA = "SIRPACAM_DOUALA_NEWBELL"
YAOUNDE = "SOCIA_YAOUNDE_BASTOS_1"
LIMBE = "CAMTEL_LIMBE_PORT"
DAY = "2025-11-21"
SCANNED_AT = f"{DAY}T22:30:00Z"


def job(agent: str, database: str, hour: int, minute: int = 0) -> dict[str, Any]:
    return {
        "agent_id": agent,
        "database_name": database,
        "expected_hour_utc": hour,
        "expected_minute_utc": minute,
    }


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float


def build_fleet(ws: Workspace) -> None:
    """DOUALA: compta_db at 13:00 (SUCCESS) and 20:00 (FAILED: transfer), paie_db at 13:00 (archive
    tampered: TRANSFER_INTEGRITY_FAILED). YAOUNDE: compta_db at 13:00, no report (MISSING), plus a
    report nobody can read (rejected). LIMBE: stock_db at 23:00, not yet due (UNKNOWN). An expected
    backup removed from the jobs file (inactive) is never exported."""
    ws.write_jobs([*_jobs(), job(DOUALA, "old_db", 6)])
    ws.cli("backups", "sync", "--at", f"{DAY}T01:00:00Z")
    ws.write_jobs(_jobs())
    douala = Agent(ws.root, DOUALA)
    compta, paie = gz(b"-- compta\n" * 400, mtime=1), gz(b"-- paie\n" * 300, mtime=1)
    douala.stage("compta_db.sql.gz", compta)
    douala.stage("paie_db.sql.gz", paie)
    douala.report(
        utc(f"{DAY}T13:04:30Z"),
        {
            "compta_db": douala.database_section("compta_db.sql.gz", compta),
            "paie_db": douala.database_section("paie_db.sql.gz", paie, agent_hash="00" * 32),
        },
    )
    douala.report(
        utc(f"{DAY}T20:03:00Z"),
        {"compta_db": douala.database_section("compta_db.sql.gz", compta, transfer=False, error="disk full")},
    )
    Agent(ws.root, YAOUNDE).report(utc(f"{DAY}T08:00:00Z"), {}, raw="{ not json")
    ws.cli("scan", "--at", SCANNED_AT)


def _jobs() -> list[dict[str, Any]]:
    return [
        job(DOUALA, "compta_db", 13),
        job(DOUALA, "compta_db", 20),
        job(DOUALA, "paie_db", 13),
        job(YAOUNDE, "compta_db", 13),
        job(LIMBE, "stock_db", 23, 30),
    ]


def parse(exposition: str) -> list[Series]:
    return [
        Series(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    ]


def values(series: list[Series], name: str, **labels: str) -> list[float]:
    return [s.value for s in series if s.name == name and labels.items() <= s.labels.items()]


def value(series: list[Series], name: str, **labels: str) -> float:
    (found,) = values(series, name, **labels)
    return found


@contextmanager
def exporter() -> Iterator[str]:
    """The exporter's WSGI app on a free port of 127.0.0.1, in a thread of this process, for the
    settings in the environment; its base URL."""
    settings = load_settings()
    with exporter_server(lambda: open_database(settings), "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(timeout=10)
