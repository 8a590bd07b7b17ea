"""The batch pipeline: the batcher's cut rule, the parse stage, and the writer pool's
callbacks, errors and abort against a real PostgreSQL database."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.helpers.mail import make_message
from xtmail.sync.db.writer import Importer
from xtmail.sync.files import ImportSummary, _batches
from xtmail.sync.imap.folder_sync import _chunks
from xtmail.sync.mail.prepare import prepare
from xtmail.sync.pipeline import (
    Parsing,
    WriterPool,
    batches,
    start_parse,
    writer_connections,
)
from xtmail.sync.values import BatchResult, ImportPolicy, Incoming, PreparedMessage

# -- the batcher ------------------------------------------------------------------------------


def test_batches_cut_by_count_and_before_the_item_that_exceeds_the_bytes() -> None:
    def weigh(n: int) -> int:
        return n

    assert list(batches([1, 2, 3, 4, 5], 2, 100, weigh)) == [[1, 2], [3, 4], [5]]
    assert list(batches([40, 40, 40, 10], 9, 100, weigh)) == [[40, 40], [40, 10]]
    # Exactly at the limit still fits; an item larger than the limit is a batch of its own.
    assert list(batches([50, 50, 1], 9, 100, weigh)) == [[50, 50], [1]]
    assert list(batches([10, 500, 10], 9, 100, weigh)) == [[10], [500], [10]]
    assert list(batches([500, 500], 9, 100, weigh)) == [[500], [500]]
    # Weightless items are bound by the count alone.
    assert list(batches([0] * 5, 2, 1, weigh)) == [[0, 0], [0, 0], [0]]
    assert list(batches([], 2, 100, weigh)) == []


def test_batches_read_the_stream_lazily() -> None:
    read: list[int] = []

    def stream() -> itertools.count[int]:
        return itertools.count()

    def weigh(n: int) -> int:
        read.append(n)
        return 1

    cut = batches(stream(), 3, 100, weigh)
    assert next(cut) == [0, 1, 2]
    # A full batch goes on at once: nothing after it has been read.
    assert read == [0, 1, 2]


def test_imap_sync_and_file_import_cut_alike() -> None:
    lengths = [10, 10, 500, 10, 10, 10, 10, 95, 5]
    uids = list(range(1, len(lengths) + 1))
    by_uid = _chunks(uids, 3, dict(zip(uids, lengths, strict=True)), 100)
    items = [Incoming(b"x" * n) for n in lengths]
    by_file = _batches(iter(items), 3, ImportSummary(), max_bytes=100)
    assert [[lengths[uid - 1] for uid in chunk] for chunk in by_uid] == [
        [len(item.raw) for item in batch] for batch in by_file
    ] == [[10, 10], [500], [10, 10, 10], [10], [95, 5]]


# -- the parse stage --------------------------------------------------------------------------


class RecordingExecutor(ThreadPoolExecutor):
    """Threads instead of processes (the parse function is the same); records each part."""

    def __init__(self) -> None:
        super().__init__(2)
        self.parts: list[int] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.parts.append(len(args[0]))
        return super().submit(fn, *args, **kwargs)


def pairs_of(count: int) -> list[tuple[bytes, None]]:
    return [(make_message(subject=f"Parse {i}", message_id=f"<p{i}@x>"), None)
            for i in range(count)]


def test_a_long_batch_is_parsed_in_two_halves_in_order() -> None:
    pairs = pairs_of(9)
    with RecordingExecutor() as executor:
        long = start_parse(executor, pairs, split_at=8)
        short = start_parse(executor, pairs[:7], split_at=8)
        assert [p.hash for p in long.result()] == [prepare(raw).hash for raw, _ in pairs]
        assert len(short.result()) == 7
    assert executor.parts == [4, 5, 7]


def test_without_an_executor_the_first_thread_that_asks_parses_once() -> None:
    parsing = start_parse(None, pairs_of(2))
    first = parsing.result()
    assert [p.subject for p in first] == ["Parse 0", "Parse 1"]
    assert parsing.result() is first


# -- the writer pool --------------------------------------------------------------------------


def batch_of(tag: int, count: int = 2) -> tuple[list[Incoming], list[PreparedMessage]]:
    items = [Incoming(make_message(subject=f"Batch {tag}.{i}", message_id=f"<b{tag}.{i}@x>"))
             for i in range(count)]
    return items, [prepare(item.raw) for item in items]


def ready(prepared: list[PreparedMessage]) -> Parsing:
    done: Future[list[PreparedMessage]] = Future()
    done.set_result(prepared)
    return Parsing((), [done])


def stored_subjects(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT eml_subj FROM xtbatch.eml ORDER BY eml_subj").fetchall()
    return [row[0] for row in rows]


class Calls:
    """Records the pool's callbacks: which thread, which tag, inside which transaction."""

    def __init__(self) -> None:
        self.stored: list[tuple[int, int, int]] = []  # tag, items, imported
        self.states: list[tuple[int, psycopg.pq.TransactionStatus]] = []
        self.threads: set[str] = set()
        self.fail_state_of: int | None = None

    def on_state(self, tag: int, conn: psycopg.Connection) -> None:
        self.states.append((tag, conn.info.transaction_status))
        if tag == self.fail_state_of:
            raise RuntimeError(f"state of batch {tag} refused")

    def on_stored(self, tag: int, items: Sequence[Incoming], result: BatchResult) -> None:
        self.stored.append((tag, len(items), result.imported))
        self.threads.add(threading.current_thread().name)


