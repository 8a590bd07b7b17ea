"""One account's sync in a process of its own, driven like an :class:`AccountSync`.

Why: a sync in the GUI's process shares its interpreter lock. With the sync threads niced
and a 1 ms switch interval, the GUI thread still waited for the lock 10-20 ms at a time
while five sync threads took turns (``perf sched`` of bench/gui_stall.py, docs/benchmarks.md);
the same sync in a process of its own, lowered in a scheduling group of its own, left the
GUI's longest stall at 10.7 ms against 25.5 ms. :class:`SyncProcess` is what
:class:`~xtmail.sync.imap.service.SyncService` drives instead of an ``AccountSync`` when it
runs accounts in processes.

The parent keeps everything a person touches: the credentials (keyring, OAuth, a password
typed once) are asked for in the parent when the child connects, and never stored in the
child; settings changes, wake-ups and stop requests go down a pipe; the engine's listener
calls (progress, status, new ties, errors) come back up it and are made on the parent's
listener by the thread that waits for the child. The child runs at a lower CPU priority in
a session of its own (:func:`lower_priority`), parses in worker processes of its own, and
ends when its parent does (the pipe closes: the batch in hand is committed, as after a
stop).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import psycopg

from xtmail.sync.errors import XtmailError
from xtmail.sync.imap.account import AccountResult, AccountSync, Backoff
from xtmail.sync.imap.credentials import Credential, CredentialProvider
from xtmail.sync.imap.folder_sync import SyncListener
from xtmail.sync.imap.settings import AccountSettings, SyncSettings, describe_error

log = logging.getLogger(__name__)

#: How often the waiting parent thread looks at its stop flag while the child works.
POLL_SECONDS = 0.1
#: How long a child whose parent went away has to commit its batch before it exits.
ORPHAN_GRACE_SECONDS = 30.0
#: How long ``close()`` waits for the child to end before it kills it.
CLOSE_TIMEOUT = 30.0

_LISTENER_CALLS = frozenset(
    {"progress", "status", "imported", "error", "warning", "committed", "retrying"})


class SyncProcessEnded(XtmailError):
    """The sync process ended without being asked to (killed, or out of memory)."""

    kind = "internal"
    hint = ("What it committed is kept; it is started again after a pause, which grows "
            "while it keeps ending. If this repeats, the application's log says more.")


def portable(error: BaseException, account: AccountSettings | None = None) -> XtmailError:
    """``error`` as it can travel between processes, worded as the parent would word it.

    Its class where it pickles both ways (so the parent still tells an authentication error
    from a settings error), else a plain :class:`XtmailError` of the same kind. Pickling
    loses ``__cause__``, which :func:`describe_error` reads to word network errors for
    people ("no such host"), so the text is worded here, where the cause is known, and
    travels as the message, with no separate hint."""
    if not isinstance(error, XtmailError):
        plain = XtmailError(f"Synchronization failed unexpectedly: {error!r}")
        plain.kind = "internal"
        return plain
    text = describe_error(error, account)
    try:
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301  # our own object, just made
    except Exception:  # noqa: BLE001  # a subclass whose arguments do not round-trip
        copy = None
    if not isinstance(copy, XtmailError):
        copy = XtmailError(text)
        copy.kind = error.kind
    copy.args = (text,)
    copy.hint = ""
    return copy


class SyncProcess:
    """An :class:`AccountSync` run in a child process: ``run_once``, ``wait_for_change``,
    ``close``, ``wake.set()``, ``settings`` and ``request_reconnect`` as the engine's.

    Calls that wait for the child (``run_once``, ``wait_for_change``, ``close``) come from one
    thread at a time (the service's runner thread); ``wake.set()``, ``settings`` and
    ``request_reconnect`` may come from any thread.
    """

    def __init__(
        self,
        settings: SyncSettings,
        credentials: CredentialProvider,
        dsn: str,
        *,
        listener: SyncListener,
        stop: threading.Event,
        backoff: Backoff | None = None,
        niceness: int = 10,
        parse_workers: int = 2,
        application_name: str = "xtmail",
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._listener = listener
        self._stop = stop
        self._stop_sent = False
        self._send_lock = threading.Lock()
        context = multiprocessing.get_context("spawn")  # never fork a process running Qt
        self._link, child_end = context.Pipe()
        self._process = context.Process(
            target=_child_main,
            args=(child_end, settings, dsn, backoff, niceness, _application_niceness(),
                  parse_workers, application_name),
            name=f"xtmail sync {settings.account.key}",
            # Not a daemon: it starts parse processes of its own, which daemons may not.
            daemon=False,
        )
        self._process.start()
        child_end.close()
        _live.add(self)
        self.wake = _RemoteWake(self)

    # -- what SyncService uses ----------------------------------------------------------------
    @property
    def settings(self) -> SyncSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: SyncSettings) -> None:
        self._settings = settings
        self._send(("settings", settings))

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def request_reconnect(self) -> None:
        self._send(("reconnect",))

    def run_once(self) -> AccountResult:
        try:
            result = self._call(("run",))
        except XtmailError as exc:  # the child ended or failed: reported as its errors are
            self._deliver("error", (exc.kind, exc))
            return AccountResult(self._settings.account.key, error=exc)
        if not isinstance(result, AccountResult):
            raise TypeError(f"the sync process answered run with {result!r}")
        return result

    def wait_for_change(self, timeout: float) -> None:
        try:
            self._call(("wait", timeout))
        except SyncProcessEnded:
            return  # the next run_once reports it

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._call(("close",), deadline=CLOSE_TIMEOUT)
            except XtmailError as exc:
                log.warning("the sync process did not close cleanly: %s", exc)
        self._process.join(CLOSE_TIMEOUT if self._process.is_alive() else None)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        with self._send_lock:
            self._link.close()
        _live.discard(self)

    # -- the pipe -----------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            if self._link.closed:
                return
            try:
                self._link.send(message)
            except (OSError, ValueError):  # the child is gone; the waiting call reports it
                pass

    def _forward_stop(self) -> None:
        if self._stop.is_set() and not self._stop_sent:
            self._stop_sent = True
            self._send(("stop",))

    def _call(self, command: tuple[Any, ...], deadline: float | None = None) -> object:
        """Send ``command``, serve the child's requests and listener calls until it answers."""
        self._forward_stop()
        self._send(command)
        waited = 0.0
        while True:
            self._forward_stop()
            try:
                ready = self._link.poll(POLL_SECONDS)
            except (OSError, ValueError):
                ready = False
            if not ready:
                waited += POLL_SECONDS
                if not self._process.is_alive():
                    # Whatever it sent before it ended has been read by now.
                    if not self._has_more():
                        raise self._ended()
                elif deadline is not None and waited >= deadline:
                    raise XtmailError("the sync process did not answer in time")
                continue
            try:
                message = self._link.recv()
            except (EOFError, OSError):
                raise self._ended() from None
            kind = message[0]
            if kind == "done":
                payload = message[1]
                if isinstance(payload, BaseException):
                    raise payload
                return payload
            if kind == "event":
                self._deliver(message[1], message[2])
            elif kind == "credential":
                self._answer_credential(message[1])

    def _has_more(self) -> bool:
        try:
            return self._link.poll(0)
        except (OSError, ValueError):  # closed at the application's exit
            return False

    def _deliver(self, name: str, args: tuple[Any, ...]) -> None:
        if name in _LISTENER_CALLS:
            try:
                getattr(self._listener, name)(*args)
            except Exception:  # a listener's failure must not end the sync
                log.exception("sync listener %s failed", name)

    def _answer_credential(self, account: AccountSettings) -> None:
        try:
            answer: object = self._credentials.credential(account)
        except Exception as exc:  # noqa: BLE001  # ours, or a keyring backend's own
            answer = portable(exc, account)
        self._send(("credential", answer))

    def _ended(self) -> SyncProcessEnded:
        self._process.join(1.0)
        code = self._process.exitcode
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        return SyncProcessEnded(
            f"The sync process of {self._settings.account.key} ended unexpectedly ({how}).")


#: The children not closed yet. At interpreter exit multiprocessing joins its children; ours
#: end when their pipe closes, so the pipes are closed first (atexit runs the handlers
#: registered last first, and multiprocessing registered its own at import).
_live: weakref.WeakSet[SyncProcess] = weakref.WeakSet()


@atexit.register
def _close_pipes() -> None:
    for owner in list(_live):
        with owner._send_lock:
            owner._link.close()


def _application_niceness() -> int:
    """The niceness of the application's main thread (on Linux each thread has its own)."""
    if not hasattr(os, "getpriority"):
        return 0
    try:
        return os.getpriority(os.PRIO_PROCESS, os.getpid())
    except OSError:
        return 0


class _RemoteWake:
    """``sync.wake.set()`` of the engine, across the pipe (a stop goes first when asked)."""

    def __init__(self, owner: SyncProcess) -> None:
        self._owner = owner

    def set(self) -> None:
        self._owner._forward_stop()
        self._owner._send(("wake",))


# -- the child --------------------------------------------------------------------------------


def lower_priority(niceness: int, base: int = 0) -> None:
    """This process ``niceness`` steps below ``base`` (the application's niceness), in a
    scheduling group of its own.

    Linux desktops group each session's processes (autogroup): niceness counts only inside
    the group, and the group competes with the others as one. Left in the application's
    session, the sync and its parse processes would spend the application's group's share,
    and the GUI thread would wait behind other groups' work when it wakes. In a session of
    its own, lowered as a whole, the sync takes what the machine has left. Where any step
    is refused, the rest still applies."""
    if niceness <= 0:
        return
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:
            pass
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(niceness))
    except OSError:
        pass
    if hasattr(os, "setpriority"):
        # Absolute, not os.nice(): a process inherits the niceness of the thread that
        # started it, which may be a lowered sync thread already.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, base + niceness))
        except OSError:
            pass



