"""Hostile plain dumps for restore-drill tests: pg_dump's frame around an attacker's SQL, and the probe
that shows whether the attacker's code ever ran with superuser rights.

The probe is a table, `public.hijacked`, and a function, `public.bp_hijack(via)`, that every shadow
calls: when it runs as a superuser it inserts a row naming the shadow and tries a shell command
(`COPY … TO PROGRAM`). The drill counts the table's rows like any other, so a drill's recorded table
figures say whether a superuser ever ran the dump's code, even when a sandbox kept the shell from
writing anywhere.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

KEY = "k3yOfTheDump"
FOOTER = "\n--\n-- PostgreSQL database dump complete\n--\n\n"


def head(before: str = "", *, restrict: bool = True) -> str:
    """The beginning of a plain dump as current pg_dump writes it (older ones: no `\\restrict`)."""
    return (
        "--\n-- PostgreSQL database dump\n--\n\n"
        + before
        + (f"\\restrict {KEY}\n\n" if restrict else "")
        + "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
        + "SELECT pg_catalog.set_config('search_path', '', false);\n\n"
        + "CREATE TABLE public.t (a integer);\n\n"
    )


def script(body: str, *, before: str = "", after: str = "") -> bytes:
    """A plain dump as current pg_dump writes it, around `body`."""
    tail = f"{FOOTER}\\unrestrict {KEY}\n\n"
    return (head(before) + body + tail + after).encode()


def probe(sentinels: Path) -> str:
    """The table and function that record a superuser running the dump's code."""
    return f"""
CREATE TABLE public.hijacked (who text, via text);
CREATE FUNCTION public.bp_hijack(via text) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
    IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on' THEN
        INSERT INTO public.hijacked VALUES (pg_catalog.current_setting('session_authorization'), via);
        BEGIN
            EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L',
                                      'id > {sentinels}/' OPERATOR(pg_catalog.||) via);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
END $f$;
"""


def shadow(schema: str, name: str, args: str, returns: str, real: str, via: str) -> str:
    """A function `schema.name(args)` that calls the probe, then returns what `real` computes."""
    return (
        f"CREATE FUNCTION {schema}.{name}({args}) RETURNS {returns} LANGUAGE plpgsql "
        f"SET search_path = pg_catalog AS $f$ BEGIN PERFORM public.bp_hijack('{via}'); "
        f"RETURN {real}; END $f$;\n"
    )


def operator(schema: str, symbol: str, left: str, right: str, returns: str, via: str) -> str:
    """An operator `schema.symbol(left, right)` whose function calls the probe first."""
    function = f"bp_op_{abs(hash((schema, symbol, left, right))) % 10**8}"
    real = f"a OPERATOR(pg_catalog.{symbol}) b"
    return shadow(schema, function, f"a {left}, b {right}", returns, real, via) + (
        f"CREATE OPERATOR {schema}.{symbol} (LEFTARG = {left}, RIGHTARG = {right}, "
        f"FUNCTION = {schema}.{function});\n"
    )


def database_search_path(path: str) -> str:
    """What a dump does to make every later session of its database (and role) search `path` first:
    pg_dump never writes it, and a DO block passes any statement filter."""
    return (
        "DO $d$ BEGIN "
        f"EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = {path}', "
        "pg_catalog.current_database()); "
        f"EXECUTE 'ALTER ROLE CURRENT_USER SET search_path = {path}'; "
        "END $d$;\n"
    )


def table_rows(database_url: str, drill_id: int) -> dict[str, int | None]:
    """Every table the drill counted, with its rows."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            figures = conn.execute(
                sa.text("SELECT table_figures FROM restore_drills WHERE id = :id"), {"id": drill_id}
            ).scalar_one()
    finally:
        engine.dispose()
    return {t["name"]: t["rows"] for t in figures}
