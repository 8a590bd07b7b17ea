"""The Email tab tells the truth and acts on what is selected: undated mail, empty
subjects, stable sorts, the total, contacts' mail explained, Print and Detach on the
selection, a banner that moves nothing, the keyboard. Real database (both kinds of xTuple
database), offscreen, clicked as a user clicks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import qasync
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtPrintSupport import QPrintDialog, QPrinter
from PyQt6.QtWidgets import QApplication, QLabel, QMessageBox, QToolButton, QWidget
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import MailData, message_with_parts
from tests.helpers.qt import RunUntil
from xtmail.sync.db.mailstore import MailStore
from xtmail.widgets.email_tab import ACTIONS, EmailTab
from xtmail.widgets.message_model import DATE, FROM, NO_SUBJECT, SUBJECT, UNDATED_MARK

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Both kinds of xTuple database, as the owner and as an ordinary user."""
    return xtuple_dsn


@pytest.fixture
def tab(email_tab: EmailTab) -> EmailTab:
    return email_tab


def day(n: int, hour: int = 10) -> str:
    return f"Mon, {n:02d} Mar 2026 {hour:02d}:00:00 +0000"


def show(tab: EmailTab, run_until: RunUntil, so: int, rows: int) -> None:
    tab.setDocument("S", so)
    run_until(lambda: not tab.isBusy() and tab.model().rowCount() == rows,
              message=f"the tab did not show {rows} rows")


def click_row(qtbot: QtBot, tab: EmailTab, row: int,
              modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    view = tab.view()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, modifier,
                     view.visualRect(tab.model().index(row, SUBJECT)).center())


