"""The batch pipeline shared by IMAP sync and file import: batches cut by count and bytes,
parsing in worker processes, and writer connections storing batches side by side."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import psycopg

from xtmail.sync.mail.prepare import prepare
from xtmail.sync.values import PreparedMessage

log = logging.getLogger(__name__)

#: At most this many bytes of raw mail in one batch (a bigger message is a batch of its
#: own): a folder of large attachments must not put gigabytes in flight.
BATCH_BYTES = 16 * 1024 * 1024


def prepare_batch(
    args: list[tuple[bytes, datetime | None]],
) -> list[PreparedMessage]:
    """Parse one batch in a worker process (module-level so that it pickles)."""
    return [prepare(raw, when) for raw, when in args]


def extra_writers(
    connect: Callable[[], psycopg.Connection] | None, count: int, what: str
) -> list[psycopg.Connection]:
    """Up to ``count`` more connections for writers storing batches side by side.

    A refused connection (a server at its connection limit) ends the list early: the work
    goes on with the writers there are. Each gets custom plans only (see ``write_batch``).
    """
    conns: list[psycopg.Connection] = []
    while connect is not None and len(conns) < count:
        try:
            conn = connect()
        except psycopg.OperationalError as exc:
            log.info("%s: storing with %d writer(s); another connection was refused: %s",
                     what, len(conns) + 1, exc)
            break
        conn.prepare_threshold = None
        conns.append(conn)
    return conns