def test_writers_store_every_batch_and_call_back_per_batch(
    db_dsn: str, conn: psycopg.Connection
) -> None:
    calls = Calls()
    extra = writer_connections(lambda: psycopg.connect(db_dsn, autocommit=True), 1, "test")
    try:
        pool: WriterPool[int] = WriterPool([conn, *extra], ImportPolicy(), source="file",
                                           on_stored=calls.on_stored, on_state=calls.on_state,
                                           backlog=2)
        for tag in range(6):
            items, prepared = batch_of(tag)
            pool.put(items, ready(prepared), tag)
        pool.close()
    finally:
        for extra_conn in extra:
            extra_conn.close()
    assert sorted(calls.stored) == [(tag, 2, 2) for tag in range(6)]
    # The progress marker is written inside the batch's own transaction.
    assert {status for _, status in calls.states} == {psycopg.pq.TransactionStatus.INTRANS}
    assert calls.threads <= {"xtmail-writer-0", "xtmail-writer-1"}
    assert len(stored_subjects(conn)) == 12


def test_inline_with_one_connection_stores_in_the_callers_thread(
    conn: psycopg.Connection,
) -> None:
    calls = Calls()
    pool: WriterPool[int] = WriterPool([conn], ImportPolicy(), source="imap",
                                       on_stored=calls.on_stored, inline=True)
    items, prepared = batch_of(0)
    pool.put(items, ready(prepared), 0)
    assert calls.stored == [(0, 2, 2)]  # stored before put() returned
    assert calls.threads == {threading.current_thread().name}
    pool.close()


