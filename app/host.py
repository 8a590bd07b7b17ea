"""``MailHost``: what a host application (the ERP client, the demo) creates once to have mail.

Importing this module loads the database driver and the sync engine: do it at launch,
before the windows are up, not in the middle of a user's work.

One object per application::

    loop = make_event_loop(app)           # a selector loop, also on Windows (psycopg)
    host = MailHost(dsn, QSettings())
    await host.start()                    # store, preferences, sync when the user asked
    tab.setDocument("S", 50123)           # any EmailTab: the host finds it, or
    host.registerTab(tab)                 # hand it over at once
    status_bar_label.setText(host.statusText()); host.statusChanged.connect(...)
    host.openPreferences(main_window)     # Edit > User Preferences > Email
    await host.aclose()                   # on quit

It opens the :class:`~xtmail.sync.db.mailstore.MailStore`, reads the Email preferences
(:func:`~xtmail.sync.imap.settings.load_email_settings`), starts the
:class:`~xtmail.sync.imap.service.SyncService` when "Synchronize email while running
application" is ticked (parsing in :func:`~xtmail.sync.imap.service.parse_pool`'s
processes), asks for a password once per session where no keyring or password command has
one, refreshes every open Email tab when mail is imported, gives the tabs the user's own
addresses (the configured ones and each account's login address), and stops it all on quit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from PyQt6 import sip
from PyQt6.QtCore import QObject, QSettings, QTimer, pyqtSignal
from PyQt6.QtWidgets import QApplication, QDialog, QInputDialog, QLineEdit, QWidget

from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.errors import XtmailError
from xtmail.sync.imap.credentials import KeyringCredentials
from xtmail.sync.imap.service import SyncService, parse_pool
from xtmail.sync.imap.settings import AccountSettings, EmailSettings, load_email_settings
from xtmail.widgets.email_tab import EmailTab

if TYPE_CHECKING:
    import psycopg
    import qasync

    from xtmail.dialogs.email_prefs import EmailPreferencesDialog
    from xtmail.sync.imap.account import Backoff, ConnectDb

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often (ms) the host looks for Email tabs that were not registered with it.
FIND_TABS_EVERY_MS = 1000

#: Asks the user for an account's password; None when the user cancels.
PasswordPrompt = Callable[[AccountSettings, "QWidget | None"], Awaitable["str | None"]]


def make_event_loop(app: QApplication) -> qasync.QEventLoop:
    """The qasync loop for ``app``: a selector loop everywhere. On Windows qasync's default
    is a proactor loop, which psycopg's asynchronous connections refuse."""
    import qasync

    if sys.platform == "win32":
        return qasync.QSelectorEventLoop(app)
    return qasync.QEventLoop(app)


async def ask_password(account: AccountSettings, parent: QWidget | None = None) -> str | None:
    """A password dialog naming the account, opened with ``open()`` and awaited (``exec()``
    inside a coroutine breaks qasync's loop). None when cancelled or left empty."""
    dialog = QInputDialog(parent)
    dialog.setObjectName("xtmailPasswordDialog")
    dialog.setWindowTitle(dialog.tr("Email password"))
    dialog.setLabelText(dialog.tr(
        "Password for %1 on %2 (kept until you quit):").replace("%1", account.user)
        .replace("%2", account.host))
    dialog.setTextEchoMode(QLineEdit.EchoMode.Password)
    done: asyncio.Future[int] = asyncio.get_event_loop().create_future()

    def finished(result: int) -> None:
        if not done.done():
            done.set_result(result)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        result = await done
        password = dialog.textValue()
    finally:
        dialog.deleteLater()
    if result != QDialog.DialogCode.Accepted or not password:
        return None
    return password


