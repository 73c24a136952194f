"""The guard between a plain dump and psql: what it refuses, what it leaves out, what it lets through,
the same whatever the chunks the dump arrives in, with psql's line numbers kept."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.core.psql_guard import PsqlScriptGuard, ScriptRefused

KEY = "AbC123"
HEAD = f"--\n-- PostgreSQL database dump\n--\n\n\\restrict {KEY}\n\nSET client_encoding = 'UTF8';\n"
FOOT = f"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict {KEY}\n\n"


def dump(body: str, *, before: str = "", after: str = "") -> bytes:
    return (HEAD.replace("\\restrict", before + "\\restrict") + body + FOOT + after).encode()


def run(data: bytes, cuts: list[int] | None = None, max_bytes: int = 10**9) -> tuple[bytes, PsqlScriptGuard]:
    guard = PsqlScriptGuard(max_bytes=max_bytes)
    out = bytearray()
    start = 0
    for cut in sorted(set(c for c in cuts or [] if 0 < c < len(data))):
        out += guard.feed(data[start:cut])
        start = cut
    out += guard.feed(data[start:])
    out += guard.finish()
    return bytes(out), guard


def refusal(data: bytes, **kwargs: object) -> ScriptRefused:
    with pytest.raises(ScriptRefused) as caught:
        run(data, **kwargs)  # type: ignore[arg-type]
    return caught.value


GOOD = dump(
    "CREATE FUNCTION public.f(a integer) RETURNS integer\n    LANGUAGE sql\n"
    "    BEGIN ATOMIC\n SELECT (a + 1);\n"
    " SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\nEND;\n\n"
    "ALTER FUNCTION public.f(a integer) OWNER TO someone;\n"
    'CREATE TABLE public.t (a integer, b text, "we\\!ird" text);\n'
    "ALTER TABLE public.t OWNER TO someone;\n"
    "COMMENT ON TABLE public.t IS 'it''s \\! not a command; -- nor a comment';\n"
    "CREATE FUNCTION public.g() RETURNS text LANGUAGE plpgsql AS $fn$\n"
    "BEGIN\n\\! in a body\n  RETURN $$x$$;\nEND $fn$;\n"
    "SELECT E'escaped \\' quote; \\\\';\n"
    "/* a /* nested */ \\! comment */\n"
    'COPY public.t (a, b, "we\\!ird") FROM stdin;\n1\t\\N\t\\!data\n2\tx\\.y\t\\\\.\n\\.\n'
    "GRANT ALL ON TABLE public.t TO someone;\nREVOKE ALL ON SCHEMA public FROM PUBLIC;\n"
    "ALTER DEFAULT PRIVILEGES FOR ROLE x GRANT SELECT ON TABLES TO y;\n"
    "SET SESSION AUTHORIZATION 'someone';\nSECURITY LABEL FOR selinux ON TABLE public.t IS 'x';\n"
    "CREATE SUBSCRIPTION s CONNECTION 'host=elsewhere' PUBLICATION p WITH (connect = false);\n"
    "PREPARE p AS SELECT $1::int;\n"
)


def test_a_real_looking_dump_passes_with_ownership_and_privileges_left_out() -> None:
    out, guard = run(GOOD)
    assert out.count(b"\n") == GOOD.count(b"\n")  # psql's line numbers are the dump's
    assert guard.restrict_key == KEY and guard.footer_seen
    assert dict(guard.left_out) == {
        "ownership": 2,
        "privileges": 3,
        "session authorization": 1,
        "security labels": 1,
        "subscriptions": 1,
    }
    text = out.decode()
    assert "OWNER TO" not in text and "GRANT" not in text and "REVOKE" not in text
    assert "\\restrict" not in text and "\\unrestrict" not in text  # the drill restricts psql itself
    assert "COPY public.t" in text and "1\t\\N\t\\!data\n" in text and "\\! in a body" in text


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(GOOD) - 1), max_size=40))
def test_the_chunks_a_dump_arrives_in_change_nothing(cuts: list[int]) -> None:
    assert run(GOOD, cuts)[0] == run(GOOD)[0]


HOSTILE = {
    "shell": (dump("\\! touch /tmp/x\n"), "psql meta-command \\! refused"),
    "before_restrict": (dump("", before="\\! id\n"), "psql meta-command \\! refused"),
    "after_unrestrict": (dump("", after="\\! id\n"), "psql meta-command \\! refused"),
    "sql_after_unrestrict": (dump("", after="DROP TABLE t;\n"), "SQL after the dump's \\unrestrict"),
    "pipe": (dump("\\o |cat\n"), "psql meta-command \\o refused"),
    "copy_meta": (dump("\\copy t to program 'id'\n"), "psql meta-command \\copy refused"),
    "gexec": (dump("SELECT 'x' \\gexec\n"), "a psql meta-command inside a statement"),
    "second_restrict": (dump("\\restrict other\n"), "psql meta-command \\restrict refused"),
    "wrong_unrestrict": (dump("\\unrestrict nope\n"), "psql meta-command \\unrestrict refused"),
    "copy_program": (dump("COPY t TO PROGRAM 'id';\n"), "COPY … PROGRAM"),
    "copy_file": (dump("copy t from '/etc/passwd';\n"), "COPY with a file on the server"),
    "after_copy_line": (dump("COPY t FROM stdin; \\! id\n\\.\n"), "a psql meta-command inside a statement"),
    "text_after_copy": (dump("COPY t FROM stdin; SELECT 1;\n\\.\n"), "text after COPY"),
    "scs_off": (dump("SET standard_conforming_strings = off;\n"), "standard_conforming_strings"),
    "scs_function": (
        dump("SELECT set_config('standard_conforming_strings', 'off', false);\n"),
        "standard_conforming",
    ),
    "truncated_statement": (dump("")[: -len(FOOT)] + b"CREATE TABLE t (a int", "middle of a statement"),
    "truncated_copy": (dump("")[: -len(FOOT)] + b"COPY t FROM stdin;\n1\n", "inside the data of a COPY"),
    "truncated_string": (dump("")[: -len(FOOT)] + b"SELECT 'abc", "inside a quoted string"),
    "no_footer": (HEAD.encode() + f"SELECT 1;\n\\unrestrict {KEY}\n".encode(), "dump complete' footer"),
    "no_unrestrict": (HEAD.encode() + b"SELECT 1;\n", "without the \\unrestrict"),
    # The footer's words must be the dump's end, not anywhere in it (a table may bear them as a name).
    "footer_as_a_name": (
        HEAD.encode()
        + b"--\n-- Name: PostgreSQL database dump complete; Type: TABLE; Schema: public; Owner: -\n--\n\n"
        + b'CREATE TABLE public."PostgreSQL database dump complete" (a integer);\n'
        + f"\\unrestrict {KEY}\n".encode(),
        "dump complete' footer",
    ),
    "statement_after_footer": (
        HEAD.encode()
        + FOOT.split("\\unrestrict")[0].encode()
        + b"SELECT 1;\n"
        + f"\\unrestrict {KEY}\n".encode(),
        "dump complete' footer",
    ),
    "comment_after_footer": (
        HEAD.encode()
        + FOOT.split("\\unrestrict")[0].encode()
        + b"-- more\n"
        + f"\\unrestrict {KEY}\n".encode(),
        "dump complete' footer",
    ),
    "footer_after_unrestrict": (
        HEAD.encode() + f"\\unrestrict {KEY}\n--\n-- PostgreSQL database dump complete\n--\n".encode(),
        "dump complete' footer",
    ),
    "long_footer_comment": (
        HEAD.encode()
        + b"-- PostgreSQL database dump complete"
        + b" " * 200
        + b"(not really)\n"
        + f"\\unrestrict {KEY}\n".encode(),
        "dump complete' footer",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_what_pg_dump_never_writes_is_refused_with_its_line(case: str) -> None:
    data, reason = HOSTILE[case]
    refused = refusal(data)
    assert reason in refused.reason
    assert refused.line >= 1
    assert refusal(data, cuts=list(range(1, len(data), 3))).reason == refused.reason


def test_an_old_dump_is_complete_only_when_its_footer_ends_it() -> None:
    old = b"--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE t (a int);\n"
    footer = b"\n--\n-- PostgreSQL database dump complete\n--\n\n"
    assert run(old + footer + b"\n\n--\n")[1].footer_seen
    spoof = old + b"--\n-- Name: PostgreSQL database dump complete; Type: TABLE\n--\n"
    assert "dump complete' footer" in refusal(spoof + b"CREATE TABLE x (a int);\n").reason
    assert "dump complete' footer" in refusal(old + footer + b"CREATE TABLE y (a int);\n").reason


def test_an_old_dump_without_restrict_passes_but_no_meta_command_ever_does() -> None:
    old = b"--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE t (a int);\n"
    old += b"\n--\n-- PostgreSQL database dump complete\n--\n"
    assert run(old)[0] == old
    refused = refusal(old.replace(b"CREATE TABLE", b"\\! id\nCREATE TABLE"))
    assert refused.line == 5 and refused.excerpt == "\\! id"


def test_a_dump_made_with_create_goes_into_the_drills_database() -> None:
    body = (
        "CREATE DATABASE src WITH TEMPLATE = template0 ENCODING = 'UTF8';\n\n"
        "ALTER DATABASE src OWNER TO x;\n\n"
        f"\\unrestrict {KEY}\n\\connect src\n\\restrict {KEY}\n\nCREATE TABLE t (a int);\n"
    )
    out, guard = run(dump(body))
    assert guard.created_database == "src"
    assert b"CREATE DATABASE" not in out and b"\\connect" not in out and b"CREATE TABLE t" in out
    assert dict(guard.left_out) == {"database (pg_dump --create)": 2}


def test_the_decompressed_size_is_capped() -> None:
    refused = refusal(dump("COPY t FROM stdin;\n" + "x\n" * 5000 + "\\.\n"), max_bytes=4096)
    assert "decompresses to more than 4,096 bytes" in refused.reason


SQLISH = st.text(alphabet=list("ab ;'\"$\\-/*()\n\tEe.:"), max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    middle=SQLISH | st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    cuts=st.lists(st.integers(1, 500), max_size=8),
)
def test_any_text_ends_in_output_or_a_refusal_never_a_crash(middle: str, cuts: list[int]) -> None:
    """Whatever sits between a real header and footer (quotes left open, stray backslashes, dollar
    signs, comments), the guard answers, the same way for any chunking, keeping psql's lines."""
    data = HEAD.encode() + middle.encode("latin-1") + FOOT.encode()
    try:
        out, _ = run(data, cuts)
    except ScriptRefused as refused:
        assert refused.reason
        assert refusal(data).reason == refused.reason
        return
    assert out.count(b"\n") == data.count(b"\n")
    assert out == run(data)[0]


@pytest.mark.parametrize("token", [b"1", b"$1"])
def test_a_huge_number_passes_through_as_it_comes(token: bytes) -> None:
    """A number (or a `$n` parameter) megabytes long is passed on in pieces, never held whole: the
    guard's memory and work stay proportional to the chunk, whatever the token."""
    guard = PsqlScriptGuard(max_bytes=1 << 30)
    passed = len(guard.feed(HEAD.encode() + b"SELECT " + token))
    chunk = b"1" * (64 << 10)
    for _ in range(64):  # 4 MiB of one number
        passed += len(guard.feed(chunk))
    assert passed >= 3 << 20, f"only {passed:,} bytes passed: the number is held"
