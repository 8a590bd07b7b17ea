"""The Email page of User Preferences (xtmail.dialogs.email_prefs), with pytest-qt."""

from __future__ import annotations

import asyncio
import logging
import socket
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
from xtmail.dialogs.email_prefs import EmailPreferencesDialog, EmailPreferencesPage
from xtmail.sync.imap.account import Backoff
from xtmail.sync.imap.connection import FolderInfo
from xtmail.sync.imap.credentials import Credential, KeyringCredentials
from xtmail.sync.imap.service import SyncService
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    EmailSettings,
    MailAccount,
    Security,
    SyncSettings,
    load_email_settings,
    load_settings,
    save_email_settings,
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
        # Applied at Save, as every other edit (Cancel drops it); Start Now saves first.
        assert service.settings().folders == ("INBOX",) and page.isModified()

        qtbot.mouseClick(page.startNowButton, Qt.MouseButton.LeftButton)
        assert service.settings().folders == ("INBOX", "Projects/Acme")
        assert not page.isModified()
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


# -- Save and Cancel, every field kept, the folders at once, the layout, the texts -----------


def fill_everything(page: EmailPreferencesPage, tmp_path: Path) -> None:
    page.hostEdit.setText("imap.example.com")
    page.portSpin.setValue(1993)
    page.securityCombo.setCurrentIndex(page.securityCombo.findData(Security.STARTTLS.value))
    page.userEdit.setText("ann@example.com")
    page.authCombo.setCurrentIndex(page.authCombo.findData("xoauth2"))
    page.passwordCommandEdit.setText("oauth2-helper --account ann")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    page.caFileEdit.setText(str(ca))
    page.pinEdit.setText("ab" * 32)
    page.timeoutSpin.setValue(45)
    page.enabledCheck.setChecked(False)
    page.syncWhileRunningCheck.setChecked(True)
    page.ownAddressesEdit.setPlainText("sales@example.com")
    page.excludedDomainsEdit.setPlainText("example.net")
    page.excludeAutomatedCheck.setChecked(False)


