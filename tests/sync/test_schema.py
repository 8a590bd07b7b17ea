"""The migration runner against a real PostgreSQL server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.helpers.xtuple import (
    COMMERCIAL_TABLES,
    CONNECT_MAIL,
    CONNECT_TABLES,
    create_connect_tables,
    ensure_xtrole,
)
from xtmail.app.cli import main
from xtmail.sync.db.schema import migrate, migrations
from xtmail.sync.errors import DatabaseUnavailable, PermissionDenied
from xtmail.sync.mail import registry


def _catalog(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """Every column, index and constraint outside the system schemas."""
    columns = conn.execute(
        """SELECT table_schema, table_name, column_name, data_type, is_nullable,
                  column_default
             FROM information_schema.columns
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
            ORDER BY 1, 2, 3"""
    ).fetchall()
    indexes = conn.execute(
        """SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"""
    ).fetchall()
    return [*columns, *indexes]


def _dump(conn: psycopg.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def _xtmail_command() -> str:
    found = shutil.which("xtmail", path=str(Path(sys.executable).parent))
    assert found, "the xtmail console script is not installed in this environment"
    return found


def test_init_db_creates_every_table_and_records_versions(
    empty_db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init-db", "--dsn", empty_db_dsn]) == 0
    out = capsys.readouterr().out
    applied = [line for line in out.splitlines() if line.startswith("applied ")]
    assert [line.split()[1] for line in applied] == [f"{m.version:04d}" for m in migrations()]
    # Then what it created and granted, read from the catalog.
    report = out.splitlines()[len(applied):]
    assert "created 3 schemas: xtbatch, xtmail, xtmail_ext" in report
    tables = next(line for line in report if line.startswith("created ") and " tables: " in line)
    assert "xtbatch.eml," in tables and "xtmail.msg," in tables and "public.cntct," in tables
    assert any(line.startswith("created ") and "indexes" in line for line in report)
    assert any("xtmail_forget_contact on cntct" in line for line in report)
    assert any(line.startswith("granted to xtrole ") and "xtmail.msg" in line
               for line in report)
    # Nothing to do the second time, and nothing reported as created.
    assert main(["init-db", "--dsn", empty_db_dsn]) == 0
    assert capsys.readouterr().out == "database is up to date\n"
    with psycopg.connect(empty_db_dsn) as conn:
        for table in ("xtbatch.eml", "xtbatch.emladdr", "xtbatch.emlassc", "xtmail.msg",
                      "xtmail.location", "xtmail.folder_state", "public.cntcteml"):
            assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() == (
                True,), table
        versions = [r[0] for r in conn.execute(
            "SELECT version FROM xtmail.schema_version ORDER BY 1")]
        assert versions == [m.version for m in migrations()]


def test_init_db_twice_changes_nothing(empty_db_dsn: str) -> None:
    result = subprocess.run(
        [_xtmail_command(), "init-db", "--dsn", empty_db_dsn],
        capture_output=True, text=True, check=True,
    )
    assert "applied 0001" in result.stdout
    with psycopg.connect(empty_db_dsn) as conn:
        before = (_catalog(conn), _dump(conn, "xtmail.schema_version"))
    again = subprocess.run(
        [_xtmail_command(), "init-db", "--dsn", empty_db_dsn],
        capture_output=True, text=True, check=True,
    )
    assert again.stdout.strip() == "database is up to date"
    with psycopg.connect(empty_db_dsn) as conn:
        assert (_catalog(conn), _dump(conn, "xtmail.schema_version")) == before


def test_every_migration_is_idempotent_on_its_own(empty_db_dsn: str) -> None:
    """Re-running the SQL itself (not only skipping it) must be harmless."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate(conn)
        before = _catalog(conn)
        for migration in migrations():
            conn.execute(migration.sql)  # type: ignore[arg-type]
        assert _catalog(conn) == before


XTUPLE_LIKE = """
CREATE TABLE public.cntct (
    cntct_id serial PRIMARY KEY, cntct_number text NOT NULL UNIQUE,
    cntct_crmacct_id integer, cntct_first_name text, cntct_last_name text, cntct_name text,
    cntct_email text, cntct_active boolean NOT NULL DEFAULT true, cntct_owner_username text,
    cntct_created timestamptz, cntct_phone text, cntct_notes text
);
INSERT INTO public.cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_email,
                          cntct_phone, cntct_notes)
VALUES ('C0001', 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'keep me'),
       ('C0002', 'Alan', 'Turing', 'ALAN@example.org', NULL, NULL);
CREATE TABLE public.cntcteml (
    cntcteml_id serial PRIMARY KEY, cntcteml_cntct_id integer NOT NULL,
    cntcteml_primary boolean NOT NULL DEFAULT false, cntcteml_email text NOT NULL
);
INSERT INTO public.cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email)
VALUES (1, true, 'ada@example.com'), (2, true, 'ALAN@example.org'), (2, false, 'at@x.org');
CREATE TABLE public.cohead (
    cohead_id serial PRIMARY KEY, cohead_number text NOT NULL UNIQUE, cohead_cust_id integer,
    cohead_billto_cntct_id integer, cohead_shipto_cntct_id integer, cohead_notes text
);
INSERT INTO public.cohead (cohead_number, cohead_billto_cntct_id, cohead_notes)
VALUES ('50123', 1, 'rush');
"""
# Old Connect recorded some ties twice.
XTUPLE_LIKE += CONNECT_TABLES + CONNECT_MAIL + """
INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) VALUES (1, 'S', 1);
"""


