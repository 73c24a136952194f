"""The measurement of a staged dump: ISA-L tells sound, truncated and corrupt gzip streams apart
exactly as zlib does (multi-member files, cut files, flipped bytes, trailing bytes), the content
fingerprint is the BLAKE3 of the decompressed content, and hashing beside the decompression
(large files) gives the same answers as hashing inline."""

from __future__ import annotations

import gzip
import random
import zlib
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_pipeline.adapters import staged_files
from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file


def zlib_verdict(data: bytes) -> tuple[str, bytes]:
    """What zlib makes of a gzip file: ("sound" | "truncated" | "corrupt", content)."""
    content, members, stream = bytearray(), 0, None
    try:
        while data:
            stream = zlib.decompressobj(wbits=31)
            content += stream.decompress(data)
            if not stream.eof:
                return "truncated", bytes(content)
            data, stream, members = stream.unused_data, None, members + 1
    except zlib.error:
        return "corrupt", bytes(content)
    return ("sound" if members else "truncated"), bytes(content)


def measured_verdict(tmp_path: Path, name: str, data: bytes) -> tuple[str, str | None]:
    staged = tmp_path / "database"
    staged.mkdir(exist_ok=True)
    (staged / name).write_bytes(data)
    check = check_staged_file(StagedFileRequest(tmp_path, name))
    assert check.problem is None and check.size == len(data)
    problem = check.archive_problem
    if problem is None:
        return "sound", check.content_fingerprint
    if "truncated" in problem or "is empty" in problem:
        return "truncated", check.content_fingerprint
    assert "corrupt" in problem, problem
    return "corrupt", check.content_fingerprint


def members(seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    parts = []
    for n in range(count):
        text = b"".join(b"INSERT INTO t VALUES (%d, '%x');\n" % (i, rng.getrandbits(40)) for i in range(2000))
        noise = rng.randbytes(rng.randrange(0, 5000))
        parts.append(gzip.compress(text + noise, compresslevel=rng.choice([1, 6, 9]), mtime=n))
    return b"".join(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 3),
    mutation=st.sampled_from(["none", "cut", "flip", "append"]),
    where=st.floats(0, 1, exclude_max=True),
    extra=st.binary(min_size=1, max_size=40),
)
def test_isal_tells_gzip_streams_apart_as_zlib_does(
    tmp_path: Path, seed: int, count: int, mutation: str, where: float, extra: bytes
) -> None:
    data = members(seed, count)
    at = int(where * len(data))
    if mutation == "cut":
        data = data[:at]
    elif mutation == "flip":
        data = data[:at] + bytes([data[at] ^ (1 << (seed % 8))]) + data[at + 1 :]
    elif mutation == "append":
        data = data + extra
    expected, content = zlib_verdict(data)
    verdict, fingerprint = measured_verdict(tmp_path, "dump.sql.gz", data)
    assert verdict == expected, (mutation, at, len(data))
    if verdict == "sound":
        assert fingerprint == f"blake3:{blake3.blake3(content).hexdigest()}"


@pytest.mark.parametrize(
    ("case", "data", "expected"),
    [
        ("members with different header times", members(1, 3), "sound"),
        ("empty", b"", "truncated"),
        ("a lone magic byte", b"\x1f", "truncated"),
        ("one stray byte after the last member", members(3, 1) + b"\0", "truncated"),
        ("a header cut short", members(2, 1)[:7], "truncated"),
        ("zero padding after the last member", members(3, 1) + bytes(16), "corrupt"),
        ("text after the last member", members(3, 1) + b"garbage", "corrupt"),
        ("a wrong CRC-32", members(4, 1)[:-8] + b"\0\0\0\0" + members(4, 1)[-4:], "corrupt"),
        ("a wrong length", members(4, 1)[:-4] + b"\0\0\0\0", "corrupt"),
    ],
)
def test_gzip_edge_cases_get_zlibs_verdict(tmp_path: Path, case: str, data: bytes, expected: str) -> None:
    assert zlib_verdict(data)[0] == expected, case
    assert measured_verdict(tmp_path, "dump.sql.gz", data)[0] == expected, case


