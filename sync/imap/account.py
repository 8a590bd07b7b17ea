"""One account's passes over its folders, with the fault handling: network errors reconnect
with capped, jittered exponential backoff; an unreachable database pauses and retries;
refused credentials, an untrusted certificate or a wrong setting stop the account and are
reported. Between passes it waits for new mail with IDLE where the server offers it.

One process at a time synchronizes an account: the desktop's sync, ``xtmail sync`` and
every ``xtmail serve`` instance take the account's PostgreSQL advisory lock (keyed by the
account key) before a pass, and one that finds it held elsewhere skips the account and says
who holds it (:class:`AccountLease`, docs/serve.md)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from xtmail.sync.db.errors import translated
from xtmail.sync.errors import (
    ERROR_KINDS,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    ImapError,
    Reaction,
    TransientImapError,
    XtmailError,
)
from xtmail.sync.imap.connection import FolderStatus, ImapConnection
from xtmail.sync.imap.credentials import CredentialProvider
from xtmail.sync.imap.folder_sync import DEFAULT_WRITERS, FolderResult, FolderSync, SyncListener
from xtmail.sync.imap.settings import AccountSettings, SyncSettings
from xtmail.sync.pipeline import BATCH_BYTES

log = logging.getLogger(__name__)

#: Seconds between looks at the folders IDLE does not watch (AccountSync.wait_for_change).
OTHER_FOLDERS_EVERY = 30.0
#: Seconds of silence in IDLE after which the folder is examined again, for servers whose
#: IDLE only polls (new mail is then seen within about this long, not a minute or more).
IDLE_CHECK_EVERY = 25.0
#: First key of the accounts' advisory locks ("xtma"); the folders' locks use "xtml".
ACCOUNT_LOCK_CLASS = 0x78746D61
#: The application_name of ``xtmail serve``'s connections starts with this; a lock holder
#: whose name does is "the mail server".
SERVER_APPLICATION = "xtmail serve"
#: Seconds between attempts to take an account another process holds (AccountSync.watch).
HELD_RETRY_EVERY = 60.0


@dataclass
class AccountResult:
    """One pass over an account; ``error`` is set when the account had to stop."""

    account: str
    folders: list[FolderResult] = field(default_factory=list)
    error: XtmailError | None = None
    retries: int = 0
    #: Set when another process synchronizes the account (its lock is held elsewhere): who,
    #: in words ("the mail server on host X"). Nothing was done; not an error.
    held_by: str | None = None

    @property
    def imported(self) -> int:
        return sum(f.imported for f in self.folders)

    @property
    def already_present(self) -> int:
        return sum(f.already_present for f in self.folders)


__all__ = ["ACCOUNT_LOCK_CLASS", "ERROR_KINDS", "AccountLease", "AccountResult", "AccountSync",
           "Backoff", "account_lock_holder", "try_lock_account", "unlock_account"]


class AccountLease(Protocol):
    """Who may synchronize which account. ``acquire`` returns None when this process holds
    the account (taken now, or already), else who holds it, in words. Thread-safe.

    By default an :class:`AccountSync` takes the lock on its own database connection;
    ``xtmail serve`` passes one lease for all its accounts, on one connection.
    """

    def acquire(self, key: str) -> str | None: ...

    def release(self, key: str) -> None: ...


def _lock_key(key: str) -> tuple[int, str]:
    return ACCOUNT_LOCK_CLASS, key


def try_lock_account(conn: psycopg.Connection, key: str) -> bool:
    """The account's session-level advisory lock: held until unlocked or the connection
    ends (the process dies, the server drops the session), then free for another."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                       _lock_key(key)).fetchone()
    return bool(row and row[0])


