"""The Attach Email dialog, offscreen, against a real database."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QItemSelectionModel, Qt
from PyQt6.QtWidgets import QDialog, QLabel, QLineEdit, QTableView, QToolButton
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import SampleMail
from tests.helpers.qt import RunUntil, close_dialog
from xtmail.dialogs import AttachEmailDialog
from xtmail.sync.db import search
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.values import MessageRow
from xtmail.widgets.tasks import UNEXPECTED_TEXT

REPO = Path(__file__).resolve().parents[2]
#: The completer's list is a popup window; the offscreen platform cannot raise it or let it
#: grab the keyboard, and says so. Key events still reach it.
popup_shown = pytest.mark.qt_log_ignore(
    "This plugin does not support raise()",
    "This plugin does not support grabbing the keyboard",
)


class Dialog:
    """The dialog under test with its parts and what it emitted."""

    def __init__(self, dialog: AttachEmailDialog, run_until: RunUntil) -> None:
        self.dialog = dialog
        self.run_until = run_until
        self.search: QLineEdit = self._child(QLineEdit, "searchEdit")
        self.contact: QLineEdit = self._child(QLineEdit, "contactEdit")
        self.view: QTableView = self._child(QTableView, "resultsView")
        self.searches: list[int] = []
        self.attached: list[list[int]] = []
        dialog.searchFinished.connect(self.searches.append)
        dialog.messagesAttached.connect(self.attached.append)

    def _child(self, kind: Any, name: str) -> Any:
        child = self.dialog.findChild(kind, name)
        assert child is not None, name
        return child

    def ids(self) -> list[int]:
        model = self.dialog.resultModel()
        return [model.emlId(r) for r in range(model.rowCount())]

    def wait_searches(self, count: int) -> None:
        self.run_until(lambda: len(self.searches) >= count and not self.dialog.isSearching(),
                       message=f"search {count} did not finish: {self.dialog.statusText()}")

    def open(self) -> None:
        self.dialog.open()
        self.wait_searches(1)


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Every test here runs on both kinds of xTuple database: (b) as its owner, (a) with
    Connect's tables as an ordinary user in xtrole (conftest.XTUPLE_KINDS)."""
    return xtuple_dsn


@pytest.fixture
def dialog(mail_store: MailStore, sample_mail: SampleMail, run_until: RunUntil,
           qloop: qasync.QEventLoop) -> Iterator[Dialog]:
    widget = AttachEmailDialog(mail_store, "S", sample_mail.sales_order)
    try:
        yield Dialog(widget, run_until)
    finally:
        close_dialog(widget, qloop, "Attach Email ")


def ties(conn: psycopg.Connection, so: int) -> set[int]:
    rows = conn.execute("SELECT emlassc_eml_id FROM xtbatch.emlassc "
                        "WHERE emlassc_type = 'S' AND emlassc_assc_id = %s", (so,)).fetchall()
    return {r[0] for r in rows}


def test_opened_with_open_lists_the_newest_mail(dialog: Dialog, sample_mail: SampleMail) -> None:
    dialog.open()
    assert dialog.dialog.isVisible()
    assert dialog.dialog.windowModality() == Qt.WindowModality.WindowModal
    assert dialog.ids() == [sample_mail.reply, sample_mail.quote, sample_mail.invoice,
                            sample_mail.newsletter]
    assert dialog.dialog.statusText() == "4 messages"
    dialog.run_until(lambda: "50123" in dialog.dialog.findChild(QLabel, "headingLabel").text())
    assert not dialog.dialog.okButton().isEnabled()


def test_typing_searches_once_after_a_pause_and_attach_ties_the_selection(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot, conn: psycopg.Connection
) -> None:
    dialog.open()
    qtbot.keyClicks(dialog.search, "ada@exa")
    assert dialog.dialog.searchText() == "ada@exa"
    dialog.wait_searches(2)
    assert dialog.ids() == [sample_mail.reply, sample_mail.invoice]
    assert len(dialog.searches) == 2, "seven keystrokes, one search: the input is debounced"
    assert dialog.dialog.statusText() == "2 messages"

    selection = dialog.view.selectionModel()
    assert selection is not None
    flags = (QItemSelectionModel.SelectionFlag.Select
             | QItemSelectionModel.SelectionFlag.Rows)
    for row in range(2):
        selection.select(dialog.dialog.resultModel().index(row, 0), flags)
    assert dialog.dialog.selectedIds() == [sample_mail.reply, sample_mail.invoice]
    assert dialog.dialog.statusText() == "2 messages — 2 selected"
    ok = dialog.dialog.okButton()
    assert ok.isEnabled() and ok.isDefault()

    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    dialog.run_until(lambda: not dialog.dialog.isVisible(), message=dialog.dialog.statusText())
    assert dialog.dialog.result() == QDialog.DialogCode.Accepted.value
    assert dialog.attached == [[sample_mail.reply, sample_mail.invoice]]
    assert ties(conn, sample_mail.sales_order) == {sample_mail.reply, sample_mail.invoice}
    log = conn.execute("SELECT al_eml_id, al_action FROM xtmail.assc_log "
                       "WHERE al_type = 'S' AND al_assc_id = %s ORDER BY al_eml_id",
                       (sample_mail.sales_order,)).fetchall()
    assert log == sorted([(sample_mail.reply, "attach"), (sample_mail.invoice, "attach")])