def test_two_gzip_files_differing_only_in_header_times_have_one_fingerprint(tmp_path: Path) -> None:
    content = b"-- the same dump\n" * 10_000
    early = measured_verdict(tmp_path, "a.sql.gz", gzip.compress(content, mtime=1))
    late = measured_verdict(tmp_path, "b.sql.gz", gzip.compress(content, mtime=2_000_000_000))
    plain = measured_verdict(tmp_path, "c.sql", content)
    assert early == late == plain == ("sound", f"blake3:{blake3.blake3(content).hexdigest()}")


def test_the_previous_success_algorithm_is_measured_alongside_when_asked(tmp_path: Path) -> None:
    """A cycle measured right after the change of algorithm carries the old one too."""
    import hashlib

    content = b"-- dump\n" * 1000
    packed = gzip.compress(content, mtime=7)
    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "d.sql.gz").write_bytes(packed)
    check = check_staged_file(
        StagedFileRequest(tmp_path, "d.sql.gz", also=frozenset({"sha256", "sha256-file"}))
    )
    assert check.content_fingerprint == (
        f"blake3:{blake3.blake3(content).hexdigest()} sha256:{hashlib.sha256(content).hexdigest()} "
        f"sha256-file:{hashlib.sha256(packed).hexdigest()}"
    )
    off = check_staged_file(StagedFileRequest(tmp_path, "d.sql.gz"), verify_archive=False)
    assert off.content_fingerprint == f"sha256-file:{hashlib.sha256(packed).hexdigest()}"


def _cases() -> dict[str, bytes]:
    rng = random.Random(9)
    text = b"".join(b"row %d %x\n" % (i, rng.getrandbits(30)) for i in range(400_000))
    zst = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text)
    gz = gzip.compress(text[:1000], mtime=1) + gzip.compress(text[1000:], mtime=2)
    return {
        "multi.sql.gz": gz,
        "cut.sql.gz": gz[: len(gz) // 2],
        "flipped.sql.gz": gz[:5000] + bytes([gz[5000] ^ 0x10]) + gz[5001:],
        "dump.zst": zst,
        "cut.zst": zst[:-3],
        "plain.sql": text,
    }


def test_hashing_beside_the_decompression_gives_the_same_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = tmp_path / "database"
    staged.mkdir()
    for name, data in _cases().items():
        (staged / name).write_bytes(data)
    inline = [check_staged_file(StagedFileRequest(tmp_path, n, also=frozenset({"sha256"}))) for n in _cases()]
    monkeypatch.setattr(staged_files, "PIPELINE_MIN_BYTES", 0)  # every file through the helpers
    piped = [check_staged_file(StagedFileRequest(tmp_path, n, also=frozenset({"sha256"}))) for n in _cases()]
    assert [(c.sha256, c.size, c.content_fingerprint, c.archive_problem) for c in piped] == [
        (c.sha256, c.size, c.content_fingerprint, c.archive_problem) for c in inline
    ]
    assert [c.archive_problem is None for c in inline] == [True, False, False, True, False, True]


def test_many_files_are_measured_in_any_order_and_returned_in_theirs(tmp_path: Path) -> None:
    """Large files go to the worker threads first, small ones (by the agent's claim, right or wrong)
    are measured by the caller meanwhile: the checks come back in the order asked."""
    from backup_pipeline.adapters.staged_files import THREAD_MIN_BYTES, check_many

    staged = tmp_path / "database"
    staged.mkdir()
    claims = [10, None, 3 * THREAD_MIN_BYTES, 2 * THREAD_MIN_BYTES, 10, THREAD_MIN_BYTES // 2]
    requests = []
    for n, claim in enumerate(claims):
        data = random.Random(n).randbytes(2 * THREAD_MIN_BYTES if n % 2 else 1000)
        (staged / f"d{n}.sql.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=n))
        requests.append(StagedFileRequest(tmp_path, f"d{n}.sql.gz", expected_size=claim))
    requests.append(StagedFileRequest(tmp_path, "absent.sql.gz", expected_size=5 * THREAD_MIN_BYTES))
    one_by_one = [check_staged_file(r) for r in requests]
    for workers in (1, 2, 3):
        checks = check_many(requests, workers=workers)
        assert [(c.file_name, c.sha256, c.content_fingerprint, c.problem) for c in checks] == [
            (c.file_name, c.sha256, c.content_fingerprint, c.problem) for c in one_by_one
        ]
