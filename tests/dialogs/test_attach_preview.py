"""The Attach Email dialog's preview, already-attached mail, name columns and typed
contacts: both kinds of xTuple database, offscreen, clicked as a user clicks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
import qasync
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QApplication, QLineEdit, QPushButton
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import SampleMail
from tests.helpers.qt import RunUntil, close_dialog
from xtmail.dialogs import AttachEmailDialog
from xtmail.sync.db.mailstore import MailStore
from xtmail.widgets.message_model import FROM, SUBJECT, TO

pytestmark = pytest.mark.qt_log_ignore(
    "This plugin does not support raise()",
    "This plugin does not support grabbing the keyboard",
    "^This plugin does not support propagateSizeHints",
)


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Both kinds of xTuple database, as the owner and as an ordinary user."""
    return xtuple_dsn


@pytest.fixture
def dialog(mail_store: MailStore, sample_mail: SampleMail, run_until: RunUntil,
           qloop: qasync.QEventLoop) -> Iterator[AttachEmailDialog]:
    widget = AttachEmailDialog(mail_store, "S", sample_mail.sales_order)
    found: list[int] = []
    widget.searchFinished.connect(found.append)
    widget.open()
    run_until(lambda: found and not widget.isSearching(), message="no first search")
    try:
        yield widget
    finally:
        close_dialog(widget, qloop, "Attach Email ")


def click_row(qtbot: QtBot, dialog: AttachEmailDialog, row: int) -> None:
    view = dialog.resultsView()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.visualRect(dialog.resultModel().index(row, SUBJECT)).center())


def test_the_message_clicked_is_previewed(
    qtbot: QtBot, dialog: AttachEmailDialog, sample_mail: SampleMail, run_until: RunUntil,
) -> None:
    model = dialog.resultModel()
    click_row(qtbot, dialog, model.rowOf(sample_mail.quote))
    run_until(lambda: "We need 12 widgets by Friday." in dialog.preview().toPlainText(),
              message=dialog.preview().toPlainText())
    assert "Subject: Quote request" in dialog.preview().toPlainText()
    click_row(qtbot, dialog, model.rowOf(sample_mail.invoice))
    run_until(lambda: "delivery schedule" in dialog.preview().toPlainText())
    assert "widgets by Friday" not in dialog.preview().toPlainText()


def test_mail_already_attached_is_marked_and_cannot_be_chosen(
    qtbot: QtBot, mail_store: MailStore, sample_mail: SampleMail, run_until: RunUntil,
    conn: psycopg.Connection, qloop: qasync.QEventLoop,
) -> None:
    conn.execute("INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
                 "VALUES (%s, 'S', %s)", (sample_mail.invoice, sample_mail.sales_order))
    widget = AttachEmailDialog(mail_store, "S", sample_mail.sales_order)
    found: list[int] = []
    widget.searchFinished.connect(found.append)
    widget.open()
    try:
        run_until(lambda: found and not widget.isSearching(), message="no first search")
        model = widget.resultModel()
        row = model.rowOf(sample_mail.invoice)
        assert model.isUnavailable(row)
        assert not model.isUnavailable(model.rowOf(sample_mail.quote))
        tip = model.index(row, SUBJECT).data(Qt.ItemDataRole.ToolTipRole)
        assert tip.endswith("Already attached to this document")
        click_row(qtbot, widget, row)
        assert widget.selectedIds() == []
        assert not widget.okButton().isEnabled()
        click_row(qtbot, widget, model.rowOf(sample_mail.quote))
        assert widget.selectedIds() == [sample_mail.quote]
        assert widget.okButton().isEnabled()
    finally:
        widget.reject()
        qloop.run_until_complete(asyncio.sleep(0.05))
        widget.deleteLater()
        QApplication.sendPostedEvents(None, 0)


def test_names_in_the_columns_addresses_in_the_tooltips_and_room_for_the_subject(
    dialog: AttachEmailDialog, sample_mail: SampleMail,
) -> None:
    model = dialog.resultModel()
    row = model.rowOf(sample_mail.reply)
    assert model.index(row, FROM).data() == "Carol Danvers"
    assert model.index(row, FROM).data(Qt.ItemDataRole.ToolTipRole) == (
        "Carol Danvers <carol.danvers@marvel.example>")
    assert model.index(row, TO).data() == "Ada Lovelace"
    header = dialog.resultsView().horizontalHeader()
    assert header is not None
    widths = [header.sectionSize(c) for c in range(5)]
    assert widths[SUBJECT] == max(widths), widths


def test_a_contact_typed_but_not_chosen_filters_when_the_field_is_left(
    qtbot: QtBot, dialog: AttachEmailDialog, sample_mail: SampleMail, run_until: RunUntil,
) -> None:
    contact = dialog.findChild(QLineEdit, "contactEdit")
    search = dialog.findChild(QLineEdit, "searchEdit")
    assert contact is not None and search is not None
    contact.setFocus()
    run_until(contact.hasFocus)
    qtbot.keyClicks(contact, "Lovelace")
    # Tab away without touching the completer's list.
    qtbot.keyClick(contact, Qt.Key.Key_Tab)
    run_until(lambda: dialog.contactId() == sample_mail.ada and not dialog.isSearching(),
              message=f"contact {dialog.contactId()}: {dialog.statusText()}")
    model = dialog.resultModel()
    assert {model.emlId(r) for r in range(model.rowCount())} == {
        sample_mail.reply, sample_mail.invoice}
    assert dialog.findChild(QPushButton, "attachButton") is not None
