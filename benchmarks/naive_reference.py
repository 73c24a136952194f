"""The reference the fleet benchmark is compared with: the design notes' scan, done straightforwardly.

For each expected job, one after the other: read and parse the agent's report files, pick the
relevant one, hash the staged file, insert the entry, update the job, commit. Same rules, same
data, same PostgreSQL as the product; only the shape of the work differs. It evaluates a given
number of jobs (a fifth of the fleet in the benchmark) so its time can be scaled.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backup_pipeline.config.jobs_file import to_expected_backup
from backup_pipeline.core import rules
from backup_pipeline.core.cycles import cycles_on
from backup_pipeline.core.domain import RecordedReport, ReportRef, StagedFileCheck
from backup_pipeline.core.reports import parse_report
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedBackupRow


def naive_scan(session: Session, root: Path, day: date, now: datetime, limit: int) -> int:
    jobs = (
        session.execute(sa.select(ExpectedBackupRow).order_by(ExpectedBackupRow.id).limit(limit))
        .scalars()
        .all()
    )
    for job in jobs:
        (cycle,) = cycles_on(to_expected_backup(job), day)  # the fleet is daily: one cycle a day
        reports = []
        for n, path in enumerate(sorted((root / job.agent_id_responsible / "log").glob("*.json"))):
            outcome = parse_report(
                path.read_bytes(), agent_id=job.agent_id_responsible, as_of=now, max_age=timedelta(days=7)
            )
            if outcome.report is not None:
                reports.append(RecordedReport(ReportRef(n, path.name), outcome.report))
        report = rules.relevant_report(cycle, reports)
        check = None
        if report is not None and rules.needs_staged_file(db := report.report.databases[job.database_name]):
            name = rules.staged_file_name(cycle, db) or ""
            path = root / job.agent_id_responsible / "database" / name
            data = path.read_bytes() if path.exists() else None
            check = StagedFileCheck(
                file_name=name,
                problem=None if data is not None else "absent",
                sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
                size=len(data) if data is not None else None,
                content_fingerprint=hashlib.sha256(data).hexdigest() if data is not None else None,
            )
        decision = rules.decide(cycle, now, report=report, check=check)
        if decision is None:
            continue
        session.add(
            BackupEntryRow(
                job_id=job.id,
                cycle_expected_at=cycle.expected_at,
                status=decision.status.value,
                message=decision.message,
                report_file=report.ref.file_name if report else None,
                server_calculated_staged_hash=check.sha256 if check else None,
                server_calculated_staged_size=check.size if check else None,
                evaluated_at=now,
            )
        )
        job.current_status = decision.status.value
        job.last_checked_timestamp = now
        session.commit()
    return len(jobs)
