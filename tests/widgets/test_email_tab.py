"""The Email tab against a real PostgreSQL database, offscreen, on a qasync loop."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtGui import QFont
from PyQt6.QtPrintSupport import QPrintDialog, QPrinter
from PyQt6.QtWidgets import (
    QDialog,
    QLabel,
    QMessageBox,
    QToolButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData, RecordingDesktop
from tests.helpers.qt import RunUntil
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.errors import DatabaseUnavailable
from xtmail.sync.values import MessageRow
from xtmail.widgets.desktop import PrivateFiles
from xtmail.widgets.email_tab import EmailTab
from xtmail.widgets.message_model import VIA_CONTACT_TOOLTIP, ViaContactRole
from xtmail.widgets.tasks import UNEXPECTED_TEXT

REPO = Path(__file__).resolve().parents[2]

# Qt's offscreen platform warns about what it cannot do (size hints of top-level windows,
# raising a popup, grabbing the keyboard); that is the test platform, not the widget.
pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

JANE = "Jane Doe <jane@customer.example>"
OWN = "sales@ourco.example"


@dataclass
class Order:
    so: int
    jane: int
    bob: int
    delivery: int  # from Jane, Cc Bob, 10:00
    answer: int  # our answer, 11:00
    invoice: int  # from Jane with a Reply-To, 12:00


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Every test here runs on both kinds of xTuple database: (b) as its owner, (a) with
    Connect's tables as an ordinary user in xtrole (conftest.XTUPLE_KINDS)."""
    return xtuple_dsn


@pytest.fixture
def order(mail_data: MailData) -> Order:
    jane = mail_data.contact("jane@customer.example", "Jane", "Doe")
    bob = mail_data.contact("bob@customer.example", "Bob", "Roe")
    so = mail_data.sales_order("50123", billto=jane, shipto=bob)
    delivery = mail_data.message(
        sender=JANE, to=f"Sales <{OWN}>", cc="Bob <bob@customer.example>",
        subject="Delivery date [xtref:S-50123]", body="When will it ship?",
        date="Mon, 02 Mar 2026 10:00:00 +0000",
    )
    answer = mail_data.message(
        sender=f"Sales <{OWN}>", to=JANE, subject="RE: Delivery date [xtref:S-50123]",
        body="Tomorrow.", date="Mon, 02 Mar 2026 11:00:00 +0000",
    )
    invoice = mail_data.message(
        sender=JANE, to=f"Sales <{OWN}>", subject="Invoice question [xtref:S-50123]",
        body="Which invoice?", extra="Reply-To: orders@customer.example",
        date="Mon, 02 Mar 2026 12:00:00 +0000",
    )
    return Order(so, jane, bob, delivery, answer, invoice)


@pytest.fixture
def bare_tab(bare_email_tab: EmailTab) -> EmailTab:
    """A shown tab without a store, its user's own address known."""
    bare_email_tab.setOwnAddresses([OWN])
    return bare_email_tab


@pytest.fixture
def tab(bare_tab: EmailTab, mail_store: MailStore) -> EmailTab:
    """A shown tab on the test's database."""
    bare_tab.setStore(mail_store)
    return bare_tab


def show(tab: EmailTab, run_until: RunUntil, code: str, doc_id: int, rows: int) -> None:
    tab.setDocument(code, doc_id)
    run_until(lambda: not tab.isBusy() and tab.model().rowCount() == rows,
              message=f"the tab did not show {rows} rows")


def idle(tab: EmailTab, run_until: RunUntil) -> None:
    run_until(lambda: not tab.isBusy(), message="the tab stayed busy")


def select(qtbot: QtBot, tab: EmailTab, run_until: RunUntil, eml_id: int) -> None:
    """Click the row of ``eml_id`` once and wait for its preview."""
    view = tab.view()
    index = tab.model().index(tab.model().rowOf(eml_id), 0)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.visualRect(index).center())
    run_until(lambda: tab.preview().toPlainText() != "" and not tab.isBusy(),
              message="no preview appeared")


def tool_button(tab: EmailTab, name: str) -> QToolButton:
    button = tab.toolBar().widgetForAction(tab.action(name))
    assert isinstance(button, QToolButton)
    return button


