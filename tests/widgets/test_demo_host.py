"""The demo host: from a fresh database to a sales order's mail in its Email tab."""

from __future__ import annotations

from typing import Any

import psycopg
import qasync
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from tests.helpers.qt import RunUntil
from xtmail.app.demo_host import DemoMainWindow
from xtmail.app.sample_data import seed
from xtmail.sync.db.mailstore import MailStore


def test_demo_opens_a_sales_order_and_shows_its_mail(
    conn: psycopg.Connection,
    mail_store: MailStore,
    qloop: qasync.QEventLoop,
    run_until: RunUntil,
    qtbot: QtBot,
    tmp_path: object,
) -> None:
    assert seed(conn) is True
    assert seed(conn) is False  # seeding twice adds nothing
    settings = QSettings(str(tmp_path) + "/settings.ini", QSettings.Format.IniFormat)
    window = DemoMainWindow(mail_store, settings)
    qtbot.addWidget(window)
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
        # Inside the running loop: the click starts database work on it (conftest.py).
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())

    qloop.run_until_complete(double_click())
    run_until(lambda: len(window.documentWindows()) == 1, message="no document window")
    doc_window = window.documentWindows()[0]
    assert doc_window.windowTitle() == "Sales Order 50123"
    tab = doc_window.emailTab
    run_until(lambda: tab.model().rowCount() == 3, message="the sales order's mail is missing")
    subjects = {tab.model().index(r, 4).data() for r in range(3)}
    assert subjects == {
        "Order for two difference engines [xtref:S-50123]",
        "Shipping address for [xtref:S-50123]",
        "RE: Delivery date",  # tied by rule 3: a reply without the reference
    }
    assert doc_window.contactLink.property("email") == "ada@analytical.example"
    doc_window.close()
    window.close()


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
