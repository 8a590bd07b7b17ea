"""The Email tab of an ERP document: its mail, a preview, and the mail actions.

The host window gives the tab a store (``setStore``) and a document (``setDocument``); the
tab lists the mail tied to that document, newest first, shows one message's headers and
text when it is selected, and offers New, Print, Reply, Reply All, Forward, Attach, Detach
and Refresh on a toolbar, in a context menu and on the keyboard (see docs/widgets.md).

Decisions:

* Keyboard shortcuts act only while the focus is inside the tab
  (``Qt.ShortcutContext.WidgetWithChildrenShortcut``), so Ctrl+P here prints the message
  while the document window keeps its own Ctrl+P elsewhere.
* All database work runs in tasks the tab owns (a :class:`~xtmail.widgets.tasks.TaskOwner`),
  one per purpose (the list, the preview, each action). Starting a purpose again cancels
  its previous task; changing the document, the store, closing or destroying the tab
  cancels all of them. Failures end up in a banner at the top of the tab, worded for the
  user, and in ``errorOccurred``: an xtmail error's own text (and "Press Refresh (F5)"
  when trying again may help); anything else is a bug, logged with its traceback and
  shown in general words.
* When the list cannot be read because the database is away (stopped, restarting, frozen:
  errors whose reaction is to retry later), the banner counts down to reading it again by
  itself (5 s, then 10, 20, 30 s while it keeps failing) and offers "Retry now"; the first
  success hides it. Refresh retries at once; Dismiss, another document or Cancel stop the
  retries. A store that was closed is not retried: it cannot come back.
* While the list loads, a Cancel button shows next to "Loading…", and Esc does the same:
  the tab stops waiting (the store's query is stopped in the background) and keeps what it
  showed. The store bounds every call anyway (MailStore's answer timeout), so a frozen
  server ends in the banner above rather than in "Loading…" for ever.
* Reply, Reply All and Forward started from a document's tab carry that document's
  reference, so the answer comes back tied to the same document (the subject is never
  given the token twice).
* A draft goes to the mail program as a ``mailto:`` URL when it fits 2,000 characters, and
  whole otherwise (:mod:`xtmail.widgets.mail_program`: an ``X-Unsent`` ``.eml`` draft or a
  longer URL, by platform). When only a shortened URL could go, the banner says how much
  of the text went over and offers Copy Full Text (docs/compose.md).
* Detach removes only the document's own ties. Mail listed because it is tied to one of
  the document's contacts stays: it is detached on the contact. The confirmation says so.
* Print goes through the print dialog each time (opened with ``open()``); the QPrinter
  is kept, so the choices made there apply the next time. ``setPrinter`` replaces it (tests
  print to PDF this way).
* Opening a message writes its raw bytes, exactly as received, to a private temporary
  ``.eml`` file (see :mod:`xtmail.widgets.desktop`), written in a worker thread.
* Attachments are listed under the message text (name, type, size, the desktop's icon
  for the type); inline images and attached messages are listed too, as the parser counts
  them. Opening one writes it, under the name its sender gave it, to a private file and
  hands that to the desktop, after a warning for programs and scripts (they would run
  with the user's rights). Save As asks where (QFileDialog, opened with ``open()``).
* Print prints every selected message, each from a new page.
* The preview never shows a message the list no longer has (after Detach, after a
  reload): the preview and its attachments are cleared.
* The error banner floats over the top of the preview instead of taking a row of the
  layout, so showing it never moves the rows under the mouse, and the list's own buttons
  (Show more, Cancel) and the toolbar stay uncovered.
* Tab moves from the list to the preview, its attachments, then the toolbar; every action
  has a mnemonic and its tooltip shows its shortcut.
* The formatted view (a toggle above the preview, remembered in QSettings) renders the
  HTML part as the store sanitised it (nh3: no scripts, styles, forms, remote images) in a
  QTextBrowser that loads nothing from anywhere; inline ``cid:`` images are drawn from the
  message's own parts (``MailStore.inline_images``). A link shows its target below the view when
  pointed at, and opens with the desktop only when clicked (http, https, mailto). Mail
  without HTML shows its text there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final

from PyQt6 import QtCore, sip
from PyQt6.QtCore import (
    QCoreApplication,
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QMimeDatabase,
    QModelIndex,
    QPoint,
    QSettings,
    Qt,
    QUrl,
    pyqtSignal,
)
from PyQt6.QtGui import (
    QAction,
    QCloseEvent,
    QFont,
    QIcon,
    QImage,
    QKeySequence,
    QResizeEvent,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QStyle,
    QTableView,
    QTextBrowser,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from xtmail.sync.errors import XtmailError
from xtmail.sync.mail import registry
from xtmail.sync.mail.refs import Reference
from xtmail.widgets.compose import (
    Draft,
    MessageInfo,
    draft_text,
    forward_draft,
    new_draft,
    reply_all_draft,
    reply_draft,
    thread_of,
)
from xtmail.widgets.desktop import (
    Desktop,
    DesktopError,
    PrivateFiles,
    SystemDesktop,
    default_private_files,
    open_url,
    safe_file_name,
)
from xtmail.widgets.formatting import format_date, format_size
from xtmail.widgets.mail_program import Handover, MailProgram
from xtmail.widgets.message_model import (
    CC,
    DATE,
    FROM,
    NO_SUBJECT,
    TO,
    VIA_CONTACT_TOOLTIP,
    MessageListModel,
)
from xtmail.widgets.tasks import RetryCountdown, TaskOwner, failure_text, mends_by_itself

if TYPE_CHECKING:
    from PyQt6.QtPrintSupport import QPrinter

    from xtmail.sync.db.mailstore import MailStore
    from xtmail.sync.values import MessageDetail

__all__ = [
    "AttachDialogFactory",
    "EmailTab",
    "attachment_name",
    "empty_text",
    "is_risky",
    "message_headers",
    "preview_text",
    "print_document",
]

log = logging.getLogger(__name__)

# PyQt6's type stubs leave pyqtProperty out.
pyqtProperty: Any = QtCore.pyqtProperty  # type: ignore[attr-defined]

#: Builds the Attach Email dialog for ``(code, doc_id, parent)``; the tab opens it with
#: ``open()`` and refreshes when it is accepted.
AttachDialogFactory = Callable[[str, int, QWidget], QDialog]

#: The actions of the tab: name, text, shortcuts, tooltip.
#: Every text has a mnemonic (the letter after "&"), each letter used once.
ACTIONS: Final[tuple[tuple[str, str, tuple[str, ...], str], ...]] = (
    ("open", "&Open", ("Return", "Enter"), "Open the message in your mail program"),
    ("new", "&New", ("Ctrl+N",), "Write a new mail about this document"),
    ("print", "&Print", ("Ctrl+P",), "Print the selected messages"),
    ("reply", "&Reply", ("Ctrl+R",), "Reply to the sender"),
    ("replyAll", "Reply &All", ("Ctrl+Shift+R",), "Reply to the sender and all recipients"),
    ("forward", "&Forward", ("Ctrl+L",), "Forward the message (without attachments)"),
    ("attach", "A&ttach", ("Ctrl+Shift+A",), "Tie mail from your mailbox to this document"),
    ("detach", "&Detach", ("Delete",), "Untie the selected mail from this document"),
    ("refresh", "R&efresh", ("F5",), "Read this document's mail again"),
)
_TOOLBAR: Final = ("new", "print", "reply", "replyAll", "forward", "attach", "detach", "refresh")
_MENU: Final = (
    "open", "", "reply", "replyAll", "forward", "print", "", "new", "attach", "detach", "",
    "refresh",
)
_ICONS: Final = {
    "new": "mail-message-new", "print": "document-print", "reply": "mail-reply-sender",
    "replyAll": "mail-reply-all", "forward": "mail-forward", "attach": "mail-attachment",
    "detach": "edit-delete", "refresh": "view-refresh", "open": "document-open",
}

_NO_DOCUMENT_TEXT: Final = "Open a document to see its mail here."
#: The QSettings key remembering whether the formatted view is chosen.
FORMATTED_KEY: Final = "emailTab/formattedView"


class SafeBrowser(QTextBrowser):
    """A QTextBrowser that loads nothing from anywhere: no image, stylesheet or page, local
    or remote. The one exception is the message's own inline images, given with
    :meth:`setInlineImages` and drawn where the HTML names them by ``cid:`` URL."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._images: dict[str, QImage] = {}
        self._folded: dict[str, QImage] = {}

    def setInlineImages(self, images: dict[str, QImage]) -> None:
        """The images ``cid:`` URLs name, by Content-ID (without angle brackets)."""
        self._images = dict(images)
        self._folded = {key.casefold(): image for key, image in images.items()}

    def inlineImages(self) -> dict[str, QImage]:
        return dict(self._images)

    def loadResource(self, type: int, name: QUrl) -> Any:
        if type == QTextDocument.ResourceType.ImageResource.value:
            if name.scheme().lower() == "cid":
                # RFC 2392: the URL is the Content-ID, percent-encoded; mail programs
                # differ in the case they write it in.
                key = name.path(QUrl.ComponentFormattingOption.FullyDecoded)
                found = self._images.get(key)
                if found is None:
                    found = self._folded.get(key.casefold())
                if found is not None:
                    return found
            # An empty image, or Qt would go on to open ``name`` as a local file itself.
            image = QImage(1, 1, QImage.Format.Format_ARGB32)
            image.fill(0)
            return image
        return None


