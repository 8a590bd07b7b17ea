"""A bound on every call of blocking (synchronous) database connections.

A database server that accepts connections but never answers (a frozen host, hung storage, a
process stopped) leaves a blocking psycopg call waiting forever: the kernel of the server's
host still acknowledges the packets and answers TCP keepalives, so neither libpq nor the
operating system ever gives up. ``statement_timeout`` is no help either: it runs in the
server that does not run.

:class:`Watchdog` bounds the calls of the connections it watches: each gets a server-side
``statement_timeout`` (the server, when it runs, stops a query nobody waits for), and a
thread of its own cuts a connection whose command has been in progress longer than the
client-side bound: it shuts the connection's socket down, the waiting call fails at once as
a broken connection (translated into ``DatabaseUnavailable`` where it is caught), and the
caller's usual handling of a lost connection takes over. The asynchronous ``MailStore``
bounds its calls its own way (``AsyncPool.bounded``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

log = logging.getLogger(__name__)

#: What to do when the database did not answer in time.
NOT_ANSWERING_HINT = (
    "The database server accepted the connection but did not answer: check that it runs and "
    "is not frozen or overloaded (its host, its storage), and the network between. The "
    "service keeps trying and goes on by itself when the database answers again.")


@dataclass
class _Watched:
    label: str
    #: Bumped by every statement sent through a cursor: a new command, a new bound.
    commands: int = 0
    #: (commands, when first seen in progress) of the command in progress, else None.
    busy: tuple[int, float] | None = None
    cut: bool = False


class _CountingCursor(psycopg.Cursor[Any]):
    """A cursor that tells the watchdog each statement it sends (a fresh bound for each)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        _count(self.connection)
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        _count(self.connection)
        return super().executemany(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        _count(self.connection)
        return super().copy(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        _count(self.connection)
        return super().stream(*args, **kwargs)


_registry: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Watched] = (
    weakref.WeakKeyDictionary())
_registry_lock = threading.Lock()


def _count(conn: psycopg.Connection[Any]) -> None:
    watched = _registry.get(conn)
    if watched is not None:
        watched.commands += 1


class Watchdog:
    """Cuts watched connections whose command has not come back within ``answer_timeout``
    seconds; gives each a ``statement_timeout`` (by default ``answer_timeout`` less a
    margin, so that a server that runs stops a long query first, with its own error).

    ``on_cut(label, seconds)`` is called (in the watchdog's thread) for each connection cut,
    just before its socket is shut down.
    """

    def __init__(self, answer_timeout: float, *, statement_timeout: float | None = None,
                 tick: float = 0.25,
                 on_cut: Callable[[str, float], None] | None = None) -> None:
        self.answer_timeout = answer_timeout
        self.statement_timeout = statement_timeout if statement_timeout is not None else \
            max(1.0, answer_timeout * 0.8)
        self.tick = tick
        self.on_cut = on_cut
        self._watched: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Watched] = (
            weakref.WeakKeyDictionary())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, conn: psycopg.Connection[Any], label: str = "") -> psycopg.Connection[Any]:
        """Bound ``conn``'s calls from now on; returns it. Sets its ``statement_timeout``
        (which raises what psycopg raises when the server does not take it)."""
        conn.cursor_factory = _CountingCursor
        watched = _Watched(label)
        with self._lock:
            self._watched[conn] = watched
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                                name="xtmail-db-watchdog", daemon=True)
                self._thread.start()
        with _registry_lock:
            _registry[conn] = watched
        conn.execute("SELECT set_config('statement_timeout', %s, false)",
                     (f"{int(self.statement_timeout * 1000)}ms",))
        return conn

    def was_cut(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the watchdog cut ``conn`` (its last call failed for that)."""
        with self._lock:
            watched = self._watched.get(conn)
        return bool(watched and watched.cut)

    def close(self) -> None:
        """Stop the watchdog's thread (a later :meth:`watch` starts it again)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick):
            with self._lock:
                watched = list(self._watched.items())
            now = time.monotonic()
            for conn, state in watched:
                self._look(conn, state, now)

    def _look(self, conn: psycopg.Connection[Any], state: _Watched, now: float) -> None:
        if conn.closed or state.cut:
            return
        try:
            active = conn.pgconn.transaction_status == TransactionStatus.ACTIVE
        except psycopg.Error:  # closed meanwhile
            return
        if not active:
            state.busy = None
            return
        if state.busy is None or state.busy[0] != state.commands:
            state.busy = (state.commands, now)
            return
        waited = now - state.busy[1]
        if waited < self.answer_timeout:
            return
        state.cut = True
        log.debug("cutting database connection %s after %.1f s without an answer",
                  state.label, waited)
        # Reported before the cut, so that the report comes before the failure it causes
        # in the waiting thread (whose handling may read or log it at once).
        try:
            if self.on_cut is not None:
                self.on_cut(state.label, waited)
        finally:
            _shut_down(conn)


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """End the connection's socket under the call waiting on it: the call sees the
    connection closed and fails at once. Only the socket is touched here (the connection
    object belongs to the thread using it), so this is safe from another thread."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed
    with sock, contextlib.suppress(OSError):  # already gone
        sock.shutdown(socket.SHUT_RDWR)
