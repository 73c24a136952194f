"""End to end in Dagster: a real webserver and daemon on the shipped dagster.yaml (PostgreSQL storage).

Reports land in a deposit tree, the deposit sensor starts a scan, and the GraphQL API shows the run,
the per-database materializations and the integrity checks. A backfill launched the way the UI does
(GraphQL `launchPartitionBackfill`) evaluates two past days, a second one from the CLI
(`dagster job backfill`) re-evaluates days in place, and headless Chromium opens the asset's and the
job's pages. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from backup_pipeline.app.launcher import DAGSTER_URL_ENV, SHIPPED_INSTANCE_CONFIG
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from backup_pipeline_tests.support.dagster_servers import (
    ARTIFACTS,
    BIN,
    JOB,
    PROJECT,
    TERMINAL,
    Run,
    Servers,
    free_port,
    runs,
    stop_automation,
    wait_ready,
)
from backup_pipeline_tests.support.deposit_builder import Agent, gz, sha

pytestmark = pytest.mark.slow

AGENT = "SIRPACAM_DOUALA_NEWBELL"
OTHER = "SIRPACAM_BAFOUSSAM_CAMPUS_1"
WINDOW = 90
WAIT_RUNS = 300.0


# ---------------------------------------------------------------- servers


@pytest.fixture
def dagster_storage_url(pg_server: str) -> Iterator[str]:
    """A fresh database on the test server for Dagster's own runs, events and schedules."""
    name = f"bp_e2e_dagster_{os.getpid()}_{time.monotonic_ns()}"
    admin = sa.create_engine(make_url(pg_server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def dagster_servers(
    workspace: Workspace, dagster_storage_url: str, tmp_path: Path
) -> Iterator[Callable[[], Servers]]:
    """Start the webserver and the daemon on a temporary DAGSTER_HOME (call once the jobs file exists)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    env = os.environ.copy() | {  # the workspace fixture's BACKUP_* variables are already in os.environ
        "DAGSTER_HOME": str(home),
        DAGSTER_URL_ENV: dagster_storage_url,
        "PYTHONUNBUFFERED": "1",
    }
    started: list[Servers] = []

    def start(*stopped: tuple[str, str]) -> Servers:
        """`stopped`: (kind, name) of schedules and sensors stopped before the daemon exists, so that
        none of their ticks can run before the test's own scans."""
        servers = Servers(port=free_port(), home=home, env=env)
        started.append(servers)
        for kind, name in stopped:
            stop_automation(servers, kind, name)
        servers.start("dagster-webserver", "-h", "127.0.0.1", "-p", str(servers.port))
        servers.start("dagster-daemon", "run")
        wait_ready(servers)
        return servers

    yield start
    for servers in started:
        servers.stop()


# ---------------------------------------------------------------- GraphQL reads


MATERIALIZATIONS_QUERY = """query Mats($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) { __typename ... on Asset {
    assetMaterializations(partitions: $partitions, limit: 100) { partition runId
      metadataEntries { __typename label
        ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } } } } }"""

OBSERVATIONS_QUERY = MATERIALIZATIONS_QUERY.replace("assetMaterializations", "assetObservations")

CHECKS_QUERY = """query Checks($path: [String!]!) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: "integrity", limit: 100) {
    runId status evaluation { success partition
      metadataEntries { label ... on TextMetadataEntry { text } } } } }"""

RESTORABLE_QUERY = CHECKS_QUERY.replace('checkName: "integrity"', 'checkName: "restorable"')

LAUNCH_BACKFILL = """mutation Backfill($partitions: [String!]) {
  launchPartitionBackfill(backfillParams: {
    selector: {partitionSetName: "backup_scan_partition_set",
               repositorySelector: {repositoryName: "__repository__",
                                    repositoryLocationName: "backup_pipeline"}},
    partitionNames: $partitions}) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""

BACKFILL_QUERY = """query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { id status numPartitions runs { runId status tags { key value } } }
  ... on PythonError { message } } }"""


def metadata(entries: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for m in entries:
        kind = m["__typename"]
        if kind == "IntMetadataEntry":
            values[m["label"]] = m["intValue"]
        elif kind == "TextMetadataEntry":
            values[m["label"]] = m["text"]
        elif kind == "NullMetadataEntry":
            values[m["label"]] = None
        else:
            values[m["label"]] = kind
    return values


def materializations(servers: Servers, path: list[str], partition: str | None = None) -> list[dict]:
    data = servers.graphql(MATERIALIZATIONS_QUERY, path=path, partitions=[partition] if partition else None)[
        "assetOrError"
    ]
    assert data["__typename"] == "Asset", f"asset {'/'.join(path)} unknown to Dagster: {data}"
    return data["assetMaterializations"]


def observations(servers: Servers, path: list[str], partition: str | None = None) -> list[dict]:
    data = servers.graphql(OBSERVATIONS_QUERY, path=path, partitions=[partition] if partition else None)[
        "assetOrError"
    ]
    assert data["__typename"] == "Asset", f"asset {'/'.join(path)} unknown to Dagster: {data}"
    return data["assetObservations"]


def check_evaluations(servers: Servers, path: list[str], partition: str) -> list[dict]:
    executions = servers.graphql(CHECKS_QUERY, path=path)["assetCheckExecutions"]
    return [e for e in executions if e["evaluation"] and e["evaluation"]["partition"] == partition]


def wait_backfill(servers: Servers, backfill_id: str) -> list[Run]:
    def done() -> tuple[bool, Any]:
        data = servers.graphql(BACKFILL_QUERY, id=backfill_id)["partitionBackfillOrError"]
        assert data["__typename"] == "PartitionBackfill", data
        assert data["status"] not in ("FAILED", "CANCELED", "COMPLETED_FAILED"), data
        finished = data["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and all(
            r["status"] in TERMINAL for r in data["runs"]
        )
        return finished, data

    data = servers.wait(f"backfill {backfill_id} to complete", done, WAIT_RUNS)
    return [Run(r["runId"], r["status"], {t["key"]: t["value"] for t in r["tags"]}) for r in data["runs"]]


# ---------------------------------------------------------------- the deposit


@dataclass
class Scenario:
    cycle: datetime  # today's cycle (shortly before now)
    day: date
    past: list[date]
    compta_packed: dict[date, bytes]
    paie_packed: bytes
    ventes_size: int

    @property
    def hhmm(self) -> str:
        return f"{self.cycle:%H%M}"

    def asset(self, agent: str, database: str) -> list[str]:
        return ["backups", agent, f"{database}_{self.hhmm}"]


DATABASES = [(AGENT, "compta_db"), (AGENT, "paie_db"), (AGENT, "stock_db"), (OTHER, "ventes_db")]


def jobs_for(cycle: datetime) -> list[dict[str, Any]]:
    return [
        {
            "agent_id": agent,
            "database_name": database,
            "expected_hour_utc": cycle.hour,
            "expected_minute_utc": cycle.minute,
        }
        for agent, database in DATABASES
    ]


def build_deposit(incoming: Path, cycle: datetime) -> Scenario:
    """Reports for today's cycle (SUCCESS, TRANSFER_INTEGRITY_FAILED, FAILED, SUCCESS in zstd) and for
    the two days before (compta_db only, the same database content each day)."""
    agent, other = Agent(incoming, AGENT), Agent(incoming, OTHER)
    day = cycle.date()
    past = [day - timedelta(days=2), day - timedelta(days=1)]
    dump = b"-- compta_db dump: the same rows every day\n" * 2000
    compta: dict[date, bytes] = {}
    for d in past:
        end = cycle - (day - d) + timedelta(minutes=5)
        compta[d] = gz(dump, mtime=int(end.timestamp()))  # header timestamps differ, content does not
        agent.stage(f"compta_db_{d:%Y%m%d}.sql.gz", compta[d])
        agent.report(end, {"compta_db": agent.database_section(f"compta_db_{d:%Y%m%d}.sql.gz", compta[d])})
    end = cycle + timedelta(minutes=5)
    compta[day] = gz(dump, mtime=int(end.timestamp()))
    paie = gz(b"-- paie_db dump\n" * 3000)
    agent.stage(f"compta_db_{day:%Y%m%d}.sql.gz", compta[day])
    agent.stage("paie_db.sql.gz", paie)
    agent.report(
        end,
        {
            "compta_db": agent.database_section(f"compta_db_{day:%Y%m%d}.sql.gz", compta[day]),
            "paie_db": agent.database_section("paie_db.sql.gz", paie, agent_hash="0" * 64),
            "stock_db": agent.database_section(
                "stock_db.sql.gz",
                b"",
                backup=False,
                transfer=False,
                error="nothing to send: pg_dump failed",
                logs="pg_dump: connection refused",
            ),
        },
    )
    ventes = b"-- ventes_db dump\n" * 1500
    path = other.backup(end - timedelta(minutes=2), "ventes_db", ventes, compression="zst")
    ventes_size = (other.folder / "database" / "ventes_db.zst").stat().st_size
    assert path.exists()
    return Scenario(cycle, day, past, compta, paie, ventes_size)


def entries_by_cycle(workspace: Workspace) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(e["agent_id"], e["database_name"], e["cycle_expected_at"][:10]): e for e in workspace.entries()}


SCHEDULE = ("schedule", "scan_every_15_minutes")
SENSOR = ("sensor", "deposit_sensor")


# ---------------------------------------------------------------- the test


def test_sensor_scan_assets_checks_backfills_and_ui(workspace: Workspace, dagster_servers, tmp_path: Path):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cycle = now - timedelta(minutes=60)  # window 90 min: the report is in, the deadline still ahead
    workspace.write_jobs(jobs_for(cycle), defaults={"window_minutes": WINDOW})
    # Reports land: agent folders are prepared aside and moved in whole, as an upload would appear;
    # before the daemon starts, so that the sensor's first tick finds them (its next is 30 s later).
    scenario = build_deposit(tmp_path / "incoming", cycle)
    for folder in sorted((tmp_path / "incoming").iterdir()):
        folder.rename(workspace.root / folder.name)
    day = scenario.day.isoformat()
    # The 15-minute schedule would scan (and archive) the reports first when a quarter hour falls
    # inside the test: it is stopped before the daemon starts, so the scans below are the sensor's.
    servers = dagster_servers(SCHEDULE)
    assert (servers.home / "dagster.yaml").read_text() == SHIPPED_INSTANCE_CONFIG.read_text()

    # ---- the sensor starts automatic scans; all of them succeed and today's cycle has its entries.
    def today_scanned() -> tuple[bool, Any]:
        seen = runs(servers)
        today = {k: e for k, e in entries_by_cycle(workspace).items() if k[2] == day}
        sensed = [r for r in seen if r.tags.get("dagster/sensor_name") == "deposit_sensor"]
        done = len(today) == len(DATABASES) and sensed and all(r.status in TERMINAL for r in seen)
        state = {
            "runs (partition, status, sensor)": [
                (r.partition, r.status, r.tags.get("dagster/sensor_name")) for r in seen
            ],
            f"entries of {day}": {k[1]: e["status"] for k, e in today.items()},
        }
        return bool(done), state

    servers.wait("the deposit sensor's scans", today_scanned, WAIT_RUNS)
    automatic = runs(servers)
    assert all(r.status == "SUCCESS" for r in automatic), [(r.partition, r.status) for r in automatic]
    assert all(r.tags.get("backup_pipeline/automatic") == "true" for r in automatic)
    assert all(r.tags.get("backup_pipeline/scan") == "exclusive" for r in automatic)
    sensor_runs = [r for r in automatic if r.tags.get("dagster/sensor_name") == "deposit_sensor"]
    assert day in {r.partition for r in sensor_runs}
    assert all(r.tags.get("dagster/run_key") for r in sensor_runs)
    by_id = {r.run_id: r for r in automatic}

    entries = entries_by_cycle(workspace)
    assert {k: e["status"] for k, e in entries.items()} == {
        (AGENT, "compta_db", day): "SUCCESS",
        (AGENT, "paie_db", day): "TRANSFER_INTEGRITY_FAILED",
        (AGENT, "stock_db", day): "FAILED",
        (OTHER, "ventes_db", day): "SUCCESS",
    }, "automatic scans must not evaluate the past days' cycles, due before the jobs existed"
    for entry in entries.values():
        assert by_id[entry["dagster_run_id"]].partition == day

    # ---- a good backup materializes its day; a bad one is an observation, with the entry's values.
    good = {"compta_db", "ventes_db"}
    for agent, database in DATABASES:
        entry = entries[(agent, database, day)]
        made = materializations(servers, scenario.asset(agent, database), day)
        seen = observations(servers, scenario.asset(agent, database), day)
        assert (len(made), len(seen)) == ((1, 0) if database in good else (0, 1)), (database, made, seen)
        (event,) = made + seen
        values = metadata(event["metadataEntries"])
        assert event["partition"] == day
        assert event["runId"] == entry["dagster_run_id"]
        assert values["status"] == entry["status"]
        assert values["message"] == entry["message"]
        assert values["entry_id"] == entry["entry_id"]
        assert values["cycle_expected_at"] == f"{cycle:%Y-%m-%dT%H:%M}:00Z"
        assert values["report_file"] == (entry["report_file"] or "")

    def values_of(database: str, agent: str = AGENT) -> dict[str, Any]:
        path = scenario.asset(agent, database)
        (event,) = materializations(servers, path, day) + observations(servers, path, day)
        return metadata(event["metadataEntries"])

    compta = values_of("compta_db")
    assert compta["staged_bytes"] == len(scenario.compta_packed[scenario.day])  # an int, plotted by the UI
    assert compta["agent_bytes"] == compta["staged_bytes"]
    assert compta["server_sha256"] == compta["agent_sha256"] == sha(scenario.compta_packed[scenario.day])
    assert compta["report_file"] == f"{cycle + timedelta(minutes=5):%Y%m%d_%H%M%S}_{AGENT}.json"
    paie = values_of("paie_db")
    assert paie["server_sha256"] == sha(scenario.paie_packed) != paie["agent_sha256"]
    assert paie["staged_bytes"] == len(scenario.paie_packed)
    stock = values_of("stock_db")
    assert stock["staged_bytes"] is None  # never measured: the agent reported a failed step
    assert "BACKUP, TRANSFER" in stock["message"], stock["message"]
    assert "nothing to send" in stock["message"] and "connection refused" in stock["message"]
    assert values_of("ventes_db", OTHER)["staged_bytes"] == scenario.ventes_size

    # ---- the integrity checks follow the statuses.
    expected_checks = {"compta_db": True, "paie_db": False, "stock_db": False, "ventes_db": True}
    for agent, database in DATABASES:
        found = check_evaluations(servers, scenario.asset(agent, database), day)
        assert len(found) == 1, f"{database}: expected one integrity check result for {day}, got {found}"
        (execution,) = found
        assert execution["evaluation"]["success"] is expected_checks[database], execution
        assert execution["status"] == ("SUCCEEDED" if expected_checks[database] else "FAILED")
        assert execution["runId"] == entries[(agent, database, day)]["dagster_run_id"]
        check_meta = {m["label"]: m.get("text") for m in execution["evaluation"]["metadataEntries"]}
        assert check_meta["status"] == entries[(agent, database, day)]["status"]

    # ---- lineage source: every report recorded once, accepted.
    reports = materializations(servers, ["backup_reports"])
    assert sum(metadata(r["metadataEntries"])["accepted"] for r in reports) == 4
    assert sum(metadata(r["metadataEntries"])["rejected"] for r in reports) == 0

    # ---- a backfill over the two past days, launched as the UI does.
    past = [d.isoformat() for d in scenario.past]
    launched = servers.graphql(LAUNCH_BACKFILL, partitions=past)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_runs = wait_backfill(servers, launched["backfillId"])
    assert sorted(r.partition or "" for r in backfill_runs) == past
    assert all(r.status == "SUCCESS" for r in backfill_runs), [(r.partition, r.status) for r in backfill_runs]
    assert all(r.tags.get("dagster/backfill") == launched["backfillId"] for r in backfill_runs)
    run_of_day = {r.partition: r.run_id for r in backfill_runs}

    entries = entries_by_cycle(workspace)
    assert len(entries) == 3 * len(DATABASES)
    for d in past:
        assert {db: entries[(a, db, d)]["status"] for a, db in DATABASES} == {
            "compta_db": "SUCCESS",  # same content each day: policy `changed` is satisfied either order
            "paie_db": "MISSING",
            "stock_db": "MISSING",
            "ventes_db": "MISSING",
        }
        for agent, database in DATABASES:
            assert entries[(agent, database, d)]["dagster_run_id"] == run_of_day[d], (agent, database, d)
        compta_event = materializations(servers, scenario.asset(AGENT, "compta_db"), d)
        assert [e["runId"] for e in compta_event] == [run_of_day[d]]
        for agent, database in DATABASES[1:]:  # MISSING: observed, never materialized
            assert materializations(servers, scenario.asset(agent, database), d) == []
            assert [e["runId"] for e in observations(servers, scenario.asset(agent, database), d)] == [
                run_of_day[d]
            ]
    assert "do not list it" in entries[(AGENT, "paie_db", past[0])]["message"]

    # ---- a second backfill, from the CLI, re-evaluates yesterday and today in place.
    before = entries_by_cycle(workspace)
    second = [scenario.past[1].isoformat(), day]
    said = servers.dagster(
        "job", "backfill", "-w", str(PROJECT / "workspace.yaml"), "-j", JOB,
        "--from", second[0], "--to", second[1], "--noprompt",
    )  # fmt: skip
    match = re.search(r"Launched backfill job `(\w+)`", said)
    assert match, said
    rerun = wait_backfill(servers, match.group(1))
    assert sorted(r.partition or "" for r in rerun) == second
    assert all(r.status == "SUCCESS" for r in rerun), [(r.partition, r.status) for r in rerun]
    rerun_of_day = {r.partition: r.run_id for r in rerun}

    after = entries_by_cycle(workspace)
    assert after.keys() == before.keys(), "a backfill updates entries in place, it never adds any"
    for key, entry in after.items():
        old = before[key]
        assert entry["entry_id"] == old["entry_id"], key
        assert entry["status"] == old["status"], key
        assert entry["server_calculated_staged_hash"] == old["server_calculated_staged_hash"], key
        assert entry["measured_at"] == old["measured_at"], f"{key}: stored measurement must be reused"
        expected_run = rerun_of_day.get(key[2], old["dagster_run_id"])
        assert entry["dagster_run_id"] == expected_run, key

    # ---- the UI in a real browser.
    check_ui(servers, scenario, launched["backfillId"], match.group(1))


# ---------------------------------------------------------------- the browser


def check_ui(servers: Servers, scenario: Scenario, *backfill_ids: str) -> None:
    if not CHROMIUM.exists():
        if not os.environ.get("CI"):
            pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium); the browser part runs in CI")
        pytest.fail(f"{CHROMIUM} is absent in CI: .ci/run must install Debian's chromium")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    asset = "/".join(scenario.asset(AGENT, "compta_db"))
    failing = "/".join(scenario.asset(AGENT, "paie_db"))
    day = scenario.day.isoformat()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            body = page.locator("body")

            def visit(path: str, shot: str, *texts: str | re.Pattern[str]) -> None:
                page.goto(f"{servers.url}{path}", wait_until="domcontentloaded")
                try:
                    for text in texts:
                        expect(body).to_contain_text(text, timeout=60_000)
                    _dismiss_community_dialog(page)
                finally:
                    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)

            # A database with a good backup every day: three days materialized, today's selected.
            visit(
                f"/assets/{asset}?view=partitions&partition={day}",
                "e2e-asset-partitions.png",
                f"compta_db_{scenario.hhmm}",
                "Materialized (3)",
                day,
                "SUCCESS",
                "entry_id",
            )
            # Its overview (latest event: a day of the backfills); the failing database's checks.
            visit(
                f"/assets/{asset}",
                "e2e-asset-overview.png",
                "Latest materialization",
                "status",
                "SUCCESS",
            )
            visit(f"/assets/{failing}?view=checks", "e2e-asset-checks.png", "integrity", "Failed")
            # The scan job: its graph, then its partitions with both backfills.
            visit(
                f"/locations/backup_pipeline/jobs/{JOB}",
                "e2e-job-overview.png",
                JOB,
                "ingest_reports",
                "plan_evaluation",
                "archive_reports",
            )
            visit(
                f"/locations/backup_pipeline/jobs/{JOB}/partitions",
                "e2e-job-partitions.png",
                "Backfill history",
                *backfill_ids,
            )
        finally:
            browser.close()


def _dismiss_community_dialog(page: Any) -> None:
    """Dagster's first-visit newsletter dialog hides the page in screenshots: skip it if shown."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=3_000)
    except Exception:
        return
    skip.click()
    page.wait_for_timeout(500)


