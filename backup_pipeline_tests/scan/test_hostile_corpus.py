"""Issue 5: a corpus of hostile and broken reports, scanned for real, each with its exact outcome.

`fixtures/bad_reports/manifest.yaml` lists every committed file with what it must become; the test adds
the inputs too big or too odd to commit (a 50 MiB report, 10,000 levels of nesting, file names that
are not UTF-8 or hold a newline). One real `backup-pipeline scan`, in its own process, then:
each file has its expected rejection reason or per-database outcome, every file is recorded exactly
once and archived, and nothing the scan printed is a traceback.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_pipeline.adapters.deposit import read_report, synthetic_hash
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import utc
from backup_pipeline_tests.support.paths import FIXTURES
from backup_pipeline_tests.support.scan_harness import ScanEnv, ok, run_cli

CORPUS = FIXTURES / "bad_reports"
AGENT = "SIRPACAM_DOUALA_NEWBELL"
NEIGHBOUR = "SIRPACAM_DOUALA_AKWA"
OK_DUMP = b"corpus staged dump\n"
AT = "2025-11-21T14:30:00Z"
DAY = "2025-11-21"
MIB = 1 << 20


def manifest() -> list[dict[str, Any]]:
    return yaml.safe_load((CORPUS / "manifest.yaml").read_text(encoding="utf-8"))["reports"]


def deposit_name(index: int, entry: dict[str, Any]) -> str:
    if "deposit_as" in entry:
        return entry["deposit_as"]
    return f"20251121_{12 + index // 60:02d}{index % 60:02d}00_{AGENT}.json"


def generated(log: Path) -> list[tuple[bytes, str]]:
    """Inputs written at test time: (file name as bytes, expected rejection reason)."""
    huge = log / f"20251121_110000_{AGENT}.json"
    with open(huge, "wb") as handle:  # 50 MiB, sparse: a report far above the 16 MiB cap
        handle.truncate(50 * MIB)
    deep_arrays = b'{"agent_id": "%s", "databases": ' % AGENT.encode() + b"[" * 10_000 + b"]" * 10_000 + b"}"
    (log / f"20251121_110001_{AGENT}.json").write_bytes(deep_arrays)
    deep_objects = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    (log / f"20251121_110002_{AGENT}.json").write_bytes(deep_objects)
    not_utf8 = os.fsencode(log) + b"/20251121_110003_\xff\xfe.json"
    with open(not_utf8, "wb") as handle:
        handle.write(b"{}")
    newline = log / f"20251121_110004_{AGENT}\n.json"
    newline.write_text("{}")
    return [
        (huge.name.encode(), f"report is {50 * MIB} bytes, above the 16777216-byte limit (not read)"),
        (f"20251121_110001_{AGENT}.json".encode(), "invalid JSON: nested too deeply"),
        (f"20251121_110002_{AGENT}.json".encode(), "invalid JSON: nested too deeply"),
        (b"20251121_110003_\xff\xfe.json", "names agent '\\\\xff\\\\xfe', not its folder"),
        (newline.name.encode(), "does not follow <timestamp>_<AGENT_ID>.json"),
    ]


def shown(raw: bytes) -> str:
    """How a file name is recorded: as itself when it is UTF-8, else with its bad bytes escaped."""
    return raw.decode("utf-8", "backslashreplace")


@pytest.mark.slow
def test_every_bad_report_gets_its_exact_outcome_once_and_is_archived(workspace: Workspace) -> None:
    entries = manifest()
    assert len(entries) >= 40
    databases = sorted({e["database"] for e in entries if "database" in e})
    workspace.write_jobs(
        [
            {"agent_id": AGENT, "database_name": d, "expected_hour_utc": 13, "expected_minute_utc": 0}
            for d in databases
        ]
    )
    agent_dir = workspace.root / AGENT
    (agent_dir / "database").mkdir(parents=True)
    (agent_dir / "database" / "corpus_ok.dump").write_bytes(OK_DUMP)
    log = agent_dir / "log"
    log.mkdir()
    neighbour = workspace.root / NEIGHBOUR / "database"  # what the traversal names point at
    neighbour.mkdir(parents=True)
    (neighbour / "corpus_neighbour.dump").write_bytes(OK_DUMP)
    deposited: dict[bytes, bytes] = {}  # file name → content
    for index, entry in enumerate(entries):
        data = (CORPUS / entry["file"]).read_bytes()
        target = log / deposit_name(index, entry)
        assert not target.exists(), f"two corpus entries deposited as {target.name}"
        target.write_bytes(data)
        deposited[target.name.encode()] = data
    extra = generated(log)
    old = utc("2025-11-21T13:10:00Z").timestamp()
    for name in os.listdir(os.fsencode(log)):
        os.utime(os.fsencode(log) + b"/" + name, (old, old))

    env = ScanEnv(workspace.root, workspace.jobs_file, workspace.home, workspace.database_url)
    result = ok(run_cli(env, "-v", "scan", "--at", AT, "--partition", DAY, timeout=300))
    assert "Traceback" not in result.stdout + result.stderr

    records = workspace.json("reports")
    by_name = {r["file_name"]: r for r in records}
    assert len(records) == len(entries) + len(extra), "every file is recorded, exactly once"
    assert len(by_name) == len(records)
    for index, entry in enumerate(entries):
        record = by_name[deposit_name(index, entry)]
        data = (CORPUS / entry["file"]).read_bytes()
        assert record["content_sha256"] == hashlib.sha256(data).hexdigest(), entry["file"]
        if "rejected" in entry:
            assert record["accepted"] is False, (entry["file"], record)
            assert entry["rejected"] in record["reason"], (entry["file"], record["reason"])
        else:
            assert record["accepted"] is True, (entry["file"], record["reason"])
            if "note" in entry:
                assert any(entry["note"] in n for n in record["notes"]), (entry["file"], record["notes"])
    for raw, reason in extra:
        record = by_name[shown(raw)]
        assert record["accepted"] is False and reason in record["reason"], (raw, record)
    huge = by_name[f"20251121_110000_{AGENT}.json"]
    assert huge["content_sha256"] == synthetic_hash("file", huge["file_name"]), "the 50 MiB report was read"

    found = {e["database_name"]: e for e in workspace.entries()}
    assert sorted(found) == databases, "one entry per cycle"
    for entry in entries:
        if "database" not in entry:
            continue
        decided = found[entry["database"]]
        assert decided["status"] == entry["status"], (entry["file"], decided["message"])
        assert entry["message"] in decided["message"], (entry["file"], decided["message"])
        if entry["status"] != "SUCCESS":
            assert decided["server_calculated_staged_hash"] is None, "nothing outside was read"

    # every file archived once, byte for byte, and nothing left behind in log/
    assert [n for n in os.listdir(os.fsencode(log)) if n != b"_archive"] == []
    assert len(os.listdir(log / "_archive")) == len(records)
    for record in records:
        archived = Path(record["archived_path"])
        assert archived.parent == log / "_archive", record
        if record["content_sha256"] == synthetic_hash("file", record["file_name"]):
            assert archived.stat().st_size == 50 * MIB
        else:
            assert hashlib.sha256(archived.read_bytes()).hexdigest() == record["content_sha256"], record
    for raw, data in deposited.items():
        assert (log / "_archive" / raw.decode()).read_bytes() == data

    again = ok(run_cli(env, "scan", "--at", AT, "--partition", DAY))
    assert "Traceback" not in again.stdout + again.stderr
    assert len(workspace.json("reports")) == len(records), "a second scan records nothing again"
    assert {e["database_name"]: e["status"] for e in workspace.entries()} == {
        d: e["status"] for d, e in found.items()
    }


def test_an_oversized_report_is_refused_without_reading_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backup_pipeline.adapters import deposit

    agent = deposit.AgentFolder(AGENT, tmp_path / AGENT)
    agent.log_dir.mkdir(parents=True)
    path = agent.log_dir / f"20251121_110000_{AGENT}.json"
    with open(path, "wb") as handle:
        handle.truncate(50 * MIB)
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(deposit.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    report = deposit.ReportFile(agent, path.name, 0.0, 50 * MIB, "file")
    with pytest.raises(deposit.UnsafeFile, match="above the 16777216-byte limit"):
        read_report(report, 16 * MIB)
    assert reads == []


# ---------------------------------------------------------------- any name, any bytes, straight from disk

plain_names = st.binary(min_size=1, max_size=60).filter(lambda b: b"/" not in b and b"\0" not in b)
file_names = plain_names | st.sampled_from([f"20251121_130500_{AGENT}.json".encode(), b"STATUS.json"])
contents = st.binary(max_size=300) | st.sampled_from([b"", b"{}", b"[]", b'{"agent_id": 1}'])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=file_names, data=contents)
def test_any_file_name_and_bytes_on_disk_are_recorded_in_postgresql(
    tmp_path: Path, database_url: str, name: bytes, data: bytes
) -> None:
    """What ingestion makes of a file in log/ (read from disk, with its real name, as bytes): one record
    stored in PostgreSQL, accepted or with a reason, never an exception."""
    import sqlalchemy as sa

    from backup_pipeline.adapters.deposit import AgentFolder
    from backup_pipeline.config.settings import Settings
    from backup_pipeline.scan.context import ScanContext, ScanRequest
    from backup_pipeline.scan.ingest import ingest
    from backup_pipeline.storage.database import open_database

    agent = AgentFolder(AGENT, tmp_path / AGENT)
    agent.log_dir.mkdir(parents=True, exist_ok=True)
    for leftover in os.listdir(os.fsencode(agent.log_dir)):
        os.unlink(os.fsencode(agent.log_dir) + b"/" + leftover)
    raw = name if name.endswith(b".json") else name + b".json"
    with open(os.fsencode(agent.log_dir) + b"/" + raw, "wb") as handle:
        handle.write(data)
    config = Settings(storage_root=tmp_path, settle_seconds=0, database_url=database_url)
    database = open_database(config)
    summary = ingest(ScanContext(config, database, ScanRequest(as_of=utc(AT))))
    assert summary.accepted + summary.rejected + summary.already_recorded == 1, summary
    with database.sessions() as session:
        accepted, reason = session.execute(  # this file's record (the latest of its content)
            sa.text("SELECT accepted, reason FROM status_reports WHERE content_sha256 = :h ORDER BY id DESC"),
            {"h": hashlib.sha256(data).hexdigest()},
        ).first()
    assert (reason is None) == accepted
    if not summary.already_recorded:
        assert accepted == (summary.accepted == 1)
