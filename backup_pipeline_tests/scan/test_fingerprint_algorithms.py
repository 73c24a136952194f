"""Content policies across the change of fingerprint algorithm (revision 0009): history measured with
SHA-256 is named so by the migration, the first cycle measured afterwards is fingerprinted in both
algorithms and compared through the old one, later cycles in BLAKE3 alone; two fingerprints that
share no algorithm are never compared."""

from __future__ import annotations

import hashlib

import blake3
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from backup_pipeline.storage.database import MIGRATIONS_DIR, migrate
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAYS = ["2025-11-19", "2025-11-20", "2025-11-21"]
SAME = b"-- the same dump\n" * 500


@pytest.fixture
def agent(workspace) -> Agent:
    return Agent(workspace.root, AGENT)


def deliver(workspace, agent: Agent, day: str, content: bytes) -> None:
    packed = gz(content, mtime=int(utc(f"{day}T13:05:00Z").timestamp()))  # header times always differ
    name = f"compta_db_{day}.sql.gz"
    agent.stage(name, packed)
    agent.report(utc(f"{day}T13:05:00Z"), {"compta_db": agent.database_section(name, packed)})
    workspace.cli("scan", "--at", f"{day}T14:30:00Z", "--partition", day)


def fingerprints_of(workspace, day: str) -> tuple[str, str, str, str | None]:
    engine = sa.create_engine(workspace.database_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT status, message, server_content_fingerprint, previous_successful_fingerprint_used "
                "FROM backup_entries WHERE cycle_expected_at = :cycle"
            ),
            {"cycle": utc(f"{day}T13:00:00Z")},
        ).one()
    engine.dispose()
    return tuple(row)  # type: ignore[return-value]


def as_before_0009(workspace, content: bytes) -> None:
    """Back to revision 0006 with the first day's fingerprint as it was stored then (an unnamed
    SHA-256 of the content), and forward again: the migration names it."""
    engine = sa.create_engine(workspace.database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
        conn.execute(
            sa.text("UPDATE backup_entries SET server_content_fingerprint = :legacy"),
            {"legacy": hashlib.sha256(content).hexdigest()},
        )
    migrate(engine)
    engine.dispose()


def blake(content: bytes) -> str:
    return f"blake3:{blake3.blake3(content).hexdigest()}"


def sha(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


@pytest.mark.parametrize(
    ("policy", "second", "expected"),
    [
        ("changed", SAME, "SUCCESS"),  # the same content in a gzip file with another header time
        ("changed", b"-- another dump\n" * 500, "HASH_MISMATCH"),
        ("unchanged", SAME, "HASH_MISMATCH"),
    ],
)
def test_the_first_cycle_after_the_change_is_compared_through_the_old_algorithm(
    workspace, agent, policy: str, second: bytes, expected: str
) -> None:
    workspace.write_jobs(
        [
            {
                "agent_id": AGENT,
                "database_name": "compta_db",
                "expected_hour_utc": 13,
                "expected_minute_utc": 0,
                "content_change": policy,
            }
        ]
    )
    deliver(workspace, agent, DAYS[0], SAME)
    as_before_0009(workspace, SAME)
    assert fingerprints_of(workspace, DAYS[0])[2] == sha(SAME)

    deliver(workspace, agent, DAYS[1], second)
    status, message, stored, used = fingerprints_of(workspace, DAYS[1])
    assert status == expected, message
    assert stored == f"{blake(second)} {sha(second)}"  # both: this cycle and the next compare
    assert used == sha(SAME)

    # A re-evaluation with the stored measurement decides the same.
    workspace.cli("scan", "--at", f"{DAYS[1]}T15:00:00Z", "--partition", DAYS[1])
    assert fingerprints_of(workspace, DAYS[1])[:3] == (status, message, stored)

    deliver(workspace, agent, DAYS[2], second)  # the chain carries on in BLAKE3 alone
    status, message, stored, used = fingerprints_of(workspace, DAYS[2])
    assert stored == blake(second)
    assert used == f"{blake(second)} {sha(second)}"
    assert status == ("HASH_MISMATCH" if policy == "unchanged" else "SUCCESS"), message


def test_fingerprints_sharing_no_algorithm_are_not_compared(workspace, agent, monkeypatch) -> None:
    """Archive checks turned off after a success: the file's own SHA-256 says nothing about the
    content's BLAKE3, so `changed` does not cry HASH_MISMATCH, and says why."""
    workspace.write_jobs(
        [{"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    deliver(workspace, agent, DAYS[0], SAME)
    monkeypatch.setenv("BACKUP_PIPELINE_VERIFY_ARCHIVES", "false")
    deliver(workspace, agent, DAYS[1], b"-- another dump\n" * 500)
    status, message, stored, used = fingerprints_of(workspace, DAYS[1])
    assert status == "SUCCESS"
    assert "content not compared with the last successful cycle 2025-11-19T13:00Z" in message
    assert "fingerprinted with blake3, this cycle with sha256-file" in message
    assert stored.startswith("sha256-file:") and used == blake(SAME)


def test_revision_0009_names_legacy_fingerprints_and_goes_back(workspace, agent, monkeypatch) -> None:
    """A fingerprint equal to the gzip file's own hash (checks were off) becomes `sha256-file:`, what
    an entry was compared with takes its previous success's name, and the downgrade gives bare
    SHA-256 digests back (BLAKE3 tokens have no such meaning: dropped)."""
    workspace.write_jobs(
        [{"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    monkeypatch.setenv("BACKUP_PIPELINE_VERIFY_ARCHIVES", "false")
    deliver(workspace, agent, DAYS[0], SAME)
    monkeypatch.delenv("BACKUP_PIPELINE_VERIFY_ARCHIVES")
    deliver(workspace, agent, DAYS[1], SAME)
    first = fingerprints_of(workspace, DAYS[0])[2]
    status, message, second, used = fingerprints_of(workspace, DAYS[1])
    assert first.startswith("sha256-file:") and used == first
    # compared with the first day through the files' own hashes, whose gzip header times differ
    assert status == "HASH_MISMATCH", message
    assert second.startswith(f"{blake(SAME)} sha256-file:")
    second_file = second.split()[1]

    engine = sa.create_engine(workspace.database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    assert fingerprints_of(workspace, DAYS[0])[2] == first.split(":")[1]
    assert fingerprints_of(workspace, DAYS[1])[2:] == (second_file.split(":")[1], first.split(":")[1])
    migrate(engine)
    with engine.connect() as conn:
        query = "SELECT previous_successful_content_fingerprint FROM expected_jobs"
        job_fingerprint = conn.execute(sa.text(query)).scalar()
    engine.dispose()
    assert fingerprints_of(workspace, DAYS[0])[2] == first
    assert fingerprints_of(workspace, DAYS[1])[2:] == (second_file, first)
    assert job_fingerprint == second_file
