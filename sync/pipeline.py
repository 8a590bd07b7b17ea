"""The batch pipeline shared by IMAP folder sync and file import.

Messages travel in batches through three stages:

* the batcher (:func:`batches`) cuts a stream into batches by count and by bytes;
* the parse stage (:func:`start_parse`) parses a batch's (raw, internal date) pairs in worker
  processes while earlier batches are being stored;
* the writer pool (:class:`WriterPool`) stores batches side by side, one thread per database
  connection, the extra connections opened by :func:`writer_connections`. How a connection
  plans the batch statements is the writer's own business (``write_batch``).

The callers keep what is theirs: folder sync fetches, and records its folder state inside
each batch's transaction; file import reads files and counts a summary.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from datetime import datetime
from typing import Generic, TypeVar

import psycopg

from xtmail.sync.db.writer import Importer
from xtmail.sync.mail.prepare import prepare_raw
from xtmail.sync.values import BatchResult, ImportPolicy, Incoming, PreparedMessage

log = logging.getLogger(__name__)

#: At most this many bytes of raw mail in one batch (a bigger message is a batch of its
#: own): a folder of large attachments must not put gigabytes in flight.
BATCH_BYTES = 16 * 1024 * 1024
#: Batches at least this long are parsed in two halves (see start_parse).
PARSE_SPLIT = 64

T = TypeVar("T")


def parse_processes(workers: int, *, start: str = "forkserver",
                    niceness: int = 0) -> ProcessPoolExecutor:
    """The worker processes that parse batches (``start_parse``). The caller owns the pool
    and shuts it down at exit.

    ``start`` is the multiprocessing start method: never "fork" in a process that already
    runs threads (a fork can copy a held lock into the child); "spawn" where Qt runs.
    ``niceness`` lowers the workers' CPU priority, so that a GUI thread wins the CPU.

    The workers ignore Ctrl+C (the calling process handles it and shuts the pool down) and
    end as soon as the calling process ends, however it ends (see :func:`_watch_parent`).
    """
    if start == "forkserver":
        _start_fork_server()
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(start),
        initializer=_worker_started,
        initargs=(niceness, os.getpid(), threading.main_thread().ident, start),
    )


def _start_fork_server() -> None:
    """Start multiprocessing's fork server now, with SIGINT and SIGTERM ignored.

    A worker forked from the fork server runs Python's start-up and its imports before
    :func:`_worker_started` makes it ignore Ctrl+C; under load that takes a second, and a
    Ctrl+C sent to the terminal's process group meanwhile killed it and broke the pool (the
    work then failed with a traceback, or hung in the pool's shutdown). A process started
    with a signal ignored keeps it ignored, and so do the processes it forks: neither the
    fork server nor a starting worker is ended by a Ctrl+C or a SIGTERM to the group. The
    workers take SIGTERM back in :func:`_worker_started` (the pool ends broken ones with it);
    the fork server ends when its last user does, as before.

    Signal handlers are set in the main thread only: elsewhere the server starts with the
    first task, as multiprocessing does by itself. A Ctrl+C during the few milliseconds of
    the start is ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    shielded = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in shielded}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_started(niceness: int, parent: int, parent_main: int | None, start: str) -> None:
    # Ctrl+C and a SIGTERM sent to the command's process group are the parent's to handle:
    # it stops the work, and the workers finish or drop what they hold when it shuts the
    # pool down. A group of their own keeps a group SIGTERM from killing them meanwhile:
    # a worker dying while the pool's feeder thread writes a batch to it left that thread
    # blocked on a full pipe the parent itself holds open, and the shutdown waiting for it
    # forever (test_an_interrupted_import_says_what_it_saved_and_resumes, SIGTERM).
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's Python handlers; the pool ends broken workers
    # with SIGTERM, which must simply end them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    _watch_parent(parent, start,
                  forked_by_main=start == "fork" and threading.get_ident() == parent_main)