def click_header(qtbot: QtBot, tab: EmailTab, column: int) -> None:
    header = tab.view().horizontalHeader()
    assert header is not None
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(x, header.height() // 2))


def tool_button(tab: EmailTab, name: str) -> QToolButton:
    button = tab.toolBar().widgetForAction(tab.action(name))
    assert isinstance(button, QToolButton)
    return button


def status(tab: EmailTab) -> str:
    label = tab.findChild(QLabel, "statusLabel")
    assert label is not None
    return label.text()


def visible(parent: QWidget, kind: type, name: str) -> object:
    found = parent.findChild(kind, name)
    return found if found is not None and found.isVisible() else None


def test_undated_mail_is_marked_and_listed_by_when_it_arrived(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    dated = mail_data.message(ties=[("S", so)], subject="", date=day(2))
    (undated,) = mail_data.import_raw([(DATA / "no-date.eml").read_bytes()], ties=[("S", so)])
    show(tab, run_until, so, 2)
    model = tab.model()
    # Received (imported) just now, after the dated message was written: listed first.
    assert [model.emlId(r) for r in range(2)] == [undated, dated]
    cell = model.index(0, DATE)
    assert cell.data().startswith(UNDATED_MARK)
    assert "no usable date" in cell.data(Qt.ItemDataRole.ToolTipRole)
    assert not model.index(1, DATE).data().startswith(UNDATED_MARK)
    assert model.index(1, SUBJECT).data() == NO_SUBJECT
    click_row(qtbot, tab, 0)
    run_until(lambda: "Date:" in tab.preview().toPlainText())
    assert "\nDate: none given; received " in tab.preview().toPlainText()
    click_row(qtbot, tab, 1)
    run_until(lambda: f"Subject: {NO_SUBJECT}" in tab.preview().toPlainText())


def test_sorting_by_a_column_keeps_each_senders_mail_newest_first(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    # The order the issue saw: 11-02, 11-06, 11-05 for one sender.
    ada = "Ada <ada@example.com>"
    ids = {
        d: mail_data.message(ties=[("S", so)], sender=ada if d != 4 else "Bob <b@example.com>",
                             subject=f"day {d}", date=day(d))
        for d in (2, 6, 5, 4)
    }
    show(tab, run_until, so, 4)
    model = tab.model()
    click_header(qtbot, tab, FROM)
    run_until(lambda: model.sortColumn() == FROM)
    first = [model.index(r, SUBJECT).data() for r in range(4)]
    click_header(qtbot, tab, FROM)
    run_until(lambda: [model.index(r, SUBJECT).data() for r in range(4)] != first)
    second = [model.index(r, SUBJECT).data() for r in range(4)]
    # Whichever way the senders are sorted, one sender's mail stays newest first.
    by_order = {model.sortOrder(): second}
    by_order[Qt.SortOrder.AscendingOrder if Qt.SortOrder.DescendingOrder in by_order
             else Qt.SortOrder.DescendingOrder] = first
    assert by_order[Qt.SortOrder.AscendingOrder] == ["day 6", "day 5", "day 2", "day 4"]
    assert by_order[Qt.SortOrder.DescendingOrder] == ["day 4", "day 6", "day 5", "day 2"]
    assert set(ids.values()) == {model.emlId(r) for r in range(4)}


def test_the_footer_counts_all_the_documents_mail(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    for n in range(1, 6):
        mail_data.message(ties=[("S", so)], subject=f"n{n}", date=day(n))
    tab.setPageSize(2)
    show(tab, run_until, so, 2)
    run_until(lambda: status(tab) == "2 of 5 messages", message=status(tab))
    qtbot.mouseClick(tab.showMoreButton(), Qt.MouseButton.LeftButton)
    run_until(lambda: status(tab) == "4 of 5 messages", message=status(tab))
    qtbot.mouseClick(tab.showMoreButton(), Qt.MouseButton.LeftButton)
    run_until(lambda: status(tab) == "5 messages", message=status(tab))
    assert not tab.showMoreButton().isVisible()


def test_print_prints_every_selected_message(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData, tmp_path: Path,
) -> None:
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.fail("pdftotext is missing: apt-get install poppler-utils")
    so = mail_data.sales_order("50123")
    for n in (1, 2, 3):
        mail_data.message(ties=[("S", so)], subject=f"Message {n}", body=f"Body {n}.",
                          date=day(n))
    pdf = tmp_path / "three.pdf"
    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
    printer.setOutputFileName(str(pdf))
    tab.setPrinter(printer)
    show(tab, run_until, so, 3)
    click_row(qtbot, tab, 0)
    click_row(qtbot, tab, 2, Qt.KeyboardModifier.ShiftModifier)
    run_until(lambda: not tab.isBusy())
    qtbot.mouseClick(tool_button(tab, "print"), Qt.MouseButton.LeftButton)
    run_until(lambda: visible(tab, QPrintDialog, "printDialog"))
    dialog = tab.findChild(QPrintDialog, "printDialog")
    assert dialog is not None and dialog.windowTitle() == "Print 3 Messages"
    printed: list[int] = []
    tab.messagePrinted.connect(printed.append)
    dialog.accept()
    run_until(lambda: len(printed) == 3 and not tab.isBusy())
    pages = subprocess.run([pdftotext, str(pdf), "-"], check=True, capture_output=True,
                           text=True).stdout.split("\f")
    # One message a page, in list order (newest first).
    assert [p.split("Subject: ")[1].split("\n")[0] for p in pages if "Subject: " in p] == [
        "Message 3", "Message 2", "Message 1"]


def test_after_detach_the_preview_forgets_the_message(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    mail_data.message(ties=[("S", so)], subject="Stays", date=day(1))
    (gone,) = mail_data.import_raw(
        [message_with_parts([("a.pdf", "application/pdf", b"%PDF")], subject="Goes",
                            date=day(2))], ties=[("S", so)])
    show(tab, run_until, so, 2)
    click_row(qtbot, tab, tab.model().rowOf(gone))
    run_until(lambda: "Goes" in tab.preview().toPlainText() and not tab.isBusy())
    assert tab.attachmentList().isVisible()
    qtbot.mouseClick(tool_button(tab, "detach"), Qt.MouseButton.LeftButton)
    run_until(lambda: visible(tab, QMessageBox, "detachConfirmation"))
    box = tab.findChild(QMessageBox, "detachConfirmation")
    assert box is not None
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    run_until(lambda: tab.model().rowCount() == 1 and not tab.isBusy())
    assert tab.preview().toPlainText() == ""
    assert not tab.attachmentList().isVisible()
    assert not tab.action("reply").isEnabled()


def test_the_error_banner_moves_nothing_under_the_mouse(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
    mail_store: MailStore, qloop: qasync.QEventLoop,
) -> None:
    so = mail_data.sales_order("50123")
    for n in (1, 2, 3):
        mail_data.message(ties=[("S", so)], subject=f"Message {n}", date=day(n))
    show(tab, run_until, so, 3)
    view = tab.view()
    second = view.visualRect(tab.model().index(1, SUBJECT))
    where = view.viewport().mapTo(tab, second.center())  # type: ignore[union-attr]
    buttons = {n: tool_button(tab, n).mapTo(tab, QPoint(0, 0)) for n in ("reply", "refresh")}
    qloop.run_until_complete(mail_store.close())
    qtbot.mouseClick(tool_button(tab, "refresh"), Qt.MouseButton.LeftButton)
    run_until(lambda: tab.errorText() != "" and not tab.isBusy())
    QApplication.processEvents()
    assert view.viewport().mapTo(tab, second.center()) == where  # type: ignore[union-attr]
    assert tab.childAt(where) is view.viewport()  # the row is still what a click hits
    assert {n: tool_button(tab, n).mapTo(tab, QPoint(0, 0)) for n in buttons} == buttons
    dismiss = next(b for b in tab.findChildren(QToolButton) if b.text() == "Dismiss")
    assert dismiss.isVisible()
    qtbot.mouseClick(dismiss, Qt.MouseButton.LeftButton)
    assert tab.errorText() == ""


def test_tab_goes_from_the_list_to_the_preview_then_the_toolbar(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    for n in (1, 2):
        mail_data.message(ties=[("S", so)], subject=f"Message {n}", date=day(n))
    show(tab, run_until, so, 2)
    tab.activateWindow()
    click_row(qtbot, tab, 0)
    run_until(lambda: tab.view().hasFocus() and not tab.isBusy())
    qtbot.keyClick(tab.view(), Qt.Key.Key_Tab)
    run_until(lambda: QApplication.focusWidget() is not tab.view(), message="Tab stayed")
    assert QApplication.focusWidget() is tab.preview()
    qtbot.keyClick(tab.preview(), Qt.Key.Key_Tab)  # the view's switch
    formatted = tab.findChild(QToolButton, "formattedViewButton")
    run_until(lambda: QApplication.focusWidget() is formatted,
              message=f"focus went to {QApplication.focusWidget()}")
    qtbot.keyClick(formatted, Qt.Key.Key_Tab)  # no attachments: on to the toolbar
    run_until(lambda: QApplication.focusWidget() is tool_button(tab, "new"),
              message=f"focus went to {QApplication.focusWidget()}")


def test_every_action_has_a_mnemonic_of_its_own() -> None:
    letters = []
    for _name, text, _keys, _tip in ACTIONS:
        assert "&" in text, text
        letters.append(text[text.index("&") + 1].lower())
    assert len(letters) == len(set(letters)), letters


def test_tooltips_show_the_shortcuts(tab: EmailTab) -> None:
    assert tab.action("detach").toolTip().endswith("(Del)")
    assert tab.action("print").toolTip() == "Print the selected messages (Ctrl+P)"
    assert tool_button(tab, "detach").text().replace("&", "") == "Detach"


def test_alt_and_the_underlined_letter_press_a_toolbar_button(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    mail_data.message(ties=[("S", so)], subject="Only one", date=day(1))
    show(tab, run_until, so, 1)
    tab.activateWindow()
    click_row(qtbot, tab, 0)
    run_until(lambda: tab.view().hasFocus() and not tab.isBusy())
    assert tool_button(tab, "detach").text() == "&Detach"
    qtbot.keyClick(tab.view(), Qt.Key.Key_D, Qt.KeyboardModifier.AltModifier)
    run_until(lambda: visible(tab, QMessageBox, "detachConfirmation"),
              message="Alt+D did not press Detach")
    box = tab.findChild(QMessageBox, "detachConfirmation")
    assert box is not None
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    run_until(lambda: not tab.isBusy())
