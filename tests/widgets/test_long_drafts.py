"""Replies and forwards too long for a mailto: URL: the Email tab hands the mail program a
complete draft, or tells the user what was cut and offers the full text. Real database,
real Email tab clicked offscreen; Thunderbird and xdg-mime are small real programs on PATH
that record what they were given."""

from __future__ import annotations

import email
import email.policy
import os
import stat
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QApplication, QToolButton
from pytestqt.qtbot import QtBot

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData, RecordingDesktop, message_with_parts
from tests.helpers.qt import RunUntil
from xtmail.widgets.desktop import PrivateFiles
from xtmail.widgets.email_tab import EmailTab
from xtmail.widgets.mail_program import MailProgram
from xtmail.widgets.message_model import SUBJECT

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

JANE = "Jane Doe <jane@customer.example>"
#: 400 lines, over 20,000 characters of text.
LONG_TEXT = "\n".join(
    f"Line {n:04d}: the customer's long account of what happened." for n in range(400)
)
ORIGINAL_ID = "<original.17@customer.example>"
ROOT_ID = "<root.3@ourco.example>"


@dataclass
class Order:
    so: int
    long: int  # a 20,000-character message from Jane, in a thread
    short: int  # a short one


@pytest.fixture
def order(mail_data: MailData) -> Order:
    assert len(LONG_TEXT) >= 20_000
    jane = mail_data.contact("jane@customer.example", "Jane", "Doe")
    so = mail_data.sales_order("50123", billto=jane)
    long = mail_data.message(
        sender=JANE, subject="Complaint [xtref:S-50123]", body=LONG_TEXT.replace("\n", "\r\n"),
        message_id=ORIGINAL_ID, references=ROOT_ID, date="Mon, 02 Mar 2026 10:00:00 +0000",
    )
    short = mail_data.message(
        sender=JANE, subject="Delivery date [xtref:S-50123]", body="When will it ship?",
        date="Mon, 02 Mar 2026 09:00:00 +0000",
    )
    return Order(so, long, short)


@dataclass
class FakeThunderbird:
    """``thunderbird`` and ``xdg-mime`` on PATH: the desktop's mail program says
    Thunderbird, and Thunderbird records its arguments and a copy of the file it got."""

    folder: Path

    @property
    def args(self) -> Path:
        return self.folder / "thunderbird.args"

    @property
    def copy(self) -> Path:
        return self.folder / "thunderbird.eml"


