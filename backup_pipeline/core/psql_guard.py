"""The guard a plain SQL dump streams through on its way to psql.

A plain dump is a psql script written by a remote machine. psql runs backslash meta-commands itself
(`\\!` runs a shell, `\\o |cmd` pipes into one, `\\copy … program` too), so the guard lexes the stream
as psql does — quotes, dollar quotes, comments, parentheses, `BEGIN ATOMIC` bodies, COPY data
blocks — and refuses any meta-command, except the `\\restrict KEY` … `\\unrestrict KEY` pair that
current pg_dump releases write (and the `\\connect` between two such pairs of `pg_dump --create`),
which it accepts and leaves out. psql itself is started in restricted mode under a key the dump
cannot know, so a meta-command the guard might misjudge is still refused by psql's own lexer.

The restore runs as a role that is not a superuser, in a database named by the drill: like
`pg_restore --no-owner --no-privileges --no-subscriptions --no-security-labels`, the statements that
need the origin server's roles (ownership, GRANT/REVOKE, SET SESSION AUTHORIZATION…) or another
database (`--create`'s CREATE/ALTER DATABASE) are left out, each replaced by as many newlines, so
psql's line numbers stay the dump's. COPY with a server-side file or program is refused outright.

At the end, a dump that stops inside a statement, a quoted string or COPY data, without its
`\\unrestrict`, or (from pg_dump) that does not end with its footer — the comment line
`-- PostgreSQL database dump complete`, followed by nothing but empty comments, blank lines and, in
dumps with `\\restrict`, the matching `\\unrestrict` — is refused as truncated: the footer's words
elsewhere (a table may be named after them) prove nothing.
Memory stays bounded: COPY data and long statements pass through as they come.

Pure: bytes in, bytes out (or ScriptRefused); the drill's adapter feeds it and writes to psql.
"""

from __future__ import annotations

import enum
import re
from collections import Counter

HOLD_CAP = 1 << 20  # a statement is held at most this long before it passes through
HEAD_CAP = 4096  # the normalised text a statement is classified from
LITERAL_CAP = 256  # of each literal, in the head
META_LINE_CAP = 4096
WORD_CAP = 1 << 16  # a word or number held whole at most this long: a longer one passes in pieces
COMMENT_CAP = 128  # of a comment between statements, kept to tell pg_dump's footer


class ScriptRefused(Exception):
    """The dump must not reach psql any further; `reason` says why, `line` where (1-based)."""

    def __init__(self, reason: str, line: int, excerpt: str = "") -> None:
        super().__init__(f"{reason} (line {line})")
        self.reason, self.line, self.excerpt = reason, line, excerpt


class _Lex(enum.Enum):
    NORMAL = 0
    SQUOTE = 1  # '…' (standard_conforming_strings on: backslash is a plain character)
    ESTRING = 2  # E'…'
    DQUOTE = 3  # "…"
    DOLLAR = 4  # $tag$…$tag$
    BLOCK = 5  # /* … */, nested
    LINE = 6  # -- … end of line


class _Phase(enum.Enum):
    START = 0  # no \restrict seen
    RESTRICTED = 1  # between \restrict KEY and \unrestrict KEY
    UNRESTRICTED = 2  # after \unrestrict KEY: only comments, or --create's \connect
    RECONNECT = 3  # after --create's \connect: \restrict KEY must follow


_TOKEN = re.compile(
    rb"(?P<space>[ \t\r\f\v]+)"
    rb"|(?P<nl>\n)"
    rb"|(?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)"
    rb"|(?P<num>[0-9][0-9A-Za-z_.]*)"
    rb"|(?P<special>--|/\*|[\\'\"$;()])"
    rb"|(?P<other>[-/]|[^-/A-Za-z0-9_\x80-\xff \t\r\f\v\n\\'\"$;()]+)"
)
_DOLLAR = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$|\$[0-9]+")
_ESTRING_STOP = re.compile(rb"['\\]")
_BLOCK_STOP = re.compile(rb"/\*|\*/")
_KEY = r"([A-Za-z0-9]{1,128})"
_RESTRICT = re.compile(rf"^\\restrict {_KEY}\s*$")
_UNRESTRICT = re.compile(rf"^\\unrestrict {_KEY}\s*$")
_CONNECT = re.compile(r"^\\(?:c|connect)(?: -reuse-previous=on)? (\S+)\s*$")
_FOOTER = b"PostgreSQL database dump complete"
_HOLD_WORDS = {b"alter", b"grant", b"revoke", b"set", b"reset", b"create", b"comment", b"security", b"copy"}
_HOLD_WORDS |= {b"select"}  # set_config('standard_conforming_strings', …)

