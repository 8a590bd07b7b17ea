"""The demo host: from a fresh database to a sales order's mail in its Email tab."""

from __future__ import annotations

from typing import Any

import psycopg
import qasync
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from tests.helpers.qt import RunUntil, wait_until
from xtmail.app.demo_host import DemoMainWindow
from xtmail.app.host import MailHost
from xtmail.app.sample_data import seed


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