def unlock_account(conn: psycopg.Connection, key: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", _lock_key(key))


def account_lock_holder(conn: psycopg.Connection, key: str) -> str:
    """Who holds the account's lock, in words: "the mail server on host X" for an
    ``xtmail serve`` instance (its connections' application_name says which host), else
    the holder's application and database user (pg_stat_activity shows both to everyone)."""
    row = conn.execute(
        """SELECT a.application_name, a.usename, l.pid
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database
                                 WHERE datname = current_database())
              AND l.classid = %s::bigint::oid AND l.objid = hashtext(%s)::oid
            LIMIT 1""",
        _lock_key(key),
    ).fetchone()
    if row is None:
        return "another process"  # released a moment ago
    application, user, pid = row[0] or "", row[1] or "?", row[2]
    if application.startswith(SERVER_APPLICATION):
        where = application.removeprefix(SERVER_APPLICATION).strip()
        where = where.removeprefix("on ").strip()
        return f"the mail server on host {where}" if where else "the mail server"
    return f"{application or 'another program'} (database user {user}, process {pid})"


class Backoff:
    """Exponential backoff with full-range jitter, capped: 1, 2, 4 ... 60 s (±25 %).

    Jitter spreads the reconnects of many clients after a server restart.
    """

    def __init__(
        self, initial: float = 1.0, factor: float = 2.0, cap: float = 60.0, jitter: float = 0.25
    ) -> None:
        self.initial, self.factor, self.cap, self.jitter = initial, factor, cap, jitter
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * self.factor ** self.attempt)
        self.attempt += 1
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))  # noqa: S311

    def reset(self) -> None:
        self.attempt = 0


ConnectDb = Callable[[], psycopg.Connection]


