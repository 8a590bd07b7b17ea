"""``SyncService``: the sync engine on the host application's qasync event loop.

The engine (:mod:`xtmail.sync.imap.folder_sync`) blocks — imap-tools calls, the sync psycopg
connection, parsing — so it runs in worker threads the service owns; parsing can go further
out, to a process pool. The GUI thread only receives signals: the engine's listener calls
hop onto the loop with ``call_soon_threadsafe`` and are emitted there.

The GUI thread still shares the CPU and the interpreter lock with the sync threads. Two
settings keep it ahead (measured with bench/gui_stall.py; docs/benchmarks.md):

* the sync threads run at a lower CPU priority (:data:`SYNC_NICENESS` nice steps; Linux,
  where niceness is per thread, and inherited by the writer threads they start), as the
  parse processes do, so on a busy machine the operating system runs the GUI thread first;
* while a sync runs, the interpreter hands its lock over every :data:`SWITCH_INTERVAL`
  seconds instead of every 5 ms (``sys.setswitchinterval``; the previous value comes back
  when the last sync stops), so the GUI thread waits at most about that long for a lock a
  sync thread holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
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
from xtmail.sync.imap.process import SyncProcess, SyncProcessEnded
from xtmail.sync.imap.settings import (
    AccountSettings,
    SyncSettings,
    describe_error,
    tidy_text,
)
from xtmail.sync.pipeline import parse_processes

log = logging.getLogger(__name__)

#: How long ``aclose()`` waits for the worker threads to notice the stop flag.
STOP_TIMEOUT = 30.0

#: The first pause before a sync process that ended unexpectedly is started again, and the
#: longest one (the pause doubles while it keeps ending), in seconds.
RESTART_DELAY = 5.0
RESTART_CAP = 300.0

#: How many nice steps below the application the sync threads run (as ``parse_pool``'s
#: processes do).
SYNC_NICENESS = 10

#: The interpreter's thread switch interval while a sync runs, in seconds (Python's
#: default is 0.005).
SWITCH_INTERVAL = 0.001


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness`` steps. Linux only, where
    niceness belongs to a thread (and threads it starts inherit it); elsewhere, and where
    the system refuses, nothing changes."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
    except OSError as exc:  # a sandbox that forbids it: the sync runs at normal priority
        log.debug("cannot lower the sync thread's priority: %s", exc)


class _QuickSwitching:
    """Shortens the interpreter's switch interval while at least one sync runs, in any
    service of the process, and gives the previous value back after the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._previous = sys.getswitchinterval()

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._previous = sys.getswitchinterval()
                sys.setswitchinterval(min(self._previous, SWITCH_INTERVAL))
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setswitchinterval(self._previous)


_quick_switching = _QuickSwitching()


