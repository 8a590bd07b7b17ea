"""Qt Designer plugin for ContactMailLink (metadata only)."""

from __future__ import annotations

from PyQt6.QtDesigner import QDesignerFormEditorInterface, QPyDesignerCustomWidgetPlugin
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import QWidget

try:
    from . import _support
except ImportError:  # Qt Designer loads plugin files as top-level modules
    import _support  # type: ignore[no-redef,import-not-found]

_support.ensure_importable()


class ContactMailLinkPlugin(QPyDesignerCustomWidgetPlugin):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._initialized = False

    def initialize(self, core: QDesignerFormEditorInterface | None) -> None:
        self._initialized = True
        _support.trace(f"initialize {self.name()}")

    def isInitialized(self) -> bool:
        return self._initialized

    def createWidget(self, parent: QWidget | None) -> QWidget:
        from xtmail.widgets.contact_mail_link import ContactMailLink

        widget = ContactMailLink(parent)
        _support.trace(f"createWidget {self.name()} {type(widget).__name__}")
        return widget

    def name(self) -> str:
        return "ContactMailLink"

    def group(self) -> str:
        return _support.GROUP

    def icon(self) -> QIcon:
        return QIcon(_support.icon_path("contact_mail_link.svg"))

    def toolTip(self) -> str:
        return "A contact's address as a link: composes mail carrying the document's reference"

    def whatsThis(self) -> str:
        return self.toolTip()

    def isContainer(self) -> bool:
        return False

    def includeFile(self) -> str:
        return "xtmail.widgets.contact_mail_link"

    def domXml(self) -> str:
        _support.trace(f"domXml {self.name()}")
        return (
            '<widget class="ContactMailLink" name="contactMailLink">'
            ''
            "</widget>"
        )
