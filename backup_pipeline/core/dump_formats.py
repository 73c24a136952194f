"""What a staged dump is, told from its bytes (never from its name): the compression around it, then
what the first decompressed bytes say.

Drillable: PostgreSQL plain SQL written by pg_dump, pg_dump's custom and tar archives, and the SQL
of `mariadb-dump`/`mysqldump` (restored into MariaDB), each bare or inside gzip or zstd. Everything
else gets a kind in words (a SQL Server backup, a pg_dumpall cluster dump, unknown bytes…) and is not
drillable: shown as such, never as a failed restore.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024  # how much of the decompressed dump the detection looks at


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class DumpFormat(enum.StrEnum):
    PLAIN = "plain"  # SQL for psql
    CUSTOM = "custom"  # pg_dump -Fc, for pg_restore
    TAR = "tar"  # pg_dump -Ft, for pg_restore
    MARIADB = "mariadb"  # SQL for the mariadb client, from mariadb-dump or mysqldump


class Engine(enum.StrEnum):
    """The server a dump is restored into."""

    POSTGRESQL = "postgresql"
    MARIADB = "mariadb"


_COMPRESSIONS = {b"\x1f\x8b": Compression.GZIP, b"\x28\xb5\x2f\xfd": Compression.ZSTD}
_UNSUPPORTED_COMPRESSIONS = {
    b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ\x00": "xz-compressed data",
    b"\x04\x22\x4d\x18": "lz4-compressed data",
    b"PK\x03\x04": "a zip archive",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
}


@dataclass(frozen=True)
class Detected:
    """What a dump is. `format` is None when it is not a PostgreSQL dump a drill can restore."""

    kind: str  # in words, for people: "PostgreSQL plain SQL dump (pg_dump 18.4), zstd"
    compression: Compression | None
    format: DumpFormat | None = None
    pg_dump_version: str | None = None
    server_version: str | None = None  # a MariaDB/MySQL dump's: the server it was dumped from
    database: str | None = None  # a MariaDB/MySQL dump's header names the database dumped
    engine_hint: Engine | None = None  # what a dump that is not drillable was for, when told

    @property
    def drillable(self) -> bool:
        return self.format is not None and self.compression is not None

    @property
    def engine(self) -> Engine | None:
        if self.format is DumpFormat.MARIADB:
            return Engine.MARIADB
        return Engine.POSTGRESQL if self.format is not None else self.engine_hint

    @property
    def from_mysql(self) -> bool:
        """Dumped from a MySQL server (not MariaDB): its dialect may be one MariaDB lacks."""
        return self.server_version is not None and "mariadb" not in self.server_version.lower()


def compression_of(head: bytes) -> Compression | str:
    """The compression of a file from its first bytes, or words naming one drills do not read."""
    for magic, compression in _COMPRESSIONS.items():
        if head.startswith(magic):
            return compression
    for magic, name in _UNSUPPORTED_COMPRESSIONS.items():
        if head.startswith(magic):
            return name
    return Compression.NONE


def unsupported(what: str) -> Detected:
    return Detected(kind=what, compression=None)


_PG_DUMP_HEADER = re.compile(rb"^--[ \t]*PostgreSQL database dump[ \t]*\r?$", re.MULTILINE)
_PG_DUMPALL_HEADER = re.compile(rb"^--[ \t]*PostgreSQL database cluster dump", re.MULTILINE)
_PG_DUMP_VERSION = re.compile(rb"^--[ \t]*Dumped by pg_dump version ([0-9][0-9A-Za-z.]*)", re.MULTILINE)
_MYSQL = re.compile(
    rb"^(?:--[ \t]*(?:MySQL|MariaDB) dump|/\*!4\d{4} SET |/\*M?!999999\\- enable the sandbox)", re.MULTILINE
)
_MYSQL_TOOL = re.compile(rb"^--[ \t]*(MySQL|MariaDB) dump ([0-9.]+)", re.MULTILINE)
_MYSQL_SERVER = re.compile(rb"^--[ \t]*Server version\t?[ \t]*([0-9][0-9A-Za-z.+~_-]*)", re.MULTILINE)
_MYSQL_DATABASE = re.compile(rb"^--[ \t]*Host: [^\n]*?[ \t]Database: ([^\n]*?)[ \t\r]*$", re.MULTILINE)
_SQL_WORDS = re.compile(rb"\b(?:CREATE|INSERT|ALTER|COPY|SELECT|DROP|BEGIN)\b", re.IGNORECASE)


def detect(head: bytes, compression: Compression) -> Detected:
    """What the first decompressed bytes of a dump (`head`) are."""
    suffix = "" if compression is Compression.NONE else f", {compression.value}"
    if not head:
        return Detected(f"an empty file{suffix}", compression)
    if head.startswith(b"PGDMP"):
        version = _archive_version(head)
        return Detected(
            f"PostgreSQL custom-format archive{version and f' (pg_dump {version})'}{suffix}",
            compression,
            DumpFormat.CUSTOM,
            version or None,
        )
    if _is_pg_tar(head):
        return Detected(f"PostgreSQL tar-format archive{suffix}", compression, DumpFormat.TAR)
    foreign = _foreign_kind(head)
    if foreign:
        return Detected(f"{foreign}{suffix}", compression)
    text = head[:HEAD_BYTES]
    if _PG_DUMPALL_HEADER.search(text):
        return Detected(f"a pg_dumpall cluster dump (whole clusters are not drilled){suffix}", compression)
    if _PG_DUMP_HEADER.search(text):
        match = _PG_DUMP_VERSION.search(text)
        version = match.group(1).decode("ascii") if match else None
        label = f" (pg_dump {version})" if version else ""
        return Detected(f"PostgreSQL plain SQL dump{label}{suffix}", compression, DumpFormat.PLAIN, version)
    if _MYSQL.search(text):
        return _mysql_family(text, compression, suffix)
    if _looks_like_text(text):
        if _SQL_WORDS.search(text):
            return Detected(f"SQL text without pg_dump's header (not a PostgreSQL dump){suffix}", compression)
        return Detected(f"text that is not a database dump{suffix}", compression)
    return Detected(f"unknown binary data (starts with {head[:8].hex(' ')}){suffix}", compression)


def _mysql_family(text: bytes, compression: Compression, suffix: str) -> Detected:
    """A dump from mariadb-dump or mysqldump: its tool, server and database from its header comments
    (a dump written without comments has none: a MySQL/MariaDB dump all the same)."""
    tool = _MYSQL_TOOL.search(text)
    server = _MYSQL_SERVER.search(text)
    database = _MYSQL_DATABASE.search(text)
    version = server.group(1).decode("ascii", "replace") if server else None
    maker = tool.group(1).decode() if tool else None
    mysql = maker == "MySQL" and not (version and "mariadb" in version.lower())
    family = "MySQL" if mysql else "MariaDB" if maker or version else "MySQL/MariaDB"
    details = []
    if tool:
        details.append(f"{'mysqldump' if maker == 'MySQL' else 'mariadb-dump'} {tool.group(2).decode()}")
    if version:
        details.append(f"server {version}")
    label = f"{family} dump" + (f" ({', '.join(details)})" if details else "") + suffix
    name = database.group(1).decode("utf-8", "replace") if database else None
    if database is not None and not name:
        return Detected(
            f"a {family} dump of every database of a server (whole servers are not drilled){suffix}",
            compression,
            engine_hint=Engine.MARIADB,
        )
    return Detected(label, compression, DumpFormat.MARIADB, server_version=version, database=name or None)


def _archive_version(head: bytes) -> str:
    """pg_dump's version from a custom archive's header: magic, format version, sizes, compression,
    creation time, then length-prefixed strings (database name, server version, pg_dump version)."""
    match = re.search(rb"\x00\x04\x00\x00\x00(\d+\.\d+)\x00\x04\x00\x00\x00(\d+\.\d+)", head[:512])
    return match.group(2).decode("ascii") if match else ""


def _is_pg_tar(head: bytes) -> bool:
    return len(head) >= 263 and head[257:262] == b"ustar" and head[:8] == b"toc.dat\x00"


def _foreign_kind(head: bytes) -> str | None:
    if head.startswith(b"TAPE"):
        return "a Microsoft SQL Server backup (MTF)"
    if head.startswith(b"SQLite format 3\x00"):
        return "an SQLite database file"
    if b"EXPORT:V" in head[:64]:
        return "an Oracle export (exp)"
    if head[257:262] == b"ustar":
        return "a tar archive (not written by pg_dump)"
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return False
    printable = sum(1 for b in sample if b >= 0x20 or b in (0x09, 0x0A, 0x0D))
    return printable >= 0.95 * len(sample)
