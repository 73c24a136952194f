"""Writing the daily fleet digest's CSV file under the product's home, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from backup_pipeline.digest.build import FleetDigest
from backup_pipeline.digest.render import to_csv


def write_csv(digest: FleetDigest, directory: Path) -> Path:
    """Write `digest_<day>.csv` atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"digest_{digest.day.isoformat()}.csv"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(to_csv(digest))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
