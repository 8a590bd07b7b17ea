"""The folder sync logic: IMAP folder -> importer, crash-safe, usable without Qt.

One pass over a folder (:class:`FolderSync`):

1. read ``xtmail.folder_state`` (UIDVALIDITY, last imported UID, HIGHESTMODSEQ);
2. STATUS the folder; if its UIDVALIDITY is the stored one and UIDNEXT (or, with CONDSTORE,
   HIGHESTMODSEQ) shows nothing new, stop here: no SELECT, no FETCH;
3. EXAMINE it (read-only), ``UID SEARCH UID last+1:*`` (plus ``SINCE`` on a first sync when
   configured), leave out the UIDs already stored above the last UID (below), then fetch,
   parse and import in batches.

Batches are stored by one or more writer connections side by side, so they may commit out
of UID order. What a batch stored is recorded in its own transaction twice over: by the
``xtmail.location`` row of every message it holds (account, folder, UIDVALIDITY, UID), and
by advancing ``fs_last_uid`` to the highest UID below which every batch has committed (never
lowering it). A process killed at any instant therefore resumes from ``fs_last_uid`` and
skips the UIDs whose location rows exist above it: nothing is lost or imported twice.

UIDVALIDITY policy: a new UIDVALIDITY means the old UIDs mean nothing any more. The folder is
rescanned from UID 1; messages already stored are recognised by their identity hash (no new
``eml`` rows), and get a location under the new UIDVALIDITY. Before the first batch, one
transaction deletes the ``xtmail.location`` rows of the old UIDVALIDITY for that account and
folder (they point at UIDs that no longer exist) and records the new UIDVALIDITY with last
UID 0; stored messages are never deleted by sync.

:class:`AccountSync` runs the passes over an account's folders with the fault handling:
network errors reconnect with capped, jittered exponential backoff; an unreachable database
pauses and retries; refused credentials, an untrusted certificate or a wrong setting stop
the account and are reported. A session-level PostgreSQL advisory lock per account and
folder lets only one process sync a folder at a time; another one skips it and says so.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import psycopg

from xtmail.sync.db.folder_state import (
    FolderState,
    read_state,
    relax_commit,
    stored_uids_above,
    try_lock_folder,
    unlock_folder,
    write_state,
)
from xtmail.sync.db.writer import Importer
from xtmail.sync.errors import (
    XtmailError,
)
from xtmail.sync.imap.connection import FetchedMessage, FolderStatus, ImapConnection
from xtmail.sync.mail.prepare import prepare_many
from xtmail.sync.pipeline import BATCH_BYTES, extra_writers, prepare_batch
from xtmail.sync.values import ImportPolicy, Incoming, Location, PreparedMessage

log = logging.getLogger(__name__)

DEFAULT_BATCH = 250
#: Messages up to this size are not asked their exact size when batches are cut.
SMALL_MESSAGE = 64 * 1024
#: Batches at least this long are parsed in two halves (FolderSync._parse_later).
PARSE_SPLIT = 64
#: Database connections storing a folder's batches side by side (see FolderSync).
DEFAULT_WRITERS = 2


@dataclass
class FolderResult:
    """What one pass over a folder did. ``skipped`` says why nothing was fetched."""

    account: str
    folder: str
    imported: int = 0
    already_present: int = 0
    fetched: int = 0
    skipped: str | None = None
    rescanned: bool = False
    ties: dict[int, list[tuple[str, int]]] = field(default_factory=dict)


class SyncListener:
    """Receives what a sync does. Called from the sync thread: keep the methods quick.

    The default methods do nothing; the CLI and :class:`SyncService` override them.
    """

    def progress(self, account: str, folder: str, done: int, total: int) -> None:
        """``done`` of ``total`` new messages of ``folder`` are stored."""

    def status(self, text: str) -> None:
        """A one-line description of what is happening now."""

    def imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        """New messages were committed: eml_id -> [(document type code, id)]."""

    def error(self, kind: str, error: XtmailError) -> None:
        """Something went wrong; ``kind`` is one of :data:`xtmail.sync.imap.account.ERROR_KINDS`."""

    def warning(self, text: str) -> None:
        """The sync goes on, but the user should know and may act: contacts could not be
        created (a missing privilege), a message was kept by its raw bytes only. Each text
        is reported once per pass over a folder."""


def _chunks(
    uids: Sequence[int], size: int, sizes: dict[int, int] | None = None,
    max_bytes: int = BATCH_BYTES, unknown: int = 0,
) -> list[Sequence[int]]:
    """Batches of at most ``size`` UIDs and, by the messages' ``sizes`` (``unknown`` for a
    UID without one), ``max_bytes`` (a larger message is a batch of its own)."""
    if sizes is None:
        return [uids[i : i + size] for i in range(0, len(uids), size)]
    chunks: list[Sequence[int]] = []
    current: list[int] = []
    held = 0
    for uid in uids:
        length = sizes.get(uid, unknown)
        if current and (len(current) >= size or held + length > max_bytes):
            chunks.append(current)
            current, held = [], 0
        current.append(uid)
        held += length
    if current:
        chunks.append(current)
    return chunks


class FolderSync:
    """One pass over one folder. Blocking; run it in a worker thread or a headless process.

    Batches hold at most ``batch_size`` messages and ``batch_bytes`` of them (by the
    server's RFC822.SIZE). ``executor`` parses (a process pool for throughput; None parses
    in this thread).
    ``writers`` connections store batches side by side: ``conn`` and ``writers - 1`` more
    opened with ``connect`` (the database work of a batch runs on one server core, so a
    second writer keeps the second core busy). ``should_stop`` is polled between batches: a
    stopped pass has committed whole batches only, and the next pass resumes after them.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        imap: ImapConnection,
        account: str,
        folder: str,
        *,
        policy: ImportPolicy | None = None,
        executor: Executor | None = None,
        batch_size: int = DEFAULT_BATCH,
        since: date | None = None,
        listener: SyncListener | None = None,
        should_stop: Callable[[], bool] | None = None,
        connect: Callable[[], psycopg.Connection] | None = None,
        writers: int = 1,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.conn = conn
        self.imap = imap
        self.account = account
        self.folder = folder
        self.policy = policy or ImportPolicy()
        self.executor = executor
        self.batch_size = max(1, batch_size)
        self.since = since
        self.listener = listener or SyncListener()
        self.should_stop = should_stop or _never
        self.connect = connect
        self.writers = max(1, writers) if connect is not None else 1
        self.batch_bytes = max(1, batch_bytes)

    def run(self) -> FolderResult:
        result = FolderResult(self.account, self.folder)
        if not try_lock_folder(self.conn, self.account, self.folder):
            result.skipped = "another process is synchronizing this folder"
            self.listener.status(f"{self.folder}: skipped, {result.skipped}")
            return result
        try:
            self._run(result)
        finally:
            try:
                unlock_folder(self.conn, self.account, self.folder)
            except psycopg.OperationalError:
                pass  # the connection is gone, and its session lock with it
        return result

    def _run(self, result: FolderResult) -> None:
        state = read_state(self.conn, self.account, self.folder)
        if state is not None and _unchanged(state, self.imap.status(self.folder)):
            result.skipped = "unchanged"
            return
        selected = self.imap.examine(self.folder)
        rescan = state is None or state.uidvalidity != selected.uidvalidity
        if state is not None and rescan:
            log.warning("%s %s: UIDVALIDITY changed from %s to %s; rescanning", self.account,
                        self.folder, state.uidvalidity, selected.uidvalidity)
            self.listener.status(f"{self.folder}: the server renumbered the folder; rescanning")
            # The old UIDs mean nothing now: forget their locations and start the new
            # numbering from 0, before any batch of the rescan commits.
            with self.conn.transaction():
                write_state(self.conn, self.account, self.folder,
                            FolderState(selected.uidvalidity, 0, None),
                            drop_other_uidvalidity=True)
        result.rescanned = rescan and state is not None
        last = 0 if rescan or state is None else state.last_uid
        uids = self.imap.uids_after(last, self.since if last == 0 else None)
        # All UIDs below UIDNEXT that the search did not return were expunged: the state may
        # move past them, so the next pass's STATUS check sees "nothing new".
        final_last = max([last, selected.uidnext - 1, *uids[-1:]])
        if uids:
            done_above = stored_uids_above(self.conn, self.account, self.folder,
                                           selected.uidvalidity, last)
            if done_above:
                uids = [uid for uid in uids if uid not in done_above]
        total = len(uids)
        self.listener.progress(self.account, self.folder, 0, total)
        # Sizes of the large messages only; the others count as SMALL_MESSAGE, so that 250
        # of them still make one batch (250 x 64 KiB is just under 16 MiB).
        sizes: dict[int, int] | None = None
        if len(uids) > 1:
            wanted = set(uids)
            large = [u for u in self.imap.uids_larger(last, SMALL_MESSAGE) if u in wanted]
            sizes = self.imap.sizes(large) if large else {}
        chunks = _chunks(uids, self.batch_size, sizes, self.batch_bytes, SMALL_MESSAGE)
        if chunks:
            self._import(chunks, selected, last, final_last, result)
        if not chunks and (state is None or rescan or final_last != state.last_uid
                           or selected.highestmodseq != state.highestmodseq):
            with self.conn.transaction():
                write_state(self.conn, self.account, self.folder,
                            FolderState(selected.uidvalidity, final_last,
                                        selected.highestmodseq))

    def _import(
        self,
        chunks: list[Sequence[int]],
        selected: FolderStatus,
        last: int,
        final_last: int,
        result: FolderResult,
    ) -> None:
        marks = _Watermark(chunks, selected, last, final_last)
        conns = [self.conn, *extra_writers(self.connect, min(self.writers, len(chunks)) - 1,
                                           f"{self.account} {self.folder}")]
        try:
            for conn in conns:
                relax_commit(conn)
            store = _BatchWriters(self, conns, selected, marks, result,
                                  sum(len(chunk) for chunk in chunks))
            self._feed(chunks, store)
            if marks.complete and not marks.final_written:
                # The last batches committed side by side, each before the others: none
                # could vouch for the whole folder. Now that all have, say so.
                with self.conn.transaction():
                    write_state(self.conn, self.account, self.folder, marks.final_state(),
                                advance_only=True)
        finally:
            for extra in conns[1:]:
                extra.close()

    def _feed(self, chunks: list[Sequence[int]], store: _BatchWriters) -> None:
        # A pipeline: the fetcher thread reads batch n+2 from the network while the parsing
        # processes work on batch n+1 and the writers store batch n. One fetcher thread, so
        # the IMAP connection is used serially. Depth bounds the memory in flight.
        depth = 3 if self.executor is not None else 1
        pending: deque[_Pending] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="xtmail-fetch") as fetcher:
            fetching: Future[list[FetchedMessage]] | None = fetcher.submit(
                self.imap.fetch, chunks[0])
            next_chunk = 1
            try:
                for index in range(len(chunks)):
                    while fetching is not None and (len(pending) < depth or not pending):
                        fetched = fetching.result()
                        fetching = None
                        if next_chunk < len(chunks):
                            fetching = fetcher.submit(self.imap.fetch, chunks[next_chunk])
                            next_chunk += 1
                        pending.append(_Pending(fetched, self._parse_later(fetched)))
                    if self.should_stop() or store.failed:
                        break
                    store.put(index, pending.popleft())
            finally:
                for waiting in pending:
                    for part in waiting.parsing:
                        part.cancel()
                store.close()

    def _parse_later(self, fetched: list[FetchedMessage]) -> list[Future[list[PreparedMessage]]]:
        """The batch's parse, in halves so that two workers share it: the first batch (all
        the writers wait for) is ready in half the time."""
        if self.executor is None or not fetched:
            return []
        args = [(m.raw, m.internal_date) for m in fetched]
        cut = len(args) // 2 if len(args) >= PARSE_SPLIT else len(args)
        return [self.executor.submit(prepare_batch, part)
                for part in (args[:cut], args[cut:]) if part]


