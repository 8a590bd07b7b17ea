"""ContactMailLink: a contact's address that starts a mail with the document's reference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from PyQt6.QtCore import QPoint, Qt, QTranslator
from PyQt6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import RecordingDesktop
from xtmail.sync.mail.refs import Reference
from xtmail.widgets.contact_mail_link import ContactMailLink

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")


@pytest.fixture
def link(qtbot: QtBot, recording_desktop: RecordingDesktop) -> Iterator[ContactMailLink]:
    widget = ContactMailLink()
    qtbot.addWidget(widget)
    widget.setDesktop(recording_desktop)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget


def click_text(qtbot: QtBot, link: ContactMailLink) -> None:
    # The address is the whole text, left-aligned: its middle is on the link.
    width = link.fontMetrics().horizontalAdvance(link.property("email"))
    qtbot.mouseClick(link, Qt.MouseButton.LeftButton,
                     pos=QPoint(link.contentsRect().left() + width // 2, link.height() // 2))


def test_click_composes_to_the_address_with_the_reference(
    qtbot: QtBot, link: ContactMailLink, recording_desktop: RecordingDesktop
) -> None:
    link.setEmail("jane@customer.example")
    link.setDocumentType("S")
    link.setDocumentNumber("50123")
    link.adjustSize()
    assert link.text() == '<a href="compose">jane@customer.example</a>'
    assert link.toolTip() == "Write a mail to jane@customer.example about Sales Order 50123"
    with qtbot.waitSignal(link.composeRequested, timeout=1000) as composed:
        click_text(qtbot, link)
    expected = "mailto:jane@customer.example?subject=%5Bxtref%3AS-50123%5D"
    assert composed.args == [expected]
    assert recording_desktop.strings == [expected]


def test_properties_and_set_reference(link: ContactMailLink) -> None:
    assert link.setProperty("email", " bob@vendor.example ")
    assert link.property("email") == "bob@vendor.example"
    assert link.setProperty("documentType", "incdt")
    assert link.setProperty("documentNumber", "1042")
    assert link.property("documentType") == "INCDT"
    assert link.url() == "mailto:bob@vendor.example?subject=%5Bxtref%3AINCDT-1042%5D"
    link.setReference(Reference("p", "PO-77"))
    assert (link.property("documentType"), link.property("documentNumber")) == ("P", "PO-77")
    assert link.reference() == Reference("P", "PO-77")
    link.setReference(None)
    assert link.url() == "mailto:bob@vendor.example"
    # A number that cannot be written in a reference: the mail goes without one.
    link.setDocumentType("S")
    link.setDocumentNumber("50 123")
    assert link.reference() is None
    assert link.url() == "mailto:bob@vendor.example"


def test_an_unusable_address_is_plain_text(
    qtbot: QtBot, link: ContactMailLink, recording_desktop: RecordingDesktop
) -> None:
    link.setEmail("jane@customer.example?cc=boss@evil.example")
    link.adjustSize()
    assert not link.isUsable()
    assert "<a " not in link.text()
    assert link.text() == "jane@customer.example?cc=boss@evil.example"
    assert "cannot be used" in link.toolTip()
    assert link.url() == ""
    link.compose()
    click_text(qtbot, link)
    assert recording_desktop.urls == []


def test_markup_in_an_address_is_shown_as_text(link: ContactMailLink) -> None:
    link.setEmail("a&b@example.com")
    assert link.isUsable()
    assert link.text() == '<a href="compose">a&amp;b@example.com</a>'
    assert link.url() == "mailto:a%26b@example.com"


def test_no_mail_program_is_reported(
    qtbot: QtBot, link: ContactMailLink, recording_desktop: RecordingDesktop
) -> None:
    recording_desktop.accept = False
    link.setEmail("jane@customer.example")
    with qtbot.waitSignal(link.errorOccurred, timeout=1000) as failed:
        link.compose()
    assert failed.args[0].startswith("No mail program is set up to write mail.")


def test_keyboard_activates_the_link(
    qtbot: QtBot, link: ContactMailLink, recording_desktop: RecordingDesktop
) -> None:
    link.setEmail("jane@customer.example")
    link.activateWindow()
    link.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.waitUntil(link.hasFocus)
    assert link.focusPolicy() == Qt.FocusPolicy.StrongFocus
    with qtbot.waitSignal(link.composeRequested, timeout=1000):
        qtbot.keyClick(link, Qt.Key.Key_Return)
    with qtbot.waitSignal(link.composeRequested, timeout=1000):
        qtbot.keyClick(link, Qt.Key.Key_Space)
    assert recording_desktop.strings == ["mailto:jane@customer.example"] * 2


class GermanLink(QTranslator):
    """A translator for ContactMailLink's texts (what a .qm file would give)."""

    TEXTS: ClassVar[dict[str, str]] = {
        "Write a mail to %1 about %2 %3": "Mail an %1 zu %2 %3 schreiben",
        "This address cannot be used to write mail; correct it on the contact.":
            "Mit dieser Adresse kann keine Mail geschrieben werden.",
    }

    def translate(self, context: str | None, source: str | None,
                  disambiguation: str | None = None, n: int = -1) -> str | None:
        if context == "ContactMailLink" and source in self.TEXTS:
            return self.TEXTS[source]
        return None


def test_the_texts_are_translatable(qtbot: QtBot, qapp: QApplication) -> None:
    translator = GermanLink()
    assert QApplication.installTranslator(translator)
    try:
        widget = ContactMailLink()
        qtbot.addWidget(widget)
        widget.setEmail("jane@customer.example")
        widget.setReference(Reference("S", "50123"))
        assert widget.toolTip() == "Mail an jane@customer.example zu Sales Order 50123 schreiben"
        widget.setEmail("not an address")
        assert widget.toolTip() == "Mit dieser Adresse kann keine Mail geschrieben werden."
    finally:
        QApplication.removeTranslator(translator)
