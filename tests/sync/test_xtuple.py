"""xtmail in an xTuple database, with and without xTuple Connect's mail tables.

(a) Connect installed first: its tables are used exactly as they are. (b) No Connect: init-db
creates them in Connect's exact published shape. Both kinds import, re-import (adding
nothing) and show their mail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest
import qasync
from psycopg import sql
from PyQt6.QtCore import QEvent
from PyQt6.QtWidgets import QApplication

from tests.helpers.dovecot import DovecotServer, ImapAccount
from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from tests.helpers.qt import RunUntil
from tests.helpers.xtuple import (
    COMMERCIAL_TABLES,
    CONNECT_MAIL,
    add_contact_triggers,
    create_connect_tables,
    create_user,
)
from xtmail.sync.db.folder_state import FolderState, read_state, write_state
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.schema import migrate, migrations
from xtmail.sync.db.writer import EML_STATUS, Importer
from xtmail.sync.errors import PermissionDenied
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings
from xtmail.sync.mail import registry
from xtmail.sync.values import Incoming, Location
from xtmail.widgets.email_tab import EmailTab

CONNECT_TABLES = ("eml", "emladdr", "emlassc")


def _shape(conn: psycopg.Connection) -> dict[str, object]:
    """Connect's tables as a catalog sees them: columns, constraints, grants."""
    columns = conn.execute(
        """SELECT table_name, column_name, ordinal_position, data_type,
                  character_maximum_length, is_nullable, column_default
             FROM information_schema.columns
            WHERE table_schema = 'xtbatch' AND table_name = ANY(%s) ORDER BY 1, 3""",
        (list(CONNECT_TABLES),),
    ).fetchall()
    constraints = conn.execute(
        """SELECT c.conrelid::regclass::text, c.contype, pg_get_constraintdef(c.oid)
             FROM pg_constraint c
            WHERE c.conrelid = ANY(ARRAY['xtbatch.eml', 'xtbatch.emladdr',
                                         'xtbatch.emlassc']::regclass[])
            ORDER BY 1, 2, 3"""
    ).fetchall()
    grants = conn.execute(
        """SELECT c.relname, a.privilege_type
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                  aclexplode(c.relacl) a
            WHERE n.nspname = 'xtbatch' AND a.grantee = 'xtrole'::regrole
            ORDER BY 1, 2"""
    ).fetchall()
    return {"columns": columns, "constraints": constraints, "grants": grants}


def _rows(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: conn.execute(f"SELECT * FROM xtbatch.{t} ORDER BY 1, 2, 3").fetchall()
            for t in CONNECT_TABLES}


def test_init_db_creates_connects_tables_in_their_published_shape(
    databases: TestDatabases,
) -> None:
    """(b): what init-db creates is what Connect's own DDL creates, column for column."""
    ours = databases.create(migrated=False)
    theirs = databases.create(migrated=False)
    try:
        with psycopg.connect(ours, autocommit=True) as conn:
            migrate(conn)
            created = _shape(conn)
        with psycopg.connect(theirs, autocommit=True) as conn:
            create_connect_tables(conn)
            published = _shape(conn)
        assert created == published
        assert ("eml", "eml_date", 3, "date", None, "NO", None) in created["columns"]  # type: ignore[operator]
    finally:
        databases.drop(ours)
        databases.drop(theirs)


def test_init_db_on_connects_tables_twice_changes_nothing_of_theirs(
    empty_db_dsn: str,
) -> None:
    """(a): Connect's tables and their rows stay exactly as they were, through two runs."""
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        create_connect_tables(conn)
        conn.execute(CONNECT_MAIL)  # type: ignore[arg-type]
        shape, rows = _shape(conn), _rows(conn)
        migrate(conn)
        assert (_shape(conn), _rows(conn)) == (shape, rows)
        assert migrate(conn) == []
        for migration in migrations():  # the SQL itself again, not only skipped
            conn.execute(migration.sql)  # type: ignore[arg-type]
        assert (_shape(conn), _rows(conn)) == (shape, rows)


