"""The project's corpus of hard messages (tests/data): each one read as expected, and all of
them stored with their raw bytes. Then the email package's own test messages, which Debian
ships in libpython3.X-testsuite: every one parsed and stored.

Each file in tests/data was written for one difficulty, named in its file name. The
expectations below are what a user should see. Where xtmail reads a message wrongly today,
the right reading is still what is written here and the case is listed in KNOWN_DEFECTS: it
fails as expected until the parser is fixed, and then it must leave the list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from xtmail.sync.db.writer import Importer
from xtmail.sync.mail import mime
from xtmail.sync.mail.mime import Address, parse_message
from xtmail.sync.mail.prepare import prepare
from xtmail.sync.values import Incoming, Location

DATA = Path(__file__).resolve().parents[1] / "data"
# Stands in for the IMAP INTERNALDATE: the date a message without a usable Date gets.
FALLBACK = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """How one message reads. Addresses are written "Name <addr>", or "addr" without a name."""

    subject: str
    from_: tuple[str, ...]
    to: tuple[str, ...]
    date: str | None  # as written in the header, in ISO 8601; None: the fallback date is used
    text: str  # a distinctive piece of the body text; "" means the body is empty
    cc: tuple[str, ...] = ()
    attachments: tuple[tuple[str | None, str, int], ...] = ()  # (filename, type, size)
    defects: tuple[str, ...] | None = ()  # None: not pinned (a fix chooses what it notes)
    absent: tuple[str, ...] = ()  # must not be in the body text


EXPECTED: dict[str, Case] = {
    "addresses-malformed": Case(
        subject="Two senders and a group",
        from_=("tim@example.com", "concierge@example.com"),
        to=(),  # "Undisclosed recipients:;" is an empty group
        cc=("Support@Acme <support@example.org>", "Sales, Europe <sales@example.org>"),
        date="2024-03-02T12:00:00+00:00",
        text="Address headers written against the rules.",
        defects=("From: malformed address list; addresses recovered from the text",),
    ),
    "alternative-plain-and-html": Case(
        subject="Order 1043 confirmed",
        from_=("Ada Pryce <ada@example.com>",),
        to=("Orders Desk <orders@example.org>",),
        date="2024-05-14T09:15:00+02:00",
        text="Your order 1043 ships on Friday.",
        absent=("HTML copy", "<b>"),
    ),
    "attachment-no-filename": Case(
        subject="Export without a file name",
        from_=("Export Job <export@example.com>",),
        to=("peer@example.org",),
        date="2024-03-01T12:00:00+00:00",
        text="The export is attached but its part has no name.",
        attachments=((None, "application/octet-stream", 10),),
    ),
    "base64-attachment-stray-character": Case(
        subject="Attachment with a stray character in its base64",
        from_=("Broken Encoder <enc@example.com>",),
        to=("peer@example.org",),
        date="2024-02-24T12:30:00+00:00",
        text="Seventeen bytes are attached.",
        attachments=(("data.bin", "application/octet-stream", 17),),
        defects=("attachment data.bin: 1 stray character in its base64 ignored",),
    ),
    "base64-damaged": Case(
        subject="Damaged base64",
        from_=("Broken Encoder <enc@example.com>",),
        to=("peer@example.org",),
        date="2024-02-24T12:00:00+00:00",
        text="The base64 body survives damage: ölçü, bis bald.",
        defects=("text/plain part: 2 stray characters in its base64 ignored",
                 "text/plain part: damaged base64 read leniently"),
    ),
    "bom-before-headers": Case(
        subject="Saved by an editor that writes a BOM",
        from_=("Notepad Saver <notepad@example.com>",),
        to=("peer@example.org",),
        date="2024-02-29T12:00:00+00:00",
        text="The file starts with a UTF-8 byte order mark.",
        defects=None,
        absent=("Subject:", "\ufeff"),
    ),
    "boundary-closing-missing": Case(
        subject="Scan of the signed contract",
        from_=("Lin Okafor <lin@example.com>",),
        to=("archive@example.org",),
        date="2024-06-03T11:20:00+01:00",
        text="The signed contract is attached; the mailer stopped before the closing boundary.",
        attachments=(("contract-signed.pdf", "application/pdf", 52),),
        defects=("multipart/mixed: closing boundary missing",),
        absent=("JVBERi0",),
    ),
    "boundary-folded-in-quotes": Case(
        subject="Minutes of the planning meeting",
        from_=("Wide Mailer <wide@example.com>",),
        to=("team@example.org",),
        date="2024-04-11T15:45:00-04:00",
        text="Minutes: we agreed to ship the planner in May.",
        attachments=(("minutes.txt", "text/plain", 24),),
        defects=None,
        absent=("--=_Part_folded", "Content-Type"),
    ),
    "boundary-never-found": Case(
        subject="Nightly backup report",
        from_=("Relay Robot <robot@example.net>",),
        to=("ops@example.org",),
        date="2024-07-06T02:00:05+00:00",
        # No part can be told apart: the whole body is the text.
        text="--actual-boundary\nContent-Type: text/plain\n\nBackup of /srv finished",
        defects=("multipart/mixed: boundary never found; body shown as text",),
    ),
    "calendar-invite": Case(
        subject="Invitation: Quarterly review @ Tue 10 Sep 2024 09:00 UTC",
        from_=("The Boss <boss@example.com>",),
        to=("staff@example.org",),
        date="2024-09-02T08:00:00+00:00",
        text="You are invited to the quarterly review on 10 September.",
        attachments=(("invite.ics", "application/ics", 297),),
        absent=("BEGIN:VCALENDAR",),
    ),
    "charset-latin1-but-utf8": Case(
        subject="Reserva para el viernes",
        from_=("Diego Muñoz <diego@example.com>",),
        to=("reservas@example.org",),
        date="2024-09-05T12:00:00+02:00",
        text="Señor Núñez, la reserva en el café está confirmada para mañana.",
        defects=None,
    ),
    "charset-unknown": Case(
        subject="Status of your naive request",
        from_=("Old Gateway <gw@example.net>",),
        to=("user@example.org",),
        date="2024-08-12T07:00:00+00:00",
        text="Your naïve request has been queued; no action needed.",
        defects=("text/plain part: unknown charset 'x-mac-klingon'; read as UTF-8/Windows-1252",),
    ),
    "charset-usascii-but-utf8": Case(
        subject="Holiday greetings",
        from_=("Marta Kowalczyk <marta@example.com>",),
        to=("friends@example.org",),
        date="2024-12-22T19:00:00+01:00",
        text="Grüße aus Köln und Kraków \u2013 bis bald!",
    ),
    "charset-utf8-but-latin1": Case(
        subject="Prüfbericht 2024-17",
        from_=("Labor Nord <labor@example.de>",),
        to=("qs@example.org",),
        date="2024-04-17T14:10:00+02:00",
        text="Der Prüfbericht für die Größe 3 liegt vor; Maße geprüft.",
        defects=("text/plain part: not valid utf-8; bad bytes read as Windows-1252",),
    ),
    "date-in-far-future": Case(
        subject="Greetings from the future",
        from_=("Time Traveller <tt@example.com>",),
        to=("present@example.org",),
        date=None,
        text="A clock set far ahead must not put this message on top forever.",
        defects=("Date: 'Fri, 14 Mar 3609 12:00:00 +0000' is in the future; not used",),
    ),
    "digest": Case(
        subject="Hikers Digest, Vol 12, Issue 3",
        from_=("hikers-request@lists.example.org",),
        to=("hikers@lists.example.org",),
        date="2024-06-01T06:00:00+00:00",
        # Each message of the digest follows the text, with its headers, as in a client.
        text="  2. Boots for sale\n\n---------- Forwarded message ----------\n"
        "From: Sam Hill <sam@example.com>\nDate: Fri, 31 May 2024 18:00:00 +0000\n"
        "Subject: Trail closure near the ridge\n\n"
        "The ridge trail is closed until the bridge is repaired.\n\n"
        "---------- Forwarded message ----------\nFrom: Kim Vale <kim@example.net>\n"
        "Date: Fri, 31 May 2024 19:00:00 +0000\nSubject: Boots for sale\n\n"
        "Size 42, worn twice.",
        # Digest parts without a Content-Type are messages (RFC 2046 5.1.5).
        attachments=((None, "message/rfc822", 202), (None, "message/rfc822", 153)),
    ),
    "dsn-report": Case(
        subject="Undelivered Mail Returned to Sender",
        from_=("Mail Delivery System <MAILER-DAEMON@mx.example.net>",),
        to=("sender@example.com",),
        date="2024-03-13T04:12:00+00:00",
        text="Your message could not be delivered to nobody@example.org: mailbox unknown.",
        attachments=((None, "message/delivery-status", 112), (None, "text/rfc822-headers", 76)),
        absent=("Status: 5.1.1",),
    ),
    "dsn-status-only": Case(
        subject="Delivery failure",
        from_=("postmaster@relay.example.net",),
        to=("sender@example.com",),
        date="2024-03-13T05:00:00+00:00",
        # The report is the only explanation, so it is the text.
        # The returned original follows the report.
        text="550 5.1.1 <gone@example.org>: recipient address undeliverable\n\n"
        "---------- Forwarded message ----------\nFrom: sender@example.com\n"
        "Subject: Invoice 77\nTo: gone@example.org\n\nPlease find invoice 77.",
        attachments=((None, "message/delivery-status", 246), (None, "message/rfc822", 94)),
    ),
    "duplicate-headers": Case(
        subject="The first subject",
        from_=("First Sender <first@example.com>", "Second Sender <second@example.com>"),
        to=("one@example.org", "two@example.org"),
        date="2024-07-15T10:00:00+00:00",
        text="Every header appears twice.",
    ),
    "encoded-words-broken": Case(
        subject="Grüße and =?utf-8?Q?unterminated word",
        from_=("Björn <bjorn@example.com>",),
        to=("Café Team <cafe@example.org>",),
        date="2024-11-15T16:00:00+01:00",
        text="Encoded words with Latin-1 bytes, an unknown charset and no terminator.",
        defects=(
            "Subject: not valid utf-8; bad bytes read as Windows-1252",
            "To: unknown charset 'x-unknown'; read as UTF-8/Windows-1252",
        ),
    ),
    "encoded-words": Case(
        subject="Grüße aus München und 東京",
        from_=("José García <jose@example.com>",),
        to=("Zürich Office <zh@example.org>", "山田 <yamada@example.jp>"),
        date="2024-10-01T09:00:00+02:00",
        text="Encoded words in From, To and Subject.",
    ),
    "forwarded-rfc822": Case(
        subject="Fwd: Lease renewal terms",
        from_=("Priya Raman <priya@example.com>",),
        to=("legal@example.org",),
        date="2024-12-10T13:30:00+05:30",
        # The forwarded message follows the outer text, as a mail client shows it.
        text="Please review the forwarded offer below before Thursday.\n\n"
        "---------- Forwarded message ----------\n"
        "From: Landlord Ltd <office@landlord.example.net>\n"
        "Date: Mon, 09 Dec 2024 09:00:00 +0000\nSubject: Lease renewal terms\n"
        "To: Priya Raman <priya@example.com>\n\n"
        "The inner offer text: rent rises by two percent.",
        # It stays one attachment; its own parts stay inside it.
        attachments=((None, "message/rfc822", 567),),
    ),
    "header-8bit-latin1": Case(
        subject="Bestellbestätigung für Müller & Söhne",
        from_=("Jürgen Weiß <juergen@example.de>",),
        to=("einkauf@example.org",),
        date="2024-02-20T10:05:00+01:00",
        text="Sehr geehrte Damen und Herren, anbei die Bestätigung über 12 Stück.",
    ),
    "header-8bit-utf8": Case(
        subject="Angebot für Straße über Brücke \u2013 Ñandú",
        from_=("Zoë Ångström <zoe@example.com>",),
        to=("Łukasz Żółw <lukasz@example.org>",),
        date="2024-03-08T08:30:00+01:00",
        text="Die Übersicht für März hängt an.",
        attachments=(("Übersicht-März.xls", "application/vnd.ms-excel", 48),),
    ),
    "header-line-without-colon": Case(
        subject="Agenda for the ward meeting",
        from_=("Ward Clerk <clerk@example.com>",),
        # The line without a colon is the rest of a To header wrapped without indentation.
        to=("alpha@example.org", "beta@example.org", "gamma@example.org"),
        date="2024-08-21T18:00:00+00:00",
        text="The agenda is below.",
        defects=None,
        absent=("Subject:",),
    ),
    "headers-only": Case(
        subject="Nothing but headers",
        from_=("Header Only <hdr@example.com>",),
        to=("peer@example.org",),
        date="2024-02-26T12:00:00+00:00",
        text="",
    ),
    "html-only": Case(
        subject="This week's menu",
        from_=("Harbour Bistro <news@bistro.example.net>",),
        to=("guest@example.com",),
        date="2024-10-02T17:00:00+00:00",
        text="Menu of the week\n\nFish & Chips   12 €\nCafé gourmand  7 €\n\nBook a table",
        absent=("<td>", "color:", "alert(", "&amp;"),
    ),
    "inline-images-cid": Case(
        subject="Our new logo",
        from_=("Newsletter <letters@example.com>",),
        to=("reader@example.org",),
        date="2024-02-28T12:00:00+00:00",
        text="Here is our new logo, and a spacer image.",
        attachments=(("logo.png", "image/png", 69), (None, "image/png", 69)),
        absent=("cid:",),
    ),
    "line-endings-bare-lf": Case(
        subject="Saved with bare LF",
        from_=("Unix User <user@example.com>",),
        to=("peer@example.org",),
        date="2024-02-19T12:00:00+00:00",
        text="Every line of this message ends in a bare LF.",
        attachments=(("notes.txt", "text/plain", 5),),
    ),
    "line-endings-mixed": Case(
        subject="Mixed line endings",
        from_=("Mixed Endings <mixed@example.com>",),
        to=("peer@example.org",),
        date="2024-02-20T12:00:00+00:00",
        text="First line ends in CRLF.\nSecond line ends in LF.\n"
        "Third line ends in a lone CR.\nFourth line has no ending.",
        absent=("\r",),
    ),
    "no-date": Case(
        subject="Cron <root@host> run-parts /etc/cron.daily",
        from_=("Cron Daemon <root@host.example.net>",),
        to=("admin@example.org",),
        date=None,
        text="run-parts: /etc/cron.daily/logrotate exited with return code 1",
        defects=("Date: header missing",),
    ),
    "no-from": Case(
        subject="Sent by a script without a sender",
        from_=(),
        to=("inbox@example.org",),
        date="2024-01-09T22:00:00+00:00",
        text="Disk usage on /var is at ninety percent.",
    ),
    "no-message-id": Case(
        subject="Scan to mail",
        from_=("Printer Room <printer@example.com>",),
        to=("office@example.org",),
        date="2024-01-25T08:45:00+01:00",
        text="The scanner sends mail without a Message-ID.",
    ),
    "nul-in-body": Case(
        subject="Report with a NUL byte",
        from_=("Binary Leak <leak@example.com>",),
        to=("peer@example.org",),
        date="2024-02-22T12:00:00+00:00",
        text="Before the NULafter the NUL.",  # PostgreSQL text cannot hold NUL
        absent=("\x00",),
    ),
    "quoted-printable-damaged": Case(
        subject="Damaged quoted-printable",
        from_=("QP Sender <qp@example.com>",),
        to=("peer@example.org",),
        date="2024-02-25T12:00:00+00:00",
        text="Café and café (lower-case hex), a soft break, a bad escape =ZZ here, and 100% "
        "sure.\nA trailing equals sign at the end",
    ),
    "rfc2231-filenames": Case(
        subject="Unterlagen",
        from_=("Buchhaltung <buchhaltung@example.de>",),
        to=("kunde@example.org",),
        date="2024-11-04T10:00:00+01:00",
        text="Anbei drei Dateien.",
        attachments=(
            ("Angebot für Müller.pdf", "application/pdf", 9),
            ("Présentation finale.ppt", "application/vnd.ms-powerpoint", 8),
            ("Zusammenfassung über 2024.doc", "application/msword", 8),  # RFC 2047 in quotes
        ),
    ),
    "smime-opaque": Case(
        subject="Encrypted statement",
        from_=("Notary Office <notary@example.com>",),
        to=("client@example.org",),
        date="2024-07-18T10:05:00+02:00",
        text="",  # encrypted: there is no text to show
        attachments=(("smime.p7m", "application/pkcs7-mime", 420),),
    ),
    "smime-signed": Case(
        subject="Signed statement",
        from_=("Notary Office <notary@example.com>",),
        to=("client@example.org",),
        date="2024-07-18T10:00:00+02:00",
        text="I confirm the statement of 18 July.",
        attachments=(("smime.p7s", "application/pkcs7-signature", 300),),
        absent=("S/MIME signed message",),  # the preamble is not text
    ),
    "tnef-winmail": Case(
        subject="Quote attached (rich text)",
        from_=("Exchange User <exuser@example.com>",),
        to=("partner@example.org",),
        date="2024-02-27T12:00:00+00:00",
        text="Please see the attached quote.",
        attachments=(("winmail.dat", "application/ms-tnef", 221),),
    ),
    "very-long-line": Case(
        subject="One line without breaks",
        from_=("Long Liner <long@example.com>",),
        to=("peer@example.org",),
        date="2024-02-23T12:00:00+00:00",
        text="thistle END-OF-LONG-LINE",
        absent=("\n",),
    ),
    # -- damage that used to cost more than itself (issue 14); each read as a person would
    "header-field-nested-comments": Case(
        subject="Budget figures for the third quarter",
        from_=("Rhea Castell <rhea@example.com>",),
        # Thousands of nested comments: Python's address parser recurses on each.
        to=("Planning Team <team@example.org>",),
        cc=("Audit <audit@example.org>",),
        date="2024-10-07T08:30:00+02:00",
        text="The third quarter closed four percent above plan.",
        defects=("To: 32+ comments removed before reading the addresses",),
    ),
    "header-to-thousands-of-encoded-words": Case(
        subject="Rundschreiben für alle",
        from_=("Mass Mailer <mass@example.com>",),
        to=tuple(f"Empfänger {i} <r{i}@example.org>" for i in range(3000)),
        date="2024-10-08T09:00:00+00:00",
        text="One circular for three thousand recipients.",
    ),
    "header-wrapped-before-mime": Case(
        subject="Price list for November",
        from_=("Exchange Sender <exch@example.com>",),
        to=("buyers@example.org",),
        date="2024-10-30T16:20:00+01:00",
        text="The November price list is attached to our portal.",
        defects=("header line wrapped without indentation; joined to the field before",),
        absent=("<p>", "Content-Type", "of the month"),
    ),
    "boundary-looks-like-header": Case(
        subject="Boundary straight after the headers",
        from_=("Glued Parts <glued@example.com>",),
        to=("peer@example.org",),
        date="2024-10-31T10:00:00+00:00",
        text="The text after a boundary that reads like a header.",
        defects=("boundary line inside the header block; the body starts there",),
        absent=("Part:Next", "Content-Type"),
    ),
    "boundary-only-closing": Case(
        subject="Only the closing boundary",
        from_=("Half Mailer <half@example.com>",),
        to=("peer@example.org",),
        date="2024-11-01T11:00:00+00:00",
        text="The mailer wrote this part but never opened it.",
        defects=("multipart/mixed: only a closing boundary; the text before it read as one part",),
        absent=("--end-only", "Content-Type"),
    ),
    "date-fraction-unsigned-zone": Case(
        subject="Fractional seconds and a zone without its sign.",
        from_=("Clock Watcher <clock@example.com>",),
        to=("peer@example.org",),
        date="2012-07-17T22:23:35+00:00",
        text="Fractional seconds and a zone without its sign.",
        defects=("Date: 'Tue, 17 Jul 2012 22:23:35.882 0000' read leniently",),
    ),
    "date-iso-8601": Case(
        subject="A date written in ISO 8601.",
        from_=("Clock Watcher <clock@example.com>",),
        to=("peer@example.org",),
        date="2013-05-06T14:15:16+02:00",
        text="A date written in ISO 8601.",
        defects=("Date: '2013-05-06T14:15:16+02:00' read leniently",),
    ),
    "date-colon-zone": Case(
        subject="A zone after GMT with a colon.",
        from_=("Clock Watcher <clock@example.com>",),
        to=("peer@example.org",),
        date="2024-11-09T07:05:00+01:00",
        text="A zone after GMT with a colon.",
        defects=("Date: 'Sat, 9 Nov 2024 7:05:00 GMT+01:00' read leniently",),
    ),
    "charset-iso2022jp-but-eucjp": Case(
        subject="Meeting moved",
        from_=("Tanaka Office <tanaka@example.jp>",),
        to=("peer@example.org",),
        date="2024-11-11T09:00:00+09:00",
        text="会議は金曜日の午後三時に変更になりました。資料は前日までに送ります。",
        defects=None,  # names the detected charset, which the detector chooses
        absent=("\ufffd",),
    ),
    "charset-usascii-but-shiftjis": Case(
        subject="Order received",
        from_=("Sato Shop <sato@example.jp>",),
        to=("peer@example.org",),
        date="2024-11-12T10:00:00+09:00",
        text="会議は金曜日の午後三時に変更になりました。資料は前日までに送ります。",
        defects=None,
        absent=("\ufffd", "\u2030"),
    ),
    "forwarded-base64-rfc822": Case(
        subject="Fwd: Rechnung",
        from_=("Omar Quist <omar@example.com>",),
        to=("books@example.org",),
        date="2024-11-05T08:00:00+01:00",
        text="Forwarding Nora's invoice for booking.\n\n"
        "---------- Forwarded message ----------\nFrom: Nora Field <nora@example.com>\n"
        "Date: Mon, 04 Nov 2024 12:00:00 +0100\nSubject: Rechnung für Oktober\n"
        "To: Accounts <accounts@example.org>\n\nThe October invoice total is 1,250 euros.",
        attachments=((None, "message/rfc822", 247),),
    ),
    "richtext-top-level": Case(
        subject="Rich text from an old client",
        from_=("Old Client <old@example.com>",),
        to=("peer@example.org",),
        date="2024-11-13T13:00:00+00:00",
        text="Please call me about the shipment.\nUse <the back door>.",
        absent=("<bold>", "<nl>"),
    ),
    "inline-uuencode-and-yenc": Case(
        subject="Two files in the text",
        from_=("News Poster <poster@example.com>",),
        to=("peer@example.org",),
        date="2024-11-14T14:00:00+00:00",
        text="Here are the files you asked for.\n\nThat is all.",
        attachments=(
            ("notes.bin", "application/octet-stream", 37),
            ("photo.jpg", "application/octet-stream", 12),
        ),
        defects=(
            "uuencoded 'notes.bin' inside the text read as an attachment",
            "yEnc 'photo.jpg' inside the text read as an attachment",
        ),
        absent=("begin 644", "=ybegin", "ABCDEFGHIJKL"),
    ),
    "inline-uuencode-in-typed-text": Case(
        subject="A file inside a typed text part",
        from_=("Old Mailer <old@example.com>",),
        to=("peer@example.org",),
        date="2024-11-15T10:00:00+00:00",
        text="The parts list is attached below; begin with the first line.\n\nRegards.",
        attachments=(
            ("parts.txt", "application/octet-stream", 37),
            ("scan.png", "application/octet-stream", 12),
        ),
        defects=(
            "uuencoded 'parts.txt' inside the text read as an attachment",
            "yEnc 'scan.png' inside the text read as an attachment",
        ),
        absent=("begin 644", "=ybegin", "ABCDEFGHIJKL"),
    ),
    "date-twelve-hour-clock": Case(
        subject="A time with PM.",
        from_=("Clock Watcher <clock@example.com>",),
        to=("peer@example.org",),
        date="2024-11-21T14:05:09-05:00",
        text="A time written with PM.",
        defects=("Date: 'Thu, 21 Nov 2024 2:05:09 PM -0500' read leniently",),
    ),
    "gzip64-attachment": Case(
        subject="Compressed report",
        from_=("Packer <packer@example.com>",),
        to=("peer@example.org",),
        date="2024-11-15T15:00:00+00:00",
        text="The report is compressed.",
        attachments=(("report.txt", "text/plain", 40),),
        absent=("H4sI",),
    ),
}

# Messages xtmail reads wrongly today. EXPECTED holds the right reading for each; the case
# fails until the parser reads it so, and must then be taken off this list.
KNOWN_DEFECTS: dict[str, str] = {}


def _address(address: Address) -> str:
    return f"{address.name} <{address.addr}>" if address.name else address.addr


def _addr_only(written: str) -> str:
    return written.rsplit("<", 1)[1].rstrip(">") if written.endswith(">") else written


def _as_read(seen: Case, expected: Case) -> Case:
    """`seen` (the whole body text in `text`), with the fields `expected` does not pin in
    the expected form, so that one comparison shows every difference."""
    text = seen.text
    if expected.text in text and bool(expected.text) == bool(text):
        text = expected.text
    defects = None if expected.defects is None else seen.defects
    return dataclasses.replace(seen, text=text, absent=expected.absent, defects=defects)


def _cases() -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_DEFECTS[name], strict=True))
        if name in KNOWN_DEFECTS else name
        for name in sorted(EXPECTED)
    ]


def test_every_message_in_tests_data_has_expectations() -> None:
    assert sorted(path.stem for path in DATA.glob("*.eml")) == sorted(EXPECTED)
    assert set(KNOWN_DEFECTS) <= set(EXPECTED)


@pytest.mark.parametrize("name", _cases())
def test_message_reads_as_expected(name: str) -> None:
    raw = (DATA / f"{name}.eml").read_bytes()
    expected = EXPECTED[name]
    parsed = parse_message(raw, fallback_date=FALLBACK)
    seen = Case(
        subject=parsed.subject,
        from_=tuple(map(_address, parsed.from_)),
        to=tuple(map(_address, parsed.to)),
        cc=tuple(map(_address, parsed.cc)),
        date=parsed.date.isoformat() if parsed.date_from_header else None,
        text=parsed.body_text,
        attachments=tuple((a.filename, a.content_type, a.size) for a in parsed.attachments),
        defects=parsed.defects,
    )
    assert _as_read(seen, expected) == expected
    assert [piece for piece in expected.absent if piece in parsed.body_text] == []
    if expected.date is None:
        assert parsed.date == FALLBACK

    # What the store receives says the same.
    prepared = prepare(raw, FALLBACK)
    kinds = {"FROM": expected.from_, "TO": expected.to, "CC": expected.cc}
    assert {kind: tuple(a for k, a, _ in prepared.addresses if k == kind) for kind in kinds} == {
        kind: tuple(_addr_only(written) for written in addresses)
        for kind, addresses in kinds.items()
    }
    assert (prepared.subject, prepared.date) == (parsed.subject, parsed.date)
    assert prepared.body == parsed.body_text
    assert json.loads(prepared.attachments_json) == [
        {"filename": filename, "content_type": ctype, "size": size}
        for filename, ctype, size in expected.attachments
    ]


def test_the_corpus_is_stored_with_its_raw_bytes(conn: psycopg.Connection) -> None:
    files = sorted(DATA.glob("*.eml"))
    raws = [path.read_bytes() for path in files]
    result = Importer(conn).import_batch(
        [Incoming(raw, Location("corpus", "tests/data", 1, uid), FALLBACK)
         for uid, raw in enumerate(raws, start=1)]
    )
    assert not result.warnings
    assert all(result.new), "each file is a message of its own"
    stored = dict(conn.execute("SELECT eml_id, eml_msg FROM xtbatch.eml").fetchall())
    assert len(stored) == len(files)
    for path, raw, eml_id in zip(files, raws, result.eml_ids, strict=True):
        assert bytes(stored[eml_id]) == raw, path.name


# -- the email package's test messages


def python_test_messages() -> list[Path]:
    """The msg_*.txt files of the Python that runs the tests, from Debian's test-suite
    package (bash dev.sh test installs it)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = Path(f"/usr/lib/python{version}/test/test_email/data")
    files = sorted(folder.glob("msg_*.txt"))
    assert files, (
        f"no msg_*.txt in {folder}: the package libpython{version}-testsuite is not "
        f"installed (bash dev.sh test installs it)"
    )
    return files


