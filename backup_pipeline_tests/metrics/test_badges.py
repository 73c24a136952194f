"""Status badges over HTTP: SVG and shields.io endpoint JSON, the most severe status with its colour,
404 for unknown names, and names shown as text whatever they hold."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.metrics.badge_render import badge_json, badge_svg
from backup_pipeline.metrics.badges import Badge, summarise
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.metrics_fleet import DOUALA, LIMBE, YAOUNDE, build_fleet, exporter

SVG = "{http://www.w3.org/2000/svg}"


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


def test_badges_show_the_most_severe_status(workspace: Workspace) -> None:
    build_fleet(workspace)
    with exporter() as url:
        kind, svg = _get(f"{url}/badge/{DOUALA}.svg")
        assert kind.startswith("image/svg+xml")
        assert {DOUALA, "FAILED: 2 of 3 failing"} <= set(_texts(svg))  # paie_db is failing too
        kind, body = _get(f"{url}/badge/{DOUALA}.json")
        assert kind == "application/json"
        assert json.loads(body) == {
            "schemaVersion": 1,
            "label": DOUALA,
            "message": "FAILED: 2 of 3 failing",
            "color": "red",
            "cacheSeconds": 300,
        }
        assert (
            json.loads(_get(f"{url}/badge/{DOUALA}/paie_db.json")[1])["message"]
            == "TRANSFER_INTEGRITY_FAILED"
        )
        assert json.loads(_get(f"{url}/badge/{YAOUNDE}/compta_db.json")[1])["color"] == "red"
        assert json.loads(_get(f"{url}/badge/{LIMBE}.json")[1])["color"] == "lightgrey"
        ok = json.loads(_get(f"{url}/badge/{DOUALA}/compta_db.json")[1])
        assert (ok["label"], ok["message"]) == (f"{DOUALA}/compta_db", "FAILED: 1 of 2 failing")


def test_unknown_names_are_404_and_hostile_names_stay_text(workspace: Workspace) -> None:
    build_fleet(workspace)
    hostile = "db<img src=x onerror=alert(1)>&\"'$"  # no '/': a database name never holds one
    with sa.create_engine(workspace.database_url).begin() as conn:  # written behind the jobs file's back
        conn.execute(
            sa.text(
                "INSERT INTO expected_jobs (agent_id_responsible, database_name, name, expected_hour_utc, "
                "expected_minute_utc, early_minutes, grace_minutes, timezone, content_change, company_name, "
                "city, neighborhood, is_active, current_status, created_at) VALUES (:a, :d, '0200', 2, 0, "
                "60, 60, 'UTC', 'changed', 'SIRPACAM', 'DOUALA', 'NEWBELL', true, 'OK', now())"
            ),
            {"a": DOUALA, "d": hostile},
        )
    with exporter() as url:
        for path in (
            "/badge/NOBODY_HERE_AT_ALL.svg",
            f"/badge/{DOUALA}/nothing_db.svg",
            "/badge/old_db.json",
            f"/badge/{DOUALA}/old_db.json",  # inactive: removed from the jobs file
            "/badge/%3Cscript%3E.svg",
            "/badge/.svg",
            f"/badge/{DOUALA}.png",
        ):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"{url}{path}", timeout=30)
            assert missing.value.code == 404, path
            assert b"<" not in missing.value.read()
        quoted = urllib.parse.quote(hostile)
        _, svg = _get(f"{url}/badge/{DOUALA}/{quoted}.svg")
        assert "<img" not in svg
        assert f"{DOUALA}/{hostile}" in _texts(svg)  # parsed as XML: the name is text, intact
        assert json.loads(_get(f"{url}/badge/{DOUALA}/{quoted}.json")[1])["label"] == f"{DOUALA}/{hostile}"


@given(st.text(min_size=1, max_size=60).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_any_label_renders_as_well_formed_svg_and_json(label: str) -> None:
    printable = "".join(c for c in label if c >= " " and c != "\x7f") or "x"
    badge = Badge(printable, "OK", "brightgreen")
    assert _texts(badge_svg(badge))[:2] == [printable, printable]
    assert json.loads(badge_json(badge))["label"] == printable


@pytest.mark.parametrize(
    ("statuses", "message", "colour"),
    [
        (["OK"], "OK", "brightgreen"),
        (["OK", "OK"], "OK", "brightgreen"),
        (["OK", "UNKNOWN"], "UNKNOWN: 1 of 2", "lightgrey"),
        (["TRANSFER_INTEGRITY_FAILED", "FAILED", "OK"], "FAILED: 2 of 3 failing", "red"),
        (["FAILED", "MISSING", "MISSING"], "MISSING: 3 of 3 failing", "red"),
        (["MISSING", "OK", "TRANSFER_INTEGRITY_FAILED", "OK", "UNKNOWN"], "MISSING: 2 of 5 failing", "red"),
        (["FAILED", "FAILED"], "FAILED", "red"),
    ],
)
def test_the_most_severe_status_wins(statuses: list[str], message: str, colour: str) -> None:
    assert summarise("A_B_C", statuses) == Badge("A_B_C", message, colour)