def click(qtbot: QtBot, tab: EmailTab, name: str) -> None:
    button = tool_button(tab, name)
    assert button.isEnabled(), f"{name} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def visible_child(tab: QWidget, kind: type, name: str) -> object:
    found = tab.findChild(kind, name)
    return found if found is not None and found.isVisible() else None


# -- the list and the preview ----------------------------------------------------------------------


def test_lists_newest_first_and_one_click_shows_the_text(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil
) -> None:
    show(tab, run_until, "S", order.so, 3)
    model = tab.model()
    assert [model.emlId(r) for r in range(3)] == [order.invoice, order.answer, order.delivery]
    assert [model.index(2, c).data() for c in range(1, 5)] == [
        "Jane Doe", "Sales", "Bob", "Delivery date [xtref:S-50123]",
    ]
    assert model.index(2, 0).data() != ""
    assert not tab.isEmptyStateShown()
    assert tab.errorText() == ""

    with qtbot.waitSignal(tab.messageSelected, timeout=0) as selected:
        select(qtbot, tab, run_until, order.delivery)
    assert selected.args == [order.delivery]
    text = tab.preview().toPlainText()
    assert text.startswith("From: Jane Doe <jane@customer.example>\nTo: Sales <sales@ourco")
    assert "Cc: Bob <bob@customer.example>\n" in text
    assert "Subject: Delivery date [xtref:S-50123]\n\nWhen will it ship?" in text
    assert tab.preview().isReadOnly()


def test_the_preview_says_when_a_message_was_read_with_repairs(
    qtbot: QtBot, tab: EmailTab, order: Order, mail_data: MailData, run_until: RunUntil
) -> None:
    damaged = b"\xef\xbb\xbf" + make_message(  # a byte-order mark before the first header
        sender=JANE, subject="Damaged [xtref:S-50123]", body="Still readable.",
        date="Mon, 02 Mar 2026 13:00:00 +0000",
    )
    (eml_id,) = mail_data.import_raw([damaged])
    show(tab, run_until, "S", order.so, 4)
    select(qtbot, tab, run_until, eml_id)
    text = tab.preview().toPlainText()
    assert "Subject: Damaged [xtref:S-50123]\nDamaged: read with repairs: " in text
    assert "byte order mark" in text.split("\n\n", 1)[0].lower()
    assert text.endswith("Still readable.\n") or text.endswith("Still readable.")
    select(qtbot, tab, run_until, order.delivery)
    assert "Damaged:" not in tab.preview().toPlainText()


def test_toolbar_menu_and_shortcuts(bare_tab: EmailTab, run_until: RunUntil) -> None:
    tab = bare_tab
    names = [a.objectName() for a in tab.toolBar().actions()]
    assert names == ["newAction", "printAction", "replyAction", "replyAllAction",
                     "forwardAction", "attachAction", "detachAction", "refreshAction"]
    shortcuts = {name: tab.action(name).shortcut().toString()
                 for name in ("new", "print", "reply", "replyAll", "forward", "attach",
                              "detach", "refresh", "open")}
    assert shortcuts == {
        "new": "Ctrl+N", "print": "Ctrl+P", "reply": "Ctrl+R", "replyAll": "Ctrl+Shift+R",
        "forward": "Ctrl+L", "attach": "Ctrl+Shift+A", "detach": "Del", "refresh": "F5",
        "open": "Return",
    }
    menu = [a.objectName() for a in tab.contextMenu().actions() if not a.isSeparator()]
    assert set(menu) == {f"{n}Action" for n in shortcuts}
    # The context menu pops up without a nested event loop (no QMenu.exec()).
    tab.view().customContextMenuRequested.emit(QPoint(10, 10))
    run_until(lambda: tab.contextMenu().isVisible())
    tab.contextMenu().close()


# -- compose ---------------------------------------------------------------------------------------


