"""The Email tab's texts go through Qt's translators (context "EmailTab"), as an xTuple
client installs them for the user's language."""

from __future__ import annotations

from typing import ClassVar

from PyQt6.QtCore import QTranslator
from PyQt6.QtWidgets import QApplication, QPushButton
from pytestqt.qtbot import QtBot

from xtmail.widgets.email_tab import EmailTab, empty_text, retry_line


class GermanTab(QTranslator):
    """What a .qm file for German would give for a few of the tab's texts."""

    TEXTS: ClassVar[dict[str, str]] = {
        "&Detach": "&Lösen",
        "Untie the selected mail from this document": "Die gewählte Mail vom Beleg lösen",
        "Show {count} more": "{count} weitere zeigen",
        "this {document}": "diesem Beleg ({document})",
        "No mail is tied to {what} yet.\n"
        "Use Attach to add messages from your mailbox, or New to write one.":
            "Mit {what} ist noch keine Mail verbunden.",
        "Retrying in {seconds} s.": "Neuer Versuch in {seconds} s.",
    }

    def translate(self, context: str | None, source: str | None,
                  disambiguation: str | None = None, n: int = -1) -> str | None:
        if context == "EmailTab" and source in self.TEXTS:
            return self.TEXTS[source]
        return None


def test_the_tabs_texts_are_translatable(qtbot: QtBot, qapp: QApplication) -> None:
    translator = GermanTab()
    assert QApplication.installTranslator(translator)
    try:
        tab = EmailTab()
        qtbot.addWidget(tab)
        detach = next(a for a in tab.actions() if a.objectName() == "detachAction")
        assert detach.text() == "&Lösen"
        assert detach.toolTip().startswith("Die gewählte Mail vom Beleg lösen (")
        assert any(b.text() == "100 weitere zeigen" for b in tab.findChildren(QPushButton))
        assert empty_text("TD") == "Mit diesem Beleg (to-do item) ist noch keine Mail verbunden."
        assert retry_line(5) == "Neuer Versuch in 5 s."
    finally:
        QApplication.removeTranslator(translator)
    # Without a translator: the English source.
    assert retry_line(5) == "Retrying in 5 s."
