"""The server's own measurement of a staged dump, in one streaming pass.

One read of the file gives its SHA-256 and size (what the agent claims after compression), its
content fingerprint (BLAKE3 of the decompressed bytes, named by `core.fingerprints`: two gzip files
differing only in header times are the same content) and whether the archive decompresses cleanly.
gzip is inflated by ISA-L (python-isal, several times zlib's speed), zstd by libzstd. Files are
spread over worker threads, largest first (hashlib, blake3, ISA-L and zstd release the GIL); a large
file measured while a core would otherwise idle hashes in helper threads beside its decompression.
Memory stays constant whatever the file size: input is read in blocks, decompressed output is
bounded per step, and at most a few blocks wait for each helper.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import blake3
import zstandard
from isal import igzip_lib

from backup_pipeline.adapters.deposit import UnsafeFile, open_staged_file
from backup_pipeline.core import fingerprints
from backup_pipeline.core.domain import StagedFileCheck
from backup_pipeline.core.rules import EXPANDS_BEYOND

READ_BLOCK = 1 << 20
PIPELINE_MIN_BYTES = 16 << 20  # below this, helper threads cost more than they overlap
PIPELINE_DEPTH = 8  # blocks waiting for a helper: bounds memory (and lets the reader run ahead)
THREAD_MIN_BYTES = 1 << 20  # smaller files are measured by the caller's thread
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CorruptArchive(ValueError):
    pass


class ExpandsTooMuch(CorruptArchive):
    """The content grew past a limit of ExpansionLimits: decompression stops there."""


# A small archive may always expand to this many times RATIO_FLOOR bytes (a 200-byte gzip of 1 MB of
# blank rows is no bomb); beyond, to `ratio` times its own size.
RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class ExpansionLimits:
    """How far a staged archive may decompress: `ratio` times its size (at least `ratio` MiB), and
    `max_bytes` whatever its size. Past either, a decompression bomb costs no more than that."""

    ratio: int = 1000
    max_bytes: int = 1 << 40

    def allowed(self, archive_size: int) -> tuple[int, str]:
        """The most content an archive of `archive_size` bytes may hold, and the limit in words."""
        by_ratio = self.ratio * max(archive_size, RATIO_FLOOR)
        if by_ratio < self.max_bytes:
            return by_ratio, (
                f"{EXPANDS_BEYOND} {by_ratio} bytes, {self.ratio} times its {archive_size} bytes "
                "(BACKUP_PIPELINE_MAX_EXPANSION_RATIO)"
            )
        return (
            self.max_bytes,
            f"{EXPANDS_BEYOND} {self.max_bytes} bytes (BACKUP_PIPELINE_MAX_DECOMPRESSED_BYTES)",
        )


class _Bounded:
    """A content sink that refuses to take more than `allowed` bytes (ExpandsTooMuch)."""

    def __init__(self, sink: _Sink, allowed: int, message: str) -> None:
        self.sink, self.allowed, self.message, self.taken = sink, allowed, message, 0

    def update(self, data: bytes) -> None:
        self.taken += len(data)
        if self.taken > self.allowed:
            raise ExpandsTooMuch(self.message)
        self.sink.update(data)


@dataclass(frozen=True)
class StagedFileRequest:
    agent_dir: Path
    file_name: str
    # Fingerprint algorithms wanted besides the current one: the previous success's, when it was
    # measured with another (see core.fingerprints.wanted_with).
    also: frozenset[str] = field(default_factory=frozenset)
    expected_size: int | None = None  # the agent's claim: larger files are started first


class _Hash(Protocol):
    def update(self, data: Any, /) -> object: ...

    def hexdigest(self) -> str: ...


class _Sink(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Hashes:
    """Several hashes fed the same bytes."""

    def __init__(self, hashes: list[_Hash]) -> None:
        self.hashes = hashes

    def update(self, data: bytes) -> None:
        for h in self.hashes:
            h.update(data)


class _Helper:
    """A thread that feeds blocks to a sink, so hashing overlaps the caller's reading and
    decompressing. The queue is bounded: the caller waits rather than buffer the file."""

    _DONE = object()

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.blocks: queue.Queue[Any] = queue.Queue(PIPELINE_DEPTH)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="hash-helper", daemon=True)
        self.thread.start()

    def update(self, data: bytes) -> None:
        self.blocks.put(data)

    def close(self) -> None:
        self.blocks.put(self._DONE)
        self.thread.join()
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        while (data := self.blocks.get()) is not self._DONE:
            if self.failure is None:
                try:
                    self.sink.update(data)
                except BaseException as exc:  # reported by close(); keep taking blocks meanwhile
                    self.failure = exc


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
    """Inflates a (possibly multi-member) gzip stream into a sink, bounded in memory.

    ISA-L's decompressor keeps its pending input itself (zlib-style objects copy their unconsumed
    tail at every capped call: a third slower here) and checks each member's CRC-32 and length."""

    def __init__(self, content: _Sink) -> None:
        self.content = content
        self.stream: Any = None  # one decompressor per gzip member
        self.members = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self.stream is None:
                # ISA-L waits for a whole header before judging it, zlib rejects a wrong magic at
                # once: bytes after a member that cannot start one are corrupt, not a cut member.
                if len(data) >= len(GZIP_MAGIC) and not data.startswith(GZIP_MAGIC):
                    raise CorruptArchive(
                        f"gzip stream is corrupt (no gzip member starts with {data[:2].hex()})"
                    )
                self.stream = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
            self._inflate(data)
            if self.stream.eof:
                data, self.stream = self.stream.unused_data, None
                self.members += 1
            else:
                data = b""  # all taken in: the member goes on in the next block

    def _inflate(self, data: bytes) -> None:
        stream = self.stream
        try:
            out = stream.decompress(data, READ_BLOCK)
            while True:
                if out:
                    self.content.update(out)
                if stream.eof or stream.needs_input:
                    return
                out = stream.decompress(b"", READ_BLOCK)  # output was capped: collect the rest
        except igzip_lib.IsalError as exc:
            raise CorruptArchive(f"gzip stream is corrupt ({exc})") from None

    def finish(self) -> None:
        if self.stream is not None or self.members == 0:
            raise CorruptArchive("gzip stream is truncated (ends before its end-of-stream marker)")