class AccountSync:
    """Synchronizes an account's folders with reconnects, pauses and a stop flag.

    ``connect_db`` returns a new autocommit psycopg connection (``writers`` of them store a
    folder's batches side by side during a pass). ``retry_limit`` bounds the
    consecutive failed attempts of one pass (None: retry until stopped, for services).
    ``stop`` ends waits and passes early (between batches).
    """

    def __init__(
        self,
        settings: SyncSettings,
        credentials: CredentialProvider,
        connect_db: ConnectDb,
        *,
        executor: Executor | None = None,
        listener: SyncListener | None = None,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
        retry_limit: int | None = None,
        writers: int = DEFAULT_WRITERS,
        other_folders_every: float = OTHER_FOLDERS_EVERY,
        batch_bytes: int = BATCH_BYTES,
        lease: AccountLease | None = None,
    ) -> None:
        self.settings = settings
        self.batch_bytes = batch_bytes
        self.writers = writers
        self.other_folders_every = other_folders_every
        self.idle_check_every = IDLE_CHECK_EVERY
        self.credentials = credentials
        self.connect_db = connect_db
        self.executor = executor
        self.listener = listener or SyncListener()
        self.stop = stop or threading.Event()
        self.backoff = backoff or Backoff()
        self.retry_limit = retry_limit
        self._imap: ImapConnection | None = None
        self._db: psycopg.Connection | None = None
        #: None: the account's lock is taken on ``_db`` (``_locked_db`` holds it).
        self.lease = lease
        self._locked_db: psycopg.Connection | None = None
        self._reconnect = False
        #: Set to interrupt a wait (IDLE or polling sleep) without stopping: "sync now".
        self.wake = threading.Event()
        # Pauses after an IDLE whose connection broke; reset by an IDLE that ends well.
        self._idle_backoff = Backoff(initial=self.backoff.initial / 4, cap=self.backoff.cap)
        #: The pass in progress, or the last one: its folder results grow as batches
        #: commit, so that whoever stops a pass early can still say what it did.
        self.current: AccountResult | None = None

    @property
    def account(self) -> AccountSettings:
        return self.settings.account

    # -- connections ------------------------------------------------------------------------
    def request_reconnect(self) -> None:
        """Reconnect before the next folder (the account settings changed). Thread-safe."""
        self._reconnect = True

    def _imap_connection(self) -> ImapConnection:
        if self._reconnect:
            self._reconnect = False
            self._drop_imap()
        if self._imap is None:
            self.listener.status(f"Connecting to {self.account.host}")
            self._imap = ImapConnection(self.account, self.credentials.credential(self.account))
        return self._imap

    def _db_connection(self) -> psycopg.Connection:
        if self._db is not None and not self._db.closed:
            return self._db
        with translated():
            db = self.connect_db()
        self._db = db
        return db

    def _drop_imap(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            imap.close()

    def _drop_db(self) -> None:
        db, self._db = self._db, None
        self._locked_db = None  # closing the connection releases its session lock
        if db is not None:
            db.close()

    def release_database(self) -> None:
        """Close the database connection between passes (``xtmail serve``: an account
        waiting for mail holds no database connection). With the default lease this also
        gives the account up until the next pass."""
        self._drop_db()

    def close(self) -> None:
        self._drop_imap()
        self._drop_db()

    def _held_elsewhere(self, db: psycopg.Connection) -> str | None:
        """Take the account for this process; None when it is ours, else who holds it."""
        key = self.account.key
        if self.lease is not None:
            return self.lease.acquire(key)
        if self._locked_db is db and not db.closed:
            return None
        if try_lock_account(db, key):
            self._locked_db = db
            return None
        return account_lock_holder(db, key)

    # -- passes -----------------------------------------------------------------------------
    def run_once(self, folders: Sequence[str] | None = None) -> AccountResult:
        """One pass over ``folders`` (default: the configured ones), retrying faults."""
        # A wake from now on (folders or settings changed, "sync now") comes after what this
        # pass reads, so the wait after it must not sleep through it.
        self.wake.clear()
        settings = self.settings
        result = self.current = AccountResult(self.account.key)
        for folder in folders if folders is not None else settings.folders:
            if self.stop.is_set():
                break
            self._sync_folder(folder, result)
            if result.error is not None or result.held_by is not None:
                break
        return result

    def _sync_folder(self, folder: str, result: AccountResult) -> None:
        # One result for every attempt, in the pass's list from the start: what a failed
        # or interrupted attempt committed stays counted.
        outcome = FolderResult(self.account.key, folder)
        result.folders.append(outcome)
        if self._attempts(folder, outcome, result) is None or result.held_by is not None:
            result.folders.remove(outcome)

    def _attempts(self, folder: str, outcome: FolderResult,
                  result: AccountResult) -> FolderResult | None:
        failures = 0
        while not self.stop.is_set():
            connecting = True
            try:
                # The folder sync and the writer run SQL of their own: whatever the driver
                # raises on the way is translated here, once for the whole pass.
                with translated():
                    db = self._db_connection()
                    # Taken before every attempt: a new connection after a database fault
                    # holds no lock, and another process may have taken the account since.
                    holder = self._held_elsewhere(db)
                    if holder is not None:
                        result.held_by = holder
                        self._drop_imap()
                        self.listener.status(f"Synchronized by {holder}")
                        return None
                    imap = self._imap_connection()
                    connecting = False
                    self.listener.status(f"Synchronizing {folder}")
                    FolderSync(
                        db, imap, self.account.key, folder,
                        policy=self.settings.policy(),
                        executor=self.executor,
                        batch_size=self.settings.batch_size,
                        since=self.settings.since,
                        listener=self.listener,
                        should_stop=self.stop.is_set,
                        connect=self.connect_db,
                        writers=self.writers,
                        batch_bytes=self.batch_bytes,
                    ).run(outcome)
                self.backoff.reset()
                return outcome
            except XtmailError as error:
                # A database error says nothing about the IMAP connection, and the other way
                # round: drop only the connection the error came from.
                if isinstance(error, DatabaseError):
                    self._drop_db()
                else:
                    self._drop_imap()
                if error.reaction is Reaction.STOP:
                    return self._give_up(outcome, result, error)
                failures += 1
                result.retries += 1
                if self.retry_limit is not None and failures > self.retry_limit:
                    return self._give_up(outcome, result, error)
                # A lost race is run again at once, but only once in a row: a second one in
                # a row waits like an outage, so that two importers cannot spin.
                retry_now = error.reaction is Reaction.RETRY_NOW and failures == 1
                delay = 0.0 if retry_now else self.backoff.next()
                self.listener.retrying(
                    f"{folder}: {_what_failed(error, connecting, retry_now)}; retrying in "
                    f"{_seconds(delay)}{_attempt(failures, self.retry_limit)}")
                if self.stop.wait(delay):
                    break
        return outcome if outcome.fetched else None

    def _give_up(self, outcome: FolderResult, result: AccountResult,
                 error: XtmailError) -> FolderResult | None:
        result.error = error
        self.listener.error(error.kind, error)
        # What the failed attempts committed is in the database: keep it in the counts.
        return outcome if outcome.fetched else None

    def wait_for_change(self, timeout: float) -> None:
        """Block until new mail may have arrived: IDLE on the first folder where the server
        offers it, else sleep; ``timeout``, ``stop`` or ``wake`` end the wait early.

        IDLE watches one folder. With more folders configured it ends after
        ``other_folders_every`` seconds at most, so that the next pass sees the others too:
        for an unchanged folder that pass costs one STATUS command.
        """
        folders = self.settings.folders
        either = _Either(self.wake, self.stop)
        if either.is_set():
            return  # asked for during the pass that just ended: look again at once
        held_by = self.current.held_by if self.current is not None else None
        if held_by is not None:
            # Another process synchronizes the account: no IMAP connection of ours; look
            # again now and then whether it still does. Said again here, so that it is the
            # last word a host shows after its own "pass done" status.
            self.listener.status(f"Synchronized by {held_by}")
            either.wait(min(timeout, HELD_RETRY_EVERY))
            return
        try:
            imap = self._imap_connection() if folders else None
            if imap is not None and imap.supports_idle:
                before = imap.examine(folders[0])
                if len(folders) > 1:
                    timeout = min(timeout, self.other_folders_every)
                self._idle_until_change(imap, folders[0], before, timeout, either)
                self._idle_backoff.reset()
                return
        except TransientImapError as exc:
            # The connection broke (with or without a word from the server): mail may be
            # arriving unseen, so the next pass comes at once and reconnects with its own
            # backoff. This short pause, growing while it keeps happening, keeps a server
            # that breaks every IDLE from making the passes spin.
            self._drop_imap()
            delay = self._idle_backoff.next()
            self.listener.retrying(f"connection lost while waiting for new mail ({exc}); "
                                   f"reconnecting in {_seconds(delay)}")
            either.wait(delay)
            return
        except ImapError as exc:
            # IDLE refused, or the login: the next pass reports persistent trouble.
            log.info("IDLE failed, falling back to a pause: %s", exc)
            self._drop_imap()
        except ConfigError:
            pass
        either.wait(timeout)

    def _idle_until_change(self, imap: ImapConnection, folder: str, before: FolderStatus,
                           timeout: float, either: _Either) -> None:
        """IDLE for up to ``timeout`` seconds, ending early on a change the server pushes.

        Some servers' IDLE only polls (Cyrus without its idled helper tells of new mail up
        to a minute late): every ``idle_check_every`` seconds of silence the folder is
        examined again (one round trip), and a new message count or UIDNEXT ends the wait
        as a pushed change would.
        """
        deadline = time.monotonic() + timeout
        while not either.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if imap.idle(min(left, self.idle_check_every), either) or either.is_set():
                return
            if deadline - time.monotonic() <= 0:
                return
            now = imap.examine(folder)
            if (now.uidnext, now.messages, now.uidvalidity) != (
                    before.uidnext, before.messages, before.uidvalidity):
                return

    def watch(self, on_pass: Callable[[AccountResult], None] | None = None) -> None:
        """Pass after pass until ``stop`` is set or the account hits a stopping error."""
        while not self.stop.is_set():
            result = self.run_once()
            if on_pass is not None:
                on_pass(result)
            if result.error is not None:
                return
            self.wait_for_change(self.settings.poll_interval)


def _what_failed(error: XtmailError, connecting: bool, retry_now: bool) -> str:
    if isinstance(error, DatabaseUnavailable):
        return f"paused: the database is unreachable ({error})"
    if retry_now:
        return f"ran into another importer ({error})"
    if connecting:
        return str(error)  # "Cannot reach host:port (connection refused)"
    return f"connection lost ({error})"


def _seconds(delay: float) -> str:
    return f"{delay:.0f} s" if delay >= 10 else f"{delay:.1f} s"


def _attempt(failures: int, limit: int | None) -> str:
    # Attempt 1 failed before the first retry: the next one is attempt failures + 1.
    if limit is None:
        return f" (attempt {failures + 1})"
    return f" (attempt {failures + 1} of {limit + 1})"


class _Either:
    """Set as soon as either of two events is set: the wait between passes ends on a wake
    ("sync now", changed settings) or a stop. Not an Event itself: it has no flag of its
    own, only the two it watches."""

    #: How soon a stop set by someone who does not also wake is seen, in seconds.
    STEP = 0.1

    def __init__(self, wake: threading.Event, stop: threading.Event) -> None:
        self._wake = wake
        self._stop = stop

    def is_set(self) -> bool:
        return self._wake.is_set() or self._stop.is_set()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # A wake ends this at once; the service also wakes when it stops.
            self._wake.wait(min(left, self.STEP))
        return True
