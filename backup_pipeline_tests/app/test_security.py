"""Issue 5: the running system. What listens where, where secrets never go, and how texts written by
agents reach people (notifications, Dagster UI metadata) without becoming markup.

Unreachable-database errors without secrets at start-up are covered by test_cli_contract.py, and
notification secrets in run events by test_notifications.py; this adds the database password in
the logs, events and metadata of a real scan, and its absence from the errors of a scan whose
PostgreSQL vanished mid-way (test_concurrency_outages.py checks the errors themselves).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from markdown_it import MarkdownIt
from sqlalchemy.engine import make_url

from backup_pipeline.app.cli import main
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.paths import PROJECT_ROOT
from backup_pipeline_tests.support.receivers import HttpReceiver
from backup_pipeline_tests.support.scan_harness import ScanEnv, ok, run_cli

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAY = "2025-11-21"
AT = f"{DAY}T14:30:00Z"
PASSWORD = "Db-Pa55-w0rd-never-shown"
# What a hostile (or merely careless) agent writes in the free texts of its report.
HOSTILE = (
    "<script>alert('x')</script> <img src=x onerror=alert(1)> [reset your password](http://evil.example) "
    "![pixel](http://evil.example/p.png) **urgent** <!channel> @everyone"
)


def job(database: str = "compta_db") -> dict[str, Any]:
    return {"agent_id": AGENT, "database_name": database, "expected_hour_utc": 13, "expected_minute_utc": 0}


def rendered(markdown: str) -> str:
    """HTML as a CommonMark renderer that lets raw HTML through makes it (the worst case)."""
    return MarkdownIt("commonmark", {"html": True}).render(markdown)


def injected(html: str) -> list[str]:
    """Markup the hostile text turned into: any element it asked for is a failure."""
    asked = ("<script", "<img", 'href="http://evil.example"', "<strong>urgent")
    return [tag for tag in asked if tag in html]


# ---------------------------------------------------------------- listening


def test_the_ui_binds_to_loopback_by_default(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    help_text = workspace.cli("dev", "--help").output
    assert "[default: 127.0.0.1]" in help_text
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, command: started.append([path, *command]))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace.home / "dagster_home"))
    workspace.runner.invoke(main, ["dev"], catch_exceptions=False)
    (launched,) = started
    path, *command = launched
    assert path == sys.executable
    assert command[:4] == [sys.executable, "-m", "dagster", "dev"]  # the product's own interpreter
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in " ".join(command)
    workspace_yaml = (PROJECT_ROOT / "workspace.yaml").read_text()
    assert "python_module" in workspace_yaml and "host" not in workspace_yaml  # no gRPC server to expose


def test_the_embedded_postgresql_listens_on_no_network_address(pg_server: str) -> None:
    if "host=/" not in pg_server and "@/" not in pg_server:
        pytest.skip("the tests run on an external PostgreSQL (BACKUP_PIPELINE_DATABASE_URL)")
    engine = sa.create_engine(pg_server)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar() == ""  # a Unix socket only
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the database password


@pytest.fixture
def secret_url(workspace: Workspace) -> str:
    """The test database's URL with a password (the embedded server trusts local sockets: unused)."""
    return make_url(workspace.database_url).set(password=PASSWORD).render_as_string(hide_password=False)


def test_the_database_password_never_reaches_logs_events_or_metadata(
    workspace: Workspace, secret_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.write_jobs([job()])
    agent = Agent(workspace.root, AGENT)
    agent.backup(utc(f"{DAY}T13:05:00Z"), "compta_db", b"rows\n" * 100)
    agent.report(
        utc(f"{DAY}T13:06:00Z"),
        {"stock_db": agent.database_section("x.sql.gz", b"", transfer=False, error=HOSTILE)},
    )
    (agent.log / f"20251121_130700_{AGENT}.json").write_text("{ broken")
    env = ScanEnv(workspace.root, workspace.jobs_file, workspace.home, secret_url)
    said = ok(run_cli(env, "-v", "scan", "--at", AT))
    for command in (["status"], ["entries", "--json"], ["reports", "--json"], ["jobs", "list", "--json"]):
        said_too = ok(run_cli(env, "-v", *command))
        assert PASSWORD not in said_too.stdout + said_too.stderr
    assert PASSWORD not in said.stdout + said.stderr

    monkeypatch.setenv("BACKUP_PIPELINE_DATABASE_URL", secret_url)
    (agent.log / f"20251121_130800_{AGENT}.json").write_text("{ also broken")
    with DagsterInstance.ephemeral() as instance:
        result = run_scan_job(DAY, AT, instance)
        assert result.success
        records = instance.all_logs(result.run_id)
        run = instance.get_run_by_id(result.run_id)
    everything = "\n".join(repr(r) for r in records) + repr(run)
    assert "compta_db" in everything  # the events are there, and they say things
    assert PASSWORD not in everything


# ---------------------------------------------------------------- agent texts in notifications and the UI


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_agent_texts_reach_markdown_and_html_notifications_as_plain_text(
    workspace: Workspace, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", http.url(f"hook?format={fmt}"))
    workspace.write_jobs([job()])
    agent = Agent(workspace.root, AGENT)
    agent.report(
        utc(f"{DAY}T13:05:00Z"),
        {
            "compta_db": agent.database_section(
                "c.sql.gz", gz(b"x"), transfer=False, error=HOSTILE, logs=HOSTILE
            )
        },
    )
    workspace.cli("scan", "--at", AT, "--partition", DAY)
    (posted,) = http.take()
    assert "FAILED" in posted.body
    html = rendered(posted.body) if fmt == "markdown" else posted.body
    assert injected(html) == [], posted.body
    assert "alert" in html and "evil.example" in html, "the text is still there, as text"


def test_agent_texts_in_the_dagster_metadata_of_large_fleets_are_escaped() -> None:
    """Large fleets show one asset per agent whose `problems` metadata is markdown built from entry
    messages, which quote agents' error texts."""
    from dagster import AssetKey

    from backup_pipeline.defs.fleet import agent_day_events
    from backup_pipeline.scan.outcomes import AssetDay

    day = AssetDay(
        agent_id=AGENT,
        day=date(2025, 11, 21),
        statuses={"FAILED": 1},
        problems=[f"compta_db 13:00Z FAILED: agent reported failed step(s): TRANSFER — error: {HOSTILE}"],
        total_size=0,
        entries=1,
    )
    texts = [
        value.value
        for event in agent_day_events(AssetKey(["backups", AGENT]), day)
        for value in event.metadata.values()
        if type(value).__name__ == "MarkdownMetadataValue"
    ]
    assert texts
    for text in texts:
        assert injected(rendered(text)) == [], text


def test_agent_texts_in_the_digest_markdown_are_escaped() -> None:
    from backup_pipeline.digest.build import AgentHealth, FleetDigest, Problem
    from backup_pipeline.digest.render import to_markdown

    at = datetime(2025, 11, 21, 13, tzinfo=UTC)
    report = FleetDigest(
        day=date(2025, 11, 21),
        generated_at=at,
        agents=[AgentHealth(agent_id=AGENT, jobs=1, evaluated=1, failed=1)],
        total=AgentHealth(agent_id="TOTAL", jobs=1, evaluated=1, failed=1),
        problems=[
            Problem(
                agent_id=AGENT,
                database_name="compta_db",
                cycle_expected_at=at,
                status="FAILED",
                message=HOSTILE,
            )
        ],
        anomalies=[],
    )
    markdown = to_markdown(report)
    assert injected(rendered(markdown)) == [], markdown
