"""The Email page of User Preferences (xtmail.dialogs.email_prefs), with pytest-qt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.qt import MemoryKeyring, RunUntil
from tests.helpers.xtuple import refuse_new_contacts
from xtmail.dialogs.email_prefs import EmailPreferencesPage
from xtmail.sync.imap.account import Backoff
from xtmail.sync.imap.connection import FolderInfo
from xtmail.sync.imap.credentials import Credential, KeyringCredentials
from xtmail.sync.imap.service import SyncService
from xtmail.sync.imap.settings import (
    AccountSettings,
    Security,
    SyncSettings,
    load_settings,
)
from xtmail.widgets.tasks import UNEXPECTED_TEXT


@pytest.fixture
def store(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat)


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def fill_account(page: EmailPreferencesPage, server: DovecotServer, account: ImapAccount,
                 *, ca: bool = True) -> None:
    page.hostEdit.setText(server.host)
    page.portSpin.setValue(server.imaps_port)
    page.securityCombo.setCurrentIndex(page.securityCombo.findData(Security.IMAPS.value))
    page.userEdit.setText(account.user)
    page.passwordEdit.setText(account.password)
    page.caFileEdit.setText(str(server.ca_file) if ca else "")


def page_with_service(
    qtbot: QtBot, store: QSettings, server: DovecotServer, account: ImapAccount, dsn: str,
    *, ca: bool = True,
) -> tuple[SyncService, EmailPreferencesPage]:
    """A preferences page driving a sync service, its account filled in as a user would."""
    service = SyncService(
        SyncSettings(account=AccountSettings(host=server.host, user=account.user)),
        KeyringCredentials(), dsn, backoff=Backoff(initial=0.05, cap=0.5),
    )
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials(),
                                service=service)
    qtbot.addWidget(page)
    fill_account(page, server, account, ca=ca)
    return service, page


def test_settings_persist_without_the_password(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("ann@example.com")
    page.passwordEdit.setText("s3cret-pw")
    page.securityCombo.setCurrentIndex(page.securityCombo.findData(Security.STARTTLS.value))
    page.syncWhileRunningCheck.setChecked(True)
    page.ownAddressesEdit.setPlainText("ann@example.com\nsales@example.com")
    page.excludedDomainsEdit.setPlainText("example.net")
    page.excludeBulkCheck.setChecked(False)
    with qtbot.waitSignal(page.settingsSaved):
        assert page.save()
    assert "s3cret-pw" not in (tmp_path / "prefs.ini").read_text()
    assert memory_keyring.secrets == {("xtmail", "ann@example.com@imap.example.com"):
                                      "s3cret-pw"}

    again = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(again)
    assert again.hostEdit.text() == "imap.example.com"
    assert again.passwordEdit.text() == "s3cret-pw"
    assert again.securityCombo.currentData() == "starttls"
    assert again.syncWhileRunningCheck.isChecked()
    assert not again.excludeBulkCheck.isChecked()
    settings = load_settings(store)
    assert settings.own_addresses == ("ann@example.com", "sales@example.com")
    assert settings.excluded_domains == ("example.net",)
    assert settings.folders == ("INBOX",)


def test_invalid_settings_say_what_to_fix(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    page.hostEdit.setText("imap.example.com")
    page.pinEdit.setText("not a fingerprint")
    assert not page.save()
    assert "Enter the user name" in page.lastErrorLabel.text()
    assert "64 hexadecimal digits" in page.lastErrorLabel.text()


def test_connection_folders_ticking_and_sync(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(30, prefix="pg"))
    dovecot.seed_maildir(imap_user.user, "Projects/Acme",
                         iter_generated_messages(12, prefix="acme"))
    service, page = page_with_service(qtbot, store, dovecot, imap_user, db_dsn, ca=False)

    tested: list[bool] = []
    folder_changes: list[list[str]] = []
    page.connectionTested.connect(tested.append)  # Qt passes only the first argument on
    page.foldersChanged.connect(folder_changes.append)

    # No qtbot.waitSignal inside the coroutine: its nested event loop would run qasync's
    # callbacks inside the running task ("Cannot enter into task").
    async def scenario() -> None:
        # An unverifiable certificate: refused, with the fingerprint to pin.
        qtbot.mouseClick(page.testButton, Qt.MouseButton.LeftButton)
        await until(lambda: bool(tested))
        assert tested == [False]
        assert "could not be verified" in page.testResultLabel.text()
        assert page.pinButton.isVisibleTo(page)
        qtbot.mouseClick(page.pinButton, Qt.MouseButton.LeftButton)
        assert len(page.pinEdit.text()) == 95

        assert await page.testConnection()
        assert "Connected" in page.testResultLabel.text()
        inbox = page.folderItem("INBOX")
        acme = page.folderItem("Projects/Acme")
        assert inbox is not None and acme is not None
        assert acme.parent() is page.folderItem("Projects")
        assert inbox.checkState(0) == Qt.CheckState.Checked
        assert not inbox.icon(0).isNull()  # synchronized folders carry the marker
        assert acme.checkState(0) == Qt.CheckState.Unchecked and acme.icon(0).isNull()

        acme.setCheckState(0, Qt.CheckState.Checked)
        assert folder_changes == [["INBOX", "Projects/Acme"]]
        assert not acme.icon(0).isNull()
        assert service.settings().folders == ("INBOX", "Projects/Acme")

        qtbot.mouseClick(page.startNowButton, Qt.MouseButton.LeftButton)
        assert service.isRunning() and page.stopButton.isEnabled()
        await until(lambda: "never" not in page.lastSyncLabel.text())
        assert "(42 new)" in page.lastSyncLabel.text()
        assert page.progressBar.value() == page.progressBar.maximum()
        assert page.statusLabel.text()
        qtbot.mouseClick(page.stopButton, Qt.MouseButton.LeftButton)
        await until(lambda: not service.isRunning())
        await service.aclose()

    qloop.run_until_complete(scenario())
    assert not page.stopButton.isEnabled()
    assert page.statusLabel.text() == "Not running"
    row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    assert row == (42,)
    saved = load_settings(store)
    assert saved.folders == ("INBOX", "Projects/Acme")
    assert saved.account.pin_sha256 == page.pinEdit.text()


def test_a_store_warning_shows_in_the_error_area(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    # The mail goes in, but xTuple refuses new contacts to a user without the privilege:
    # the page says so, and what to do, while the sync carries on.
    refuse_new_contacts(conn)
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(5, prefix="wn"))
    service, page = page_with_service(qtbot, store, dovecot, imap_user, db_dsn)

    async def scenario() -> None:
        qtbot.mouseClick(page.startNowButton, Qt.MouseButton.LeftButton)
        await until(lambda: "never" not in page.lastSyncLabel.text())
        qtbot.mouseClick(page.stopButton, Qt.MouseButton.LeftButton)
        await until(lambda: not service.isRunning())
        await service.aclose()

    qloop.run_until_complete(scenario())
    assert "(5 new)" in page.lastSyncLabel.text()
    text = page.lastErrorLabel.text()
    assert text.startswith("Warning: New contacts were not created")
    assert "privilege" in text


def test_a_bug_in_test_connection_is_reported_not_lost(
    qtbot: QtBot, run_until: RunUntil, store: QSettings, memory_keyring: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bug = RuntimeError("a bug in the folder lister")

    def broken(account: AccountSettings, credential: Credential) -> list[FolderInfo]:
        raise bug

    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials(),
                                folder_lister=broken)
    qtbot.addWidget(page)
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("ada")
    page.passwordEdit.setText("secret")
    results: list[tuple[bool, str]] = []

    def tested(ok: bool, message: str) -> None:
        results.append((ok, message))

    page.connectionTested.connect(tested)
    with caplog.at_level(logging.ERROR):
        qtbot.mouseClick(page.testButton, Qt.MouseButton.LeftButton)
        run_until(lambda: bool(results), message="Test Connection never finished")
    assert results == [(False, f"{UNEXPECTED_TEXT}\nPress Test Connection to try again.")]
    assert page.testResultLabel.text() == results[0][1]
    assert page.testButton.isEnabled()
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [bug]
