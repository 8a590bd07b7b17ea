"""Contacts, documents and imported mail in a test database, and a desktop that records.

``MailData`` writes with the real importer on a plain (sync) connection; ``SampleMail`` is a
small mailbox several widget and dialog tests share: four messages on four days, a sales order
and the contact the importer made for Ada.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from PyQt6.QtCore import QUrl

from tests.helpers.mail import make_message
from xtmail.sync.db.writer import Importer
from xtmail.sync.values import ImportPolicy, Incoming


@dataclass
class RecordingDesktop:
    """Records what would have been handed to the desktop; ``accept`` is what it answers."""

    accept: bool = True
    urls: list[QUrl] = field(default_factory=list)
    #: For local files: the file's bytes and mode when it was handed over.
    files: list[tuple[Path, bytes, int]] = field(default_factory=list)

    def openUrl(self, url: QUrl) -> bool:
        self.urls.append(QUrl(url))
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            self.files.append((path, path.read_bytes(), path.stat().st_mode & 0o777))
        return self.accept

    @property
    def strings(self) -> list[str]:
        """The URLs, fully percent-encoded as the desktop receives them."""
        return [u.toString(QUrl.ComponentFormattingOption.FullyEncoded) for u in self.urls]


@dataclass
class SampleMail:
    """What ``MailData.sample()`` put in the database."""

    sales_order: int  # cohead_id of sales order 50123
    ada: int  # cntct_id of Ada Lovelace (created by the importer)
    newsletter: int  # eml_ids, oldest first
    invoice: int
    quote: int
    reply: int


class MailData:
    """Contacts, documents and imported mail in the test database (sync connection)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._numbers = iter(range(1, 1_000_000))

    def contact(self, email: str, first: str = "Jane", last: str = "Doe") -> int:
        row = self.conn.execute(
            "INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_email) "
            "VALUES (%s, %s, %s, %s) RETURNING cntct_id",
            (f"TEST{next(self._numbers)}", first, last, email),
        ).fetchone()
        assert row is not None
        self.conn.execute(
            "INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email) "
            "VALUES (%s, true, %s)",
            (row[0], email),
        )
        return int(row[0])

    def sales_order(self, number: str, billto: int | None = None,
                    shipto: int | None = None) -> int:
        row = self.conn.execute(
            "INSERT INTO cohead (cohead_number, cohead_billto_cntct_id, cohead_shipto_cntct_id)"
            " VALUES (%s, %s, %s) RETURNING cohead_id",
            (number, billto, shipto),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def customer(self, number: str, contact: int | None = None) -> int:
        row = self.conn.execute(
            "INSERT INTO custinfo (cust_number, cust_cntct_id) VALUES (%s, %s) "
            "RETURNING cust_id",
            (number, contact),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def import_raw(self, raws: Sequence[bytes], ties: Sequence[tuple[str, int]] = (),
                   policy: ImportPolicy | None = None) -> list[int]:
        """Import ``raws`` with the real importer, tied also to ``ties``; their eml_ids."""
        result = Importer(self.conn, policy).import_batch(
            [Incoming(raw) for raw in raws], source="test", extra_ties=list(ties)
        )
        return list(result.eml_ids)

    def message(self, ties: Sequence[tuple[str, int]] = (), **fields: str) -> int:
        """Import one message built by ``make_message(**fields)``; its eml_id."""
        return self.import_raw([make_message(**fields)], ties)[0]

    def raw(self, eml_id: int) -> bytes:
        row = self.conn.execute(
            "SELECT eml_msg FROM xtbatch.eml WHERE eml_id = %s", (eml_id,)
        ).fetchone()
        assert row is not None
        return bytes(row[0])

    def sample(self) -> SampleMail:
        """Four messages from 1 to 4 March 2026 and sales order 50123 billed to Ada."""
        policy = ImportPolicy.build(own_addresses=["sales@ourco.example"])

        def add(day: int, **fields: str) -> int:
            raw = make_message(date=f"Mon, {day:02d} Mar 2026 10:00:00 +0000", **fields)
            return self.import_raw([raw], policy=policy)[0]

        newsletter = add(1, sender="News <no-reply@shop.example>", subject="Weekly deals",
                         body="Discounts on zebra crossings.")
        invoice = add(2, subject="Invoice for pallets",
                      body="Please confirm the delivery schedule.")
        quote = add(3, sender="Bob Builder <bob@builder.example>", subject="Quote request",
                    body="We need 12 widgets by Friday.")
        reply = add(4, sender="Carol Danvers <carol.danvers@marvel.example>",
                    to="Ada Lovelace <ada@example.com>", subject="Re: Invoice",
                    body="Approved; see attached.")
        ada = self.conn.execute(
            "SELECT cntcteml_cntct_id FROM cntcteml "
            "WHERE lower(cntcteml_email) = 'ada@example.com'"
        ).fetchone()
        assert ada is not None
        order = self.sales_order("50123", billto=int(ada[0]))
        return SampleMail(order, int(ada[0]), newsletter, invoice, quote, reply)


def message_with_parts(
    parts: Sequence[tuple[str | None, str, bytes]], *, subject: str = "With attachments",
    sender: str = "Ada Lovelace <ada@example.com>", body: str = "See the attached files.",
    date: str = "Mon, 02 Mar 2026 10:00:00 +0000", inline: bool = False,
) -> bytes:
    """A multipart/mixed message: a text part, then each ``(filename, type, bytes)`` as an
    attachment (base64; ``inline`` marks them Content-Disposition: inline)."""
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import make_msgid

    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "Sales <sales@ourco.example>"
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content(body)
    for filename, ctype, data in parts:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename,
                           disposition="inline" if inline else "attachment")
    return msg.as_bytes()
