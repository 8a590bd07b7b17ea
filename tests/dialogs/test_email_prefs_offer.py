"""The Email page's "Let the company mail server sync this account": the offer is written to a
real database as the user (migration 0015), with the account's settings and no secret, and
withdrawn when the box is cleared or the account removed; another user's account is
refused with the reason shown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from tests.helpers.postgres import TestDatabases
from tests.helpers.qt import MemoryKeyring
from tests.helpers.xtuple import create_user
from xtmail.dialogs.email_prefs import EmailPreferencesPage
from xtmail.sync.imap.credentials import KeyringCredentials
from xtmail.sync.imap.offers import DatabaseOffers
from xtmail.sync.imap.settings import load_email_settings

ALICE, BOB = "prefs_alice", "prefs_bob"


@pytest.fixture
def store(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def users(db_dsn: str, databases: TestDatabases) -> dict[str, str]:
    with databases.admin() as admin:
        for name in (ALICE, BOB):
            create_user(admin, name)
    return {name: psycopg.conninfo.make_conninfo(db_dsn, user=name) for name in (ALICE, BOB)}


def offers_as(dsn: str) -> DatabaseOffers:
    def connect() -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    return DatabaseOffers(connect)


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def offers_in(conn: psycopg.Connection) -> list[tuple[str, str, list[str]]]:
    return [(r[0], r[1], list(r[2])) for r in conn.execute(
        "SELECT oa_owner, oa_user || '@' || oa_host, oa_folders FROM xtmail.offered_account "
        "ORDER BY oa_id")]


def page_as(qtbot: QtBot, store: QSettings, dsn: str) -> EmailPreferencesPage:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials(),
                                server_offers=offers_as(dsn))
    qtbot.addWidget(page)
    return page


def test_ticking_the_box_offers_the_account_and_clearing_it_withdraws(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    conn: psycopg.Connection, users: dict[str, str],
) -> None:
    page = page_as(qtbot, store, users[ALICE])
    results: list[bool] = []
    page.offersApplied.connect(results.append)
    page.addAccount()
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("alice")
    page.passwordEdit.setText("alice-secret")
    assert page.serverSyncCheck.isVisibleTo(page)

    async def scenario() -> None:
        qtbot.mouseClick(page.serverSyncCheck, Qt.MouseButton.LeftButton)
        assert page.serverSyncCheck.isChecked() and page.isModified()
        assert page.save()
        await until(lambda: bool(results))
        assert results == [True]
        assert "synchronizes alice@imap.example.com" in page.serverSyncLabel.text()
        assert offers_in(conn) == [(ALICE, "alice@imap.example.com", ["INBOX"])]
        # The password went to the keyring, never to the database.
        columns = " ".join(str(v) for row in conn.execute(
            "SELECT * FROM xtmail.offered_account") for v in row)
        assert "alice-secret" not in columns
        # Cleared: withdrawn.
        qtbot.mouseClick(page.serverSyncCheck, Qt.MouseButton.LeftButton)
        assert page.save()
        await until(lambda: len(results) == 2)
        assert results[1] is True
        assert "no longer synchronizes" in page.serverSyncLabel.text()
        assert offers_in(conn) == []

    qloop.run_until_complete(scenario())
    assert load_email_settings(store).accounts[0].offered is False


def test_the_choice_is_kept_and_another_users_account_is_refused_with_the_reason(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    conn: psycopg.Connection, users: dict[str, str], tmp_path: Path,
) -> None:
    with psycopg.connect(users[BOB], autocommit=True) as bob:
        bob.execute("SELECT xtmail.offer_account('imap.example.com', 0, 'imaps', 'shared', "
                    "'password', '{INBOX}', NULL, '', '{}', '{}', true)")
    page = page_as(qtbot, store, users[ALICE])
    results: list[tuple[bool, str]] = []
    page.offersApplied.connect(lambda ok, text: results.append((ok, text)))
    page.addAccount()
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("shared")
    page.serverSyncCheck.setChecked(True)

    async def scenario() -> None:
        assert page.save()
        await until(lambda: bool(results))

    qloop.run_until_complete(scenario())
    ok, text = results[0]
    assert not ok
    assert "already offered to the mail server by another user" in text
    assert text == page.serverSyncLabel.text()
    assert offers_in(conn) == [(BOB, "shared@imap.example.com", ["INBOX"])]
    # The choice itself is kept in the user's settings, and shown again.
    again = page_as(qtbot, store, users[ALICE])
    assert again.serverSyncCheck.isChecked()


def test_without_a_database_the_box_is_not_offered(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    assert not page.serverSyncCheck.isVisibleTo(page)


def test_the_hosts_preferences_offer_as_the_user_the_host_connects_as(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    conn: psycopg.Connection, users: dict[str, str],
) -> None:
    from xtmail.app.host import MailHost

    host = MailHost(users[ALICE], store)
    dialog = host.preferencesDialog()
    qtbot.addWidget(dialog)
    page = dialog.page
    results: list[bool] = []
    page.offersApplied.connect(results.append)
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("alice")
    page.serverSyncCheck.setChecked(True)

    async def scenario() -> None:
        assert page.save()
        await until(lambda: bool(results))

    qloop.run_until_complete(scenario())
    assert results == [True]
    assert offers_in(conn) == [(ALICE, "alice@imap.example.com", ["INBOX"])]