def test_python_test_messages_parse(caplog: pytest.LogCaptureFixture) -> None:
    for path in python_test_messages():
        with caplog.at_level(logging.ERROR, logger=mime.__name__):
            parsed = parse_message(path.read_bytes(), fallback_date=FALLBACK)
            prepare(path.read_bytes(), FALLBACK)
        # Nothing raised inside: the raw-reading safety net was not needed.
        assert not caplog.records, f"{path.name}: {caplog.records[0].getMessage()}"
        assert not any("internal error" in defect for defect in parsed.defects), path.name


def test_python_test_messages_are_stored_with_their_raw_bytes(conn: psycopg.Connection) -> None:
    files = python_test_messages()
    raws = [path.read_bytes() for path in files]
    result = Importer(conn).import_batch(
        [Incoming(raw, Location("python", "test_email", 1, uid), FALLBACK)
         for uid, raw in enumerate(raws, start=1)]
    )
    assert not result.warnings
    # Copies of one message share a row; each copy keeps its own bytes with its location.
    stored = dict(conn.execute(
        """SELECT l.loc_uid, coalesce(l.loc_raw, e.eml_msg) FROM xtmail.location l
             JOIN xtbatch.eml e ON e.eml_id = l.loc_eml_id
            WHERE l.loc_account = 'python'"""
    ).fetchall())
    for uid, (path, raw) in enumerate(zip(files, raws, strict=True), start=1):
        assert bytes(stored[uid]) == raw, path.name
