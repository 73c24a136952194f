"""Bytes: server-side verification throughput of staged dumps vs what a careful person would run.

Two sets of dumps, built once and reused (the page cache is warmed before every timing):
- incompressible zstd dumps, 4 GiB in 7 files of 256 MiB to 1 GiB (random content: zstd stores it
  as raw blocks, so the content is as large as the file). Reference: `openssl dgst -sha256` over
  the files one after the other. Timed: the server's SHA-256 + size (hashing only), and its whole
  verification with archive checks on (SHA-256, decompression, BLAKE3 content fingerprint).
- compressible gzip SQL dumps (about 5:1), 4 files of 150 MiB to 1 GiB. Reference: for each file
  `openssl dgst -sha256 f && gzip -t f`, the file's hash and a decompression check, one file after
  the other. Timed: the server's verification with archive checks on, and hashing only.
The server side runs in a fresh child process (peak memory measured there) with BACKUP_PIPELINE_
HASH_WORKERS threads (2: both cores). With `--repeat N` every pair (reference, server) is timed N
times, interleaved, and the median ratio is reported (this machine is shared: medians of ratios
measured minutes apart are steadier than single figures).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard
from isal import igzip, isal_zlib

from benchmarks.common import PYTHON, SCRATCH, Report, run

ZSTD_SIZES_MIB = [256, 512, 768, 1024, 256, 512, 768]  # 4,096 MiB in files of 256 MiB to 1 GiB
GZIP_SIZES_MIB = [150, 350, 600, 1024]  # compressed; about 5 times as much SQL inside
CHUNK = 8 << 20
WORDS = [b"paid", b"pending", b"refund", b"Douala", b"Yaounde", b"Bafoussam", b"Garoua", b"Limbe"]


def build_zstd(directory: Path) -> list[Path]:
    """Incompressible .zst dumps of ZSTD_SIZES_MIB (reused when already there)."""
    staged = directory / "AGENT_BENCH_BYTES" / "database"
    staged.mkdir(parents=True, exist_ok=True)
    files = []
    for index, mib in enumerate(ZSTD_SIZES_MIB):
        path = staged / f"random_{index}_{mib}MiB.zst"
        files.append(path)
        if path.exists() and path.stat().st_size >= mib << 20:
            continue
        compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
        with path.open("wb") as out, compressor.stream_writer(out, closefd=False) as writer:
            while out.tell() < mib << 20:
                writer.write(os.urandom(CHUNK))
                writer.flush(zstandard.FLUSH_BLOCK)
    return files


def sql_text(rows: int, seed: int) -> bytes:
    """An SQL dump's worth of INSERTs: compresses about 5:1 with gzip, like real dumps do."""
    r = random.Random(seed)
    return b"".join(
        b"INSERT INTO ledger (id, account, amount, booked_on, city, state, ref, memo) VALUES "
        b"(%d, 'ACC-%06d', %d.%02d, '2025-%02d-%02d', '%s', '%s', '%08x', 'invoice %d for %s');\n"
        % (
            i, r.randrange(10**6), r.randrange(10**5), r.randrange(100), 1 + r.randrange(12),
            1 + r.randrange(28), r.choice(WORDS), r.choice(WORDS), r.getrandbits(32),
            r.randrange(10**7), r.choice(WORDS),
        )
        for i in range(rows)
    )  # fmt: skip


def _write_gzip(path: Path, mib: int, text: bytes) -> None:
    """One gzip member of SQL text (ISA-L level 2: quick to build, gzip -6's ratio within 15 %)."""
    compressor = isal_zlib.compressobj(2, isal_zlib.DEFLATED, 31)
    tmp = path.with_suffix(".partial")
    with tmp.open("wb") as out:
        block = 0
        while out.tell() < mib << 20:
            turn = (block * 7_919_007) % len(text)  # each block differs; gzip's window is 32 KiB
            out.write(compressor.compress(text[turn:] + text[:turn]))
            block += 1
        out.write(compressor.flush())
    tmp.rename(path)


def build_gzip(directory: Path) -> list[Path]:
    staged = directory / "AGENT_BENCH_GZIP" / "database"
    staged.mkdir(parents=True, exist_ok=True)
    files = [staged / f"ledger_{i}_{mib}MiB.sql.gz" for i, mib in enumerate(GZIP_SIZES_MIB)]
    missing = [(f, mib) for f, mib in zip(files, GZIP_SIZES_MIB, strict=True) if not f.exists()]
    if missing:
        text = sql_text(300_000, seed=1)
        with ThreadPoolExecutor(2) as pool:  # isal releases the GIL
            list(pool.map(lambda item: _write_gzip(item[0], item[1], text), missing))
    return files


