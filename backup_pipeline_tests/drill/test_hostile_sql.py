"""A restored dump is a stranger's program: nothing the product runs with rights resolves a name the
dump could define, and nothing the dump names can switch the drill's checks off or fake its end.

Each dump below defines functions and operators that shadow the ones the product's statements use —
in `public`, in schemas named after the scratch cluster's roles (`"$user"`), and as the default
search path of its database and role, with pg_catalog's exact signatures and with better-matching
argument types — and keeps the restore busy long enough for the statement watch to look at it. Every
shadow calls a probe that, when it runs as a superuser, records itself in a table the drill counts and
tries to run a shell. The drill must restore cleanly, the probe's table must stay empty, and no shell
may have run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.drill.test_other_binaries import debian_bin_dir
from backup_pipeline_tests.support.drill_fixtures import DAY2, Site, build_site, gz, staged
from backup_pipeline_tests.support.hostile_dumps import (
    FOOTER,
    database_search_path,
    head,
    operator,
    probe,
    script,
    shadow,
    table_rows,
)

ROLES = ("drill_admin", "drill_restore", "drill_watch", "postgres")
BUSY = "SELECT pg_catalog.pg_sleep(3);\n"  # the statement watch looks every second


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bp-sentinels-", dir="/tmp"))
    os.chmod(folder, 0o777)  # the drill user could write here: only the defences keep it empty
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def make_interval_numeric(schema: str) -> str:
    """The issue's reproduction: `secs numeric` matches a numeric argument better than pg_catalog's
    `double precision`, wherever the schema is in the path."""
    real = "pg_catalog.make_interval(secs => secs::pg_catalog.float8)"
    return shadow(schema, "make_interval", "secs numeric", "interval", real, f"make_interval_{schema}")


def exact_signatures(schema: str) -> str:
    """pg_catalog's own signatures: they win only where a search path puts `schema` first."""
    seven = "years int, months int, weeks int, days int, hours int, mins int, secs double precision"
    real = "pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs)"
    return "".join(
        [
            shadow(schema, "make_interval", seven, "interval", real, "make_interval_exact"),
            shadow(schema, "clock_timestamp", "", "timestamptz", "pg_catalog.clock_timestamp()", "clock"),
            shadow(schema, "now", "", "timestamptz", "pg_catalog.now()", "now"),
            shadow(schema, "pg_cancel_backend", "integer", "boolean", "false", "cancel"),
            shadow(schema, "left", "text, integer", "text", "pg_catalog.left($1, $2)", "left"),
            shadow(schema, "substr", "text, int, int", "text", "pg_catalog.substr($1, $2, $3)", "substr"),
            shadow(schema, "current_database", "", "name", "pg_catalog.current_database()", "db"),
            shadow(schema, "pg_database_size", "oid", "int8", "pg_catalog.pg_database_size($1)", "db_size"),
            shadow(schema, "pg_database_size", "name", "int8", "pg_catalog.pg_database_size($1)", "db_size"),
            shadow(
                schema,
                "pg_total_relation_size",
                "regclass",
                "bigint",
                "pg_catalog.pg_total_relation_size($1)",
                "relation_size",
            ),
        ]
    )


def operators(schema: str) -> str:
    pairs = [
        ("<", "timestamptz", "timestamptz", "boolean"),
        ("-", "timestamptz", "timestamptz", "interval"),
        ("-", "timestamptz", "interval", "timestamptz"),
        ("=", "name", "name", "boolean"),
        ("=", "text", "text", "boolean"),
        ("=", "integer", "integer", "boolean"),
        ("=", "oid", "oid", "boolean"),
        ("=", '"char"', '"char"', "boolean"),
        ("<>", "name", "name", "boolean"),
        (">=", "oid", "oid", "boolean"),
        (">=", "oid", "integer", "boolean"),  # mixed: a better match for `oid >= 16384` than oid >= oid
        ("=", "oid", "integer", "boolean"),
        ("=", "regclass", "oid", "boolean"),
    ]
    return "".join(operator(schema, s, left, right, r, f"op{s}{left}{right}") for s, left, right, r in pairs)


def cases(sentinels: Path) -> dict[str, str]:
    """Dump bodies: each a way to put the dump's code where a privileged statement may call it."""
    first = probe(sentinels)
    return {
        "public": first + make_interval_numeric("public") + BUSY,
        "role_schemas": first
        + "".join(f"CREATE SCHEMA {role};\n{make_interval_numeric(role)}" for role in ROLES)
        + BUSY,
        "database_path": first
        + exact_signatures("public")
        + database_search_path("public, pg_catalog")
        + BUSY,
        "role_schema_path": first
        + "".join(f"CREATE SCHEMA {role};\n{exact_signatures(role)}" for role in ROLES)
        + database_search_path('"$user", pg_catalog')
        + BUSY,
        "operators": first + operators("public") + database_search_path("public, pg_catalog") + BUSY,
    }


@pytest.mark.parametrize("case", sorted(cases(Path("/x"))))
def test_no_privileged_statement_runs_a_shadow_the_dump_defines(
    site: Site, sentinels: Path, case: str
) -> None:
    row = site.drill_json(case, DAY2)
    assert row["outcome"] == "RESTORED", row
    counted = table_rows(site.ws.database_url, row["drill_id"])
    assert counted.get("public.hijacked") == 0, f"a superuser ran the dump's code: {counted}"
    assert list(sentinels.iterdir()) == []