def _decoded_images(parts: dict[str, bytes]) -> dict[str, QImage]:
    """The inline images that Qt can read, decoded (QImage works off the GUI thread)."""
    images = {key: QImage.fromData(data) for key, data in parts.items()}
    return {key: image for key, image in images.items() if not image.isNull()}


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def formatted_html(detail: MessageDetail, body_html: str) -> str:
    """The formatted view's document: the header lines, then the sanitised HTML (or the
    plain text, escaped, when the message has no HTML)."""
    rows = "".join(
        f"<tr><td><b>{_escape(name)}:</b></td><td>{_escape(value)}</td></tr>"
        for name, value in message_headers(detail)
    )
    body = body_html or f"<pre style='white-space: pre-wrap'>{_escape(detail.body)}</pre>"
    return f"<table cellspacing='0' cellpadding='1'>{rows}</table><hr>{body}"



#: Added to the text of a failure that trying again may mend.
_RETRY: Final = "Press Refresh (F5) to try again."
#: Said in the status line after the user stopped waiting for the list.
STOPPED_TEXT: Final = "Stopped waiting for the database. Press Refresh (F5) to try again."


def retry_line(seconds: int) -> str:
    """The banner's last line while an automatic retry is counted down."""
    return (_tr("Retrying in {seconds} s.").format(seconds=seconds) if seconds > 0
            else _tr("Retrying now…"))


async def _dialog_result(dialog: QDialog) -> int:
    """Open ``dialog`` window-modally with ``open()`` and wait for its result.

    ``exec()`` would start a nested event loop inside a task, which qasync cannot run
    ("Cannot enter into task", or a hang). A cancelled wait closes the dialog.
    """
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    dialog.finished.connect(functools.partial(_resolve, future))
    dialog.open()
    try:
        return await future
    finally:
        if not sip.isdeleted(dialog):
            if dialog.isVisible():
                dialog.reject()
            dialog.deleteLater()


def _write_file(target: str, data: bytes) -> None:
    with open(target, "wb") as handle:
        handle.write(data)


def _resolve(future: asyncio.Future[int], result: int) -> None:
    if not future.done():
        future.set_result(result)


def _message_info(detail: MessageDetail) -> MessageInfo:
    return MessageInfo(
        subject=detail.subject, date=detail.date, from_=detail.from_, to=detail.to,
        cc=detail.cc, reply_to=detail.reply_to, body_text=detail.body,
    )


def _mailboxes(mailboxes: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{n} <{a}>" if n.strip() else a for n, a in mailboxes)


def _size(size: object) -> str:
    return f" ({format_size(size)})" if isinstance(size, int) else ""


_MIME_DB: QMimeDatabase | None = None


def _mime() -> QMimeDatabase:
    # Made on first use: the tab's module must import fast (Qt Designer loads it).
    global _MIME_DB
    if _MIME_DB is None:
        _MIME_DB = QMimeDatabase()
    return _MIME_DB

#: Extensions of files that run when opened (programs, scripts, installers, shortcuts,
#: documents with macros that start by themselves): opening one asks first.
RISKY_EXTENSIONS: Final = frozenset({
    "exe", "com", "bat", "cmd", "scr", "pif", "msi", "msp", "msc", "cpl", "dll", "sys",
    "js", "jse", "vbs", "vbe", "wsf", "wsh", "ws", "ps1", "psm1", "hta", "lnk", "url",
    "reg", "inf", "jar", "sh", "bash", "csh", "ksh", "zsh", "command", "py", "pyw", "pl",
    "rb", "php", "app", "apk", "appimage", "deb", "rpm", "run", "bin", "desktop", "scpt",
    "action", "workflow", "iso", "img", "vhd", "docm", "xlsm", "pptm", "dotm", "xlam",
})
#: Content types of the same.
RISKY_TYPES: Final = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-dosexec",
    "application/x-executable", "application/x-sh", "application/x-shellscript",
    "application/x-bat", "application/javascript", "text/javascript", "application/x-ms-installer",
    "application/x-msi", "application/java-archive", "application/hta", "text/x-python",
    "application/x-python-code", "application/x-perl",
    "application/vnd.microsoft.portable-executable",
})


def attachment_name(info: dict[str, object], index: int) -> str:
    """The name an attachment is shown, opened and saved under: the sender's, else one
    made from its type ("attached message.eml", "attachment 2.png")."""
    name = info.get("filename")
    if isinstance(name, str) and name.strip():
        return name.strip()
    ctype = str(info.get("content_type") or "application/octet-stream").lower()
    if ctype.startswith("message/"):
        return "attached message.eml"
    suffix = _mime().mimeTypeForName(ctype).preferredSuffix()
    return f"attachment {index + 1}" + (f".{suffix}" if suffix else "")


def is_risky(name: str, content_type: str) -> bool:
    """Whether opening the file would run something (see :data:`RISKY_EXTENSIONS`)."""
    suffix = name.rpartition(".")[2].lower() if "." in name else ""
    return suffix in RISKY_EXTENSIONS or content_type.lower() in RISKY_TYPES


def _attachment_icon(name: str, content_type: str, style: QStyle | None) -> QIcon:
    mime = _mime().mimeTypeForName(content_type)
    if not mime.isValid() or mime.isDefault():
        mime = _mime().mimeTypeForFile(name, QMimeDatabase.MatchMode.MatchExtension)
    for icon_name in (mime.iconName(), mime.genericIconName()):
        icon = QIcon.fromTheme(icon_name)
        if not icon.isNull():
            return icon
    return style.standardIcon(QStyle.StandardPixmap.SP_FileIcon) if style else QIcon()


def message_headers(detail: MessageDetail) -> list[tuple[str, str]]:
    """The header lines shown above a message in the preview and on paper."""
    lines = [("From", _mailboxes(detail.from_)), ("To", _mailboxes(detail.to))]
    if detail.cc:
        lines.append(("Cc", _mailboxes(detail.cc)))
    if detail.date is not None and not detail.dated:
        lines.append(("Date", "none given; received " + format_date(detail.date, offset=True)))
    elif detail.date is not None:
        lines.append(("Date", format_date(detail.date, offset=True)))
    lines.append(("Subject", detail.subject or NO_SUBJECT))
    if detail.attachments:
        names = [
            f"{attachment_name(a, n)}{_size(a.get('size'))}"
            for n, a in enumerate(detail.attachments)
        ]
        lines.append(("Attachments", ", ".join(names)))
    return lines


def preview_text(detail: MessageDetail) -> str:
    lines = message_headers(detail)
    if detail.defects:
        # Said before the text, so a reader knows what they see may not be all the sender
        # wrote; the raw message (double click) is always the original.
        lines.append(("Damaged", "read with repairs: " + "; ".join(detail.defects)))
    head = "\n".join(f"{name}: {value}" for name, value in lines)
    return f"{head}\n\n{detail.body}"


def print_document(details: MessageDetail | Iterable[MessageDetail]) -> QTextDocument:
    """Messages as a document for printing: bold header names, then the text; each
    message after the first starts a new page."""
    if not isinstance(details, Iterable):
        details = [details]
    document = QTextDocument()
    cursor = QTextCursor(document)
    bold, plain = QTextCharFormat(), QTextCharFormat()
    bold.setFontWeight(QFont.Weight.Bold)
    new_page = QTextBlockFormat()
    new_page.setPageBreakPolicy(QTextBlockFormat.PageBreakFlag.PageBreak_AlwaysBefore)
    for m, detail in enumerate(details):
        if m:
            cursor.insertBlock(new_page)
        for n, (name, value) in enumerate(message_headers(detail)):
            if n:
                cursor.insertBlock(QTextBlockFormat())
            cursor.insertText(f"{name}: ", bold)
            cursor.insertText(value, plain)
        cursor.insertBlock()
        cursor.insertBlock()
        # insertText keeps the body as plain text: nothing in a message can become markup.
        cursor.insertText(detail.body, plain)
    return document


