"""The generic audit: every SQL statement the product sends to a scratch cluster, run against a
database full of shadowing functions, aggregates, operators, types and relations, runs nothing of
theirs.

1. Real drills (a sound dump with amcheck's binaries, and a dump whose statement the watch cancels)
   are recorded: every statement the product sends, with its role, database and parameters.
2. A dump is built that, at restore time, shadows every pg_catalog function named in those statements
   (pg_catalog's own signatures, and every variant with one argument of another common type, which
   can match a literal better), the aggregates, the operators of every pair of common types, the
   types and the relations — in `public` and in schemas named after each of the cluster's roles —
   each raising an error naming itself, and sets the database's and its role's search path to find
   them first. That dump is drilled: it must restore, with the same figures as the sound one.
3. Every recorded statement is replayed in that shadowed database as the superuser — once with the
   product's own session settings, once with the database's hostile defaults (a statement that names
   anything unqualified fails there) — and none may fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg2
import pytest

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.adapters.scratch_cluster import ADMIN_USER, DATABASE, PORT, RESTORE_USER, ScratchCluster
from backup_pipeline.app.sample_databases import SampleDatabase, SampleServer
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.psql_guard import PsqlScriptGuard
from backup_pipeline.drill.restore import DrillEnvironment, StderrTail
from backup_pipeline.drill.run import prepare_environment
from backup_pipeline.storage.scratch import SentStatement, audited, session
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.drill.test_other_binaries import debian_bin_dir
from backup_pipeline_tests.support.drill_fixtures import DAY2, build_site, gz, staged
from backup_pipeline_tests.support.hostile_dumps import script

ROLE_SCHEMAS = ("public", "drill_admin", "drill_restore", "drill_watch")
TYPES = ("int2", "int4", "int8", "numeric", "float8", "text", "name", "oid", "regclass", "bool")
TYPES += ("timestamptz", "interval", "bpchar", "varchar", '"char"')
OPERATORS = ("=", "<>", "<", ">", "<=", ">=", "-", "+", "||", "~", "!~", "~~", "!~~")
KEYWORDS = {"select", "cast", "any", "exists", "in", "operator", "from", "where", "and", "not", "on", "as"}
KEYWORDS |= {"join", "values", "only", "count"}  # count is an aggregate: shadowed as one


def functions_named(statements: list[SentStatement]) -> set[str]:
    """Every name a statement calls (string literals aside)."""
    names = set()
    for sent in statements:
        text = re.sub(r"'(?:[^']|'')*'", "''", sent.sql)
        for match in re.finditer(r'(?:"([^"]+)"|\b([A-Za-z_][A-Za-z0-9_]*))\s*\(', text):
            name = (match.group(1) or match.group(2)).lower()
            if name not in KEYWORDS:
                names.add(name)
    return names


def relations_named(statements: list[SentStatement]) -> set[str]:
    return {m.lower() for s in statements for m in re.findall(r"\b(pg_[a-z_]+)\b", s.sql)}


def array(values: set[str] | tuple[str, ...] | list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values)) + "]::text[]"


def shadows(functions: set[str], relations: set[str]) -> str:
    """SQL, run at restore time by the restore role, that lays every trap."""
    path = ", ".join(ROLE_SCHEMAS) + ", pg_catalog"
    return f"""
