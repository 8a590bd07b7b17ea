"""The demo ERP host: what ``xtmail demo`` runs.

An xTuple-like main window lists the 14 supported document types and their records; each
record opens a document window that embeds the Email tab and the contact mail link, the way
an xTuple window would. Edit > User Preferences holds the Email page. Mail is wired the way
any host application wires it: through one :class:`~xtmail.app.host.MailHost`, which starts
the sync when its preference is ticked, refreshes the open Email tabs, gives them the user's
own addresses and reports its status for the status bar.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence
from PyQt6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from xtmail.sync.mail import registry
from xtmail.sync.mail.refs import Reference
from xtmail.widgets.contact_mail_link import ContactMailLink
from xtmail.widgets.email_tab import EmailTab
from xtmail.widgets.tasks import TaskOwner, failure_text

if TYPE_CHECKING:
    from xtmail.app.host import MailHost
    from xtmail.dialogs.email_prefs import EmailPreferencesDialog
    from xtmail.sync.db.mailstore import MailStore
    from xtmail.sync.values import DocumentRow

log = logging.getLogger(__name__)


class DocumentWindow(QWidget):
    """One document, as an xTuple document window would show it, with its Email tab."""

    def __init__(
        self,
        store: MailStore,
        doc: registry.DocumentType,
        row: DocumentRow,
        *,
        own_addresses: tuple[str, ...] = (),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"{doc.label} {row.number}")
        self.resize(900, 620)
        layout = QVBoxLayout(self)
        header = QHBoxLayout()
        title = QLabel(f"<b>{doc.label} {row.number}</b>", self)
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(QLabel(self.tr("Contact:"), self))
        self.contactLink = ContactMailLink(self)
        self.contactLink.setEmail(row.contact_email)
        self.contactLink.setReference(Reference(doc.code, row.number))
        header.addWidget(self.contactLink)
        # Like xTuple's document windows: a Close button, Ctrl+W (the platform's Close
        # key) and Esc. Esc is a key press, not a shortcut: the Email tab has its own Esc
        # shortcut while it loads, and two enabled Esc shortcuts make Qt fire neither.
        self.closeButton = QPushButton(self.tr("&Close"), self)
        # Ctrl+W everywhere, and the platform's own Close keys (Ctrl+F4 on some).
        keys = _keys("Ctrl+W", QKeySequence.StandardKey.Close)
        self.closeButton.setToolTip(self.tr("Close this window ({keys}, Esc)").format(
            keys=keys[0].toString(QKeySequence.SequenceFormat.NativeText)))
        self.closeButton.clicked.connect(self.close)
        header.addWidget(self.closeButton)
        close_action = QAction(self.tr("Close"), self)
        close_action.setShortcuts(keys)
        close_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        close_action.triggered.connect(self.close)
        self.addAction(close_action)
        layout.addLayout(header)

        self.tabs = QTabWidget(self)
        general = QLabel(
            self.tr("{label} {number}\nContact: {contact}").format(
                label=doc.label, number=row.number, contact=row.contact_name or "-"
            ),
            self,
        )
        general.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.tabs.addTab(general, self.tr("General"))
        self.emailTab = EmailTab(self)
        self.emailTab.setOwnAddresses(list(own_addresses))
        self.emailTab.setStore(store)
        self.emailTab.setAttachDialogFactory(_attach_dialog_factory(store))
        self.emailTab.setDocument(doc.code, row.doc_id)
        self.tabs.addTab(self.emailTab, self.tr("Email"))
        self.tabs.setCurrentWidget(self.emailTab)
        layout.addWidget(self.tabs)

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        if event is not None and event.key() == Qt.Key.Key_Escape and not event.modifiers():
            self.close()
            return
        super().keyPressEvent(event)

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self.emailTab.close()
        super().closeEvent(event)


def _keys(first: str, standard: QKeySequence.StandardKey) -> list[QKeySequence]:
    """``first``, then the platform's own keys for ``standard`` (none on some platforms)."""
    keys = [QKeySequence(first)]
    keys += [k for k in QKeySequence.keyBindings(standard) if k not in keys]
    return keys


def _attach_dialog_factory(store: MailStore) -> Callable[[str, int, QWidget], QDialog]:
    def factory(code: str, doc_id: int, parent: QWidget) -> QDialog:
        from xtmail.dialogs.attach_email import AttachEmailDialog

        return AttachEmailDialog(store, code, doc_id, parent)

    return factory