class _SinkWriter:
    """Where the zstd decompressor writes its output: straight into the content sink."""

    def __init__(self, content: _Sink) -> None:
        self.content = content

    def write(self, data: bytes) -> int:
        self.content.update(bytes(data))  # a copy only if handed a view: a helper may hash it later
        return len(data)


class _ZstdContent:
    """Decompresses a (possibly multi-frame) zstd stream into a sink, bounded in memory.

    A zstd block can expand 128 KiB out of 4 bytes, so a decompression call fed a slice of a bomb
    would build gigabytes in one go: the stream writer hands its output on in pieces of at most
    READ_BLOCK instead. It does not say whether the input stopped inside a frame, so the frames'
    own headers are followed alongside (_ZstdFrames) to tell a truncated file from a complete one.
    """

    def __init__(self, content: _Sink) -> None:
        self.writer = zstandard.ZstdDecompressor().stream_writer(_SinkWriter(content), write_size=READ_BLOCK)
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


_CONTENT_HASHES: dict[str, Callable[[], _Hash]] = {
    fingerprints.BLAKE3: blake3.blake3,
    fingerprints.SHA256: hashlib.sha256,
}


class _Pass:
    """One streaming pass over a file: its hash, and the content's hashes behind the decoder."""

    def __init__(
        self,
        file_name: str,
        verify_archive: bool,
        also: frozenset[str],
        pipelined: bool,
        limit: tuple[int, str] | None = None,
    ) -> None:
        self.file_name, self.verify_archive, self.pipelined, self.limit = (
            file_name,
            verify_archive,
            pipelined,
            limit,
        )
        self.file_hash = hashlib.sha256()
        wanted = {fingerprints.CONTENT, *also} if verify_archive else set()
        self.content = {a: make() for a, make in _CONTENT_HASHES.items() if a in wanted}
        self.helpers: list[_Helper] = []
        self.file_sink = self._sink(self.file_hash)
        self.content_sink = self._sink(_Hashes(list(self.content.values())))
        self.size = 0
        self.decoder: _GzipContent | _ZstdContent | None = None
        self.archive_problem: str | None = None
        self.started = False

    def _sink(self, sink: _Sink) -> _Sink:
        if not self.pipelined:
            return sink
        helper = _Helper(sink)
        self.helpers.append(helper)
        return helper

    def feed(self, block: bytes) -> None:
        self.file_sink.update(block)
        self.size += len(block)
        if not self.started:
            self.started = True
            fmt = _format_of(self.file_name, block[:4])
            if self.verify_archive and fmt is not None:
                sink = self.content_sink if self.limit is None else _Bounded(self.content_sink, *self.limit)
                self.decoder = (_GzipContent if fmt == "gzip" else _ZstdContent)(sink)
        if self.archive_problem is not None or not self.verify_archive:
            return
        if self.decoder is None:
            self.content_sink.update(block)  # not compressed: the content is the file
            return
        try:
            self.decoder.feed(block)
        except CorruptArchive as exc:
            self.archive_problem = str(exc)

    def finish(self) -> None:
        if not self.started and self.verify_archive and _format_of(self.file_name, b"") is not None:
            self.archive_problem = "is empty: no compressed stream at all"
        if self.decoder is not None and self.archive_problem is None:
            try:
                self.decoder.finish()
            except CorruptArchive as exc:
                self.archive_problem = str(exc)

    def close(self) -> None:
        """Wait for the helpers (every block handed to them is hashed before a digest is read)."""
        for helper in self.helpers:
            helper.close()

    def fingerprint(self, digest: str, also: frozenset[str]) -> str:
        if not self.verify_archive or self.archive_problem is not None:
            return fingerprints.make({fingerprints.SHA256_FILE: digest})
        tokens = {a: h.hexdigest() for a, h in self.content.items()}
        if fingerprints.SHA256_FILE in also:
            tokens[fingerprints.SHA256_FILE] = digest
        return fingerprints.make(tokens)