def _watch_parent(parent: int, start: str, *, forked_by_main: bool) -> None:
    """End this worker as soon as the process ``parent`` ends, even by SIGKILL.

    An orphaned worker would live on, blocked on its task pipe, and keep the forkserver and
    the resource tracker alive with it: it holds the write ends of the pipes they wait on
    (both end by themselves once no process holds those). Under "forkserver" the parent of
    this process is the forkserver, so the watch is on xtmail's own pid.
    """
    if forked_by_main and sys.platform == "linux":
        # The kernel's own guarantee. It follows the thread that forked, not the process, so
        # only for a worker forked by the main thread: one forked by a short-lived thread
        # would be killed when that thread ends.
        _kill_me_with_my_parent()
        if os.getppid() != parent:
            os._exit(1)  # the parent ended before the signal was armed
    wait = _parent_exit_waiter(parent, start)
    threading.Thread(target=_exit_after, args=(wait,), daemon=True,
                     name="xtmail-parent-watch").start()


def _kill_me_with_my_parent() -> None:
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(pr_set_pdeathsig, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError) as exc:  # no prctl here: the watch thread stays
            log.debug("prctl(PR_SET_PDEATHSIG) is not available: %s", exc)


def _parent_exit_waiter(parent: int, start: str) -> Callable[[], object]:
    """A call that returns once the process ``parent`` has ended."""
    pidfd_wait = _pidfd_waiter(parent)
    if pidfd_wait is not None:
        return pidfd_wait
    origin = multiprocessing.parent_process()
    if start != "fork" and origin is not None and origin.sentinel is not None:
        # A pipe only the parent holds (spawn, forkserver), or its process handle (Windows).
        # A forked worker shares its siblings' pipes, so it cannot use one.
        sentinel = origin.sentinel
        return lambda: multiprocessing.connection.wait([sentinel])
    return lambda: _poll_parent_pid(parent)