def test_finds_by_subject_word_and_body_word(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot
) -> None:
    dialog.open()
    qtbot.keyClicks(dialog.search, "Pallets")
    dialog.wait_searches(2)
    assert dialog.ids() == [sample_mail.invoice]
    dialog.search.clear()
    qtbot.keyClicks(dialog.search, "widg")  # a prefix of a word in Bob's body
    dialog.wait_searches(3)
    assert dialog.ids() == [sample_mail.quote]
    qtbot.keyClicks(dialog.search, "ets nowhere")
    dialog.wait_searches(4)
    assert dialog.ids() == []
    assert dialog.dialog.statusText().startswith("No messages found.")


def test_enter_searches_at_once_and_does_not_attach(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot
) -> None:
    dialog.open()
    dialog.dialog.setSearchDelay(60_000)
    qtbot.keyClicks(dialog.search, "zebra")
    qtbot.keyClick(dialog.search, Qt.Key.Key_Return)
    dialog.wait_searches(2)
    assert dialog.ids() == [sample_mail.newsletter]
    dialog.view.selectRow(0)
    qtbot.keyClick(dialog.search, Qt.Key.Key_Enter)
    dialog.wait_searches(3)
    assert dialog.dialog.isVisible()
    assert dialog.attached == []


@popup_shown
def test_choosing_a_contact_limits_the_mail(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot
) -> None:
    dialog.open()
    chosen: list[int] = []
    dialog.dialog.contactChosen.connect(chosen.append)
    qtbot.keyClicks(dialog.contact, "lovel")
    completer = dialog.dialog.contactCompleter()
    popup = completer.popup()
    assert popup is not None
    dialog.run_until(lambda: dialog.dialog.contactModel().rowCount() == 1 and popup.isVisible())
    assert dialog.dialog.contactModel().contact(0).cntct_id == sample_mail.ada
    qtbot.keyClick(popup, Qt.Key.Key_Down)
    qtbot.keyClick(popup, Qt.Key.Key_Return)
    assert chosen == [sample_mail.ada]
    assert dialog.dialog.contactId() == sample_mail.ada
    assert dialog.contact.text() == "Ada Lovelace <ada@example.com>"
    dialog.wait_searches(2)
    assert dialog.ids() == [sample_mail.reply, sample_mail.invoice]
    # Words narrow the contact's mail further.
    qtbot.keyClicks(dialog.search, "approved")
    dialog.wait_searches(3)
    assert dialog.ids() == [sample_mail.reply]
    # Editing the contact's text drops the filter.
    qtbot.keyClick(dialog.contact, Qt.Key.Key_Backspace)
    assert chosen == [sample_mail.ada, -1]
    dialog.wait_searches(4)
    assert dialog.ids() == [sample_mail.reply]


@popup_shown
def test_contact_found_by_address_and_chosen_with_enter(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot
) -> None:
    dialog.open()
    dialog.dialog.setSearchDelay(60_000)  # Enter must not wait for the pause
    qtbot.keyClicks(dialog.contact, "builder.ex")
    qtbot.keyClick(dialog.contact, Qt.Key.Key_Return)  # the best match, once it is known
    dialog.wait_searches(2)
    assert dialog.contact.text() == "Bob Builder <bob@builder.example>"
    assert dialog.ids() == [sample_mail.quote]
    assert dialog.dialog.isVisible()


@popup_shown
def test_the_list_button_offers_the_documents_contacts(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot
) -> None:
    dialog.open()
    dialog.run_until(lambda: dialog.dialog.contactModel().rowCount() == 1)
    assert dialog.dialog.contactModel().contact(0).cntct_id == sample_mail.ada
    button = dialog.dialog.findChild(QToolButton, "contactListButton")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    popup = dialog.dialog.contactCompleter().popup()
    assert popup is not None and popup.isVisible()
    popup.hide()