class _Watermark:
    """Which batches of a pass have committed, and the folder state each commit may write.

    A batch's transaction can vouch for every UID up to the end of the run of committed
    batches that starts at the first one, counting itself (it commits with the mark, or
    neither happens). Batches committing side by side each see the other as uncommitted;
    that only makes the mark lag, and the location rows cover the rest.
    """

    def __init__(self, chunks: list[Sequence[int]], selected: FolderStatus, last: int,
                 final_last: int) -> None:
        self.ends = [chunk[-1] for chunk in chunks]
        self.uidvalidity = selected.uidvalidity
        self.highestmodseq = selected.highestmodseq
        self.start = last
        self.final_last = final_last
        self.committed: set[int] = set()
        self.prefix = 0  # batches 0 .. prefix-1 have all committed
        self.final_written = False

    @property
    def complete(self) -> bool:
        return self.prefix == len(self.ends)

    def final_state(self) -> FolderState:
        return FolderState(self.uidvalidity, self.final_last, self.highestmodseq)

    def state_with(self, index: int) -> FolderState:
        """The state to write in batch ``index``'s transaction."""
        end = self.prefix
        while end < len(self.ends) and (end in self.committed or end == index):
            end += 1
        if end == len(self.ends):
            return self.final_state()
        # HIGHESTMODSEQ only with the whole folder: a pass cut short must not look complete.
        return FolderState(self.uidvalidity, self.ends[end - 1] if end else self.start, None)

    def commit(self, index: int, state: FolderState) -> None:
        self.committed.add(index)
        while self.prefix in self.committed:
            self.prefix += 1
        if state.highestmodseq == self.highestmodseq and state.last_uid == self.final_last:
            self.final_written = True