class _Uplink:
    """The child's end of the pipe: any thread may send; credentials come back in turn."""

    def __init__(self, link: multiprocessing.connection.Connection) -> None:
        self.link = link
        self.lock = threading.Lock()
        self.credentials: queue.Queue[object] = queue.Queue()
        self.credential_lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.link.send(message)


class _RelayListener(SyncListener):
    def __init__(self, uplink: _Uplink, account: AccountSettings) -> None:
        self._uplink = uplink
        self.account = account  # errors are worded for it; follows settings changes

    def _relay(self, name: str, *args: Any) -> None:
        try:
            self._uplink.send(("event", name, args))
        except (OSError, ValueError):
            pass  # the parent is gone; the reader thread stops the sync

    def progress(self, account: str, folder: str, done: int, total: int) -> None:
        self._relay("progress", account, folder, done, total)

    def status(self, text: str) -> None:
        self._relay("status", text)

    def imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        self._relay("imported", ties)

    def error(self, kind: str, error: XtmailError) -> None:
        self._relay("error", kind, portable(error, self.account))

    def warning(self, text: str) -> None:
        self._relay("warning", text)

    def committed(self, account: str, folder: str, imported: int, already_present: int) -> None:
        self._relay("committed", account, folder, imported, already_present)

    def retrying(self, text: str) -> None:
        self._relay("retrying", text)


