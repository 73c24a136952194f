"""Measuring staged files before evaluation, in batches sized by bytes.

Evaluation works on whole agents (a cycle's verdict weighs all the agent's reports around the day),
so one agent with forty 50 GiB dumps would keep one evaluation step hashing for hours while other
workers idle. Measuring a file needs nothing but the file: when the agents' reports claim more
bytes than one measurement step should take, the planner asks each evaluation batch
which staged files it would measure (`evaluate.staged_files_to_measure`, the evaluation's own
choice of report and file name), spreads those files over steps of about
`BACKUP_PIPELINE_MEASURE_BATCH_BYTES` each, heaviest first, whatever agent they belong to, and each
step stores its measurements in PostgreSQL keyed by report and file name. The evaluation then finds
them there, exactly where it would have measured, and measures itself only what is missing (a file
still being uploaded, a report recorded meanwhile): the verdicts cannot depend on how the work was
split, and a scan killed after measuring does not measure again.
"""

from __future__ import annotations

from collections.abc import Sequence

from backup_pipeline.adapters.deposit import staged_file_size
from backup_pipeline.adapters.staged_files import StagedFileRequest, check_many, still_being_written
from backup_pipeline.core.batching import spread_by_weight
from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.scan.context import ScanContext, ScanRequest, Summary
from backup_pipeline.scan.evaluate import staged_files_to_measure
from backup_pipeline.scan.plan import AFTER, BEFORE, BatchPlan
from backup_pipeline.storage import measurements


class StagedFile(Summary):
    agent_id: str
    file_name: str
    report_id: int
    size: int  # on disk when planned: for spreading the work only
    claimed_sha256: str | None = None
    claimed_size: int | None = None
    also: list[str] = []  # fingerprint algorithms wanted besides the current one, as evaluation asks


class MeasurementBatch(Summary):
    key: str  # a Dagster mapping key
    files: list[StagedFile]
    request: ScanRequest

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


class MeasurementResult(Summary):
    key: str
    files: int = 0
    bytes: int = 0
    stored: int = 0
    settling: int = 0  # still being uploaded: left for the evaluation (or the next scan) to measure


def plan_measurements(ctx: ScanContext, plans: Sequence[BatchPlan]) -> list[MeasurementBatch]:
    """The staged files the evaluation of `plans` would measure, spread over batches by bytes; none
    when the agents' reports claim no more than one batch's worth (the evaluation measures that
    itself, and a fleet of small dumps pays nothing for the spreading)."""
    if not plans or _claimed_bytes(ctx, plans) <= ctx.settings.measure_batch_bytes:
        return []
    files: dict[tuple[int, str], StagedFile] = {}
    for plan in plans:
        for need in staged_files_to_measure(ctx, plan):
            files.setdefault(
                (need.report_id, need.file_name),
                StagedFile(
                    agent_id=need.agent_id,
                    file_name=need.file_name,
                    report_id=need.report_id,
                    size=staged_file_size(ctx.settings.storage_root / need.agent_id, need.file_name),
                    claimed_sha256=need.claimed_sha256,
                    claimed_size=need.claimed_size,
                    also=sorted(need.also),
                ),
            )
    ordered = sorted(files.values(), key=lambda f: (f.agent_id, f.file_name, f.report_id))
    batches = spread_by_weight(
        [f.size for f in ordered],
        target=ctx.settings.measure_batch_bytes,
        max_batches=ctx.settings.max_measure_batches,
    )
    return [
        MeasurementBatch(key=f"measure_{i + 1:03d}", files=[ordered[j] for j in batch], request=ctx.request)
        for i, batch in enumerate(batches)
    ]


def _claimed_bytes(ctx: ScanContext, plans: Sequence[BatchPlan]) -> int:
    start, end = day_bounds(plans[0].day)
    agents = sorted({agent for plan in plans for agent in plan.agents})
    with ctx.database.sessions() as session:
        return measurements.claimed_staged_bytes(session, agents, start - BEFORE, end + AFTER)


def measure_batch(ctx: ScanContext, batch: MeasurementBatch) -> MeasurementResult:
    """Measure the batch's files (in parallel threads) and store what is final."""
    checks = check_many(
        [
            StagedFileRequest(
                ctx.settings.storage_root / f.agent_id,
                f.file_name,
                also=frozenset(f.also),
                expected_size=f.claimed_size,
            )
            for f in batch.files
        ],
        workers=ctx.settings.hash_workers,
        verify_archive=ctx.settings.verify_archives,
        limits=ctx.expansion_limits,
    )
    result = MeasurementResult(key=batch.key, files=len(checks), bytes=sum(c.size or 0 for c in checks))
    final = []
    for file, check in zip(batch.files, checks, strict=True):
        if still_being_written(check, file.claimed_sha256, file.claimed_size, ctx.settings.settle_seconds):
            result.settling += 1
        else:
            final.append(((file.report_id, file.file_name), check, frozenset(file.also)))
    with ctx.database.sessions() as session:
        measurements.store(session, final, ctx.as_of, ctx.run_id)
        session.commit()
    result.stored = len(final)
    return result