class _Bridge(SyncListener):
    """Forwards the engine's calls (sync thread) to the service's signals (loop thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: SyncService,
                 account: str) -> None:
        self._loop = loop
        self._service = service
        self._account = account

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def progress(self, account: str, folder: str, done: int, total: int) -> None:
        self._post(self._service.progressChanged.emit, account, folder, done, total)

    def status(self, text: str) -> None:
        self._post(self._service._status, self._account, tidy_text(text))

    def imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        self._post(self._service.messagesImported.emit, ties)

    def error(self, kind: str, error: XtmailError) -> None:
        account = self._service._account_settings(self._account)
        self._post(self._service._report_error, kind, describe_error(error, account))

    def warning(self, text: str) -> None:
        self._post(self._service._report_error, "warning", tidy_text(text))


class _Runner:
    """One account's task, stop flag, engine and threads."""

    def __init__(self, settings: SyncSettings, niceness: int, restart_delay: float) -> None:
        self.settings = settings
        # The pause before a sync process that ended unexpectedly is started again: it
        # doubles while the process keeps ending, and is back to the first after a pass.
        self.restarts = Backoff(initial=restart_delay, cap=max(restart_delay, RESTART_CAP))
        # Ends that pause early: Sync now, new settings, a stop.
        self.pause_over = threading.Event()
        self.task: asyncio.Task[None] | None = None
        self.stop = threading.Event()
        self.sync: AccountSync | SyncProcess | None = None
        # Two threads: the sync itself, and close() of its connections after a stop.
        self.threads = ThreadPoolExecutor(2, thread_name_prefix="xtmail-sync",
                                          initializer=lower_thread_priority,
                                          initargs=(niceness,))

    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class SyncService(QObject):
    """Synchronizes the folders of each configured account while the application runs.

    Signals:
        progressChanged(str account, str folder, int done, int total): a batch was stored.
        statusChanged(str text): what the service is doing now, one line for a status area
            (with several accounts, the line names the account).
        errorOccurred(str kind, str message): ``kind`` is the error's
            (:data:`xtmail.sync.errors.ERROR_KINDS`), ``"warning"`` when the sync goes on
            but the user should act (contacts not created for want of a privilege, a
            message kept by its raw bytes only), or ``"internal"`` for a failure xtmail did
            not expect; the message says what to do.
        messagesImported(dict): new messages, eml_id -> list of (document code, id) ties;
            open Email tabs refresh from it.
        syncFinished(str account, int imported): a pass over all folders of an account ended.
        runningChanged(bool running): the service started (its first account) or stopped
            (its last one).

    ``settings`` is one account's :class:`SyncSettings` or a sequence of them (each account
    runs in its own worker thread, with its own folders and state);
    ``connect_db`` is a DSN or a function returning a new autocommit psycopg connection;
    ``parse_executor`` parses messages (:func:`parse_pool` keeps parsing off the GUI
    thread's interpreter lock and CPU; None parses in the sync thread); ``niceness``: how
    many steps lower the sync threads' CPU priority is (0: the application's).
    ``separate_process``: each account syncs in a child process of its own
    (:class:`~xtmail.sync.imap.process.SyncProcess`; ``parse_workers`` processes of its own
    parse) instead of threads of this one, so that the sync never holds this process's
    interpreter lock; it needs ``connect_db`` as a DSN (a function cannot cross to the
    child; with one, the accounts run in threads). A child that ends without being asked
    (killed, out of memory) is reported and started again after ``restart_delay`` seconds,
    doubling while it keeps ending (at most :data:`RESTART_CAP`). Call
    :meth:`aclose` before the loop ends: it stops the workers and waits for them.
    """

    progressChanged = pyqtSignal(str, str, int, int)
    statusChanged = pyqtSignal(str)
    errorOccurred = pyqtSignal(str, str)
    messagesImported = pyqtSignal(dict)
    syncFinished = pyqtSignal(str, int)
    runningChanged = pyqtSignal(bool)

    def __init__(
        self,
        settings: SyncSettings | Sequence[SyncSettings],
        credentials: CredentialProvider,
        connect_db: str | ConnectDb,
        parent: QObject | None = None,
        *,
        parse_executor: Executor | None = None,
        backoff: Backoff | None = None,
        niceness: int = SYNC_NICENESS,
        separate_process: bool = False,
        parse_workers: int = 2,
        restart_delay: float = RESTART_DELAY,
    ) -> None:
        super().__init__(parent)
        self._restart_delay = restart_delay
        self._niceness = niceness
        self._separate_process = separate_process
        self._parse_workers = parse_workers
        self._accounts = _as_tuple(settings)
        self._credentials = credentials
        if isinstance(connect_db, str):
            self._connect_db: ConnectDb = _DsnConnector(connect_db)
        else:
            self._connect_db = connect_db
        self._parse_executor = parse_executor
        self._backoff = backoff
        self._runners: dict[str, _Runner] = {}
        self._running = False
        self._last_finished: datetime | None = None
        self._last_error = ""

    # -- Qt-shaped API ------------------------------------------------------------------------
    def settings(self) -> SyncSettings:
        """The first account's settings (the single-account view)."""
        return self._accounts[0] if self._accounts else SyncSettings()

    def accounts(self) -> tuple[SyncSettings, ...]:
        return self._accounts

    def setSettings(self, settings: SyncSettings | Sequence[SyncSettings]) -> None:
        """New settings; folder and policy changes apply at the next pass, without a restart.

        A changed account (host, security...) reconnects at the next pass; an account that is
        gone stops; a new one starts when the service runs.
        """
        self._accounts = _as_tuple(settings)
        wanted = {s.account.key: s for s in self._accounts}
        for key, runner in list(self._runners.items()):
            new = wanted.get(key)
            if new is None:
                runner.stop.set()
                runner.pause_over.set()
                if runner.sync is not None:
                    runner.sync.wake.set()
                continue
            account_changed = new.account != runner.settings.account
            runner.settings = new
            runner.pause_over.set()  # a restart waiting for its pause tries the new ones now
            sync = runner.sync
            if sync is not None:
                sync.settings = new
                if account_changed:
                    sync.request_reconnect()
                sync.wake.set()
        if self.isRunning():
            for settings_ in self._accounts:
                runner_ = self._runners.get(settings_.account.key)
                if runner_ is None or not runner_.running():
                    self._start_account(settings_)

    def setFolders(self, folders: tuple[str, ...] | list[str], account: str = "") -> None:
        """Folders to synchronize for ``account`` (its ``user@host``; the first account when
        empty); applies at once (a waiting service syncs right away)."""
        key = account or self.settings().account.key
        self.setSettings([replace(s, folders=tuple(folders)) if s.account.key == key else s
                          for s in self._accounts])

    def setParseExecutor(self, executor: Executor | None) -> None:
        """Where messages are parsed from the next start of an account on."""
        self._parse_executor = executor

    def isRunning(self) -> bool:
        return any(r.running() for r in self._runners.values())

    def runningAccounts(self) -> list[str]:
        return [key for key, r in self._runners.items() if r.running()]

    def lastFinished(self) -> datetime | None:
        return self._last_finished

    def lastError(self) -> str:
        return self._last_error

    def start(self) -> None:
        """Start synchronizing every account on the running event loop (those running go on)."""
        if not self._accounts:
            self._report_error("config", SyncSettings().account.problems()[0])
            return
        for settings in self._accounts:
            runner = self._runners.get(settings.account.key)
            if runner is None or not runner.running():
                self._start_account(settings)

    def startNow(self) -> None:
        """Sync now: start what is stopped, end the current wait (IDLE or polling pause) of
        what runs, and the pause before a sync process is started again."""
        for runner in self._runners.values():
            if runner.running():
                runner.pause_over.set()
                if runner.sync is not None:
                    runner.sync.wake.set()
        self.start()

    def stop(self) -> None:
        """Ask every account to stop; each finishes the batch in hand (committed) and exits."""
        for runner in self._runners.values():
            runner.stop.set()
            runner.pause_over.set()
            if runner.sync is not None:
                runner.sync.wake.set()

    async def aclose(self) -> None:
        """Stop, wait for the worker threads, release them. The service can start again."""
        self.stop()
        loop = _loop()
        for runner in list(self._runners.values()):
            task = runner.task
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("sync did not stop within %s s; cancelling", STOP_TIMEOUT)
                    task.cancel()
            await loop.run_in_executor(None, runner.threads.shutdown)
        self._runners = {key: r for key, r in self._runners.items() if r.running()}

    # -- the tasks ----------------------------------------------------------------------------
    def _start_account(self, settings: SyncSettings) -> None:
        try:
            settings = settings.validate()
        except XtmailError as exc:
            self._report_error(exc.kind, exc.user_text())
            return
        key = settings.account.key
        old = self._runners.get(key)
        runner = _Runner(settings, self._niceness, self._restart_delay)
        if old is not None:
            old.threads.shutdown(wait=False)
        self._runners[key] = runner
        runner.task = _loop().create_task(
            self._run(runner), name=f"xtmail-sync {key}")
        runner.task.add_done_callback(self._task_done)
        if not self._running:
            self._running = True
            self.runningChanged.emit(True)

    def runsInProcesses(self) -> bool:
        """Whether accounts sync in child processes (``separate_process`` with a DSN)."""
        return self._separate_process and isinstance(self._connect_db, _DsnConnector)

    async def _run(self, runner: _Runner) -> None:
        if self.runsInProcesses():  # nothing of the sync holds this process's lock
            await self._run_account(runner)
            return
        _quick_switching.acquire()
        try:
            await self._run_account(runner)
        finally:
            _quick_switching.release()

    def _engine(self, runner: _Runner, listener: SyncListener) -> AccountSync | SyncProcess:
        if self._separate_process and isinstance(self._connect_db, _DsnConnector):
            return SyncProcess(
                runner.settings, self._credentials, self._connect_db.dsn,
                listener=listener, stop=runner.stop, backoff=self._backoff,
                niceness=self._niceness, parse_workers=self._parse_workers,
                application_name=self._connect_db.application_name)
        return AccountSync(
            runner.settings, self._credentials, self._connect_db,
            executor=self._parse_executor, listener=listener, stop=runner.stop,
            backoff=self._backoff,
        )

    async def _run_account(self, runner: _Runner) -> None:
        key = runner.settings.account.key
        while True:
            ended = await self._run_engine(runner)
            if ended is None or runner.stop.is_set():
                return
            # The child ended without being asked (killed, out of memory): what it
            # committed is kept, and a new one goes on from there after a pause.
            delay = runner.restarts.next()
            reason = describe_error(ended, runner.settings.account).splitlines()[0]
            self._status(key, f"{reason} Starting it again in {delay:.0f} s.")
            log.warning("%s Starting it again in %.1f s.", reason, delay)
            await _loop().run_in_executor(runner.threads, runner.pause_over.wait, delay)
            if runner.stop.is_set():
                self._status(key, "Stopped")
                return

    async def _run_engine(self, runner: _Runner) -> SyncProcessEnded | None:
        """Run one engine until it stops; the error when its sync process ended unasked."""
        loop = _loop()
        key = runner.settings.account.key
        runner.pause_over.clear()  # from here on, Sync now ends the next pause
        # Starting a process takes a moment: not on the GUI thread.
        sync = await loop.run_in_executor(runner.threads, self._engine, runner,
                                          _Bridge(loop, self, key))
        runner.sync = sync
        try:
            while not runner.stop.is_set():
                self._status(key, "Synchronizing")
                result: AccountResult = await loop.run_in_executor(runner.threads,
                                                                   sync.run_once)
                self._last_finished = datetime.now().astimezone()
                self.syncFinished.emit(result.account, result.imported)
                if isinstance(result.error, SyncProcessEnded):
                    return result.error
                if result.error is not None:
                    reason = describe_error(result.error, runner.settings.account)
                    self._status(key, "Stopped: " + reason.splitlines()[0])
                    return None
                runner.restarts.reset()
                if runner.stop.is_set():
                    break
                if result.held_by is not None:
                    # Another xtmail (the company's mail server, say) has this account.
                    self._status(key, f"Synchronized by {result.held_by}")
                else:
                    self._status(key, f"Up to date; {result.imported} new message(s)")
                await loop.run_in_executor(
                    runner.threads, sync.wait_for_change, runner.settings.poll_interval
                )
            self._status(key, "Stopped")
            return None
        finally:
            runner.sync = None
            await loop.run_in_executor(runner.threads, sync.close)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("sync task failed", exc_info=exc)
            self._report_error("internal", f"Synchronization failed unexpectedly: {exc!r}")
        if self._running and not self.isRunning():
            self._running = False
            self.runningChanged.emit(False)

    def _account_settings(self, key: str) -> AccountSettings | None:
        runner = self._runners.get(key)
        return runner.settings.account if runner is not None else None

    def _status(self, account: str, text: str) -> None:
        if len(self._accounts) > 1:
            text = f"{account}: {text}"
        self.statusChanged.emit(text)

    def _report_error(self, kind: str, message: str) -> None:
        self._last_error = message
        self.errorOccurred.emit(kind, message)


def _loop() -> asyncio.AbstractEventLoop:
    # qasync's run_until_complete processes Qt events once more after its loop stopped,
    # running the callbacks still queued without a running loop: the current loop is the
    # same one, and serves.
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop()


def _as_tuple(settings: SyncSettings | Sequence[SyncSettings]) -> tuple[SyncSettings, ...]:
    return (settings,) if isinstance(settings, SyncSettings) else tuple(settings)


def parse_pool(workers: int = 2, *, niceness: int = 10) -> ProcessPoolExecutor:
    """A process pool for ``parse_executor``: spawned (forking a process that runs Qt and
    threads is unsafe) and at a lower CPU priority, so that on a busy machine the GUI thread
    wins the CPU over parsing. The caller owns it: ``shutdown()`` it at exit."""
    return parse_processes(workers, start="spawn", niceness=niceness)


class _DsnConnector:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # The name others see in pg_stat_activity when this desktop holds an account's lock
        # ("synchronized by ...").
        self.application_name = f"xtmail desktop on {socket.gethostname()}"

    def __call__(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10,
                               application_name=self.application_name)
