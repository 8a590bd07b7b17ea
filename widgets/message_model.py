"""The message list model of the Email tab and of the Attach dialog's results.

Decisions:

* One model for both lists: the tab loads a document's mail from the store
  (:meth:`MessageListModel.load`); the dialog hands it the rows of a search
  (:meth:`MessageListModel.setRows`). Both show the same columns, roles and tooltips.
* Loading is asynchronous and explicit: :meth:`MessageListModel.load`, :meth:`reload` and
  :meth:`loadMore` are coroutines the owner awaits on the qasync loop, in its tasks. The
  model does not implement ``canFetchMore``/``fetchMore``: those are synchronous calls a
  view makes while scrolling, and the Email tab shows a "Show more" button instead, so the
  user decides when older mail is read from the database.
* Pages are ``pageSize`` rows (100); one row more is asked for to learn whether more exist,
  which costs nothing extra where a ``count(*)`` would be a second query.
* Sorting sorts the rows already loaded (the most recent ones), in memory; it does not ask
  the database again. The list is about recent mail, and "the 100 most recent, by sender"
  is what a user clicking the From header expects to see, not the 100 alphabetically
  first senders of all time. Rows loaded later are merged into the chosen order. Text
  columns sort ignoring case; messages without a date sort as the oldest. Ties keep the
  newest message first.
* Older pages are read with an offset. When mail arrives between two pages, rows shift and
  one may come twice: rows already present are skipped (by message id).
* Rows listed because the message is tied to one of the document's contacts rather than to
  the document (CRM Account, Customer, Vendor, Employee) are shown in italics, with the
  tooltip :data:`VIA_CONTACT_TOOLTIP`, and answer ``True`` for :data:`ViaContactRole`.
* Dates are shown in the computer's time zone as ``YYYY-MM-DD HH:MM``
  (:func:`xtmail.widgets.formatting.format_date`); the tooltip has the date as the sender
  wrote it, with seconds and offset.

psycopg is not imported here (Qt Designer loads this module); rows come from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from PyQt6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)
from PyQt6.QtGui import QColor, QFont, QIcon, QPainter, QPainterPath, QPen, QPixmap

from xtmail.widgets.formatting import format_date

if TYPE_CHECKING:
    from xtmail.sync.values import MessageRow

__all__ = [
    "COLUMNS",
    "NO_SUBJECT",
    "UNDATED_MARK",
    "UNDATED_TOOLTIP",
    "VIA_CONTACT_TOOLTIP",
    "AttachmentsRole",
    "EmlIdRole",
    "MessageListModel",
    "MessageSource",
    "ViaContactRole",
]

COLUMNS: Final = ("Date", "From", "To", "Cc", "Subject")
DATE, FROM, TO, CC, SUBJECT = range(len(COLUMNS))

VIA_CONTACT_TOOLTIP: Final = "Mail of a contact of this document"
#: Before the date of a message that has none of its own: the date shown is its arrival.
UNDATED_MARK: Final = "≈ "
UNDATED_TOOLTIP: Final = (
    "This message carries no usable date of its own; it is listed by when it was "
    "received: {}"
)
NO_SUBJECT: Final = "(no subject)"

#: The message's ``eml_id`` (int), in every column.
EmlIdRole: Final = Qt.ItemDataRole.UserRole.value + 1
#: ``True`` when the row is listed through a contact of the document, not the document.
ViaContactRole: Final = Qt.ItemDataRole.UserRole.value + 2
#: How many attachments the message has (int).
AttachmentsRole: Final = Qt.ItemDataRole.UserRole.value + 3

_DISPLAY: Final = Qt.ItemDataRole.DisplayRole.value
_TOOLTIP: Final = Qt.ItemDataRole.ToolTipRole.value
_FONT: Final = Qt.ItemDataRole.FontRole.value
_DECORATION: Final = Qt.ItemDataRole.DecorationRole.value

_AnyIndex = QModelIndex | QPersistentModelIndex

# A view asks for many roles per painted cell, most of which this model does not answer; the
# ones answered are checked before anything else, so the others cost one set lookup
# (painting is a hot path).
_ANSWERED: Final = frozenset(
    {_DISPLAY, _TOOLTIP, _FONT, _DECORATION, EmlIdRole, ViaContactRole, AttachmentsRole}
)
_ITEM_FLAGS: Final = (
    Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren
)


class MessageSource(Protocol):
    """What the model reads: :class:`xtmail.sync.db.mailstore.MailStore` satisfies it."""

    async def messages_for(
        self, code: str, doc_id: int, *, limit: int = 100, offset: int = 0
    ) -> list[MessageRow]: ...

    async def message_count(self, code: str, doc_id: int) -> int: ...


def _date_key(r: MessageRow) -> tuple[bool, float, int]:
    # eml_id last, so that equal dates keep a fixed order whatever order the rows came in.
    return (r.date is not None, r.date.timestamp() if r.date else 0.0, r.eml_id)


def _ordered(rows: Sequence[MessageRow], column: int, descending: bool) -> list[MessageRow]:
    """``rows`` sorted by ``column``; equal values newest first (two stable passes)."""
    newest_first = sorted(rows, key=_date_key, reverse=True)
    if column == DATE:
        return newest_first[::-1] if not descending else newest_first
    # What the cell shows is what is sorted. reverse=True keeps equal keys in their order
    # (the sort stays stable).
    if column == SUBJECT:
        return sorted(newest_first, key=lambda r: r.subject.casefold(), reverse=descending)
    part = column - FROM
    fields = ("sender", "to", "cc")
    return sorted(newest_first,
                  key=lambda r: (r.names[part] or getattr(r, fields[part])).casefold(),
                  reverse=descending)


_PAPERCLIP: QIcon | None = None


def paperclip_icon() -> QIcon:
    """The mark of a message with attachments: the theme's, else a drawn paperclip."""
    global _PAPERCLIP
    if _PAPERCLIP is None:
        icon = QIcon.fromTheme("mail-attachment")
        if icon.isNull():
            pixmap = QPixmap(16, 16)
            pixmap.fill(QColor(0, 0, 0, 0))
            painter = QPainter(pixmap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(QPen(QColor("#505050"), 1.4))
            path = QPainterPath()
            path.moveTo(10.5, 5)
            path.lineTo(10.5, 12)
            path.arcTo(5.5, 9.5, 5, 5, 0, -180)
            path.lineTo(5.5, 3.5)
            path.arcTo(5.5, 1, 4, 4, 180, -180)
            path.lineTo(9.5, 11)
            path.arcTo(6.5, 9.5, 3, 3, 0, -180)
            path.lineTo(6.5, 5)
            painter.drawPath(path)
            painter.end()
            icon = QIcon(pixmap)
        _PAPERCLIP = icon
    return _PAPERCLIP


class MessageListModel(QAbstractTableModel):
    """The messages of one document, newest first, loaded a page at a time.

    ``store`` is anything with the :class:`MessageSource` method (normally a
    ``MailStore``); it may be set later with :meth:`setStore`.

    Signals: only those of ``QAbstractItemModel`` (``modelReset`` after :meth:`load` and
    :meth:`reload`, ``rowsInserted`` after :meth:`loadMore`, ``layoutChanged`` after
    :meth:`sort`).
    """

    def __init__(
        self,
        store: MessageSource | None = None,
        parent: QObject | None = None,
        *,
        page_size: int = 100,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._page_size = max(1, page_size)
        self._rows: list[MessageRow] = []
        self._dates: dict[int, str] = {}
        self._document: tuple[str, int] | None = None
        self._has_more = False
        self._total = 0
        # Bumped by every change of what the model shows, so an answer that arrives after
        # the model moved on (another document, a newer reload) is dropped, not shown.
        self._generation = 0
        self._sort_column = DATE
        self._sort_order = Qt.SortOrder.DescendingOrder
        self._unavailable: dict[int, str] = {}
        self._italic = QFont()
        self._italic.setItalic(True)

    # -- configuration -------------------------------------------------------------------------
    def store(self) -> MessageSource | None:
        return self._store

    def setStore(self, store: MessageSource | None) -> None:
        """Read from ``store`` from now on; the rows shown so far are cleared."""
        self._store = store
        self.clear()

    def pageSize(self) -> int:
        return self._page_size

    def setPageSize(self, size: int) -> None:
        """Rows read per page (at least 1); applies from the next load."""
        self._page_size = max(1, int(size))

    def document(self) -> tuple[str, int] | None:
        """``(code, doc_id)`` of the document whose mail is shown, or ``None``."""
        return self._document

    # -- loading ---------------------------------------------------------------------------------
    def clear(self) -> None:
        """Show nothing; answers still on their way are dropped."""
        self._generation += 1
        self.beginResetModel()
        self._document = None
        self._rows = []
        self._dates = {}
        self._has_more = False
        self._total = 0
        self.endResetModel()

    def _require_store(self) -> MessageSource:
        if self._store is None:
            raise RuntimeError("MessageListModel has no store: call setStore() first")
        return self._store

    async def load(self, code: str, doc_id: int, *, count: int | None = None) -> bool:
        """Replace the rows with the newest ``count`` (default: one page) messages.

        Returns False when the answer was dropped because the model moved on meanwhile.
        """
        store = self._require_store()
        self._generation += 1
        generation = self._generation
        wanted = max(self._page_size, count or 0)
        rows = await store.messages_for(code, doc_id, limit=wanted + 1, offset=0)
        if generation != self._generation:
            return False
        self.beginResetModel()
        self._document = (code, doc_id)
        self._has_more = len(rows) > wanted
        self._total = -1 if self._has_more else min(len(rows), wanted)
        self._rows = []
        self._dates = {}
        self._add(rows[:wanted])
        self._rows = _ordered(self._rows, self._sort_column, self._descending())
        self.endResetModel()
        return True

    async def loadTotal(self) -> int:
        """Ask the store how many messages the document has in all, when more exist than
        are loaded; return :meth:`totalCount`."""
        if self._total >= 0 or self._document is None:
            return self._total
        generation = self._generation
        total = await self._require_store().message_count(*self._document)
        if generation == self._generation:
            self._total = max(total, len(self._rows))
        return self._total

    def totalCount(self) -> int:
        """How many messages the document has in all; -1 while not known."""
        return self._total

    async def reload(self) -> bool:
        """Read the document's mail again, as many rows as are shown now (at least a page)."""
        if self._document is None:
            return False
        code, doc_id = self._document
        return await self.load(code, doc_id, count=len(self._rows))

    async def loadMore(self) -> int:
        """Append the next page of older mail; return how many rows were added."""
        if self._document is None or not self._has_more:
            return 0
        store = self._require_store()
        generation = self._generation
        code, doc_id = self._document
        rows = await store.messages_for(
            code, doc_id, limit=self._page_size + 1, offset=len(self._rows)
        )
        if generation != self._generation:
            return 0
        self._has_more = len(rows) > self._page_size
        if not self._has_more:
            self._total = -1  # counted anew below
        known = {r.eml_id for r in self._rows}
        fresh = [r for r in rows[: self._page_size] if r.eml_id not in known]
        if not fresh:
            return 0
        # A change of what is shown, like load(): a reload racing with this append must not
        # let either answer land on the other's rows.
        self._generation += 1
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
        self._add(fresh)
        self.endInsertRows()
        if not self._has_more:
            self._total = len(self._rows)
        self._apply_sort()
        return len(fresh)

    def setRows(self, rows: Sequence[MessageRow]) -> None:
        """Show ``rows`` (for example a search's answer), in the model's sort order.

        The model is then tied to no document: :meth:`reload` and :meth:`loadMore` do
        nothing, and no store is needed. Answers still on their way are dropped.
        """
        self._generation += 1
        self.beginResetModel()
        self._document = None
        self._has_more = False
        self._rows = []
        self._dates = {}
        self._add(rows)
        self._total = len(self._rows)
        self._rows = _ordered(self._rows, self._sort_column, self._descending())
        self.endResetModel()

    def _add(self, rows: Sequence[MessageRow]) -> None:
        for row in rows:
            self._rows.append(row)
            text = format_date(row.date)
            self._dates[row.eml_id] = UNDATED_MARK + text if text and not row.dated else text

    def setUnavailable(self, reasons: dict[int, str]) -> None:
        """Show these messages greyed out and not selectable, the reason (the value) in
        their tooltip: the Attach dialog's mail already tied to the document."""
        self._unavailable = dict(reasons)
        if self._rows:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._rows) - 1, len(COLUMNS) - 1))

    def isUnavailable(self, row: int) -> bool:
        return self._rows[row].eml_id in self._unavailable

    def hasMore(self) -> bool:
        """Whether older messages than those loaded exist (as of the last read)."""
        return self._has_more

    # -- access by row -------------------------------------------------------------------------
    def messageRow(self, row: int) -> MessageRow:
        return self._rows[row]

    def emlId(self, row: int) -> int:
        return self._rows[row].eml_id

    def rowOf(self, eml_id: int) -> int:
        """The row showing message ``eml_id``, or -1."""
        for i, row in enumerate(self._rows):
            if row.eml_id == eml_id:
                return i
        return -1

    def rows(self) -> list[MessageRow]:
        """The loaded rows in display order (a copy)."""
        return list(self._rows)

    # -- QAbstractItemModel ----------------------------------------------------------------------
    def rowCount(self, parent: _AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def flags(self, index: _AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        if self._unavailable and 0 <= index.row() < len(self._rows) and (
                self._rows[index.row()].eml_id in self._unavailable):
            return Qt.ItemFlag.ItemNeverHasChildren  # greyed out, not selectable
        return _ITEM_FLAGS

    def data(self, index: _AnyIndex, role: int = _DISPLAY) -> Any:
        if role not in _ANSWERED or not index.isValid() or index.row() >= len(self._rows):
            return None
        row = self._rows[index.row()]
        column = index.column()
        if role == _DISPLAY:
            return self._text(row, column)
        if role == _TOOLTIP:
            return self._tooltip(row, column)
        if role == _FONT:
            return self._italic if row.via_contact else None
        if role == _DECORATION:
            return paperclip_icon() if column == SUBJECT and row.attachments else None
        if role == EmlIdRole:
            return row.eml_id
        if role == ViaContactRole:
            return row.via_contact
        if role == AttachmentsRole:
            return row.attachments
        return None

    def _tooltip(self, row: MessageRow, column: int) -> str | None:
        if column == DATE:
            when = format_date(row.date, local=False, offset=True, seconds=True)
            if when and not row.dated:
                when = UNDATED_TOOLTIP.format(when)
        elif FROM <= column <= CC:
            # The whole "Name <address>" list, also where the cell shows only names.
            when = (row.sender, row.to, row.cc)[column - FROM]
        elif column == SUBJECT and row.attachments:
            count = "1 attachment" if row.attachments == 1 else f"{row.attachments} attachments"
            when = f"{self._text(row, column)}\n({count})"
        else:
            # Long addresses and subjects are elided in the cell; the tooltip has them whole.
            when = self._text(row, column)
        if row.via_contact:
            return f"{when}\n{VIA_CONTACT_TOOLTIP}" if when else VIA_CONTACT_TOOLTIP
        reason = self._unavailable.get(row.eml_id) if self._unavailable else None
        if reason:
            return f"{when}\n{reason}" if when else reason
        return when or None

    def _text(self, row: MessageRow, column: int) -> str:
        if column == DATE:
            return self._dates.get(row.eml_id, "")
        if column == FROM:
            return row.names[0] or row.sender
        if column == TO:
            return row.names[1] or row.to
        if column == CC:
            return row.names[2] or row.cc
        return row.subject or NO_SUBJECT

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY
    ) -> Any:
        if (
            orientation == Qt.Orientation.Horizontal
            and role == _DISPLAY
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    # -- sorting ---------------------------------------------------------------------------------
    def _descending(self) -> bool:
        return self._sort_order == Qt.SortOrder.DescendingOrder

    def sortColumn(self) -> int:
        return self._sort_column

    def sortOrder(self) -> Qt.SortOrder:
        return self._sort_order

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the loaded rows by ``column`` (see the module docstring)."""
        if not 0 <= column < len(COLUMNS):
            return
        self._sort_column = column
        self._sort_order = order
        self._apply_sort()

    def _apply_sort(self) -> None:
        ordered = _ordered(self._rows, self._sort_column, self._descending())
        if ordered == self._rows:
            return
        self.layoutAboutToBeChanged.emit([], QAbstractTableModel.LayoutChangeHint.VerticalSortHint)
        old = self.persistentIndexList()
        ids = [self._rows[i.row()].eml_id for i in old]
        self._rows = ordered
        position = {r.eml_id: n for n, r in enumerate(ordered)}
        moved = [self.index(position[n], i.column()) for n, i in zip(ids, old, strict=True)]
        self.changePersistentIndexList(old, moved)
        self.layoutChanged.emit([], QAbstractTableModel.LayoutChangeHint.VerticalSortHint)