def test_escape_cancels_without_attaching(
    dialog: Dialog, sample_mail: SampleMail, qtbot: QtBot, conn: psycopg.Connection
) -> None:
    dialog.open()
    dialog.view.selectRow(0)
    qtbot.keyClicks(dialog.search, "invoice")  # a search pending when Esc comes
    qtbot.keyClick(dialog.view, Qt.Key.Key_Escape)
    assert not dialog.dialog.isVisible()
    assert dialog.dialog.result() == QDialog.DialogCode.Rejected.value
    assert not dialog.dialog.isSearching()
    assert ties(conn, sample_mail.sales_order) == set()


def test_an_answer_for_an_older_search_is_dropped(
    dialog: Dialog, sample_mail: SampleMail, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = search.search_messages
    started: list[str] = []
    ended: list[str] = []
    newer_answered = asyncio.Event()

    async def held_first(conn: Any, text: str, **kwargs: Any) -> Any:
        started.append(text)
        try:
            if text == "invoice":
                # Held until the newer search has answered: the older answer comes last.
                await newer_answered.wait()
            return await real(conn, text, **kwargs)
        finally:
            ended.append(text)

    monkeypatch.setattr(search, "search_messages", held_first)
    dialog.open()
    dialog.dialog.setSearchText("invoice")
    dialog.run_until(lambda: started[-1:] == ["invoice"])
    dialog.dialog.setSearchText("widgets")
    dialog.wait_searches(2)
    newer_answered.set()
    dialog.run_until(lambda: "invoice" in ended)
    dialog.run_until(lambda: not dialog.dialog.isSearching())
    assert dialog.ids() == [sample_mail.quote]
    assert dialog.searches == [4, 1], "the older search never reached the list"


def test_a_failed_search_says_what_to_do(
    dialog: Dialog, mail_store: MailStore, qloop: qasync.QEventLoop
) -> None:
    dialog.open()
    qloop.run_until_complete(mail_store.close())
    dialog.dialog.setSearchText("invoice")
    dialog.run_until(lambda: not dialog.dialog.isSearching())
    status = dialog.dialog.statusText()
    assert status.startswith("Searching failed.")
    assert "Press Enter in the search box to try again." in status
    assert UNEXPECTED_TEXT not in status, "the store's error reached the dialog untranslated"
    assert dialog.ids() == []


def test_a_bug_in_a_search_is_logged_and_said_in_general_words(
    dialog: Dialog, mail_store: MailStore, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dialog.open()
    bug = KeyError("eml_date")

    async def broken(*_: object, **__: object) -> list[MessageRow]:
        raise bug

    monkeypatch.setattr(mail_store, "search_messages", broken)
    with caplog.at_level(logging.ERROR):
        dialog.dialog.setSearchText("invoice")
        dialog.run_until(lambda: not dialog.dialog.isSearching())
    assert dialog.dialog.statusText() == (
        f"Searching failed. {UNEXPECTED_TEXT}\nPress Enter in the search box to try again."
    )
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [bug]
    assert dialog.ids() == []


@popup_shown
def test_models_pass_the_model_tester(
    dialog: Dialog, qtmodeltester: Any, qtbot: QtBot
) -> None:
    dialog.open()
    qtmodeltester.check(dialog.dialog.resultModel())
    qtbot.keyClicks(dialog.contact, "a")
    dialog.run_until(lambda: dialog.dialog.contactModel().rowCount() > 0)
    qtmodeltester.check(dialog.dialog.contactModel())
    popup = dialog.dialog.contactCompleter().popup()
    if popup is not None:
        popup.hide()


def test_screenshot(dialog: Dialog, qtbot: QtBot, tmp_path: Path) -> None:
    """The dialog with results renders; XTMAIL_SCREENSHOT=1 also refreshes the docs' copy."""
    dialog.open()
    qtbot.keyClicks(dialog.search, "invoice")
    dialog.wait_searches(2)
    dialog.view.selectRow(0)
    dialog.run_until(lambda: "50123" in dialog.dialog.findChild(QLabel, "headingLabel").text())
    image = dialog.dialog.grab().toImage()
    assert image.width() > 300 and image.height() > 200
    assert image.save(str(tmp_path / "attach_dialog.png"))
    if os.environ.get("XTMAIL_SCREENSHOT"):
        assert image.save(str(REPO / "docs" / "screenshots" / "attach_dialog.png"))