def script(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handler: str) -> FakeThunderbird:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = FakeThunderbird(tmp_path)
    script(bin_dir / "xdg-mime", f'echo "{handler}"\n')
    # Written to a temporary name and renamed, so the test never reads half a file.
    script(bin_dir / "thunderbird",
           f'printf "%s\\n" "$@" > "{record.args}.tmp"\n'
           f'cp "$1" "{record.copy}"\nmv "{record.args}.tmp" "{record.args}"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


@pytest.fixture
def thunderbird(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeThunderbird:
    return programs(tmp_path, monkeypatch, "thunderbird.desktop")


def show(qtbot: QtBot, tab: EmailTab, run_until: RunUntil, so: int, eml_id: int) -> None:
    tab.setDocument("S", so)
    run_until(lambda: not tab.isBusy() and tab.model().rowCount() == 2)
    view = tab.view()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.visualRect(tab.model().index(tab.model().rowOf(eml_id),
                                                           SUBJECT)).center())
    run_until(lambda: tab.preview().toPlainText() != "" and not tab.isBusy())


def click(qtbot: QtBot, tab: EmailTab, name: str) -> None:
    button = tab.toolBar().widgetForAction(tab.action(name))
    assert isinstance(button, QToolButton) and button.isEnabled(), name
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_whole_quote(text: str) -> None:
    missing = [n for n in range(400)
               if f"> Line {n:04d}: the customer's long account of what happened." not in text]
    assert not missing, f"{len(missing)} quoted lines missing, first {missing[:3]}"


def test_a_long_reply_goes_to_thunderbird_as_a_complete_draft(
    qtbot: QtBot, email_tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop, thunderbird: FakeThunderbird,
) -> None:
    email_tab.setMailProgram(MailProgram("linux"))
    show(qtbot, email_tab, run_until, order.so, order.long)
    with qtbot.waitSignal(email_tab.composeRequested, timeout=0) as composed:
        click(qtbot, email_tab, "reply")
        run_until(lambda: thunderbird.args.exists(), message="Thunderbird was not started")
    (path,) = thunderbird.args.read_text().splitlines()
    assert Path(path).suffix == ".eml"
    assert Path(path).stat().st_mode & 0o777 == 0o600  # private, like opened messages
    assert composed.args == [f"file://{path}"]
    assert recording_desktop.urls == []  # no mailto: URL besides
    message = parse(thunderbird.copy.read_bytes())
    assert message["X-Unsent"] == "1"
    assert message["To"] == "jane@customer.example"
    assert message["Subject"] == "RE: Complaint [xtref:S-50123]"
    assert message["In-Reply-To"] == ORIGINAL_ID
    assert message["References"] == f"{ROOT_ID} {ORIGINAL_ID}"
    text = message.get_content()
    assert "On 2026-03-02 10:00 +0000, Jane Doe wrote:" in text
    assert_whole_quote(text)
    assert email_tab.errorText() == ""


def test_a_short_reply_still_goes_by_mailto(
    qtbot: QtBot, email_tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop, thunderbird: FakeThunderbird,
) -> None:
    email_tab.setMailProgram(MailProgram("linux"))
    show(qtbot, email_tab, run_until, order.so, order.short)
    click(qtbot, email_tab, "reply")
    run_until(lambda: recording_desktop.urls != [])
    assert recording_desktop.strings == [
        "mailto:jane@customer.example?subject=RE%3A%20Delivery%20date%20%5Bxtref%3AS-50123%5D"
        "&body=%0D%0AOn%202026-03-02%2009%3A00%20%2B0000%2C%20Jane%20Doe%20wrote%3A%0D%0A"
        "%3E%20When%20will%20it%20ship%3F"
    ]
    assert not thunderbird.args.exists()


def test_a_long_forward_on_windows_hands_over_the_eml_file_without_attachments(
    qtbot: QtBot, email_tab: EmailTab, mail_data: MailData, run_until: RunUntil,
    recording_desktop: RecordingDesktop,
) -> None:
    jane = mail_data.contact("jane@customer.example", "Jane", "Doe")
    so = mail_data.sales_order("50123", billto=jane)
    (with_parts,) = mail_data.import_raw([message_with_parts(
        [("price list.pdf", "application/pdf", b"%PDF-1.4 prices"),
         ("photo.png", "image/png", b"\x89PNG\r\n\x1a\n")],
        subject="Prices [xtref:S-50123]", sender=JANE, body=LONG_TEXT,
    )])
    mail_data.import_raw([make_message(sender=JANE, subject="Hi [xtref:S-50123]")])
    email_tab.setMailProgram(MailProgram("win32"))
    show(qtbot, email_tab, run_until, so, with_parts)
    click(qtbot, email_tab, "forward")
    run_until(lambda: recording_desktop.files != [], message="no file reached the desktop")
    (path, data, mode), = recording_desktop.files
    assert path.suffix == ".eml" and mode == 0o600
    message = parse(data)
    assert message["X-Unsent"] == "1"
    assert message["Subject"] == "FW: Prices [xtref:S-50123]"
    assert message["To"] is None and message["In-Reply-To"] is None
    assert not message.is_multipart()  # a forward never carries the attachments
    assert list(message.iter_attachments()) == []
    text = message.get_content()
    assert "---------- Forwarded message ----------" in text
    assert b"%PDF" not in data and "price list.pdf" not in text
    for n in range(400):
        assert f"Line {n:04d}: the customer's long account of what happened." in text
    assert email_tab.errorText() == ""


def test_without_thunderbird_a_long_reply_goes_as_a_long_mailto_url(
    qtbot: QtBot, email_tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = programs(tmp_path, monkeypatch, "org.gnome.Evolution.desktop")
    email_tab.setMailProgram(MailProgram("linux"))
    show(qtbot, email_tab, run_until, order.so, order.long)
    click(qtbot, email_tab, "reply")
    run_until(lambda: recording_desktop.urls != [])
    (url,) = recording_desktop.strings
    assert 2000 < len(url) <= 120_000
    fields = dict(parse_qsl(urlsplit(url).query, strict_parsing=True))
    assert fields["subject"] == "RE: Complaint [xtref:S-50123]"
    assert_whole_quote(fields["body"])
    assert not record.args.exists()
    assert email_tab.errorText() == ""


def test_when_the_whole_draft_cannot_go_the_tab_says_what_was_cut_and_offers_it(
    qtbot: QtBot, email_tab: EmailTab, order: Order, run_until: RunUntil,
    recording_desktop: RecordingDesktop, tmp_path: Path,
) -> None:
    # Windows, and the draft cannot be written: the private folder's parent is missing.
    email_tab.setMailProgram(MailProgram("win32"))
    email_tab.setPrivateFiles(PrivateFiles(tmp_path / "missing"))
    show(qtbot, email_tab, run_until, order.so, order.long)
    with qtbot.waitSignal(email_tab.errorOccurred, timeout=0):
        click(qtbot, email_tab, "reply")
        run_until(lambda: email_tab.errorText() != "")
    (url,) = recording_desktop.strings  # the shortened URL still went to the mail program
    assert len(url) <= 2000 and url.startswith("mailto:jane@customer.example?")
    text = email_tab.errorText()
    assert text.startswith("Your mail program could not take the whole mail, so the quoted "
                           "text was shortened: ")
    assert " of its 402 lines are in the new mail." in text
    assert "Copy Full Text" in text and "recipients" not in text
    copy = email_tab.findChild(QToolButton, "copyDraftButton")
    assert copy is not None and copy.isVisible()
    clipboard = QApplication.clipboard()
    assert clipboard is not None
    clipboard.clear()
    qtbot.mouseClick(copy, Qt.MouseButton.LeftButton)
    copied = clipboard.text()
    assert copied.startswith("To: jane@customer.example\nSubject: RE: Complaint [xtref:S-50123]\n")
    assert_whole_quote(copied)
    # Dismiss clears the offer with the text.
    dismiss = email_tab.findChild(QToolButton, "dismissButton")
    assert dismiss is not None
    qtbot.mouseClick(dismiss, Qt.MouseButton.LeftButton)
    assert email_tab.errorText() == "" and not copy.isVisible()


def test_a_long_subject_goes_whole_and_never_asks_to_remove_recipients(
    qtbot: QtBot, email_tab: EmailTab, mail_data: MailData, run_until: RunUntil,
    recording_desktop: RecordingDesktop, thunderbird: FakeThunderbird, tmp_path: Path,
) -> None:
    jane = mail_data.contact("jane@customer.example", "Jane", "Doe")
    so = mail_data.sales_order("50123", billto=jane)
    subject = "Questions " + " ".join(f"q{n}" for n in range(600)) + " [xtref:S-50123]"
    assert len(subject) > 2000
    (long_subject,) = mail_data.import_raw([make_message(sender=JANE, subject=subject)])
    mail_data.import_raw([make_message(sender=JANE, subject="Hi [xtref:S-50123]")])
    email_tab.setMailProgram(MailProgram("linux"))
    show(qtbot, email_tab, run_until, so, long_subject)
    click(qtbot, email_tab, "reply")
    run_until(lambda: thunderbird.args.exists(), message="Thunderbird was not started")
    assert parse(thunderbird.copy.read_bytes())["Subject"] == "RE: " + subject
    assert email_tab.errorText() == ""

    # Where nothing can take it, no mail is started and the tab says what to do instead.
    email_tab.setMailProgram(MailProgram("win32"))
    email_tab.setPrivateFiles(PrivateFiles(tmp_path / "missing"))
    click(qtbot, email_tab, "reply")
    run_until(lambda: email_tab.errorText() != "")
    assert recording_desktop.urls == []
    text = email_tab.errorText()
    assert "no mail was started" in text and "Copy Full Text" in text
    assert "Remove some recipients" not in text
    copy = email_tab.findChild(QToolButton, "copyDraftButton")
    assert copy is not None and copy.isVisible()
