"""Issue 20: a notification target is shown by what Apprise makes of its URL, never by a part of its
password, whatever characters the password holds.

`json://admin:Base64/PartOfSecret+x==@host` was shown as `json://admin:Base64`, and
`mailtos://dba:Pw#2024secret@host` as `mailtos://dba:Pw`, in `notify test` and in
`notification_attempts.target`: the label cut the URL at the first `/` or `#`, where the password
went on. The label now comes from Apprise's own parsing (scheme, and the host when the service's host
is a server's name), and nothing when Apprise cannot parse the URL or when an `@` where Apprise does
not expect one says a password may hold it.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.adapters.notify_targets import Target, scrub
from backup_pipeline_tests.conftest import Workspace

AGENT = "SIRPACAM_DOUALA_NEWBELL"
ISSUE_URLS = {
    "json://admin:Base64/PartOfSecret+x==@host": ("Base64", "PartOfSecret", "x=="),
    "mailtos://dba:Pw#2024secret@host": ("Pw", "2024secret"),
}


def test_the_issues_urls_show_nothing_of_their_passwords() -> None:
    for url, parts in ISSUE_URLS.items():
        label = Target(url).label
        assert label == url.split("://")[0] + "://…", (url, label)
        assert not any(part in label for part in parts)


def test_well_formed_urls_keep_their_public_host() -> None:
    assert Target("json://bob:pw@hooks.example.com:8443/x?token=t").label == "json://hooks.example.com:8443"
    assert Target("mailto://127.0.0.1:2525?from=alerts@example.com&to=ops@example.com").label == (
        "mailto://127.0.0.1:2525"
    )
    assert Target("mailtos://dba:${SMTP_PASSWORD}@smtp.example.com?to=dba@example.com").label == (
        "mailtos://smtp.example.com"
    )
    assert Target("slack://TokenA/TokenB/TokenC").label == "slack://…"  # the host is a token


# Any character: percent-encoded, as a URL must carry it (Apprise decodes it), or written raw.
passwords = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)
SPECIAL = "@/#?:%&=+ $\\[]"


@settings(max_examples=400, deadline=None)
@given(password=passwords | st.text(st.sampled_from(SPECIAL + "ab1"), min_size=1, max_size=12))
def test_no_part_of_any_password_is_in_the_label(password: str) -> None:
    encoded = urllib.parse.quote(password, safe="")
    for scheme in ("json", "mailtos"):
        url = f"{scheme}://admin:{encoded}@hooks.example.com/path"
        assert Target(url).label == f"{scheme}://hooks.example.com", url
        raw = f"{scheme}://admin:{password}@hooks.example.com/path"
        label = Target(raw).label
        allowed = {f"{scheme}://hooks.example.com", f"{scheme}://…", f"{scheme}://admin"}
        # The one thing the URL's text cannot tell: Apprise reads a raw `?` as the start of the query,
        # so in `admin:12?k=v@host` it finds the host `admin` and the port 12 (percent-encode `?`).
        residual = re.fullmatch(r"(\d+)\?.*", password, re.DOTALL)
        if residual:
            allowed.add(f"{scheme}://admin:{int(residual.group(1))}")
        assert label in allowed, (raw, label)


@settings(max_examples=200, deadline=None)
@given(password=st.text(st.sampled_from(SPECIAL + "abcdefgh12"), min_size=4, max_size=16))
def test_apprises_errors_are_scrubbed_of_the_password(password: str) -> None:
    url = f"json://admin:{password}@hooks.example.com/path"
    message = f"could not reach json://admin:{password}@hooks.example.com: {password} refused"
    assert password not in scrub(message, url)


def test_notify_test_and_the_stored_attempts_show_no_part_of_the_password(
    workspace: Workspace, monkeypatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", " ".join(ISSUE_URLS))
    workspace.write_jobs(
        [{"agent_id": AGENT, "database_name": "db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    result = workspace.cli("notify", "test", "--json", expect_ok=False)
    assert result.exit_code == 1
    shown = result.stdout + result.stderr
    assert {r["target"] for r in json.loads(result.stdout)} == {"json://…", "mailtos://…"}
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as conn:
            stored = " ".join(
                " ".join(str(v) for v in row)
                for row in conn.execute(sa.text("SELECT * FROM notification_attempts"))
            )
    finally:
        engine.dispose()
    assert stored
    for parts in ISSUE_URLS.values():
        for part in parts:
            assert part not in shown, part
            assert part not in stored, part
