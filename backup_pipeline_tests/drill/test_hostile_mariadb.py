"""Hostile MariaDB dumps: a real mariadb-dump frame around an attacker's statements, drilled through
the CLI. Client commands (with and without mariadb-dump's sandbox line), files written or read
through the server or the client, a smuggled sql_mode, definers of another account, an endless
procedure and a disk-filling insert: each fails its own drill, runs nothing and writes nothing
outside the drill, and leaves nothing running. Then the layers under the guard, proven without it:
the client's sandbox mode, the restore account's rights, `local_infile`, `secure_file_priv`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.drill.restore import DrillEnvironment, StderrTail
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY2,
    MariadbDumps,
    Site,
    build_site,
    described,
    drill_processes,
    gz,
    staged,
)

SANDBOX_LINE = b"/*M!999999\\- enable the sandbox mode */ \n"
FOOTER = b"\n-- Dump completed\n"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bp-sentinels-", dir="/tmp"))
    os.chmod(folder, 0o777)  # the drill user could write here: only the defences keep it empty
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def attacks(s: Path) -> dict[str, tuple[str, str]]:
    """name: (body injected before the dump's footer, what the drill's reason says)."""
    return {
        "bang": (f"\\! touch {s}/bang\n", "client command '\\\\!'"),
        "system": (f"system touch {s}/system\n", "client command 'system'"),
        "system_statement": (f"/* quiet */ SYSTEM touch {s}/system2;\n", "client command 'system'"),
        "source": ("source /etc/passwd\n", "client command 'source'"),
        "dot": ("\\. /etc/passwd\n", "client command '\\\\.'"),
        "tee": (f"tee {s}/tee\n", "client command 'tee'"),
        "pager": (f"pager cat > {s}/pager\n", "client command 'pager'"),
        "connect": ("connect mysql localhost\n", "client command 'connect'"),
        "quit": ("quit\n", "client command 'quit'"),
        "outfile": (f"SELECT 'x' INTO OUTFILE '{s}/outfile';\n", "INTO OUTFILE"),
        "dumpfile": (f"SELECT 'x' FROM DUAL INTO\nDUMPFILE '{s}/dumpfile';\n", "INTO DUMPFILE"),
        "load_local": ("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t;\n", "LOAD DATA/XML"),
        "mode": (
            f"SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nSELECT 'a\\' \\! touch {s}/mode\n;\n",
            "client command '\\\\!'",
        ),
        "dynamic": (
            f"EXECUTE IMMEDIATE CONCAT('SELECT 1 INTO OUT', 'FILE ''{s}/dynamic''');\n",
            "dynamic SQL",
        ),
    }


def inject(frame: bytes, body: str, *, sandbox_line: bool = True) -> bytes:
    data = frame.replace(FOOTER, ("\n" + body).encode() + FOOTER, 1)
    assert data != frame
    return data if sandbox_line else data.replace(SANDBOX_LINE, b"", 1)


DEFINERS = """
CREATE TABLE who (account varchar(200));
CREATE TABLE t (a int);
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`drill_admin`@`localhost`*/ /*!50003 TRIGGER t_who AFTER INSERT ON t
FOR EACH ROW INSERT INTO who VALUES (CURRENT_USER()) */;;
DELIMITER ;
INSERT INTO t VALUES (1);
"""
ADMIN_VIEW = (
    "/*!50001 CREATE ALGORITHM=UNDEFINED */\n"
    "/*!50013 DEFINER=`drill_admin`@`localhost` SQL SECURITY DEFINER */\n"
    "/*!50001 VIEW accounts AS SELECT User FROM mysql.global_priv */;\n"
)
ENDLESS = """
DELIMITER ;;
CREATE PROCEDURE spin() BEGIN DECLARE i BIGINT DEFAULT 0; WHILE 1 DO SET i = i + 1; END WHILE; END ;;
DELIMITER ;
SET SESSION max_statement_time = 0;
CALL spin();
"""
FILLING = (
    "CREATE TABLE filler (a LONGBLOB);\nINSERT INTO filler SELECT REPEAT('x', 1000000) FROM seq_1_to_5000;\n"
)


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, mariadb_dumps: MariadbDumps, sentinels: Path) -> Site:
    dumps = {}
    for name, (body, _) in attacks(sentinels).items():
        for lined in (True, False):
            database = f"{name}_{'lined' if lined else 'bare'}"
            data = inject(mariadb_dumps.get(database), body, sandbox_line=lined)
            dumps[database] = {DAY2: staged(database, DAY2, gz(data), ".sql.gz")}
    for database, body in {
        "definers": DEFINERS,
        "admin_view": ADMIN_VIEW,
        "endless": ENDLESS,
        "filling": FILLING,
    }.items():
        data = inject(mariadb_dumps.get(database), body)
        dumps[database] = {DAY2: staged(database, DAY2, gz(data), ".sql.gz")}
    per_job = {
        "definers": {
            "restore_drill": {
                "checks": [
                    {"name": "trigger account", "sql": "SELECT account = 'drill_restore@localhost' FROM who"}
                ]
            }
        },
        "filling": {"restore_drill": {"max_bytes": "400MiB"}},
    }
    return build_site(module_workspace, dumps, per_job=per_job)


@pytest.mark.parametrize("lined", ["lined", "bare"])
@pytest.mark.parametrize("name", sorted(attacks(Path("/x"))))
def test_client_commands_files_and_smuggled_modes_are_refused(
    site: Site, sentinels: Path, drill_dir: Path, name: str, lined: str
) -> None:
    row = site.drill_json(f"{name}_{lined}", DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert attacks(sentinels)[name][1] in row["reason"], row["reason"]
    assert list(sentinels.iterdir()) == []
    assert drill_processes(drill_dir) == [], described(drill_processes(drill_dir))


def test_definers_are_the_restore_accounts(site: Site) -> None:
    """A trigger the dump gives the admin as definer runs as the restore account."""
    row = site.drill_json("definers", DAY2)
    assert row["outcome"] == "RESTORED", (row["reason"], row["checks"])
    assert row["checks"] == [{"name": "trigger account", "passed": True, "detail": "true"}]


def test_a_view_of_the_admin_over_the_servers_accounts_does_not_restore(site: Site) -> None:
    row = site.drill_json("admin_view", DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    denied = "command denied to user 'drill_restore'@'localhost' for table `mysql`.`global_priv`"
    assert denied in row["reason"], row["reason"]


def test_an_endless_procedure_is_stopped_by_the_statement_timeout(
    site: Site, monkeypatch: pytest.MonkeyPatch, drill_dir: Path
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    row = site.drill_json("endless", DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert row["reason"].startswith("cancelled after 2 s (statement timeout): a statement ran"), row["reason"]
    assert "CALL spin()" in row["reason"]
    assert row["duration_seconds"] < 60
    assert drill_processes(drill_dir) == []


def test_a_disk_filling_insert_reaches_the_drills_disk_limit(site: Site, drill_dir: Path) -> None:
    row = site.drill_json("filling", DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert row["reason"].startswith("limit reached: the restore used more than 419,430,400 bytes"), row[
        "reason"
    ]
    assert drill_processes(drill_dir) == []
    alerts = site.ws.json("notify", "alerts")
    assert any(a["event"] == "RESTORE_FAILED" and a["database_name"] == "filling" for a in alerts)


# ---------------------------------------------------------------- under the guard


def client_run(env: DrillEnvironment, sql: str, *, admin: bool = False) -> tuple[int, str]:
    """SQL fed straight to the drills' client (no guard), as the restore account (or the admin), on a
    scratch MariaDB started from the drills' template."""
    assert env.mariadb is not None
    with env.mariadb.server(Limits(env.memory_bytes, 1 << 30), "underguard") as server:
        server.create()
        server.start_from(env.mariadb.template(), {})
        client = server.client(["drill"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, admin=admin)
        errors = StderrTail(client.stderr)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(sql.encode())
        client.stdin.close()
        out = client.stdout.read()
        code = client.wait(timeout=120)
        errors.join()
        return code, out.decode() + errors.text


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("\\! touch {s}/bang\n", "Not allowed in the sandbox mode"),
        ("system touch {s}/system\n", "Not allowed in the sandbox mode"),
        ("tee {s}/tee\n", "Not allowed in the sandbox mode"),
        ("SELECT 'x' INTO OUTFILE '{s}/outfile';\n", "Access denied"),
        ("CREATE TABLE t (a text);\nLOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t;\n", "local infile"),
        ("CREATE TABLE t (a text);\nLOAD DATA INFILE '/etc/passwd' INTO TABLE t;\n", "Access denied"),
    ],
)
def test_without_the_guard_the_client_and_the_server_refuse_too(
    drill_environment: DrillEnvironment, sentinels: Path, sql: str, words: str
) -> None:
    code, output = client_run(drill_environment, sql.format(s=sentinels))
    assert code != 0 and words.lower() in output.lower(), output
    assert list(sentinels.iterdir()) == []


def test_without_the_guard_server_files_read_as_nothing(drill_environment: DrillEnvironment) -> None:
    code, output = client_run(drill_environment, "SELECT LOAD_FILE('/etc/passwd') IS NULL AS hidden;\n")
    assert code == 0 and output.split() == ["hidden", "1"], output


def test_even_with_the_file_right_the_server_writes_only_in_its_empty_folder(
    drill_environment: DrillEnvironment, sentinels: Path
) -> None:
    """secure_file_priv: the admin (who has FILE, and whom no drill ever connects as) cannot write a
    file outside the server's own empty folder either."""
    code, output = client_run(
        drill_environment, f"SELECT 'x' INTO OUTFILE '{sentinels}/admin';\n", admin=True
    )
    assert code != 0 and "--secure-file-priv" in output, output
    assert list(sentinels.iterdir()) == []