class MailHost(QObject):
    """Mail for one host application: the store, the sync service, the open Email tabs.

    Signals:
        statusChanged(str text): one line for the host's status bar.
        runningChanged(bool running): the sync service started or stopped.
        errorOccurred(str kind, str message): the sync service's errors, as it reports them.
        ownAddressesChanged(list addresses): the user's own addresses, applied to the tabs.

    ``dsn`` names the database (the store and, unless ``connect_db`` is given, the sync's
    connections); ``settings`` is where the preferences live. ``credentials`` shares the
    session's passwords with the preferences page; ``password_prompt`` asks for a password
    (default: :func:`ask_password`); ``parse_workers`` processes parse mail (0: in the sync
    thread).

    ``sync_process`` (the default): each account syncs in a child process of its own, at a
    lower CPU priority, with its own parse processes (``parse_workers`` of them); the GUI
    thread never waits for an interpreter lock a sync thread holds, and the child, in a
    scheduling group of its own, never spends this process's CPU share (bench/gui_stall.py:
    longest stall 10.7 ms against 25.5 ms with the sync in threads of this process,
    docs/benchmarks.md). Credentials stay in this process: the child asks for them when it
    connects. ``False``, or a ``connect_db`` function (which cannot cross to a child), runs
    the sync in threads here, and then:

    ``freeze_gc``: when the first sync starts, what the application holds by then (its
    modules, windows, Qt wrappers) is moved out of the garbage collector's reach with
    ``gc.freeze()``, once per process. A sync allocates fast; the full collections that
    triggers run in a sync thread, holding the interpreter lock, and walked all of that too:
    30-50 ms in which the GUI thread could not run (bench/gui_stall.py, docs/benchmarks.md).
    Objects frozen stay alive until they are freed by their reference count.
    """

    statusChanged = pyqtSignal(str)
    runningChanged = pyqtSignal(bool)
    errorOccurred = pyqtSignal(str, str)
    ownAddressesChanged = pyqtSignal(list)

    def __init__(
        self,
        dsn: str,
        settings: QSettings,
        parent: QObject | None = None,
        *,
        connect_db: ConnectDb | None = None,
        credentials: KeyringCredentials | None = None,
        password_prompt: PasswordPrompt = ask_password,
        parse_workers: int = 2,
        backoff: Backoff | None = None,
        freeze_gc: bool = True,
        sync_process: bool = True,
    ) -> None:
        super().__init__(parent)
        self._freeze_gc = freeze_gc
        self._sync_process = sync_process
        self._dsn = dsn
        self._settings = settings
        self._connect_db = connect_db
        self._credentials = credentials or KeyringCredentials()
        self._prompt = password_prompt
        self._parse_workers = parse_workers
        self._backoff = backoff
        self._email = load_email_settings(settings)
        self._store: MailStore | None = None
        self._service: SyncService | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._tabs: list[EmailTab] = []
        self._status = self.tr("Email: not started")
        self._prompt_parent: QWidget | None = None
        self._starting: asyncio.Task[None] | None = None
        # Tabs nobody registered are looked for now and then, and at each import.
        self._finder = QTimer(self)
        self._finder.setInterval(FIND_TABS_EVERY_MS)
        self._finder.timeout.connect(self._find_tabs)

    # -- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, read the preferences, start synchronizing if the user asked for
        it. Raises :class:`~xtmail.sync.errors.DatabaseUnavailable` when the database cannot
        be reached."""
        self._store = await MailStore.connect(self._dsn)
        self._email = load_email_settings(self._settings)
        self._service = SyncService(
            self._email.enabled(), self._credentials, self._connect_db or self._dsn, self,
            parse_executor=None, backoff=self._backoff,
            separate_process=self._sync_process, parse_workers=self._parse_workers)
        self._service.statusChanged.connect(self._on_status)
        self._service.errorOccurred.connect(self._on_error)
        self._service.runningChanged.connect(self.runningChanged)
        self._service.messagesImported.connect(self._on_imported)
        self._apply_own_addresses()
        self._finder.start()
        if self._email.sync_while_running:
            # Not awaited: the host builds its windows meanwhile (a password dialog may wait
            # for the user).
            self._start_in_background()
        else:
            self._set_status(self.tr("Email: synchronization is off (User Preferences, Email)"))

    async def startSync(self) -> bool:
        """Start the sync of every enabled account, asking for the passwords nothing else
        holds (once per session). False when nothing could start."""
        service = self._require_service()
        email = load_email_settings(self._settings)
        self._email = email
        ready = []
        for settings in email.enabled():
            account = settings.account
            # A keyring may wait for its own unlock prompt: not on the GUI thread.
            if await _in_thread(self._credentials.needs_password, account):
                parent = self._prompt_parent or QApplication.activeWindow()
                password = await self._prompt(account, parent)
                if password is None:
                    text = self.tr("Not synchronizing %1: no password was given. Start it "
                                   "from User Preferences, Email.").replace("%1", account.key)
                    self._set_status(self.tr("Email: %1").replace("%1", text))
                    self.errorOccurred.emit("config", text)
                    continue
                self._credentials.remember(account, password)
            ready.append(settings)
        if not ready:
            if not email.enabled():
                self._set_status(self.tr(
                    "Email: no account to synchronize (User Preferences, Email)"))
            return False
        if not service.runsInProcesses():
            if self._pool is None and self._parse_workers > 0:
                self._pool = parse_pool(self._parse_workers)
                service.setParseExecutor(self._pool)
            if self._freeze_gc:
                _freeze_long_lived()
        service.setSettings(ready)
        service.start()
        return service.isRunning()

    def stopSync(self) -> None:
        if self._service is not None:
            self._service.stop()

    async def aclose(self) -> None:
        """Stop the sync (the batch in hand is committed), close the store, end the parse
        processes. Call it before the event loop ends."""
        self._finder.stop()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._service is not None:
            await self._service.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_event_loop().run_in_executor(None, pool.shutdown)
        if self._store is not None and not self._store.closed:
            await self._store.close()
        self._set_status(self.tr("Email: stopped"))

    # -- what the host application reads ------------------------------------------------------
    def store(self) -> MailStore | None:
        return self._store

    def service(self) -> SyncService | None:
        return self._service

    def credentials(self) -> KeyringCredentials:
        return self._credentials

    def emailSettings(self) -> EmailSettings:
        return self._email

    def ownAddresses(self) -> list[str]:
        return list(self._email.own_addresses())

    def statusText(self) -> str:
        return self._status

    def isRunning(self) -> bool:
        return self._service is not None and self._service.isRunning()

    def setPromptParent(self, parent: QWidget | None) -> None:
        """The window the password dialog is shown over (the main window)."""
        self._prompt_parent = parent

    # -- Email tabs ---------------------------------------------------------------------------
    def registerTab(self, tab: EmailTab) -> None:
        """Give ``tab`` the store and the own addresses, and refresh it from the sync at once.
        Email tabs not registered are found within :data:`FIND_TABS_EVERY_MS` and at each
        import; registering spares the wait."""
        self._adopt(tab)

    def tabs(self) -> list[EmailTab]:
        """The application's live Email tabs (registered or found)."""
        self._find_tabs()
        return [t for t in self._tabs if not sip.isdeleted(t)]

    def _find_tabs(self) -> None:
        known = {id(t) for t in self._tabs}
        for widget in QApplication.allWidgets():
            if isinstance(widget, EmailTab) and id(widget) not in known:
                self._adopt(widget)

    def _adopt(self, tab: EmailTab) -> None:
        if tab not in self._tabs:
            self._tabs.append(tab)
            tab.destroyed.connect(self._forget_tabs)
        if self._store is not None and tab.store() is None:
            tab.setStore(self._store)
        tab.setOwnAddresses(self.ownAddresses())

    def _forget_tabs(self, *_: object) -> None:
        self._tabs = [t for t in self._tabs if not sip.isdeleted(t)]

    def _on_imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        for tab in self.tabs():
            tab.onMessagesImported(ties)

    def _apply_own_addresses(self) -> None:
        own = self.ownAddresses()
        for tab in self.tabs():
            tab.setOwnAddresses(own)
        self.ownAddressesChanged.emit(own)

    # -- preferences --------------------------------------------------------------------------
    def preferencesDialog(self, parent: QWidget | None = None) -> EmailPreferencesDialog:
        """The Email page of User Preferences in a Save/Cancel dialog, wired to this host's
        settings, credentials and sync service."""
        from xtmail.dialogs.email_prefs import EmailPreferencesDialog, EmailPreferencesPage
        from xtmail.sync.imap.offers import DatabaseOffers

        page = EmailPreferencesPage(settings_store=self._settings,
                                    credentials=self._credentials, service=self._service,
                                    server_offers=DatabaseOffers(self._offer_connection))
        page.settingsSaved.connect(self._on_settings_saved)
        return EmailPreferencesDialog(page, parent)

    def _offer_connection(self) -> psycopg.Connection:
        """A connection as the user, to offer accounts to the company's mail server."""
        if self._connect_db is not None:
            return self._connect_db()
        from xtmail.app.options import connect

        return connect(self._dsn)

    def openPreferences(self, parent: QWidget | None = None) -> EmailPreferencesDialog:
        dialog = self.preferencesDialog(parent)
        dialog.open()
        return dialog

    def _on_settings_saved(self) -> None:
        was_on = self._email.sync_while_running
        self._email = load_email_settings(self._settings)
        self._apply_own_addresses()
        if self._email.sync_while_running and not self.isRunning():
            self._start_in_background()
        elif was_on and not self._email.sync_while_running:
            self.stopSync()

    def _start_in_background(self) -> None:
        if self._starting is not None and not self._starting.done():
            return
        self._starting = asyncio.get_event_loop().create_task(
            self._start_quietly(), name="xtmail host start")

    def startingTask(self) -> asyncio.Task[None] | None:
        """The start of the sync under way (a password may be asked), if any."""
        return self._starting

    async def _start_quietly(self) -> None:
        try:
            await self.startSync()
        except XtmailError as exc:
            self._on_error(exc.kind, exc.user_text())
        except Exception as exc:  # a bug: logged with its traceback, and said
            log.error("starting the mail sync failed", exc_info=exc)
            self._on_error("internal", f"Synchronization could not start: {exc!r}")

    # -- status -------------------------------------------------------------------------------
    def _on_status(self, text: str) -> None:
        self._set_status(self.tr("Email: %1").replace("%1", text))

    def _on_error(self, kind: str, message: str) -> None:
        first = message.splitlines()[0] if message else kind
        self._set_status(self.tr("Email: %1").replace("%1", first))
        self.errorOccurred.emit(kind, message)

    def _set_status(self, text: str) -> None:
        self._status = text
        self.statusChanged.emit(text)

    def _require_service(self) -> SyncService:
        if self._service is None:
            raise RuntimeError("MailHost.start() has not run")
        return self._service


_frozen = False


def _freeze_long_lived() -> None:
    """Freeze what the process holds (see MailHost's ``freeze_gc``): once a process.

    Without a collection first: on the GUI thread, a full collection of an ERP client's
    heap is itself a stall (25 ms measured in bench/gui_stall.py, for 15 unreachable
    objects found). The few cycles of garbage frozen with the rest are kept, once."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


async def _in_thread(func: Callable[..., T], *args: object) -> T:
    # Not asyncio.to_thread, which needs a running loop: qasync's run_until_complete runs
    # queued callbacks once more after its loop stopped (tests, the demo's end), and the
    # current loop serves there.
    return await asyncio.get_event_loop().run_in_executor(None, func, *args)


__all__ = ["MailHost", "PasswordPrompt", "ask_password", "make_event_loop"]
