"""Issue 4, notifications end to end: real scans, real Apprise, a local HTTP receiver (json://) and a
local SMTP server (aiosmtpd) that receive exactly the expected messages over a sequence of scans.

failure → one alert per target (grouped); same failure rescanned → nothing; recovery → one notice;
target down → a recorded failure, the scan still succeeds, the next scan retries it. Secrets in the
targets' URLs never show in the CLI, the logs or Dagster's run events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from backup_pipeline.config.settings import load_settings
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.receivers import HttpReceiver, SmtpReceiver, free_port

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAY1, DAY2, DAY3 = "2025-11-21", "2025-11-22", "2025-11-23"
SECRET = "s3cr3t-pa55"
DAGSTER = "http://dagster.example.com:3000"


def job(database: str = "compta_db", hour: int = 13, **extra: Any) -> dict[str, Any]:
    declared = {"agent_id": AGENT, "database_name": database, "expected_hour_utc": hour}
    return declared | {"expected_minute_utc": 0} | extra


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def agent(workspace: Workspace) -> Agent:
    return Agent(workspace.root, AGENT)


@pytest.fixture
def targets(
    workspace: Workspace, http: HttpReceiver, smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Two global targets (a webhook with credentials, an e-mail address) and a Dagster UI base URL."""
    urls = f"{http.url('hook', credentials=f'alice:{SECRET}')}, {smtp.url()}"
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", urls)
    monkeypatch.setenv("BACKUP_PIPELINE_DAGSTER_URL", DAGSTER)
    return urls


def fail(agent: Agent, day: str, *databases: str, error: str = "disk full") -> None:
    packed = gz(b"partial")
    agent.report(
        utc(f"{day}T13:05:00Z"),
        {db: agent.database_section(f"{db}.sql.gz", packed, transfer=False, error=error) for db in databases},
    )


def succeed(agent: Agent, day: str, *databases: str, content: str = "v1") -> None:
    sections = {}
    for db in databases:
        packed = gz(f"-- {db} {content}\n".encode() * 200, mtime=0)
        name = f"{db}_{day}.sql.gz"
        agent.stage(name, packed)
        sections[db] = agent.database_section(name, packed)
    agent.report(utc(f"{day}T13:05:00Z"), sections)


def scan(ws: Workspace, at: str, *partitions: str, verbose: bool = False) -> Any:
    args = ["-v"] if verbose else []
    args += ["scan", "--at", at]
    for p in partitions:
        args += ["--partition", p]
    return ws.cli(*args)


def everything_said(*results: Any) -> str:
    return "\n".join(r.stdout + r.stderr for r in results)


