"""MailHost: a host application's one object for mail, against real Dovecot and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
import qasync
from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtWidgets import QApplication, QInputDialog, QLineEdit
from pytestqt.qtbot import QtBot

from tests.helpers.dovecot import DovecotServer, ImapAccount
from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData
from tests.helpers.qt import MemoryKeyring, RunUntil
from xtmail.app import host as host_module
from xtmail.app.host import MailHost, make_event_loop
from xtmail.sync.imap.account import Backoff
from xtmail.sync.imap.credentials import KeyringCredentials
from xtmail.sync.imap.settings import (
    AccountSettings,
    EmailSettings,
    MailAccount,
    SyncSettings,
    load_email_settings,
    save_email_settings,
)
from xtmail.widgets.email_tab import EmailTab


@pytest.fixture
def ini(tmp_path: Path) -> str:
    return str(tmp_path / "erp-client.ini")


@pytest.fixture
def no_keyring() -> Iterator[None]:
    """What a server or a bare Linux desktop has: keyring's fail backend."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


def account_of(server: DovecotServer, user: ImapAccount, **changes: object) -> AccountSettings:
    return AccountSettings(host=server.host, user=user.user, port=server.imaps_port,
                           ca_file=str(server.ca_file), timeout=10.0, **changes)  # type: ignore[arg-type]


def ticked(ini: str, *accounts: MailAccount, own: tuple[str, ...] = ()) -> QSettings:
    store = QSettings(ini, QSettings.Format.IniFormat)
    save_email_settings(store, EmailSettings(
        accounts=accounts,
        options=SyncSettings(sync_while_running=True, poll_interval=60.0, own_addresses=own)))
    return store


def make_host(ini: str, dsn: str, **kwargs: object) -> MailHost:
    # A new settings object on the same file: what a restarted application reads.
    return MailHost(dsn, QSettings(ini, QSettings.Format.IniFormat), parse_workers=1,
                    backoff=Backoff(initial=0.05, cap=0.5), **kwargs)  # type: ignore[arg-type]


def tab_on(loop: qasync.QEventLoop, code: str, doc_id: int) -> EmailTab:
    """An Email tab on a document, opened as a document window opens one."""

    async def open_tab() -> EmailTab:
        # Inside the running loop: showing a window may run queued loop callbacks
        # (conftest.py on qtbot.wait*).
        tab = EmailTab()
        tab.setDocument(code, doc_id)
        tab.show()
        return tab

    return loop.run_until_complete(open_tab())  # type: ignore[no-any-return]


def subjects(tab: EmailTab) -> set[str]:
    model = tab.model()
    return {model.index(r, 4).data() for r in range(model.rowCount())}


def test_with_the_box_ticked_mail_arrives_in_an_open_tab_by_itself(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str,
    memory_keyring: MemoryKeyring, dovecot: DovecotServer, imap_user: ImapAccount,
    db_dsn: str, mail_data: MailData,
) -> None:
    order = mail_data.sales_order("50777")
    dovecot.append(imap_user.user, imap_user.password, "INBOX", make_message(
        subject="Order confirmation [xtref:S-50777]", to=f"Me <{imap_user.user}@ourco.example>"))
    account = account_of(dovecot, imap_user, )
    KeyringCredentials().set_password(account, imap_user.password)
    ticked(ini, MailAccount(account), own=("sales@ourco.example",))

    host = make_host(ini, db_dsn)
    statuses: list[str] = []
    host.statusChanged.connect(statuses.append)
    qloop.run_until_complete(host.start())
    # A document window opens its Email tab; nobody hands it to the host.
    tab = tab_on(qloop, "S", order)
    qtbot.addWidget(tab)
    try:
        run_until(lambda: "Order confirmation [xtref:S-50777]" in subjects(tab), timeout=20,
                  message=f"the mail never reached the tab; status: {statuses}")
        assert tab.store() is host.store()
        assert tab.ownAddresses == ["sales@ourco.example"]  # the login is not an address
        assert host.isRunning()
        # New mail while running arrives too (appended once the sync waits for it).
        qloop.run_until_complete(asyncio.to_thread(dovecot.wait_for_idle, imap_user.user))
        dovecot.append(imap_user.user, imap_user.password, "INBOX",
                       make_message(subject="Second note [xtref:S-50777]"))
        run_until(lambda: "Second note [xtref:S-50777]" in subjects(tab), timeout=20,
                  message="new mail did not reach the tab")
        assert any(s.startswith("Email: Up to date") for s in statuses)
        assert host.statusText().startswith("Email: ")
        # A tab opened once all is imported is found too, and shows the mail.
        later = tab_on(qloop, "S", order)
        qtbot.addWidget(later)
        run_until(lambda: len(subjects(later)) == 2, message="a later tab stayed empty")
    finally:
        qloop.run_until_complete(host.aclose())
    assert not host.isRunning()
    assert host.statusText() == "Email: stopped"


