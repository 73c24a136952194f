"""The guard a MariaDB/MySQL dump streams through on its way to the `mariadb` client.

A dump from `mariadb-dump` or `mysqldump` is a script for the `mariadb` client, written by a remote
machine, and the client runs commands of its own: `\\!` starts a shell, `\\.` and `source` read a
file, `tee` and `pager` write one, `connect` and `use` switch servers and databases, `quit` ends the
restore early and successfully. The client finds them as its own lexer reads the input — backslash
commands anywhere outside a quoted string or a `/* */` comment, named commands as the first word of a
statement — and how it reads a string depends on the server's `sql_mode` (NO_BACKSLASH_ESCAPES,
ANSI_QUOTES), which the dump itself can change. So the guard lexes the stream exactly as the client
does (quotes, backticks, `#`, `-- ` and `/* */` comments, `/*! */` and `/*M! */` executable comments,
the current `DELIMITER`), follows every change of `sql_mode` it can see, and refuses:

- every backslash command and every named command, except mariadb-dump's first line
  (`/*M!999999\\- enable the sandbox mode */`, left out: the client already runs in sandbox mode) and
  `DELIMITER` lines of a plain delimiter;
- `LOAD DATA`/`LOAD XML` (a file of the client or of the server), `SELECT … INTO OUTFILE/DUMPFILE`,
  dynamic SQL (`PREPARE`, `EXECUTE`) outside a routine's definition, statements changing `sql_mode` in a
  way it cannot follow;
- after `sql_mode` was set to a value it cannot know (a user variable code may have changed since), a
  backslash in a string: the client and the guard could read that string differently.

Like PostgreSQL drills, the restore runs as an account with rights on the drill's database only, so
the statements that need the origin server's accounts or another database are left out, each replaced
by as many newlines (the client's line numbers stay the dump's): `CREATE/ALTER/DROP DATABASE` and
`USE` of the dumped database (`--databases`), users and privileges, replication settings
(`CHANGE MASTER`, `SQL_LOG_BIN`, `GTID_PURGED`…); and `DEFINER = …` clauses are blanked, so views,
triggers and routines belong to the restore's account and run with its rights, never another's.

At the end, a dump that stops inside a statement, a string or a comment, or that does not end with
mariadb-dump's footer (`-- Dump completed`, optionally `on <date>`, followed by blank lines only) is
refused as truncated. Memory stays bounded: long statements pass through as they come, and the bulk of
a dump (INSERT data) is lexed by one regular expression per run of rows.

Pure: bytes in, bytes out (or ScriptRefused); the drill's adapter feeds it and writes to the client.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass

from backup_pipeline.core.psql_guard import ScriptRefused

__all__ = ["MariadbScriptGuard", "ScriptRefused"]

HOLD_CAP = 1 << 20  # a statement is held at most this long before it passes through
HEAD_TOKENS = 256  # tokens a statement is classified from
LITERAL_CAP = 1024  # of each literal, in the head
WORD_CAP = 1 << 16
LINE_CAP = 512 << 20  # the client reads lines of at most 1 GiB: a longer one would be cut
CLEAN_WAIT = 16 << 20  # a line of rows is awaited this long to be checked at once
WAIT = -1
COMMENT_CAP = 128  # of a comment between statements, kept to tell the footer
META_LINE_CAP = 4096

SANDBOX_LINE = rb"/*M!999999\- enable the sandbox mode */"
BOM = b"\xef\xbb\xbf"

# The client's own commands (mariadb 10.11 `help`): the first word of a statement, or a line.
CLIENT_COMMANDS = frozenset(
    {"?", "charset", "clear", "connect", "delimiter", "edit", "ego", "exit", "go", "help", "nopager"}
    | {"notee", "nowarning", "pager", "print", "prompt", "quit", "rehash", "sandbox", "source", "status"}
    | {"system", "tee", "use", "warnings", "resetconnection", "query_attributes", "ssl_session_data_print"}
)
# sql_mode words that change how the client reads strings: backslash escapes, double quotes.
_NO_ESCAPES = {"NO_BACKSLASH_ESCAPES"}
_ANSI_QUOTES = {"ANSI_QUOTES", "ANSI", "ORACLE", "POSTGRESQL", "MSSQL", "DB2", "MAXDB"}
_DELIMITER_LINE = re.compile(rb"^delimiter[ \t]+([^\s\\'\"`#]{1,15})[ \t\r\f\v]*$", re.IGNORECASE)
_ODD_DELIMITER = re.compile(rb"--|/\*|\*/|[A-Za-z0-9_@]")
_FOOTER = re.compile(r"^Dump completed(?: on [0-9: -]{0,40})?$")
_SPACE = b" \t\r\f\v\n"
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_NUMBER = re.compile(rb"[0-9][0-9A-Za-z_.$]*")
_BLANKS = re.compile(rb"[ \t\r\f\v]+")
_NONSPACE = re.compile(rb"[^ \t\r\f\v\n]")
_OTHER = re.compile(rb"[^A-Za-z0-9_$\x80-\xff \t\r\f\v\n'\"`\\#/*;@-]+")
_BLOCK_END = re.compile(rb"\*/")
_EXEC_START = re.compile(rb"/\*M?!([0-9]*)")

# Statements left out, by their first words (lower case).
_DATABASE = {"database", "schema"}
_ACCOUNTS = {"user", "role"}
_REPLICATION_START = {"master", "replication", "slave", "replica", "all"}
_REPLICATION_VARS = {
    "sql_log_bin",
    "gtid_purged",
    "gtid_slave_pos",
    "gtid_binlog_state",
    "gtid_domain_id",
    "gtid_seq_no",
    "gtid_next",
    "server_id",
}
_ROUTINES = {"procedure", "function", "trigger", "event", "package", "aggregate"}
# Client character sets in which a character's second byte can be a backslash or a quote: the server
# would end a string where the client and the guard see an escape (or the other way round).
_UNSAFE_CHARSETS = {"big5", "cp932", "gbk", "sjis", "gb18030"}
_HIGH = re.compile(rb"[\x80-\xff]")
_INERT_FIRST = {"create", "drop", "alter", "lock", "unlock", "use", "rename", "delimiter"}
_PASS_AT_ONCE = {"insert", "replace", "update", "delete", "lock", "unlock", "select", "with", "values"}


class _Lex(enum.Enum):
    NORMAL = 0
    SQUOTE = 1  # '…'
    DQUOTE = 2  # "…"
    BTICK = 3  # `…`
    BLOCK = 4  # /* … */ (not nested)
    LINE = 5  # # … or -- … end of line


@dataclass(frozen=True)
class Modes:
    """What of the session's sql_mode the client's lexer depends on."""

    no_escapes: bool = False
    ansi_quotes: bool = False

    @classmethod
    def of(cls, value: str) -> Modes:
        words = {w.strip().upper() for w in value.split(",")}
        return cls(bool(words & _NO_ESCAPES), bool(words & _ANSI_QUOTES))


_NAMES = ("word", "btick", "string", "dquote")


@dataclass
class _Token:
    kind: str  # word | string | btick | dquote | number | punct
    text: str  # lower case for words; the content (capped) for quoted ones
    start: int  # in the held statement
    end: int
    complete: bool = True  # a literal not cut by LITERAL_CAP


def _fast(escapes: bool) -> re.Pattern[bytes]:
    """The bulk of a statement already passing: runs of bytes without meaning to the lexer, NULL, and
    whole single-quoted strings (with backslash escapes or without)."""
    string = rb"'[^'\\]*(?:\\[\s\S][^'\\]*)*'" if escapes else rb"'[^']*'"
    return re.compile(rb"(?:[^'\"`\\#/*;@A-Za-z_\-]+|NULL|" + string + rb")+")


_FAST = {True: _fast(True), False: _fast(False)}
# A quoted string's content up to its closing quote (or the buffer's end), backslash escapes followed.
_ESCAPED = {q: re.compile(rb"[^" + q + rb"\\]*(?:\\[\s\S][^" + q + rb"\\]*)*") for q in (b"'", b'"', b"`")}
_STRING = re.compile(rb"'[^']*'")
_PLAIN = b"0123456789(),.+-NUL \t\n\x00"  # what rows hold outside their strings
_ROWS_START = b"(\n"
_FAST_STRICT = re.compile(rb"(?:[^'\"`\\#/*;@A-Za-z_\-]+|NULL|'[^'\\]*')+")


class MariadbScriptGuard:
    """Feed it the decompressed dump in chunks; forward what it returns to the `mariadb` client."""

    def __init__(self, *, max_bytes: int, database: str | None = None) -> None:
        self.max_bytes = max_bytes
        self.database = database  # the database the dump's header names, if any
        self.bytes_in = 0
        self.line = 1
        self.footer_seen = False
        self.created_database: str | None = None
        self.left_out: Counter[str] = Counter()
        self.statements = 0
        self._buf = b""
        self._out = bytearray()
        self._lex = _Lex.NORMAL
        self._exec = False  # inside /*! … */ or /*M! … */
        self._delimiter = b";"
        self._modes: Modes | None = Modes()  # None: set to a value the guard cannot know
        self._vars: dict[str, Modes | None] = {}
        self._charsets: dict[str, bool] = {}  # user variables holding a client character set: safe?
        self._charset_known = True  # False: set from what the guard cannot know (ASCII only, then)
        self._fresh: set[str] = set()  # user variables no code could have changed since they were set
        self._started = False  # the first line (mariadb-dump's sandbox line) was looked at
        self._line_bytes = 0
        self._line_has_content = False
        self._comment = bytearray()
        self._literal = bytearray()
        self._literal_start = 0
        self._new_statement()

    # ------------------------------------------------------------ the interface

    def feed(self, data: bytes) -> bytes:
        self.bytes_in += len(data)
        if self.bytes_in > self.max_bytes:
            raise ScriptRefused(
                f"the dump decompresses to more than {self.max_bytes:,} bytes (restore_drill.max_bytes): "
                "stopped there (a decompression bomb, or raise the limit)",
                self.line,
            )
        self._buf = self._buf + data if self._buf else bytes(data)
        consumed = self._run(final=False)
        self._buf = self._buf[consumed:]
        return self._take()

    def finish(self) -> bytes:
        """The rest, once the dump has ended; ScriptRefused when it ends where mariadb-dump never does."""
        consumed = self._run(final=True)
        self._buf = self._buf[consumed:]
        if self._lex is _Lex.LINE:
            self._end_line_comment()
        if self._lex is not _Lex.NORMAL:
            raise ScriptRefused(f"the dump ends inside {_LEX_WORDS[self._lex]} (truncated)", self.line)
        if self._in_statement:
            raise ScriptRefused(
                "the dump ends in the middle of a statement (truncated)", self.line, self._head_text()
            )
        if not self.footer_seen:
            raise ScriptRefused(
                "the dump does not end with mariadb-dump's '-- Dump completed' footer (truncated)", self.line
            )
        return self._take()

    @property
    def delimiter(self) -> bytes:
        """The client's statement delimiter where the dump ends (what a statement sent after it needs)."""
        return self._delimiter

    # ------------------------------------------------------------ the scanner

    def _take(self) -> bytes:
        out, self._out = self._out, bytearray()
        return out

    def _run(self, final: bool) -> int:
        buf, pos, end = self._buf, 0, len(self._buf)
        if not self._started:
            pos = self._first_line(buf, final)
            if not self._started:
                return 0
        while pos < end:
            state = (self._lex, self._exec, self._in_statement)
            new = self._step(buf, pos, final)
            if new == pos and state == (self._lex, self._exec, self._in_statement):
                if final:  # an incomplete token at the very end: it passes as it is
                    self._emit(buf[pos:])
                    return end
                break
            pos = new
        return pos

    def _first_line(self, buf: bytes, final: bool) -> int:
        """mariadb-dump's first line turns the client's sandbox mode on: left out (the client runs in
        it already); a byte-order mark the client would skip is left out too."""
        start = len(BOM) if buf.startswith(BOM) else 0
        if not final and len(buf) < len(BOM):
            return 0
        j = buf.find(b"\n", start)
        if j < 0 and not final and len(buf) - start < META_LINE_CAP:
            return 0
        self._started = True
        first = buf[start : j if j >= 0 else len(buf)]
        if first.startswith(SANDBOX_LINE):
            if first[len(SANDBOX_LINE) :].strip(_SPACE):
                raise ScriptRefused("text after mariadb-dump's sandbox line", 1, _shown(first))
            return start + len(first)  # its newline stays
        return start

    def _step(self, buf: bytes, pos: int, final: bool) -> int:
        lex = self._lex
        if lex is _Lex.NORMAL:
            return self._normal(buf, pos, final)
        if lex is _Lex.LINE:
            j = buf.find(b"\n", pos)
            stop = len(buf) if j < 0 else j
            if not self._in_statement and len(self._comment) <= COMMENT_CAP:
                self._comment += buf[pos:stop][: COMMENT_CAP + 1 - len(self._comment)]
            self._emit(buf[pos:stop])
            if j >= 0:
                self._end_line_comment()
            return stop
        if lex is _Lex.BLOCK:
            m = _BLOCK_END.search(buf, pos)
            if m is None:
                stop = len(buf) if final or not buf.endswith(b"*") else len(buf) - 1
                self._emit(buf[pos:stop])
                return max(stop, pos)
            self._emit(buf[pos : m.end()])
            self._lex = _Lex.NORMAL
            return m.end()
        return self._quoted(buf, pos, final)

    def _escapes(self) -> bool | None:
        """Whether a backslash escapes the next byte in the current string (None: unknown)."""
        if self._lex is _Lex.BTICK:
            return False
        if self._modes is None:
            return None
        if self._modes.no_escapes:
            return False
        return not (self._lex is _Lex.DQUOTE and self._modes.ansi_quotes)

    def _quoted(self, buf: bytes, pos: int, final: bool) -> int:
        quote = {_Lex.SQUOTE: b"'", _Lex.DQUOTE: b'"', _Lex.BTICK: b"`"}[self._lex]
        escapes = self._escapes()
        if escapes:  # one pass of the regular expression's C loop, however many escapes the string holds
            stop = _ESCAPED[quote].match(buf, pos).end()  # type: ignore[union-attr]
            if stop < len(buf) and buf[stop : stop + 1] == b"\\":  # a backslash ending the buffer
                if not final:
                    self._string_part(buf, pos, stop)
                    return stop
                stop = len(buf)
            j = stop if stop < len(buf) else -1
        else:
            j = buf.find(quote, pos)
            k = buf.find(b"\\", pos, j if j >= 0 else len(buf)) if escapes is None else -1
            if k >= 0:
                raise ScriptRefused(
                    "a backslash in a string after the dump set sql_mode to a value the guard cannot "
                    "know (the client could read the string otherwise)",
                    self.line + buf.count(b"\n", pos, k),
                )
        if j < 0:
            self._string_part(buf, pos, len(buf))
            return len(buf)
        self._string_part(buf, pos, j + 1)
        self._end_string()
        return j + 1

    def _string_part(self, buf: bytes, start: int, stop: int) -> None:
        if stop <= start:
            return
        if len(self._literal) <= LITERAL_CAP:
            self._literal += buf[start:stop][: LITERAL_CAP + 1 - len(self._literal)]
        self._emit(buf[start:stop])

    def _end_string(self) -> None:
        kind = {_Lex.SQUOTE: "string", _Lex.DQUOTE: "dquote", _Lex.BTICK: "btick"}[self._lex]
        self._lex = _Lex.NORMAL
        content = (
            bytes(self._literal[1:-1]) if len(self._literal) <= LITERAL_CAP else bytes(self._literal[1:])
        )
        complete = len(self._literal) <= LITERAL_CAP
        self._literal.clear()
        if kind == "btick" and content.lower() in (b"sql_mode", b"character_set_client"):
            self._mentions.add("sql_mode" if content.lower() == b"sql_mode" else "charset")
        if self._after_at == 1 and self._delimiter != b";":  # @`name`, @'name'
            self._user_variables.add(content.decode("utf-8", "replace").lower())
        self._after_at = 0
        self._token(kind, content.decode("utf-8", "replace"), self._literal_start, complete)

    def _clean_rows(self, buf: bytes, pos: int, final: bool) -> int | None:
        """The rows of a passing statement up to its delimiter (or the buffer's last line), when they
        hold nothing but numbers, NULLs and strings without a backslash — the bulk of mariadb-dump's
        INSERTs: then every sql_mode reads them alike, and their strings end at their next quote. Told
        with a few operations over the whole run (C loops over the bytes) rather than lexed; where they
        stop, WAIT for more, or None (lexed instead)."""
        semi = buf.find(b";", pos)
        if semi >= 0:
            stop = semi
        else:
            last = buf.rfind(b"\n", pos)
            if last < 0:
                return WAIT if not final and len(buf) - pos < CLEAN_WAIT else None
            stop = last + 1
        region = buf[pos:stop]
        if not region or b"\\" in region or region.count(b"'") % 2:
            return None
        outside = _STRING.sub(b"\x00", region)
        if outside.translate(None, _PLAIN) or b"--" in outside:
            return None
        self._emit(region)
        return stop

    def _normal(self, buf: bytes, pos: int, final: bool) -> int:
        if self._decision == "pass" and self._delimiter == b";" and buf[pos] in _ROWS_START:
            stop = self._clean_rows(buf, pos, final)
            if stop is not None:
                return pos if stop == WAIT else stop
        if self._decision == "pass" and self._delimiter == b";" and self._modes is not None:
            m = (_FAST[not self._modes.no_escapes]).match(buf, pos)
            if m:
                self._emit(m.group())
                return m.end()
        elif self._decision == "pass" and self._delimiter == b";":
            m = _FAST_STRICT.match(buf, pos)
            if m:
                self._emit(m.group())
                return m.end()
        byte = buf[pos]
        needs_more = not final
        if byte == 0x5C:  # a backslash: a client command
            command = buf[pos : pos + 2].decode("latin-1")
            raise ScriptRefused(
                f"client command {command!r} refused (the mariadb client runs it itself)",
                self.line,
                _shown(buf[pos : buf.find(b"\n", pos) if b"\n" in buf[pos:] else len(buf)].decode("latin-1")),
            )
        if buf.startswith(self._delimiter, pos):
            return self._on_delimiter(pos)
        if needs_more and self._delimiter.startswith(buf[pos:]) and len(self._delimiter) > len(buf) - pos:
            return pos  # the delimiter may be split across chunks
        if byte == 0x0A:
            self._newline()
            return pos + 1
        if byte in b" \t\r\f\v":
            m = _BLANKS.match(buf, pos)
            assert m is not None
            self._emit(m.group())
            return m.end()
        if byte == 0x23:  # '#'
            return self._start_line_comment(pos)
        if byte == 0x2D:  # '-'
            if len(buf) - pos < 3 and needs_more:
                return pos
            after = buf[pos + 2 : pos + 3]
            if buf[pos + 1 : pos + 2] == b"-" and (not after or after in _SPACE or not self._in_statement):
                return self._start_line_comment(pos)
            self._significant("punct", "-", buf[pos : pos + 1])
            return pos + 1
        if byte == 0x2F:  # '/'
            if len(buf) - pos < 4 and needs_more:
                return pos
            if buf[pos + 1 : pos + 2] == b"*":
                m = _EXEC_START.match(buf, pos)
                if m and m.end() == len(buf) and needs_more:
                    return pos  # the version may go on
                if m:
                    self._significant("exec", "", m.group())
                    self._exec = True
                    return m.end()
                self._emit(b"/*")
                self._lex = _Lex.BLOCK
                return pos + 2
            self._significant("punct", "/", b"/")
            return pos + 1
        if byte == 0x2A:  # '*'
            if self._exec and buf[pos + 1 : pos + 2] == b"/":
                self._exec = False
                self._significant("exec_end", "", b"*/")
                return pos + 2
            if self._exec and pos + 1 == len(buf) and needs_more:
                return pos
            self._significant("punct", "*", b"*")
            return pos + 1
        if byte in b"'\"`":
            self._literal_start = len(self._held)
            self._significant_open(buf[pos : pos + 1])
            self._lex = {0x27: _Lex.SQUOTE, 0x22: _Lex.DQUOTE, 0x60: _Lex.BTICK}[byte]
            self._literal = bytearray(buf[pos : pos + 1])
            return pos + 1
        m = _WORD.match(buf, pos)
        if m:
            if m.end() == len(buf) and needs_more and m.end() - pos < WORD_CAP:
                return pos  # the word may go on in the next chunk
            word = m.group()
            if not self._in_statement and word.lower() == b"delimiter":
                return self._delimiter_line(buf, pos, final)
            self._significant("word", word.decode("latin-1").lower(), word)
            return m.end()
        m = _NUMBER.match(buf, pos)
        if m:
            if m.end() == len(buf) and needs_more and m.end() - pos < WORD_CAP:
                return pos
            self._significant("number", m.group().decode("latin-1"), m.group())
            return m.end()
        if byte == 0x40:  # '@'
            self._significant("punct", "@", b"@")
            return pos + 1
        m = _OTHER.match(buf, pos)
        if m:
            for index, char in enumerate(m.group()):
                self._significant("punct", chr(char), m.group()[index : index + 1])
            return m.end()
        self._significant("punct", chr(byte), buf[pos : pos + 1])  # ';' inside a longer delimiter
        return pos + 1

    def _start_line_comment(self, pos: int) -> int:
        self._lex = _Lex.LINE
        self._comment.clear()
        return pos

    def _end_line_comment(self) -> None:
        """A comment between statements: mariadb-dump's footer when it is exactly that; anything else
        but an empty comment means the footer was not the end."""
        self._lex = _Lex.NORMAL
        if not self._in_statement:
            text = bytes(self._comment)
            body = (text[2:] if text.startswith(b"--") else text[1:]).strip()
            if text.startswith(b"--") and len(text) <= COMMENT_CAP and _FOOTER.match(body.decode("latin-1")):
                self.footer_seen = True
            elif body:
                self.footer_seen = False
        self._comment.clear()

    def _newline(self) -> None:
        self._emit(b"\n")

    def _delimiter_line(self, buf: bytes, pos: int, final: bool) -> int:
        """`DELIMITER x` alone on its line, between statements: the client changes its delimiter, and
        so does the guard. Read whole (the client reads it as a line)."""
        j = buf.find(b"\n", pos)
        if j < 0 and not final:
            if len(buf) - pos > META_LINE_CAP:
                raise ScriptRefused("a DELIMITER line longer than 4 KiB", self.line)
            return pos
        line = buf[pos : j if j >= 0 else len(buf)]
        m = _DELIMITER_LINE.match(line)
        if self._line_has_content or m is None or _ODD_DELIMITER.search(m.group(1)):
            raise ScriptRefused(
                "a DELIMITER line the guard does not accept (mariadb-dump writes `DELIMITER ;;` alone on "
                "its line)",
                self.line,
                _shown(line.decode("latin-1")),
            )
        self.footer_seen = False
        self._delimiter = m.group(1)
        self._emit(line)
        return pos + len(line)

    def _emit(self, data: bytes) -> None:
        """Route consumed bytes: held with their statement, left out (newlines kept), or passed on."""
        if not self._charset_known and _HIGH.search(data):
            raise ScriptRefused(
                "a byte above 127 after the dump set the client's character set to a value the guard "
                "cannot know (a character could hold a backslash or a quote)",
                self.line,
            )
        last = data.rfind(b"\n")
        newlines = 0
        if last >= 0:
            newlines = data.count(b"\n")
            self.line += newlines
            self._line_bytes = len(data) - last - 1
            self._line_has_content = _NONSPACE.search(data, last + 1) is not None
        else:
            self._line_bytes += len(data)
            self._line_has_content = self._line_has_content or _NONSPACE.search(data) is not None
        if self._line_bytes > LINE_CAP:
            raise ScriptRefused(
                f"a line longer than {LINE_CAP >> 20} MiB (mariadb-dump never writes one)", self.line
            )
        if self._decision == "drop":
            self._out += b"\n" * newlines
        elif self._decision is None and self._in_statement:
            self._held += data
            if len(self._held) > HOLD_CAP:
                self._decide(overflow=True)
        else:
            self._out += data

    # ------------------------------------------------------------ statements

    def _new_statement(self) -> None:
        self._in_statement = False
        self._decision: str | None = None
        self._held = bytearray()
        self._tokens: list[_Token] = []
        self._head_overflow = False
        self._first = ""
        self._previous_word = ""
        self._mentions: set[str] = set()  # words of the whole statement that decide its fate
        self._user_variables: set[str] = set()  # `@name`s of a statement holding a `;` of its own
        self._after_at = 0  # how many `@` came right before the current token

    def _significant_open(self, raw: bytes) -> None:
        """A quote opens a literal: the statement has begun."""
        if not self._in_statement:
            self._start_statement("punct", "", raw)
        self._emit(raw)

    def _significant(self, kind: str, text: str, raw: bytes) -> None:
        """A token of a statement: the first one starts it (and may be a client command)."""
        if not self._in_statement:
            self._start_statement(kind, text, raw)
        start = len(self._held)
        self._emit(raw)
        if kind in ("exec", "exec_end"):
            return
        if kind == "word":
            self._watch_word(text)
            self._first = self._first or text
        elif kind == "punct" and text == ";":  # inside a statement: the delimiter is another one
            self._mentions.add(";")
        if self._after_at == 1 and kind == "word" and self._delimiter != b";":
            self._user_variables.add(text.lower())
        self._after_at = self._after_at + 1 if kind == "punct" and text == "@" else 0
        self._token(kind, text, start)
        if self._decision is None and self._first in _PASS_AT_ONCE:
            self._release("pass")

    def _token(self, kind: str, text: str, start: int, complete: bool = True) -> None:
        if len(self._tokens) < HEAD_TOKENS:
            self._tokens.append(_Token(kind, text, start, len(self._held), complete))
        else:
            self._head_overflow = True

    def _watch_word(self, word: str) -> None:
        """Words that matter wherever they are in a statement (its head may be long gone)."""
        if (self._previous_word, word) in (("into", "outfile"), ("into", "dumpfile")):
            self._mentions.add(f"into {word}")
        if word in ("sql_mode", "execute", "prepare"):
            self._mentions.add(word)
        if (self._previous_word, word) in (("load", "data"), ("load", "xml")):
            self._mentions.add("load data")
        if word == "character_set_client" or (self._previous_word, word) in _SETS_CHARSET:
            self._mentions.add("charset")
        self._previous_word = word

    def _start_statement(self, kind: str, text: str, raw: bytes) -> None:
        """The first token of a statement: the client runs a statement whose first word names one of
        its commands itself (`use` is looked at whole: the dumped database's is left out)."""
        self.footer_seen = False  # SQL after the footer: the footer was not the end
        if (kind == "word" and text != "use" and _names_a_command(raw)) or text == "?":
            raise ScriptRefused(
                f"client command {text!r} refused (the mariadb client runs it itself)", self.line
            )
        self._in_statement = True

    def _on_delimiter(self, pos: int) -> int:
        if self._in_statement:
            self._end_statement()
        self._emit(self._delimiter)  # where its statement went
        self._new_statement()
        return pos + len(self._delimiter)

    def _end_statement(self) -> None:
        """Before the delimiter reaches the client (which runs a statement only then): refusals, then
        what the statement does to sql_mode and to the user variables the guard follows."""
        self.statements += 1
        self._refusals()
        if self._decision is None:
            self._decide(overflow=False)
        self._follow_modes()

    def _refusals(self) -> None:
        routine = self._defines_routine()
        for into in ("into outfile", "into dumpfile"):
            if into in self._mentions:
                raise ScriptRefused(
                    f"SELECT … {into.upper()} (writes a file on the server)", self.line, self._head_text()
                )
        if not routine and self._mentions & {"execute", "prepare"}:
            raise ScriptRefused(
                "dynamic SQL (PREPARE/EXECUTE) outside a routine's definition (mariadb-dump never writes it)",
                self.line,
                self._head_text(),
            )
        if not routine and "sql_mode" in self._mentions and self._first != "set":  # first word
            raise ScriptRefused(
                "a statement about sql_mode the guard cannot follow", self.line, self._head_text()
            )
        if "load data" in self._mentions:
            raise ScriptRefused(
                "LOAD DATA/XML (reads a file of the client or of the server)", self.line, self._head_text()
            )
        if ";" in self._mentions:
            self._several_statements(routine)

    def _several_statements(self, routine: bool) -> None:
        """A statement under another delimiter that holds a `;` of its own: the server runs every
        statement of the packet, so beyond a routine's body (`BEGIN … ; … END`) it could run what the
        guard reads as part of the first one. mariadb-dump writes one statement per delimiter and
        sets sql_mode and the character set outside routines."""
        if not routine:
            raise ScriptRefused(
                "several statements sent as one (mariadb-dump writes one per delimiter)",
                self.line,
                self._head_text(),
            )
        if self._mentions & {"sql_mode", "charset"}:
            raise ScriptRefused(
                "a routine's definition holding statements about sql_mode or the client's character set "
                "(the server could run them outside the routine)",
                self.line,
                self._head_text(),
            )
        if self._mentions & {"execute", "prepare"}:  # dynamic SQL could set either, unseen
            self._modes, self._charset_known = None, False
            self._fresh.clear()

    def _words(self, count: int) -> list[str]:
        return [t.text for t in self._tokens if t.kind == "word"][:count]

    def _defines_routine(self) -> bool:
        words = self._words(24)
        return bool(words) and words[0] == "create" and bool(set(words[1:]) & _ROUTINES)

    def _decide(self, *, overflow: bool) -> None:
        """Pass, leave out or rewrite the statement being read."""
        words = self._words(4)
        first = words[0] if words else ""
        if overflow and first in ("use", "grant", "revoke", "change", "set", "create", "alter", "drop"):
            if first == "set":
                self._modes, self._vars, self._fresh = None, {}, set()
            elif first in ("create", "alter"):
                self._blank_definer()
                self._release("pass")
                return
            else:
                raise ScriptRefused(f"a {first.upper()} statement longer than 1 MiB", self.line)
            self._release("pass")
            return
        why = self._left_out(words)
        if why:
            self.left_out[why] += 1
            self._release("drop")
            return
        if first in ("create", "alter"):
            self._blank_definer()
        self._release("pass")

    def _left_out(self, words: list[str]) -> str | None:
        first, second = [*words, "", ""][:2]
        if first == "use":
            self._use()
            return "database (mariadb-dump --databases)"
        if first in ("create", "alter", "drop") and second in _DATABASE:
            if first == "create":
                self._created()
            return "database (mariadb-dump --databases)"
        if first in ("grant", "revoke") or (
            first in ("create", "drop", "alter", "rename") and second in _ACCOUNTS
        ):
            return "users and privileges"
        if first == "set" and second in ("password", "role", "default"):
            return "users and privileges"
        if first == "change" or (first in ("start", "stop", "reset") and second in _REPLICATION_START):
            return "replication"
        if first == "set" and any(t.kind == "word" and t.text in _REPLICATION_VARS for t in self._tokens):
            return "replication"
        return None

    def _identifier(self, token: _Token) -> str | None:
        return token.text if token.kind in ("word", "btick") and token.complete else None

    def _use(self) -> None:
        names = [t for t in self._tokens[1:]]
        name = self._identifier(names[0]) if len(names) == 1 else None
        known = {n for n in (self.created_database, self.database) if n}
        if name is None or (known and name not in known):
            raise ScriptRefused(
                "USE of another database than the one dumped (a dump of several databases?)",
                self.line,
                self._head_text(),
            )

    def _created(self) -> None:
        """CREATE DATABASE [IF NOT EXISTS] name …: the database dumped (`--databases`)."""
        rest = [t for t in self._tokens[2:] if not (t.kind == "word" and t.text in ("if", "not", "exists"))]
        name = self._identifier(rest[0]) if rest else None
        if name is None:
            raise ScriptRefused("a CREATE DATABASE the guard cannot read", self.line, self._head_text())
        if self.created_database is not None and name != self.created_database:
            raise ScriptRefused(
                f"a dump of several databases ({self.created_database!r}, {name!r}): not drilled", self.line
            )
        self.created_database = name

    def _blank_definer(self) -> None:
        """`DEFINER = user[@host]` in CREATE/ALTER: blanked, so the object belongs to the restore's
        account (another account's would need rights it does not have, and run with them)."""
        tokens = self._tokens
        for index, token in enumerate(tokens[:48]):
            if token.kind != "word" or token.text != "definer":
                continue
            rest = tokens[index + 1 : index + 8]
            if not rest or rest[0].text != "=":
                return
            end = 2
            if len(rest) > 1 and rest[1].kind in _NAMES:
                if rest[1].kind == "word" and rest[1].text == "current_user":
                    if len(rest) > 3 and rest[2].text == "(" and rest[3].text == ")":
                        end = 4
                elif (
                    len(rest) > 3
                    and rest[2].text == "@"
                    and rest[3].kind in ("word", "btick", "string", "dquote")
                ):
                    end = 4
                last = rest[end - 1]
                self._blank(token.start, last.end)
                self.left_out["definers"] += 1
            return

    def _blank(self, start: int, end: int) -> None:
        for i in range(start, end):
            if self._held[i] != 0x0A:
                self._held[i] = 0x20

    def _release(self, decision: str) -> None:
        self._decision = decision
        held, self._held = bytes(self._held), bytearray()
        if decision == "drop":
            self._out += b"\n" * held.count(b"\n")
        else:
            self._out += held

    def _head_text(self) -> str:
        parts = []
        for t in self._tokens[:60]:
            parts.append(
                f"'{t.text}'" if t.kind == "string" else f"`{t.text}`" if t.kind == "btick" else t.text
            )
        return _shown(" ".join(parts))

    # ------------------------------------------------------------ sql_mode

    def _follow_modes(self) -> None:
        """What the statement did to sql_mode, and to the user variables the guard follows."""
        words = self._words(2)
        first = words[0] if words else ""
        if self._decision == "drop":
            return  # the client never sees it
        inert = first in _INERT_FIRST and not self._head_overflow
        if first == "create" and not self._defines_routine() and "select" in self._all_words():
            inert = False  # CREATE TABLE … SELECT runs what it selects
        if first == "set":
            self._follow_set()
            inert = not any(t.text == "(" for t in self._tokens) and not self._head_overflow
        if not inert:
            self._fresh.clear()  # triggers, functions and procedures can change user variables
        self._fresh -= self._user_variables  # a packet of several statements may assign them

    def _all_words(self) -> set[str]:
        return {t.text for t in self._tokens if t.kind == "word"}

    def _follow_set(self) -> None:
        tokens = [t for t in self._tokens[1:]]
        if self._head_overflow:
            self._modes, self._vars, self._fresh = None, {}, set()
            return
        if tokens and tokens[0].kind == "word" and tokens[0].text == "statement":
            if self._mentions & {"sql_mode", "charset"}:
                raise ScriptRefused(
                    "SET STATEMENT sql_mode or character_set_client … FOR (the guard cannot follow it)",
                    self.line,
                )
            return
        words = [t.text for t in tokens[:2]]
        if words[:1] in (["names"], ["charset"]) or words == ["character", "set"]:
            value = tokens[2:3] if words[0] == "character" else tokens[1:2]
            self._set_charset(value)
            return
        for assignment in _split(tokens):
            self._assign(assignment)

    def _assign(self, tokens: list[_Token]) -> None:
        at = next((i for i, t in enumerate(tokens) if t.kind == "punct" and t.text == "="), None)
        if at is None:
            if any(t.kind == "word" and t.text == "sql_mode" for t in tokens):
                raise ScriptRefused("a SET of sql_mode the guard cannot read", self.line, self._head_text())
            return
        target = [t for t in tokens[:at] if t.text != ":"]
        value = tokens[at + 1 :]
        scope, name, user = _target(target)
        if name == "character_set_client" and not user:
            if scope == "global":
                raise ScriptRefused(
                    "SET GLOBAL character_set_client (the dump may not change the server's)", self.line
                )
            self._set_charset(value)
            return
        if user:
            self._charsets[name] = self._charset_safety(value)
        if name == "sql_mode" and not user:
            if scope == "global":
                raise ScriptRefused("SET GLOBAL sql_mode (the dump may not change the server's)", self.line)
            self._modes = self._value_modes(value)
        elif user:
            self._vars[name] = self._value_modes(value, strict=False)
            self._fresh.add(name)
        elif any(t.kind == "word" and t.text == "sql_mode" for t in value):
            raise ScriptRefused(
                "a SET reading sql_mode the guard cannot follow", self.line, self._head_text()
            )

    def _set_charset(self, value: list[_Token]) -> None:
        """The client's character set changes: refused when a character could hold a backslash or a
        quote, unknown (ASCII only from then on) when the guard cannot tell."""
        safety = self._charset_safety(value)
        if safety is False:
            named = value[0].text if value[0].kind in ("word", "string", "btick") else "held by a variable"
            raise ScriptRefused(
                f"client character set {named!r}, in which a character can hold a backslash or a quote "
                "(the server would read strings otherwise than the guard): not drilled",
                self.line,
                self._head_text(),
            )
        self._charset_known = bool(safety)

    def _charset_safety(self, value: list[_Token]) -> bool | None:
        """Whether a value names a safe client character set (None: the guard cannot tell)."""
        texts = [t.text for t in value]
        if value and value[0].kind in ("word", "string", "btick") and value[0].complete:
            if texts[0] == "default":
                return True
            if len(value) == 1 or (len(value) > 1 and value[1].text == "collate"):
                return texts[0].lower() not in _UNSAFE_CHARSETS
        if texts in (["@", "@", "character_set_client"], ["@", "@", "session", ".", "character_set_client"]):
            return self._charset_known or None
        if len(value) == 2 and texts[0] == "@" and value[1].kind in ("word", "btick", "string"):
            name = value[1].text.lower()
            return self._charsets.get(name) if name in self._fresh else None
        return None

    def _value_modes(self, value: list[_Token], *, strict: bool = True) -> Modes | None:
        """The modes a value sets, when the guard can know them (None: it cannot)."""
        texts = [t.text for t in value]
        if len(value) == 1 and value[0].kind == "string":
            readable = value[0].complete and "\\" not in value[0].text and "'" not in value[0].text
            if not readable and strict:
                raise ScriptRefused(
                    "sql_mode set to a value the guard cannot read", self.line, self._head_text()
                )
            return Modes.of(value[0].text) if readable else None
        if texts == ["default"]:
            return Modes()
        if texts in _SYSTEM_MODE:
            return self._modes
        if len(value) == 2 and texts[0] == "@" and value[1].kind in ("word", "btick", "string"):
            name = value[1].text.lower()
            return self._vars.get(name) if name in self._fresh else None
        return None


