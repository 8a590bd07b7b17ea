"""Mail follows xTuple's own merges and conversions (docs/xtuple.md).

Each test builds an xTuple-like database the way a real one is built: xTuple's tables and
functions first (with Connect's mail tables for kind (a)), then init-db. The merges and the
conversion run as an ordinary user in xtrole, with Connect's batch manager off (xTuple leaves
the mail where it was; xtmail follows) and on (xTuple moves the ties itself; nothing may
fail and nothing shows twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import qasync

from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from tests.helpers.xtuple import (
    MERGE_FUNCTIONS,
    MERGE_TABLES,
    add_contact_triggers,
    create_connect_tables,
    create_user,
    ensure_xtrole,
    set_metric,
)
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.schema import migrate
from xtmail.sync.db.writer import Importer
from xtmail.sync.values import Incoming

CLERK = "merge_clerk"


@dataclass
class Xtuple:
    owner: str  # DSN of the database owner
    clerk: str  # DSN of an ordinary user in xtrole


@pytest.fixture(params=[("connect", False), ("connect", True),
                        ("no-connect", False), ("no-connect", True)],
                ids=["a-manager-off", "a-manager-on", "b-manager-off", "b-manager-on"])
def xtuple(request: pytest.FixtureRequest, databases: TestDatabases) -> Iterator[Xtuple]:
    kind, manager_on = request.param
    dsn = databases.create(migrated=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_xtrole(conn)
        if kind == "connect":
            create_connect_tables(conn)
        conn.execute(MERGE_TABLES)  # type: ignore[arg-type]
        migrate(conn)
        conn.execute(MERGE_FUNCTIONS)  # type: ignore[arg-type]
        add_contact_triggers(conn)
        set_metric(conn, "EnableBatchManager", manager_on)
        if manager_on:
            conn.execute("INSERT INTO pkghead VALUES ('xtbatch')")
    with databases.admin() as admin:
        create_user(admin, CLERK)
    yield Xtuple(dsn, psycopg.conninfo.make_conninfo(dsn, user=CLERK))
    databases.drop(dsn)


def _contact(conn: psycopg.Connection, number: str, email: str) -> int:
    row = conn.execute(
        "INSERT INTO cntct (cntct_number, cntct_first_name, cntct_email) VALUES (%s, %s, %s) "
        "RETURNING cntct_id", (number, number.title(), email)).fetchone()
    assert row
    return int(row[0])


def _one(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row
    return int(row[0])


def _ties(conn: psycopg.Connection, kind: str, assc_id: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT emlassc_eml_id FROM xtbatch.emlassc WHERE emlassc_type = %s "
        "AND emlassc_assc_id = %s ORDER BY 1", (kind, assc_id))]


def _import(conn: psycopg.Connection, *raws: bytes) -> list[int]:
    return Importer(conn).import_batch([Incoming(raw) for raw in raws]).eml_ids


def _listed(dsn: str, code: str, doc_id: int, loop: qasync.QEventLoop) -> list[int]:
    async def run() -> list[int]:
        store = await MailStore.connect(dsn)
        try:
            return [row.eml_id for row in await store.messages_for(code, doc_id)]
        finally:
            await store.close()

    return loop.run_until_complete(run())


@pytest.mark.parametrize("purge", [True, False], ids=["purge", "keep"])
def test_mail_follows_a_contact_merge(
    xtuple: Xtuple, purge: bool, qloop: qasync.QEventLoop
) -> None:
    with psycopg.connect(xtuple.clerk, autocommit=True) as conn:
        source = _contact(conn, "SMITH-OLD", "j.smith@old.example")
        target = _contact(conn, "SMITH", "john@smith.example")
        only_source, both = _import(
            conn,
            make_message(sender="John <j.smith@old.example>", subject="From the old address",
                         date="Mon, 02 Mar 2026 10:00:00 +0000"),
            make_message(sender="John <j.smith@old.example>", to="john@smith.example",
                         subject="To both", date="Tue, 03 Mar 2026 10:00:00 +0000"),
        )
        assert _ties(conn, "T", source) == sorted([only_source, both])
        assert _ties(conn, "T", target) == [both]

        conn.execute("SELECT cntctmerge(%s, %s, %s)", (source, target, purge))

        # The survivor shows all of it, each message once, whether xTuple moved the ties
        # (batch manager on: a plain UPDATE, which no xtmail index may refuse) or xtmail
        # followed the moved address (off).
        assert _listed(xtuple.clerk, "T", target, qloop) == [both, only_source]
        assert set(_ties(conn, "T", target)) == {only_source, both}
        if purge:
            assert _ties(conn, "T", source) == []
        # The survivor's addresses now include the merged contact's.
        assert _one(conn, "SELECT count(*) FROM cntcteml WHERE cntcteml_cntct_id = %s",
                    target) == 2
        # Mail that arrives later from the merged address ties to the survivor.
        later = _import(conn, make_message(sender="j.smith@old.example", subject="Later"))[0]
        assert target in [r[0] for r in conn.execute(
            "SELECT emlassc_assc_id FROM xtbatch.emlassc WHERE emlassc_eml_id = %s "
            "AND emlassc_type = 'T'", (later,))]


def test_deleting_a_contact_leaves_no_tie_pointing_at_nothing(xtuple: Xtuple) -> None:
    with psycopg.connect(xtuple.clerk, autocommit=True) as conn:
        gone = _contact(conn, "GONE", "gone@example.com")
        other = _contact(conn, "OTHER", "other@example.com")
        eml = _import(conn, make_message(sender="gone@example.com", to="other@example.com"))[0]
        assert sorted(_ties(conn, "T", gone) + _ties(conn, "T", other)) == [eml, eml]
        conn.execute("DELETE FROM cntct WHERE cntct_id = %s", (gone,))
        assert _ties(conn, "T", gone) == []
        assert _ties(conn, "T", other) == [eml]
        # The message keeps its addresses.
        assert _one(conn, "SELECT count(*) FROM xtbatch.emladdr WHERE emladdr_eml_id = %s",
                    eml) == 2


@pytest.mark.parametrize("purge", [True, False], ids=["purge", "keep"])
def test_mail_follows_a_crm_account_merge(
    xtuple: Xtuple, purge: bool, qloop: qasync.QEventLoop
) -> None:
    with psycopg.connect(xtuple.clerk, autocommit=True) as conn:
        source, target = (_one(conn, "INSERT INTO crmacct (crmacct_number) VALUES (%s) "
                                     "RETURNING crmacct_id", n) for n in ("OLDCO", "NEWCO"))
        first, second = _import(
            conn, make_message(subject="One", date="Mon, 02 Mar 2026 10:00:00 +0000"),
            make_message(subject="Two", date="Tue, 03 Mar 2026 10:00:00 +0000"))
        store_attach = [(first, source), (second, source), (second, target)]
        for eml, account in store_attach:
            conn.execute("INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, "
                         "emlassc_assc_id) VALUES (%s, 'CRMA', %s)", (eml, account))
        conn.execute("INSERT INTO crmacctsel VALUES (%s, %s)", (source, target))
        conn.execute("SELECT merge2crmaccts(%s, %s, %s)", (source, target, purge))
        assert _listed(xtuple.clerk, "CRMA", target, qloop) == [second, first]
        assert _ties(conn, "CRMA", source) == []


def test_a_cancelled_crm_account_selection_moves_nothing(xtuple: Xtuple) -> None:
    with psycopg.connect(xtuple.clerk, autocommit=True) as conn:
        source, target = (_one(conn, "INSERT INTO crmacct (crmacct_number) VALUES (%s) "
                                     "RETURNING crmacct_id", n) for n in ("A1", "A2"))
        eml = _import(conn, make_message(subject="Stays"))[0]
        conn.execute("INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, "
                     "emlassc_assc_id) VALUES (%s, 'CRMA', %s)", (eml, source))
        conn.execute("INSERT INTO crmacctsel VALUES (%s, %s)", (source, target))
        conn.execute("DELETE FROM crmacctsel")
        assert _ties(conn, "CRMA", source) == [eml]
        assert _ties(conn, "CRMA", target) == []


@pytest.mark.parametrize("keep_quote", [True, False], ids=["quote-kept", "quote-deleted"])
def test_mail_follows_a_quote_to_its_sales_order(
    xtuple: Xtuple, keep_quote: bool, qloop: qasync.QEventLoop
) -> None:
    with psycopg.connect(xtuple.owner, autocommit=True) as owner:
        set_metric(owner, "ShowQuotesAfterSO", keep_quote)
    with psycopg.connect(xtuple.clerk, autocommit=True) as conn:
        quote = _one(conn, "INSERT INTO quhead (quhead_number) VALUES ('40077') "
                           "RETURNING quhead_id")
        before = _import(conn, make_message(message_id="<q1@example.com>",
                                            subject="Your quote [xtref:Q-40077]"))[0]
        assert _ties(conn, "Q", quote) == [before]

        order = _one(conn, "SELECT convertquote(%s)", quote)

        assert _listed(xtuple.clerk, "S", order, qloop) == [before]
        # A later mail carrying the quote's reference lands on the order too, also when
        # the quote is gone; and so does a reply to the first mail.
        later, reply = _import(
            conn,
            make_message(subject="About [xtref:Q-40077] again",
                         date="Wed, 04 Mar 2026 10:00:00 +0000"),
            make_message(in_reply_to="<q1@example.com>", subject="Re: Your quote",
                         date="Thu, 05 Mar 2026 10:00:00 +0000"),
        )
        assert _listed(xtuple.clerk, "S", order, qloop) == [reply, later, before]
        if keep_quote:
            assert later in _ties(conn, "Q", quote)
        else:
            assert _one(conn, "SELECT count(*) FROM xtmail.unresolved_ref "
                              "WHERE uref_eml_id = %s", later) == 0


def test_init_db_twice_on_xtuple_with_merge_tables_changes_nothing(xtuple: Xtuple) -> None:
    with psycopg.connect(xtuple.owner, autocommit=True) as conn:
        triggers = conn.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
            "WHERE tgname LIKE 'xtmail%' ORDER BY 1, 2").fetchall()
        assert ("crmacctsel", "xtmail_follow_crmacct_merge") in triggers
        assert migrate(conn) == []
        assert conn.execute(
            "SELECT to_regclass('xtbatch.xtmail_emlassc_unique_idx')").fetchone() == (None,)
