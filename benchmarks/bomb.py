"""Bomb: measuring a 2 MB staged zstd file that decompresses to 64 GiB stops at the expansion limit.

A 2.3 MB zstd dump holding 64 GiB made a scan take 25.5 s instead of 2.5 s (about 2.8 h for a 1 GB
one). Decompression now stops at BACKUP_PIPELINE_MAX_EXPANSION_RATIO (1,000) times the file's size:
the bomb costs what an honest dump of 1,000 times its size would, never more. Measured with the
default limits and, in the same run, unbounded (on its first 4 GiB, extrapolated to 64 GiB); the
ratio is printed, with an ordinary dump of the bomb's size for scale.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import zstandard

from benchmarks.common import SCRATCH, Report, timed

CONTENT_GIB = 64
CHUNK = 64 << 20


def bomb(folder: Path) -> Path:
    path = folder / "database" / "bomb.zst"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = bytes(CHUNK)
        with open(path, "wb") as handle, zstandard.ZstdCompressor(level=19).stream_writer(handle) as frame:
            for _ in range(CONTENT_GIB * (1 << 30) // CHUNK):
                frame.write(chunk)
    return path


def ordinary(folder: Path, size: int) -> Path:
    """A zstd dump of the bomb's size whose content is ordinary SQL text (about 5:1)."""
    path = folder / "database" / "ordinary.zst"
    if not path.exists():
        rows = b"".join(
            b"INSERT INTO t VALUES (%d, '%s');\n" % (i, os.urandom(12).hex().encode()) for i in range(10**6)
        )
        compressor = zstandard.ZstdCompressor(level=3)
        packed = compressor.compress(rows)
        while len(packed) < size:
            rows += rows
            packed = compressor.compress(rows)
        path.write_bytes(compressor.compress(rows[: len(rows) * size // len(packed)]))
    return path


def measure(folder: Path, name: str, limits: object) -> tuple[float, object]:
    from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file

    with timed() as elapsed:
        check = check_staged_file(StagedFileRequest(folder, name), limits=limits)
    return elapsed(), check


def main(argv: list[str] | None = None) -> Report:
    from backup_pipeline.adapters.staged_files import ExpansionLimits

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "bomb")
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    size = bomb(folder).stat().st_size
    ordinary(folder, size)
    bounded, check = measure(folder, "bomb.zst", ExpansionLimits())
    reference, ref_check = measure(folder, "ordinary.zst", ExpansionLimits())
    assert ref_check.archive_problem is None, ref_check.archive_problem
    first = ExpansionLimits(ratio=10**9, max_bytes=4 << 30)  # the unbounded cost, on 4 GiB of it
    partial, _ = measure(folder, "bomb.zst", first)
    report = Report(f"bomb: a {size / 1e6:.1f} MB zstd file holding {CONTENT_GIB} GiB")
    unbounded = partial * CONTENT_GIB / 4
    report.add("bomb, default limits", bounded, "s", note=str(check.archive_problem))
    report.add("reference: the bomb unbounded (4 GiB measured, extrapolated)", unbounded, "s")
    ideal = CONTENT_GIB * (1 << 30) / (1000 * size)
    report.add("unbounded / bounded", unbounded / bounded, "x", note=f"the content ratio is {ideal:.1f}")
    report.add("for scale: an ordinary dump of the bomb's size (about 5:1)", reference, "s")
    report.print()
    return report


if __name__ == "__main__":
    main()
