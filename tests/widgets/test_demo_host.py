"""The demo host: from a fresh database to a sales order's mail in its Email tab."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import MailData
from tests.helpers.postgres import TestDatabases
from tests.helpers.qt import RunUntil, wait_until
from tests.helpers.xtuple import create_user
from xtmail.app.demo_host import DemoMainWindow, DocumentWindow
from xtmail.app.host import MailHost
from xtmail.app.sample_data import seed
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.mail import registry
from xtmail.sync.values import DocumentRow


def test_demo_opens_a_sales_order_and_shows_its_mail(
    conn: psycopg.Connection,
    db_dsn: str,
    qloop: qasync.QEventLoop,
    run_until: RunUntil,
    qtbot: QtBot,
    tmp_path: object,
) -> None:
    assert seed(conn) is True
    assert seed(conn) is False  # seeding twice adds nothing
    settings = QSettings(str(tmp_path) + "/settings.ini", QSettings.Format.IniFormat)
    settings.setValue("xtmail/email/own_addresses", ["sales@ourco.example"])
    host = MailHost(db_dsn, settings, parse_workers=0)
    qloop.run_until_complete(host.start())
    window = DemoMainWindow(host)
    qtbot.addWidget(window)
    # The host's status is in the status bar: synchronization is not ticked.
    assert "synchronization is off" in window.mailStatusLabel.text()
    window.show()
    window.selectDocumentType("S")
    run_until(lambda: window.recordCount() == 3, message="sales orders not listed")
    table = window.recordTable
    numbers = [table.item(r, 0).text() for r in range(table.rowCount())]  # type: ignore[union-attr]
    assert numbers == ["50123", "50124", "50125"]
    # Open 50123 the way a person does: double-click its row.
    rect = table.visualRect(table.model().index(0, 0))  # type: ignore[union-attr]
    viewport = table.viewport()
    assert viewport is not None

    async def double_click() -> None:
        # Inside the running loop, and waited for there: the click starts database work
        # (conftest.py), and qasync's run_until_complete runs queued callbacks once more
        # after its loop stopped, where psycopg finds no running loop.
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())
        await wait_until(lambda: len(window.documentWindows()) == 1, message="no window")
        tab = window.documentWindows()[0].emailTab
        await wait_until(lambda: tab.model().rowCount() == 3,
                         message="the sales order's mail is missing")

    qloop.run_until_complete(double_click())
    doc_window = window.documentWindows()[0]
    assert doc_window.windowTitle() == "Sales Order 50123"
    tab = doc_window.emailTab
    subjects = {tab.model().index(r, 4).data() for r in range(3)}
    assert subjects == {
        "Order for two difference engines [xtref:S-50123]",
        "Shipping address for [xtref:S-50123]",
        "RE: Delivery date",  # tied by rule 3: a reply without the reference
    }
    assert doc_window.contactLink.property("email") == "ada@analytical.example"
    # The host gave the tab its store and the user's own addresses.
    assert tab in host.tabs() and tab.ownAddresses == ["sales@ourco.example"]
    doc_window.close()
    window.close()
    qloop.run_until_complete(host.aclose())


def test_offscreen_noise_is_dropped_and_other_messages_pass(qtlog: Any) -> None:
    from PyQt6.QtCore import qInfo, qInstallMessageHandler, qWarning

    from xtmail.app.demo_host import quiet_offscreen_warnings

    previous = quiet_offscreen_warnings()
    try:
        qWarning(b"This plugin does not support propagateSizeHints()")
        qInfo(b"a message someone needs")
    finally:
        qInstallMessageHandler(previous)
    assert [r.message for r in qtlog.records] == ["a message someone needs"]


def test_the_demo_runs_as_an_ordinary_xtuple_user(
    db_dsn: str, databases: TestDatabases, tmp_path: Path
) -> None:
    """`xtmail demo --dsn` on an initialised database, as a user in xtrole (not the owner):
    it starts, shows its windows and quits by itself."""
    with databases.admin() as admin:
        create_user(admin, "demo_clerk")
    clerk = psycopg.conninfo.make_conninfo(db_dsn, user="demo_clerk")
    shot = tmp_path / "demo.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHON_KEYRING_BACKEND":
           "keyring.backends.null.Keyring"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from xtmail.app.cli import main; sys.exit(main())",
         "demo", "--dsn", clerk, "--sample-data",
         "--folder", str(tmp_path), "--open", "S:50123", "--screenshot", str(shot),
         "--quit-after", "2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # The main window and the sales order's window, with its Email tab.
    for name in ("demo-main.png", "demo-sales-order.png"):
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.parametrize("how", ["button", "ctrl+w", "esc"])
def test_a_document_window_closes_with_its_button_ctrl_w_and_esc(
    qtbot: QtBot, qloop: qasync.QEventLoop, db_dsn: str, mail_data: MailData, how: str
) -> None:
    order = mail_data.sales_order("50123")

    async def scenario() -> None:
        store = await MailStore.connect(db_dsn)
        try:
            window = DocumentWindow(store, registry.by_code("S"),
                                    DocumentRow(order, "50123", "", ""))
            window.show()
            window.activateWindow()
            await wait_until(window.isActiveWindow, message="the window never became active")
            await wait_until(lambda: not window.emailTab.isBusy(), message="still loading")
            if how == "button":
                qtbot.mouseClick(window.closeButton, Qt.MouseButton.LeftButton)
            elif how == "ctrl+w":
                qtbot.keyClick(window.emailTab, Qt.Key.Key_W,
                               Qt.KeyboardModifier.ControlModifier)
            else:
                qtbot.keyClick(window.emailTab, Qt.Key.Key_Escape)
            await wait_until(lambda: not window.isVisible(), message=f"{how} did not close it")
        finally:
            await store.close()

    qloop.run_until_complete(scenario())


def test_ctrl_comma_opens_the_preferences_and_menus_show_the_keys(
    db_dsn: str, qloop: qasync.QEventLoop, qtbot: QtBot, tmp_path: Path,
) -> None:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    host = MailHost(db_dsn, settings, parse_workers=0)
    qloop.run_until_complete(host.start())
    window = DemoMainWindow(host)
    qtbot.addWidget(window)

    async def press() -> None:
        window.show()
        window.activateWindow()
        await wait_until(window.isActiveWindow, message="the window never became active")
        qtbot.keyClick(window.recordTable, Qt.Key.Key_Comma,
                       Qt.KeyboardModifier.ControlModifier)
        await wait_until(lambda: (dialog := window.preferencesDialog()) is not None
                         and dialog.isVisible(), message="Ctrl+, opened no preferences")

    try:
        qloop.run_until_complete(press())
        # The menu entry names its key, as menus do.
        keys = window.preferencesAction.shortcut().toString()
        assert keys == "Ctrl+,"
    finally:
        dialog = window.preferencesDialog()
        if dialog is not None:
            dialog.reject()
        window.close()
        qloop.run_until_complete(host.aclose())
