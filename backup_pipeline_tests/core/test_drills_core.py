"""The pure part of restore drills: which are due and in what order, the run's budget, batches by
bytes, the comparison with the previous drill, and what a dump is from its first bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.core.drills import (
    DrillCandidate,
    DrillPolicy,
    Figures,
    batch_by_bytes,
    compare,
    estimate_seconds,
    is_due,
    plan_due,
)
from backup_pipeline.core.dump_formats import Compression, DumpFormat, compression_of, detect

NOW = datetime(2025, 11, 21, 4, 0, tzinfo=UTC)


def candidate(
    job: int, last_days_ago: float | None, *, every: int = 7, size: int = 0, took: float | None = None
):  # type: ignore[no-untyped-def]
    last = NOW - timedelta(days=last_days_ago) if last_days_ago is not None else None
    return DrillCandidate(
        job, 100 + job, NOW - timedelta(hours=15), size, DrillPolicy(every_days=every), last, took
    )


def test_due_counts_calendar_days_and_off_is_never_due() -> None:
    assert is_due(candidate(1, None), NOW)
    assert is_due(candidate(1, 7), NOW) and not is_due(candidate(1, 6), NOW)
    late_evening = DrillCandidate(
        1, 1, NOW, 0, DrillPolicy(every_days=1), NOW.replace(hour=23) - timedelta(days=1)
    )
    assert is_due(late_evening, NOW)  # yesterday 23:00 is a day ago, whatever the hour
    off = DrillCandidate(1, 1, NOW, 0, DrillPolicy(enabled=False), None)
    assert not is_due(off, NOW)


def test_the_plan_takes_never_drilled_then_oldest_first_within_the_budget() -> None:
    backups = [
        candidate(1, 8, took=2.0),
        candidate(2, None, size=0),
        candidate(3, 30, took=2.0),
        candidate(4, 3),
    ]
    planned = plan_due(backups, NOW, budget_seconds=3600)
    assert [c.job_id for c in planned] == [2, 3, 1]  # 4 is not due
    first_estimate = estimate_seconds(backups[1])
    tight = plan_due(backups, NOW, budget_seconds=first_estimate + 2.5)
    assert [c.job_id for c in tight] == [2, 3]
    assert [c.job_id for c in plan_due(backups, NOW, budget_seconds=0.001)] == [2]  # one always runs


def test_batches_group_consecutive_drills_by_staged_bytes() -> None:
    planned = [candidate(i, None, size=s) for i, s in enumerate([400, 500, 300, 2000, 100])]
    batches = batch_by_bytes(planned, max_batch_bytes=1000)
    assert [b.entry_ids for b in batches] == [[100, 101], [102], [103], [104]]
    assert [b.staged_bytes for b in batches] == [900, 300, 2000, 100]


@settings(max_examples=100, deadline=None)
@given(
    periods=st.lists(st.integers(1, 10), min_size=1, max_size=8),
    took=st.floats(0.5, 20),
    budget=st.floats(10, 200),
)
def test_a_simulated_month_drills_every_backup_within_its_period_when_the_budget_allows(
    periods: list[int], took: float, budget: float
) -> None:
    """With room for every due drill, each backup is drilled exactly every `every_days`; a run never
    plans more than its budget (beyond the one drill it always allows)."""
    last: dict[int, datetime | None] = dict.fromkeys(range(len(periods)))
    drilled: dict[int, list[int]] = {job: [] for job in last}
    capacity = budget / took
    for day in range(30):
        now = NOW + timedelta(days=day)
        backups = [
            DrillCandidate(job, day * 100 + job, now, 0, DrillPolicy(every_days=every), last[job], took)
            for job, every in enumerate(periods)
        ]
        planned = plan_due(backups, now, budget)
        assert len(planned) == 1 or sum(estimate_seconds(c) for c in planned) <= budget
        for c in planned:
            last[c.job_id] = now
            drilled[c.job_id].append(day)
    if capacity >= len(periods):
        for job, every in enumerate(periods):
            assert drilled[job] == list(range(0, 30, every))


def test_the_comparison_flags_drops_and_foreign_tables() -> None:
    before = Figures(3, 1000, 10_000, frozenset({"a", "b", "c"}))
    at = datetime(2025, 11, 20, 13, tzinfo=UTC)
    assert compare(Figures(3, 900, 9_000, before.table_names), before, at, 0.5).shrank == ()
    dropped = compare(Figures(2, 400, 9_000, frozenset({"a", "b"})), before, at, 0.5)
    assert dropped.shrank == ("tables 3 → 2", "rows 1,000 → 400 (0.40×, flagged below 0.5×)")
    assert "restore shrank since the drill of cycle 2025-11-20T13:00Z" in dropped.message
    foreign = compare(Figures(3, 1000, 10_000, frozenset({"x"})), before, at, 0.5)
    assert foreign.foreign and "none of the 3 table(s)" in foreign.message
    assert compare(before, None, None, 0.5) is None


def test_formats_are_told_from_content_not_names() -> None:
    assert compression_of(b"\x1f\x8b\x08") is Compression.GZIP
    assert compression_of(b"\x28\xb5\x2f\xfd") is Compression.ZSTD
    assert compression_of(b"BZh91AY") == "bzip2-compressed data"
    assert compression_of(b"-- x") is Compression.NONE
    plain = detect(
        b"--\n-- PostgreSQL database dump\n--\n\n-- Dumped by pg_dump version 17.6\n", Compression.ZSTD
    )
    assert (plain.format, plain.pg_dump_version, plain.kind) == (
        DumpFormat.PLAIN,
        "17.6",
        "PostgreSQL plain SQL dump (pg_dump 17.6), zstd",
    )
    assert detect(b"PGDMP\x01\x10\x00", Compression.NONE).format is DumpFormat.CUSTOM
    mysql = detect(
        b"-- MySQL dump 10.13  Distrib 8.0.36\n--\n-- Host: localhost    Database: shop\n"
        b"-- ---\n-- Server version\t8.0.36\n",
        Compression.GZIP,
    )
    assert (mysql.format, mysql.kind, mysql.database) == (
        DumpFormat.MARIADB,
        "MySQL dump (mysqldump 10.13, server 8.0.36), gzip",
        "shop",
    )
    assert mysql.from_mysql and mysql.engine == "mariadb"
    mariadb = detect(
        b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n"
        b"--\n-- Host: localhost    Database: shop\n-- ---\n-- Server version\t10.11.19-MariaDB-0+deb12u1\n",
        Compression.NONE,
    )
    assert mariadb.kind == "MariaDB dump (mariadb-dump 10.19, server 10.11.19-MariaDB-0+deb12u1)"
    assert not mariadb.from_mysql
    whole = detect(b"-- MySQL dump 10.13\n--\n-- Host: localhost    Database: \n", Compression.NONE)
    assert not whole.drillable and "every database" in whole.kind
    assert not detect(b"--\n-- PostgreSQL database cluster dump\n", Compression.NONE).drillable
    assert detect(b"CREATE TABLE t (a int);\n", Compression.NONE).kind.startswith(
        "SQL text without pg_dump's header"
    )
    assert detect(b"", Compression.GZIP).kind == "an empty file, gzip"
    assert detect(b"TAPE\x00\x01", Compression.NONE).kind == "a Microsoft SQL Server backup (MTF)"
    assert detect(b"SQLite format 3\x00", Compression.NONE).kind == "an SQLite database file"
