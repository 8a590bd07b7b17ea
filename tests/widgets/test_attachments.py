"""Attachments in the Email tab: listed, marked in the list, opened and saved, on a real
database (both kinds of xTuple database), offscreen, clicked as a user clicks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import qasync
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import (
    QFileDialog,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import MailData, RecordingDesktop, message_with_parts
from tests.helpers.qt import RunUntil
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.errors import DatabaseError
from xtmail.sync.mail.mime import attachment_bytes, parse_message
from xtmail.widgets.email_tab import EmailTab, attachment_name, is_risky
from xtmail.widgets.message_model import SUBJECT, AttachmentsRole

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

DATA = Path(__file__).resolve().parents[1] / "data"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 600  # about 150 KB, every byte value
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000
SETUP = b"MZ\x90\x00 not really a program"


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Both kinds of xTuple database, as the owner and as an ordinary user."""
    return xtuple_dsn


@pytest.fixture
def tab(email_tab: EmailTab) -> EmailTab:
    return email_tab


def show(tab: EmailTab, run_until: RunUntil, so: int, rows: int) -> None:
    tab.setDocument("S", so)
    run_until(lambda: not tab.isBusy() and tab.model().rowCount() == rows,
              message=f"the tab did not show {rows} rows")


def select(qtbot: QtBot, tab: EmailTab, run_until: RunUntil, eml_id: int) -> None:
    view = tab.view()
    index = tab.model().index(tab.model().rowOf(eml_id), 0)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.visualRect(index).center())
    run_until(lambda: tab.preview().toPlainText() != "" and not tab.isBusy(),
              message="no preview appeared")


def double_click_item(qtbot: QtBot, listing: QListWidget, row: int) -> None:
    item = listing.item(row)
    assert item is not None
    pos = listing.visualItemRect(item).center()
    viewport = listing.viewport()
    assert viewport is not None
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=pos)


def visible(parent: QWidget, kind: type, name: str) -> object:
    found = parent.findChild(kind, name)
    return found if found is not None and found.isVisible() else None


@pytest.fixture
def mailed(mail_data: MailData) -> tuple[int, int, int]:
    """A sales order, a message with a PDF, an unnamed PNG and a program, and a plain one."""
    so = mail_data.sales_order("50123")
    raw = message_with_parts(
        [("Invoice 50123 signed.pdf", "application/pdf", PDF), (None, "image/png", PNG),
         ("setup.exe", "application/octet-stream", SETUP)],
        subject="Invoice [xtref:S-50123]",
    )
    (with_parts,) = mail_data.import_raw([raw])
    plain = mail_data.message(subject="No files [xtref:S-50123]",
                              date="Mon, 02 Mar 2026 09:00:00 +0000")
    return so, with_parts, plain


def test_every_listed_attachment_decodes_to_its_listed_size() -> None:
    """The bytes function finds the attachments the parser lists, in the same order, with
    the same leniency (damaged base64, uuencode and yEnc inside text, x-gzip64...)."""
    checked = 0
    for path in sorted(DATA.glob("*.eml")):
        raw = path.read_bytes()
        listed = parse_message(raw).attachments
        for index, info in enumerate(listed):
            found, data = attachment_bytes(raw, index)
            assert found == info, path.name
            if info.size:  # yEnc without a size= says 0
                assert len(data) == info.size, f"{path.name} #{index}"
            checked += 1
        with pytest.raises(IndexError):
            attachment_bytes(raw, len(listed))
    assert checked >= 20
    raw = (DATA / "inline-uuencode-and-yenc.eml").read_bytes()
    assert attachment_bytes(raw, 0)[1].startswith(b"uuencoded payload")


def test_the_list_marks_messages_with_attachments_and_the_preview_lists_them(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mailed: tuple[int, int, int],
) -> None:
    so, with_parts, plain = mailed
    show(tab, run_until, so, 2)
    model = tab.model()
    marked = model.index(model.rowOf(with_parts), SUBJECT)
    unmarked = model.index(model.rowOf(plain), SUBJECT)
    assert marked.data(AttachmentsRole) == 3
    assert isinstance(marked.data(Qt.ItemDataRole.DecorationRole), QIcon)
    assert "(3 attachments)" in marked.data(Qt.ItemDataRole.ToolTipRole)
    assert unmarked.data(AttachmentsRole) == 0
    assert unmarked.data(Qt.ItemDataRole.DecorationRole) is None

    select(qtbot, tab, run_until, plain)
    listing = tab.attachmentList()
    assert not listing.isVisible() and listing.count() == 0
    select(qtbot, tab, run_until, with_parts)
    assert listing.isVisible()
    texts = [listing.item(r).text() for r in range(listing.count())]  # type: ignore[union-attr]
    assert texts == ["Invoice 50123 signed.pdf (150 KB)", "attachment 2.png (2 KB)",
                     f"setup.exe ({len(SETUP)} bytes)"]
    pdf = listing.item(0)
    assert pdf is not None and not pdf.icon().isNull()
    assert "application/pdf" in pdf.toolTip() and "150 KB" in pdf.toolTip()
    assert "Attachments: Invoice 50123 signed.pdf (150 KB), attachment 2.png" in (
        tab.preview().toPlainText())