# ---------------------------------------------------------------- the checks cannot be switched off


def squatting() -> str:
    """A schema named as the product's own used to be, holding a table with rows: the checks must
    still run, and the table must be counted."""
    return (
        "CREATE SCHEMA backup_pipeline_drill_amcheck;\n"
        "CREATE TABLE backup_pipeline_drill_amcheck.hidden (id integer PRIMARY KEY);\n"
        "COPY backup_pipeline_drill_amcheck.hidden (id) FROM stdin;\n1\n2\n3\n\\.\n"
    )


def expression_index(sentinels: Path) -> str:
    """An index over the dump's own function: were it evaluated outside the restore, it would have to
    run with no more rights than the dump's own (amcheck verifies indexes structurally and runs
    none of it: `test_amcheck_runs_none_of_the_dumps_code`)."""
    return (
        probe(sentinels)
        + "CREATE FUNCTION public.keyed(a integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE "
        "SET search_path = pg_catalog AS $f$ BEGIN PERFORM public.bp_hijack('index'); RETURN a; END $f$;\n"
        + "COPY public.t (a) FROM stdin;\n1\n2\n3\n\\.\n"
        + "CREATE INDEX t_keyed ON public.t (public.keyed(a));\n"
    )


def expression_index_outside_the_restore() -> str:
    """An index over a function that fails when anyone but the restore evaluates it: verifying the
    index structurally must not run it at all."""
    return (
        "CREATE FUNCTION public.only_restoring(a integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE "
        "SET search_path = pg_catalog AS $f$ BEGIN IF session_user OPERATOR(pg_catalog.<>) 'drill_restore' "
        "THEN RAISE EXCEPTION 'the dump''s code ran in the product''s checks'; END IF; RETURN a; END $f$;\n"
        "COPY public.t (a) FROM stdin;\n1\n2\n3\n\\.\n"
        "CREATE INDEX t_only_restoring ON public.t (public.only_restoring(a));\n"
    )


def test_amcheck_runs_none_of_the_dumps_code(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(debian_bin_dir()))
    row = site.drill_json("expression_outside", DAY2)
    assert row["outcome"] == "RESTORED", row
    assert row["amcheck"] == "1 of 1 btree index(es) verified", row


def test_a_squatted_schema_name_neither_stops_amcheck_nor_hides_a_table(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(debian_bin_dir()))  # amcheck is Debian's
    row = site.drill_json("squatting", DAY2)
    assert row["outcome"] == "RESTORED", row
    assert row["amcheck"] == "1 of 1 btree index(es) verified", row["amcheck"]
    counted = table_rows(site.ws.database_url, row["drill_id"])
    assert counted["backup_pipeline_drill_amcheck.hidden"] == 3, counted


def test_an_expression_index_is_verified_without_rights_beyond_the_dumps_own(
    site: Site, sentinels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(debian_bin_dir()))
    row = site.drill_json("expression_index", DAY2)
    assert row["outcome"] == "RESTORED", row
    assert row["amcheck"] == "1 of 1 btree index(es) verified", row["amcheck"]
    counted = table_rows(site.ws.database_url, row["drill_id"])
    assert counted["public.hijacked"] == 0 and counted["public.t"] == 3, counted
    assert list(sentinels.iterdir()) == []


# ---------------------------------------------------------------- a faked end


def spoofed_footer() -> bytes:
    """An older pg_dump's dump (no `\\restrict`) of a table named like the footer, cut right after
    that table's CREATE TABLE: the footer's words are in the dump, but not as its end."""
    name = "PostgreSQL database dump complete"
    return (
        head(restrict=False)
        + f"--\n-- Name: {name}; Type: TABLE; Schema: public; Owner: -\n--\n\n"
        + f'CREATE TABLE public."{name}" (\n    a integer\n);\n\n'
    ).encode()


def footer_then_more() -> bytes:
    """The footer, then a statement: the footer is not the end."""
    return (head(restrict=False) + FOOTER + "CREATE TABLE public.after_the_end (a integer);\n").encode()


def sound_older_dump() -> bytes:
    return (head(restrict=False) + FOOTER).encode()


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, sentinels: Path) -> Site:
    """One agent staging every dump of this module (scanned once)."""
    bodies = cases(sentinels) | {"squatting": squatting(), "expression_index": expression_index(sentinels)}
    bodies["expression_outside"] = expression_index_outside_the_restore()
    plain = {name: script(body) for name, body in bodies.items()}
    plain |= {"spoofed": spoofed_footer(), "more": footer_then_more(), "sound": sound_older_dump()}
    dumps = {name: {DAY2: staged(name, DAY2, gz(data), ".sql.gz")} for name, data in plain.items()}
    return build_site(module_workspace, dumps)


@pytest.mark.parametrize("case", ["spoofed", "more"])
def test_a_dump_is_complete_only_when_the_footer_ends_it(site: Site, case: str) -> None:
    row = site.drill_json(case, DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert "truncated" in row["reason"] or "after the dump's end" in row["reason"], row["reason"]


def test_an_older_dump_ending_with_its_footer_restores(site: Site) -> None:
    row = site.drill_json("sound", DAY2)
    assert row["outcome"] == "RESTORED", row