class _ParentCredentials:
    """The child's credential provider: asks the parent, whose provider holds the secret."""

    def __init__(self, uplink: _Uplink) -> None:
        self._uplink = uplink

    def credential(self, account: AccountSettings) -> Credential:
        with self._uplink.credential_lock:  # one question in flight at a time
            self._uplink.send(("credential", account))
            answer = self._uplink.credentials.get()
        if isinstance(answer, BaseException):
            raise answer
        if not isinstance(answer, Credential):
            raise TypeError(f"the parent answered a credential with {answer!r}")
        return answer


def _child_main(link: multiprocessing.connection.Connection, settings: SyncSettings, dsn: str,
                backoff: Backoff | None, niceness: int, base_niceness: int,
                parse_workers: int, application_name: str) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    lower_priority(niceness, base_niceness)
    from xtmail.sync.pipeline import parse_processes

    uplink = _Uplink(link)
    stop = threading.Event()
    work: queue.Queue[tuple[Any, ...]] = queue.Queue()
    executor = (parse_processes(parse_workers, start="forkserver")
                if parse_workers > 0 else None)

    def connect() -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                               application_name=application_name)

    listener = _RelayListener(uplink, settings.account)
    sync = AccountSync(settings, _ParentCredentials(uplink), connect, executor=executor,
                       listener=listener, stop=stop, backoff=backoff)

    def new_settings(message: tuple[Any, ...]) -> None:
        sync.settings = message[1]
        listener.account = message[1].account

    def stop_now(message: tuple[Any, ...] = ("stop",)) -> None:
        stop.set()
        sync.wake.set()

    def orphaned() -> None:
        stop_now()
        work.put(("close",))
        timer = threading.Timer(ORPHAN_GRACE_SECONDS, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    def read() -> None:
        handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
            "wake": lambda m: sync.wake.set(),
            "stop": stop_now,
            "settings": new_settings,
            "reconnect": lambda m: sync.request_reconnect(),
            "credential": lambda m: uplink.credentials.put(m[1]),
        }
        while True:
            try:
                message = link.recv()
            except (EOFError, OSError):
                orphaned()
                return
            handler = handlers.get(message[0])
            if handler is not None:
                handler(message)
            else:
                work.put(message)
                if message[0] == "close":
                    return

    threading.Thread(target=read, name="xtmail-sync-pipe", daemon=True).start()
    try:
        while True:
            command = work.get()
            answer: object = None
            try:
                if command[0] == "run":
                    answer = sync.run_once()
                    if isinstance(answer, AccountResult) and answer.error is not None:
                        answer.error = portable(answer.error, sync.settings.account)
                elif command[0] == "wait":
                    sync.wait_for_change(command[1])
                elif command[0] == "close":
                    sync.close()
            except Exception as exc:  # noqa: BLE001  # reported to the parent, not lost
                answer = portable(exc, sync.settings.account)
            try:
                uplink.send(("done", answer))
            except (OSError, ValueError):
                pass
            if command[0] == "close":
                return
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