def test_a_failure_alerts_once_per_target_then_a_recovery_notice(
    workspace: Workspace, agent: Agent, http: HttpReceiver, smtp: SmtpReceiver, targets: str
) -> None:
    team = http.url("team-paie")
    workspace.write_jobs([job("compta_db"), job("paie_db", notify=[team])])

    # Day 1: both databases fail in one report → one message per target, listing the problems.
    fail(agent, DAY1, "compta_db", "paie_db")
    first = scan(workspace, f"{DAY1}T14:30:00Z", DAY1, verbose=True)

    (hook,) = http.take("hook")
    assert hook.title == "[backup_pipeline] 2 problems"
    assert hook.type == "failure"
    assert hook.authorization  # the credentials of the URL were used…
    for database in ("compta_db", "paie_db"):
        assert f"FAILED — {AGENT} / {database} — cycle {DAY1} 13:00 UTC" in hook.body
        assert (
            f"{DAGSTER}/assets/backups/{AGENT}/{database}_1300?view=partitions&partition={DAY1}" in hook.body
        )
    assert "TRANSFER" in hook.body and "disk full" in hook.body
    (only_paie,) = http.take("team-paie")  # the job's own target hears about its job only
    assert only_paie.title == "[backup_pipeline] 1 problem"
    assert "paie_db" in only_paie.body and "compta_db" not in only_paie.body
    (mail,) = smtp.take()
    assert mail.subject == "[backup_pipeline] 2 problems"
    assert mail.recipients == ["ops@example.com"]
    assert f"FAILED — {AGENT} / compta_db — cycle {DAY1} 13:00 UTC" in mail.body
    assert "notifications: 5 alert(s) delivered, 0 failed, 0 held by a silence" in first.stdout

    # The same state found again (explicit re-evaluation, then automatic scans): nothing more.
    again = [
        scan(workspace, f"{DAY1}T15:00:00Z", DAY1),
        scan(workspace, f"{DAY1}T15:15:00Z"),
        scan(workspace, f"{DAY1}T18:00:00Z"),
    ]
    assert http.take() == [] and smtp.take() == []
    assert all("notifications:" not in r.stdout for r in again)

    # Day 2: both back to SUCCESS → one recovery notice per target.
    succeed(agent, DAY2, "compta_db", "paie_db")
    scan(workspace, f"{DAY2}T14:30:00Z", DAY2)
    (recovered,) = http.take("hook")
    assert recovered.title == "[backup_pipeline] 2 recovered"
    assert recovered.type == "success"
    assert f"RECOVERED — {AGENT} / compta_db — cycle {DAY2} 13:00 UTC" in recovered.body
    assert f"back to SUCCESS after FAILED (cycle {DAY1}T13:00Z)" in recovered.body
    (paie_recovered,) = http.take("team-paie")
    assert "paie_db" in paie_recovered.body and "compta_db" not in paie_recovered.body
    (mail,) = smtp.take()
    assert mail.subject == "[backup_pipeline] 2 recovered"

    # Rescanning the recovered day says nothing; nor does a third successful day.
    succeed(agent, DAY3, "compta_db", "paie_db")
    scan(workspace, f"{DAY2}T16:00:00Z", DAY2)
    scan(workspace, f"{DAY3}T14:30:00Z", DAY3)
    assert http.take() == [] and smtp.take() == []

    # Every attempt is recorded: target (redacted), cycle, event, sent.
    log = workspace.json("notify", "log")
    assert len(log) == 5 + 5
    assert {r["result"] for r in log} == {"sent"}
    assert {r["target"] for r in log} == {
        f"json://127.0.0.1:{http.port}",
        f"mailto://127.0.0.1:{smtp.port}",
    }
    assert {(r["event"], r["cycle_expected_at"]) for r in log} == {
        ("FAILED", f"{DAY1}T13:00:00Z"),
        ("RECOVERED", f"{DAY2}T13:00:00Z"),
    }
    said = everything_said(first, *again, workspace.cli("notify", "log"), workspace.cli("notify", "alerts"))
    assert SECRET not in said and SECRET not in json.dumps(log)


