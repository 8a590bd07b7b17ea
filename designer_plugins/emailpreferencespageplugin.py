"""Qt Designer plugin for EmailPreferencesPage (metadata only)."""

from __future__ import annotations

from PyQt6.QtDesigner import QDesignerFormEditorInterface, QPyDesignerCustomWidgetPlugin
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import QWidget

try:
    from . import _support
except ImportError:  # Qt Designer loads plugin files as top-level modules
    import _support  # type: ignore[no-redef,import-not-found]

_support.ensure_importable()


class EmailPreferencesPagePlugin(QPyDesignerCustomWidgetPlugin):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._initialized = False

    def initialize(self, core: QDesignerFormEditorInterface | None) -> None:
        self._initialized = True
        _support.trace(f"initialize {self.name()}")

    def isInitialized(self) -> bool:
        return self._initialized

    def createWidget(self, parent: QWidget | None) -> QWidget:
        from xtmail.dialogs.email_prefs import EmailPreferencesPage

        widget = EmailPreferencesPage(parent)
        _support.trace(f"createWidget {self.name()} {type(widget).__name__}")
        return widget

    def name(self) -> str:
        return "EmailPreferencesPage"

    def group(self) -> str:
        return _support.GROUP

    def icon(self) -> QIcon:
        return QIcon(_support.icon_path("email_preferences.svg"))

    def toolTip(self) -> str:
        return "The Email page of User Preferences: IMAP account, folders to synchronize, status"

    def whatsThis(self) -> str:
        return self.toolTip()

    def isContainer(self) -> bool:
        return False

    def includeFile(self) -> str:
        return "xtmail.dialogs.email_prefs"

    def domXml(self) -> str:
        _support.trace(f"domXml {self.name()}")
        return (
            '<widget class="EmailPreferencesPage" name="emailPreferencesPage">'
            ''
            "</widget>"
        )
