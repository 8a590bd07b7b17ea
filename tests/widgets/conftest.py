"""Qt and qasync fixtures for widget and dialog tests, and helpers to put mail in a database.

* ``qloop``: a qasync event loop on pytest-qt's QApplication, set as the current loop.
  Drive asynchronous work with ``qloop.run_until_complete(...)`` or ``run_until``; do not
  use ``qtbot.wait*`` while database work is under way: those spin a Qt loop in which
  qasync would run the tasks without a running asyncio loop.
* ``run_until(predicate, timeout=...)``: runs the loop until ``predicate()`` holds.
* ``mail_store``: a ``MailStore`` on the test's fresh database (``db_dsn``).
* ``recording_desktop``: a desktop that records the URLs handed to it instead of
  starting programs (the OS boundary, not a server).
* ``mail_data``: writes contacts, documents and imported mail with the real importer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QUrl

from tests.sync.mail import make_message
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.writer import Importer
from xtmail.sync.values import Incoming


@pytest.fixture
def mail_store(
    db_dsn: str, qloop: qasync.QEventLoop, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MailStore]:
    """A ``MailStore`` on the test's database, on the qasync loop, dates in UTC."""
    # libpq reads PGTZ: dates come back in UTC whatever the machine's zone, so tests can
    # compare attribution lines ("On 2026-03-02 10:00 +0000, ...") literally.
    monkeypatch.setenv("PGTZ", "UTC")
    store = qloop.run_until_complete(MailStore.connect(db_dsn))
    try:
        yield store
    finally:
        if not store.connection.closed:
            qloop.run_until_complete(store.close())


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


@pytest.fixture
def recording_desktop() -> RecordingDesktop:
    return RecordingDesktop()


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

    def import_raw(self, raws: Sequence[bytes], ties: Sequence[tuple[str, int]] = ()) -> list[int]:
        """Import ``raws`` with the real importer, tied also to ``ties``; their eml_ids."""
        result = Importer(self.conn).import_batch(
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


@pytest.fixture
def mail_data(conn: psycopg.Connection) -> MailData:
    return MailData(conn)