def measure_open_file(
    fd: int,
    file_name: str,
    *,
    verify_archive: bool = True,
    also: frozenset[str] = frozenset(),
    alone: bool = True,
    limits: ExpansionLimits | None = None,
) -> StagedFileCheck:
    """Hash, size, content fingerprint and archive soundness of an opened staged file; a compressed
    one is decompressed only as far as `limits` allow (default: ExpansionLimits()).

    `alone`: no other file is measured meanwhile, so helper threads would find idle cores (they
    cost a fifth more CPU in hand-overs and cache misses: not worth it when every core is busy)."""
    size = os.fstat(fd).st_size
    pipelined = alone and verify_archive and size >= PIPELINE_MIN_BYTES
    limit = (limits or ExpansionLimits()).allowed(size)
    measurement = _Pass(file_name, verify_archive, also, pipelined, limit)
    try:
        while block := os.read(fd, READ_BLOCK):
            measurement.feed(block)
        measurement.finish()
    finally:
        measurement.close()
    digest = measurement.file_hash.hexdigest()
    return StagedFileCheck(
        file_name=file_name,
        sha256=digest,
        size=measurement.size,
        content_fingerprint=measurement.fingerprint(digest, also),
        archive_problem=measurement.archive_problem,
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


def check_staged_file(
    request: StagedFileRequest,
    *,
    verify_archive: bool = True,
    alone: bool = True,
    limits: ExpansionLimits | None = None,
) -> StagedFileCheck:
    """Measure one staged file; unsafe or unreadable files give a check with `problem` set."""
    try:
        with open_staged_file(request.agent_dir, request.file_name) as fd:
            return measure_open_file(
                fd,
                request.file_name,
                verify_archive=verify_archive,
                also=request.also,
                alone=alone,
                limits=limits,
            )
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
    limits: ExpansionLimits | None = None,
    measure: Callable[..., StagedFileCheck] = check_staged_file,
) -> list[StagedFileCheck]:
    """Measure files in parallel threads (hashlib, blake3, ISA-L and zstd release the GIL), in
    input order. The largest files start first, so the last ones to finish are small; files the
    agent says are small are measured here meanwhile (for them a thread's hand-over costs more
    than the hashing, which holds the GIL most of the time). With fewer files than workers a core
    would idle: each file is then measured `alone` (with helper threads)."""
    items = list(requests)
    order = sorted(range(len(items)), key=lambda i: -_size_hint(items[i]))
    large = [i for i in order if _size_hint(items[i]) >= THREAD_MIN_BYTES]
    alone = len(large) < workers
    results: dict[int, StagedFileCheck] = {}
    if workers <= 1 or len(large) <= 1:
        large = []  # measured below, in this thread
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
        futures = {
            i: pool.submit(measure, items[i], verify_archive=verify_archive, alone=alone, limits=limits)
            for i in large
        }
        for i in order:
            if i not in futures:
                results[i] = measure(
                    items[i], verify_archive=verify_archive, alone=alone and workers > 1, limits=limits
                )
        results.update((i, future.result()) for i, future in futures.items())
    return [results[i] for i in range(len(items))]


def _size_hint(request: StagedFileRequest) -> int:
    """The agent's claimed size; unknown counts as large (the thread pool is the safe choice)."""
    return THREAD_MIN_BYTES if request.expected_size is None else request.expected_size
