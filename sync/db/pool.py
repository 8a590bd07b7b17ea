"""A small pool of asynchronous connections, for the views' queries on the host's loop.

Each caller takes a connection for its work and gives it back, so queries of several tabs
run side by side, at most ``max_size`` at a time; a setting one query changes for its
transaction cannot reach another.

Faults:

* A connection the server dropped while it sat idle (a restart, a terminated backend) is
  found out when it is taken, without a round trip: an idle connection has nothing to read,
  so a socket that is readable holds the server's goodbye or the end of the stream; such a
  connection is closed and another one made. One given back mid-query or after its query
  was interrupted (its task was cancelled, the connection failed), mid-transaction or
  broken is closed, never handed out again. A peer that vanished without a word (a host
  switched off, a network cut) leaves nothing to read: its first query meets the bound
  below instead.
* A server that accepts connections but never answers (frozen, overloaded, a network that
  swallows packets) would make a caller wait for ever: :meth:`AsyncPool.bounded` gives up
  after ``answer_timeout`` seconds with DatabaseUnavailable, and each new connection gets
  the same ``statement_timeout`` so that the server, when it runs, stops a query nobody
  waits for any more.

Why not psycopg_pool's AsyncConnectionPool: it makes and replaces connections in worker
tasks of its own. Under qasync, Qt also runs asyncio callbacks when it processes events
outside the running loop (pytest-qt does so between tests, and a cancelled query's task may
resume there); a worker woken there fails for want of a running loop, the pool's count of
its connections goes wrong, and later callers wait for a connection that never comes. This
pool makes connections in the caller's own task; the only tasks it starts are the bounded
works of :meth:`AsyncPool.bounded`, one per call, each awaited by its caller or, given up
on, cancelled and held by the pool until it has unwound.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus

from xtmail.sync.errors import DatabaseUnavailable

AsyncConn = psycopg.AsyncConnection[Any]
T = TypeVar("T")

#: What to do when the server does not answer: said once, used by the pool and the store.
NOT_ANSWERING_HINT = ("The database server may be overloaded, stopped half-way or out of "
                      "reach over the network. Check that it runs, then try again.")


def _gone(conn: AsyncConn) -> bool:
    """Whether an idle connection can no longer be used, found without a round trip."""
    if conn.closed or conn.broken or conn.pgconn.status != ConnStatus.OK:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    # An idle connection is owed nothing: anything to read is the server's farewell
    # ("terminating connection due to administrator command") or the end of the stream.
    return bool(readable)


class AsyncPool:
    """Up to ``max_size`` autocommit connections to ``dsn``; a caller waits up to ``timeout``
    seconds for one when all are in use (then DatabaseUnavailable).

    ``answer_timeout`` bounds, in seconds, making a connection and each work run through
    :meth:`bounded`; it is also the server-side ``statement_timeout`` of every connection
    unless ``statement_timeout`` says otherwise.

    Driver errors (the server cannot be reached) come out of :meth:`connection` as they are:
    the caller translates them (:mod:`xtmail.sync.db.errors`).
    """

    def __init__(self, dsn: str, *, max_size: int = 4, timeout: float = 5.0,
                 answer_timeout: float = 15.0, statement_timeout: float | None = None) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.timeout = timeout
        self.answer_timeout = answer_timeout
        self.statement_timeout = answer_timeout if statement_timeout is None else (
            statement_timeout)
        self._idle: list[AsyncConn] = []
        self._free = asyncio.Semaphore(max_size)
        self._closed = False
        # Works given up on (timed out or their caller cancelled) that are still unwinding:
        # psycopg asks the server to cancel their query first. Held until done, or they
        # could be collected half-way.
        self._abandoned: set[asyncio.Task[Any]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A connection for the block's queries, given back after it."""
        if self._closed:
            raise DatabaseUnavailable(
                "The connection to the database is closed.",
                hint="Reopen the window; if that does not help, restart the program.",
            )
        if self._free.locked():
            try:
                await asyncio.wait_for(self._free.acquire(), self.timeout)
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"The database is busy: no connection became free within "
                    f"{self.timeout:g} s.",
                    hint="Try again in a moment.",
                ) from None
        else:
            await self._free.acquire()
        try:
            conn = await self._take()
            interrupted = False
            try:
                yield conn
            except (asyncio.CancelledError, psycopg.OperationalError):
                # A query stopped half-way (its caller gave up, the server went away): even
                # when the driver could bring the connection back to idle, it is suspect.
                interrupted = True
                raise
            finally:
                await self._give_back(conn, interrupted)
        finally:
            self._free.release()

    async def bounded(self, work: Coroutine[Any, Any, T], doing: str = "") -> T:
        """The result of ``work``, or DatabaseUnavailable when it has not come after
        ``answer_timeout`` seconds.

        ``work`` runs as a task of its own, so that giving up on it (or the caller being
        cancelled) returns at once: a query stuck on a frozen server unwinds in the
        background, its connection closed, while the caller goes on.
        """
        task = asyncio.get_running_loop().create_task(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.answer_timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            what = f" {doing}" if doing else ""
            raise DatabaseUnavailable(
                f"The database is not answering: nothing came back{what} within "
                f"{self.answer_timeout:g} s.",
                hint=NOT_ANSWERING_HINT,
            )
        return task.result()

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: nobody waits for it any more
            return
        self._abandoned.add(task)
        task.add_done_callback(self._forget)
        task.cancel()

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller has gone

    async def _take(self) -> AsyncConn:
        while self._idle:
            conn = self._idle.pop()
            if _gone(conn):
                await conn.close()
                continue
            return conn
        return await self._connect()

    async def _connect(self) -> AsyncConn:
        # libpq's connect_timeout counts whole seconds only; the wait below is the bound.
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self.dsn, autocommit=True),
                self.answer_timeout,
            )
        except TimeoutError:
            raise DatabaseUnavailable(
                f"The database is not answering: no connection within "
                f"{self.answer_timeout:g} s.",
                hint=NOT_ANSWERING_HINT,
            ) from None
        try:
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (f"{int(self.statement_timeout * 1000)}ms",),
            )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _give_back(self, conn: AsyncConn, interrupted: bool = False) -> None:
        if (interrupted or self._closed or conn.closed
                or conn.info.transaction_status != TransactionStatus.IDLE):
            await conn.close()  # mid-query, mid-transaction or broken: not reusable
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections now and the others when they are given back; works
        given up on are cancelled. Closing twice is harmless."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        for task in list(self._abandoned):
            task.cancel()