def test_a_target_down_is_recorded_and_retried_and_never_fails_the_scan(
    workspace: Workspace,
    http: HttpReceiver,
    smtp: SmtpReceiver,
    targets: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_RETRY_SECONDS", "0")  # the scans run seconds apart
    workspace.write_jobs([job()])
    workspace.cli("jobs", "sync", "--at", f"{DAY1}T08:00:00Z")
    http.down()

    # No report: MISSING after the deadline. The webhook is down, the e-mail goes out anyway.
    down = scan(workspace, f"{DAY1}T14:30:00Z", verbose=True)
    assert down.exit_code == 0
    assert workspace.entry(AGENT, "compta_db", f"{DAY1}T13:00:00Z")["status"] == "MISSING"
    (mail,) = smtp.take()
    assert mail.subject == "[backup_pipeline] 1 problem"
    assert f"MISSING — {AGENT} / compta_db — cycle {DAY1} 13:00 UTC" in mail.body
    assert "1 alert(s) delivered, 1 failed" in down.stdout
    assert f"failing: json://127.0.0.1:{http.port}" in down.stdout
    failed = [r for r in workspace.json("notify", "log") if r["result"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["target"] == f"json://127.0.0.1:{http.port}"
    assert (failed[0]["event"], failed[0]["cycle_expected_at"]) == ("MISSING", f"{DAY1}T13:00:00Z")
    assert failed[0]["error"]

    # Still down at the next scan: retried, failed again; the e-mail is not sent twice.
    scan(workspace, f"{DAY1}T14:45:00Z")
    assert smtp.take() == []
    # Back up: the next scan delivers the pending alert, and only to it.
    http.up()
    back = scan(workspace, f"{DAY1}T15:00:00Z")
    (late,) = http.take("hook")
    assert late.title == "[backup_pipeline] 1 problem"
    assert f"MISSING — {AGENT} / compta_db" in late.body
    assert smtp.take() == []
    assert "1 alert(s) delivered, 0 failed" in back.stdout

    json_attempts = [r for r in workspace.json("notify", "log") if r["target"].startswith("json://")]
    assert [r["result"] for r in reversed(json_attempts)] == ["failed", "failed", "sent"]
    scan(workspace, f"{DAY1}T15:15:00Z")
    assert http.take() == [] and smtp.take() == []
    alerts = workspace.json("notify", "alerts")
    assert [(a["event"], a["held_by"]) for a in alerts] == [("MISSING", None)]
    assert "sent" in alerts[0]["deliveries"] and "failed" not in alerts[0]["deliveries"]
    assert SECRET not in everything_said(down, back, workspace.cli("notify", "alerts"))


def test_a_target_that_keeps_failing_is_abandoned_after_the_maximum_attempts(
    workspace: Workspace, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", http.url("hook"))
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_RETRY_SECONDS", "0")
    workspace.write_jobs([job()])
    workspace.cli("jobs", "sync", "--at", f"{DAY1}T08:00:00Z")
    http.down()
    for at in ("14:30", "14:45", "15:00", "15:15"):
        assert scan(workspace, f"{DAY1}T{at}:00Z").exit_code == 0
    log = workspace.json("notify", "log")
    assert [r["result"] for r in log] == ["failed", "failed"]  # two attempts, then no more
    (alert,) = workspace.json("notify", "alerts")
    assert "abandoned" in alert["deliveries"]


def test_a_failing_target_is_left_alone_for_a_while_then_retried(
    workspace: Workspace, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scans started every 30 s by the sensor must not hammer a target that is down."""
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", http.url("hook"))
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_RETRY_SECONDS", "2")
    workspace.write_jobs([job()])
    workspace.cli("jobs", "sync", "--at", f"{DAY1}T08:00:00Z")
    http.down()
    assert scan(workspace, f"{DAY1}T14:30:00Z").exit_code == 0  # MISSING: the attempt fails
    http.up()

    soon = scan(workspace, f"{DAY1}T14:31:00Z")  # moments later: not tried again yet

    assert "1 waiting to retry a failing target" in soon.stdout
    assert http.take() == []
    assert [r["result"] for r in workspace.json("notify", "log")] == ["failed"]

    time.sleep(2.2)
    scan(workspace, f"{DAY1}T14:32:00Z")

    (late,) = http.take("hook")
    assert "MISSING" in late.body
    assert [r["result"] for r in workspace.json("notify", "log")] == ["sent", "failed"]


def test_hash_mismatch_is_information_and_can_be_turned_off_per_job(
    workspace: Workspace, agent: Agent, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", http.url("hook"))
    workspace.write_jobs([job("compta_db"), job("paie_db", notify_hash_mismatch=False)])
    succeed(agent, DAY1, "compta_db", "paie_db")
    succeed(agent, DAY2, "compta_db", "paie_db", content="v2")  # the dumps' content changed
    scan(workspace, f"{DAY2}T14:30:00Z", DAY1, DAY2)
    statuses = {(e["database_name"], e["cycle_expected_at"][:10]): e["status"] for e in workspace.entries()}
    assert statuses[("compta_db", DAY2)] == statuses[("paie_db", DAY2)] == "HASH_MISMATCH"
    (message,) = http.take()
    assert message.title == "[backup_pipeline] 1 content change"
    assert message.type == "info"
    assert f"HASH_MISMATCH — {AGENT} / compta_db — cycle {DAY2} 13:00 UTC" in message.body
    assert "paie_db" not in message.body


def test_notify_test_reports_each_target_redacted(
    workspace: Workspace, http: HttpReceiver, smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setenv(
        "BACKUP_PIPELINE_NOTIFY_URLS", f"{http.url('hook', credentials=f'bob:{SECRET}')} {smtp.url()}"
    )
    monkeypatch.setenv("TEAM_HOOK", f"json://127.0.0.1:{closed}/t0ken-{SECRET}")
    workspace.write_jobs([job(notify=["${TEAM_HOOK}"])])

    result = workspace.cli("notify", "test", "--json", expect_ok=False)

    assert result.exit_code == 1
    assert "1 of 3 target(s) could not be notified" in result.stderr
    rows = {r["target"]: r for r in json.loads(result.stdout)}
    assert rows[f"json://127.0.0.1:{http.port}"]["result"] == "sent"
    assert rows[f"json://127.0.0.1:{http.port}"]["configured_in"] == "environment"
    assert rows[f"mailto://127.0.0.1:{smtp.port}"]["result"] == "sent"
    team = rows["${TEAM_HOOK}"]  # shown by the name of its variable, never its value
    assert (team["result"], team["configured_in"]) == ("FAILED", "1 expected backup(s)")
    assert team["error"]
    (posted,) = http.take()
    assert posted.title == "[backup_pipeline] test notification"
    (mail,) = smtp.take()
    assert mail.subject == "[backup_pipeline] test notification"
    assert SECRET not in result.stdout + result.stderr
    tests = workspace.json("notify", "log")
    assert sorted(r["result"] for r in tests) == ["failed", "sent", "sent"]
    assert {r["kind"] for r in tests} == {"test"}

    monkeypatch.delenv("BACKUP_PIPELINE_NOTIFY_URLS")
    workspace.write_jobs([job()])
    nothing = workspace.cli("notify", "test", expect_ok=False)
    assert nothing.exit_code == 1
    assert "no notification target configured" in nothing.stderr


def test_secrets_never_reach_dagster_run_events_or_metadata(
    workspace: Workspace, agent: Agent, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setenv(
        "BACKUP_PIPELINE_NOTIFY_URLS",
        f"{http.url(f'hooks/{SECRET}-path', credentials=f'carol:{SECRET}')},"
        f" json://dave:{SECRET}@127.0.0.1:{closed}/x?token={SECRET}",
    )
    workspace.write_jobs([job()])
    fail(agent, DAY1, "compta_db")
    with DagsterInstance.ephemeral() as instance:
        result = run_scan_job(DAY1, f"{DAY1}T14:30:00Z", instance)
        assert result.success  # one target down does not fail the run
        records = instance.all_logs(result.run_id)
    summary = result.output_for_node("notify")
    assert summary.sent == 1 and summary.failed == 1
    (posted,) = http.take()
    assert "compta_db" in posted.body
    everything = "\n".join(repr(r) for r in records)
    assert f"json://127.0.0.1:{closed}" in everything  # the failing target is named, redacted
    assert SECRET not in everything


def test_a_notify_step_that_fails_with_its_connection_gone_raises_its_own_error(
    workspace: Workspace, agent: Agent, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifier's advisory lock lives on a connection of its own. When PostgreSQL drops it while
    the notifier works, releasing the lock must not replace the error the work raised (it raised a
    new `connection already closed` that hid what went wrong)."""
    from backup_pipeline.notify import deliver
    from backup_pipeline.storage.database import open_database

    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", http.url("hooks"))
    workspace.write_jobs([job()])
    fail(agent, DAY1, "compta_db")
    settings = load_settings()
    database = open_database(settings)

    def dropped_then_failing(self: object, database: object) -> None:
        with database.engine.connect() as conn:  # every other session of this database: the lock's
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        raise RuntimeError("the delivery itself failed")

    monkeypatch.setattr(deliver._Delivery, "run", dropped_then_failing)
    with pytest.raises(RuntimeError, match="the delivery itself failed"):
        deliver.notify(settings, database, run_id=None)