def test_new_writes_to_the_document_contacts_with_the_reference(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    with qtbot.waitSignal(tab.composeRequested, timeout=0) as composed:
        click(qtbot, tab, "new")
        run_until(lambda: recording_desktop.urls)
    expected = "mailto:jane@customer.example,bob@customer.example?subject=%5Bxtref%3AS-50123%5D"
    assert recording_desktop.strings == [expected]
    assert composed.args == [expected]

    # A desktop without a mail program: said in the tab, in words a user can act on.
    recording_desktop.accept = False
    with qtbot.waitSignal(tab.errorOccurred, timeout=0):
        click(qtbot, tab, "new")
        run_until(lambda: tab.errorText() != "")
    assert tab.errorText().startswith("No mail program is set up to write mail.\n")


REPLY = (
    "mailto:jane@customer.example?subject=RE%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D"
    "&body=%0D%0AOn%202026-03-02%2010%3A00%20%2B0000%2C%20Jane%20Doe%20wrote%3A%0D%0A"
    "%3E%20When%20will%20it%20ship%3F"
)
REPLY_ALL = (
    "mailto:jane@customer.example?subject=RE%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D"
    "&cc=bob@customer.example"
    "&body=%0D%0AOn%202026-03-02%2010%3A00%20%2B0000%2C%20Jane%20Doe%20wrote%3A%0D%0A"
    "%3E%20When%20will%20it%20ship%3F"
)
FORWARD = (
    "mailto:?subject=FW%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D"
    "&body=%0D%0A----------%20Forwarded%20message%20----------%0D%0A"
    "From%3A%20Jane%20Doe%20%3Cjane%40customer.example%3E%0D%0A"
    "Date%3A%202026-03-02%2010%3A00%20%2B0000%0D%0A"
    "Subject%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D%0D%0A"
    "To%3A%20Sales%20%3Csales%40ourco.example%3E%0D%0A"
    "Cc%3A%20Bob%20%3Cbob%40customer.example%3E%0D%0A%0D%0AWhen%20will%20it%20ship%3F"
)


def test_reply_reply_all_and_forward_hand_exact_urls_to_the_desktop(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.delivery)
    for n, name in enumerate(("reply", "replyAll", "forward"), start=1):
        click(qtbot, tab, name)
        run_until(lambda n=n: len(recording_desktop.urls) == n, message=f"{name}: no URL")
    assert recording_desktop.strings == [REPLY, REPLY_ALL, FORWARD]


def test_reply_goes_to_reply_to_and_a_reply_to_own_mail_to_its_recipient(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.invoice)
    click(qtbot, tab, "reply")
    run_until(lambda: len(recording_desktop.urls) == 1)
    select(qtbot, tab, run_until, order.answer)
    click(qtbot, tab, "reply")
    run_until(lambda: len(recording_desktop.urls) == 2)
    first, second = recording_desktop.strings
    assert first.startswith(
        "mailto:orders@customer.example?subject=RE%3A%20Invoice%20question%20%5Bxtref%3AS-50123%5D&"
    )
    # Our own answer: the reply goes to Jane, and "RE:" is not doubled.
    assert second.startswith(
        "mailto:jane@customer.example?subject=RE%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D&"
    )


# -- keyboard --------------------------------------------------------------------------------------


SHORTCUTS = [
    (Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier, "new"),
    (Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier, "print"),
    (Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier, "reply"),
    (Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
     "replyAll"),
    (Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier, "forward"),
    (Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
     "attach"),
    (Qt.Key.Key_Delete, Qt.KeyboardModifier.NoModifier, "detach"),
    (Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier, "refresh"),
    (Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier, "open"),
]


def test_shortcuts_work_while_the_focus_is_in_the_tab(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.delivery)
    tab.activateWindow()
    tab.view().setFocus()
    run_until(lambda: tab.view().hasFocus(), message="the list did not get the focus")
    for key, modifiers, name in SHORTCUTS:
        fired: list[bool] = []
        tab.action(name).triggered.connect(fired.append)
        qtbot.keyClick(tab.view(), key, modifiers)
        assert fired, f"{name} was not triggered"
        tab.action(name).triggered.disconnect(fired.append)
        tab.cancelPending()
        idle(tab, run_until)
    # Two of them all the way: Enter opens the message, Ctrl+N writes a new mail.
    recording_desktop.urls.clear()
    qtbot.keyClick(tab.view(), Qt.Key.Key_Return)
    run_until(lambda: len(recording_desktop.urls) == 1)
    qtbot.keyClick(tab.view(), Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    run_until(lambda: len(recording_desktop.urls) == 2)
    assert recording_desktop.urls[0].isLocalFile()
    assert recording_desktop.strings[1].endswith("?subject=%5Bxtref%3AS-50123%5D")


# -- open, print -----------------------------------------------------------------------------------


def test_double_click_hands_a_private_eml_file_with_the_raw_bytes(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop, mail_data: MailData,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    view = tab.view()
    index = tab.model().index(tab.model().rowOf(order.delivery), 1)
    with qtbot.waitSignal(tab.messageOpened, timeout=0) as opened:
        # QTest's double click sends only the second press: a real one starts with a click.
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                         pos=view.visualRect(index).center())
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton,
                          pos=view.visualRect(index).center())
        run_until(lambda: recording_desktop.files)
    [(path, data, mode)] = recording_desktop.files
    assert data == mail_data.raw(order.delivery)
    assert mode == 0o600
    assert path.suffix == ".eml"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert opened.args == [str(path)]
    assert recording_desktop.urls[0].isLocalFile()


def test_a_message_that_cannot_be_saved_says_what_to_check(
    tab: EmailTab, order: Order, run_until: RunUntil, recording_desktop: RecordingDesktop,
    tmp_path: Path,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    tab.setPrivateFiles(PrivateFiles(tmp_path / "missing"))  # mkdtemp fails: no such folder
    tab.view().selectRow(tab.model().rowOf(order.delivery))
    tab.openMessage()
    run_until(lambda: not tab.isBusy())
    assert tab.errorText().startswith("The message could not be saved for your mail program: ")
    assert tab.errorText().endswith(
        "\nCheck that the temporary folder has free space, then try again.")
    assert recording_desktop.urls == []


def test_print_goes_through_the_print_dialog_to_pdf(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, tmp_path: Path,
) -> None:
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.fail("pdftotext is missing: apt-get install poppler-utils")
    pdf = tmp_path / "message.pdf"
    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
    printer.setOutputFileName(str(pdf))
    tab.setPrinter(printer)
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.delivery)
    # Cancelled in the dialog: nothing is printed.
    click(qtbot, tab, "print")
    run_until(lambda: visible_child(tab, QPrintDialog, "printDialog"))
    dialog = tab.findChild(QPrintDialog, "printDialog")
    assert dialog is not None
    dialog.reject()
    idle(tab, run_until)
    assert not pdf.exists()

    click(qtbot, tab, "print")
    run_until(lambda: visible_child(tab, QPrintDialog, "printDialog"))
    dialog = tab.findChild(QPrintDialog, "printDialog")
    assert dialog is not None and dialog.isModal()
    with qtbot.waitSignal(tab.messagePrinted, timeout=0) as printed:
        dialog.accept()
        run_until(lambda: not tab.isBusy())
    assert printed.args == [order.delivery]
    text = subprocess.run([pdftotext, str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout
    assert "Subject: Delivery date [xtref:S-50123]" in text
    assert "From: Jane Doe <jane@customer.example>" in text
    assert "When will it ship?" in text


# -- attach, detach, refresh -----------------------------------------------------------------------


def test_attach_opens_the_factory_dialog_and_refreshes_when_accepted(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, mail_data: MailData,
    conn: psycopg.Connection,
) -> None:
    made: list[tuple[str, int]] = []

    def factory(code: str, doc_id: int, parent: QWidget) -> QDialog:
        made.append((code, doc_id))
        dialog = QDialog(parent)
        dialog.setObjectName("fakeAttachDialog")
        return dialog

    show(tab, run_until, "S", order.so, 3)
    # Without a factory, Attach only tells the host.
    with qtbot.waitSignal(tab.attachRequested, timeout=0):
        click(qtbot, tab, "attach")
    assert not tab.isBusy()

    tab.setAttachDialogFactory(factory)
    with qtbot.waitSignal(tab.attachRequested, timeout=0) as requested:
        click(qtbot, tab, "attach")
    assert requested.args == ["S", order.so]
    run_until(lambda: visible_child(tab, QDialog, "fakeAttachDialog"))
    assert made == [("S", order.so)]
    # What the real dialog does on OK: tie a message to the document.
    loose = mail_data.message(subject="Loose mail", date="Tue, 03 Mar 2026 09:00:00 +0000")
    conn.execute("INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
                 "VALUES (%s, 'S', %s)", (loose, order.so))
    dialog = tab.findChild(QDialog, "fakeAttachDialog")
    assert dialog is not None and dialog.isModal()
    dialog.accept()
    run_until(lambda: tab.model().rowCount() == 4 and not tab.isBusy())
    assert tab.model().emlId(0) == loose


def ties(conn: psycopg.Connection, eml_id: int) -> set[tuple[str, int]]:
    rows = conn.execute("SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc "
                        "WHERE emlassc_eml_id = %s", (eml_id,)).fetchall()
    return {(t, i) for t, i in rows}


def test_detach_after_confirmation_removes_the_tie_and_logs_it(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, conn: psycopg.Connection,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.delivery)
    assert ("S", order.so) in ties(conn, order.delivery)

    click(qtbot, tab, "detach")
    run_until(lambda: visible_child(tab, QMessageBox, "detachConfirmation"))
    box = tab.findChild(QMessageBox, "detachConfirmation")
    assert box is not None
    assert box.text() == "Detach 1 message from sales order 50123?"
    cancel = box.button(QMessageBox.StandardButton.Cancel)
    qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    idle(tab, run_until)
    assert ("S", order.so) in ties(conn, order.delivery)

    click(qtbot, tab, "detach")
    run_until(lambda: visible_child(tab, QMessageBox, "detachConfirmation"))
    box = tab.findChild(QMessageBox, "detachConfirmation")
    assert box is not None
    ok = box.button(QMessageBox.StandardButton.Ok)
    assert ok is not None and ok.text() == "Detach"
    with qtbot.waitSignal(tab.messagesDetached, timeout=0) as detached:
        qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
        run_until(lambda: tab.model().rowCount() == 2 and not tab.isBusy())
    assert detached.args == [1]
    assert ("S", order.so) not in ties(conn, order.delivery)
    log = conn.execute("SELECT al_eml_id, al_type, al_assc_id, al_action, al_username "
                       "FROM xtmail.assc_log WHERE al_action = 'detach'").fetchall()
    assert log == [(order.delivery, "S", order.so, "detach", conn.info.user)]
    assert order.delivery not in [tab.model().emlId(r) for r in range(2)]


def test_refresh_picks_up_a_newly_tied_message_and_keeps_the_selection(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, mail_data: MailData,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    select(qtbot, tab, run_until, order.delivery)
    newer = mail_data.message(ties=[("S", order.so)], subject="Newer",
                              date="Wed, 04 Mar 2026 09:00:00 +0000")
    with qtbot.waitSignal(tab.messagesLoaded, timeout=0) as loaded:
        click(qtbot, tab, "refresh")
        run_until(lambda: tab.model().rowCount() == 4 and not tab.isBusy())
    assert loaded.args == [4]
    assert tab.model().emlId(0) == newer
    current = tab.view().currentIndex()
    assert tab.model().emlId(current.row()) == order.delivery
    assert "When will it ship?" in tab.preview().toPlainText()


def test_imported_mail_refreshes_only_the_tab_of_its_document(
    tab: EmailTab, order: Order, run_until: RunUntil, mail_data: MailData,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    other = mail_data.sales_order("50124")
    elsewhere = mail_data.message(ties=[("S", other)], subject="Elsewhere")
    tab.onMessagesImported({elsewhere: [("S", other), ("T", order.jane)]})
    assert not tab.isBusy()
    here = mail_data.message(ties=[("S", order.so)], subject="Here",
                             date="Wed, 04 Mar 2026 09:00:00 +0000")
    tab.onMessagesImported({here: [("s", order.so)]})
    assert tab.isBusy()
    run_until(lambda: tab.model().rowCount() == 4 and not tab.isBusy())


def test_show_more_loads_beyond_the_first_hundred(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("60000")
    raws = [
        make_message(subject=f"Message {i:03d}", date=f"Sun, 01 Mar 2026 {i // 60:02d}:"
                     f"{i % 60:02d}:00 +0000")
        for i in range(130)
    ]
    mail_data.import_raw(raws, ties=[("S", so)])
    show(tab, run_until, "S", so, 100)
    more = tab.showMoreButton()
    assert more.isVisible() and more.text() == "Show 100 more"
    assert tab.model().index(0, 4).data() == "Message 129"
    qtbot.mouseClick(more, Qt.MouseButton.LeftButton)
    run_until(lambda: tab.model().rowCount() == 130 and not tab.isBusy())
    assert not more.isVisible()
    assert tab.model().index(129, 4).data() == "Message 000"
    assert len({tab.model().emlId(r) for r in range(130)}) == 130


def test_contact_mail_of_a_customer_is_marked(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
) -> None:
    jane = mail_data.contact("jane@customer.example")
    cust = mail_data.customer("TTOYS", contact=jane)
    via = mail_data.message(sender=JANE, subject="From Jane",
                            date="Mon, 02 Mar 2026 10:00:00 +0000")
    direct = mail_data.message(ties=[("C", cust)], sender="Other <o@elsewhere.example>",
                               subject="About the customer",
                               date="Mon, 02 Mar 2026 11:00:00 +0000")
    show(tab, run_until, "C", cust, 2)
    model = tab.model()
    assert [model.emlId(r) for r in range(2)] == [direct, via]
    via_index, direct_index = model.index(1, 4), model.index(0, 4)
    assert via_index.data(ViaContactRole) is True
    assert via_index.data(Qt.ItemDataRole.ToolTipRole) == f"From Jane\n{VIA_CONTACT_TOOLTIP}"
    # The italics are explained on the tab itself, not only in the tooltip.
    legend = tab.findChild(QLabel, "legendLabel")
    assert legend is not None and legend.isVisible() and "Italic" in legend.text()
    font = via_index.data(Qt.ItemDataRole.FontRole)
    assert isinstance(font, QFont) and font.italic()
    assert direct_index.data(ViaContactRole) is False
    assert direct_index.data(Qt.ItemDataRole.FontRole) is None
    # Contact mail is detached on the contact, not here.
    select(qtbot, tab, run_until, via)
    assert not tab.action("detach").isEnabled()
    select(qtbot, tab, run_until, direct)
    assert tab.action("detach").isEnabled()


# -- states and errors -----------------------------------------------------------------------------


def test_empty_states(tab: EmailTab, run_until: RunUntil, mail_data: MailData) -> None:
    assert tab.isEmptyStateShown()
    assert tab.emptyStateText() == "Open a document to see its mail here."
    assert not tab.action("new").isEnabled()
    so = mail_data.sales_order("70000")
    show(tab, run_until, "S", so, 0)
    assert tab.isEmptyStateShown()
    assert tab.emptyStateText() == (
        "No mail is tied to this sales order yet.\n"
        "Use Attach to add messages from your mailbox, or New to write one."
    )
    assert tab.action("new").isEnabled() and tab.action("attach").isEnabled()
    assert not tab.action("reply").isEnabled()
    cust = mail_data.customer("EMPTY")
    show(tab, run_until, "C", cust, 0)
    assert tab.emptyStateText().startswith(
        "No mail is tied to this customer or its contacts yet.\n"
    )


def test_a_lost_connection_is_shown_in_the_tab(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, mail_store: MailStore,
    qloop: object,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    run_until(lambda: True)
    qloop.run_until_complete(mail_store.close())  # type: ignore[attr-defined]
    with qtbot.waitSignal(tab.errorOccurred, timeout=0) as failed:
        tab.action("refresh").trigger()
        run_until(lambda: not tab.isBusy())
    assert failed.args[0] == tab.errorText()
    # The store's own words (what failed, what to check), then how to try again here.
    text = tab.errorText()
    assert "database" in text.splitlines()[0]
    assert text.endswith("\nPress Refresh (F5) to try again.")
    assert UNEXPECTED_TEXT not in text
    assert tab.model().rowCount() == 3  # what was shown stays
    dismiss = [b for b in tab.findChildren(QToolButton) if b.text() == "Dismiss"]
    qtbot.mouseClick(dismiss[0], Qt.MouseButton.LeftButton)
    assert tab.errorText() == ""


def test_an_xtmail_error_shows_its_text_and_the_retry_hint(
    tab: EmailTab, order: Order, run_until: RunUntil, mail_store: MailStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    show(tab, run_until, "S", order.so, 3)

    async def unavailable(*_: object, **__: object) -> list[MessageRow]:
        raise DatabaseUnavailable("The connection to the database was lost.",
                                  hint="Check the network and that the database server is "
                                  "running.")

    monkeypatch.setattr(mail_store, "messages_for", unavailable)
    tab.refresh()
    run_until(lambda: not tab.isBusy())
    # An error that may mend by itself: the list is read again by itself, after a countdown
    # (tests/widgets/test_db_recovery.py follows it through a real restart).
    assert tab.errorText() == (
        "The connection to the database was lost.\n"
        "Check the network and that the database server is running.\n"
        "Retrying in 5 s."
    )
    assert tab.isRetryScheduled()
    assert visible_child(tab, QToolButton, "retryNowButton") is not None


def test_a_bug_is_logged_and_shown_in_general_words(
    tab: EmailTab, order: Order, run_until: RunUntil, mail_store: MailStore,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    show(tab, run_until, "S", order.so, 3)
    bug = KeyError("eml_date")

    async def broken(*_: object, **__: object) -> list[MessageRow]:
        raise bug

    monkeypatch.setattr(mail_store, "messages_for", broken)
    with caplog.at_level(logging.ERROR):
        tab.refresh()
        run_until(lambda: not tab.isBusy())
    assert tab.errorText() == f"{UNEXPECTED_TEXT}\nPress Refresh (F5) to try again."
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [bug]
    assert tab.model().rowCount() == 3


def test_changing_the_document_switches_the_list(
    qtbot: QtBot, tab: EmailTab, order: Order, run_until: RunUntil, mail_data: MailData,
) -> None:
    other = mail_data.sales_order("50200")
    mine = mail_data.message(ties=[("S", other)], subject="Other order")
    tab.setDocument("S", order.so)  # superseded before it finishes
    with qtbot.waitSignal(tab.documentChanged, timeout=0) as changed:
        show(tab, run_until, "S", other, 1)
    assert changed.args == ["S", other]
    assert tab.model().emlId(0) == mine
    assert tab.document() == ("S", other)
    with pytest.raises(ValueError, match="not a supported document type"):
        tab.setDocument("XX", 1)


def test_qt_properties(tab: EmailTab, order: Order, run_until: RunUntil) -> None:
    assert tab.setProperty("pageSize", 2)
    assert tab.property("pageSize") == 2
    assert tab.setProperty("ownAddresses", ["me@ourco.example", " you@ourco.example "])
    assert tab.property("ownAddresses") == ["me@ourco.example", "you@ourco.example"]
    assert tab.setProperty("documentType", "s")
    assert tab.property("documentType") == "S"
    tab.setProperty("documentId", order.so)
    run_until(lambda: tab.model().rowCount() == 2 and not tab.isBusy())
    assert tab.document() == ("S", order.so)
    assert tab.showMoreButton().text() == "Show 2 more"
    # Designer may set any text: an unknown type is reported, not raised.
    tab.setProperty("documentType", "nonsense")
    assert "'nonsense' is not a supported document type." in tab.errorText()
    assert tab.property("documentType") == "S"


# -- packaging -------------------------------------------------------------------------------------


def test_widget_modules_import_without_psycopg() -> None:
    code = (
        "import sys\n"
        "import xtmail.widgets\n"
        "assert 'PyQt6.QtWidgets' not in sys.modules, 'xtmail.widgets imported Qt'\n"
        "import xtmail.widgets.email_tab, xtmail.widgets.contact_mail_link\n"
        "import xtmail.widgets.message_model, xtmail.widgets.desktop\n"
        "from xtmail.widgets import EmailTab, ContactMailLink, MessageListModel\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')"
        " or m == 'PyQt6.QtPrintSupport')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