# What is left out, and why (the head is lower-case words and punctuation separated by spaces).
_LEFT_OUT = [
    (re.compile(r"^(?:create|alter) database "), "database (pg_dump --create)"),
    (re.compile(r"^comment on database "), "database (pg_dump --create)"),
    (re.compile(r"^alter (?!default privileges ).* owner to "), "ownership"),
    (re.compile(r"^(?:grant|revoke) "), "privileges"),
    (re.compile(r"^alter default privileges "), "privileges"),
    (re.compile(r"^(?:set|reset) session authorization\b"), "session authorization"),
    (re.compile(r"^(?:create|alter) subscription "), "subscriptions"),
    (re.compile(r"^comment on subscription "), "subscriptions"),
    (re.compile(r"^security label "), "security labels"),
]
_CREATE_DATABASE = re.compile(r'^create database (?:"([^"]*)"|(\S+))')
_SCS_ON = re.compile(r"^set standard_conforming_strings (?:=|to) (?:on|'on'|true) ;?$")


class PsqlScriptGuard:
    """Feed it the decompressed dump in chunks; forward what it returns to psql."""

    def __init__(self, *, max_bytes: int, expect_footer: bool = True) -> None:
        self.max_bytes, self.expect_footer = max_bytes, expect_footer
        self.bytes_in = 0
        self.line = 1
        self.restrict_key: str | None = None
        self.footer_seen = False
        self.created_database: str | None = None
        self.left_out: Counter[str] = Counter()
        self.statements = 0
        self._buf = b""
        self._out = bytearray()
        self._copy = False
        self._copy_line_start = True
        self._copy_pending = False  # a COPY … FROM stdin ended: its data starts on the next line
        self._lex = _Lex.NORMAL
        self._dollar = b""
        self._depth = 0  # of nested block comments
        self._phase = _Phase.START
        self._comment = bytearray()  # a line comment between statements (the footer is one)
        self._literal = bytearray()
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
        """The rest, once the dump has ended; ScriptRefused when it ends where pg_dump never does."""
        consumed = self._run(final=True)
        self._buf = self._buf[consumed:]
        if self._copy:
            raise ScriptRefused("the dump ends inside the data of a COPY (truncated)", self.line)
        if self._lex is _Lex.LINE:
            self._end_line_comment()
        if self._lex is not _Lex.NORMAL:
            raise ScriptRefused(f"the dump ends inside {_LEX_WORDS[self._lex]} (truncated)", self.line)
        if self._in_statement:
            raise ScriptRefused(
                "the dump ends in the middle of a statement (truncated)", self.line, self._head_text()
            )
        if self._phase is _Phase.RESTRICTED:
            raise ScriptRefused(
                "the dump ends without the \\unrestrict of its \\restrict (truncated)", self.line
            )
        if self._phase is _Phase.RECONNECT:
            raise ScriptRefused("the dump ends after a \\connect (truncated)", self.line)
        if self.expect_footer and not self.footer_seen:
            raise ScriptRefused(
                "the dump does not end with pg_dump's 'PostgreSQL database dump complete' footer (truncated)",
                self.line,
            )
        return self._take()

    # ------------------------------------------------------------ the scanner

    def _take(self) -> bytes:
        out, self._out = self._out, bytearray()
        return out  # a bytearray: psql's pipe takes it as it is

    def _run(self, final: bool) -> int:
        buf, pos, end = self._buf, 0, len(self._buf)
        while pos < end:
            state = (self._lex, self._copy)
            new = self._copy_data(buf, pos, final) if self._copy else self._sql(buf, pos, final)
            if new == pos and state == (self._lex, self._copy):
                if final:  # an incomplete token at the very end: it passes as it is
                    self._emit(buf[pos:])
                    return end
                break
            pos = new
        return pos

    def _emit(self, data: bytes) -> None:
        """Route consumed bytes: held with their statement, left out (newlines kept), or passed on."""
        self.line += data.count(b"\n")
        if self._decision == "drop":
            self._out += b"\n" * data.count(b"\n")
        elif self._decision is None and self._in_statement:
            self._held += data
            if len(self._held) > HOLD_CAP:
                self._decide(final=False, overflow=True)
        else:
            self._out += data

    def _copy_data(self, buf: bytes, pos: int, final: bool) -> int:
        """COPY data passes through until a line that is exactly `\\.`."""
        search = pos
        while True:
            j = _next_backslash_dot(buf, search)
            if j < 0:
                stop = len(buf) if final or not buf.endswith(b"\\") else len(buf) - 1
                return self._copy_emit(buf, pos, max(stop, pos))
            at_line_start = (j == pos and self._copy_line_start) or (j > pos and buf[j - 1] == 0x0A)
            if not at_line_start:
                search = j + 2
                continue
            rest = buf[j + 2 : j + 4]
            if (len(rest) == 0 or rest == b"\r") and not final:
                return self._copy_emit(buf, pos, j)  # wait for what follows `\.`
            if rest[:1] == b"\n" or rest == b"\r\n" or len(rest) == 0:
                stop = j + 2 + (0 if not rest else 1 if rest[:1] == b"\n" else 2)
                self._copy_emit(buf, pos, stop)
                self._copy = False
                return stop
            search = j + 2

    def _copy_emit(self, buf: bytes, start: int, stop: int) -> int:
        if stop > start:  # the bulk of a dump: counted and copied once, never sliced
            self.line += buf.count(b"\n", start, stop)
            self._out += memoryview(buf)[start:stop]
            self._copy_line_start = buf[stop - 1] == 0x0A
        return stop

    def _sql(self, buf: bytes, pos: int, final: bool) -> int:
        lex = self._lex
        if lex is _Lex.NORMAL:
            return self._normal(buf, pos, final)
        if lex is _Lex.LINE:
            j = buf.find(b"\n", pos)
            stop = len(buf) if j < 0 else j
            if not self._in_statement and len(self._comment) <= COMMENT_CAP:
                self._comment += buf[pos:stop][: COMMENT_CAP + 1 - len(self._comment)]
            self._emit(buf[pos:stop])
            if j < 0:
                return stop
            self._end_line_comment()
            self._newline()
            return j + 1
        if lex is _Lex.BLOCK:
            return self._block(buf, pos, final)
        if lex is _Lex.DOLLAR:
            j = buf.find(self._dollar, pos)
            if j < 0:
                stop = len(buf) if final else max(pos, len(buf) - len(self._dollar) + 1)
                self._literal_part(buf[pos:stop])
                self._emit(buf[pos:stop])
                return stop
            self._literal_part(buf[pos:j])
            stop = j + len(self._dollar)
            self._emit(buf[pos:stop])
            self._end_literal("$")
            return stop
        return self._quoted(buf, pos, final)

    def _quoted(self, buf: bytes, pos: int, final: bool) -> int:
        lex, i = self._lex, pos
        quote = 0x22 if lex is _Lex.DQUOTE else 0x27
        while True:
            if lex is _Lex.ESTRING:
                m = _ESTRING_STOP.search(buf, i)
                j = m.start() if m else -1
            else:
                j = buf.find(b'"' if quote == 0x22 else b"'", i)
            if j < 0:
                self._literal_part(buf[pos:])
                self._emit(buf[pos:])
                return len(buf)
            if j + 1 >= len(buf) and not final:
                self._literal_part(buf[pos:j])
                self._emit(buf[pos:j])
                return j  # the next byte decides (an escape, a doubled quote, or the end)
            if buf[j] == 0x5C:  # E'…\x…': the backslash escapes the next byte
                i = j + 2
                continue
            if j + 1 < len(buf) and buf[j + 1] == quote:  # a doubled quote
                i = j + 2
                continue
            self._literal_part(buf[pos:j])
            self._emit(buf[pos : j + 1])
            self._end_literal('"' if quote == 0x22 else "'")
            return j + 1

    def _block(self, buf: bytes, pos: int, final: bool) -> int:
        i = pos
        while True:
            m = _BLOCK_STOP.search(buf, i)
            if m is None:
                stop = len(buf) if final or buf[-1:] not in (b"/", b"*") else len(buf) - 1
                self._emit(buf[pos:stop])
                return max(stop, pos)
            self._depth += 1 if m.group() == b"/*" else -1
            i = m.end()
            if self._depth == 0:
                self._emit(buf[pos:i])
                self._lex = _Lex.NORMAL
                return i

    def _normal(self, buf: bytes, pos: int, final: bool) -> int:
        m = _TOKEN.match(buf, pos)
        assert m is not None
        kind, token, end = m.lastgroup, m.group(), m.end()
        needs_more = end == len(buf) and not final
        if kind == "space":
            self._emit(token)
        elif kind == "nl":
            self._newline()
        elif kind == "word":
            if needs_more and len(token) < WORD_CAP:
                return pos  # the word may go on in the next chunk
            return self._word(buf, pos, end, token, final)
        elif kind == "num":
            if needs_more and len(token) < WORD_CAP:
                return pos  # the number may go on in the next chunk (a longer one passes in pieces)
            self._significant(token, token)
        elif kind == "special":
            return self._special(buf, pos, token, final)
        else:
            if token in (b"-", b"/") and needs_more:
                return pos  # `--` or `/*` may be split across chunks
            self._significant(token, token)
        return end

    def _newline(self) -> None:
        self._emit(b"\n")
        if self._copy_pending:  # the data of the COPY just sent starts here
            self._copy_pending, self._copy, self._copy_line_start = False, True, True

    def _word(self, buf: bytes, pos: int, end: int, word: bytes, final: bool) -> int:
        if end < len(buf) and buf[end] == 0x27 and word in (b"e", b"E"):
            self._significant(buf[pos : end + 1], b"e'")
            self._lex = _Lex.ESTRING
            self._literal.clear()
            return end + 1
        lowered = word.lower()
        index = self._words
        self._significant(word, lowered)
        self._track_routine_body(index, lowered)
        return end

    def _track_routine_body(self, index: int, word: bytes) -> None:
        """psql's heuristic, mirrored: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, outside
        parentheses, BEGIN … END (and CASE … END within it) hold semicolons that do not end the
        statement (SQL-standard routine bodies, `BEGIN ATOMIC`)."""
        if index < 4 and word in (b"create", b"function", b"procedure", b"or", b"replace"):
            self._routine[index] = word[0]
        r = self._routine
        routine = r[0] == ord("c") and (
            r[1] in (ord("f"), ord("p"))
            or (r[1] == ord("o") and r[2] == ord("r") and r[3] in (ord("f"), ord("p")))
        )
        if not routine or self._paren != 0:
            return
        if word == b"begin" or (word == b"case" and self._begin >= 1):
            self._begin += 1
        elif word == b"end" and self._begin > 0:
            self._begin -= 1

    def _special(self, buf: bytes, pos: int, token: bytes, final: bool) -> int:
        if token == b"--":
            self._emit(token)
            self._lex = _Lex.LINE
            self._comment.clear()
            return pos + 2
        if token == b"/*":
            self._emit(token)
            self._lex, self._depth = _Lex.BLOCK, 1
            return pos + 2
        if token == b"\\":
            return self._meta(buf, pos, final)
        if token in (b"'", b'"'):
            self._significant(token, b"")
            self._lex = _Lex.SQUOTE if token == b"'" else _Lex.DQUOTE
            self._literal.clear()
            return pos + 1
        if token == b"$":
            return self._dollar_sign(buf, pos, final)
        if token == b";":
            self._significant(token, b";")
            if self._paren == 0 and self._begin == 0:
                self._end_statement()
            return pos + 1
        self._paren += 1 if token == b"(" else -1 if self._paren > 0 else 0
        self._significant(token, token)
        return pos + 1

    def _dollar_sign(self, buf: bytes, pos: int, final: bool) -> int:
        m = _DOLLAR.match(buf, pos)
        if m is None:
            if not final and len(buf) - pos < 256 and b"$" not in buf[pos + 1 :]:
                return pos  # a tag may still be coming
            self._significant(b"$", b"$")
            return pos + 1
        delimiter = m.group()
        if delimiter[1:2].isdigit():  # $1: a parameter
            if m.end() == len(buf) and not final and len(delimiter) < WORD_CAP:
                return pos  # more digits may follow
            self._significant(delimiter, delimiter)
            return m.end()
        self._significant(delimiter, b"$")
        self._lex, self._dollar = _Lex.DOLLAR, delimiter
        self._literal.clear()
        return m.end()

    # ------------------------------------------------------------ statements

    def _new_statement(self) -> None:
        self._in_statement = False
        self._decision: str | None = None
        self._held = bytearray()
        self._head = bytearray()
        self._words = 0
        self._first = b""
        self._routine = [0, 0, 0, 0]  # psql's look at CREATE [OR REPLACE] FUNCTION|PROCEDURE
        self._paren = 0
        self._begin = 0

    def _significant(self, raw: bytes, normalised: bytes) -> None:
        """A token of a statement: the first one starts it (after the checks of the meta phase)."""
        if self._copy_pending:
            raise ScriptRefused(
                "text after COPY … FROM stdin; on the same line (pg_dump never writes that)", self.line
            )
        if not self._in_statement:
            self._start_statement()
        if normalised[:1].isalpha() or normalised[:1] == b"_":
            self._words += 1
            if self._words == 1:
                self._first = normalised
        if normalised and len(self._head) < HEAD_CAP:
            self._head += (b" " if self._head else b"") + normalised
        self._emit(raw)
        if self._decision is None:
            self._decide(final=False)

    def _start_statement(self) -> None:
        self.footer_seen = False  # SQL after the footer: the footer was not the end
        if self._phase is _Phase.UNRESTRICTED:
            raise ScriptRefused("SQL after the dump's \\unrestrict (pg_dump never writes that)", self.line)
        if self._phase is _Phase.RECONNECT:
            raise ScriptRefused("SQL between \\connect and \\restrict (pg_dump never writes that)", self.line)
        self._in_statement = True

    def _literal_part(self, data: bytes) -> None:
        if self._in_statement and self._decision is None and len(self._literal) < LITERAL_CAP:
            self._literal += data[: LITERAL_CAP - len(self._literal)]

    def _end_literal(self, quote: str) -> None:
        self._lex = _Lex.NORMAL
        if self._decision is None and len(self._head) < HEAD_CAP:
            text = bytes(self._literal).replace(b" ", b"\x00")
            self._head += (b" " if self._head else b"") + quote.encode() + text + quote.encode()
        self._literal.clear()

    def _end_line_comment(self) -> None:
        """A comment between statements: pg_dump's footer (before any `\\unrestrict`) when it is
        exactly that; anything else but an empty comment means the footer was not the end."""
        self._lex = _Lex.NORMAL
        if not self._in_statement:
            text = bytes(self._comment).strip()
            if (
                text == _FOOTER
                and len(self._comment) <= COMMENT_CAP
                and self._phase is not _Phase.UNRESTRICTED
            ):
                self.footer_seen = True
            elif text:
                self.footer_seen = False
        self._comment.clear()

    def _end_statement(self) -> None:
        self.statements += 1
        if self._decision is None:
            self._decide(final=True)
        if self._decision == "copy":
            self._copy_pending = True
        self._new_statement()

    def _head_text(self) -> str:
        return self._head.decode("latin-1").replace("\x00", " ")[:200]

    def _decide(self, *, final: bool, overflow: bool = False) -> None:
        """Pass, leave out or hold the statement being read, once its words say which."""
        first, head = self._first, self._head.decode("latin-1")
        if first and first not in _HOLD_WORDS:
            self._release("pass")
            return
        if not final and not overflow:
            return  # held until it ends: ownership and COPY are told from the whole statement
        if "standard_conforming_strings" in head and not _SCS_ON.match(head):
            raise ScriptRefused(
                "the dump changes standard_conforming_strings (pg_dump always writes it on)",
                self.line,
                self._head_text(),
            )
        if first == b"copy" and not overflow:
            self._decide_copy(head)
            return
        if first == b"copy":
            raise ScriptRefused("a COPY statement longer than 1 MiB", self.line, self._head_text())
        for pattern, why in _LEFT_OUT if not overflow else []:
            if pattern.match(head):
                created = _CREATE_DATABASE.match(head)
                if created:
                    self.created_database = (created.group(1) or created.group(2) or "").replace("\x00", " ")
                self.left_out[why] += 1
                self._release("drop")
                return
        self._release("pass")

    def _decide_copy(self, head: str) -> None:
        if re.search(r"\bprogram\b", head):
            raise ScriptRefused("COPY … PROGRAM (runs a command on the server)", self.line, self._head_text())
        if re.search(r"\b(?:from|to) '", head):
            raise ScriptRefused("COPY with a file on the server", self.line, self._head_text())
        self._release("copy" if re.search(r"\bfrom stdin\b", head) else "pass")

    def _release(self, decision: str) -> None:
        self._decision = decision
        held, self._held = bytes(self._held), bytearray()
        if decision == "drop":
            self._out += b"\n" * held.count(b"\n")
        else:
            self._out += held

    # ------------------------------------------------------------ meta-commands

    def _meta(self, buf: bytes, pos: int, final: bool) -> int:
        j = buf.find(b"\n", pos)
        if j < 0 and not final:
            if len(buf) - pos > META_LINE_CAP:
                raise ScriptRefused("a psql meta-command line longer than 4 KiB", self.line)
            return pos
        stop = len(buf) if j < 0 else j
        text = buf[pos:stop].decode("latin-1").rstrip("\r")
        if self._in_statement or self._copy_pending:
            raise ScriptRefused("a psql meta-command inside a statement", self.line, _shown(text))
        self._accept_meta(text)
        return stop  # the accepted line is left out; its newline stays

    def _accept_meta(self, text: str) -> None:
        phase = self._phase
        restrict, unrestrict, connect = _RESTRICT.match(text), _UNRESTRICT.match(text), _CONNECT.match(text)
        if restrict and phase is _Phase.START and self.statements == 0:
            self._phase, self.restrict_key = _Phase.RESTRICTED, restrict.group(1)
        elif restrict and phase is _Phase.RECONNECT and restrict.group(1) == self.restrict_key:
            self._phase = _Phase.RESTRICTED
        elif unrestrict and phase is _Phase.RESTRICTED and unrestrict.group(1) == self.restrict_key:
            self._phase = _Phase.UNRESTRICTED
        elif connect and phase is _Phase.UNRESTRICTED and self.created_database is not None:
            self._phase, self.footer_seen = _Phase.RECONNECT, False
        else:
            command = text.split(None, 1)[0] if text.split() else text
            raise ScriptRefused(
                f"psql meta-command {command} refused (only pg_dump's \\restrict/\\unrestrict pairs are "
                "accepted)",
                self.line,
                _shown(text),
            )


def _next_backslash_dot(buf: bytes, start: int) -> int:
    """Where `\\.` (or a backslash ending `buf`) is next, from `start`; -1 when nowhere. Backslashes
    are rare in COPY data and memchr finds one at memory speed, where a search for `\\.` keys on the
    dot every amount and date holds; data full of backslashes switches to that search."""
    for _ in range(32):
        j = buf.find(b"\\", start)
        if j < 0 or j + 1 == len(buf) or buf[j + 1] == 0x2E:
            return j
        start = j + 1
    return buf.find(b"\\.", start)


_LEX_WORDS = {
    _Lex.SQUOTE: "a quoted string",
    _Lex.ESTRING: "a quoted string",
    _Lex.DQUOTE: "a quoted identifier",
    _Lex.DOLLAR: "a dollar-quoted string",
    _Lex.BLOCK: "a comment",
}


def _shown(text: str) -> str:
    """An excerpt of untrusted text fit for a message: printable, one line, short."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= 200 else clean[:199] + "…"
