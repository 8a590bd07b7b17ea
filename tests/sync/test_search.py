"""Contact and message searches of the Attach dialog, against a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest

from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from xtmail.sync.db import search
from xtmail.sync.db.writer import Importer
from xtmail.sync.values import ContactRow, ImportPolicy, Incoming, MessageRow

T = TypeVar("T")


def run(dsn: str, call: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    """Run one search on a fresh autocommit AsyncConnection, as the dialog does."""

    async def main() -> T:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            return await call(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@dataclass
class Mail:
    dsn: str
    invoice: int  # from Ada: subject "Invoice for pallets"
    quote: int  # from Bob: body "widgets"
    reply: int  # from Carol to Ada, newest
    newsletter: int  # from no-reply (no contact created), oldest
    ada: int  # Ada's contact id
    ids: dict[str, int]

    def messages(self, text: str, contact_id: int | None = None,
                 limit: int = 200) -> list[MessageRow]:
        return run(self.dsn, lambda c: search.search_messages(c, text, contact_id=contact_id,
                                                              limit=limit))

    def ids_of(self, text: str, contact_id: int | None = None, limit: int = 200) -> list[int]:
        return [m.eml_id for m in self.messages(text, contact_id, limit)]

    def contacts(self, text: str) -> list[ContactRow]:
        return run(self.dsn, lambda c: search.search_contacts(c, text))


def _date(day: int) -> str:
    return f"Mon, {day:02d} Mar 2026 10:00:00 +0000"


def _import(conn: psycopg.Connection, dsn: str) -> Mail:
    importer = Importer(conn, ImportPolicy.build(own_addresses=["sales@ourco.example"]))
    raws = {
        "newsletter": make_message(sender="News <no-reply@shop.example>", subject="Weekly deals",
                                   body="Discounts on zebra crossings.", date=_date(1)),
        "invoice": make_message(subject="Invoice for pallets",
                                body="Please confirm the delivery schedule.", date=_date(2)),
        "quote": make_message(sender="Bob Builder <bob@builder.example>",
                              subject="Quote request", body="We need 12 widgets by Friday.",
                              date=_date(3)),
        "reply": make_message(sender="Carol Danvers <carol.danvers@marvel.example>",
                              to="Ada Lovelace <ada@example.com>", cc="sales@ourco.example",
                              subject="Re: Invoice", body="Approved; see attached.",
                              date=_date(4)),
    }
    ids = {}
    for name, raw in raws.items():
        ids[name] = importer.import_batch([Incoming(raw)]).eml_ids[0]
    row = conn.execute(
        "SELECT cntcteml_cntct_id FROM cntcteml WHERE lower(cntcteml_email) = 'ada@example.com'"
    ).fetchone()
    assert row, "the importer should have created a contact for Ada"
    return Mail(dsn, ids["invoice"], ids["quote"], ids["reply"], ids["newsletter"],
                int(row[0]), ids)


@pytest.fixture(scope="module")
def shared_mail(databases: TestDatabases) -> Iterator[Mail]:
    """One database for the tests that only read (a fresh one per test costs seconds here)."""
    dsn = databases.create()
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield _import(conn, dsn)
    databases.drop(dsn)


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Each test that changes its database runs on both kinds of xTuple database, as the
    owner and as an ordinary user (conftest.XTUPLE_KINDS)."""
    return xtuple_dsn


@pytest.fixture
def mail(conn: psycopg.Connection, db_dsn: str) -> Mail:
    """A database of its own, for the tests that change it."""
    return _import(conn, db_dsn)


# -- the strategies: every way of running a search must give the same answer ----------------