def warm(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as f:
            while f.read(CHUNK):
                pass


def content_bytes(files: list[Path]) -> int:
    total = 0
    for path in files:
        with igzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
    return total


def measure_in_child(files: list[Path], verify: bool, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of the server's measurement of `files` in a fresh process."""
    code = f"""
import json, resource, sys, time
from pathlib import Path
from backup_pipeline.adapters.staged_files import StagedFileRequest, check_many
files = [Path(p) for p in {json.dumps([str(f) for f in files])}]
requests = [StagedFileRequest(f.parent.parent, f.name, expected_size=f.stat().st_size) for f in files]
start, cpu = time.perf_counter(), time.process_time()
checks = check_many(requests, workers={workers}, verify_archive={verify})
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
bad = [c for c in checks if c.problem or c.archive_problem]
assert not bad, bad
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": elapsed, "rss_mib": rss, "cpu": cpu}}))
"""
    _, out = run([PYTHON, "-c", code])
    result = json.loads(out.strip().splitlines()[-1])
    CPU["server"] += result["cpu"]
    return result["seconds"], result["rss_mib"]


CPU = {"server": 0.0, "reference": 0.0}  # CPU seconds of the last paired timings (load-independent)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def openssl(files: list[Path]) -> float:
    before = _children_cpu()
    elapsed, _ = run(["openssl", "dgst", "-sha256", *map(str, files)])
    CPU["reference"] += _children_cpu() - before
    return elapsed


def openssl_and_gzip_t(files: list[Path]) -> float:
    script = 'for f in "$@"; do openssl dgst -sha256 "$f" > /dev/null && gzip -t "$f" || exit 1; done'
    before = _children_cpu()
    elapsed, _ = run(["sh", "-c", script, "sh", *map(str, files)])
    CPU["reference"] += _children_cpu() - before
    return elapsed


def load() -> str:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    return uptime.strip().split("load average: ")[-1]


def paired(
    files: list[Path], reference: Callable[[list[Path]], float], verify: bool, workers: int, repeat: int
) -> tuple[list[float], list[float], float]:
    """Reference and server seconds, interleaved `repeat` times; and the server's peak RSS."""
    refs, ours, peak = [], [], 0.0
    CPU.update(server=0.0, reference=0.0)
    for _ in range(repeat):
        warm(files)
        refs.append(reference(files))
        warm(files)
        seconds, rss = measure_in_child(files, verify=verify, workers=workers)
        ours.append(seconds)
        peak = max(peak, rss)
    return refs, ours, peak


def _cpu() -> str:
    return f"CPU seconds: reference {CPU['reference']:.1f}, server {CPU['server']:.1f}"


def _ratio(refs: list[float], ours: list[float]) -> float:
    return statistics.median(r / o for r, o in zip(refs, ours, strict=True))


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "bytes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved timings per figure")
    args = parser.parse_args(argv)
    report = Report("bytes: staged file verification")
    report.add("load average at start (1, 5, 15 min)", float(load().split(",")[0]), "", note=load())

    zst = build_zstd(args.dir)
    gib = sum(f.stat().st_size for f in zst) / 2**30
    refs, hashing, rss = paired(zst, openssl, False, args.workers, args.repeat)
    report.add("zstd: data", gib, "GiB", note=f"{len(zst)} incompressible files of 256 MiB–1 GiB")
    report.add("zstd: openssl dgst -sha256 (reference)", gib / statistics.median(refs), "GiB/s")
    report.add("zstd: server sha256 + size", gib / statistics.median(hashing), "GiB/s")
    speedup = _ratio(refs, hashing)
    report.add(
        "zstd: hashing only vs openssl", speedup, "x", target=">= 1.8", met=speedup >= 1.8, note=_cpu()
    )
    report.add("zstd: peak RSS, hashing", rss, "MiB", target="< 300", met=rss < 300)
    refs, verified, rss = paired(zst, openssl, True, args.workers, args.repeat)
    report.add("zstd: server with archive checks", gib / statistics.median(verified), "GiB/s")
    speedup = _ratio(refs, verified)
    report.add("zstd: checks on vs openssl", speedup, "x", target=">= 1.5", met=speedup >= 1.5, note=_cpu())
    report.add("zstd: peak RSS, checks on", rss, "MiB", target="< 300", met=rss < 300)

    gz = build_gzip(args.dir)
    gib = sum(f.stat().st_size for f in gz) / 2**30
    content = content_bytes(gz) / 2**30
    inside = f"{len(gz)} files of 150 MiB–1 GiB, {content:.1f} GiB of SQL inside"
    report.add("gzip: data", gib, "GiB", note=inside)
    report.add("gzip: compression ratio", content / gib, ":1")
    refs, verified, rss = paired(gz, openssl_and_gzip_t, True, args.workers, args.repeat)
    reference = "gzip: openssl dgst -sha256 f && gzip -t f (reference)"
    report.add(reference, gib / statistics.median(refs), "GiB/s")
    report.add("gzip: server with archive checks", gib / statistics.median(verified), "GiB/s")
    speedup = _ratio(refs, verified)
    report.add("gzip: checks on vs the reference", speedup, "x", target=">= 6", met=speedup >= 6, note=_cpu())
    report.add("gzip: peak RSS, checks on", rss, "MiB", target="< 300", met=rss < 300)
    refs, hashing, rss = paired(gz, openssl, False, args.workers, args.repeat)
    report.add("gzip: hashing only vs openssl", _ratio(refs, hashing), "x", note=_cpu())
    report.add("load average at end (1, 5, 15 min)", float(load().split(",")[0]), "", note=load())
    report.print()
    return report


if __name__ == "__main__":
    main()
