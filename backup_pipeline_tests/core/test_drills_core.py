"""The pure part of restore drills: which are due and in what order, how long they take, the run's
budget and the batches by estimated time, the comparison with the previous drill, and what a dump is
from its first bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.core.drills import (
    DRILL_FIXED_SECONDS,
    ChosenDrill,
    DrillCandidate,
    DrillCost,
    DrillPolicy,
    Figures,
    batch_by_time,
    compare,
    estimate_seconds,
    is_due,
    measured_cost,
    plan_due,
)
from backup_pipeline.core.dump_formats import Compression, DumpFormat, compression_of, detect

NOW = datetime(2025, 11, 21, 4, 0, tzinfo=UTC)
MIB = 1 << 20
COST = DrillCost(fixed_seconds=1.0, bytes_per_second=100 * MIB)


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
    planned = plan_due(backups, NOW, 3600, COST)
    assert [c.job_id for c in planned] == [2, 3, 1]  # 4 is not due
    first_estimate = estimate_seconds(backups[1], COST)
    tight = plan_due(backups, NOW, first_estimate + 2.5, COST)
    assert [c.job_id for c in tight] == [2, 3]
    assert [c.job_id for c in plan_due(backups, NOW, 0.001, COST)] == [2]  # one always runs


def test_a_drill_is_estimated_at_its_fixed_cost_plus_its_bytes_or_at_its_last_duration() -> None:
    assert estimate_seconds(candidate(1, None, size=300 * MIB), COST) == 4.0
    assert estimate_seconds(candidate(1, None, size=0), COST) == 1.0  # an empty dump still costs a drill
    assert estimate_seconds(candidate(1, 8, size=300 * MIB, took=42.0), COST) == 42.0
    assert estimate_seconds(candidate(1, 8, took=0.1), COST) == 1.0  # never below the fixed cost


def test_thousands_of_tiny_dumps_are_spread_over_steps_by_their_fixed_cost() -> None:
    """The defect: by bytes, 3,000 dumps of 10 KiB were one step of 3,000 drills (about 50 minutes)."""
    tiny = [ChosenDrill(i, 10 * 1024) for i in range(3000)]
    batches = batch_by_time(tiny, 600, COST)
    assert [len(b.entry_ids) for b in batches] == [599] * 5 + [5]  # 1.0001 s each
    assert all(b.estimated_seconds <= 600 for b in batches)
    assert [i for b in batches for i in b.entry_ids] == list(range(3000))  # in order, each once


def test_batches_group_consecutive_drills_by_estimated_time() -> None:
    sizes = [40 * MIB, 50 * MIB, 30 * MIB, 2000 * MIB, 10 * MIB]  # 1.4 s, 1.5 s, 1.3 s, 21 s, 1.1 s
    planned = [candidate(i, None, size=s) for i, s in enumerate(sizes)]
    batches = batch_by_time(planned, 3.0, COST)
    assert [b.entry_ids for b in batches] == [[100, 101], [102], [103], [104]]  # 21 s: a step of its own
    assert [b.staged_bytes for b in batches] == [90 * MIB, 30 * MIB, 2000 * MIB, 10 * MIB]
    assert [round(b.estimated_seconds, 2) for b in batches] == [2.9, 1.3, 21.0, 1.1]


@given(
    sizes=st.lists(st.integers(0, 4000 * MIB), min_size=1, max_size=60),
    took=st.lists(st.none() | st.floats(0, 100), min_size=60, max_size=60),
    budget=st.floats(1, 300),
    step=st.floats(0.5, 100),
)
def test_the_budget_and_the_batches_count_the_same_estimates(
    sizes: list[int], took: list[float | None], budget: float, step: float
) -> None:
    backups = [
        candidate(i, None if t is None else 8, size=s, took=t)
        for i, (s, t) in enumerate(zip(sizes, took[: len(sizes)], strict=True))
    ]
    planned = plan_due(backups, NOW, budget, COST)
    batches = batch_by_time(planned, step, COST)
    total = sum(b.estimated_seconds for b in batches)
    assert abs(total - sum(estimate_seconds(c, COST) for c in planned)) < 1e-6
    assert len(planned) == 1 or total <= budget + 1e-6
    assert all(len(b.entry_ids) == 1 or b.estimated_seconds <= step for b in batches)


def test_the_restore_rate_is_measured_on_drills_large_enough_to_tell() -> None:
    assert measured_cost([]) == DrillCost()  # nothing measured yet: the assumed rate
    few = [(100 * MIB, 11.0), (200 * MIB, 21.0)]
    assert measured_cost(few) == DrillCost()
    measured = measured_cost([*few, (300 * MIB, 31.0), (1024, 0.9), (2048, 1.2)])
    assert measured.fixed_seconds == DRILL_FIXED_SECONDS
    assert measured.bytes_per_second == 600 * MIB / 60.0  # 10 MiB/s: the tiny drills tell nothing
    assert measured.of_bytes(50 * MIB) == 6.0


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
        planned = plan_due(backups, now, budget, COST)
        assert len(planned) == 1 or sum(estimate_seconds(c, COST) for c in planned) <= budget
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