CREATE FUNCTION public.bp_boom(what text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN RAISE EXCEPTION 'shadow % ran', what; END $f$;
CREATE FUNCTION public.bp_boom_sfunc(state int8) RETURNS int8 LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.bp_boom('an aggregate'); RETURN state; END $f$;
CREATE SCHEMA drill_admin;
CREATE SCHEMA drill_restore;
CREATE SCHEMA drill_watch;
DO $shadows$
DECLARE
    s text; f record; t text; u text; op text; k int; args text[]; made int := 0; n int := 0;
    body text := ' LANGUAGE plpgsql AS $b$BEGIN PERFORM public.bp_boom(%L); RETURN NULL; END$b$';
BEGIN
    FOREACH s IN ARRAY {array(ROLE_SCHEMAS)} LOOP
        FOR f IN
            SELECT p.proname, p.proargtypes::oid[] AS types,
                   pg_catalog.pg_get_function_result(p.oid) AS result
            FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f' AND NOT p.proretset
              AND p.proname = ANY ({array(functions)})
        LOOP
            args := ARRAY(SELECT pg_catalog.format_type(a, NULL) FROM unnest(f.types) a);
            FOR k IN 0 .. coalesce(array_length(args, 1), 0) LOOP
                FOREACH t IN ARRAY (CASE WHEN k = 0 THEN ARRAY['-'] ELSE {array(TYPES)} END) LOOP
                    BEGIN
                        EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s' || body, s, f.proname,
                            array_to_string(
                                CASE WHEN k = 0 THEN args ELSE args[:k-1] || t || args[k+1:] END, ', '),
                            f.result, s || '.' || f.proname);
                        made := made + 1;
                    EXCEPTION WHEN OTHERS THEN NULL;  -- pseudo-types, duplicates: not every variant exists
                    END;
                END LOOP;
            END LOOP;
        END LOOP;
        EXECUTE format('CREATE AGGREGATE %I.count(*) (SFUNC = public.bp_boom_sfunc, STYPE = int8)', s);
        FOREACH op IN ARRAY {array(OPERATORS)} LOOP
            FOREACH t IN ARRAY {array(TYPES)} LOOP
                FOREACH u IN ARRAY {array(TYPES)} LOOP
                    n := n + 1;
                    EXECUTE format('CREATE FUNCTION %I.bp_op_%s(%s, %s) RETURNS boolean' || body,
                                   s, n, t, u, s || '.' || op || '(' || t || ',' || u || ')');
                    EXECUTE format(
                        'CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %I.bp_op_%s)',
                        s, op, t, u, s, n);
                END LOOP;
            END LOOP;
        END LOOP;
        FOREACH t IN ARRAY {array(TYPES)} LOOP
            EXECUTE format('CREATE DOMAIN %I.%s AS pg_catalog.%s CHECK (public.bp_boom(%L))',
                           s, t, t, s || '.' || t);
        END LOOP;
        FOREACH t IN ARRAY {array(relations)} LOOP
            BEGIN
                EXECUTE format('CREATE VIEW %I.%I AS SELECT * FROM pg_catalog.%I WHERE public.bp_boom(%L)',
                               s, t, t, s || '.' || t);
            EXCEPTION WHEN undefined_table THEN NULL;  -- a function's name, not a relation's
            END;
        END LOOP;
    END LOOP;
    IF made < 100 THEN RAISE EXCEPTION 'only % function shadows were made', made; END IF;
    EXECUTE format('ALTER DATABASE %I SET search_path = {path}', pg_catalog.current_database());
    EXECUTE 'ALTER ROLE CURRENT_USER SET search_path = {path}';
