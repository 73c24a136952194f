"""The exporter in the stack people run: a real Prometheus (Debian's) scrapes `backup-pipeline metrics
serve` over a scanned fleet and evaluates the shipped alerting rules; a wiki-like page shows the status
badges in headless Chromium (screenshots in test-artifacts/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from backup_pipeline_tests.support.metrics_fleet import DOUALA, LIMBE, YAOUNDE, build_fleet
from backup_pipeline_tests.support.paths import PROJECT_ROOT
from backup_pipeline_tests.support.prometheus import RULES, Prometheus, prometheus, wait_until
from backup_pipeline_tests.support.receivers import free_port

pytestmark = pytest.mark.slow

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CLI = Path(sys.executable).parent / "backup-pipeline"


@pytest.fixture
def served(workspace: Workspace, tmp_path: Path) -> Iterator[str]:
    """`backup-pipeline metrics serve` on a free port, as a user starts it, over a scanned fleet."""
    build_fleet(workspace)
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "metrics", "serve", "--port", str(port)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the exporter's /healthz", lambda: _healthy(url, process, log), log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # killed, not left running after the test
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise AssertionError(f"`metrics serve` outlived SIGTERM by 20 s\n{log.read_text()}") from None


def _healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"metrics serve exited with {process.returncode}:\n{log.read_text()}")
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return response.status == 200


def _one(prom: Prometheus, expr: str) -> tuple[dict[str, str], float]:
    result = prom.wait(expr, lambda: prom.query(expr))
    assert len(result) == 1, result
    return result[0]["metric"], float(result[0]["value"][1])


def test_prometheus_scrapes_the_fleet_and_evaluates_the_shipped_rules(
    workspace: Workspace, served: str, tmp_path: Path
) -> None:
    status = {(r["agent_id"], r["database_name"], int(r["name"][:2])): r for r in workspace.json("status")}
    target = served.removeprefix("http://")
    with prometheus(tmp_path / "prometheus", [target], [RULES]) as prom:
        prom.wait("the exporter's target up", lambda: prom.query('up{job="backup_pipeline"} == 1'))

        # A failed job's status, as Prometheus stored it.
        labels, _ = _one(prom, 'backup_job_status{status="FAILED"} == 1')
        assert (labels["agent_id"], labels["database"], labels["schedule"]) == (
            DOUALA,
            "compta_db",
            "20:00 UTC",
        )
        assert _one(prom, 'backup_job_up{database="compta_db",schedule="20:00 UTC"}')[1] == 0

        # A last-success timestamp equal to the database's.
        success = status[(DOUALA, "compta_db", 13)]["last_successful_backup_timestamp"]
        _, stored = _one(
            prom, 'backup_job_last_success_timestamp_seconds{schedule="13:00 UTC",database="compta_db"}'
        )
        assert stored == datetime.fromisoformat(success.replace("Z", "+00:00")).timestamp()

        # Totals.
        assert _one(prom, "sum(backup_fleet_jobs)")[1] == 5 == len(status)
        assert _one(prom, 'backup_fleet_jobs{status="MISSING"}')[1] == 1
        assert _one(prom, 'backup_reports_total{outcome="rejected"}')[1] == 1
        assert _one(prom, "backup_fleet_agents")[1] == 3

        # The shipped rules evaluate without error on the real series, and the not-OK jobs are
        # pending (their `for:` has not elapsed): FAILED, TRANSFER_INTEGRITY_FAILED and MISSING.
        def pending() -> set[tuple[str, str]] | None:
            alerts = prom.api("alerts")["alerts"]
            found = {
                (a["labels"]["agent_id"], a["labels"]["status"])
                for a in alerts
                if a["labels"]["alertname"] == "BackupJobNotOk"
            }
            return found if len(found) == 3 else None

        assert prom.wait("BackupJobNotOk pending for 3 jobs", pending) == {
            (DOUALA, "FAILED"),
            (DOUALA, "TRANSFER_INTEGRITY_FAILED"),
            (YAOUNDE, "MISSING"),
        }
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        shipped = yaml.safe_load(RULES.read_text())["groups"]
        assert sorted(r["name"] for r in rules) == sorted(r["alert"] for g in shipped for r in g["rules"])
        assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}

        # The fleet was scanned as of a day long past: by the real clock every expected backup is
        # too old, the never successful ones counted from when they were declared.
        def too_old() -> set[tuple[str, str, str]] | None:
            alerts = prom.api("alerts")["alerts"]
            found = {
                (a["labels"]["agent_id"], a["labels"]["database"], a["labels"]["schedule"])
                for a in alerts
                if a["labels"]["alertname"] == "BackupTooOld"
            }
            return found if len(found) == 5 else None

        assert prom.wait("BackupTooOld pending for every job", too_old) == {
            (
                r["agent_id"],
                r["database_name"],
                f"{r['name'][:2]}:{r['name'][2:]} UTC",  # daily-UTC backups are named HHMM
            )
            for r in status.values()
        }


def test_status_badges_on_a_wiki_page_in_headless_chromium(served: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is absent: apt-get install chromium (.ci/run installs it in CI)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    badges = [
        f"/badge/{DOUALA}.svg",
        f"/badge/{DOUALA}/compta_db.svg",
        f"/badge/{YAOUNDE}.svg",
        f"/badge/{LIMBE}.svg",
    ]
    page_file = tmp_path / "wiki.html"
    page_file.write_text(
        "<!doctype html><html><body><h1>Backups</h1>"
        + "".join(f'<p><img alt="{b}" src="{served}{b}"></p>' for b in badges)
        + "</body></html>"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 400})
            page.set_default_timeout(30_000)
            page.goto(page_file.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all(
                "img", "images => images.map(i => i.complete && i.naturalWidth)"
            )
            page.screenshot(path=str(ARTIFACTS / "badges-wiki-page.png"), full_page=True)
            assert len(widths) == 4 and all(w and w > 100 for w in widths), widths
            # Opened directly, the badge is an SVG document whose text Chromium shows.
            page.goto(f"{served}/badge/{DOUALA}.svg", wait_until="load")
            expect(page.locator("svg")).to_contain_text(DOUALA)
            expect(page.locator("svg")).to_contain_text("FAILED: 2 of 3 failing")
            page.screenshot(path=str(ARTIFACTS / "badge-agent.png"))
            page.goto(f"{served}/badge/{YAOUNDE}/compta_db.svg", wait_until="load")
            expect(page.locator("svg")).to_contain_text("MISSING")
        finally:
            browser.close()
