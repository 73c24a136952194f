"""Reading a staged dump for a restore drill: hashed as it is read, decompressed on the fly.

The file is the descriptor `adapters.deposit.open_staged_file` opened safely (no link followed,
regular file only). Decompressed output is produced in bounded pieces whatever the input, so a
decompression bomb costs time, never memory; the drill caps the total.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator

import zstandard

from backup_pipeline.core.dump_formats import HEAD_BYTES, Compression

READ_BLOCK = 1 << 20


class DumpUnreadable(ValueError):
    """The staged dump cannot be read or decompressed; the message says why."""


class TooLarge(DumpUnreadable):
    """The dump's content goes beyond the bytes it may take (a bomb, or a limit to raise)."""


class HashingReader(io.RawIOBase):
    """The file from its first byte, SHA-256 and size kept up to date as it is read."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd, self._offset = fd, 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = os.preadv(self._fd, [buffer], self._offset)
        self.sha256.update(memoryview(buffer)[:n])
        self._offset += n
        return n

    def chunks(self, block: int) -> Iterator[bytes]:
        """The rest of the file in pieces of `block` bytes, each read once (no copy on the way)."""
        while data := os.pread(self._fd, block, self._offset):
            self.sha256.update(data)
            self._offset += len(data)
            yield data

    @property
    def bytes_read(self) -> int:
        return self._offset


def file_sha256(fd: int) -> str:
    """The whole file's SHA-256 (from its first byte, whatever the descriptor's offset)."""
    reader = HashingReader(fd)
    buffer = bytearray(READ_BLOCK)
    while reader.readinto(buffer):
        pass
    return reader.sha256.hexdigest()


def head(fd: int, compression: Compression) -> bytes:
    """The first decompressed bytes (up to HEAD_BYTES), for telling the format."""
    out = bytearray()
    try:
        for chunk in decompressed(HashingReader(fd), compression, block=HEAD_BYTES):
            out += chunk
            if len(out) >= HEAD_BYTES:
                break
    except DumpUnreadable:
        pass  # what decompressed before the damage still tells the format
    return bytes(out[:HEAD_BYTES])


def decompressed(reader: HashingReader, compression: Compression, block: int = READ_BLOCK) -> Iterator[bytes]:
    """The dump's content in pieces of at most `block` bytes."""
    if compression is Compression.ZSTD:
        yield from _unzstd(reader, block)
    elif compression is Compression.GZIP:
        yield from _gunzip(reader, block)
    else:
        yield from reader.chunks(block)


def _unzstd(reader: HashingReader, block: int) -> Iterator[bytes]:
    stream = zstandard.ZstdDecompressor().stream_reader(reader, read_size=READ_BLOCK, read_across_frames=True)
    try:
        while data := stream.read(block):
            yield data
    except zstandard.ZstdError as exc:
        raise DumpUnreadable(f"the zstd stream does not decompress ({exc})") from None


def _gunzip(reader: HashingReader, block: int) -> Iterator[bytes]:
    stream, ended = zlib.decompressobj(wbits=31), False
    try:
        while raw := reader.read(READ_BLOCK):
            data = raw
            while data:
                out = stream.decompress(data, block)
                if out:
                    yield out
                if stream.eof:  # a gzip member ended: another may follow
                    data, stream, ended = stream.unused_data, zlib.decompressobj(wbits=31), True
                    continue
                ended = False
                data = stream.unconsumed_tail
                while not data and len(out) == block:  # output was capped: collect what zlib holds
                    out = stream.decompress(b"", block)
                    if out:
                        yield out
    except zlib.error as exc:
        raise DumpUnreadable(f"the gzip stream does not decompress ({exc})") from None
    if not ended:
        raise DumpUnreadable("the gzip stream is truncated")


def write_decompressed(
    reader: HashingReader,
    compression: Compression,
    target: int,
    cap: int,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Decompress (or copy, without compression) into the file `target`: at most `cap` bytes, TooLarge
    beyond; stops early when `stop()` says so. Returns the bytes written."""
    written = 0
    for chunk in decompressed(reader, compression):
        written += len(chunk)
        if written > cap:
            raise TooLarge(
                f"the archive decompresses to more than {cap:,} bytes (restore_drill.max_bytes): "
                "stopped there (a decompression bomb, or raise the limit)"
            )
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]
        if stop():
            break
    return written
