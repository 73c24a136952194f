"""A failed or shrunk restore drill is an alert through the existing notification path, received by a
real local HTTP receiver: sent once (a re-drill that fails again sends nothing), held by a silence,
and followed by a recovery notice when a later drill restores again."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import SITE, SampleDumps, build_site, cycle, gz, staged
from backup_pipeline_tests.support.receivers import HttpReceiver

D1, D2, D3 = "2025-11-19", "2025-11-20", "2025-11-21"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    http = HttpReceiver()
    yield http
    http.close()


def test_failed_and_shrunk_drills_alert_once_and_recover(
    drill_workspace: Workspace, sample_dumps: SampleDumps, receiver: HttpReceiver
) -> None:
    d = sample_dumps
    good = gz(d.get("sales"))
    broken = gz(d.get("sales")[: len(d.get("sales")) // 2])
    dumps = {
        "sales": {
            D1: staged("sales", D1, good, ".sql.gz"),
            D2: staged("sales", D2, broken, ".sql.gz"),
            D3: staged("sales", D3, gz(d.get("sales", version=3)), ".sql.gz"),
        },
        "stock": {
            D1: staged("stock", D1, gz(d.get("stock", rows=2000)), ".sql.gz"),
            D2: staged("stock", D2, gz(d.get("stock", rows=100)), ".sql.gz"),
        },
        "quiet": {D2: staged("quiet", D2, gz(d.get("quiet", empty=True)), ".sql.gz")},
    }
    site = build_site(
        drill_workspace,
        dumps,
        per_job={"quiet": {"silenced_until": "2030-01-01"}},
        notify=[receiver.url("drills")],
    )
    receiver.take()  # what the scans sent (the MISSING cycles of days without a dump)

    def drill(database: str, day: str, *more: str) -> None:
        site.drill("--agent", SITE, "--database", database, "--cycle", cycle(day), *more)

    drill("sales", D1)
    drill("stock", D1)
    assert receiver.take("drills") == []

    drill("sales", D2)
    (failed,) = receiver.take("drills")
    assert failed.type == "failure" and "1 failed restore drill" in failed.title
    assert f"RESTORE_FAILED — {SITE} / sales — cycle 2025-11-20 13:00 UTC" in failed.body
    assert "restore drill: the dump ends" in failed.body

    drill("sales", D2, "--redrill")  # the same failure again: nothing new to say
    assert receiver.take("drills") == []

    drill("stock", D2)
    (shrank,) = receiver.take("drills")
    assert shrank.type == "warning" and "1 shrunk restore" in shrank.title
    assert "RESTORE_SHRANK — " in shrank.body and "rows 2,100 → 105" in shrank.body

    drill("quiet", D2)  # fails, but the backup is silenced: recorded, held, not sent
    assert receiver.take("drills") == []
    held = [a for a in site.ws.json("notify", "alerts") if a["database_name"] == "quiet"]
    assert ("RESTORE_FAILED", "held") in [(a["event"], a["deliveries"]) for a in held]

    drill("sales", D3)
    (recovered,) = receiver.take("drills")
    assert recovered.type == "success" and "restore recovered" in recovered.title
    assert "RESTORE_RECOVERED" in recovered.body
    assert "restores again after RESTORE_FAILED (cycle 2025-11-20T13:00Z)" in recovered.body

    # The day's digest counts the drills and lists those that failed or shrank.
    digest = json.loads(site.ws.cli("digest", "--format", "json").stdout)
    assert digest["drills"] == {
        "drills": 7,
        "restored": 4,
        "restore_failed": 3,
        "not_drillable": 0,
        "shrank": 1,
        "slow": 0,
    }
    listed = [(p["database_name"], p["outcome"]) for p in digest["drill_problems"]]
    assert sorted(listed) == [
        ("quiet", "RESTORE_FAILED"),
        ("sales", "RESTORE_FAILED"),
        ("sales", "RESTORE_FAILED"),
        ("stock", "RESTORE_SHRANK"),
    ]
    text = site.ws.cli("digest").stdout
    assert "7 restore drill(s), 3 failed" in text and "Restore drills: 7 restore drill(s)" in text