def test_existing_xtuple_rows_are_untouched(empty_db_dsn: str) -> None:
    tables = ["public.cntct", "public.cntcteml", "public.cohead", "xtbatch.eml",
              "xtbatch.emladdr", "xtbatch.emlassc"]
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        ensure_xtrole(conn)
        conn.execute(XTUPLE_LIKE)  # type: ignore[arg-type]
        before = {t: _dump(conn, t) for t in tables}
        columns_before = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_name = 'cntct' ORDER BY 2").fetchall()
        migrate(conn)
        assert {t: _dump(conn, t) for t in tables} == before
        # Their table keeps its own columns; ours were not added to it.
        assert conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_name = 'cntct' ORDER BY 2").fetchall() == columns_before
        assert conn.execute("SELECT to_regclass('xtmail.msg')").fetchone() == ("xtmail.msg",)
        # Duplicate ties made by old Connect stay, so the unique index is left out there.
        assert conn.execute(
            "SELECT to_regclass('xtbatch.xtmail_emlassc_unique_idx')").fetchone() == (None,)


def test_every_registered_document_table_has_its_columns(conn: psycopg.Connection) -> None:
    assert len(registry.DOCUMENT_TYPES) == 14
    assert len({d.code for d in registry.DOCUMENT_TYPES}) == 14
    present = {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    # Only a commercial xTuple edition has these: never created by init-db.
    assert "tohead" not in present and "rahead" not in present
    assert {d.code for d in registry.available(present)} == {
        d.code for d in registry.DOCUMENT_TYPES} - {"TO", "RA"}
    conn.execute(COMMERCIAL_TABLES)  # type: ignore[arg-type]
    for doc in registry.DOCUMENT_TYPES:
        columns = [doc.key, *doc.contact_columns]
        if doc.number_column:
            columns.append(doc.number_column)
        conn.execute(f"SELECT {', '.join(columns)} FROM {doc.table} LIMIT 0")
    assert registry.by_code("s") is registry.SALES_ORDER
    assert registry.find("NOPE") is None


def test_role_without_privileges_gets_a_clear_error(
    empty_db_dsn: str, databases: object
) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS xt_clerk")
        admin.execute("CREATE ROLE xt_clerk LOGIN")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        admin.execute("REVOKE CREATE ON DATABASE " + admin.info.dbname + " FROM PUBLIC")
    clerk_dsn = empty_db_dsn.replace("user=postgres", "user=xt_clerk")
    try:
        with psycopg.connect(clerk_dsn, autocommit=True) as conn, pytest.raises(
            PermissionDenied, match="Not allowed"
        ) as info:
            migrate(conn)
        assert "database owner" in info.value.user_text()
    finally:
        with psycopg.connect(empty_db_dsn, autocommit=True) as admin:
            admin.execute("DROP OWNED BY xt_clerk")
            admin.execute("DROP ROLE xt_clerk")


def test_unreachable_database_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    from xtmail.app.localpg import free_port

    code = main(["init-db", "--dsn", f"host=127.0.0.1 port={free_port()} dbname=x "
                 "connect_timeout=2"])
    assert code == DatabaseUnavailable.exit_code
    assert "Cannot reach the database" in capsys.readouterr().err


def test_the_address_list_holds_every_stored_address(empty_db_dsn: str) -> None:
    """xtmail.address (0006), which the address-substring search reads: filled from the
    addresses stored before the migration, then by every writer of xtbatch.emladdr."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        create_connect_tables(conn)
        conn.execute(
            """INSERT INTO xtbatch.eml (eml_hash, eml_date, eml_subj, eml_body, eml_msg,
                                       eml_status)
               VALUES ('a', '2015-03-01', '', '', '', 'C'), ('b', '2015-03-01', '', '', '', 'C');
               INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr,
                                            emladdr_name)
               VALUES (1, 'FROM', 'Ada@Example.com', ''), (1, 'TO', 'sales@ourco.example', ''),
                      (2, 'FROM', 'ada@example.com', '')"""
        )
        migrate(conn)

        def listed() -> list[str]:
            return [r[0] for r in conn.execute("SELECT addr FROM xtmail.address ORDER BY 1")]

        assert listed() == ["ada@example.com", "sales@ourco.example"]
        # A writer that is not xtmail (xTuple Connect): plain INSERT and UPDATE statements.
        conn.execute("""INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr,
                                                     emladdr_name)
                        VALUES (2, 'TO', 'SALES@ourco.example', ''), (2, 'CC', 'Bob@B.example', ''),
                               (2, 'BCC', 'bob@b.example', '')""")
        conn.execute("UPDATE xtbatch.emladdr SET emladdr_addr = 'Carol@C.example' "
                     "WHERE emladdr_type = 'BCC'")
        assert listed() == ["ada@example.com", "bob@b.example", "carol@c.example",
                            "sales@ourco.example"]


def test_assc_log_holds_only_what_people_did(conn: psycopg.Connection) -> None:
    """Attach and Detach are the only actions recorded; the rule column never written is gone."""
    columns = {r[0] for r in conn.execute(
        """SELECT column_name FROM information_schema.columns
            WHERE table_schema = 'xtmail' AND table_name = 'assc_log'""")}
    assert "al_rule" not in columns
    conn.execute("INSERT INTO xtmail.assc_log (al_eml_id, al_type, al_assc_id, al_action) "
                 "VALUES (1, 'S', 1, 'detach')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO xtmail.assc_log (al_eml_id, al_type, al_assc_id, al_action) "
                     "VALUES (1, 'S', 1, 'auto')")
