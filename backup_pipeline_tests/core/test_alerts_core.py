"""Issue 4, the pure parts: which events a cycle raises, recovery, size assessment, silences, messages,
and (with Apprise's registry) how notification targets are identified, redacted and scrubbed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.adapters.notify_targets import Target, problem, scrub, split_urls
from backup_pipeline.core.alerts import (
    AlertEvent,
    AlertLine,
    Level,
    MaintenanceWindow,
    Silence,
    SizeAnomalyKind,
    SizePolicy,
    annotate_message,
    assess_size,
    compose,
    cycle_events,
    escape_markdown,
    recovers,
    retry_delay,
    size_part,
)
from backup_pipeline.scan.alert import trailing_medians

T = datetime(2025, 11, 21, 13, 0, tzinfo=UTC)
DAY = timedelta(days=1)


# ---------------------------------------------------------------- events


@pytest.mark.parametrize(
    ("status", "anomaly", "hash_mismatch", "expected"),
    [
        ("FAILED", None, True, [AlertEvent.FAILED]),
        ("MISSING", None, True, [AlertEvent.MISSING]),
        ("TRANSFER_INTEGRITY_FAILED", None, True, [AlertEvent.TRANSFER_INTEGRITY_FAILED]),
        ("SUCCESS", None, True, []),
        ("HASH_MISMATCH", None, True, [AlertEvent.HASH_MISMATCH]),
        ("HASH_MISMATCH", None, False, []),
        ("SUCCESS", "TOO_SMALL", True, [AlertEvent.SIZE_ANOMALY]),
        ("HASH_MISMATCH", "TOO_LARGE", False, [AlertEvent.SIZE_ANOMALY]),
        ("FAILED", "TOO_SMALL", True, [AlertEvent.FAILED]),  # no size judgement on a failure
    ],
)
def test_cycle_events(
    status: str, anomaly: str | None, hash_mismatch: bool, expected: list[AlertEvent]
) -> None:
    assert cycle_events(status, anomaly, notify_hash_mismatch=hash_mismatch) == expected


def test_levels() -> None:
    assert AlertEvent.MISSING.level is Level.FAILURE
    assert AlertEvent.SIZE_ANOMALY.level is Level.WARNING
    assert AlertEvent.HASH_MISMATCH.level is Level.INFO
    assert AlertEvent.RECOVERED.level is Level.SUCCESS


@pytest.mark.parametrize(
    ("problem_at", "held", "recovered_at", "success_before", "expected"),
    [
        (T - DAY, False, None, T - 2 * DAY, True),  # FAILED yesterday, OK today
        (T, False, None, T - DAY, True),  # the same cycle: MISSING, then the late report arrived
        (None, False, None, None, False),  # never a problem: nothing to recover from
        (T - DAY, True, None, T - 2 * DAY, False),  # the problem was held by a silence
        (T - DAY, False, T - DAY, T - 2 * DAY, False),  # already announced
        (T - 3 * DAY, False, None, T - DAY, False),  # a success came after the problem already
        (T + DAY, False, None, None, False),  # a later problem: re-evaluating an older cycle
        (T - DAY, False, None, None, True),  # no success ever before
    ],
)
def test_recovers(
    problem_at: datetime | None,
    held: bool,
    recovered_at: datetime | None,
    success_before: datetime | None,
    expected: bool,
) -> None:
    assert (
        recovers(
            T,
            last_problem=problem_at,
            last_problem_held=held,
            last_recovery=recovered_at,
            previous_success=success_before,
        )
        is expected
    )


# ---------------------------------------------------------------- size


def test_size_needs_enough_history() -> None:
    policy = SizePolicy(min_history=3)
    assert assess_size(10, 1000.0, 2, policy) is None
    assessed = assess_size(10, 1000.0, 3, policy)
    assert assessed is not None and assessed.kind is SizeAnomalyKind.TOO_SMALL
    assert assess_size(None, 1000.0, 14, policy) is None
    assert assess_size(10, 1000.0, 14, SizePolicy(enabled=False)) is None


@pytest.mark.parametrize(
    ("size", "kind"),
    [(499, SizeAnomalyKind.TOO_SMALL), (500, None), (3000, None), (3001, SizeAnomalyKind.TOO_LARGE)],
)
def test_size_bounds_are_strict(size: int, kind: SizeAnomalyKind | None) -> None:
    assessed = assess_size(size, 1000.0, 14, SizePolicy())
    assert assessed is not None
    assert assessed.kind is kind
    assert assessed.ratio == pytest.approx(size / 1000)


def test_size_against_an_empty_median() -> None:
    assert assess_size(0, 0.0, 5, SizePolicy()).kind is None  # type: ignore[union-attr]
    grown = assess_size(10, 0.0, 5, SizePolicy())
    assert grown is not None and grown.kind is SizeAnomalyKind.TOO_LARGE and grown.ratio is None
    assert "infinitely larger" in grown.message


def test_size_message() -> None:
    assessed = assess_size(2_048, 102_400.0, 14, SizePolicy())
    assert assessed is not None
    assert assessed.message == (
        "size anomaly (too small): 2,048 bytes is 0.02× the median 102,400 bytes of the last 14 "
        "successful cycles (flagged below 0.5×)"
    )
    message = annotate_message("SUCCESS", "backup verified: x", silenced=None, size=assessed)
    assert message == f"backup verified: x; {assessed.message}"
    assert size_part(message) == assessed.message
    assert annotate_message("FAILED", "boom", silenced=None, size=assessed) == "boom"


def test_trailing_medians_take_each_jobs_own_depth() -> None:
    rows = [(1, T - i * DAY, size, i) for i, size in enumerate([10, 20, 30, 1000, 1000], start=1)]
    rows += [(2, T - DAY, 7, 1)]
    assert trailing_medians(rows, {1: 3, 2: 14}) == {1: (20.0, 3), 2: (7.0, 1)}
    assert trailing_medians(rows, {1: 5, 2: 14})[1] == (30.0, 5)
    assert trailing_medians([], {1: 3}) == {}


# ---------------------------------------------------------------- silences


def window(
    days: set[int], start: str, end: str, tz: str = "UTC", name: str | None = None
) -> MaintenanceWindow:
    def minutes(text: str) -> int:
        return int(text[:2]) * 60 + int(text[3:])

    return MaintenanceWindow(frozenset(days), minutes(start), minutes(end), ZoneInfo(tz), tz, name)


SUNDAY = datetime(2025, 11, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (SUNDAY, True),
        (SUNDAY + timedelta(hours=5, minutes=59), True),
        (SUNDAY + timedelta(hours=6), False),  # the end is excluded
        (SUNDAY - timedelta(minutes=1), False),  # Saturday 23:59
        (SUNDAY + timedelta(days=7, hours=3), True),  # every week
        (SUNDAY + timedelta(days=1, hours=3), False),
    ],
)
def test_weekly_window(at: datetime, inside: bool) -> None:
    assert window({6}, "00:00", "06:00").covers(at) is inside


def test_window_across_midnight_in_the_agents_zone() -> None:
    # Saturday 23:30 → Sunday 02:00 in Douala (UTC+1): Saturday 22:30 → Sunday 01:00 UTC.
    w = window({5}, "23:30", "02:00", "Africa/Douala")
    assert w.covers(SUNDAY - timedelta(minutes=90))
    assert w.covers(SUNDAY + timedelta(minutes=59))
    assert not w.covers(SUNDAY + timedelta(hours=1))
    assert not w.covers(SUNDAY - timedelta(minutes=91))
    assert not w.covers(SUNDAY + timedelta(days=1))  # Sunday night is not in it (days: Saturday)


def test_window_to_the_end_of_the_day_and_descriptions() -> None:
    w = window({0, 1, 2, 3, 4}, "22:00", "24:00")
    assert w.covers(datetime(2025, 11, 24, 23, 59, 59, tzinfo=UTC))  # a Monday
    assert not w.covers(datetime(2025, 11, 25, 0, 0, tzinfo=UTC))
    assert w.describe() == "Mon,Tue,Wed,Thu,Fri 22:00–24:00 UTC"
    assert (
        window(set(range(7)), "01:00", "02:00", name="nightly").describe()
        == "'nightly' (daily 01:00–02:00 UTC)"
    )


def test_silence_reasons() -> None:
    silence = Silence(until=T, windows=(window({6}, "00:00", "06:00", name="weekly"),))
    assert silence.reason(T - timedelta(seconds=1)) == "silenced until 2025-11-21 13:00 UTC"
    assert silence.reason(T) is None
    assert silence.reason(SUNDAY + timedelta(hours=1)) == "maintenance window 'weekly' (Sun 00:00–06:00 UTC)"
    assert Silence().reason(T) is None
    missing = annotate_message("MISSING", "no report", silenced="maintenance window 'weekly'", size=None)
    assert missing == "no report (during maintenance window 'weekly': notifications held)"
    assert annotate_message("FAILED", "boom", silenced="maintenance window 'weekly'", size=None) == "boom"


@given(st.datetimes(timezones=st.just(UTC)), st.integers(0, 1439), st.integers(1, 1440))
def test_a_window_covers_exactly_its_minutes(at: datetime, start: int, end: int) -> None:
    if start == end % 1440:
        return
    w = MaintenanceWindow(frozenset(range(7)), start, end)  # every day: only the clock matters
    minute = at.hour * 60 + at.minute
    expected = start <= minute < end if start < end else (minute >= start or minute < end)
    assert w.covers(at) is expected


# ---------------------------------------------------------------- messages


def line(
    event: AlertEvent, database: str = "compta_db", reason: str = "why", link: str | None = None
) -> AlertLine:
    return AlertLine(event, "SIRPACAM_DOUALA_NEWBELL", database, T, reason, link)


def test_compose_groups_and_orders_by_severity() -> None:
    notice = compose(
        [
            line(AlertEvent.RECOVERED, "a_db"),
            line(AlertEvent.SIZE_ANOMALY, "b_db"),
            line(AlertEvent.FAILED, "c_db", link="http://ui/assets/x"),
            line(AlertEvent.MISSING, "d_db", reason="no report\nat all"),
            line(AlertEvent.HASH_MISMATCH, "e_db"),
        ]
    )
    assert notice.title == "[backup_pipeline] 2 problems, 1 size anomaly, 1 content change, 1 recovered"
    assert notice.level is Level.FAILURE
    headers = [block.splitlines()[0] for block in notice.body.split("\n\n")]
    assert [h.split(" — ")[0] for h in headers] == [
        "MISSING",
        "FAILED",
        "SIZE_ANOMALY",
        "HASH_MISMATCH",
        "RECOVERED",
    ]
    assert headers[0] == "MISSING — SIRPACAM_DOUALA_NEWBELL / d_db — cycle 2025-11-21 13:00 UTC"
    assert "  no report at all" in notice.body  # one line per reason
    assert "  http://ui/assets/x" in notice.body


def test_compose_levels_and_cap() -> None:
    assert compose([line(AlertEvent.RECOVERED)]).level is Level.SUCCESS
    assert compose([line(AlertEvent.RECOVERED), line(AlertEvent.HASH_MISMATCH)]).level is Level.INFO
    assert compose([line(AlertEvent.SIZE_ANOMALY)]).level is Level.WARNING
    many = compose(
        [line(AlertEvent.FAILED, f"db_{i:03d}", reason="x" * 2000) for i in range(60)], max_lines=50
    )
    assert many.title == "[backup_pipeline] 60 problems"
    assert many.body.count("FAILED — ") == 50
    assert many.body.endswith(
        "… and 10 more alert(s): see `backup-pipeline notify alerts` or the Dagster UI."
    )
    assert max(len(row) for row in many.body.splitlines()) < 600


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("json://user:pw@hooks.example.com:8443/path/t0ken?x=1", "json://hooks.example.com:8443"),
        # a written password and another @: the text cannot say which @ ends the password
        ("mailtos://user:pw@smtp.example.com?to=ops@example.com", "mailtos://…"),
        ("mailtos://user:${SMTP_PASSWORD}@smtp.example.com?to=ops@example.com", "mailtos://smtp.example.com"),
        ("mailtos://user:pw@smtp.example.com?to=ops", "mailtos://smtp.example.com"),
        ("slack://TokenA/TokenB/TokenC/#chan", "slack://…"),  # the host is a token
        ("tgram://123456:ABCDEF/987", "tgram://…"),
        ("${TEAM_HOOK}", "${TEAM_HOOK}"),
        ("json://${HOOK_HOST}/x", "json://${HOOK_HOST}"),
        ("not a url", "<not a URL>"),
    ],
)
def test_target_labels_never_show_secrets(url: str, label: str) -> None:
    target = Target(url)
    assert target.label == label
    assert str(target) == label and url not in repr(target)
    assert len(target.key) == 64 and target.id == target.key[:8]


def test_split_urls_keeps_commas_inside_a_query() -> None:
    text = "json://a/x, mailto://u:p@h?to=a@x.com,b@x.com  json://b/y"
    assert split_urls(text) == ["json://a/x", "mailto://u:p@h?to=a@x.com,b@x.com", "json://b/y"]
    assert split_urls("") == []


def test_problems_of_targets() -> None:
    assert problem("json://hooks.example.com/x") is None
    assert problem("${HOOK}") is None
    assert problem("") == "is empty"
    assert problem("slakc://x/y") == "uses the scheme 'slakc', which Apprise does not know"
    assert problem("json://") == "is not a valid 'json' URL for Apprise"
    assert problem("hooks.example.com") == "is not an Apprise URL (expected scheme://…)"
    assert problem("json://${HOOK") == "has a malformed ${NAME} reference"
    assert problem("slakc://${TOKEN}/x") == "uses the scheme 'slakc', which Apprise does not know"
    assert problem("slack://${SLACK_TOKENS}") is None


def test_resolving_environment_references(monkeypatch: pytest.MonkeyPatch) -> None:
    target = Target("json://bot:${HOOK_PASSWORD}@hooks.example.com/x")
    monkeypatch.setenv("HOOK_PASSWORD", "hunter2")
    assert target.resolve() == "json://bot:hunter2@hooks.example.com/x"
    monkeypatch.delenv("HOOK_PASSWORD")
    with pytest.raises(ValueError, match="environment variable HOOK_PASSWORD is not set"):
        target.resolve()


def test_scrub_removes_every_secret_part() -> None:
    url = "slack://Tok3nA/Tok3nB/Tok3nC/%23ops?footer=no&token=qu3ry-s3cret"
    text = (
        "HTTPSConnectionPool(host='hooks.slack.com'): /services/Tok3nA/Tok3nB/Tok3nC failed; "
        "token qu3ry-s3cret; url slack://Tok3nA/Tok3nB/Tok3nC/%23ops?footer=no&token=qu3ry-s3cret"
    )
    cleaned = scrub(text, url)
    for secret in ("Tok3nA", "Tok3nB", "Tok3nC", "qu3ry-s3cret"):
        assert secret not in cleaned
    assert "hooks.slack.com" in cleaned
    assert "pa55w0rd" not in scrub(
        "auth pa55w0rd failed for smtp.example.com", "mailto://me:pa55w0rd@smtp.example.com"
    )
    assert "v4lue" not in scrub("got v4lue back", "json://h/x", extra=["v4lue"])


def test_escape_markdown_makes_agent_texts_inert() -> None:
    hostile = "<script>x</script>\n[click](http://evil.example) **now** a|b _c_ `d` \\"
    assert escape_markdown(hostile) == (
        "\\<script\\>x\\</script\\> \\[click\\]\\(http://evil.example\\) \\*\\*now\\*\\* "
        "a\\|b \\_c\\_ \\`d\\` \\\\"
    )
    assert escape_markdown("compta_db 13:00Z FAILED") == "compta\\_db 13:00Z FAILED"


def test_retry_delay_doubles_from_the_base_up_to_an_hour() -> None:
    base = timedelta(seconds=60)
    delays = [retry_delay(n, base).total_seconds() for n in range(0, 10)]
    assert delays == [0, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert retry_delay(10_000, base) == timedelta(hours=1)  # no overflow for a long outage
    assert retry_delay(3, timedelta(0)) == timedelta(0)  # 0: retry at every scan


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), min_size=0, max_size=30),
    st.integers(min_value=1, max_value=20),
)
def test_trailing_medians_agree_with_pandas(sizes: list[int], depth: int) -> None:
    """The plain-Python medians give what the data-frame version they replaced gave."""
    rows = [
        (7, datetime(2025, 1, 1, tzinfo=UTC) - timedelta(days=i), size, i + 1) for i, size in enumerate(sizes)
    ]
    kept = pd.Series([size for _, _, size, rank in rows if rank <= depth], dtype="float64")
    expected = {7: (float(kept.median()), len(kept))} if len(kept) else {}
    assert trailing_medians(rows, {7: depth}) == expected
