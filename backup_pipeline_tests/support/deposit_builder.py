"""Precise deposit scenarios for tests: one agent's reports and staged dumps, written on real disk."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Agent:
    """One agent folder under the deposit root."""

    root: Path
    agent_id: str

    @property
    def folder(self) -> Path:
        return self.root / self.agent_id

    @property
    def log(self) -> Path:
        path = self.folder / "log"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def archive(self) -> Path:
        return self.log / "_archive"

    def stage(self, name: str, data: bytes, folder: str = "database") -> Path:
        path = self.folder / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def database_section(
        self,
        staged_name: str,
        packed: bytes,
        *,
        backup: bool = True,
        compress: bool = True,
        transfer: bool = True,
        error: str | None = None,
        logs: str | None = None,
        agent_hash: str | None = None,
        agent_size: int | None = None,
    ) -> dict[str, Any]:
        section: dict[str, Any] = {
            "BACKUP": {
                "status": backup,
                "start_time": None,
                "end_time": None,
                "sha256_checksum": "ab" * 32,
                "size": 10,
            },
            "COMPRESS": {
                "status": compress,
                "sha256_checksum": agent_hash if agent_hash is not None else sha(packed),
                "size": agent_size if agent_size is not None else len(packed),
            },
            "TRANSFER": {"status": transfer, "error_message": error},
            "staged_file_name": staged_name,
        }
        if logs:
            section["logs_summary"] = logs
        return section

    def report(
        self,
        end: datetime,
        databases: dict[str, Any],
        *,
        name: str | None = None,
        extra: dict[str, Any] | None = None,
        raw: str | bytes | None = None,
    ) -> Path:
        """Write a canonical report ending at `end` (file named after `end`), mtime in the past."""
        payload = {
            "operation_start_time": (end - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operation_end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "agent_id": self.agent_id,
            "overall_status": "completed",
            "databases": databases,
        } | (extra or {})
        path = self.log / (name or f"{end:%Y%m%d_%H%M%S}_{self.agent_id}.json")
        content = raw if raw is not None else json.dumps(payload)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        os.utime(path, (end.timestamp(), end.timestamp()))
        return path

    def backup(
        self, end: datetime, database: str, data: bytes, *, compression: str = "gz", **kwargs: Any
    ) -> Path:
        """Stage a dump of `database` and write a report claiming it, in one go."""
        packed = gz(data, mtime=int(end.timestamp())) if compression == "gz" else zst(data)
        name = f"{database}.sql.gz" if compression == "gz" else f"{database}.zst"
        self.stage(name, packed)
        return self.report(end, {database: self.database_section(name, packed, **kwargs)})