END $shadows$;
"""


@pytest.fixture(scope="module")
def debian(drill_dir: Path) -> DrillEnvironment:
    return prepare_environment(
        Settings(drill_dir=drill_dir, home=drill_dir / "home", drill_pg_bin=debian_bin_dir())
    )


def test_no_statement_the_product_sends_runs_a_shadow(
    drill_workspace: Workspace, debian: DrillEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SampleServer(debian) as server:
        sound = server.dump(SampleDatabase("audited", rows=300))
    body = sound.decode()
    build_site(
        drill_workspace,
        {
            "sound": {DAY2: staged("sound", DAY2, gz(sound), ".sql.gz")},
            "overlong": {
                DAY2: staged("overlong", DAY2, gz(script("SELECT pg_catalog.pg_sleep(60);\n")), ".sql.gz")
            },
        },
    )
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(debian_bin_dir()))
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    with audited() as sent:
        (first,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "sound")
        (cancelled,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "overlong")
    assert first["outcome"] == "RESTORED" and first["amcheck"].startswith("3 of 3"), first
    assert cancelled["outcome"] == "RESTORE_FAILED" and "statement timeout" in cancelled["reason"], cancelled
    recorded = list(sent)
    assert any("pg_cancel_backend" in s.sql for s in recorded) and any(
        "bt_index_check" in s.sql for s in recorded
    )

    # 2. the same dump with every trap laid before its end: it restores, with the same figures
    footer = "\n--\n-- PostgreSQL database dump complete"
    trapped = body.replace(footer, shadows(functions_named(recorded), relations_named(recorded)) + footer)
    assert trapped != body
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "300")  # laying traps takes a while
    build_site(drill_workspace, {"trapped": {DAY2: staged("trapped", DAY2, gz(trapped.encode()), ".sql.gz")}})
    with audited() as sent_again:
        (again,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "trapped")
    assert again["outcome"] == "RESTORED", again
    assert (again["tables"], again["rows"], again["amcheck"]) == (
        first["tables"],
        first["rows"],
        first["amcheck"],
    )
    recorded += list(sent_again)

    # 3. every statement replayed in the shadowed database, as the superuser, both ways
    limits = Limits(debian.memory_bytes, 1 << 30)
    with ScratchCluster(debian.root, debian.tools, debian.user, limits, "audit", debian.sandbox) as cluster:
        cluster.create()
        cluster.start_from(debian.template, {"fsync": "off"})
        restore(cluster, trapped.encode())
        index = any_btree_index(cluster)
        for sent in unique(recorded):
            params = rebound(sent, index)
            with session(cluster, ADMIN_USER, DATABASE) as product_session:
                product_session.rows(sent.sql, params)
            hostile = psycopg2.connect(
                host=str(cluster.socket_dir),
                port=PORT,
                user=ADMIN_USER,
                dbname=DATABASE,
                password=cluster.password(ADMIN_USER),
            )
            try:
                hostile.autocommit = True
                with hostile.cursor() as cursor:
                    cursor.execute("SHOW search_path")
                    assert cursor.fetchone()[0].startswith("public"), "the hostile default is not in force"
                    cursor.execute(sent.sql, params)
            except psycopg2.Error as exc:
                raise AssertionError(f"{sent.sql!r} with the database's defaults: {exc}") from None
            finally:
                hostile.close()


def unique(statements: list[SentStatement]) -> list[SentStatement]:
    seen: dict[str, SentStatement] = {}
    for sent in statements:
        seen.setdefault(sent.sql, sent)
    return list(seen.values())


def rebound(sent: SentStatement, index_oid: int) -> tuple[object, ...]:
    """The statement's parameters in the replay's database: an index of its own to verify, no backend
    to cancel."""
    if "bt_index_check" in sent.sql:
        return (index_oid,)
    if "pg_cancel_backend" in sent.sql:
        return (0,)
    return sent.params


def restore(cluster: ScratchCluster, dump: bytes) -> None:
    """The dump restored as drills restore it: through the guard (ownership left out), by psql as the
    restore role, so the traps belong to the dump's owner as in a drill."""
    guard = PsqlScriptGuard(max_bytes=1 << 30)
    psql = cluster.client("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], stdin=subprocess.PIPE)
    errors = StderrTail(psql.stderr)
    assert psql.stdin is not None
    psql.stdin.write(bytes(guard.feed(dump)) + bytes(guard.finish()))
    psql.stdin.close()
    code = psql.wait(timeout=300)
    errors.join()
    assert code == 0, errors.text


def any_btree_index(cluster: ScratchCluster) -> int:
    with session(cluster, RESTORE_USER, DATABASE) as checks:
        oid = checks.value(
            "SELECT i.indexrelid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c "
            "ON c.oid OPERATOR(pg_catalog.=) i.indexrelid "
            "WHERE c.relnamespace OPERATOR(pg_catalog.=) CAST('public' AS pg_catalog.regnamespace) LIMIT 1"
        )
    assert oid is not None
    return int(oid)
