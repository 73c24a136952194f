"""Issue 20: the columns that hold names are as wide as what the boundary checks admit.

A name an agent chose reaches PostgreSQL only through a check (agent folders, report file names,
staged file names, the jobs file); a column narrower than what its check lets through turns one
hostile name into a database error that fails a whole batch or scan. Each pair is checked here, and
the checks themselves are tried with the longest names they admit (and one more).
"""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.adapters.deposit import ARCHIVE_NAME_BYTES, _free_names, archive_name, shown_name
from backup_pipeline.core.reports import (
    MAX_AGENT_ID,
    MAX_FILE_NAME_BYTES,
    MAX_RECORDED_NAME,
    agent_id_problem,
    staged_base_name,
)
from backup_pipeline.storage.orm import Base

# column → the most its check admits
NAME_COLUMNS = {
    ("expected_jobs", "agent_id_responsible"): MAX_AGENT_ID,
    ("expected_jobs", "company_name"): MAX_AGENT_ID,
    ("expected_jobs", "city"): MAX_AGENT_ID,
    ("expected_jobs", "neighborhood"): MAX_AGENT_ID,
    ("expected_jobs", "staged_file_name"): MAX_FILE_NAME_BYTES,
    ("status_reports", "agent_id"): MAX_AGENT_ID,
    ("status_reports", "file_name"): MAX_RECORDED_NAME,
    ("cycle_watch", "agent_id"): MAX_AGENT_ID,
    ("backup_entries", "staged_file_name"): MAX_FILE_NAME_BYTES,
    # accepted reports only: `<timestamp>_<agent id>.json`, the longest timestamp form 19 characters
    ("backup_entries", "report_file"): 19 + 1 + MAX_AGENT_ID + len(".json"),
}


def test_every_name_column_holds_what_its_check_admits() -> None:
    for (table, column), admitted in NAME_COLUMNS.items():
        width = Base.metadata.tables[table].columns[column].type.length
        assert width is None or width >= admitted, (table, column, width, admitted)


def test_agent_ids_are_bounded_where_they_are_checked() -> None:
    assert agent_id_problem("A" * (MAX_AGENT_ID - 4) + "_B_C") is None
    assert "above the 128" in (agent_id_problem("A" * 150 + "_B_C") or "")
    assert agent_id_problem("ONLY_TWO") == "name is not ENTREPRISE_VILLE_QUARTIER"


def test_staged_names_longer_than_a_file_name_are_never_used() -> None:
    assert staged_base_name("a" * MAX_FILE_NAME_BYTES) == "a" * MAX_FILE_NAME_BYTES
    assert staged_base_name("a" * 300) is None
    assert staged_base_name("é" * 128) is None  # 256 bytes
    assert staged_base_name("bad\n" + "b" * 260) is None


raw_names = st.binary(min_size=1, max_size=MAX_FILE_NAME_BYTES - 5).filter(
    lambda b: b"/" not in b and b"\0" not in b
)


@given(raw=raw_names)
def test_any_file_name_is_recorded_and_archived_within_bounds(raw: bytes) -> None:
    name = os.fsdecode(raw + b".json")
    recorded = shown_name(name)
    assert len(recorded) <= MAX_RECORDED_NAME
    recorded.encode("utf-8")
    archived = archive_name(recorded)
    assert len(archived.encode()) <= ARCHIVE_NAME_BYTES
    assert archive_name(recorded) == archived, "the same name archives under the same name"
    first_clash = next(n for i, n in enumerate(_free_names(recorded)) if i == 1)
    assert first_clash.startswith(archived[: -len(".json")]) and first_clash.endswith(".dup1.json")


def test_a_clash_suffix_still_fits_a_file_name() -> None:
    assert ARCHIVE_NAME_BYTES + len(".dup999999999") <= MAX_FILE_NAME_BYTES


def test_names_shortened_for_the_archive_stay_apart() -> None:
    one, two = "\\xff" * 100 + "a.json", "\\xff" * 100 + "b.json"
    assert archive_name(one) != archive_name(two)
    assert archive_name(one).endswith(".json")