def test_cancel_drops_the_edits_and_save_keeps_every_field(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    dialog = EmailPreferencesDialog(page)
    qtbot.addWidget(dialog)
    dialog.show()
    fill_everything(page, tmp_path)
    assert page.isModified()
    assert not page.passwordEdit.isEnabled()  # OAuth2: the token command signs in
    cancel, save = dialog.cancelButton(), dialog.saveButton()
    assert cancel is not None and save is not None
    qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    assert load_email_settings(store) == EmailSettings()
    assert page.hostEdit.text() == "" and not page.syncWhileRunningCheck.isChecked()
    assert not page.isModified()

    dialog.show()
    fill_everything(page, tmp_path)
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible(), page.lastErrorLabel.text()
    saved = load_email_settings(QSettings(store.fileName(), QSettings.Format.IniFormat))
    (entry,) = saved.accounts
    assert entry.account == AccountSettings(
        host="imap.example.com", user="ann@example.com", port=1993,
        security=Security.STARTTLS, auth=AuthMethod.XOAUTH2, ca_file=str(tmp_path / "ca.pem"),
        pin_sha256=":".join(["AB"] * 32), timeout=45.0,
        password_command="oauth2-helper --account ann")
    assert entry.folders == ("INBOX",) and entry.enabled is False
    assert saved.options.sync_while_running
    assert saved.options.own_addresses == ("sales@example.com",)
    assert saved.options.excluded_domains == ("example.net",)
    assert saved.options.exclude_automated is False
    # A new page on the same settings shows all of it.
    again = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(again)
    assert again.value() == saved
    assert again.passwordCommandEdit.text() == "oauth2-helper --account ann"
    assert again.timeoutSpin.value() == 45 and not again.enabledCheck.isChecked()


def test_saved_folders_show_at_once_and_the_server_list_follows(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount, run_until: RunUntil,
) -> None:
    dovecot.seed_maildir(imap_user.user, "Projects/Acme", iter_generated_messages(1, prefix="a"))
    dovecot.seed_maildir(imap_user.user, "Projects/Zeta", iter_generated_messages(1, prefix="z"))
    account = AccountSettings(host=dovecot.host, user=imap_user.user,
                              port=dovecot.imaps_port, ca_file=str(dovecot.ca_file))
    save_email_settings(store, EmailSettings(accounts=(
        MailAccount(account, folders=("INBOX", "Projects/Acme"), delimiter="/"),)))
    KeyringCredentials().set_password(account, imap_user.password)

    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    # Before any network call: the saved folders, as a tree, ticked.
    acme = page.folderItem("Projects/Acme")
    assert acme is not None and acme.parent() is page.folderItem("Projects")
    assert acme.checkState(0) == Qt.CheckState.Checked
    assert page.folderItem("Projects/Zeta") is None
    page.show()
    # Shown: the server's list replaces it in the background, the ticks kept.
    run_until(lambda: page.folderItem("Projects/Zeta") is not None,
              message="the folder list was not refreshed from the server")
    zeta, acme = page.folderItem("Projects/Zeta"), page.folderItem("Projects/Acme")
    assert zeta is not None and zeta.checkState(0) == Qt.CheckState.Unchecked
    assert acme is not None and acme.checkState(0) == Qt.CheckState.Checked
    assert not page.isModified()


def test_a_new_account_is_offered_inbox_and_the_sent_folder(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount,
) -> None:
    dovecot.seed_maildir(imap_user.user, "Sent", iter_generated_messages(1, prefix="sent"))
    dovecot.seed_maildir(imap_user.user, "Trash", iter_generated_messages(1, prefix="trash"))
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    fill_account(page, dovecot, imap_user)
    assert qloop.run_until_complete(page.testConnection())
    assert page.checkedFolders() == ["INBOX", "Sent"]
    sent, trash = page.folderItem("Sent"), page.folderItem("Trash")
    assert sent is not None and sent.checkState(0) == Qt.CheckState.Checked
    assert trash is not None and trash.checkState(0) == Qt.CheckState.Unchecked
    assert "Proposed: INBOX, Sent." in page.folderNoteLabel.text()
    assert page.save()
    assert load_email_settings(store).accounts[0].folders == ("INBOX", "Sent")


def dialog_fits(dialog: EmailPreferencesDialog) -> None:
    # A 1366x768 laptop, less a title bar, a task bar and the window frame.
    for size in (dialog.size(), dialog.sizeHint(), dialog.minimumSizeHint()):
        assert size.width() <= 1366 - 40 and size.height() <= 768 - 90, size


def test_the_dialog_fits_a_laptop_even_after_a_long_certificate_error(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount,
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    dialog = EmailPreferencesDialog(page)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog_fits(dialog)
    width = dialog.width()
    fill_account(page, dovecot, imap_user, ca=False)
    assert not qloop.run_until_complete(page.testConnection())
    assert "could not be verified" in page.testResultLabel.text()
    dialog.adjustSize()
    dialog_fits(dialog)
    assert dialog.width() <= max(width, dialog.sizeHint().width())
    # The page scrolls rather than pushing the status and the buttons off screen.
    bar = page.scrollArea.verticalScrollBar()
    assert bar is not None
    assert page.scrollArea.widget().sizeHint().height() <= bar.maximum() + (  # type: ignore[union-attr]
        page.scrollArea.viewport().height())  # type: ignore[union-attr]


def test_connection_errors_are_worded_for_people_and_cleared_when_stale(
    qtbot: QtBot, qloop: qasync.QEventLoop, store: QSettings, memory_keyring: MemoryKeyring,
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    page.hostEdit.setText("imap.example.invalid")
    page.userEdit.setText("ann")
    page.passwordEdit.setText("pw")
    assert not qloop.run_until_complete(page.testConnection())
    assert page.testResultLabel.text() == (
        "imap.example.invalid: no such host; check the server name.")
    # Changing the server makes that result stale: it goes.
    page.hostEdit.setText("127.0.0.1")
    assert page.testResultLabel.text() == ""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page.portSpin.setValue(port)
    assert not qloop.run_until_complete(page.testConnection())
    text = page.testResultLabel.text()
    assert text == (f"127.0.0.1:{port}: the server refused the connection; check the port "
                    "and the security setting.")
    for shown in (text, page.lastErrorLabel.text()):
        assert "Errno" not in shown and ".." not in shown


def test_ticking_the_sync_box_without_a_server_says_what_is_missing(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring,
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    page.syncWhileRunningCheck.setChecked(True)
    hint = page.syncHintLabel.text()
    assert "host name" in hint and "user name" in hint
    assert not page.save()
    error = page.lastErrorLabel.text()
    assert "enter an account first" in error
    assert "Email page of User Preferences" not in error
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("ann")
    assert page.syncHintLabel.text() == ""
    assert page.save()


def test_two_accounts_are_edited_and_saved_each_with_its_own_folders(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring,
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(page)
    page.hostEdit.setText("imap.one.example")
    page.userEdit.setText("ann@one.example")
    page.passwordEdit.setText("first-pw")
    qtbot.mouseClick(page.addAccountButton, Qt.MouseButton.LeftButton)
    assert page.accountCount() == 2 and page.hostEdit.text() == ""
    page.hostEdit.setText("imap.two.example")
    page.userEdit.setText("ann")
    page.passwordEdit.setText("second-pw")
    page.setCurrentAccount(0)
    assert page.hostEdit.text() == "imap.one.example"
    assert page.passwordEdit.text() == "first-pw"
    page.setCurrentAccount(1)
    assert page.save()
    assert page.currentAccount() == 1 and page.hostEdit.text() == "imap.two.example"
    saved = load_email_settings(store)
    assert [m.account.key for m in saved.accounts] == ["ann@one.example@imap.one.example",
                                                        "ann@imap.two.example"]
    assert memory_keyring.secrets == {("xtmail", "ann@one.example@imap.one.example"): "first-pw",
                                      ("xtmail", "ann@imap.two.example"): "second-pw"}
    page.setCurrentAccount(1)
    qtbot.mouseClick(page.removeAccountButton, Qt.MouseButton.LeftButton)
    assert page.accountCount() == 1 and page.save()
    assert [m.account.host for m in load_email_settings(store).accounts] == ["imap.one.example"]


def test_without_a_keyring_a_saved_password_lasts_the_session(
    qtbot: QtBot, store: QSettings,
) -> None:
    import keyring
    import keyring.backends.fail

    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        credentials = KeyringCredentials()
        page = EmailPreferencesPage(settings_store=store, credentials=credentials)
        qtbot.addWidget(page)
        page.hostEdit.setText("imap.example.com")
        page.userEdit.setText("ann")
        page.passwordEdit.setText("typed")
        assert page.save()
        assert "kept until you quit" in page.lastErrorLabel.text()
        account = load_email_settings(store).accounts[0].account
        assert credentials.credential(account).secret == "typed"
        assert "typed" not in Path(store.fileName()).read_text()
    finally:
        keyring.set_keyring(previous)


@pytest.mark.parametrize(("choice", "create", "scope"), [
    ("Senders only (From)", True, "senders"),
    ("Everyone on the message (From, To, Cc)", True, "everyone"),
    ("Nobody: only tie mail to existing contacts", False, "correspondents"),
])
def test_the_contact_policy_is_chosen_saved_and_applied(
    qtbot: QtBot, store: QSettings, memory_keyring: MemoryKeyring, choice: str,
    create: bool, scope: str,
) -> None:
    page = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    dialog = EmailPreferencesDialog(page)
    qtbot.addWidget(dialog)
    dialog.show()
    # The default does not flood the CRM: the people a message is between, at most 10.
    assert page.contactScopeCombo.currentData() == "correspondents"
    assert page.maxRecipientsSpin.value() == 10
    page.hostEdit.setText("imap.example.com")
    page.userEdit.setText("ann@example.com")
    page.contactScopeCombo.setCurrentIndex(page.contactScopeCombo.findText(choice))
    page.maxRecipientsSpin.setFocus()
    page.maxRecipientsSpin.selectAll()
    qtbot.keyClicks(page.maxRecipientsSpin, "25")
    save = dialog.saveButton()
    assert save is not None
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    saved = load_email_settings(QSettings(store.fileName(), QSettings.Format.IniFormat))
    assert (saved.options.create_contacts, saved.options.contact_scope,
            saved.options.max_recipients) == (create, scope, 25)
    policy = saved.sync_settings(saved.accounts[0]).policy()
    assert (policy.create_contacts, policy.contact_scope, policy.max_recipients) == (
        create, scope, 25)
    # The login address is the user's own: never a contact.
    assert "ann@example.com" in policy.own_addresses
    again = EmailPreferencesPage(settings_store=store, credentials=KeyringCredentials())
    qtbot.addWidget(again)
    assert again.contactScopeCombo.currentText() == choice
    assert again.maxRecipientsSpin.value() == 25