class DemoMainWindow(QMainWindow):
    """The ERP-like main window: document types on the left, their records on the right.

    Signals:
        documentOpened(str code, int doc_id): a document window was opened.
    """

    documentOpened = pyqtSignal(str, int)

    def __init__(self, host: MailHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        store = host.store()
        if store is None:
            raise RuntimeError("start the MailHost before opening its windows")
        self._host = host
        self._store = store
        self._rows: list[DocumentRow] = []
        self._windows: list[DocumentWindow] = []
        self._tasks = TaskOwner("Demo main window", self._on_task_failed, self)
        self._preferences: EmailPreferencesDialog | None = None
        host.setPromptParent(self)
        self.setWindowTitle(self.tr("xTuple ERP (xtmail demo)"))
        self.resize(980, 620)

        splitter = QSplitter(self)
        self.typeList = QListWidget(splitter)
        for doc in registry.DOCUMENT_TYPES:
            item = QListWidgetItem(doc.label, self.typeList)
            item.setData(Qt.ItemDataRole.UserRole, doc.code)
        self.recordTable = QTableWidget(0, 2, splitter)
        self.recordTable.setHorizontalHeaderLabels([self.tr("Number"), self.tr("Contact")])
        self.recordTable.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.recordTable.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.recordTable.horizontalHeader().setStretchLastSection(True)  # type: ignore[union-attr]
        splitter.setStretchFactor(1, 1)
        self.setCentralWidget(splitter)
        self.statusBar().showMessage(self.tr("Double-click a record to open it."))  # type: ignore[union-attr]
        self.mailStatusLabel = QLabel(host.statusText(), self)
        self.statusBar().addPermanentWidget(self.mailStatusLabel)  # type: ignore[union-attr]
        host.statusChanged.connect(self.mailStatusLabel.setText)

        file_menu = _menu(self, self.tr("&File"))
        quit_action = QAction(self.tr("&Quit"), self)
        quit_action.setShortcuts(_keys("Ctrl+Q", QKeySequence.StandardKey.Quit))
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        edit_menu = _menu(self, self.tr("&Edit"))
        self.preferencesAction = QAction(self.tr("User &Preferences..."), self)
        # Ctrl+, as documented (docs/demo.md), whatever the platform binds besides: some
        # bind nothing to Preferences, and the key did nothing there.
        self.preferencesAction.setShortcuts(_keys("Ctrl+,", QKeySequence.StandardKey.Preferences))
        self.preferencesAction.triggered.connect(self.openPreferences)
        edit_menu.addAction(self.preferencesAction)

        self.typeList.currentRowChanged.connect(self._type_changed)
        self.recordTable.cellDoubleClicked.connect(self._open_row)

    # -- records --------------------------------------------------------------------------
    def currentCode(self) -> str:
        item = self.typeList.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item else ""

    def selectDocumentType(self, code: str) -> None:
        for row in range(self.typeList.count()):
            item = self.typeList.item(row)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == code:
                self.typeList.setCurrentRow(row)
                return

    def _type_changed(self, row: int) -> None:
        code = self.currentCode()
        if code:
            self._tasks.start("records", self._load, code)
        else:
            self._tasks.cancel("records")

    async def _load(self, code: str) -> None:
        rows = await self._store.list_documents(code)
        self._rows = rows
        self.recordTable.setRowCount(len(rows))
        for i, row in enumerate(rows):
            self.recordTable.setItem(i, 0, QTableWidgetItem(row.number))
            contact = row.contact_name or row.contact_email
            self.recordTable.setItem(i, 1, QTableWidgetItem(contact))

    def recordCount(self) -> int:
        return len(self._rows)

    def _open_row(self, row: int, _column: int = 0) -> None:
        self.openDocument(self.currentCode(), self._rows[row].doc_id)

    def openDocument(self, code: str, doc_id: int) -> DocumentWindow:
        doc = registry.by_code(code)
        row = next(r for r in self._rows if r.doc_id == doc_id)
        window = DocumentWindow(
            self._store, doc, row, own_addresses=tuple(self._host.ownAddresses()), parent=self
        )
        self._host.registerTab(window.emailTab)
        window.destroyed.connect(self._forget_windows)
        self._windows.append(window)
        window.show()
        self.documentOpened.emit(code, doc_id)
        return window

    def _forget_windows(self) -> None:
        self._windows = [w for w in self._windows if _alive(w)]

    def documentWindows(self) -> list[DocumentWindow]:
        return [w for w in self._windows if _alive(w)]

    # -- preferences and status ---------------------------------------------------------------
    def openPreferences(self) -> None:
        if self._preferences is None:
            self._preferences = self._host.preferencesDialog(self)
        self._preferences.open()

    def preferencesDialog(self) -> EmailPreferencesDialog | None:
        return self._preferences

    def _on_task_failed(self, _purpose: str, exc: Exception) -> None:
        # The window stays usable: choosing the document type again reads the records again.
        text = failure_text(exc).replace("\n", " ")
        self._show_status(self.tr("Could not load records: {0}").format(text))

    def _show_status(self, text: str) -> None:
        self.statusBar().showMessage(text)  # type: ignore[union-attr]

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self._tasks.cancel_all()
        for window in self.documentWindows():
            window.close()
        super().closeEvent(event)


def _menu(window: QMainWindow, title: str) -> QMenu:
    bar = window.menuBar()
    menu = bar.addMenu(title) if bar is not None else None
    if menu is None:
        raise RuntimeError("Qt could not create the menu bar")
    return menu


def _alive(widget: QWidget) -> bool:
    from PyQt6 import sip

    return not sip.isdeleted(widget)


# -- the application ------------------------------------------------------------------------

#: What Qt's offscreen platform says about every window it shows; nothing a user can act on.
_OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints()"


def quiet_offscreen_warnings() -> Callable[..., None] | None:
    """Drop the offscreen platform's per-window warning; every other message passes.

    Returns the message handler it replaced (to restore it with qInstallMessageHandler).
    """
    from PyQt6.QtCore import QMessageLogContext, QtMsgType, qInstallMessageHandler

    previous: Callable[[QtMsgType, QMessageLogContext, str | None], None] | None = None

    def handler(kind: QtMsgType, context: QMessageLogContext, message: str | None) -> None:
        if message == _OFFSCREEN_NOISE and kind == QtMsgType.QtWarningMsg:
            return
        if previous is not None:
            previous(kind, context, message)
        else:
            sys.stderr.write(f"{message}\n")

    previous = qInstallMessageHandler(handler)
    return previous


def run(
    dsn: str,
    settings: QSettings,
    *,
    screenshot: str | None = None,
    open_document: tuple[str, str] | None = None,
    quit_after: float | None = None,
) -> int:
    """Run the demo on ``dsn`` until its main window closes (or ``quit_after`` seconds).

    ``screenshot`` saves a picture of the main window and of an open document window (for
    machines without a screen); ``open_document`` (code, number) opens one at start.
    """
    from PyQt6.QtWidgets import QApplication

    from xtmail.app.host import MailHost, make_event_loop

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(["xtmail-demo"])
    # The main window's destruction ends main(); Qt must not stop the loop before the
    # service and the store are closed.
    app.setQuitOnLastWindowClosed(False)
    loop = make_event_loop(app)
    asyncio.set_event_loop(loop)
    closed: asyncio.Future[None] = loop.create_future()

    async def main() -> None:
        host = MailHost(dsn, settings)
        await host.start()
        window = DemoMainWindow(host)

        def on_closed(*_: object) -> None:
            if not closed.done():
                closed.set_result(None)

        window.destroyed.connect(on_closed)
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        window.show()
        try:
            if open_document or screenshot:
                code, number = open_document or ("S", "50123")
                window.selectDocumentType(code)
                await _until(lambda: window.recordCount() > 0)
                row = next((r for r in window._rows if r.number == number), None)
                if row is not None:
                    doc_window = window.openDocument(code, row.doc_id)
                    await _until(lambda: doc_window.emailTab.model().rowCount() > 0)
                    doc_window.emailTab.view().selectRow(0)
                    await asyncio.sleep(0.3)
                    if screenshot:
                        base = screenshot.removesuffix(".png")
                        window.grab().save(f"{base}-main.png")
                        doc_window.grab().save(f"{base}-sales-order.png")
                        print(f"screenshots: {base}-main.png {base}-sales-order.png")
            if quit_after is not None:
                await asyncio.wait_for(asyncio.shield(closed), quit_after)
            else:
                await closed
        except TimeoutError:
            window.close()
        finally:
            await host.aclose()

    with loop:
        loop.run_until_complete(main())
    return 0


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - widget state, polled for the screenshot only
            await asyncio.sleep(0.05)
