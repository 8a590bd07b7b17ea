"""Every fixture of the test suite, defined once.

Servers: real PostgreSQL and real Dovecot on free loopback ports, one each per session.

* ``db_dsn`` / ``empty_db_dsn`` / ``conn``: a fresh migrated (or empty) database per test.
* ``dovecot`` / ``imap_user``: the session's Dovecot, and a fresh account on it per test.

Qt (widgets, dialogs, the sync service):

* ``qloop``: a qasync event loop on pytest-qt's QApplication, set as the current loop.
  Drive asynchronous work with ``qloop.run_until_complete(...)`` or ``run_until``; do not
  use ``qtbot.wait*`` while database work is under way: those spin a Qt loop in which
  qasync would run the tasks without a running asyncio loop.
* ``run_until(predicate, timeout=10.0, message="")``: runs the loop until ``predicate()``
  holds.
* ``memory_keyring``: an in-memory keyring backend, installed for the test.
* ``mail_store``: a ``MailStore`` on the test's database.
* ``mail_data``: writes contacts, documents and imported mail with the real importer.
* ``sample_mail``: four imported messages, a sales order and Ada's contact id.
* ``recording_desktop``: a desktop that records the URLs handed to it instead of starting
  programs (the OS boundary, not a server).

The classes behind them live in ``tests/helpers``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

# Qt must be told before any QApplication exists (pytest-qt creates it lazily).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import keyring
import psycopg
import pytest
import qasync
from PyQt6.QtCore import QEvent
from PyQt6.QtWidgets import QApplication

from tests.helpers.dovecot import DovecotServer, ImapAccount
from tests.helpers.maildata import MailData, RecordingDesktop, SampleMail
from tests.helpers.postgres import TestDatabases, start_server
from tests.helpers.qt import MemoryKeyring, RunUntil, loop_runner
from tests.helpers.xtuple import create_user
from xtmail.app.localpg import LocalPostgres
from xtmail.sync.db.mailstore import MailStore
from xtmail.widgets.desktop import PrivateFiles
from xtmail.widgets.email_tab import EmailTab

# -- PostgreSQL


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    yield from start_server(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def databases(pg_server: LocalPostgres) -> TestDatabases:
    return TestDatabases(pg_server)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A server of the test module's own, which its tests may stop, restart and freeze
    (tests/helpers/postgres.py: ``frozen``, ``server_pids``)."""
    yield from start_server(tmp_path_factory.mktemp("ownpg"))


@pytest.fixture
def db_dsn(databases: TestDatabases) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    dsn = databases.create()
    yield dsn
    databases.drop(dsn)


#: The xTuple databases the store, the Email tab and the Attach dialog are tested on: (b) no
#: Connect beforehand, used by the database owner; (a) Connect's own mail tables beforehand,
#: used by an ordinary user in xtrole (a login role made like xTuple's createuser()).
XTUPLE_KINDS = ["b-owner", "a-clerk"]
CLERK = "xtmail_clerk"


@pytest.fixture(params=XTUPLE_KINDS)
def xtuple_dsn(request: pytest.FixtureRequest, databases: TestDatabases) -> Iterator[str]:
    """A fresh migrated database of one of the kinds in XTUPLE_KINDS, as its DSN for the
    role that kind is used by. A test module runs on every kind by overriding ``db_dsn``
    with this fixture."""
    connect, role = request.param.split("-")
    dsn = databases.create(connect=connect == "a")
    if role == "clerk":
        with databases.admin() as admin:
            create_user(admin, CLERK)
        yield psycopg.conninfo.make_conninfo(dsn, user=CLERK)
    else:
        yield dsn
    databases.drop(dsn)


@pytest.fixture
def empty_db_dsn(databases: TestDatabases) -> Iterator[str]:
    """A fresh database with nothing in it."""
    dsn = databases.create(migrated=False)
    yield dsn
    databases.drop(dsn)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as connection:
        yield connection


