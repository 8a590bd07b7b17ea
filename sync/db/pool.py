"""A small pool of asynchronous connections, for the views' queries on the host's loop.

Each caller takes a connection for its work and gives it back, so queries of several tabs
run side by side, at most ``max_size`` at a time; a setting one query changes for its
transaction cannot reach another. A connection the server dropped meanwhile (a restart) is
replaced when taken; one given back mid-query (its task was cancelled) or broken is closed.

Why not psycopg_pool's AsyncConnectionPool: it makes and replaces connections in worker
tasks of its own. Under qasync, Qt also runs asyncio callbacks when it processes events
outside the running loop (pytest-qt does so between tests, and a cancelled query's task may
resume there); a worker woken there fails for want of a running loop, the pool's count of
its connections goes wrong, and later callers wait for a connection that never comes. This
pool has no tasks: everything happens in the caller's own task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from xtmail.sync.errors import DatabaseUnavailable

AsyncConn = psycopg.AsyncConnection[Any]


class AsyncPool:
    """Up to ``max_size`` autocommit connections to ``dsn``; a caller waits up to ``timeout``
    seconds for one when all are in use (then DatabaseUnavailable).

    Driver errors (the server cannot be reached) come out of :meth:`connection` as they are:
    the caller translates them (:mod:`xtmail.sync.db.errors`).
    """

    def __init__(self, dsn: str, *, max_size: int = 4, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.timeout = timeout
        self._idle: list[AsyncConn] = []
        self._free = asyncio.Semaphore(max_size)
        self._closed = False

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
            try:
                yield conn
            finally:
                await self._give_back(conn)
        finally:
            self._free.release()

    async def _take(self) -> AsyncConn:
        while self._idle:
            conn = self._idle.pop()
            try:
                await conn.execute("")  # one round trip: is the server still there for it?
            except psycopg.Error:
                await conn.close()
                continue
            return conn
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def _give_back(self, conn: AsyncConn) -> None:
        if (self._closed or conn.closed
                or conn.info.transaction_status != TransactionStatus.IDLE):
            await conn.close()  # mid-query, mid-transaction or broken: not reusable
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections now and the others when they are given back.
        Closing twice is harmless."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