def _pidfd_waiter(parent: int) -> Callable[[], object] | None:
    """Waits on a pidfd of ``parent`` (Linux 5.3 and later); None where there is none."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if sys.platform == "linux" and pidfd_open is not None:
        try:
            pidfd = pidfd_open(parent)
        except ProcessLookupError:
            os._exit(1)  # already gone
        except OSError as exc:  # an older kernel, or a sandbox refusing the call
            log.debug("pidfd_open is not available: %s", exc)
        else:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            return poller.poll
    return None


def _poll_parent_pid(parent: int) -> None:
    # A forked worker is adopted by another process when its parent ends.
    while os.getppid() == parent:
        time.sleep(0.5)


def _exit_after(wait: Callable[[], object]) -> None:
    wait()
    os._exit(1)


# -- the batcher ------------------------------------------------------------------------------


def batches(
    items: Iterable[T], size: int, max_bytes: int, weigh: Callable[[T], int]
) -> Iterator[list[T]]:
    """Batches of at most ``size`` items holding at most ``max_bytes`` by ``weigh``.

    A batch ends before the item that would take it past ``max_bytes``, so an item larger
    than the limit is a batch of its own. ``items`` is read lazily: a batch is handed on as
    soon as it is full, and the stream never has more than one batch read ahead.
    """
    batch: list[T] = []
    held = 0
    for item in items:
        weight = weigh(item)
        if batch and held + weight > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += weight
        if len(batch) >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


# -- the parse stage --------------------------------------------------------------------------

Pairs = Sequence[tuple[bytes, datetime | None]]


class Parsing:
    """One batch's parse on its way: parts submitted to worker processes, or (without an
    executor) the pairs, parsed by the first thread that asks for the result."""

    __slots__ = ("_pairs", "_parts", "_prepared")

    def __init__(self, pairs: Pairs, parts: list[Future[list[PreparedMessage]]]) -> None:
        self._pairs = pairs if not parts else ()
        self._parts = parts
        self._prepared: list[PreparedMessage] | None = None

    def result(self) -> list[PreparedMessage]:
        """The prepared messages in the order of the pairs; blocks until they are parsed."""
        if self._prepared is None:
            if not self._parts:
                self._prepared = prepare_raw(self._pairs)
                self._pairs = ()
            elif len(self._parts) == 1:
                self._prepared = self._parts[0].result()
            else:
                self._prepared = [p for part in self._parts for p in part.result()]
        return self._prepared

    def cancel(self) -> None:
        """Drop the parts no worker has started (the batch will not be stored)."""
        for part in self._parts:
            part.cancel()


def start_parse(executor: Executor | None, pairs: Pairs, split_at: int = PARSE_SPLIT) -> Parsing:
    """Start parsing (raw, internal date) pairs in ``executor``; None leaves the parse to
    whoever asks for the result.

    A batch of ``split_at`` or more is parsed in two halves, so that two workers share it:
    the first batch of a pass, which every writer waits for, is ready in half the time.
    """
    if executor is None or not pairs:
        return Parsing(pairs, [])
    cut = len(pairs) // 2 if len(pairs) >= split_at else len(pairs)
    return Parsing(pairs, [executor.submit(prepare_raw, part)
                           for part in (pairs[:cut], pairs[cut:]) if part])


# -- writer connections -----------------------------------------------------------------------


def writer_connections(
    connect: Callable[[], psycopg.Connection] | None, count: int, what: str
) -> list[psycopg.Connection]:
    """Up to ``count`` more connections for writers storing batches side by side.

    A refused connection (a server at its connection limit) ends the list early: the work
    goes on with the writers there are. ``what`` names the work in the log.
    """
    conns: list[psycopg.Connection] = []
    while connect is not None and len(conns) < count:
        try:
            conn = connect()
        except psycopg.OperationalError as exc:
            log.info("%s: storing with %d writer(s); another connection was refused: %s",
                     what, len(conns) + 1, exc)
            break
        conns.append(conn)
    return conns


# -- the writer pool --------------------------------------------------------------------------

_Job = tuple[Sequence[Incoming], Parsing, T]


class WriterPool(Generic[T]):
    """Stores batches side by side: one :class:`Importer` per connection, each in its own
    writer thread, taking batches in the order they are put. Batches may commit out of order.

    ``on_state(tag, conn)`` runs inside a batch's transaction, so that a progress marker
    commits with the messages it covers (or neither does); it may run again if the
    transaction is retried. ``on_stored(tag, items, result)`` runs after the commit, one call
    at a time. ``tag`` is what the caller put with the batch.

    ``backlog`` batches may wait for a writer; put() blocks beyond that, which bounds the
    memory in flight. With ``inline`` and one connection there is no thread: put() stores
    the batch in the caller's thread.

    The first error a writer meets stops the work: the other writers drain the queue without
    storing, and put() or close() raises the error in the caller's thread.
    """

    def __init__(
        self,
        conns: Sequence[psycopg.Connection],
        policy: ImportPolicy,
        *,
        source: str,
        on_stored: Callable[[T, Sequence[Incoming], BatchResult], None],
        on_state: Callable[[T, psycopg.Connection], None] | None = None,
        backlog: int = 1,
        inline: bool = False,
    ) -> None:
        self._source = source
        self._on_stored = on_stored
        self._on_state = on_state
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._stopping = False
        self._importers = [Importer(conn, policy) for conn in conns]
        self._queue: queue.Queue[_Job[T] | None] = queue.Queue(maxsize=max(1, backlog))
        self._threads = [] if inline and len(conns) == 1 else [
            threading.Thread(target=self._run, args=(importer,), daemon=True,
                             name=f"xtmail-writer-{n}")
            for n, importer in enumerate(self._importers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def failed(self) -> bool:
        """A writer met an error: put nothing more, close() raises it."""
        return self._error is not None

    def put(self, items: Sequence[Incoming], parsing: Parsing, tag: T) -> None:
        """Hand a batch over; raises the error a writer met before."""
        if self._error is not None:
            raise self._error
        if not self._threads:
            self._store(self._importers[0], (items, parsing, tag))
        else:
            self._queue.put((items, parsing, tag))

    def close(self) -> None:
        """Wait until every batch handed over is stored; raise the first error a writer met."""
        self._join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Store nothing more: the batches being stored finish, the waiting ones are dropped.
        Safe from any thread, a writer's callback included."""
        self._stopping = True

    def abort(self) -> None:
        """Stop, and wait for the batches being stored now."""
        self.stop()
        self._join()

    def _join(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _run(self, importer: Importer) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is not None or self._stopping:
                job[1].cancel()
                continue  # drain: the caller stops at its next put()
            try:
                self._store(importer, job)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                with self._lock:
                    self._error = self._error or exc

    def _store(self, importer: Importer, job: _Job[T]) -> None:
        items, parsing, tag = job
        on_state = self._on_state
        result = importer.import_batch(
            items, parsing.result(), source=self._source,
            on_state=None if on_state is None else lambda conn: on_state(tag, conn),
        )
        with self._lock:
            self._on_stored(tag, items, result)