# -- Dovecot


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A running Dovecot for the whole session; fails (never skips) if it is not installed."""
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"), oauth2=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> ImapAccount:
    """A fresh account with an empty INBOX, so tests never see each other's mail."""
    account = ImapAccount(f"user-{secrets.token_hex(6)}", secrets.token_urlsafe(12))
    dovecot.add_user(account.user, account.password)
    return account


# -- Qt and qasync


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    """A qasync loop for this test; tasks still pending at the end are cancelled."""
    qapp.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        # Widgets deleted with deleteLater() go now, while their loop still exists.
        QApplication.sendPostedEvents(None, 0)
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def run_until(qloop: qasync.QEventLoop) -> RunUntil:
    return loop_runner(qloop)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


# -- mail in the database, for the views


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
        if not store.closed:
            qloop.run_until_complete(store.close())


@pytest.fixture
def mail_data(conn: psycopg.Connection) -> MailData:
    return MailData(conn)


@pytest.fixture
def sample_mail(mail_data: MailData) -> SampleMail:
    return mail_data.sample()


@pytest.fixture
def recording_desktop() -> RecordingDesktop:
    return RecordingDesktop()


@pytest.fixture
def bare_email_tab(
    qloop: qasync.QEventLoop, recording_desktop: RecordingDesktop, tmp_path: Path,
) -> Iterator[EmailTab]:
    """A shown Email tab without a store, handing files to ``recording_desktop`` and
    writing its private files under ``tmp_path / "private"``."""
    # Not qtbot.addWidget(): pytest-qt would close it in its teardown hook, outside the
    # qasync loop; here the tab is closed (its tasks cancelled) while the loop exists.
    private = tmp_path / "private"
    private.mkdir()
    widget = EmailTab()
    widget.setDesktop(recording_desktop)
    widget.setPrivateFiles(PrivateFiles(private))
    widget.resize(900, 700)
    widget.show()
    yield widget
    widget.close()
    qloop.run_until_complete(asyncio.sleep(0))
    widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


@pytest.fixture
def email_tab(bare_email_tab: EmailTab, mail_store: MailStore) -> EmailTab:
    """A shown Email tab on the test's database."""
    bare_email_tab.setStore(mail_store)
    return bare_email_tab


# -- message corpus
#
# tests/data holds the project's own hard messages and is always used. A larger corpus of
# real mail is added with --shared-corpus=PATH (CI passes it); a path that is given but
# holds no messages stops the run, because a corpus skipped by mistake would look the same
# as one that passed.

DATA = Path(__file__).resolve().parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shared-corpus",
        metavar="PATH",
        help="also run the message corpus tests over every .eml file under PATH",
    )


def pytest_configure(config: pytest.Config) -> None:
    shared_corpus_files(config)  # a wrong path fails before any test runs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests about particular shared-corpus messages exist only when that corpus is given:
    # deselected (and counted as such) without it, never skipped.
    if config.getoption("shared_corpus", None) is not None:
        return
    kept = [item for item in items if item.get_closest_marker("shared_corpus") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def shared_corpus_files(config: pytest.Config) -> list[Path]:
    option = config.getoption("shared_corpus", None)
    if option is None:
        return []
    root = Path(option)
    if not root.is_dir():
        raise pytest.UsageError(f"--shared-corpus={option}: no such folder")
    files = sorted(root.rglob("*.eml"))
    if not files:
        raise pytest.UsageError(f"--shared-corpus={option}: no .eml files in that folder")
    return files


def corpus_paths(config: pytest.Config) -> list[Path]:
    """tests/data/*.eml, then the shared corpus's messages when one was given."""
    return sorted(DATA.glob("*.eml")) + shared_corpus_files(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test that takes ``corpus_file`` runs once per corpus message.
    if "corpus_file" in metafunc.fixturenames:
        files = corpus_paths(metafunc.config)
        ids = [
            path.name if path.parent == DATA else f"shared/{path.name}" for path in files
        ]
        metafunc.parametrize("corpus_file", files, ids=ids)


@pytest.fixture(scope="session")
def corpus_files(pytestconfig: pytest.Config) -> list[Path]:
    files = corpus_paths(pytestconfig)
    assert files, f"no corpus messages found in {DATA}"
    return files
