"""The server's own measurement of a staged dump, in one streaming pass.

One read of the file gives its SHA-256 and size (what the agent claims after compression), its
content fingerprint (SHA-256 of the decompressed bytes, so two gzip files differing only in header
times are the same content) and whether the archive decompresses cleanly. Memory stays constant
whatever the file size: input is read in blocks and decompressed output is bounded per step.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from backup_pipeline.adapters.deposit import UnsafeFile, open_staged_file
from backup_pipeline.core.domain import StagedFileCheck

READ_BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CorruptArchive(ValueError):
    pass


@dataclass(frozen=True)
class StagedFileRequest:
    agent_dir: Path
    file_name: str


def _format_of(file_name: str, head: bytes) -> str | None:
    lowered = file_name.lower()
    if lowered.endswith((".gz", ".gzip")):
        return "gzip"
    if lowered.endswith((".zst", ".zstd")):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


class _GzipContent:
    """Decompresses a (possibly multi-member) gzip stream into a hash, bounded in memory."""

    def __init__(self, content: hashlib._Hash) -> None:
        self.content = content
        self.stream: zlib._Decompress | None = None  # one per gzip member
        self.members = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self.stream is None:
                self.stream = zlib.decompressobj(wbits=31)
            try:
                out = self.stream.decompress(data, READ_BLOCK)
            except zlib.error as exc:
                raise CorruptArchive(f"gzip stream is corrupt ({exc})") from None
            self.content.update(out)
            if self.stream.eof:
                data, self.stream = self.stream.unused_data, None
                self.members += 1
            else:
                data = self.stream.unconsumed_tail
                if not data and len(out) == READ_BLOCK:
                    self._drain()  # output was capped: collect what zlib still holds

    def _drain(self) -> None:
        assert self.stream is not None
        while out := self.stream.decompress(b"", READ_BLOCK):
            self.content.update(out)

    def finish(self) -> None:
        if self.stream is not None or self.members == 0:
            raise CorruptArchive("gzip stream is truncated (ends before its end-of-stream marker)")


class _HashSink:
    """Where the zstd decompressor writes its output: straight into the content hash."""

    def __init__(self, content: hashlib._Hash) -> None:
        self.content = content

    def write(self, data: bytes) -> int:
        self.content.update(data)
        return len(data)


class _ZstdContent:
    """Decompresses a (possibly multi-frame) zstd stream into a hash, bounded in memory.

    A zstd block can expand 128 KiB out of 4 bytes, so a decompression call fed a slice of a bomb
    would build gigabytes in one go: the stream writer hands its output on in pieces of at most
    READ_BLOCK instead. It does not say whether the input stopped inside a frame, so the frames'
    own headers are followed alongside (_ZstdFrames) to tell a truncated file from a complete one.
    """

    def __init__(self, content: hashlib._Hash) -> None:
        self.writer = zstandard.ZstdDecompressor().stream_writer(_HashSink(content), write_size=READ_BLOCK)
        self.frames = _ZstdFrames()

    def feed(self, data: bytes) -> None:
        self.frames.feed(data)
        try:
            self.writer.write(data)
        except zstandard.ZstdError as exc:
            raise CorruptArchive(f"zstd stream is corrupt ({exc})") from None

    def finish(self) -> None:
        if not self.frames.complete:
            raise CorruptArchive("zstd stream is truncated (ends inside a frame)")


ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class _ZstdFrames:
    """Follows zstd frame and block headers (RFC 8878) across chunks, skipping their contents."""

    def __init__(self) -> None:
        self.frames = 0
        self.header = b""  # bytes of the header being read
        self.state = "magic"  # what the next header is
        self.skip = 0  # content bytes to pass over before it
        self.checksum = False

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self.state == "magic" and not self.header and not self.skip

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self.skip:
                taken = min(self.skip, end - pos)
                self.skip -= taken
                pos += taken
                continue
            need = {"magic": 4, "descriptor": 1, "block": 3, "skippable": 4}[self.state]
            taken = min(need - len(self.header), end - pos)
            self.header += data[pos : pos + taken]
            pos += taken
            if len(self.header) == need:
                header, self.header = self.header, b""
                self._read(header)

    def _read(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        if self.state == "magic":
            if header == ZSTD_MAGIC:
                self.state = "descriptor"
            elif value in ZSTD_SKIPPABLE:
                self.state = "skippable"
            else:
                raise CorruptArchive(f"zstd stream is corrupt (no frame starts with {header.hex()})")
        elif self.state == "skippable":
            self.skip, self.state = value, "magic"
            self.frames += 1
        elif self.state == "descriptor":
            single_segment = bool(value & 0x20)
            self.checksum = bool(value & 0x04)
            content_size = (1 if single_segment else 0, 2, 4, 8)[value >> 6]
            dictionary = (0, 1, 2, 4)[value & 0x03]
            self.skip = (0 if single_segment else 1) + dictionary + content_size
            self.state = "block"
        else:  # a block header: last-block bit, type, size
            kind, size = (value >> 1) & 0x03, value >> 3
            if kind == 3:
                raise CorruptArchive("zstd stream is corrupt (reserved block type)")
            self.skip = 1 if kind == 1 else size
            if value & 0x01:  # the frame's last block, then its optional checksum
                self.skip += 4 if self.checksum else 0
                self.state = "magic"
                self.frames += 1


def measure_open_file(fd: int, file_name: str, *, verify_archive: bool = True) -> StagedFileCheck:
    """Hash, size, content fingerprint and archive soundness of an opened staged file."""
    file_hash = hashlib.sha256()
    content_hash = hashlib.sha256()
    size = 0
    decoder: _GzipContent | _ZstdContent | None = None
    archive_problem: str | None = None
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    first = True
    with os.fdopen(os.dup(fd), "rb", buffering=0) as stream:
        while n := stream.readinto(buffer):
            block = view[:n]
            file_hash.update(block)
            size += n
            if first:
                fmt = _format_of(file_name, bytes(block[:4]))
                if verify_archive and fmt is not None:
                    decoder = _GzipContent(content_hash) if fmt == "gzip" else _ZstdContent(content_hash)
                first = False
            if decoder is not None and archive_problem is None:
                try:
                    decoder.feed(bytes(block))
                except CorruptArchive as exc:
                    archive_problem = str(exc)
    if first and verify_archive and _format_of(file_name, b"") is not None:
        archive_problem = "is empty: no compressed stream at all"
    if decoder is not None and archive_problem is None:
        try:
            decoder.finish()
        except CorruptArchive as exc:
            archive_problem = str(exc)
    digest = file_hash.hexdigest()
    fingerprint = content_hash.hexdigest() if decoder is not None and archive_problem is None else digest
    return StagedFileCheck(
        file_name=file_name,
        sha256=digest,
        size=size,
        content_fingerprint=fingerprint,
        archive_problem=archive_problem,
        modified_at=os.fstat(fd).st_mtime,
    )


def still_being_written(
    check: StagedFileCheck, claimed_sha256: str | None, claimed_size: int | None, settle_seconds: int
) -> bool:
    """A file modified moments ago that does not match the agent's claim yet: judge it later.

    A file that matches is complete whatever its age; one that stopped changing is judged as it is.
    """
    if check.modified_at is None or time.time() - check.modified_at >= settle_seconds:
        return False
    return claimed_sha256 != check.sha256 or (claimed_size is not None and claimed_size != check.size)


def check_staged_file(request: StagedFileRequest, *, verify_archive: bool = True) -> StagedFileCheck:
    """Measure one staged file; unsafe or unreadable files give a check with `problem` set."""
    try:
        with open_staged_file(request.agent_dir, request.file_name) as fd:
            return measure_open_file(fd, request.file_name, verify_archive=verify_archive)
    except UnsafeFile as exc:
        return StagedFileCheck(file_name=request.file_name, problem=str(exc))
    except OSError as exc:  # e.g. an I/O error in the middle of a read
        return StagedFileCheck(
            file_name=request.file_name,
            problem=f"staged file {request.file_name} could not be read: {exc.strerror or exc}",
        )


def check_many(
    requests: Iterable[StagedFileRequest],
    *,
    workers: int,
    verify_archive: bool = True,
    measure: Callable[..., StagedFileCheck] = check_staged_file,
) -> list[StagedFileCheck]:
    """Measure files in parallel threads (hashlib, zlib and zstd release the GIL), in input order."""
    items = list(requests)
    if workers <= 1 or len(items) <= 1:
        return [measure(r, verify_archive=verify_archive) for r in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash") as pool:
        return list(pool.map(lambda r: measure(r, verify_archive=verify_archive), items))
