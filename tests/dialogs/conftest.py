"""Fixtures for dialog tests: a qasync loop, a mail store on a real database, test mail.

Names start with ``dlg_`` so that they cannot clash with the widget tests' fixtures.

* ``qloop``: a qasync event loop on pytest-qt's QApplication, set as the current loop.
  Drive asynchronous work with ``dlg_run_until``; do not use ``qtbot.wait*`` while database
  work is under way (those spin a Qt loop in which qasync runs tasks without a running
  asyncio loop).
* ``dlg_run_until(predicate, timeout=10.0)``: runs the loop until ``predicate()`` holds.
* ``dlg_store``: a ``MailStore`` on the test's fresh database.
* ``dlg_mail``: four imported messages, a sales order and Ada's contact id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import qasync

from tests.sync.mail import make_message
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.writer import Importer
from xtmail.sync.values import ImportPolicy, Incoming


@pytest.fixture
def dlg_store(db_dsn: str, qloop: qasync.QEventLoop) -> Iterator[MailStore]:
    store = qloop.run_until_complete(MailStore.connect(db_dsn))
    try:
        yield store
    finally:
        qloop.run_until_complete(store.close())


@dataclass
class DialogMail:
    """What ``dlg_mail`` put in the database."""

    sales_order: int  # cohead_id of sales order 50123
    ada: int  # cntct_id of Ada Lovelace (created by the importer)
    newsletter: int  # eml_ids, oldest first
    invoice: int
    quote: int
    reply: int


@pytest.fixture
def dlg_mail(conn: psycopg.Connection) -> DialogMail:
    importer = Importer(conn, ImportPolicy.build(own_addresses=["sales@ourco.example"]))

    def add(day: int, **fields: str) -> int:
        raw = make_message(date=f"Mon, {day:02d} Mar 2026 10:00:00 +0000", **fields)
        return importer.import_batch([Incoming(raw)]).eml_ids[0]

    newsletter = add(1, sender="News <no-reply@shop.example>", subject="Weekly deals",
                     body="Discounts on zebra crossings.")
    invoice = add(2, subject="Invoice for pallets", body="Please confirm the delivery schedule.")
    quote = add(3, sender="Bob Builder <bob@builder.example>", subject="Quote request",
                body="We need 12 widgets by Friday.")
    reply = add(4, sender="Carol Danvers <carol.danvers@marvel.example>",
                to="Ada Lovelace <ada@example.com>", subject="Re: Invoice",
                body="Approved; see attached.")
    row = conn.execute(
        "INSERT INTO cohead (cohead_number) VALUES ('50123') RETURNING cohead_id").fetchone()
    ada = conn.execute(
        "SELECT cntcteml_cntct_id FROM cntcteml WHERE lower(cntcteml_email) = 'ada@example.com'"
    ).fetchone()
    assert row and ada
    conn.execute("UPDATE cohead SET cohead_billto_cntct_id = %s WHERE cohead_id = %s",
                 (ada[0], row[0]))
    return DialogMail(int(row[0]), int(ada[0]), newsletter, invoice, quote, reply)