def _split(tokens: list[_Token]) -> list[list[_Token]]:
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == "punct" and token.text == "(":
            depth += 1
        elif token.kind == "punct" and token.text == ")":
            depth = max(0, depth - 1)
        if token.kind == "punct" and token.text == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _target(tokens: list[_Token]) -> tuple[str, str, bool]:
    """(scope, name, user variable?) of a SET target: `sql_mode`, `session sql_mode`,
    `@@session.sql_mode`, `@@sql_mode`, `@var`."""
    texts = [t.text for t in tokens]
    scope = "session"
    if texts[:1] in (["session"], ["local"], ["global"]):
        scope, texts = texts[0], texts[1:]
    if texts[:2] == ["@", "@"]:
        texts = texts[2:]
        if len(texts) == 3 and texts[1] == ".":
            scope, texts = texts[0], texts[2:]
        return scope, texts[0] if len(texts) == 1 else " ".join(texts), False
    if texts[:1] == ["@"] and len(texts) == 2:
        return scope, texts[1].lower(), True
    return scope, " ".join(texts), False


_SYSTEM_MODE = (
    ["@", "@", "sql_mode"],
    ["@", "@", "session", ".", "sql_mode"],
    ["@", "@", "local", ".", "sql_mode"],
)


_SETS_CHARSET = {("set", "names"), ("set", "character"), ("set", "charset")}


def _names_a_command(word: bytes) -> bool:
    """Whether the client could take this word for one of its commands: it compares names in latin1's
    case- and accent-insensitive order, so a word of a command's length whose ASCII letters match it
    where they stand is taken for one."""
    lower = word.lower()
    if lower.decode("latin-1") in CLIENT_COMMANDS:
        return True
    if lower.isascii():
        return False
    return any(
        len(name) == len(lower) and all(b >= 0x80 or chr(b) == c for b, c in zip(lower, name, strict=True))
        for name in CLIENT_COMMANDS
    )


_LEX_WORDS = {
    _Lex.SQUOTE: "a quoted string",
    _Lex.DQUOTE: "a quoted string",
    _Lex.BTICK: "a quoted identifier",
    _Lex.BLOCK: "a comment",
}


def _shown(text: str) -> str:
    """An excerpt of untrusted text fit for a message: printable, one line, short."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= 200 else clean[:199] + "…"