def test_the_first_error_stops_the_writers_and_reaches_the_caller(
    conn: psycopg.Connection,
) -> None:
    calls = Calls()
    calls.fail_state_of = 1
    pool: WriterPool[int] = WriterPool([conn], ImportPolicy(), source="file",
                                       on_stored=calls.on_stored, on_state=calls.on_state,
                                       backlog=4)
    # Batch 0 waits for its parse until all four are queued; batches 2 and 3 never get one:
    # a writer that tried to store them would wait forever.
    first: Future[list[PreparedMessage]] = Future()
    never = [Future[list[PreparedMessage]](), Future[list[PreparedMessage]]()]
    items0, prepared0 = batch_of(0)
    items1, prepared1 = batch_of(1)
    pool.put(items0, Parsing((), [first]), 0)
    pool.put(items1, ready(prepared1), 1)
    pool.put(batch_of(2)[0], Parsing((), [never[0]]), 2)
    pool.put(batch_of(3)[0], Parsing((), [never[1]]), 3)
    first.set_result(prepared0)
    with pytest.raises(RuntimeError, match="state of batch 1 refused"):
        pool.close()
    assert calls.stored == [(0, 2, 2)]
    # Batch 1 rolled back with its state; the others were dropped, their parses cancelled.
    assert stored_subjects(conn) == ["Batch 0.0", "Batch 0.1"]
    assert all(future.cancelled() for future in never)
    with pytest.raises(RuntimeError, match="state of batch 1 refused"):
        pool.put(batch_of(4)[0], ready([]), 4)


def test_a_broken_writer_connection_fails_the_work_in_the_callers_thread(
    db_dsn: str, conn: psycopg.Connection
) -> None:
    lost = psycopg.connect(db_dsn, autocommit=True)
    lost.close()
    calls = Calls()
    pool: WriterPool[int] = WriterPool([conn, lost], ImportPolicy(), source="file",
                                       on_stored=calls.on_stored, backlog=2)
    with pytest.raises(psycopg.OperationalError):
        for tag in range(8):
            items, prepared = batch_of(tag, 1)
            pool.put(items, ready(prepared), tag)
        pool.close()
    pool.abort()  # after the error: returns, raises nothing


def test_abort_drops_the_waiting_batches(conn: psycopg.Connection) -> None:
    calls = Calls()
    pool: WriterPool[int] | None = None
    first_stored = threading.Event()

    def stored_then_stop(tag: int, items: Sequence[Incoming], result: BatchResult) -> None:
        calls.on_stored(tag, items, result)
        assert pool is not None
        pool.stop()  # from a writer's callback: an interrupt may come from any thread
        first_stored.set()

    pool = WriterPool([conn], ImportPolicy(), source="file", on_stored=stored_then_stop,
                      backlog=3)
    never: list[Future[list[PreparedMessage]]] = [Future(), Future()]
    items0, prepared0 = batch_of(0)
    pool.put(items0, ready(prepared0), 0)
    pool.put(batch_of(1)[0], Parsing((), [never[0]]), 1)
    pool.put(batch_of(2)[0], Parsing((), [never[1]]), 2)
    assert first_stored.wait(30)
    pool.abort()
    assert calls.stored == [(0, 2, 2)]
    assert stored_subjects(conn) == ["Batch 0.0", "Batch 0.1"]
    assert all(future.cancelled() for future in never)


# -- writer connections -----------------------------------------------------------------------


def test_writer_connections_use_custom_plans_and_stop_at_a_refusal(db_dsn: str) -> None:
    opened: list[psycopg.Connection] = []

    def connect() -> psycopg.Connection:
        if len(opened) == 2:
            raise psycopg.OperationalError("sorry, too many clients already")
        opened.append(psycopg.connect(db_dsn, autocommit=True))
        return opened[-1]

    try:
        conns = writer_connections(connect, 5, "test")
        assert conns == opened
    finally:
        for c in opened:
            c.close()
    assert writer_connections(None, 3, "test") == []




def test_batches_are_written_with_custom_plans_only(conn: psycopg.Connection) -> None:
    """Whatever the caller's connection does, a batch's statements are never prepared
    (generic plans of the unnest(array) joins are far slower), and the connection's own
    setting is back afterwards."""
    conn.prepare_threshold = 0  # prepare everything at once
    raws = [make_message(subject=f"Plan {i}", message_id=f"<plan{i}@x>") for i in range(3)]
    for _ in range(3):
        Importer(conn).import_batch([Incoming(raw) for raw in raws])
    assert conn.prepare_threshold == 0
    conn.prepare_threshold = None
    prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert prepared == []
