"""Issue 20: decompressing a staged archive is bounded by a ratio to its size and by a size.

A 2.3 MB zstd file that decompresses to 64 GiB made a scan ten times longer (a 1 GB one would take
hours). Past either limit the measurement stops decompressing (the file is still hashed whole) and
says which limit it met; the scan's verdict is FAILED "archive expands beyond …".
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import blake3
import pytest
import zstandard

from backup_pipeline.adapters import staged_files
from backup_pipeline.adapters.staged_files import ExpansionLimits, StagedFileRequest, check_staged_file
from backup_pipeline.config.settings import Settings
from backup_pipeline_tests.support.deposit_builder import sha

MIB = 1 << 20


def zstd_bomb(path: Path, content_mib: int) -> None:
    """One zstd frame of zeros: a few KiB on disk per GiB of content."""
    chunk = bytes(64 * MIB)
    with open(path, "wb") as handle, zstandard.ZstdCompressor(level=3).stream_writer(handle) as frame:
        for _ in range(content_mib // 64):
            frame.write(chunk)


def gzip_bomb(path: Path, members: int) -> None:
    member = gzip.compress(bytes(64 * MIB), compresslevel=9, mtime=0)  # about 1,030:1
    with open(path, "wb") as handle:
        for _ in range(members):
            handle.write(member)


@pytest.fixture
def decompressed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes of content fed to the content fingerprint, as they come out of the decompressor."""
    fed: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.hash = blake3.blake3()

        def update(self, data: bytes) -> None:
            fed.append(len(data))
            self.hash.update(data)

        def hexdigest(self) -> str:
            return self.hash.hexdigest()

    monkeypatch.setitem(staged_files._CONTENT_HASHES, "blake3", Counting)
    return fed


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_a_decompression_bomb_stops_at_the_ratio_and_says_so(
    tmp_path: Path, decompressed: list[int], kind: str
) -> None:
    staged = tmp_path / "database"
    staged.mkdir()
    name = "bomb.zst" if kind == "zstd" else "bomb.sql.gz"
    if kind == "zstd":
        zstd_bomb(staged / name, 2048)  # 2 GiB of content in about 64 KiB
    else:
        gzip_bomb(staged / name, 8)  # 512 MiB of content in about 0.5 MiB
    size = (staged / name).stat().st_size
    limits = ExpansionLimits(ratio=100, max_bytes=1 << 40)
    check = check_staged_file(StagedFileRequest(tmp_path, name), limits=limits)
    allowed = 100 * max(size, staged_files.RATIO_FLOOR)
    assert check.problem is None and check.size == size
    assert check.sha256 == sha((staged / name).read_bytes()), "the file itself is still hashed whole"
    assert check.archive_problem == (
        f"expands beyond {allowed} bytes, 100 times its {size} bytes (BACKUP_PIPELINE_MAX_EXPANSION_RATIO)"
    )
    assert sum(decompressed) <= allowed + staged_files.READ_BLOCK, "decompressed past the limit"


def test_an_archive_larger_than_the_size_limit_stops_there_and_says_so(
    tmp_path: Path, decompressed: list[int]
) -> None:
    staged = tmp_path / "database"
    staged.mkdir()
    content = os.urandom(3 * MIB) * 4  # 12 MiB, compressing about 4:1
    (staged / "dump.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(content))
    limits = ExpansionLimits(ratio=1000, max_bytes=8 * MIB)
    check = check_staged_file(StagedFileRequest(tmp_path, "dump.zst"), limits=limits)
    assert check.archive_problem == f"expands beyond {8 * MIB} bytes (BACKUP_PIPELINE_MAX_DECOMPRESSED_BYTES)"
    assert sum(decompressed) <= 8 * MIB + staged_files.READ_BLOCK


def test_an_archive_within_both_limits_is_measured_whole(tmp_path: Path, decompressed: list[int]) -> None:
    staged = tmp_path / "database"
    staged.mkdir()
    content = os.urandom(MIB) * 8
    (staged / "dump.sql.gz").write_bytes(gzip.compress(content, mtime=0))
    check = check_staged_file(StagedFileRequest(tmp_path, "dump.sql.gz"), limits=ExpansionLimits())
    assert check.archive_problem is None
    assert check.content_fingerprint == f"blake3:{blake3.blake3(content).hexdigest()}"
    assert sum(decompressed) == len(content)


def test_the_limits_are_settings_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.max_expansion_ratio, defaults.max_decompressed_bytes) == (1000, 1 << 40)
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_EXPANSION_RATIO", "50")
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_DECOMPRESSED_BYTES", str(64 * MIB))
    configured = Settings()
    assert (configured.max_expansion_ratio, configured.max_decompressed_bytes) == (50, 64 * MIB)