@pytest.mark.parametrize("freeze", [True, False])
def test_the_first_sync_moves_what_the_application_holds_out_of_the_collectors_reach(
    qloop: qasync.QEventLoop, run_until: RunUntil, ini: str, memory_keyring: MemoryKeyring,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, freeze: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = account_of(dovecot, imap_user)
    KeyringCredentials().set_password(account, imap_user.password)
    ticked(ini, MailAccount(account))
    # As in a fresh process: nothing frozen yet.
    gc.unfreeze()
    monkeypatch.setattr(host_module, "_frozen", False)
    held = [object()]  # something the application holds before its sync starts
    host = make_host(ini, db_dsn, freeze_gc=freeze, sync_process=False)  # threads freeze
    try:
        assert gc.get_freeze_count() == 0
        qloop.run_until_complete(host.start())
        run_until(host.isRunning, message="the sync did not start")
        # Frozen objects are no longer among those the collector walks.
        walked = any(o is held for o in gc.get_objects())
        if freeze:
            assert gc.get_freeze_count() > 0 and not walked
        else:
            assert gc.get_freeze_count() == 0 and walked
    finally:
        qloop.run_until_complete(host.aclose())
        gc.unfreeze()


def test_saved_in_preferences_the_sync_starts_with_the_next_host(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str,
    memory_keyring: MemoryKeyring, dovecot: DovecotServer, imap_user: ImapAccount,
    db_dsn: str, mail_data: MailData,
) -> None:
    order = mail_data.sales_order("50778")
    dovecot.append(imap_user.user, imap_user.password, "INBOX",
                   make_message(subject="About [xtref:S-50778]"))
    first = make_host(ini, db_dsn)
    qloop.run_until_complete(first.start())
    assert not first.isRunning()
    assert "synchronization is off" in first.statusText()
    dialog = first.preferencesDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    page = dialog.page
    page.hostEdit.setText(dovecot.host)
    page.portSpin.setValue(dovecot.imaps_port)
    page.userEdit.setText(f"{imap_user.user}")
    page.passwordEdit.setText(imap_user.password)
    page.caFileEdit.setText(str(dovecot.ca_file))
    page.ownAddressesEdit.setPlainText("me@ourco.example")
    page.syncWhileRunningCheck.setChecked(True)
    tab = tab_on(qloop, "S", order)
    qtbot.addWidget(tab)
    first.registerTab(tab)
    save = dialog.saveButton()
    assert save is not None

    async def click_save() -> None:
        qtbot.mouseClick(save, Qt.MouseButton.LeftButton)

    qloop.run_until_complete(click_save())
    assert not dialog.isVisible(), page.lastErrorLabel.text()
    # Saved: the own addresses reach the open tab at once, and the sync starts.
    assert tab.ownAddresses == ["me@ourco.example"]
    run_until(lambda: "About [xtref:S-50778]" in subjects(tab), timeout=20,
              message=f"no sync after Save: {first.statusText()}")
    qloop.run_until_complete(first.aclose())

    # The application restarts: a new host on the same settings file syncs by itself.
    dovecot.append(imap_user.user, imap_user.password, "INBOX",
                   make_message(subject="After the restart [xtref:S-50778]"))
    second = make_host(ini, db_dsn)
    qloop.run_until_complete(second.start())
    try:
        again = tab_on(qloop, "S", order)
        qtbot.addWidget(again)
        run_until(lambda: "After the restart [xtref:S-50778]" in subjects(again), timeout=20,
                  message=f"no sync after the restart: {second.statusText()}")
        assert second.isRunning()
    finally:
        qloop.run_until_complete(second.aclose())
    saved = load_email_settings(QSettings(ini, QSettings.Format.IniFormat))
    assert saved.sync_while_running and saved.accounts[0].folders == ("INBOX",)


def password_dialog() -> QInputDialog | None:
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QInputDialog) and widget.isVisible():
            return widget
    return None