class _BatchWriters:
    """Stores the batches of one pass: in the caller's thread with one connection, or by
    one thread per connection. The first error stops the pass and is raised by close()."""

    def __init__(
        self,
        sync: FolderSync,
        conns: Sequence[psycopg.Connection],
        selected: FolderStatus,
        marks: _Watermark,
        result: FolderResult,
        total: int,
    ) -> None:
        self.sync = sync
        self.total = total
        self.selected = selected
        self.marks = marks
        self.result = result
        self.done = 0
        self.warned: set[str] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._importers = [Importer(conn, sync.policy) for conn in conns]
        self._queue: queue.Queue[tuple[int, _Pending] | None] = queue.Queue(maxsize=len(conns))
        self._threads = [
            threading.Thread(target=self._run, args=(importer,), daemon=True,
                             name=f"xtmail-store-{n}")
            for n, importer in enumerate(self._importers)
        ] if len(conns) > 1 else []
        for thread in self._threads:
            thread.start()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def put(self, index: int, batch: _Pending) -> None:
        if not self._threads:
            self._store(self._importers[0], index, batch)
        else:
            self._queue.put((index, batch))

    def close(self) -> None:
        """Wait for the batches handed over; raise the first error a writer met."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error

    def _run(self, importer: Importer) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the feeder stops at its next batch
            try:
                self._store(importer, *job)
            except BaseException as exc:  # noqa: BLE001 - raised in the feeder's thread
                with self._lock:
                    self._error = self._error or exc

    def _store(self, importer: Importer, index: int, batch: _Pending) -> None:
        sync, selected = self.sync, self.selected
        items = [
            Incoming(m.raw, Location(sync.account, sync.folder, selected.uidvalidity, m.uid),
                     m.internal_date)
            for m in batch.fetched
        ]
        if batch.parsing:
            prepared = [p for part in batch.parsing for p in part.result()]
        else:
            prepared = prepare_many(items) if items else []
        written: list[FolderState] = []

        def on_state(conn: psycopg.Connection) -> None:
            with self._lock:
                state = self.marks.state_with(index)
            write_state(conn, sync.account, sync.folder, state, advance_only=True)
            written[:] = [state]

        stored = importer.import_batch(items, prepared, source="imap", on_state=on_state)
        with self._lock:
            self.marks.commit(index, written[0])
            result = self.result
            result.fetched += len(items)
            result.imported += stored.imported
            result.already_present += stored.already_present
            self.done += len(items)
            ties: dict[int, list[tuple[str, int]]] = {}
            if stored.ties or stored.imported:
                ties = {eml_id: stored.ties.get(eml_id, [])
                        for eml_id, new in zip(stored.eml_ids, stored.new, strict=True) if new}
                result.ties.update(ties)
            # Under the lock: listeners see one call at a time, counts in order.
            if ties:
                sync.listener.imported(ties)
            for warning in stored.warnings:
                if warning not in self.warned:
                    self.warned.add(warning)
                    sync.listener.warning(warning)
            sync.listener.progress(sync.account, sync.folder, self.done, self.total)


@dataclass
class _Pending:
    """A fetched batch on its way through the pipeline, its parse maybe under way."""

    fetched: list[FetchedMessage]
    parsing: list[Future[list[PreparedMessage]]]  # in order; empty: parse when stored


def _never() -> bool:
    return False


def _unchanged(state: FolderState, status: FolderStatus) -> bool:
    if status.uidvalidity != state.uidvalidity:
        return False
    if status.highestmodseq is not None and status.highestmodseq == state.highestmodseq:
        return True
    return status.uidnext - 1 <= state.last_uid