# ---------------------------------------------------------------- `backup-pipeline dev` stops cleanly


def _processes_with(marker: str) -> list[int]:
    """Processes of this user whose environment contains `marker` (e.g. their DAGSTER_HOME)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


# What `.env` holds in the folder `backup-pipeline dev` is started from: settings that are not in the
# environment, which every process Dagster starts must see as the CLI saw them.
DOT_ENV = {
    "BACKUP_PIPELINE_START_DATE": "2025-03-01",
    "SCANNER_REPORT_COLLECTION_WINDOW_MINUTES": "45",
    "BACKUP_PIPELINE_MAX_BATCHES": "3",
    "BACKUP_PIPELINE_NOTIFY_RETRY_SECONDS": "120",
    "BACKUP_PIPELINE_SIZE_BELOW_RATIO": "0.25",
}
FIRST_PARTITION = """query First {
  partitionSetOrError(repositorySelector: {repositoryLocationName: "backup_pipeline",
                                           repositoryName: "__repository__"},
                      partitionSetName: "backup_scan_partition_set") {
    ... on PartitionSet { partitionsOrError(limit: 1) { ... on Partitions { results { name } } } } } }"""


def _ignore_sigint() -> None:
    """What a shell does to a command it starts in the background (`backup-pipeline dev &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_backup_pipeline_dev_started_from_a_script_sees_its_dot_env_and_stops_on_sigterm(
    workspace: Workspace, dagster_storage_url: str, tmp_path: Path
) -> None:
    """Started the way a start script does (SIGINT ignored, settings in `.env`): the webserver, the
    daemon and the code servers see every setting the CLI saw, and a service manager's SIGTERM to
    the process it started leaves nothing running within 15 s."""
    workspace.write_jobs(
        [{"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in DOT_ENV.items()))
    home = tmp_path / "dev_home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DOT_ENV}
    env |= {"DAGSTER_HOME": str(home), DAGSTER_URL_ENV: dagster_storage_url}
    with (tmp_path / "dev.log").open("wb") as out:
        dev = subprocess.Popen(
            [str(BIN / "backup-pipeline"), "dev", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that the cleanup below can reach whatever survives
            preexec_fn=_ignore_sigint,
        )
    try:
        _wait_for_ui(dev, port, tmp_path / "dev.log")
        servers = Servers(port=port, home=home, env=env)
        partitions = servers.graphql(FIRST_PARTITION)["partitionSetOrError"]["partitionsOrError"]["results"]
        assert [p["name"] for p in partitions] == ["2025-03-01"]  # the code server read `.env`'s start date
        started = _processes_with(f"DAGSTER_HOME={home}")
        assert len(started) >= 3  # dev, webserver, daemon (+ code servers)
        for pid in started:
            seen = _environment_of(pid)
            assert {name: seen.get(name) for name in DOT_ENV} == DOT_ENV, f"process {pid}"

        dev.send_signal(signal.SIGTERM)  # to the process that was started, not its group
        deadline = time.monotonic() + 15
        while (left := _processes_with(f"DAGSTER_HOME={home}")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == [], f"still running 15 s after SIGTERM: {left}\n{(tmp_path / 'dev.log').read_text()}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)


def _wait_for_ui(dev: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert dev.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(1)


def _environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


# ---------------------------------------------------------------- a failed run is re-executed

LAUNCH_RUN = """mutation Launch($partition: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "backup_pipeline", repositoryName: "__repository__",
               jobName: "backup_scan"},
    executionMetadata: {tags: [{key: "dagster/partition", value: $partition},
                               {key: "backup_pipeline/automatic", value: "true"}]}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } } }"""


def test_a_failed_scan_run_is_re_executed_by_the_daemon(
    workspace: Workspace, dagster_servers, tmp_path: Path
) -> None:
    """The deposit share is not mounted when a scan runs (the run fails) and is back moments later:
    the daemon re-executes the run (dagster.yaml `run_retries`), and the re-execution records the
    day's entries."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cycle = now - timedelta(minutes=60)
    workspace.write_jobs(jobs_for(cycle), defaults={"window_minutes": WINDOW})
    servers = dagster_servers(SENSOR, SCHEDULE)
    workspace.root.rmdir()  # not mounted

    launched = servers.graphql(LAUNCH_RUN, partition=cycle.date().isoformat())["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    first = launched["run"]["runId"]

    def failed() -> tuple[bool, Any]:
        status = {r.run_id: r.status for r in runs(servers)}.get(first)
        return status == "FAILURE", status

    servers.wait("the scan run to fail on the missing deposit root", failed, WAIT_RUNS)
    scenario = build_deposit(workspace.root, cycle)  # mounted again, reports and dumps in place

    def retried() -> tuple[bool, Any]:
        # Re-executions name the failed run as their root (a second one follows a failed first).
        chain = [r for r in runs(servers) if r.tags.get("dagster/root_run_id") == first]
        succeeded = [r.run_id for r in chain if r.status == "SUCCESS"]
        return bool(succeeded), succeeded or [(r.run_id, r.status) for r in chain]

    (retry,) = servers.wait("the daemon's re-execution of the failed run", retried, WAIT_RUNS)
    today = {k: e for k, e in entries_by_cycle(workspace).items() if k[2] == scenario.day.isoformat()}
    assert len(today) == len(DATABASES)
    assert {e["dagster_run_id"] for e in today.values()} == {retry}


# ---------------------------------------------------------------- the demo's failed database


def test_the_demo_shows_a_failed_day_not_materialized_with_its_check_failed(
    workspace: Workspace, dagster_storage_url: str, drill_dir: Path, tmp_path: Path
) -> None:
    """`backup-pipeline demo` (as scripts/demo.sh runs it, without its UI), then the UI on its
    instance: a database whose failed day sits among good ones shows that day not materialized, the
    good days materialized, and its integrity check failed for that day."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    root = tmp_path / "demo" / "deposit"
    env = os.environ.copy() | {
        "DAGSTER_HOME": str(home),
        DAGSTER_URL_ENV: dagster_storage_url,
        "PYTHONUNBUFFERED": "1",
        "BACKUP_STORAGE_ROOT": str(root),  # what the demo itself uses, for the webserver's code location
        "BACKUP_PIPELINE_JOBS_FILE": str(root.parent / "jobs.yaml"),
        "BACKUP_PIPELINE_DRILL_DIR": str(drill_dir),  # a folder the drill user can reach
    }
    demo = subprocess.run(
        [str(BIN / "backup-pipeline"), "demo", "--no-ui", "--root", str(root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    path, bad_day, good_days = _a_failed_day_among_good_ones(workspace)
    servers = Servers(port=free_port(), home=home, env=env, artifacts="e2e-demo")
    try:
        servers.start("dagster-webserver", "-h", "127.0.0.1", "-p", str(servers.port))
        servers.start("dagster-daemon", "run")  # as `demo` runs it (freshness is the daemon's)
        wait_ready(servers)
        materialized = {m["partition"] for m in materializations(servers, path)}
        assert bad_day not in materialized and set(good_days) <= materialized, (bad_day, good_days)
        (failed,) = check_evaluations(servers, path, bad_day)
        assert failed["status"] == "FAILED" and failed["evaluation"]["success"] is False
        # The demo's drills ran the drill job: each drilled database's restorable check was evaluated.
        drilled = [e for e in workspace.entries() if e.get("restore_drill")]
        assert drilled, f"the demo drilled nothing:\n{demo.stdout}"
        for entry in drilled:
            cycle = entry["cycle_expected_at"]
            asset = ["backups", entry["agent_id"], f"{entry['database_name']}_{cycle[11:13]}{cycle[14:16]}"]
            executions = servers.graphql(RESTORABLE_QUERY, path=asset)["assetCheckExecutions"]
            assert [e["evaluation"]["partition"] for e in executions] == [cycle[:10]], asset
        _show_the_failed_day(servers, "/".join(path), bad_day, len(materialized))
    finally:
        servers.stop()


def _a_failed_day_among_good_ones(workspace: Workspace) -> tuple[list[str], str, list[str]]:
    """The asset of a demo database with a bad day and good days, that day and the good days."""
    per_backup: dict[tuple[str, str, str], dict[str, str]] = {}
    for e in workspace.entries():
        cycle = e["cycle_expected_at"]
        per_backup.setdefault((e["agent_id"], e["database_name"], f"{cycle[11:13]}{cycle[14:16]}"), {})[
            cycle[:10]
        ] = e["status"]
    for (agent, database, name), days in sorted(per_backup.items()):
        good = sorted(d for d, status in days.items() if status in ("SUCCESS", "HASH_MISMATCH"))
        bad = sorted(d for d, status in days.items() if status not in ("SUCCESS", "HASH_MISMATCH"))
        if good and bad:
            return ["backups", agent, f"{database}_{name}"], bad[0], good
    raise AssertionError(f"the demo's fleet has no failed day among good ones: {per_backup}")


def _show_the_failed_day(servers: Servers, asset: str, day: str, good: int) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is absent: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            body = page.locator("body")
            try:
                # The failed day selected in the partitions: not materialized, the good days are.
                page.goto(f"{servers.url}/assets/{asset}?view=partitions&partition={day}")
                expect(body).to_contain_text(f"Materialized ({good})")
                _dismiss_community_dialog(page)
                # The day's detail: its title, then no materialization.
                expect(body).to_contain_text(re.compile(rf"{day}\s*Latest materialization\s*None"))
                page.screenshot(path=str(ARTIFACTS / "e2e-demo-failed-day.png"), full_page=True)
                # The integrity check's partitions: that day failed.
                page.goto(f"{servers.url}/assets/{asset}?view=checks")
                expect(body).to_contain_text("integrity")
                page.get_by_text("Partitions", exact=True).last.click()
                expect(body).to_contain_text(day)
                page.screenshot(path=str(ARTIFACTS / "e2e-demo-failed-check.png"), full_page=True)
            finally:
                (ARTIFACTS / "e2e-demo-page.txt").write_text(body.inner_text())
        finally:
            browser.close()