def test_double_click_opens_an_attachment_privately_under_its_name(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mailed: tuple[int, int, int],
    recording_desktop: RecordingDesktop, tmp_path: Path,
) -> None:
    so, with_parts, _ = mailed
    show(tab, run_until, so, 2)
    select(qtbot, tab, run_until, with_parts)
    with qtbot.waitSignal(tab.attachmentOpened, timeout=0) as opened:
        double_click_item(qtbot, tab.attachmentList(), 0)
        run_until(lambda: recording_desktop.files and not tab.isBusy())
    path, data, mode = recording_desktop.files[0]
    assert opened.args == [str(path)]
    assert path.name == "Invoice 50123 signed.pdf"
    assert data == PDF
    assert mode == 0o600
    assert path.is_relative_to(tmp_path / "private")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tab.errorText() == ""


def test_a_program_is_opened_only_after_a_warning(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mailed: tuple[int, int, int],
    recording_desktop: RecordingDesktop,
) -> None:
    so, with_parts, _ = mailed
    show(tab, run_until, so, 2)
    select(qtbot, tab, run_until, with_parts)
    listing = tab.attachmentList()
    listing.setCurrentRow(2)
    open_button = tab.findChild(QPushButton, "openAttachmentButton")
    assert open_button is not None
    qtbot.mouseClick(open_button, Qt.MouseButton.LeftButton)
    run_until(lambda: visible(tab, QMessageBox, "riskyAttachmentWarning"))
    box = tab.findChild(QMessageBox, "riskyAttachmentWarning")
    assert box is not None and "setup.exe" in box.text()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    run_until(lambda: not tab.isBusy())
    assert recording_desktop.files == []

    qtbot.mouseClick(open_button, Qt.MouseButton.LeftButton)
    run_until(lambda: visible(tab, QMessageBox, "riskyAttachmentWarning"))
    box = tab.findChild(QMessageBox, "riskyAttachmentWarning")
    assert box is not None
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Open), Qt.MouseButton.LeftButton)
    run_until(lambda: recording_desktop.files and not tab.isBusy())
    assert recording_desktop.files[0][0].name == "setup.exe"
    assert recording_desktop.files[0][1] == SETUP


def test_save_as_writes_the_attachment_where_the_user_chooses(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mailed: tuple[int, int, int],
    tmp_path: Path,
) -> None:
    so, with_parts, _ = mailed
    show(tab, run_until, so, 2)
    select(qtbot, tab, run_until, with_parts)
    tab.attachmentList().setCurrentRow(1)
    save = tab.findChild(QPushButton, "saveAttachmentButton")
    assert save is not None and save.isEnabled()
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    run_until(lambda: visible(tab, QFileDialog, "saveAttachmentDialog"))
    dialog = tab.findChild(QFileDialog, "saveAttachmentDialog")
    assert dialog is not None
    assert dialog.acceptMode() == QFileDialog.AcceptMode.AcceptSave
    name_edit = dialog.findChild(QLineEdit, "fileNameEdit")
    assert name_edit is not None
    assert name_edit.text() == "attachment 2.png"  # the suggested name
    target = tmp_path / "chosen.png"
    name_edit.clear()
    qtbot.keyClicks(name_edit, str(target))
    with qtbot.waitSignal(tab.attachmentSaved, timeout=0) as saved:
        qtbot.keyClick(name_edit, Qt.Key.Key_Return)
        run_until(lambda: target.exists() and not tab.isBusy())
    assert saved.args == [str(target)]
    assert target.read_bytes() == PNG


def test_inline_images_and_attached_messages_are_listed(
    qtbot: QtBot, tab: EmailTab, run_until: RunUntil, mail_data: MailData,
    recording_desktop: RecordingDesktop,
) -> None:
    so = mail_data.sales_order("50123")
    ids = mail_data.import_raw(
        [(DATA / "inline-images-cid.eml").read_bytes(),
         (DATA / "forwarded-rfc822.eml").read_bytes()], ties=[("S", so)])
    show(tab, run_until, so, 2)
    listing = tab.attachmentList()
    select(qtbot, tab, run_until, ids[0])
    assert [listing.item(r).text().split(" (")[0]  # type: ignore[union-attr]
            for r in range(listing.count())] == ["logo.png", "attachment 2.png"]
    select(qtbot, tab, run_until, ids[1])
    assert listing.count() == 1
    item = listing.item(0)
    assert item is not None and item.text().startswith("attached message.eml")
    assert "attached message" in item.toolTip()
    double_click_item(qtbot, listing, 0)
    run_until(lambda: recording_desktop.files and not tab.isBusy())
    assert recording_desktop.files[0][1].startswith(b"From: Landlord Ltd")


def test_the_store_says_when_an_attachment_does_not_exist(
    qloop: qasync.QEventLoop, mail_store: MailStore, mailed: tuple[int, int, int],
) -> None:
    _, with_parts, plain = mailed
    assert qloop.run_until_complete(mail_store.attachment(with_parts, 0)) == PDF
    with pytest.raises(DatabaseError, match="no attachment 1"):
        qloop.run_until_complete(mail_store.attachment(plain, 0))


def test_names_and_risk() -> None:
    assert attachment_name({"filename": "a.pdf"}, 0) == "a.pdf"
    assert attachment_name({"content_type": "message/rfc822"}, 3) == "attached message.eml"
    assert attachment_name({"content_type": "image/jpeg"}, 1) == "attachment 2.jpg"
    assert is_risky("Invoice.PDF.exe", "application/pdf")
    assert is_risky("run", "application/x-sh")
    assert not is_risky("Invoice.pdf", "application/pdf")