def test_without_a_keyring_the_password_is_asked_once_and_sync_runs(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str, no_keyring: None,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, mail_data: MailData,
) -> None:
    order = mail_data.sales_order("50779")
    dovecot.append(imap_user.user, imap_user.password, "INBOX",
                   make_message(subject="Keyless [xtref:S-50779]"))
    ticked(ini, MailAccount(account_of(dovecot, imap_user)))
    host = make_host(ini, db_dsn)
    qloop.run_until_complete(host.start())
    try:
        run_until(lambda: password_dialog() is not None, message="no password dialog")
        dialog = password_dialog()
        assert dialog is not None
        assert f"{imap_user.user} on {dovecot.host}" in dialog.labelText()
        edit = dialog.findChild(QLineEdit)
        assert edit is not None and edit.echoMode() == QLineEdit.EchoMode.Password
        qtbot.keyClicks(edit, imap_user.password)
        qtbot.keyClick(edit, Qt.Key.Key_Return)
        tab = tab_on(qloop, "S", order)
        qtbot.addWidget(tab)
        run_until(lambda: "Keyless [xtref:S-50779]" in subjects(tab), timeout=20,
                  message=f"no sync with the password given: {host.statusText()}")
        # Kept for the session: a restart of the sync does not ask again.
        qloop.run_until_complete(host.service().aclose())  # type: ignore[union-attr]
        assert qloop.run_until_complete(host.startSync())
        assert password_dialog() is None
        assert not Path(ini).read_text().count(imap_user.password)
    finally:
        qloop.run_until_complete(host.aclose())


def test_cancelling_the_password_leaves_the_sync_off_and_says_so(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str, no_keyring: None,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
) -> None:
    account = account_of(dovecot, imap_user)
    ticked(ini, MailAccount(account))
    host = make_host(ini, db_dsn)
    errors: list[tuple[str, str]] = []
    host.errorOccurred.connect(lambda kind, text: errors.append((kind, text)))
    qloop.run_until_complete(host.start())
    try:
        run_until(lambda: password_dialog() is not None, message="no password dialog")
        dialog = password_dialog()
        assert dialog is not None
        dialog.reject()
        run_until(lambda: "no password was given" in host.statusText())
        assert host.statusText() == (
            f"Email: Not synchronizing {account.key}: no password was given. Start it from "
            "User Preferences, Email.")
        assert errors == [("config", host.statusText().removeprefix("Email: "))]
        assert not host.isRunning()
    finally:
        qloop.run_until_complete(host.aclose())