@pytest.fixture(params=["connect", "no-connect"])
def kind_dsn(request: pytest.FixtureRequest, databases: TestDatabases) -> Iterator[str]:
    """A migrated database with (a) or without (b) Connect's tables beforehand; (a) holds
    one message Connect stored."""
    connect = request.param == "connect"
    dsn = databases.create(connect=connect)
    if connect:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(CONNECT_MAIL)  # type: ignore[arg-type]
    yield dsn
    databases.drop(dsn)


def _messages() -> list[bytes]:
    return [
        make_message(sender="Ada Lovelace <ada@example.com>", subject=f"Order {i} [xtref:S-50123]",
                     body=f"Message {i}.", date=f"Tue, 03 Mar 2026 {10 + i}:30:00 +0100")
        for i in range(3)
    ] + [make_message(sender="noname@example.com", subject="No display name",
                      date="Tue, 03 Mar 2026 23:30:00 -0500")]


def test_import_and_reimport(kind_dsn: str) -> None:
    with psycopg.connect(kind_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO cohead (cohead_number) VALUES ('50123')")
        before = _rows(conn)
        raws = _messages()
        first = Importer(conn).import_batch([Incoming(raw) for raw in raws])
        assert sum(first.new) == 4
        stored = _rows(conn)
        again = Importer(conn).import_batch([Incoming(raw) for raw in raws])
        assert not any(again.new) and again.eml_ids == first.eml_ids
        assert _rows(conn) == stored
        # What was there before is untouched.
        for table, rows in before.items():
            assert set(rows) <= set(stored[table])
        ids = first.eml_ids
        dates = {r[0]: r[1:] for r in conn.execute(
            """SELECT e.eml_id, e.eml_date, m.msg_date, e.eml_status FROM xtbatch.eml e
                 JOIN xtmail.msg m ON m.msg_eml_id = e.eml_id
                WHERE e.eml_id = ANY(%s)""", (ids,))}
        # The day as the sender wrote it; the exact time in xtmail.msg.
        day, exact, _ = dates[ids[3]]
        assert day == date(2026, 3, 3)
        assert exact == datetime(2026, 3, 4, 4, 30, tzinfo=UTC)
        assert {d[2] for d in dates.values()} == {EML_STATUS}
        names = conn.execute(
            "SELECT emladdr_name FROM xtbatch.emladdr WHERE emladdr_eml_id = %s "
            "AND emladdr_type = 'FROM'", (ids[3],)).fetchall()
        assert names == [("",)]
        tied = conn.execute(
            "SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'S' "
            "AND emlassc_eml_id = ANY(%s)", (ids,)).fetchone()
        assert tied == (3,)


def test_email_tab_lists_mail_of_both_kinds(
    kind_dsn: str, qloop: qasync.QEventLoop, run_until: RunUntil,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGTZ", "UTC")
    with psycopg.connect(kind_dsn, autocommit=True) as conn:
        order = conn.execute(
            "INSERT INTO cohead (cohead_number) VALUES ('50123') RETURNING cohead_id"
        ).fetchone()
        assert order is not None
        ids = Importer(conn).import_batch([Incoming(raw) for raw in _messages()[:3]]).eml_ids
        connect_mail = conn.execute(
            "SELECT eml_id FROM xtbatch.eml WHERE eml_id <> ALL(%s)", (ids,)).fetchall()
        if connect_mail:  # Connect's own message of (a), tied to the same order
            conn.execute("UPDATE xtbatch.emlassc SET emlassc_assc_id = %s "
                         "WHERE emlassc_type = 'S'", (order[0],))
    expected = [*reversed(ids), *(r[0] for r in connect_mail)]
    store = qloop.run_until_complete(MailStore.connect(kind_dsn))
    tab = EmailTab()
    try:
        tab.setStore(store)
        tab.show()
        tab.setDocument("S", order[0])
        run_until(lambda: not tab.isBusy() and tab.model().rowCount() == len(expected),
                  message="the tab did not list the mail")
        assert [tab.model().emlId(r) for r in range(len(expected))] == expected
        assert tab.errorText() == ""
        detail = qloop.run_until_complete(store.message(expected[-1]))
        assert detail.date is not None
    finally:
        tab.close()
        qloop.run_until_complete(asyncio.sleep(0))
        tab.deleteLater()
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        qloop.run_until_complete(store.close())


# -- an ordinary ERP user -----------------------------------------------------------------------

CLERK = "xt_clerk_in_xtrole"


def test_an_ordinary_user_imports_attaches_detaches_and_keeps_sync_state(
    kind_dsn: str, databases: TestDatabases, qloop: qasync.QEventLoop,
) -> None:
    """A login role in xtrole, made like xTuple's createuser(), with nothing granted to it
    by name: init-db's grants to xtrole are all it has."""
    with databases.admin() as admin:
        create_user(admin, CLERK)
    with psycopg.connect(kind_dsn, autocommit=True) as owner:
        order = owner.execute(
            "INSERT INTO cohead (cohead_number) VALUES ('50123') RETURNING cohead_id"
        ).fetchone()
        assert order is not None
        tied_before = owner.execute(
            "SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'S' "
            "AND emlassc_assc_id = %s", (order[0],)).fetchone()
        assert tied_before is not None
    clerk_dsn = psycopg.conninfo.make_conninfo(kind_dsn, user=CLERK)
    raws = _messages()
    with psycopg.connect(clerk_dsn, autocommit=True) as conn:
        assert migrate(conn) == []  # nothing to do, and allowed to find that out
        state = FolderState(uidvalidity=7, last_uid=4, highestmodseq=None)
        result = Importer(conn).import_batch(
            [Incoming(raw, Location("clerk@ourco", "INBOX", 7, uid))
             for uid, raw in enumerate(raws, 1)],
            on_state=lambda c: write_state(c, "clerk@ourco", "INBOX", state),
        )
        assert sum(result.new) == 4 and result.contacts_created == 3
        assert not result.warnings
        assert read_state(conn, "clerk@ourco", "INBOX") == state
        who = conn.execute("SELECT DISTINCT msg_imported_by FROM xtmail.msg "
                           "WHERE msg_eml_id = ANY(%s)", (result.eml_ids,)).fetchall()
        assert who == [(CLERK,)]
    async def attach_and_detach() -> tuple[int, int, int]:
        store = await MailStore.connect(clerk_dsn)
        try:
            eml = result.eml_ids[3]
            attached = await store.attach([eml], "S", order[0])
            listed = len(await store.messages_for("S", order[0]))
            detached = await store.detach([eml], "S", order[0])
            return attached, listed, detached
        finally:
            await store.close()

    assert qloop.run_until_complete(attach_and_detach()) == (1, 4 + tied_before[0], 1)
    with psycopg.connect(kind_dsn, autocommit=True) as owner:
        log = owner.execute("SELECT al_action, al_username FROM xtmail.assc_log "
                            "ORDER BY al_id").fetchall()
        assert log == [("attach", CLERK), ("detach", CLERK)]


def test_a_user_outside_xtrole_is_told_which_grant_is_missing(
    kind_dsn: str, databases: TestDatabases,
) -> None:
    with databases.admin() as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'xt_outsider'")
        if not exists.fetchone():
            admin.execute("CREATE ROLE xt_outsider LOGIN")
    dsn = psycopg.conninfo.make_conninfo(kind_dsn, user="xt_outsider")
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(PermissionDenied) as info:
        Importer(conn).import_batch([Incoming(raw) for raw in _messages()[:1]])
    assert "lacks USAGE on schema" in str(info.value)
    assert "xtrole" in info.value.hint


# -- contacts as xTuple makes them -------------------------------------------------------------


def test_a_new_contact_has_one_primary_address_with_xtuples_trigger(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        add_contact_triggers(conn)
        result = Importer(conn).import_batch([Incoming(raw) for raw in _messages()])
        assert result.contacts_created == 3
        rows = conn.execute(
            """SELECT c.cntct_email, c.cntct_name, count(e.*), count(*) FILTER (WHERE
                      e.cntcteml_primary)
                 FROM cntct c JOIN cntcteml e ON e.cntcteml_cntct_id = c.cntct_id
                GROUP BY 1, 2 ORDER BY 1""").fetchall()
        assert rows == [("ada@example.com", "Ada Lovelace", 1, 1),
                        ("noname@example.com", None, 1, 1),
                        ("sales@ourco.example", "Sales", 1, 1)]


def test_a_new_contact_has_its_primary_address_without_xtuples_trigger(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        Importer(conn).import_batch([Incoming(raw) for raw in _messages()])
        rows = conn.execute(
            """SELECT c.cntct_email, count(*) FILTER (WHERE e.cntcteml_primary), count(*)
                 FROM cntct c JOIN cntcteml e ON e.cntcteml_cntct_id = c.cntct_id
                GROUP BY 1 ORDER BY 1""").fetchall()
        assert rows == [("ada@example.com", 1, 1), ("noname@example.com", 1, 1),
                        ("sales@ourco.example", 1, 1)]


# -- documents whose table is absent ----------------------------------------------------------


def test_document_types_without_a_table_are_unavailable(
    db_dsn: str, qloop: qasync.QEventLoop,
) -> None:
    async def ask() -> tuple[set[str], list[object], str | None]:
        store = await MailStore.connect(db_dsn)
        try:
            codes = {d.code for d in await store.available_documents()}
            return codes, list(await store.list_documents("TO")), await store.document_number(
                "RA", 1)
        finally:
            await store.close()

    codes, transfer_orders, number = qloop.run_until_complete(ask())
    assert codes == {d.code for d in registry.DOCUMENT_TYPES} - {"TO", "RA"}
    assert transfer_orders == [] and number is None
    # A reference to one is kept on record, not tied.
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        result = Importer(conn).import_batch([Incoming(make_message(
            subject="Transfer [xtref:TO-9001]"))])
        assert all(code != "TO" for code, _ in result.ties[result.eml_ids[0]])
        assert conn.execute("SELECT uref_code, uref_number FROM xtmail.unresolved_ref"
                            ).fetchall() == [("TO", "9001")]


def test_every_document_type_lists_its_mail(db_dsn: str, qloop: qasync.QEventLoop) -> None:
    """All fourteen, with the commercial edition's tables added as that edition would."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(COMMERCIAL_TABLES)  # type: ignore[arg-type]
        ids: dict[str, int] = {}
        for n, doc in enumerate(registry.DOCUMENT_TYPES, 1):
            insert = (
                sql.SQL("INSERT INTO {t} ({n}) VALUES (%s) RETURNING {k}").format(
                    t=sql.Identifier(doc.table), n=sql.Identifier(doc.number_column),
                    k=sql.Identifier(doc.key))
                if doc.number_column else
                sql.SQL("INSERT INTO {t} DEFAULT VALUES RETURNING {k}").format(
                    t=sql.Identifier(doc.table), k=sql.Identifier(doc.key)))
            params = (n if doc.number_is_integer else f"DOC{n}",) if doc.number_column else ()
            row = conn.execute(insert, params).fetchone()
            assert row is not None
            ids[doc.code] = int(row[0])
        mail = {doc.code: Importer(conn).import_batch(
                    [Incoming(make_message(sender="x@nowhere.example", subject=doc.label))],
                    extra_ties=[(doc.code, ids[doc.code])]).eml_ids[0]
                for doc in registry.DOCUMENT_TYPES}

    async def lists() -> dict[str, list[int]]:
        store = await MailStore.connect(db_dsn)
        try:
            assert len(await store.available_documents()) == 14
            return {code: [r.eml_id for r in await store.messages_for(code, doc_id)]
                    for code, doc_id in ids.items()}
        finally:
            await store.close()

    listed = qloop.run_until_complete(lists())
    for code, eml_id in mail.items():
        assert eml_id in listed[code], code


# -- xTuple 5: contacts belong to CRM accounts through crmacctcntctass --------------------------

XTUPLE5_CONTACTS = """
CREATE TABLE public.crmacct (
    crmacct_id serial PRIMARY KEY, crmacct_number text NOT NULL UNIQUE, crmacct_name text,
    crmacct_cntct_id_1 integer, crmacct_cntct_id_2 integer
);
CREATE TABLE public.cntct (
    cntct_id serial PRIMARY KEY, cntct_number text NOT NULL UNIQUE, cntct_first_name text,
    cntct_last_name text, cntct_name text, cntct_email text,
    cntct_active boolean NOT NULL DEFAULT true, cntct_owner_username text,
    cntct_created timestamptz DEFAULT now()
);
CREATE TABLE public.crmacctcntctass (
    crmacctcntctass_id serial PRIMARY KEY, crmacctcntctass_crmacct_id integer NOT NULL,
    crmacctcntctass_cntct_id integer NOT NULL, crmacctcntctass_crmrole_id integer
);
INSERT INTO crmacct (crmacct_number, crmacct_name) VALUES ('TTOYS', 'Tremendous Toys');
INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_email)
VALUES ('C1', 'Ada', 'Lovelace', 'ada@example.com');
INSERT INTO crmacctcntctass (crmacctcntctass_crmacct_id, crmacctcntctass_cntct_id)
VALUES (1, 1);
"""


@pytest.mark.parametrize("version", ["4", "5"])
def test_crm_account_shows_its_contacts_mail_in_xtuple_4_and_5(
    empty_db_dsn: str, qloop: qasync.QEventLoop, version: str,
) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        if version == "5":
            conn.execute(XTUPLE5_CONTACTS)  # type: ignore[arg-type]
        migrate(conn)
        if version == "4":
            conn.execute("INSERT INTO crmacct (crmacct_number) VALUES ('TTOYS')")
            conn.execute("INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, "
                         "cntct_email, cntct_crmacct_id) "
                         "VALUES ('C1', 'Ada', 'Lovelace', 'ada@example.com', 1)")
        (eml,) = Importer(conn).import_batch([Incoming(raw) for raw in _messages()[:1]]).eml_ids

    async def read() -> tuple[list[tuple[int, bool]], list[int]]:
        store = await MailStore.connect(empty_db_dsn)
        try:
            rows = await store.messages_for("CRMA", 1)
            contacts = await store.document_contacts("CRMA", 1)
            return [(r.eml_id, r.via_contact) for r in rows], [c.cntct_id for c in contacts]
        finally:
            await store.close()

    assert qloop.run_until_complete(read()) == ([(eml, True)], [1])


_TIED_TO_THE_ORDER = """SELECT count(*) FROM xtbatch.emlassc JOIN cohead ON cohead_id =
                         emlassc_assc_id WHERE emlassc_type = 'S' AND cohead_number = '50123'"""


def test_an_ordinary_user_syncs_an_imap_folder_into_both_kinds(
    kind_dsn: str, databases: TestDatabases, dovecot: DovecotServer, imap_user: ImapAccount,
) -> None:
    """The sync as the desktop runs it, as a user in xtrole, on (a) and (b): every message
    once, tied to its sales order; a second pass adds nothing."""
    with databases.admin() as admin:
        create_user(admin, CLERK)
    with psycopg.connect(kind_dsn, autocommit=True) as owner:
        owner.execute("INSERT INTO cohead (cohead_number) VALUES ('50123')")
        before = owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
        tied_before = owner.execute(_TIED_TO_THE_ORDER).fetchone()
    assert before is not None and tied_before is not None
    dovecot.seed_maildir(imap_user.user, "INBOX", _messages())
    clerk_dsn = psycopg.conninfo.make_conninfo(kind_dsn, user=CLERK)
    settings = SyncSettings(account=AccountSettings(
        host=dovecot.host, user=imap_user.user, port=dovecot.imaps_port,
        ca_file=str(dovecot.ca_file), timeout=10.0))
    credentials = StaticCredentials(Credential(AuthMethod.PASSWORD, imap_user.password))
    for expected in (4, 0):
        sync = AccountSync(settings, credentials,
                           lambda: psycopg.connect(clerk_dsn, autocommit=True), retry_limit=0)
        try:
            result = sync.run_once()
        finally:
            sync.close()
        assert result.error is None, result.error
        assert result.imported == expected
    with psycopg.connect(kind_dsn, autocommit=True) as owner:
        after = owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
        tied = owner.execute(_TIED_TO_THE_ORDER).fetchone()
        who = owner.execute("SELECT DISTINCT msg_imported_by FROM xtmail.msg "
                            "JOIN xtmail.location ON loc_eml_id = msg_eml_id").fetchall()
    assert after is not None and after[0] == before[0] + 4
    assert tied is not None and tied[0] == tied_before[0] + 3
    assert who == [(CLERK,)]
