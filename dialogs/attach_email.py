"""The Attach Email dialog: find mail in the database and tie it to a document.

Decisions (docs/attach_dialog.md):

* Searching starts 250 ms after the last keystroke (a single-shot QTimer restarted on each
  edit); Enter in the search box searches at once. Every search is a database query
  (``MailStore.search_messages``), never rows hidden in the view.
* Only the newest answer counts: starting a search cancels the one under way, and a
  generation number drops any answer that still arrives for an older one.
* The dialog owns its tasks (a :class:`~xtmail.widgets.tasks.TaskOwner`) and cancels them
  when it closes. It is opened with ``open()``; ``exec()`` inside a coroutine would break
  the qasync loop.
* Up to 200 results, newest first, in the Email tab's own list model
  (:class:`~xtmail.widgets.message_model.MessageListModel`); the status line says when
  there are more.
* The contact chooser is a line edit completing from ``MailStore.search_contacts`` (name,
  number or any address); its list button offers the document's own contacts.
* A failed search or attach says so in the status line with the error's own text; anything
  that is not an xtmail error is a bug, logged with its traceback.
* A search that failed because the database is away (stopped, restarting, frozen) is run
  again by itself after a countdown (5 s, then longer), with "Retry now" beside the status;
  what was found before stays listed meanwhile.
* While a search runs, a Stop button shows beside the status, and Esc stops the search
  instead of closing the dialog (a second Esc closes it).
* The message under the cursor is previewed below the list (headers and text, as in the
  Email tab), so a user can tell two similar messages apart before attaching one.
* Messages already tied to the document are listed greyed out, with "Already attached"
  in their tooltip, and cannot be selected: attaching them again would change nothing.
* From, To and Cc show the names; the addresses are in the tooltips. The subject, the
  column a user reads, gets the room.
* A contact typed without choosing it from the list is applied when the field is left
  (or with Enter): the best match for the text, as the list would have offered it.

The database is reached only through the store, so this module loads without a driver.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from PyQt6 import QtCore
from PyQt6.QtCore import (
    QAbstractListModel,
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    pyqtSignal,
)
from PyQt6.QtGui import QFocusEvent, QKeyEvent, QShowEvent
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from xtmail.sync.errors import XtmailError
from xtmail.sync.mail import registry
from xtmail.widgets.email_tab import preview_text
from xtmail.widgets.message_model import EmlIdRole, MessageListModel
from xtmail.widgets.tasks import RetryCountdown, TaskOwner, failure_text, mends_by_itself

if TYPE_CHECKING:
    from xtmail.sync.values import ContactRow, MessageDetail, MessageRow

__all__ = [
    "AttachEmailDialog",
    "AttachStore",
    "ContactIdRole",
    "ContactListModel",
    "EmlIdRole",
]

log = logging.getLogger(__name__)

# PyQt6's type stubs leave pyqtProperty out.
pyqtProperty: Any = QtCore.pyqtProperty  # type: ignore[attr-defined]

#: The contact's ``cntct_id`` (int) in :class:`ContactListModel`.
ContactIdRole: Final = Qt.ItemDataRole.UserRole.value + 2

_DISPLAY: Final = Qt.ItemDataRole.DisplayRole.value
_EDIT: Final = Qt.ItemDataRole.EditRole.value
_TOOLTIP: Final = Qt.ItemDataRole.ToolTipRole.value
_FLAGS: Final = (
    Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren
)
_AnyIndex = QModelIndex | QPersistentModelIndex


class AttachStore(Protocol):
    """What the dialog needs of the store: :class:`xtmail.sync.db.mailstore.MailStore`."""

    async def attach(self, eml_ids: Sequence[int], code: str, doc_id: int) -> int: ...

    async def document_number(self, code: str, doc_id: int) -> str | None: ...

    async def document_contacts(self, code: str, doc_id: int) -> list[ContactRow]: ...

    async def search_messages(
        self, text: str, *, contact_id: int | None = None, limit: int = 200
    ) -> list[MessageRow]: ...

    async def search_contacts(self, text: str, limit: int = 50) -> list[ContactRow]: ...

    async def message(self, eml_id: int) -> MessageDetail: ...

    async def tied_ids(self, eml_ids: Sequence[int], code: str, doc_id: int) -> set[int]: ...


# -- models ------------------------------------------------------------------------------------


class ContactListModel(QAbstractListModel):
    """Contacts for the chooser: shown as "Name <address> (number)", completed as
    "Name <address>", with the contact's id in :data:`ContactIdRole`.

    Signals: only those of ``QAbstractItemModel``.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[ContactRow] = []

    def setRows(self, rows: Sequence[ContactRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def contact(self, row: int) -> ContactRow:
        return self._rows[row]

    def contactById(self, cntct_id: int) -> ContactRow | None:
        return next((c for c in self._rows if c.cntct_id == cntct_id), None)

    def rowCount(self, parent: _AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def flags(self, index: _AnyIndex) -> Qt.ItemFlag:
        return _FLAGS if index.isValid() else Qt.ItemFlag.NoItemFlags

    def data(self, index: _AnyIndex, role: int = _DISPLAY) -> Any:
        if not index.isValid() or index.parent().isValid():
            return None
        contact = self._rows[index.row()]
        if role == ContactIdRole:
            return contact.cntct_id
        if role == _EDIT:
            return contact_label(contact)
        if role in (_DISPLAY, _TOOLTIP):
            return f"{contact_label(contact)} ({contact.number})"
        return None


def contact_label(contact: ContactRow) -> str:
    """How a chosen contact reads in the chooser: "Name <address>"."""
    name = contact.name or contact.number
    return f"{name} <{contact.email}>" if contact.email else name


# -- the dialog --------------------------------------------------------------------------------

_SEARCH_AGAIN = "Press Enter in the search box to try again."
_ATTACH_AGAIN = "Press Attach to try again."
#: Said after the user stopped waiting for a search.
STOPPED_TEXT: Final = "Stopped waiting for the database. Press Enter in the search box to " \
    "search again."


class AttachEmailDialog(QDialog):
    """Choose messages from the database and tie them to one document.

    ``store`` is a :class:`xtmail.sync.db.mailstore.MailStore` (or anything with the
    :class:`AttachStore` methods); ``code`` and ``doc_id`` name the document, as in
    ``xtbatch.emlassc``. All three can also be set later (:meth:`setStore`,
    :meth:`setDocument`). Open it with ``open()``.

    Signals:

    * ``messagesAttached(list)``: the ``eml_id`` of every message OK tied to the document
      (emitted just before the dialog accepts).
    * ``searchFinished(int)``: a search finished with this many rows shown.
    * ``contactChosen(int)``: the contact filter changed to this ``cntct_id`` (-1: none).
    """

    messagesAttached = pyqtSignal(list)
    searchFinished = pyqtSignal(int)
    contactChosen = pyqtSignal(int)

    def __init__(self, store: AttachStore | None = None, code: str = "", doc_id: int = -1,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._code = code
        self._doc_id = doc_id
        self._contact: ContactRow | None = None
        self._limit = 200
        self._tasks = TaskOwner("Attach Email", self._on_task_failed, self)
        # Bumped by every search started, so that an answer for an older one is dropped.
        self._generation = 0
        self._count_text = ""
        self._attaching = False
        self._started = False
        # The text the contact list answers ("" for the document's own contacts), and
        # whether Enter asked for the best match of a search still to come.
        self._contacts_text = ""
        self._choose_first = False
        # A search that failed because the database is away is run again by itself.
        self._countdown = RetryCountdown(self)
        self._countdown.ticked.connect(self._on_countdown)
        self._countdown.due.connect(self._retry)
        self._retry_text = ""
        self._heading_failed = False

        self.setWindowTitle(self.tr("Attach Email"))
        self.setObjectName("attachEmailDialog")
        self.resize(920, 560)

        self._heading = QLabel(self)
        self._heading.setObjectName("headingLabel")

        self._contact_edit = QLineEdit(self)
        self._contact_edit.setObjectName("contactEdit")
        self._contact_edit.setPlaceholderText(
            self.tr("Any contact: type a name, number or address"))
        self._contact_edit.setClearButtonEnabled(True)
        self._contacts = ContactListModel(self)
        self._completer = QCompleter(self._contacts, self)
        self._completer.setObjectName("contactCompleter")
        # The model already holds the matches from the database; the completer must not
        # filter them again by its own rules (a match on the address would be hidden).
        self._completer.setCompletionMode(QCompleter.CompletionMode.UnfilteredPopupCompletion)
        self._completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._contact_edit.setCompleter(self._completer)
        self._contact_button = QToolButton(self)
        self._contact_button.setObjectName("contactListButton")
        self._contact_button.setArrowType(Qt.ArrowType.DownArrow)
        self._contact_button.setToolTip(self.tr("Show this document's contacts"))

        self._search_edit = QLineEdit(self)
        self._search_edit.setObjectName("searchEdit")
        self._search_edit.setPlaceholderText(
            self.tr("Words of the subject, text or addresses; or part of an address (ada@exa)"))
        self._search_edit.setClearButtonEnabled(True)

        self._results = MessageListModel(None, self)
        self._view = QTableView(self)
        self._view.setObjectName("resultsView")
        self._view.setModel(self._results)
        # Our own selection model, typed as never missing; the view's default one stays its
        # child and goes with it.
        self._selection = QItemSelectionModel(self._results, self._view)
        self._view.setSelectionModel(self._selection)
        self._view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self._view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._view.setWordWrap(False)
        rows_header, header = self._view.verticalHeader(), self._view.horizontalHeader()
        if rows_header is not None:
            rows_header.setVisible(False)
        if header is not None:
            header.setStretchLastSection(True)
            header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
            # Names only in From/To/Cc (addresses in the tooltips): the subject gets the room.
            for column, width in enumerate((125, 140, 140, 90)):
                header.resizeSection(column, width)
        self._preview = QPlainTextEdit(self)
        self._preview.setObjectName("messagePreview")
        self._preview.setReadOnly(True)
        self._preview.setTabChangesFocus(True)
        self._preview.setPlaceholderText(self.tr("Select a message to read it here."))
        self._splitter = QSplitter(Qt.Orientation.Vertical, self)
        self._splitter.addWidget(self._view)
        self._splitter.addWidget(self._preview)
        self._splitter.setStretchFactor(0, 3)
        self._splitter.setStretchFactor(1, 2)
        self._tied: set[int] = set()

        self._status = QLabel(self)
        self._status.setObjectName("statusLabel")
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._stop = QPushButton(self.tr("Stop"), self)
        self._stop.setObjectName("stopSearchButton")
        self._stop.setToolTip(self.tr("Stop waiting for the database (Esc)"))
        self._stop.setAutoDefault(False)
        self._stop.hide()
        self._retry_now = QPushButton(self.tr("Retry now"), self)
        self._retry_now.setObjectName("retryNowButton")
        self._retry_now.setToolTip(self.tr("Search again now"))
        self._retry_now.setAutoDefault(False)
        self._retry_now.hide()

        self._buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self._buttons.setObjectName("buttonBox")
        self._ok = QPushButton(self.tr("&Attach"), self)
        self._ok.setObjectName("attachButton")
        self._ok.setToolTip(self.tr("Tie the selected messages to the document"))
        self._buttons.addButton(self._ok, QDialogButtonBox.ButtonRole.AcceptRole)
        self._ok.setDefault(True)
        self._ok.setEnabled(False)

        contact_row = QHBoxLayout()
        contact_row.setContentsMargins(0, 0, 0, 0)
        contact_row.addWidget(self._contact_edit, 1)
        contact_row.addWidget(self._contact_button)
        form = QFormLayout()
        form.addRow(self.tr("&Contact:"), contact_row)
        form.addRow(self.tr("&Search:"), self._search_edit)
        label = form.labelForField(contact_row)
        if isinstance(label, QLabel):
            label.setBuddy(self._contact_edit)
        bottom = QHBoxLayout()
        bottom.addWidget(self._status, 1)
        bottom.addWidget(self._stop, 0, Qt.AlignmentFlag.AlignTop)
        bottom.addWidget(self._retry_now, 0, Qt.AlignmentFlag.AlignTop)
        bottom.addWidget(self._buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(self._heading)
        layout.addLayout(form)
        layout.addWidget(self._splitter, 1)
        layout.addLayout(bottom)
        self.setTabOrder(self._contact_edit, self._search_edit)
        self.setTabOrder(self._search_edit, self._view)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(250)
        self._search_timer.timeout.connect(self.searchNow)
        self._contact_timer = QTimer(self)
        self._contact_timer.setSingleShot(True)
        self._contact_timer.setInterval(250)
        self._contact_timer.timeout.connect(self._search_contacts)

        self._search_edit.installEventFilter(self)
        self._contact_edit.installEventFilter(self)
        self._search_edit.textEdited.connect(self._on_search_edited)
        self._contact_edit.textEdited.connect(self._on_contact_edited)
        self._completer.activated[QModelIndex].connect(self._on_contact_activated)
        self._contact_button.clicked.connect(self.showContactList)
        self._buttons.accepted.connect(self.accept)
        self._buttons.rejected.connect(self.reject)
        self._stop.clicked.connect(self.stopSearch)
        self._retry_now.clicked.connect(self._retry)
        self._selection.selectionChanged.connect(self._on_selection_changed)
        self._selection.currentRowChanged.connect(self._on_current_changed)
        self._update_heading()

    # -- Qt-shaped configuration -----------------------------------------------------------------
    def store(self) -> AttachStore | None:
        return self._store

    def setStore(self, store: AttachStore | None) -> None:
        self._store = store
        if self._started:
            self._tasks.start("heading", self._load_document)
            self.searchNow()

    def document(self) -> tuple[str, int] | None:
        """``(code, doc_id)`` of the document, or ``None`` when none is set."""
        return (self._code, self._doc_id) if self._code and self._doc_id >= 0 else None

    def setDocument(self, code: str, doc_id: int) -> None:
        self._code, self._doc_id = code, doc_id
        self._update_heading()
        if self._started:
            self._tasks.start("heading", self._load_document)

    def searchText(self) -> str:
        return self._search_edit.text()

    def setSearchText(self, text: str) -> None:
        """Set the search text and search at once."""
        self._search_edit.setText(text)
        self.searchNow()

    def contactId(self) -> int:
        """The contact the mail is limited to, or -1."""
        return -1 if self._contact is None else self._contact.cntct_id

    def setContact(self, contact: ContactRow | None) -> None:
        """Limit the search to ``contact``'s mail (``None``: any contact) and search."""
        if contact == self._contact:
            return
        self._contact = contact
        self._contact_edit.setText("" if contact is None else contact_label(contact))
        self.contactChosen.emit(self.contactId())
        self.searchNow()

    def searchDelay(self) -> int:
        """Milliseconds between the last keystroke and the search."""
        return self._search_timer.interval()

    def setSearchDelay(self, msec: int) -> None:
        self._search_timer.setInterval(max(0, msec))
        self._contact_timer.setInterval(max(0, msec))

    searchDelayMs = pyqtProperty(int, fget=searchDelay, fset=setSearchDelay)

    def resultLimit(self) -> int:
        """Most messages shown; the newest are kept."""
        return self._limit

    def setResultLimit(self, limit: int) -> None:
        self._limit = max(1, limit)

    resultLimitCount = pyqtProperty(int, fget=resultLimit, fset=setResultLimit)

    def resultModel(self) -> MessageListModel:
        return self._results

    def contactModel(self) -> ContactListModel:
        return self._contacts

    def contactCompleter(self) -> QCompleter:
        return self._completer

    def preview(self) -> QPlainTextEdit:
        """The text of the message under the cursor."""
        return self._preview

    def resultsView(self) -> QTableView:
        return self._view

    def statusText(self) -> str:
        return self._status.text()

    def isSearching(self) -> bool:
        return self._tasks.is_running("search")

    def isRetryScheduled(self) -> bool:
        """Whether a search that failed is run again by itself (the database was away)."""
        return self._countdown.isActive()

    def selectedIds(self) -> list[int]:
        """The ``eml_id`` of the selected messages, in list order."""
        rows = sorted(i.row() for i in self._selection.selectedRows())
        return [self._results.emlId(r) for r in rows]

    # -- actions -----------------------------------------------------------------------------------
    def searchNow(self, *_: object) -> None:
        """Search with the current text and contact at once (a running search is dropped)."""
        self._search_timer.stop()
        self._countdown.stop()
        self._retry_now.hide()
        self._generation += 1
        if self._store is None:
            self._show_status("No mail database is connected to this dialog.\n"
                              "Close it and try again from the document's Email tab.")
            return
        self._show_status(self.tr("Searching…"))
        self._tasks.start("search", self._search, self._generation, self._search_edit.text(),
                          self._contact.cntct_id if self._contact else None)
        self._stop.show()

    def stopSearch(self, *_: object) -> None:
        """Stop waiting for the search under way (Stop, or Esc while searching); what was
        found before stays. Automatic retries stop too."""
        if not self._tasks.is_running("search"):
            return
        self._tasks.cancel("search")
        self._generation += 1
        self._countdown.stop()
        self._retry_now.hide()
        self._stop.hide()
        self._show_status(STOPPED_TEXT)

    def _retry(self, *_: object) -> None:
        """Run the failed search again (the countdown ran out, or Retry now)."""
        if self._heading_failed:
            self._tasks.start("heading", self._load_document)
        self.searchNow()
        if self._retry_text:
            self._show_status(f"{self._retry_text}\nRetrying now…")

    def _on_countdown(self, seconds: int) -> None:
        if self._retry_text:
            self._show_status(f"{self._retry_text}\nRetrying in {seconds} s.")

    def showContactList(self, *_: object) -> None:
        """Open the contact list: the document's contacts, or the matches for the text."""
        self._contact_edit.setFocus()
        if self._contacts.rowCount() == 0 and self.document() is not None:
            self._tasks.start("contacts", self._load_document_contacts, True)
            return
        self._completer.complete()

    def accept(self) -> None:
        """OK: tie the selected messages to the document, then close."""
        ids = self.selectedIds()
        if self._attaching or not ids:
            return
        document = self.document()
        if self._store is None or document is None:
            self._show_status("No document to attach to.\nClose the dialog and open it from "
                              "the document's Email tab.")
            return
        self._attaching = True
        self._ok.setEnabled(False)
        self._show_status(self.tr("Attaching…"))
        self._tasks.start("attach", self._attach, ids, *document)

    def done(self, result: int) -> None:
        """Closing, either way, stops every search and attach still under way."""
        self._search_timer.stop()
        self._contact_timer.stop()
        self._countdown.reset()
        self._retry_text = ""
        self._retry_now.hide()
        self._stop.hide()
        self._tasks.cancel_all()
        self._generation += 1
        self._attaching = False
        self._started = False  # opened again, it searches again
        super().done(result)

    # -- events ------------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent | None) -> None:
        super().showEvent(event)
        if not self._started:
            self._started = True
            self._search_edit.setFocus()
            self._tasks.start("heading", self._load_document)
            self.searchNow()

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        # Esc while a search runs stops the search (wherever the focus is); QDialog would
        # close the dialog, which a second Esc still does.
        if event is not None and event.key() == Qt.Key.Key_Escape and self.isSearching():
            self.stopSearch()
            event.accept()
            return
        super().keyPressEvent(event)

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        # Enter in a text field acts on that field; QDialog would press Attach instead.
        if (isinstance(event, QKeyEvent) and event.type() == QEvent.Type.KeyPress
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)):
            if watched is self._search_edit:
                self.searchNow()
                return True
            if watched is self._contact_edit:
                self._choose_best_contact()
                return True
        if (watched is self._contact_edit and isinstance(event, QFocusEvent)
                and event.type() == QEvent.Type.FocusOut
                and event.reason() != Qt.FocusReason.PopupFocusReason
                and self._started and self.isVisible()):
            # Left without choosing from the list (editingFinished does not come while the
            # completer's list is open): the text typed still filters.
            popup = self._completer.popup()
            if popup is not None:
                popup.hide()
            self._choose_best_contact()
        return super().eventFilter(watched, event)

    # -- slots -------------------------------------------------------------------------------------
    def _on_search_edited(self, _text: str) -> None:
        self._search_timer.start()

    def _on_contact_edited(self, text: str) -> None:
        if self._contact is not None:
            # Editing the chosen contact's text drops the filter until a contact is chosen.
            self._contact = None
            self.contactChosen.emit(-1)
            self._search_timer.start()
        self._choose_first = False
        if text.strip():
            self._contact_timer.start()
        else:
            # Cleared: the list offers the document's contacts again.
            self._contact_timer.stop()
            self._tasks.start("contacts", self._load_document_contacts, False)

    def _on_contact_activated(self, index: QModelIndex) -> None:
        contact = self._contacts.contactById(index.data(ContactIdRole))
        if contact is not None:
            self._choose_contact(contact)

    def _choose_contact(self, contact: ContactRow) -> None:
        self._contact_timer.stop()
        self._choose_first = False
        self.setContact(contact)

    def _choose_best_contact(self) -> None:
        """Enter in the contact field: take the best match for the text typed, waiting for
        it when its search is still to come."""
        text = self._contact_edit.text()
        if self._contact is not None or not text.strip():
            return
        if self._contacts_text == text and not self._tasks.is_running("contacts"):
            if self._contacts.rowCount():
                self._choose_contact(self._contacts.contact(0))
            return
        self._choose_first = True
        self._contact_timer.stop()
        self._search_contacts()

    def _on_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection
                              ) -> None:
        self._ok.setEnabled(bool(self.selectedIds()) and not self._attaching)
        if not self._attaching and not self._tasks.is_running("search"):
            self._show_status(self._count_status())

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._preview.clear()
        if current.isValid() and self._store is not None:
            self._tasks.start("preview", self._load_preview, self._results.emlId(current.row()))
        else:
            self._tasks.cancel("preview")

    async def _load_preview(self, eml_id: int) -> None:
        detail = await self._require_store().message(eml_id)
        current = self._view.currentIndex()
        if current.isValid() and self._results.emlId(current.row()) == eml_id:
            self._preview.setPlainText(preview_text(detail))

    # -- tasks -------------------------------------------------------------------------------------
    def _on_task_failed(self, purpose: str, exc: Exception) -> None:
        if purpose == "attach":
            self._attaching = False
            self._ok.setEnabled(bool(self.selectedIds()))
        if purpose == "search":
            self._stop.hide()
        if purpose == "heading":
            self._heading_failed = True
        store = self._store
        if (purpose == "search" and mends_by_itself(exc) and store is not None
                and not getattr(store, "closed", False)):
            # The database is away: search again by itself until it answers. What was
            # found before stays in the list meanwhile.
            self._retry_text = f"Searching failed. {failure_text(exc)}"
            self._retry_now.show()
            self._countdown.stop()
            self._on_countdown(self._countdown.schedule())
            return
        if purpose == "search":
            self._retry_text = ""
            self._retry_now.hide()
        if purpose == "preview":
            self._preview.setPlainText(failure_text(exc))
            return
        if purpose in ("search", "attach"):
            retry = _ATTACH_AGAIN if purpose == "attach" else _SEARCH_AGAIN
            verb = "Attaching" if purpose == "attach" else "Searching"
            self._show_status(f"{verb} failed. {failure_text(exc, retry)}")
            if purpose == "search":
                self._results.clear()
        elif isinstance(exc, XtmailError):
            # The heading and the contact list are conveniences: a failure there shows up
            # again, with its explanation, in the next search.
            log.warning("Attach Email: %s failed: %s", purpose, exc)

    async def _search(self, generation: int, text: str, contact_id: int | None) -> None:
        store = self._require_store()
        rows = await store.search_messages(text, contact_id=contact_id, limit=self._limit + 1)
        if generation != self._generation:
            return  # a newer search started meanwhile
        self._stop.hide()
        self._countdown.reset()
        self._retry_text = ""
        self._retry_now.hide()
        shown = rows[: self._limit]
        document = self.document()
        tied = set()
        if document is not None and shown:
            tied = await store.tied_ids([r.eml_id for r in shown], *document)
            if generation != self._generation:
                return
        self._tied = tied
        self._preview.clear()
        self._results.setRows(shown)
        self._results.setUnavailable(
            dict.fromkeys(tied, self.tr("Already attached to this document")))
        self._count_text = _count_text(len(rows), self._limit, text, contact_id)
        self._show_status(self._count_status())
        self.searchFinished.emit(len(shown))

    def _search_contacts(self) -> None:
        self._tasks.start("contacts", self._find_contacts, self._contact_edit.text())

    async def _find_contacts(self, text: str) -> None:
        store = self._require_store()
        rows = await store.search_contacts(text)
        if text != self._contact_edit.text() or self._contact is not None:
            return  # typed on or chose meanwhile
        self._contacts.setRows(rows)
        self._contacts_text = text
        if self._choose_first:
            if rows:
                self._choose_contact(rows[0])
            self._choose_first = False
        elif rows and self._contact_edit.hasFocus():
            self._completer.complete()

    async def _load_document_contacts(self, show: bool) -> None:
        store, document = self._require_store(), self.document()
        if document is None:
            return
        rows = await store.document_contacts(*document)
        if self._contact_edit.text().strip() or self._contact is not None:
            return
        self._contacts.setRows([r for r in rows if r.cntct_id])
        self._contacts_text = ""
        if show and rows:
            self._completer.complete()

    async def _load_document(self) -> None:
        store, document = self._require_store(), self.document()
        if document is None:
            return
        number = await store.document_number(*document)
        self._heading_failed = False
        self._update_heading(number)
        await self._load_document_contacts(False)

    async def _attach(self, ids: list[int], code: str, doc_id: int) -> None:
        store = self._require_store()
        await store.attach(ids, code, doc_id)
        self._attaching = False
        self.messagesAttached.emit(ids)
        QDialog.accept(self)

    # -- helpers -----------------------------------------------------------------------------------
    def _require_store(self) -> AttachStore:
        if self._store is None:
            raise XtmailError("No mail database is connected to this dialog.",
                              hint="Close it and open it again from the document's Email tab.")
        return self._store

    def okButton(self) -> QPushButton:
        """The Attach (OK) button."""
        return self._ok

    def _update_heading(self, number: str | None = None) -> None:
        doc = registry.find(self._code) if self._code else None
        if doc is None:
            self._heading.setText(self.tr("Choose messages to attach."))
            return
        what = f"{doc.label} {number}" if number else doc.label
        self._heading.setText(
            f"Choose messages to attach to <b>{_escape(what)}</b>. "
            "Select several with Ctrl or Shift.")

    def _count_status(self) -> str:
        selected = len(self.selectedIds())
        if not selected:
            return self._count_text
        return f"{self._count_text} — {selected} selected" if self._count_text else (
            f"{selected} selected")

    def _show_status(self, text: str) -> None:
        self._status.setText(text)


def _count_text(found: int, limit: int, text: str, contact_id: int | None) -> str:
    """What the status line says about a search's result."""
    if found > limit:
        return (f"More than {limit} messages; the newest {limit} are shown. "
                "Add words to narrow the search.")
    if found:
        return "1 message" if found == 1 else f"{found} messages"
    if contact_id is not None and not text.strip():
        return "This contact has no mail in the database."
    if contact_id is not None:
        return ("No messages found. Try fewer or shorter words, or clear the contact to "
                "search all mail.")
    return ("No messages found. Try fewer or shorter words, or part of an address with "
            "its @ (ada@exa).")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
