"""Bytes: server-side verification throughput of staged dumps vs `openssl dgst -sha256`.

Builds >= 4 GiB of zstd dumps (files of 256 MiB to 1 GiB), warms the page cache, then times in the
same run: openssl hashing the files one after the other (the reference), the server's measurement
of the same files (SHA-256 + size, both cores), and the same with archive decompression checks on.
Peak memory of the server side is measured in a child process, whatever the file sizes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import zstandard

from benchmarks.common import PYTHON, SCRATCH, Report, run

SIZES_MIB = [256, 512, 768, 1024, 256, 512, 768]  # 4,096 MiB in files of 256 MiB to 1 GiB
CHUNK = 8 << 20


def _dump_bytes(index: int, size: int) -> bytes:
    """Compressible-but-not-trivial SQL-ish text: dumps compress about 3:1 with zstd level 1."""
    rows = b"".join(
        b"INSERT INTO ledger VALUES (%d, 'account-%07d', %d.%02d, '2025-11-%02d');\n"
        % (i, (i * 7919 + index) % 10**7, (i * 31) % 100000, i % 100, 1 + i % 28)
        for i in range(size // 60 + 1)
    )
    return rows[:size]


def build(directory: Path) -> list[Path]:
    """Staged .zst dumps whose compressed sizes follow SIZES_MIB (reused when already there)."""
    staged = directory / "AGENT_BENCH_BYTES" / "database"
    staged.mkdir(parents=True, exist_ok=True)
    files = []
    noise = os.urandom(CHUNK)
    for index, mib in enumerate(SIZES_MIB):
        path = staged / f"dump_{index}_{mib}MiB.zst"
        files.append(path)
        if path.exists() and path.stat().st_size >= mib << 20:
            continue
        text = _dump_bytes(index, CHUNK)
        compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
        with path.open("wb") as out, compressor.stream_writer(out, closefd=False) as writer:
            written = 0
            while out.tell() < mib << 20:
                # Mix incompressible noise in so the file reaches its size from a few GiB of input.
                writer.write(text[written % 4096 :] + noise[: CHUNK // 2])
                writer.flush(zstandard.FLUSH_BLOCK)
                written += 1
    return files


def warm(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as f:
            while f.read(CHUNK):
                pass


def measure_in_child(files: list[Path], verify: bool, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of the server's measurement of `files` in a fresh process."""
    code = f"""
import json, resource, sys, time
from pathlib import Path
from backup_pipeline.adapters.staged_files import StagedFileRequest, check_many
files = [Path(p) for p in {json.dumps([str(f) for f in files])}]
requests = [StagedFileRequest(f.parent.parent, f.name) for f in files]
start = time.perf_counter()
checks = check_many(requests, workers={workers}, verify_archive={verify})
elapsed = time.perf_counter() - start
bad = [c for c in checks if c.problem or c.archive_problem]
assert not bad, bad
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": elapsed, "rss_mib": rss}}))
"""
    _, out = run([PYTHON, "-c", code])
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], result["rss_mib"]


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "bytes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    files = build(args.dir)
    total = sum(f.stat().st_size for f in files)
    gib = total / 2**30
    warm(files)
    openssl, _ = run(["openssl", "dgst", "-sha256", *map(str, files)])
    warm(files)
    server, rss = measure_in_child(files, verify=False, workers=args.workers)
    warm(files)
    verified, rss_verified = measure_in_child(files, verify=True, workers=args.workers)
    report = Report("bytes: staged file verification")
    report.add("data", gib, "GiB", note=f"{len(files)} files of 256 MiB–1 GiB (zstd)")
    report.add("openssl dgst -sha256 (reference)", gib / openssl, "GiB/s", note=f"{openssl:.2f} s")
    report.add("server sha256 + size", gib / server, "GiB/s", note=f"{server:.2f} s, {args.workers} workers")
    report.add("speed-up vs openssl", openssl / server, "x", target=">= 1.5", met=openssl / server >= 1.5)
    report.add("peak RSS, hashing", rss, "MiB", target="< 300", met=rss < 300)
    report.add("server with decompression checks", gib / verified, "GiB/s", note=f"{verified:.2f} s")
    report.add("speed-up vs openssl, checks on", openssl / verified, "x")
    report.add("peak RSS, checks on", rss_verified, "MiB", target="< 300", met=rss_verified < 300)
    report.print()
    return report


if __name__ == "__main__":
    main()
