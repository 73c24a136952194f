"""How many bytes measuring a staged dump will read, for spreading the work: never through a link."""

from __future__ import annotations

from pathlib import Path

from backup_pipeline.adapters.deposit import staged_file_size


def test_sizes_count_regular_files_only(tmp_path: Path) -> None:
    agent = tmp_path / "AGENT"
    (agent / "database").mkdir(parents=True)
    (agent / "database" / "compta_db.sql.gz").write_bytes(b"x" * 1234)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"y" * 10**6)
    (agent / "database" / "link.sql.gz").symlink_to(outside)
    (agent / "databases").mkdir()
    (agent / "databases" / "other.zst").write_bytes(b"z" * 99)

    assert staged_file_size(agent, "compta_db.sql.gz") == 1234
    assert staged_file_size(agent, "other.zst") == 99  # the alternative folder, as measuring reads it
    assert staged_file_size(agent, "link.sql.gz") == 0
    assert staged_file_size(agent, "absent.sql.gz") == 0
    assert staged_file_size(agent, "../outside.bin") == 0
