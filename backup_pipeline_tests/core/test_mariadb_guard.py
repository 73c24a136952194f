"""The guard between a MariaDB/MySQL dump and the `mariadb` client: what the client would run itself is
refused, what needs another account or database is left out, a cut dump is refused — whatever the
chunks the dump arrives in. The cases mirror the client's own lexer (client/mysql.cc, MariaDB 10.11):
backslash commands outside quoted strings and `/* */` comments, named commands as a statement's first
word, `#` and `-- ` comments, `/*! */` executable comments, DELIMITER, and strings read by sql_mode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.core.mariadb_guard import MariadbScriptGuard, ScriptRefused

SANDBOX = b"/*M!999999\\- enable the sandbox mode */ \n"
HEAD = (
    b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
    b"-- Host: localhost    Database: shop\n"
    b"-- ------------------------------------------------------\n-- Server version\t10.11.19-MariaDB\n\n"
    b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
    b"/*!40101 SET NAMES utf8mb4 */;\n"
    b"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n"
    b"DROP TABLE IF EXISTS `t`;\n"
    b"CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `s` varchar(20) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n"
    b") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
    b"LOCK TABLES `t` WRITE;\n"
    b"INSERT INTO `t` VALUES\n(1,'it\\'s \\\\ a \\\\! \\'; \\\\! x'),\n"
    b"(2,NULL),(3,'-- not a comment'),(-4,'#');\n"
    b"UNLOCK TABLES;\n"
)
TAIL = b"/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\n-- Dump completed on 2025-11-21 13:00:00\n"


def dump(body: bytes = b"", *, sandbox: bool = True, tail: bytes = TAIL) -> bytes:
    return (SANDBOX if sandbox else b"") + HEAD + body + tail


def guarded(
    data: bytes, chunk: int = 1 << 20, database: str | None = "shop"
) -> tuple[bytes, MariadbScriptGuard]:
    guard = MariadbScriptGuard(max_bytes=1 << 30, database=database)
    out = bytearray()
    for i in range(0, len(data), chunk):
        out += guard.feed(data[i : i + chunk])
    out += guard.finish()
    return bytes(out), guard


def refused(data: bytes, chunk: int = 1 << 20) -> ScriptRefused:
    with pytest.raises(ScriptRefused) as caught:
        guarded(data, chunk)
    return caught.value


# ---------------------------------------------------------------- what mariadb-dump writes passes


def test_a_sound_dump_passes_unchanged_but_its_sandbox_line() -> None:
    data = dump()
    out, guard = guarded(data)
    assert out == data[len(SANDBOX) - 1 :]  # the line is left out, its newline kept
    assert out.count(b"\n") == data.count(b"\n")
    assert guard.footer_seen and not guard.left_out


def test_delimiters_triggers_views_and_routines_pass_without_their_definers() -> None:
    body = (
        b"INSERT INTO `t` VALUES (5,'back\\\\slash');\n"
        b"/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;\n"
        b"/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION' */ ;\n"
        b"DELIMITER ;;\n"
        b"/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t "
        b"FOR EACH ROW SET NEW.s = 'x;y' \n*/;;\n"
        b"CREATE DEFINER=`root`@`%` PROCEDURE `p`()\nBEGIN\n  SELECT 1;\n"
        b"  EXECUTE IMMEDIATE 'SELECT 2';\nEND ;;\n"
        b"DELIMITER ;\n"
        b"/*!50003 SET sql_mode              = @saved_sql_mode */ ;\n"
        b"/*!50001 CREATE ALGORITHM=UNDEFINED */\n"
        b"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
        b"/*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */;\n"
    )
    out, guard = guarded(dump(body))
    assert b"DEFINER=" not in out and out.count(b"SQL SECURITY DEFINER") == 1
    assert b"TRIGGER tr BEFORE INSERT" in out and b"PROCEDURE `p`()" in out
    assert guard.left_out == {"definers": 3}


def test_rows_pass_whole_with_their_comments_and_odd_strings() -> None:
    rows = (
        b"INSERT INTO `t` VALUES\n(1,'a;b'),\n(2,NULL)\n# a comment\n,(3,'-- x')-- another\n,(-4,'#'),\n"
        b"(5,'it\\'s');\nINSERT INTO `t` VALUES\n(6,'x');\n"
    )
    out, guard = guarded(dump(rows))
    assert rows in out and guard.statements >= 2


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 4096])
def test_any_chunking_gives_the_same_output(chunk: int) -> None:
    data = dump(b"DELIMITER ;;\nCREATE PROCEDURE p() BEGIN SELECT 1; END ;;\nDELIMITER ;\n")
    assert guarded(data, chunk)[0] == guarded(data)[0]


def test_the_databases_statements_of_a_databases_dump_are_left_out() -> None:
    body = (
        b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\n"
        b"USE `shop`;\n"
    )
    out, guard = guarded(dump(body))
    assert b"CREATE DATABASE" not in out and b"USE" not in out
    assert guard.created_database == "shop"
    assert guard.left_out == {"database (mariadb-dump --databases)": 2}


def test_replication_and_accounts_are_left_out() -> None:
    body = (
        b"SET @MYSQLDUMP_TEMP_LOG_BIN = @@SESSION.SQL_LOG_BIN;\nSET @@SESSION.SQL_LOG_BIN= 0;\n"
        b"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5';\n"
        b"CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4;\n"
        b"GRANT ALL ON *.* TO 'x'@'%';\nCREATE USER 'y'@'%';\n"
    )
    out, guard = guarded(dump(body))
    assert b"GTID" not in out and b"MASTER" not in out and b"GRANT" not in out
    assert guard.left_out == {"replication": 4, "users and privileges": 2}


# ---------------------------------------------------------------- what the client would run itself


@pytest.mark.parametrize(
    "body",
    [
        b"\\! touch /tmp/x\n",
        b"SELECT 1 \\! touch /tmp/x\n;\n",
        b"/*!40101 SET NAMES utf8mb4 \\! id */;\n",
        b"\\. /etc/passwd\n",
        b"\\T /tmp/tee\n",
        b"\\C big5\n",
        b"\\r\n",
        b"/*M!999999\\- enable the sandbox mode */\n",  # a second one: not the first line
        b"INSERT INTO t VALUES\n(1,'a'),\n(2,'b')\n\\! touch /tmp/x\n;\n",  # among rows
        b"INSERT INTO t VALUES\n(1,'a;'),\n(2,'b')\n\\! touch /tmp/x\n;\n",  # after a ';' in a string
    ],
)
def test_backslash_commands_are_refused(body: bytes) -> None:
    assert "client command" in refused(dump(body)).reason


@pytest.mark.parametrize(
    "body",
    [
        b"system touch /tmp/x\n",
        b"SYSTEM touch /tmp/x;\n",
        b"/* hidden */ system touch /tmp/x;\n",
        b"source /etc/passwd\n",
        b"tee /tmp/out\n",
        b"pager cat > /tmp/out\n",
        b"connect other localhost\n",
        b"quit\n",
        b"exit\n",
        b"charset big5\n",
        b"edit\n",
        b"?\n",
        b"SYST\xc9M touch /tmp/x\n",  # latin1's collation takes \xc9 for E
        b"SELECT 1; system touch /tmp/x;\n",
    ],
)
def test_named_commands_are_refused(body: bytes) -> None:
    assert "client command" in refused(dump(body)).reason


@pytest.mark.parametrize(
    "body",
    [
        b"SELECT 1; DELIMITER ;;\n",
        b"/* x */ DELIMITER ;;\n",
        b"DELIMITER ;; extra\n",
        b"DELIMITER ab\n",
        b"DELIMITER --\n",
    ],
)
def test_a_delimiter_only_alone_on_its_line(body: bytes) -> None:
    assert "DELIMITER" in refused(dump(body)).reason


def test_use_of_another_database_is_refused() -> None:
    assert "USE of another database" in refused(dump(b"USE `mysql`;\n")).reason
    assert "USE of another database" in refused(dump(b"USE shop\nSELECT 1;\n")).reason


def test_a_second_database_is_refused() -> None:
    body = b"CREATE DATABASE `shop`;\nUSE `shop`;\nCREATE DATABASE `other`;\n"
    assert "several databases" in refused(dump(body)).reason


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t;\n", "LOAD DATA"),
        (b"load xml infile '/etc/passwd' into table t;\n", "LOAD DATA"),
        (b"SELECT * FROM t INTO OUTFILE '/tmp/x';\n", "INTO OUTFILE"),
        (b"SELECT 'x' INTO\n/* c */ DUMPFILE '/tmp/x';\n", "INTO DUMPFILE"),
        (b"SELECT " + b"1," * 5000 + b"1 INTO OUTFILE '/tmp/x';\n", "INTO OUTFILE"),
        (b"PREPARE s FROM 'SET sql_mode=1';\nEXECUTE s;\n", "dynamic SQL"),
        (b"EXECUTE IMMEDIATE CONCAT('SET sql', '_mode = 1');\n", "dynamic SQL"),
        (b"BEGIN NOT ATOMIC SET sql_mode = 'NO_BACKSLASH_ESCAPES'; END;\n", "sql_mode"),
        (b"SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1;\n", "sql_mode"),
        (b"SET GLOBAL sql_mode = '';\n", "GLOBAL sql_mode"),
        (b"SET sql_mode = 'NO_BACKSLASH\\_ESCAPES';\n", "cannot read"),
    ],
)
def test_files_dynamic_sql_and_modes_it_cannot_follow_are_refused(body: bytes, words: str) -> None:
    assert words in refused(dump(body)).reason


# ---------------------------------------------------------------- strings as the client reads them


def test_strings_follow_no_backslash_escapes() -> None:
    """With NO_BACKSLASH_ESCAPES, `'a\\'` is a whole string for the client: what follows is outside."""
    out, _ = guarded(
        dump(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nSELECT 'a\\', 'b';\nSET sql_mode = '';\n")
    )
    assert b"SELECT 'a\\', 'b';" in out
    hidden = b"SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nSELECT 'a\\' \\! touch /tmp/x\n;\n"
    assert "client command" in refused(dump(hidden)).reason


def test_ansi_quotes_make_double_quotes_plain() -> None:
    hidden = b"SET sql_mode = 'ANSI';\nSELECT \"a\\\" \\! touch /tmp/x\n;\n"
    assert "client command" in refused(dump(hidden)).reason


def test_a_mode_set_from_a_variable_code_may_have_changed_forbids_backslashes_in_strings() -> None:
    """A trigger may change `@saved` between its save and its use: the guard cannot know the mode."""
    body = (
        b"SET @saved = @@sql_mode;\nINSERT INTO t VALUES (9, 'x');\nSET sql_mode = @saved;\n"
        b"INSERT INTO t VALUES (10, 'it\\'s');\n"
    )
    assert "cannot know" in refused(dump(body)).reason
    # mariadb-dump's own save and restore around a trigger: nothing ran in between
    sound = (
        b"/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\nDELIMITER ;;\n"
        b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.s = 'x' ;;\nDELIMITER ;\n"
        b"/*!50003 SET sql_mode = @saved_sql_mode */ ;\nINSERT INTO t VALUES (10, 'it\\'s');\n"
    )
    guarded(dump(sound))


# ---------------------------------------------------------------- several statements in one packet
# Under `DELIMITER ;;` the client sends everything up to `;;` as one packet and the server runs every
# `;`-separated statement of it (the client always asks for multi-statements).

SMUGGLED_MODE = (
    b"DELIMITER ;;\n"
    b'CREATE PROCEDURE p() SELECT 1; SET sql_mode="NO_BACKSLASH_ESCAPES" ;;\n'
    b"DELIMITER ;\n"
    b"SELECT 'a\\' \\q ';\n"
)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"DELIMITER ;;\nSELECT 1; SELECT 2 ;;\nDELIMITER ;\n", "several statements"),
        (b"DELIMITER ;;\nSET @a = 1; GRANT ALL ON *.* TO x ;;\nDELIMITER ;\n", "several statements"),
        (SMUGGLED_MODE, "sql_mode"),
        (b"DELIMITER ;;\nCREATE PROCEDURE p() SELECT 1; SET `sql_mode` = '' ;;\nDELIMITER ;\n", "sql_mode"),
        (b"DELIMITER ;;\nCREATE PROCEDURE p() SELECT 1; SET NAMES sjis ;;\nDELIMITER ;\n", "character set"),
        (
            b"DELIMITER ;;\nCREATE PROCEDURE p() SELECT 1; LOAD DATA INFILE '/etc/passwd' INTO TABLE t ;;\n"
            b"DELIMITER ;\n",
            "LOAD DATA",
        ),
    ],
)
def test_statements_smuggled_beside_a_routine_are_refused(body: bytes, words: str) -> None:
    assert words in refused(dump(body)).reason


def test_a_routine_packet_that_names_a_saved_variable_makes_its_mode_unknown() -> None:
    """A packet can assign `@saved_sql_mode` unseen: the mode set from it later is unknown."""
    body = (
        b"SET @saved_sql_mode = @@sql_mode;\nDELIMITER ;;\n"
        b"CREATE PROCEDURE p() SELECT 1; SELECT 'NO_BACKSLASH_ESCAPES' INTO @saved_sql_mode ;;\n"
        b"DELIMITER ;\nSET sql_mode = @saved_sql_mode;\nSELECT 'a\\' \\q ';\n"
    )
    assert "cannot know" in refused(dump(body)).reason


def test_dynamic_sql_in_a_routine_packet_leaves_mode_and_character_set_unknown() -> None:
    """Routines with dynamic SQL pass (mariadb-dump writes them last); after them, what the guard
    could read otherwise than the server is refused."""
    routine = (
        b"DELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\n  PREPARE s FROM @q;\n  EXECUTE s;\nEND ;;\n"
        b"DELIMITER ;\n"
    )
    guarded(dump(routine + b"INSERT INTO t VALUES (1, 'plain');\n"))
    assert "cannot know" in refused(dump(routine + b"INSERT INTO t VALUES (1, 'it\\'s');\n")).reason
    assert "above 127" in refused(dump(routine + "INSERT INTO t VALUES (1, 'é');\n".encode())).reason


def test_a_routine_body_of_several_statements_passes() -> None:
    body = (
        b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN\n"
        b"  SET NEW.s = 'x;y';\n  SET @n = @n + 1;\nEND */;;\nDELIMITER ;\n"
        b"INSERT INTO t VALUES (1, 'it\\'s');\n"
    )
    out, _ = guarded(dump(body))
    assert b"SET @n = @n + 1;" in out


# ---------------------------------------------------------------- the client's character set


@pytest.mark.parametrize(
    "body",
    [
        b"SET NAMES sjis;\n",
        b"/*!40101 SET NAMES 'gbk' */;\n",
        b"SET CHARACTER SET big5;\n",
        b"SET character_set_client = cp932;\n",
        b"SET @@session.character_set_client = 'SJIS';\n",
        b"SET @cs = 'sjis';\nSET character_set_client = @cs;\n",
        b"SET NAMES sjis COLLATE sjis_bin;\n",
    ],
)
def test_character_sets_whose_characters_can_hold_a_backslash_are_refused(body: bytes) -> None:
    assert "character set" in refused(dump(body)).reason


def test_a_character_set_the_guard_cannot_know_allows_ascii_only() -> None:
    saved = (
        b"SET @cs = @@character_set_client;\nINSERT INTO t VALUES (1, 'x');\n"
        b"SET character_set_client = @cs;\n"
    )
    guarded(dump(saved + b"INSERT INTO t VALUES (2, 'y');\n"))
    assert "above 127" in refused(dump(saved + "INSERT INTO t VALUES (2, 'ü');\n".encode())).reason
    # mariadb-dump's own: utf8mb4 for a view, then the saved one back, nothing ran in between
    sound = (
        b"/*!50001 SET @saved_cs_client = @@character_set_client */;\n"
        b"/*!50001 SET character_set_client = utf8mb4 */;\n"
        b"/*!50001 SET character_set_client = @saved_cs_client */;\n"
    )
    guarded(dump(sound + "INSERT INTO t VALUES (2, 'ü');\n".encode()))


def test_long_escaped_strings_are_read_in_one_pass() -> None:
    """A string of many escapes and no closing quote in sight (a JSON document as mariadb-dump writes
    it): read whole, whatever the chunks."""
    value = b'{\\"k\\": \\"v\\"}' * 20_000
    data = dump(b"INSERT INTO t VALUES (1, '" + value + b"');\n")
    assert guarded(data, 4096)[0] == guarded(data)[0]


# ---------------------------------------------------------------- the end


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (dump(tail=b""), "footer"),
        (dump(tail=b"-- Dump completed on 2025-11-21 13:00:00\nSELECT 1;\n"), "footer"),
        (dump(tail=b"-- Dump completed\n-- more\n"), "footer"),
        (dump(b"INSERT INTO t VALUES (1,'abc", tail=b""), "inside a quoted string"),
        (dump(b"INSERT INTO t VALUES (1,2)", tail=b""), "middle of a statement"),
        (dump(b"/* open", tail=b""), "inside a comment"),
    ],
)
def test_a_cut_dump_is_refused(data: bytes, words: str) -> None:
    found = refused(data)
    assert words in found.reason and "truncated" in found.reason


def test_the_footer_without_a_date_and_blank_lines_after_it_end_a_dump() -> None:
    guarded(dump(tail=b"-- Dump completed\n\n\n"))


def test_a_byte_order_mark_is_left_out() -> None:
    """The client skips one before its first line: `system` after it would be a command."""
    assert "client command" in refused(b"\xef\xbb\xbfsystem touch /tmp/x\n").reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=40))
def test_chunk_boundaries_never_change_the_output(cuts: list[int]) -> None:
    data = dump(
        b"DELIMITER ;;\nCREATE DEFINER=`a`@`b` PROCEDURE p() BEGIN SELECT '--;'; END ;;\nDELIMITER ;\n"
        b"INSERT INTO t VALUES (-1,'a\\'b'),(2,NULL) -- c\n;\n# c\n/* c */ SELECT 1 /*!40101 , 2 */;\n"
    )
    pieces, i = [], 0
    for cut in cuts:
        pieces.append(data[i : i + cut])
        i += cut
    pieces.append(data[i:])
    guard = MariadbScriptGuard(max_bytes=1 << 30, database="shop")
    out = b"".join(bytes(guard.feed(p)) for p in pieces) + bytes(guard.finish())
    assert out == guarded(data)[0]
