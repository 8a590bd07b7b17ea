"""``SyncService``: the sync engine on the host application's qasync event loop.

The engine (:mod:`xtmail.sync.imap.folder_sync`) blocks — imap-tools calls, the sync psycopg
connection, parsing — so it runs in worker threads the service owns; parsing can go further
out, to a process pool. The GUI thread only receives signals: the engine's listener calls
hop onto the loop with ``call_soon_threadsafe`` and are emitted there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from PyQt6.QtCore import QObject, pyqtSignal

from xtmail.sync.errors import XtmailError
from xtmail.sync.imap.account import AccountResult, AccountSync, Backoff, ConnectDb
from xtmail.sync.imap.credentials import CredentialProvider
from xtmail.sync.imap.folder_sync import SyncListener
from xtmail.sync.imap.settings import SyncSettings
from xtmail.sync.pipeline import parse_processes

log = logging.getLogger(__name__)

#: How long ``aclose()`` waits for the worker threads to notice the stop flag.
STOP_TIMEOUT = 30.0


class _Bridge(SyncListener):
    """Forwards the engine's calls (sync thread) to the service's signals (loop thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: SyncService) -> None:
        self._loop = loop
        self._service = service

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def progress(self, account: str, folder: str, done: int, total: int) -> None:
        self._post(self._service.progressChanged.emit, account, folder, done, total)

    def status(self, text: str) -> None:
        self._post(self._service.statusChanged.emit, text)

    def imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        self._post(self._service.messagesImported.emit, ties)

    def error(self, kind: str, error: XtmailError) -> None:
        self._post(self._service._report_error, kind, error.user_text())

    def warning(self, text: str) -> None:
        self._post(self._service._report_error, "warning", text)


class SyncService(QObject):
    """Synchronizes the configured account's folders while the application runs.

    Signals:
        progressChanged(str account, str folder, int done, int total): a batch was stored.
        statusChanged(str text): what the service is doing now, one line for a status area.
        errorOccurred(str kind, str message): ``kind`` is the error's
            (:data:`xtmail.sync.errors.ERROR_KINDS`), ``"warning"`` when the sync goes on
            but the user should act (contacts not created for want of a privilege, a
            message kept by its raw bytes only), or ``"internal"`` for a failure xtmail did
            not expect; the message says what to do.
        messagesImported(dict): new messages, eml_id -> list of (document code, id) ties;
            open Email tabs refresh from it.
        syncFinished(str account, int imported): a pass over all folders ended.
        runningChanged(bool running): the service started or stopped.

    ``connect_db`` is a DSN or a function returning a new autocommit psycopg connection;
    ``parse_executor`` parses messages (:func:`parse_pool` keeps parsing off the GUI
    thread's interpreter lock and CPU; None parses in the sync thread). Call :meth:`aclose`
    before the loop ends: it stops the workers and waits for them.
    """

    progressChanged = pyqtSignal(str, str, int, int)
    statusChanged = pyqtSignal(str)
    errorOccurred = pyqtSignal(str, str)
    messagesImported = pyqtSignal(dict)
    syncFinished = pyqtSignal(str, int)
    runningChanged = pyqtSignal(bool)

    def __init__(
        self,
        settings: SyncSettings,
        credentials: CredentialProvider,
        connect_db: str | ConnectDb,
        parent: QObject | None = None,
        *,
        parse_executor: Executor | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._credentials = credentials
        if isinstance(connect_db, str):
            self._connect_db: ConnectDb = _DsnConnector(connect_db)
        else:
            self._connect_db = connect_db
        self._parse_executor = parse_executor
        self._backoff = backoff
        # Two threads: the sync itself, and close() of its connections after a stop.
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="xtmail-sync")
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._sync: AccountSync | None = None
        self._last_finished: datetime | None = None
        self._last_error = ""

    # -- Qt-shaped API ------------------------------------------------------------------------
    def settings(self) -> SyncSettings:
        return self._settings

    def setSettings(self, settings: SyncSettings) -> None:
        """New settings; folder and policy changes apply at the next pass, without a restart.

        A changed account (host, user, security...) reconnects at the next pass.
        """
        account_changed = settings.account != self._settings.account
        self._settings = settings
        sync = self._sync
        if sync is not None:
            sync.settings = settings
            if account_changed:
                sync.request_reconnect()
            sync.wake.set()

    def setFolders(self, folders: tuple[str, ...] | list[str]) -> None:
        """Folders to synchronize; applies at once (a waiting service syncs right away)."""
        self.setSettings(replace(self._settings, folders=tuple(folders)))

    def isRunning(self) -> bool:
        return self._task is not None and not self._task.done()

    def lastFinished(self) -> datetime | None:
        return self._last_finished

    def lastError(self) -> str:
        return self._last_error

    def start(self) -> None:
        """Start synchronizing on the running event loop (no-op when running)."""
        if self.isRunning():
            return
        try:
            self._settings = self._settings.validate()
        except XtmailError as exc:
            self._report_error(exc.kind, exc.user_text())
            return
        self._stop = threading.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="xtmail-sync")
        self._task.add_done_callback(self._task_done)
        self.runningChanged.emit(True)

    def startNow(self) -> None:
        """Sync now: start if stopped, else end the current wait (IDLE or polling pause)."""
        if not self.isRunning():
            self.start()
        elif self._sync is not None:
            self._sync.wake.set()

    def stop(self) -> None:
        """Ask the service to stop; it finishes the batch in hand (committed) and exits."""
        self._stop.set()
        if self._sync is not None:
            self._sync.wake.set()

    async def aclose(self) -> None:
        """Stop, wait for the worker threads, release them. The service can start again."""
        self.stop()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("sync did not stop within %s s; cancelling", STOP_TIMEOUT)
                task.cancel()
        if self._threads is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._threads.shutdown)
            self._threads = ThreadPoolExecutor(2, thread_name_prefix="xtmail-sync")

    # -- the task -----------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sync = AccountSync(
            self._settings, self._credentials, self._connect_db,
            executor=self._parse_executor,
            listener=_Bridge(loop, self),
            stop=self._stop,
            backoff=self._backoff,
        )
        self._sync = sync
        try:
            while not self._stop.is_set():
                self.statusChanged.emit("Synchronizing")
                result: AccountResult = await loop.run_in_executor(self._threads, sync.run_once)
                self._last_finished = datetime.now().astimezone()
                self.syncFinished.emit(result.account, result.imported)
                if result.error is not None:
                    self.statusChanged.emit("Stopped: " + str(result.error))
                    return
                if self._stop.is_set():
                    break
                self.statusChanged.emit(f"Up to date; {result.imported} new message(s)")
                await loop.run_in_executor(
                    self._threads, sync.wait_for_change, self._settings.poll_interval
                )
            self.statusChanged.emit("Stopped")
        finally:
            self._sync = None
            await loop.run_in_executor(self._threads, sync.close)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task is self._task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("sync task failed", exc_info=exc)
            self._report_error("internal", f"Synchronization failed unexpectedly: {exc!r}")
        self.runningChanged.emit(False)

    def _report_error(self, kind: str, message: str) -> None:
        self._last_error = message
        self.errorOccurred.emit(kind, message)


def parse_pool(workers: int = 2, *, niceness: int = 10) -> ProcessPoolExecutor:
    """A process pool for ``parse_executor``: spawned (forking a process that runs Qt and
    threads is unsafe) and at a lower CPU priority, so that on a busy machine the GUI thread
    wins the CPU over parsing. The caller owns it: ``shutdown()`` it at exit."""
    return parse_processes(workers, start="spawn", niceness=niceness)


class _DsnConnector:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __call__(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