def test_a_password_command_needs_no_question(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str, no_keyring: None,
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, mail_data: MailData,
    tmp_path: Path,
) -> None:
    order = mail_data.sales_order("50780")
    dovecot.append(imap_user.user, imap_user.password, "INBOX",
                   make_message(subject="By command [xtref:S-50780]"))
    helper = tmp_path / "imap-password"
    helper.write_text(f"#!/bin/sh\nprintf '%s\\n' '{imap_user.password}'\n")
    helper.chmod(0o700)
    ticked(ini, MailAccount(account_of(dovecot, imap_user, password_command=str(helper))))

    async def never_asked(*_: object) -> str | None:
        raise AssertionError("the password was asked although a command gives it")

    host = make_host(ini, db_dsn, password_prompt=never_asked)
    qloop.run_until_complete(host.start())
    try:
        tab = tab_on(qloop, "S", order)
        qtbot.addWidget(tab)
        run_until(lambda: "By command [xtref:S-50780]" in subjects(tab), timeout=20,
                  message=f"no sync with a password command: {host.statusText()}")
    finally:
        qloop.run_until_complete(host.aclose())


def test_two_accounts_sync_into_the_same_tab_and_both_logins_are_own_addresses(
    qtbot: QtBot, qloop: qasync.QEventLoop, run_until: RunUntil, ini: str,
    memory_keyring: MemoryKeyring, dovecot: DovecotServer, imap_user: ImapAccount,
    db_dsn: str, mail_data: MailData,
) -> None:
    second = ImapAccount(f"{imap_user.user}@two.example", "second-password")
    dovecot.add_user(second.user, second.password)
    order = mail_data.sales_order("50781")
    dovecot.append(imap_user.user, imap_user.password, "INBOX",
                   make_message(subject="From one [xtref:S-50781]"))
    dovecot.seed_maildir(second.user, "Orders", [make_message(subject="From two [xtref:S-50781]")])
    first_account, second_account = account_of(dovecot, imap_user), account_of(dovecot, second)
    KeyringCredentials().set_password(first_account, imap_user.password)
    KeyringCredentials().set_password(second_account, second.password)
    ticked(ini, MailAccount(first_account), MailAccount(second_account, folders=("Orders",)))
    host = make_host(ini, db_dsn)
    qloop.run_until_complete(host.start())
    try:
        tab = tab_on(qloop, "S", order)
        qtbot.addWidget(tab)
        run_until(lambda: {"From one [xtref:S-50781]", "From two [xtref:S-50781]"}
                  <= subjects(tab), timeout=20, message=host.statusText())
        assert tab.ownAddresses == [second.user]
        assert sorted(host.service().runningAccounts()) == sorted(  # type: ignore[union-attr]
            [first_account.key, second_account.key])
    finally:
        qloop.run_until_complete(host.aclose())


def test_windows_gets_a_selector_loop_for_psycopg(
    qapp: QApplication, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On Windows qasync's QEventLoop is a proactor loop (qasync picks it by os.name when
    # imported); stand one in for it, and say we are on Windows.
    class ProactorStandIn(qasync.QSelectorEventLoop):  # type: ignore[misc,name-defined]
        pass

    monkeypatch.setattr(qasync, "QEventLoop", ProactorStandIn)
    monkeypatch.setattr(sys, "platform", "win32")
    loop = make_event_loop(qapp)
    try:
        assert type(loop) is qasync.QSelectorEventLoop
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()
    monkeypatch.setattr(sys, "platform", "linux")
    loop = make_event_loop(qapp)
    try:
        assert type(loop) is ProactorStandIn  # elsewhere: qasync's own default
    finally:
        loop.close()


def test_the_designer_plugins_need_no_posix_user_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from xtmail.designer_plugins import _support

    posix = _support.link_folder()
    assert posix.name == f"xtmail-designer-{os.getuid()}"
    # Windows: no os.getuid; the login name names the folder.
    monkeypatch.delattr(os, "getuid")
    monkeypatch.setenv("USERNAME", "Ada Lovelace")
    for name in ("LOGNAME", "USER", "LNAME"):
        monkeypatch.delenv(name, raising=False)
    assert _support.link_folder().name == "xtmail-designer-AdaLovelace"