@pytest.fixture(params=["planned", "candidates", "walk", "tiny-windows", "walk-per-row"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Forces each code path of search_message_ids; on a small database the planner would
    otherwise always take the same one."""
    if request.param == "candidates":
        monkeypatch.setattr(search, "CANDIDATE_ESTIMATE", 10**9)
        monkeypatch.setattr(search, "_reliable", lambda group: True)
    elif request.param in ("walk", "tiny-windows", "walk-per-row"):
        monkeypatch.setattr(search, "CANDIDATE_ESTIMATE", -1)
        monkeypatch.setattr(search, "DENSE", 0.0)
    if request.param == "walk-per-row":
        # Every message's words read (never the index and the dates together), and the
        # exact words driving a prefix search.
        monkeypatch.setattr(search, "_RECHECK_COST", 0.0)
    if request.param == "tiny-windows":
        # One or two messages per window: exercises the cursor across pages.
        monkeypatch.setattr(search, "DENSE", 2.0)
        monkeypatch.setattr(search, "PROBE_WINDOW", 1)
        monkeypatch.setattr(search, "_MIN_WINDOW", 1)
        monkeypatch.setattr(search, "_MAX_WINDOW", 2)
        monkeypatch.setattr(search, "_CANDIDATE_COST", 10**9)
    yield request.param


def test_finds_by_address_substring(shared_mail: Mail, strategy: str) -> None:
    assert shared_mail.ids_of("ada@exa") == [shared_mail.reply, shared_mail.invoice]
    # Inside a word: only the address rule (trigram index) can find this one.
    assert shared_mail.ids_of("da@exam") == [shared_mail.reply, shared_mail.invoice]
    assert shared_mail.ids_of("ANVERS@MARVEL") == [shared_mail.reply]


def test_a_complete_address_finds_that_address(shared_mail: Mail, strategy: str) -> None:
    assert shared_mail.ids_of("Bob@Builder.example") == [shared_mail.quote]
    assert shared_mail.ids_of("ob@builder.example") == []  # a complete address is not a substring


def test_finds_by_subject_and_body_words(shared_mail: Mail, strategy: str) -> None:
    assert shared_mail.ids_of("pallets") == [shared_mail.invoice]
    assert shared_mail.ids_of("widgets") == [shared_mail.quote]
    # Case-insensitive, newest first; every word must match.
    assert shared_mail.ids_of("Invoice") == [shared_mail.reply, shared_mail.invoice]
    assert shared_mail.ids_of("invoice pallets") == [shared_mail.invoice]
    assert shared_mail.ids_of("invoice widgets") == []


def test_finds_by_prefix_of_the_last_word(shared_mail: Mail, strategy: str) -> None:
    assert shared_mail.ids_of("widg") == [shared_mail.quote]
    assert shared_mail.ids_of("invoice pall") == [shared_mail.invoice]
    # A word of a display name.
    assert shared_mail.ids_of("lovel") == [shared_mail.reply, shared_mail.invoice]
    # One or two letters are a whole word, not a prefix: "12" is in Bob's body, "1" is not.
    assert shared_mail.ids_of("12") == [shared_mail.quote]
    assert shared_mail.ids_of("1") == []


def test_empty_text_lists_the_newest_mail(shared_mail: Mail, strategy: str) -> None:
    m = shared_mail
    assert m.ids_of("") == [m.reply, m.quote, m.invoice, m.newsletter]
    assert shared_mail.ids_of("   ", limit=2) == [shared_mail.reply, shared_mail.quote]


def test_contact_filter(conn: psycopg.Connection, mail: Mail, strategy: str) -> None:
    assert mail.ids_of("", contact_id=mail.ada) == [mail.reply, mail.invoice]
    assert mail.ids_of("pallets", contact_id=mail.ada) == [mail.invoice]
    assert mail.ids_of("widgets", contact_id=mail.ada) == []
    # A message tied to the contact by hand counts although it lacks her address.
    conn.execute(
        "INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
        "VALUES (%s, 'T', %s)", (mail.quote, mail.ada))
    assert mail.ids_of("", contact_id=mail.ada) == [mail.reply, mail.quote, mail.invoice]
    assert mail.ids_of("widg", contact_id=mail.ada) == [mail.quote]
    # A second address of hers counts too.
    conn.execute("INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_email) "
                 "VALUES (%s, 'NO-REPLY@shop.example')", (mail.ada,))
    assert mail.ids_of("", contact_id=mail.ada) == [
        mail.reply, mail.quote, mail.invoice, mail.newsletter]


def test_missing_dates_sort_last_and_page_correctly(
    conn: psycopg.Connection, mail: Mail, strategy: str
) -> None:
    undated = []
    for i in range(3):
        row = conn.execute(
            "INSERT INTO xtbatch.eml (eml_hash, eml_date, eml_subj, eml_body, eml_msg, "
            "eml_status) VALUES (%s, '2000-01-01', 'undated pallets', '', '', 'C') "
            "RETURNING eml_id", (f"test:undated:{i}".encode(),)).fetchone()
        assert row
        conn.execute("INSERT INTO xtmail.msg (msg_eml_id, msg_size, msg_search) "
                     "VALUES (%s, 1, '''undated'' ''pallets''')", (row[0],))
        undated.append(int(row[0]))
    expected = [mail.invoice, *sorted(undated, reverse=True)]
    assert mail.ids_of("pallets") == expected
    assert mail.ids_of("")[-4:] == [mail.newsletter, *sorted(undated, reverse=True)]


def test_rows_carry_what_the_list_shows(shared_mail: Mail) -> None:
    (row,) = shared_mail.messages("approved")
    assert row.eml_id == shared_mail.reply
    assert row.subject == "Re: Invoice"
    assert row.sender == "Carol Danvers <carol.danvers@marvel.example>"
    assert row.to == "Ada Lovelace <ada@example.com>"
    assert row.cc == "sales@ourco.example"
    assert row.date is not None and row.date.day == 4


@pytest.mark.parametrize("text", [
    "'); DROP TABLE xtbatch.eml; --",
    ":*&|!", "'", "\\", "a:* & !b", "%", "_@_", "%@%", "ada'@exa", "x' OR '1'='1",
    "!!!", "@", "(((", "ada@exa%", "\x00",
])
def test_hostile_text_is_only_text(shared_mail: Mail, text: str) -> None:
    m = shared_mail
    found = m.ids_of(text)
    assert m.ids_of(text, contact_id=m.ada) == [i for i in found if i in (m.reply, m.invoice)]
    with psycopg.connect(shared_mail.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (4,)
    # LIKE wildcards in the text are literal characters.
    assert set(found) <= {shared_mail.invoice, shared_mail.reply}


def test_like_wildcards_are_literal(shared_mail: Mail) -> None:
    # As wildcards, both would match "ada@example.com".
    assert shared_mail.ids_of("d%@exam") == []
    assert shared_mail.ids_of("d_@exam") == []
    assert shared_mail.ids_of("a@exam") == [shared_mail.reply, shared_mail.invoice]


def test_message_query_rules() -> None:
    assert search.message_query("Invoice Pall") == "'invoice' & 'pall':*"
    assert search.message_query("ab") == "'ab'"
    assert search.message_query("!!") is None
    assert search.address_fragment("Ada@Exa") == "ada@exa"
    assert search.address_fragment("ada") is None  # words cover it
    assert search.address_fragment("a b@c") is None
    assert search.address_fragment("@b") is None


def test_contacts_by_name_number_and_any_address(conn: psycopg.Connection, db_dsn: str) -> None:
    def add(number: str, first: str, last: str, *emails: str) -> int:
        row = conn.execute(
            "INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_email) "
            "VALUES (%s, %s, %s, %s) RETURNING cntct_id", (number, first, last, emails[0]),
        ).fetchone()
        assert row
        for i, email in enumerate(emails):
            conn.execute("INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, "
                         "cntcteml_email) VALUES (%s, %s, %s)", (row[0], i == 0, email))
        return int(row[0])

    ada = add("C-1001", "Ada", "Lovelace", "ada@example.com", "countess@analytical.example")
    bob = add("C-1002", "Bob", "Adams", "bob@builder.example")
    carol = add("X-77", "Carol", "Danvers", "carol@marvel.example")

    def found(text: str) -> list[int]:
        return [c.cntct_id for c in run(db_dsn, lambda c: search.search_contacts(c, text))]

    assert found("lovelace") == [ada]
    assert found("ADA") == [ada, bob]  # name starts with it first, then inside a name
    assert found("countess@ana") == [ada]  # a second address
    assert found("1002") == [bob]
    assert found("x-77") == [carol]
    assert found("ada love") == [ada]  # every part must match
    assert found("marvel danv") == [carol]  # parts may match different fields
    assert found("nobody") == []
    assert found("  ") == []
    assert found("%") == []
    (row,) = run(db_dsn, lambda c: search.search_contacts(c, "countess"))
    assert row == ContactRow(ada, "C-1001", "Ada Lovelace", "ada@example.com")
    assert len(run(db_dsn, lambda c: search.search_contacts(c, "a", limit=2))) == 2