def _document_words(doc: registry.DocumentType) -> str:
    # "Sales Order" -> "sales order", "CRM Account" -> "CRM account" (acronyms stay).
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in doc.label.split())


def _tr(text: str) -> str:
    """``text`` in the user's language (Qt's translators, context "EmailTab"); the module's
    tables keep the English source, translated where they are shown."""
    return QCoreApplication.translate("EmailTab", text)


def empty_text(code: str) -> str:
    """The empty-state text for a document type, e.g. for "S" a sales order."""
    doc = registry.find(code)
    if doc is None:
        return _tr(_NO_DOCUMENT_TEXT)
    if doc.shows_contact_mail:
        what = _tr("this {document} or its contacts")
    else:
        what = _tr("this {document}")
    return _tr("No mail is tied to {what} yet.\n"
               "Use Attach to add messages from your mailbox, or New to write one.").format(
        what=what.format(document=_document_words(doc)))


class EmailTab(QWidget):
    """The mail of one ERP document: list, preview, toolbar.

    Signals:

    * ``messageSelected(int)``: the current message changed to this ``eml_id``.
    * ``documentChanged(str, int)``: a new document (code, id) was set.
    * ``messagesLoaded(int)``: the list was (re)loaded; the number of rows shown.
    * ``errorOccurred(str)``: something failed; the text shown in the tab's banner.
    * ``attachRequested(str, int)``: Attach was chosen for this document (code, id).
    * ``composeRequested(str)``: a draft went to the mail program: the ``mailto:`` URL, or
      the ``file:`` URL of the complete draft (see :mod:`xtmail.widgets.mail_program`).
    * ``messageOpened(str)``: the path of the ``.eml`` file handed to the desktop.
    * ``messagePrinted(int)``: this message was printed.
    * ``messagesDetached(int)``: this many messages were detached from the document.
    * ``attachmentOpened(str)``: the path of an attachment's file handed to the desktop.
    * ``attachmentSaved(str)``: an attachment was saved to this path.
    """

    messageSelected = pyqtSignal(int)
    documentChanged = pyqtSignal(str, int)
    messagesLoaded = pyqtSignal(int)
    errorOccurred = pyqtSignal(str)
    attachRequested = pyqtSignal(str, int)
    composeRequested = pyqtSignal(str)
    messageOpened = pyqtSignal(str)
    messagePrinted = pyqtSignal(int)
    messagesDetached = pyqtSignal(int)
    attachmentOpened = pyqtSignal(str)
    attachmentSaved = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store: MailStore | None = None
        self._code = ""
        self._doc_id = 0
        self._number: str | None = None
        self._contact_ids: frozenset[int] = frozenset()
        self._own: list[str] = []
        self._desktop: Desktop = SystemDesktop()
        self._mail_program = MailProgram()
        self._full_draft = ""
        self._files: PrivateFiles | None = None
        self._settings: QSettings | None = None
        # The formatted view's last message: its id, sanitised HTML and inline images.
        self._html: tuple[int, str, dict[str, QImage]] | None = None
        self._printer: QPrinter | None = None
        self._attach_factory: AttachDialogFactory | None = None
        self._save_folder = ""
        self._detail: MessageDetail | None = None
        self._selected_id = -1
        self._loading = False
        self._loaded = False
        self._error_purpose = ""
        # The failure an automatic retry is counted down for (the banner's text without
        # its last line), and whether the user stopped waiting for the list.
        self._retry_text = ""
        self._stopped = False
        self._tasks = TaskOwner("Email tab", self._on_task_failed, self)
        self._countdown = RetryCountdown(self)
        self._countdown.ticked.connect(self._on_countdown)
        self._countdown.due.connect(self._retry)
        self._model = MessageListModel(None, self)
        self._actions: dict[str, QAction] = {}
        self._build()
        self._update_state()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)

        self._toolbar = QToolBar("Email", self)
        self._toolbar.setObjectName("emailToolBar")
        self._toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for name, source_text, keys, source_tip in ACTIONS:
            text, tip = _tr(source_text), _tr(source_tip)
            action = QAction(text, self)
            action.setObjectName(f"{name}Action")
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            # Set explicitly, so the toolbar's buttons keep the "&" (the derived icon text
            # drops it) and Alt+letter presses them.
            action.setIconText(text)
            native = QKeySequence(keys[0]).toString(QKeySequence.SequenceFormat.NativeText)
            action.setToolTip(f"{tip} ({native})")
            action.setStatusTip(tip)
            icon = QIcon.fromTheme(_ICONS[name])
            if not icon.isNull():
                action.setIcon(icon)
            # On the tab itself so the shortcut works wherever the focus is inside the tab.
            self.addAction(action)
            self._actions[name] = action
        for name in _TOOLBAR:
            self._toolbar.addAction(self._actions[name])
            button = self._toolbar.widgetForAction(self._actions[name])
            if button is not None:
                # Reached with Tab after the list and the preview (toolbar buttons take no
                # focus by default, which leaves keyboard users without them).
                button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        layout.addWidget(self._toolbar)

        self._banner = QFrame(self)
        self._banner.setObjectName("errorBanner")
        self._banner.setFrameShape(QFrame.Shape.StyledPanel)
        self._banner.setStyleSheet(
            "#errorBanner { background: #fdecea; border: 1px solid #f5c2c0; }"
            "#errorBanner QLabel { color: #611a15; }"
        )
        banner_layout = QHBoxLayout(self._banner)
        banner_layout.setContentsMargins(8, 4, 4, 4)
        self._banner_label = QLabel(self._banner)
        self._banner_label.setWordWrap(True)
        self._banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._banner_label.setSizePolicy(
            QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred
        )
        self._retry_now = QToolButton(self._banner)
        self._retry_now.setObjectName("retryNowButton")
        self._retry_now.setText(self.tr("Retry now"))
        self._retry_now.setToolTip(self.tr("Try to read this document's mail again now"))
        self._retry_now.clicked.connect(self.refresh)
        self._retry_now.hide()
        self._copy_draft = QToolButton(self._banner)
        self._copy_draft.setObjectName("copyDraftButton")
        self._copy_draft.setText(self.tr("Copy Full Text"))
        self._copy_draft.setToolTip(
            self.tr("Copy the whole mail (recipients, subject and text) to the clipboard"))
        self._copy_draft.clicked.connect(self._copy_full_draft)
        self._copy_draft.hide()
        dismiss = QToolButton(self._banner)
        dismiss.setObjectName("dismissButton")
        dismiss.setText(self.tr("Dismiss"))
        dismiss.setAutoRaise(True)
        dismiss.clicked.connect(self.clearError)
        banner_layout.addWidget(self._banner_label)
        banner_layout.addWidget(self._retry_now, 0, Qt.AlignmentFlag.AlignTop)
        banner_layout.addWidget(self._copy_draft, 0, Qt.AlignmentFlag.AlignTop)
        banner_layout.addWidget(dismiss, 0, Qt.AlignmentFlag.AlignTop)
        self._banner.hide()
        # Not in the layout: it floats over the top of the preview (see _place_banner), so
        # showing it never moves the rows under the mouse.

        self._stack = QStackedWidget(self)
        layout.addWidget(self._stack, 1)

        self._splitter = QSplitter(Qt.Orientation.Vertical, self._stack)
        top = QWidget(self._splitter)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.setSpacing(2)
        self._view = QTableView(top)
        self._view.setObjectName("messageView")
        self._view.setModel(self._model)
        self._view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self._view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # Tab leaves the list for the preview instead of walking from cell to cell.
        self._view.setTabKeyNavigation(False)
        self._view.setShowGrid(False)
        self._view.setWordWrap(False)
        self._view.setAlternatingRowColors(True)
        self._view.setTextElideMode(Qt.TextElideMode.ElideRight)
        rows_header, header = self._view.verticalHeader(), self._view.horizontalHeader()
        if rows_header is None or header is None:
            raise RuntimeError("QTableView without headers")
        rows_header.hide()
        rows_header.setDefaultSectionSize(self.fontMetrics().height() + 6)
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setHighlightSections(False)
        metrics = self.fontMetrics()
        # Room for the whole date and the sort indicator; names get about 22 characters.
        header.resizeSection(DATE, metrics.horizontalAdvance("8888-88-88 88:88") + 32)
        for column, chars in ((FROM, 22), (TO, 22), (CC, 16)):
            header.resizeSection(column, chars * metrics.averageCharWidth())
        # The indicator first, then sorting: enabling sorting sorts by the indicator, which
        # must be what the database returned (newest first).
        header.setSortIndicator(DATE, Qt.SortOrder.DescendingOrder)
        self._view.setSortingEnabled(True)
        self._view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self._view.customContextMenuRequested.connect(self._show_menu)
        self._view.doubleClicked.connect(self._on_double_clicked)
        selection = self._view.selectionModel()
        if selection is None:
            raise RuntimeError("setModel() did not create a selection model")
        selection.currentRowChanged.connect(self._on_current_changed)
        selection.selectionChanged.connect(self._on_selection_changed)
        top_layout.addWidget(self._view, 1)

        more_row = QHBoxLayout()
        more_row.setContentsMargins(4, 0, 4, 2)
        self._status = QLabel(top)
        self._status.setObjectName("statusLabel")
        self._more = QPushButton(self.tr("Show more"), top)
        self._more.setObjectName("showMoreButton")
        self._more.setToolTip(self.tr("Show older mail of this document"))
        self._more.clicked.connect(self.showMore)
        self._cancel = QPushButton(self.tr("Cancel"), top)
        self._cancel.setObjectName("cancelLoadButton")
        self._cancel.setToolTip(self.tr("Stop waiting for the database (Esc)"))
        self._cancel.clicked.connect(self.cancelLoading)
        self._cancel.hide()
        self._legend = QLabel(self.tr("<i>Italic</i>: mail of this document's contacts"), top)
        self._legend.setObjectName("legendLabel")
        self._legend.setToolTip(VIA_CONTACT_TOOLTIP + ", not tied to the document itself")
        self._legend.hide()
        more_row.addWidget(self._status, 1)
        more_row.addWidget(self._legend)
        more_row.addWidget(self._more)
        more_row.addWidget(self._cancel)
        top_layout.addLayout(more_row)

        pane = self._pane = QWidget(self._splitter)
        pane.setObjectName("previewPane")
        pane_layout = QVBoxLayout(pane)
        pane_layout.setContentsMargins(0, 0, 0, 0)
        pane_layout.setSpacing(2)
        self._preview = QPlainTextEdit(pane)
        self._preview.setObjectName("messagePreview")
        self._preview.setReadOnly(True)
        self._preview.setTabChangesFocus(True)
        self._preview.setPlaceholderText(self.tr("Select a message to read it here."))
        view_row = QHBoxLayout()
        view_row.setContentsMargins(4, 2, 4, 0)
        self._formatted = QToolButton(pane)
        self._formatted.setObjectName("formattedViewButton")
        self._formatted.setText(self.tr("For&matted"))
        self._formatted.setCheckable(True)
        self._formatted.setToolTip(self.tr(
            "Show the message as its sender formatted it (no remote content is loaded); "
            "off: plain text"))
        self._formatted.toggled.connect(self._on_formatted_toggled)
        self._link = QLabel(pane)
        self._link.setObjectName("linkTargetLabel")
        self._link.setTextFormat(Qt.TextFormat.PlainText)
        view_row.addWidget(self._formatted)
        view_row.addWidget(self._link, 1)
        pane_layout.addLayout(view_row)
        self._text_stack = QStackedWidget(pane)
        self._text_stack.addWidget(self._preview)
        self._browser = SafeBrowser(pane)
        self._browser.setObjectName("formattedPreview")
        self._browser.setOpenLinks(False)
        self._browser.setOpenExternalLinks(False)
        self._browser.setTabChangesFocus(True)
        self._browser.highlighted.connect(self._on_link_hovered)
        self._browser.anchorClicked.connect(self._on_link_clicked)
        self._text_stack.addWidget(self._browser)
        pane_layout.addWidget(self._text_stack, 1)
        self._attachments_bar = QWidget(pane)
        self._attachments_bar.setObjectName("attachmentsBar")
        bar = QHBoxLayout(self._attachments_bar)
        bar.setContentsMargins(4, 0, 4, 2)
        self._attachments = QListWidget(self._attachments_bar)
        self._attachments.setObjectName("attachmentList")
        self._attachments.setFlow(QListWidget.Flow.LeftToRight)
        self._attachments.setWrapping(True)
        self._attachments.setResizeMode(QListWidget.ResizeMode.Adjust)
        self._attachments.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._attachments.setMaximumHeight(3 * self.fontMetrics().height() + 16)
        self._attachments.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self._attachments.customContextMenuRequested.connect(self._show_attachment_menu)
        self._attachments.itemActivated.connect(self._on_attachment_activated)
        self._attachments.currentRowChanged.connect(self._on_attachment_current)
        self._open_attachment = QPushButton(self.tr("Open Atta&chment"), self._attachments_bar)
        self._open_attachment.setObjectName("openAttachmentButton")
        self._open_attachment.setToolTip(
            self.tr("Open the chosen attachment with its program (Enter)"))
        self._open_attachment.clicked.connect(self.openAttachment)
        self._save_attachment = QPushButton(self.tr("&Save As…"), self._attachments_bar)
        self._save_attachment.setObjectName("saveAttachmentButton")
        self._save_attachment.setToolTip(
            self.tr("Save the chosen attachment to a folder you choose"))
        self._save_attachment.clicked.connect(self.saveAttachment)
        buttons = QVBoxLayout()
        buttons.addWidget(self._open_attachment)
        buttons.addWidget(self._save_attachment)
        buttons.addStretch(1)
        bar.addWidget(self._attachments, 1)
        bar.addLayout(buttons)
        self._attachments_bar.hide()
        pane_layout.addWidget(self._attachments_bar)
        self._formatted.setChecked(self._formatted_chosen())
        self._splitter.addWidget(top)
        self._splitter.addWidget(pane)
        self._splitter.splitterMoved.connect(self._place_banner)
        self._splitter.setStretchFactor(0, 3)
        self._splitter.setStretchFactor(1, 2)
        self._stack.addWidget(self._splitter)

        self._empty = QLabel(self._stack)
        self._empty.setObjectName("emptyState")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)
        self._empty.setMargin(24)
        self._stack.addWidget(self._empty)

        self._menu = QMenu(self)
        for name in _MENU:
            if name:
                self._menu.addAction(self._actions[name])
            else:
                self._menu.addSeparator()

        triggered: dict[str, Callable[[], None]] = {
            "open": self.openMessage, "new": self.newMessage, "print": self.printMessage,
            "reply": self.reply, "replyAll": self.replyAll, "forward": self.forward,
            "attach": self.attach, "detach": self.detach, "refresh": self.refresh,
        }
        for name, slot in triggered.items():
            self._actions[name].triggered.connect(slot)
        self._attachment_menu = QMenu(self)
        self._attachment_menu.setObjectName("attachmentMenu")
        self._attachment_menu.addAction("&Open", self.openAttachment)
        self._attachment_menu.addAction("&Save As…", self.saveAttachment)
        # The natural order: the list, the preview, its attachments, then the toolbar.
        # The list's own buttons come right after it: hiding Cancel when loading ends
        # moves the focus on to the preview, not round to the list (whose focus-in would
        # choose a message).
        chain: list[QWidget] = [self._view, self._more, self._cancel, self._preview,
                                self._browser, self._formatted, self._attachments,
                                self._open_attachment, self._save_attachment]
        for name in _TOOLBAR:
            button = self._toolbar.widgetForAction(self._actions[name])
            if button is not None:
                chain.append(button)
        for first, second in itertools.pairwise(chain):
            QWidget.setTabOrder(first, second)
        # Esc stops waiting for the list; enabled only while it loads, so Esc reaches the
        # host window at any other time.
        self._stop_action = QAction("Cancel", self)
        self._stop_action.setObjectName("cancelLoadAction")
        self._stop_action.setShortcut(QKeySequence("Esc"))
        self._stop_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._stop_action.setEnabled(False)
        self._stop_action.triggered.connect(self.cancelLoading)
        self.addAction(self._stop_action)

    # -- configuration -----------------------------------------------------------------------------
    def store(self) -> MailStore | None:
        return self._store

    def setStore(self, store: MailStore | None) -> None:
        """Read and change mail through ``store``; reloads the document shown."""
        self._tasks.cancel_all()
        self._store = store
        self._model.setStore(store)
        self._detail = None
        self._loaded = False
        self._start_load(first=True)

    def desktop(self) -> Desktop:
        return self._desktop

    def setDesktop(self, desktop: Desktop) -> None:
        """Where ``mailto:`` URLs and message files are handed (the system's by default)."""
        self._desktop = desktop

    def mailProgram(self) -> MailProgram:
        return self._mail_program

    def setMailProgram(self, program: MailProgram) -> None:
        """What hands New/Reply/Reply All/Forward drafts to the mail program (a
        :class:`~xtmail.widgets.mail_program.MailProgram` for this platform by default)."""
        self._mail_program = program

    def privateFiles(self) -> PrivateFiles:
        if self._files is None:
            self._files = default_private_files()
        return self._files

    def setPrivateFiles(self, files: PrivateFiles) -> None:
        """Where opened messages are written (a process-wide private folder by default)."""
        self._files = files

    def settings(self) -> QSettings:
        """Where the choice of the formatted view is remembered (xtmail's own by default)."""
        if self._settings is None:
            self._settings = QSettings("xtmail", "xtmail")
        return self._settings

    def setSettings(self, settings: QSettings) -> None:
        self._settings = settings
        self._formatted.setChecked(self._formatted_chosen())

    def isFormattedView(self) -> bool:
        return self._formatted.isChecked()

    def setFormattedView(self, on: bool) -> None:
        """Show the formatted (HTML) view instead of the plain text; remembered."""
        self._formatted.setChecked(on)

    def formattedPreview(self) -> QTextBrowser:
        return self._browser

    def _formatted_chosen(self) -> bool:
        if self._settings is None:
            return False  # read once settings are given, or on first use
        value = self._settings.value(FORMATTED_KEY, False)
        return value in (True, "true", "1", 1)

    def _on_formatted_toggled(self, on: bool) -> None:
        if self._settings is not None or on:
            self.settings().setValue(FORMATTED_KEY, on)
        self._text_stack.setCurrentWidget(self._browser if on else self._preview)
        self._refresh_formatted()

    def _refresh_formatted(self) -> None:
        self._link.clear()
        detail = self._detail
        if not self._formatted.isChecked() or detail is None or (
                detail.eml_id != self._current_id()):
            self._browser.clear()
            return
        if self._html is not None and self._html[0] == detail.eml_id:
            self._show_formatted(detail, *self._html[1:])
            return
        self._browser.clear()
        self._start_action("formatted", self._load_formatted, detail)

    async def _load_formatted(self, detail: MessageDetail) -> None:
        store = self._require_store()
        html = await store.message_html(detail.eml_id)
        images: dict[str, QImage] = {}
        if "cid:" in html.lower():
            # Only the message's own parts: the sanitiser left no other image source.
            images = await asyncio.to_thread(
                _decoded_images, await store.inline_images(detail.eml_id))
        self._html = (detail.eml_id, html, images)
        if self._current_id() == detail.eml_id and self._formatted.isChecked():
            self._show_formatted(detail, html, images)

    def _show_formatted(self, detail: MessageDetail, html: str,
                        images: dict[str, QImage]) -> None:
        self._browser.setInlineImages(images)
        self._browser.setHtml(formatted_html(detail, html))

    def _on_link_hovered(self, url: QUrl) -> None:
        self._link.setText(f"Link: {url.toString()}" if url.isValid() and url.toString()
                           else "")

    def _on_link_clicked(self, url: QUrl) -> None:
        if url.scheme().lower() not in ("http", "https", "mailto"):
            return
        self._link.setText(f"Link: {url.toString()}")
        try:
            open_url(self._desktop, url, DesktopError(
                "No program is set up to open this link.",
                hint="Choose a web browser in the system settings, then try again."))
        except DesktopError as exc:
            self._report("link", failure_text(exc))

    def printer(self) -> QPrinter:
        """The printer Print uses; made on first use and kept, with the user's choices."""
        if self._printer is None:
            from PyQt6.QtPrintSupport import QPrinter

            self._printer = QPrinter(QPrinter.PrinterMode.HighResolution)
        return self._printer

    def setPrinter(self, printer: QPrinter) -> None:
        self._printer = printer

    def attachDialogFactory(self) -> AttachDialogFactory | None:
        return self._attach_factory

    def setAttachDialogFactory(self, factory: AttachDialogFactory | None) -> None:
        """``factory(code, doc_id, parent)`` builds the dialog Attach opens."""
        self._attach_factory = factory

    def model(self) -> MessageListModel:
        return self._model

    def view(self) -> QTableView:
        return self._view

    def preview(self) -> QPlainTextEdit:
        return self._preview

    def attachmentList(self) -> QListWidget:
        """The attachments of the message shown (one item per attachment, in order)."""
        return self._attachments

    def toolBar(self) -> QToolBar:
        return self._toolbar

    def showMoreButton(self) -> QPushButton:
        return self._more

    def action(self, name: str) -> QAction:
        """One of the tab's actions by name: open, new, print, reply, replyAll, forward,
        attach, detach, refresh."""
        return self._actions[name]

    def contextMenu(self) -> QMenu:
        return self._menu

    # -- document ----------------------------------------------------------------------------------
    def document(self) -> tuple[str, int] | None:
        """``(code, doc_id)`` of the document shown, or ``None``."""
        if self._code and self._doc_id > 0:
            return self._code, self._doc_id
        return None

    def setDocument(self, code: str, doc_id: int) -> None:
        """Show the mail of document ``doc_id`` of type ``code`` (a registry code, e.g. "S").

        Raises ``ValueError`` for a code that is not a supported document type.
        """
        doc = registry.find(code)
        if doc is None:
            raise ValueError(f"{code!r} is not a supported document type")
        self._switch(doc.code, int(doc_id))

    def clearDocument(self) -> None:
        self._switch(self._code, 0)

    def _switch(self, code: str, doc_id: int) -> None:
        changed = (code, doc_id) != (self._code, self._doc_id)
        self._tasks.cancel_all()
        self._code, self._doc_id = code, doc_id
        self._number = None
        self._contact_ids = frozenset()
        self._detail = None
        self._selected_id = -1
        self._loaded = False
        self._stopped = False
        self._countdown.reset()
        self.clearError()
        self._model.clear()
        self._preview.clear()
        self._start_load(first=True)
        if changed:
            self.documentChanged.emit(code, doc_id)

    def _get_document_type(self) -> str:
        return self._code

    def setDocumentType(self, code: str) -> None:
        """Set the document type (a registry code); an unknown code is reported in the tab.

        Unlike :meth:`setDocument` this does not raise: Qt Designer sets it as a property.
        """
        doc = registry.find(code) if code else None
        if code and doc is None:
            self._report("config", f"{code!r} is not a supported document type.\n"
                         "Use one of the registry codes, for example S for a sales order.")
            return
        self._switch(doc.code if doc else "", self._doc_id)

    def _get_document_id(self) -> int:
        return self._doc_id

    def setDocumentId(self, doc_id: int) -> None:
        self._switch(self._code, int(doc_id))

    def _get_page_size(self) -> int:
        return self._model.pageSize()

    def setPageSize(self, size: int) -> None:
        """How many messages are shown at first and added by Show more (100)."""
        self._model.setPageSize(size)
        self._update_state()

    def _get_own_addresses(self) -> list[str]:
        return list(self._own)

    def setOwnAddresses(self, addresses: Iterable[str] | str) -> None:
        """The user's own addresses, left out of Reply All (a list or a comma-separated text)."""
        if isinstance(addresses, str):
            addresses = addresses.split(",")
        self._own = [a.strip() for a in addresses if a.strip()]

    # Qt properties (Designer edits them; Python reads and assigns them as attributes). The
    # setters are also methods, Qt style; the getters are the properties themselves.
    documentType = pyqtProperty(str, fget=_get_document_type, fset=setDocumentType)
    documentId = pyqtProperty(int, fget=_get_document_id, fset=setDocumentId, designable=False)
    pageSize = pyqtProperty(int, fget=_get_page_size, fset=setPageSize)
    ownAddresses = pyqtProperty("QStringList", fget=_get_own_addresses, fset=setOwnAddresses)

    # -- state -------------------------------------------------------------------------------------
    def isBusy(self) -> bool:
        """Whether database work started by the tab is still under way."""
        return bool(self._tasks.running())

    def errorText(self) -> str:
        """The text of the error banner, or "" when none is shown."""
        return self._banner_label.text() if not self._banner.isHidden() else ""

    def clearError(self) -> None:
        """Hide the banner; an automatic retry it announced is called off."""
        self._banner.hide()
        self._banner_label.clear()
        self._retry_now.hide()
        self._copy_draft.hide()
        self._full_draft = ""
        self._countdown.stop()
        self._retry_text = ""
        self._error_purpose = ""

    def isEmptyStateShown(self) -> bool:
        return self._stack.currentWidget() is self._empty

    def emptyStateText(self) -> str:
        return self._empty.text()

    def _report(self, purpose: str, text: str, *, retrying: bool = False) -> None:
        """Show ``text`` in the banner; with ``retrying``, count down to an automatic retry
        of the list, offering "Retry now"."""
        if sip.isdeleted(self):
            return
        self._error_purpose = purpose
        self._countdown.stop()
        self._retry_text = text if retrying else ""
        if retrying:
            text = f"{text}\n{retry_line(self._countdown.schedule())}"
        self._retry_now.setVisible(retrying)
        self._show_banner(text)
        self.errorOccurred.emit(text)

    def _show_banner(self, text: str) -> None:
        self._banner_label.setText(text)
        self._banner.show()
        self._place_banner()

    def _place_banner(self, *_: object) -> None:
        if self._banner.isHidden():
            return
        # Over the top of the preview (or of the empty state): the list, its Show more and
        # Cancel buttons and the toolbar stay where they are and stay reachable.
        area = self._pane if self._stack.currentWidget() is self._splitter else self._stack
        top_left = area.mapTo(self, QPoint(0, 0))
        width = area.width()
        layout = self._banner.layout()
        height = (layout.totalHeightForWidth(width) if layout is not None
                  and layout.hasHeightForWidth() else self._banner.sizeHint().height())
        height = min(max(height, self._banner.minimumSizeHint().height()), area.height())
        self._banner.setGeometry(top_left.x(), top_left.y(), width, height)
        self._banner.raise_()

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        self._place_banner()

    def changeEvent(self, event: QEvent | None) -> None:
        super().changeEvent(event)
        if event is not None and event.type() == QEvent.Type.FontChange:
            self._place_banner()

    def _on_task_failed(self, purpose: str, exc: Exception) -> None:
        if purpose == "preview":
            # Read again when the row is current again (after a reload, or clicked anew).
            self._selected_id = -1
        store = self._store
        if (purpose in ("list", "preview") and mends_by_itself(exc) and store is not None
                and not store.closed):
            # The database is away (restarting, frozen, out of reach): the list is read
            # again by itself until it works, and "Retry now" does it at once; the
            # current message's text comes back with it.
            self._report("list", failure_text(exc), retrying=True)
            return
        self._report(purpose, failure_text(exc, _RETRY))

    def _selected_rows(self) -> list[int]:
        selection = self._view.selectionModel()
        if selection is None:
            return []
        return sorted(i.row() for i in selection.selectedRows())

    def _current_id(self) -> int:
        index = self._view.currentIndex()
        if not index.isValid() or index.row() >= self._model.rowCount():
            return -1
        return self._model.emlId(index.row())

    def _update_state(self) -> None:
        if sip.isdeleted(self):
            return
        has_doc = self._store is not None and self.document() is not None
        has_current = has_doc and self._current_id() >= 0
        direct = [r for r in self._selected_rows() if not self._model.messageRow(r).via_contact]
        for name in ("new", "attach", "refresh"):
            self._actions[name].setEnabled(has_doc)
        for name in ("open", "print", "reply", "replyAll", "forward"):
            self._actions[name].setEnabled(has_current)
        self._actions["detach"].setEnabled(has_doc and bool(direct))

        rows = self._model.rowCount()
        if self.document() is None:
            self._empty.setText(_tr(_NO_DOCUMENT_TEXT))
            self._stack.setCurrentWidget(self._empty)
        elif self._loaded and rows == 0 and not self._loading:
            self._empty.setText(empty_text(self._code))
            self._stack.setCurrentWidget(self._empty)
        else:
            self._stack.setCurrentWidget(self._splitter)
        self._place_banner()
        more = self._model.hasMore()
        self._more.setVisible(more)
        self._more.setEnabled(not self._loading)
        self._more.setText(self.tr("Show {count} more").format(count=self._model.pageSize()))
        self._cancel.setVisible(self._loading)
        self._stop_action.setEnabled(self._loading)
        if self._loading:
            self._status.setText(self.tr("Loading…"))
        elif self._stopped:
            self._status.setText(_tr(STOPPED_TEXT))
        elif more and self._model.totalCount() > rows:
            self._status.setText(self.tr("{shown} of {total} messages").format(
                shown=f"{rows:,}", total=f"{self._model.totalCount():,}"))
        elif more:
            self._status.setText(self.tr("The {count} most recent messages").format(
                count=f"{rows:,}"))
        elif rows == 1:
            self._status.setText(self.tr("1 message"))
        else:
            self._status.setText(self.tr("{count} messages").format(count=f"{rows:,}")
                                 if rows else "")
        self._legend.setVisible(
            any(self._model.messageRow(r).via_contact for r in range(rows))
            if self._code and registry.by_code(self._code).shows_contact_mail else False
        )

    # -- loading -----------------------------------------------------------------------------------
    def _start_load(self, *, first: bool) -> None:
        if self._store is None or self.document() is None:
            self._update_state()
            return
        self._tasks.cancel("more")
        self._tasks.start("list", self._load, first)

    async def _load(self, first: bool) -> None:
        store = self._store
        document = self.document()
        if store is None or document is None:
            return
        code, doc_id = document
        keep = self._current_id()
        self._loading = True
        self._stopped = False
        self._update_state()
        try:
            if first:
                loaded = await self._model.load(code, doc_id)
            else:
                loaded = await self._model.reload()
        finally:
            self._loading = False
            self._update_state()
        if not loaded:
            return
        self._loaded = True
        self._countdown.reset()
        if self._error_purpose == "list":
            self.clearError()
        if keep >= 0 and self._model.rowOf(keep) >= 0:
            self._select(keep)
        elif self._selected_id >= 0 or keep >= 0:
            # The message shown is no longer in the list (detached, moved away): its
            # text and attachments go with it.
            self._forget_preview()
        self._update_state()
        self.messagesLoaded.emit(self._model.rowCount())
        if self._model.totalCount() < 0:
            await self._load_total()
        # Needed only for New, the references and deciding on imports: read after the rows
        # so that the list appears as early as possible.
        if first or self._number is None:
            self._number = await store.document_number(code, doc_id)
            if registry.by_code(code).shows_contact_mail:
                contacts = await store.document_contacts(code, doc_id)
                self._contact_ids = frozenset(c.cntct_id for c in contacts)

    async def _load_total(self) -> None:
        try:
            await self._model.loadTotal()
        except XtmailError as exc:
            # Only the footer's total is missing ("The 100 most recent messages"): the
            # rows are shown, and the next reload counts again.
            log.info("the document's mail could not be counted: %s", exc)
        self._update_state()

    def _select(self, eml_id: int) -> None:
        row = self._model.rowOf(eml_id)
        if row < 0:
            return
        index = self._model.index(row, 0)
        selection = self._view.selectionModel()
        if selection is not None:
            selection.setCurrentIndex(
                index,
                QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows,
            )

    def refresh(self, *_: object) -> None:
        """Read the document's mail again (keeps the number of rows shown and the selection)."""
        self.clearError()
        self._start_load(first=not self._loaded)

    def _retry(self) -> None:
        """The countdown ran out: read the list again, the banner staying until it works."""
        if self._error_purpose != "list":
            return
        self._show_banner(f"{self._retry_text}\n{retry_line(0)}")
        self._start_load(first=not self._loaded)

    def _on_countdown(self, seconds: int) -> None:
        if self._error_purpose == "list" and self._retry_text:
            self._show_banner(f"{self._retry_text}\n{retry_line(seconds)}")

    def isRetryScheduled(self) -> bool:
        """Whether the list is read again by itself after a failure that may mend."""
        return self._countdown.isActive()

    def cancelLoading(self, *_: object) -> None:
        """Stop waiting for the list and the preview (Cancel, Esc); automatic retries stop
        too. What was shown stays; Refresh reads it again."""
        if not (self._tasks.is_running("list") or self._tasks.is_running("more")):
            return
        if self._tasks.is_running("preview"):
            self._selected_id = -1  # clicked again, the message is read again
        self._tasks.cancel("list", "more", "preview")
        self._countdown.stop()
        self._loading = False
        self._stopped = True
        if self._error_purpose == "list":
            self.clearError()
        self._update_state()

    def showMore(self, *_: object) -> None:
        """Add the next page of older mail."""
        if self._store is None or self.document() is None:
            return
        self._tasks.start("more", self._load_more)

    async def _load_more(self) -> None:
        self._loading = True
        self._update_state()
        try:
            added = await self._model.loadMore()
        finally:
            self._loading = False
            self._update_state()
        if added:
            self.messagesLoaded.emit(self._model.rowCount())
        if self._model.totalCount() < 0:
            await self._load_total()

    def onMessagesImported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        """Refresh when newly imported mail is tied to this document or its contacts.

        Connect the sync service's ``messagesImported`` signal here; ``ties`` maps each
        imported ``eml_id`` to its ``(code, id)`` ties.
        """
        document = self.document()
        if document is None or self._store is None:
            return
        code, doc_id = document
        for pairs in ties.values():
            for tie_code, tie_id in pairs:
                same = tie_code.upper() == code and tie_id == doc_id
                via = tie_code.upper() == "T" and tie_id in self._contact_ids
                if same or via:
                    self._start_load(first=not self._loaded)
                    return

    # -- selection and preview ---------------------------------------------------------------------
    def _on_selection_changed(self, *_: QItemSelection) -> None:
        self._update_state()

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._update_state()
        if not current.isValid():
            self._forget_preview()
            return
        eml_id = self._model.emlId(current.row())
        if eml_id == self._selected_id:
            return
        self._selected_id = eml_id
        self.messageSelected.emit(eml_id)
        if self._detail is not None and self._detail.eml_id == eml_id:
            self._show_detail(self._detail)
            return
        self._preview.clear()
        self._show_attachments(None)
        self._tasks.start("preview", self._load_preview, eml_id)

    async def _load_preview(self, eml_id: int) -> None:
        detail = await self._message(eml_id)
        if self._current_id() == eml_id:
            self._show_detail(detail)

    def _show_detail(self, detail: MessageDetail) -> None:
        self._preview.setPlainText(preview_text(detail))
        self._show_attachments(detail)
        self._refresh_formatted()

    def _forget_preview(self) -> None:
        self._selected_id = -1
        self._detail = None
        self._tasks.cancel("preview", "formatted")
        self._preview.clear()
        self._browser.clear()
        self._link.clear()
        self._show_attachments(None)

    def _show_attachments(self, detail: MessageDetail | None) -> None:
        self._attachments.clear()
        attachments = detail.attachments if detail is not None else ()
        for n, info in enumerate(attachments):
            name = attachment_name(info, n)
            ctype = str(info.get("content_type") or "application/octet-stream")
            size = info.get("size")
            item = QListWidgetItem(_attachment_icon(name, ctype, self.style()),
                                   f"{name}{_size(size)}")
            described = _mime().mimeTypeForName(ctype).comment() or ctype
            kind = ("attached message" if ctype.lower().startswith("message/")
                    else described)
            item.setToolTip(f"{name}\n{kind} ({ctype})"
                            + (f"\n{format_size(size)}" if isinstance(size, int) else ""))
            item.setData(Qt.ItemDataRole.UserRole, n)
            self._attachments.addItem(item)
        self._attachments_bar.setVisible(bool(attachments))
        if attachments:
            self._attachments.setCurrentRow(0)
        self._on_attachment_current(self._attachments.currentRow())

    def _on_attachment_current(self, row: int) -> None:
        self._open_attachment.setEnabled(row >= 0)
        self._save_attachment.setEnabled(row >= 0)

    def _on_attachment_activated(self, item: QListWidgetItem) -> None:
        self._attachments.setCurrentItem(item)
        self.openAttachment()

    def _show_attachment_menu(self, pos: QPoint) -> None:
        item = self._attachments.itemAt(pos)
        viewport = self._attachments.viewport()
        if item is not None and viewport is not None:
            self._attachments.setCurrentItem(item)
            self._attachment_menu.popup(viewport.mapToGlobal(pos))

    def _chosen_attachment(self) -> tuple[int, int, dict[str, object]] | None:
        detail = self._detail
        row = self._attachments.currentRow()
        if detail is None or detail.eml_id != self._current_id() or not (
                0 <= row < len(detail.attachments)):
            return None
        return detail.eml_id, row, detail.attachments[row]

    def openAttachment(self, *_: object) -> None:
        """Open the chosen attachment with the desktop's program for its type (programs
        and scripts only after a warning)."""
        chosen = self._chosen_attachment()
        if chosen is not None:
            self._start_action("attachment", self._open_part, *chosen)

    def saveAttachment(self, *_: object) -> None:
        """Save the chosen attachment where the user chooses."""
        chosen = self._chosen_attachment()
        if chosen is not None:
            self._start_action("attachment", self._save_part, *chosen)

    async def _open_part(self, eml_id: int, index: int, info: dict[str, object]) -> None:
        name = attachment_name(info, index)
        ctype = str(info.get("content_type") or "")
        if is_risky(name, ctype):
            box = QMessageBox(self)
            box.setObjectName("riskyAttachmentWarning")
            box.setIcon(QMessageBox.Icon.Warning)
            box.setWindowTitle(self.tr("Open Attachment"))
            box.setText(f"“{name}” is a program or a script. Open it?")
            box.setInformativeText(
                "Opening it runs it on this computer with your rights. Open it only if you "
                "expected it from the sender and trust them; otherwise save it and have it "
                "checked."
            )
            box.setStandardButtons(
                QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel)
            box.setDefaultButton(QMessageBox.StandardButton.Cancel)
            if await _dialog_result(box) != QMessageBox.StandardButton.Open.value:
                return
        data = await self._require_store().attachment(eml_id, index)
        try:
            path = await asyncio.to_thread(self.privateFiles().write_named, data, name)
        except OSError as exc:
            raise DesktopError(
                f"The attachment could not be saved for its program: {exc.strerror or exc}.",
                hint="Check that the temporary folder has free space, then try again.",
            ) from exc
        open_url(
            self._desktop, QUrl.fromLocalFile(str(path)),
            DesktopError(
                f"No program is set up to open “{name}”.",
                hint="Use Save As to keep it, or choose a program for this kind of file in "
                "the system settings.",
            ),
        )
        self.attachmentOpened.emit(str(path))

    async def _save_part(self, eml_id: int, index: int, info: dict[str, object]) -> None:
        name = safe_file_name(attachment_name(info, index))
        dialog = QFileDialog(self, "Save Attachment", self._suggested_path(name))
        dialog.setObjectName("saveAttachmentDialog")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setFileMode(QFileDialog.FileMode.AnyFile)
        if await _dialog_result(dialog) != QDialog.DialogCode.Accepted.value:
            return
        files = dialog.selectedFiles()
        if not files:
            return
        target = files[0]
        data = await self._require_store().attachment(eml_id, index)
        try:
            await asyncio.to_thread(_write_file, target, data)
        except OSError as exc:
            raise DesktopError(
                f"“{name}” could not be saved: {exc.strerror or exc}.",
                hint="Choose a folder you may write to, with free space, and try again.",
            ) from exc
        self._remember_folder(target)
        self.attachmentSaved.emit(target)

    def _suggested_path(self, name: str) -> str:
        return os.path.join(self._save_folder or os.path.expanduser("~"), name)

    def _remember_folder(self, target: str) -> None:
        self._save_folder = os.path.dirname(target)

    async def _message(self, eml_id: int) -> MessageDetail:
        if self._detail is not None and self._detail.eml_id == eml_id:
            return self._detail
        store = self._require_store()
        detail = await store.message(eml_id)
        self._detail = detail
        return detail

    def _require_store(self) -> MailStore:
        if self._store is None:
            raise XtmailError(
                "This tab is not connected to the database.",
                hint="Reopen the document window; if that does not help, restart the program.",
            )
        return self._store

    def _show_menu(self, pos: QPoint) -> None:
        viewport = self._view.viewport()
        if viewport is not None:
            # popup(), not exec(): no nested event loop on the qasync loop.
            self._menu.popup(viewport.mapToGlobal(pos))

    # -- actions -----------------------------------------------------------------------------------
    def _start_action(
        self, purpose: str, func: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        if self._store is None or self.document() is None:
            return
        if self._error_purpose and self._error_purpose != "list":
            self.clearError()
        self._tasks.start(purpose, func, *args)

    def _on_double_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self._start_action("open", self._open, self._model.emlId(index.row()))

    def openMessage(self, *_: object) -> None:
        """Open the current message in the user's mail program (as a temporary .eml file)."""
        eml_id = self._current_id()
        if eml_id >= 0:
            self._start_action("open", self._open, eml_id)

    async def _open(self, eml_id: int) -> None:
        store = self._require_store()
        raw = await store.raw_message(eml_id)
        row = self._model.rowOf(eml_id)
        stem = self._model.messageRow(row).subject if row >= 0 else ""
        try:
            path = await asyncio.to_thread(
                self.privateFiles().write, raw, stem=stem or f"message {eml_id}", suffix=".eml"
            )
        except OSError as exc:
            raise DesktopError(
                "The message could not be saved for your mail program: "
                f"{exc.strerror or exc}.",
                hint="Check that the temporary folder has free space, then try again.",
            ) from exc
        open_url(
            self._desktop, QUrl.fromLocalFile(str(path)),
            DesktopError(
                "No program is set up to open saved mail (.eml files).",
                hint="Choose your mail program for .eml files in the system settings, "
                "then try again.",
            ),
        )
        self.messageOpened.emit(str(path))

    def newMessage(self, *_: object) -> None:
        """Write a new mail to the document's contacts, its subject carrying the reference."""
        self._start_action("compose", self._compose, "new")

    def reply(self, *_: object) -> None:
        self._start_action("compose", self._compose, "reply")

    def replyAll(self, *_: object) -> None:
        self._start_action("compose", self._compose, "replyAll")

    def forward(self, *_: object) -> None:
        self._start_action("compose", self._compose, "forward")

    async def _reference(self) -> Reference | None:
        document = self.document()
        if document is None:
            return None
        code, doc_id = document
        if self._number is None:
            self._number = await self._require_store().document_number(code, doc_id)
        if self._number is None:
            return None
        try:
            return Reference(code, self._number)
        except ValueError:
            # A number that cannot be written in a token: the mail goes without one rather
            # than not at all; it can still be attached by hand.
            log.info("document %s-%s has no usable reference", code, self._number)
            return None

    async def _draft(self, kind: str) -> Draft:
        ref = await self._reference()
        document = self.document()
        if document is None:
            raise XtmailError("No document is open.", hint="Open a document first.")
        if kind == "new":
            contacts = await self._require_store().document_contacts(*document)
            return new_draft([c.email for c in contacts if c.email], ref)
        eml_id = self._current_id()
        if eml_id < 0:
            raise XtmailError("No message is selected.", hint="Select a message first.")
        info = _message_info(await self._message(eml_id))
        if kind in ("reply", "replyAll"):
            # The thread's ids are in the raw header only; a complete draft carries them.
            raw = await self._require_store().raw_message(eml_id)
            message_id, references = await asyncio.to_thread(thread_of, raw)
            info = dataclasses.replace(info, message_id=message_id, references=references)
        if kind == "reply":
            return reply_draft(info, ref=ref, own_addresses=self._own)
        if kind == "replyAll":
            return reply_all_draft(info, ref=ref, own_addresses=self._own)
        return forward_draft(info, ref=ref)

    async def _compose(self, kind: str) -> None:
        draft = await self._draft(kind)
        handover = await self._mail_program.compose(draft, self._desktop, self.privateFiles())
        if handover.how != "none":
            self.composeRequested.emit(handover.url())
        if not handover.complete:
            self._offer_full_draft(draft, handover)

    def _offer_full_draft(self, draft: Draft, handover: Handover) -> None:
        """Say what did not reach the mail program and offer the whole draft to copy."""
        if handover.how == "shortened":
            text = self.tr(
                "Your mail program could not take the whole mail, so the quoted text was "
                "shortened: {kept} of its {total} lines are in the new mail.\n"
                "Press Copy Full Text and paste it into the mail to include all of it."
            ).format(kept=handover.kept_lines, total=handover.total_lines)
        else:
            text = self.tr(
                "Your mail program could not take a mail with this many recipients or this "
                "long a subject, so no mail was started.\n"
                "Press Copy Full Text, then paste the recipients, subject and text into a "
                "new mail in your mail program."
            )
        self._report("compose", text)
        self._full_draft = draft_text(draft)
        self._copy_draft.show()
        self._place_banner()

    def _copy_full_draft(self) -> None:
        clipboard = QApplication.clipboard()
        if clipboard is not None and self._full_draft:
            clipboard.setText(self._full_draft)

    def printMessage(self, *_: object) -> None:
        """Print the selected messages (in list order, each from a new page), through the
        print dialog."""
        ids = [self._model.emlId(r) for r in self._selected_rows()]
        if not ids and self._current_id() >= 0:
            ids = [self._current_id()]
        if ids:
            self._start_action("print", self._print, ids)

    async def _print(self, ids: list[int]) -> None:
        from PyQt6.QtPrintSupport import QPrintDialog

        details = [await self._message(eml_id) if self._detail is not None
                   and self._detail.eml_id == eml_id else await self._require_store().message(
                       eml_id) for eml_id in ids]
        printer = self.printer()
        dialog = QPrintDialog(printer, self)
        dialog.setObjectName("printDialog")
        dialog.setWindowTitle("Print Message" if len(ids) == 1
                              else f"Print {len(ids)} Messages")
        if await _dialog_result(dialog) != QDialog.DialogCode.Accepted.value:
            return
        document = print_document(details)
        document.setDocumentMargin(0)
        # On the GUI thread: Qt's printing is bound to it for the default fonts, and a few
        # messages are small enough to lay out and render between two frames.
        document.print(printer)
        for eml_id in ids:
            self.messagePrinted.emit(eml_id)

    def attach(self, *_: object) -> None:
        """Ask to tie more mail to the document (``attachRequested`` and the dialog)."""
        document = self.document()
        if document is None or self._store is None:
            return
        self.attachRequested.emit(*document)
        if self._attach_factory is not None:
            self._start_action("attach", self._attach, *document)

    async def _attach(self, code: str, doc_id: int) -> None:
        factory = self._attach_factory
        if factory is None:
            return
        dialog = factory(code, doc_id, self)
        if await _dialog_result(dialog) == QDialog.DialogCode.Accepted.value:
            if self.document() == (code, doc_id):
                self._start_load(first=not self._loaded)

    def detach(self, *_: object) -> None:
        """Untie the selected messages from the document, after a confirmation."""
        rows = [self._model.messageRow(r) for r in self._selected_rows()]
        ids = [r.eml_id for r in rows if not r.via_contact]
        if ids:
            self._start_action("detach", self._detach, ids, len(rows) - len(ids))

    async def _detach(self, ids: list[int], skipped: int) -> None:
        document = self.document()
        doc = registry.find(self._code)
        if document is None or doc is None:
            return
        code, doc_id = document
        what = f"{_document_words(doc)} {self._number}" if self._number else f"this {doc.label}"
        count = "1 message" if len(ids) == 1 else f"{len(ids)} messages"
        box = QMessageBox(self)
        box.setObjectName("detachConfirmation")
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle(self.tr("Detach Mail"))
        box.setText(f"Detach {count} from {what}?")
        info = (
            "The mail stays in the database and stays tied to its contacts and other "
            "documents; Attach ties it again."
        )
        if skipped:
            info += (
                f"\n\n{skipped} of the selected messages are listed because they are tied to "
                "a contact; detach those on the contact."
            )
        box.setInformativeText(info)
        box.setStandardButtons(
            QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel
        )
        ok = box.button(QMessageBox.StandardButton.Ok)
        if ok is not None:
            ok.setText(self.tr("Detach"))
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        if await _dialog_result(box) != QMessageBox.StandardButton.Ok.value:
            return
        removed = await self._require_store().detach(ids, code, doc_id)
        self.messagesDetached.emit(removed)
        if self.document() == (code, doc_id):
            self._start_load(first=not self._loaded)

    # -- lifetime ----------------------------------------------------------------------------------
    def cancelPending(self) -> None:
        """Cancel all database work under way (done on close and on document change)."""
        self._tasks.cancel_all()
        self._countdown.stop()
        self._loading = False
        self._update_state()

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self.cancelPending()
        super().closeEvent(event)

