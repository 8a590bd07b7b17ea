"""The contact cluster's mail link: a contact's address that writes a mail when clicked.

The mail is started in the user's own mail program through a ``mailto:`` URL whose subject
carries the reference of the document the contact is shown on (``[xtref:S-50123]``), so the
answer comes back tied to that document.

Decisions:

* An address that cannot go into a ``mailto:`` URL safely (see
  :func:`xtmail.widgets.compose.is_safe_address`) is shown as plain text, not as a link,
  with a tooltip saying why: a link that opens a mail without a recipient would mislead.
* Without a document type and number (or with a number that cannot be written in a
  reference) the mail is written without a reference.
* No database access: the host sets the address and the document, so this widget has no
  store and nothing to wait for.
"""

from __future__ import annotations

import html
from typing import Any

from PyQt6 import QtCore
from PyQt6.QtCore import Qt, QUrl, pyqtSignal
from PyQt6.QtGui import QKeyEvent
from PyQt6.QtWidgets import QLabel, QWidget

from xtmail.sync.errors import XtmailError
from xtmail.sync.mail import registry
from xtmail.sync.mail.refs import Reference
from xtmail.widgets.compose import is_safe_address, mailto_url, new_draft
from xtmail.widgets.desktop import Desktop, SystemDesktop

__all__ = ["ContactMailLink"]

# PyQt6's type stubs leave pyqtProperty out.
pyqtProperty: Any = QtCore.pyqtProperty  # type: ignore[attr-defined]

_ACTIVATE_KEYS = frozenset({Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space})
_NO_MODIFIERS = (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier)


class ContactMailLink(QLabel):
    """A contact's mail address as a link; clicking it starts a mail with the reference.

    Signals:

    * ``composeRequested(str)``: this ``mailto:`` URL was handed to the desktop.
    * ``errorOccurred(str)``: the mail could not be started; what to tell the user.
    """

    composeRequested = pyqtSignal(str)
    errorOccurred = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._email = ""
        self._code = ""
        self._number = ""
        self._desktop: Desktop = SystemDesktop()
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setOpenExternalLinks(False)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.LinksAccessibleByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
        )
        self.linkActivated.connect(self._on_link_activated)
        self._render()

    # -- configuration ---------------------------------------------------------------------------
    def _get_email(self) -> str:
        return self._email

    def setEmail(self, email: str) -> None:
        self._email = (email or "").strip()
        self._render()

    def _get_document_type(self) -> str:
        return self._code

    def setDocumentType(self, code: str) -> None:
        """The registry code of the document the contact is shown on ("" for none)."""
        doc = registry.find(code) if code else None
        self._code = doc.code if doc is not None else ""
        self._render()

    def _get_document_number(self) -> str:
        return self._number

    def setDocumentNumber(self, number: str) -> None:
        self._number = (number or "").strip()
        self._render()

    # Qt properties for Designer; the getters are the properties, the setters also methods.
    email = pyqtProperty(str, fget=_get_email, fset=setEmail)
    documentType = pyqtProperty(str, fget=_get_document_type, fset=setDocumentType)
    documentNumber = pyqtProperty(str, fget=_get_document_number, fset=setDocumentNumber)

    def reference(self) -> Reference | None:
        """The reference put in the subject, or ``None`` when there is no usable one."""
        if not self._code or not self._number:
            return None
        try:
            return Reference(self._code, self._number)
        except ValueError:
            return None

    def setReference(self, ref: Reference | None) -> None:
        """Set document type and number at once (``None`` clears both)."""
        self._code = ref.code if ref is not None else ""
        self._number = ref.number if ref is not None else ""
        self._render()

    def desktop(self) -> Desktop:
        return self._desktop

    def setDesktop(self, desktop: Desktop) -> None:
        """Where the ``mailto:`` URL is handed (the system's default mail program)."""
        self._desktop = desktop

    def isUsable(self) -> bool:
        """Whether the address can be written to (and is shown as a link)."""
        return bool(self._email) and is_safe_address(self._email)

    def url(self) -> str:
        """The ``mailto:`` URL a click hands to the desktop ("" without a usable address)."""
        if not self.isUsable():
            return ""
        return mailto_url(new_draft([self._email], self.reference()))

    # -- behaviour -------------------------------------------------------------------------------
    def _render(self) -> None:
        shown = html.escape(self._email)
        if not self._email:
            self.setText("")
            self.setToolTip("")
        elif self.isUsable():
            self.setText(f'<a href="compose">{shown}</a>')
            ref = self.reference()
            if ref is not None:
                tip = (self.tr("Write a mail to %1 about %2 %3")
                       .replace("%1", self._email)
                       .replace("%2", registry.by_code(ref.code).label)
                       .replace("%3", ref.number))
            else:
                tip = self.tr("Write a mail to %1").replace("%1", self._email)
            self.setToolTip(tip)
        else:
            self.setText(shown)
            self.setToolTip(self.tr(
                "This address cannot be used to write mail; correct it on the contact."
            ))

    def _on_link_activated(self, _href: str) -> None:
        self.compose()

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        # QLabel activates a link from the keyboard only after a second Tab has selected it
        # inside the label; with the focus on the label, Enter or Space should be enough.
        if (
            event is not None
            and event.key() in _ACTIVATE_KEYS
            and event.modifiers() in _NO_MODIFIERS
            and self.isUsable()
        ):
            event.accept()
            self.compose()
            return
        super().keyPressEvent(event)

    def compose(self) -> None:
        """Start a mail to the address in the user's mail program."""
        try:
            url = self.url()
        except XtmailError as exc:
            self.errorOccurred.emit(exc.user_text())
            return
        if not url:
            return
        if not self._desktop.openUrl(QUrl(url)):
            self.errorOccurred.emit(self.tr(
                "No mail program is set up to write mail.\n"
                "Choose a default mail program in the system settings, then try again."
            ))
            return
        self.composeRequested.emit(url)
