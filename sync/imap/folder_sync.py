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

Renumbering policy: a new UIDVALIDITY means the old UIDs mean nothing any more. So does a
UIDNEXT not above the last stored UID (a mailbox never reuses a UID: another folder was
renamed into this name and kept its UIDVALIDITY, as Cyrus does), and a changed MAILBOXID
(RFC 8474) where the server offers one. The folder is rescanned from UID 1; messages
already stored are recognised by their identity hash (no new ``eml`` rows), and get a
location under the new numbering. Before the first batch, one transaction deletes the
folder's ``xtmail.location`` rows for that account (they point at UIDs that no longer
exist, or at other messages) and records the new numbering with last UID 0; stored messages
are never deleted by sync.

:class:`AccountSync` runs the passes over an account's folders with the fault handling:
network errors reconnect with capped, jittered exponential backoff; an unreachable database
pauses and retries; refused credentials, an untrusted certificate or a wrong setting stop
the account and are reported. A session-level PostgreSQL advisory lock per account and
folder lets only one process sync a folder at a time; another one skips it and says so.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from email.parser import BytesHeaderParser
from email.policy import compat32

import psycopg

from xtmail.sync.db.folder_state import (
    HEADER_BYTES,
    FolderState,
    last_stored_message,
    read_state,
    relax_commit,
    stored_uids_above,
    try_lock_folder,
    unlock_folder,
    write_state,
)
from xtmail.sync.errors import (
    XtmailError,
)
from xtmail.sync.imap.connection import FetchedMessage, FolderStatus, ImapConnection
from xtmail.sync.pipeline import (
    BATCH_BYTES,
    Parsing,
    WriterPool,
    batches,
    start_parse,
    writer_connections,
)
from xtmail.sync.values import BatchResult, ImportPolicy, Incoming, Location

log = logging.getLogger(__name__)

DEFAULT_BATCH = 250
#: Messages up to this size are not asked their exact size when batches are cut.
SMALL_MESSAGE = 64 * 1024
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

    def committed(self, account: str, folder: str, imported: int, already_present: int) -> None:
        """A batch of ``folder`` committed: ``imported`` new messages, ``already_present``
        found stored already. Called once per batch, as it commits: the sum is what is in
        the database, whatever happens to the pass afterwards."""

    def retrying(self, text: str) -> None:
        """The connection failed or broke; ``text`` says why and when the next attempt
        comes. By default a status line; a terminal shows it even when not verbose."""
        self.status(text)


def _chunks(
    uids: Sequence[int], size: int, sizes: dict[int, int] | None = None,
    max_bytes: int = BATCH_BYTES, unknown: int = 0,
) -> list[list[int]]:
    """The pipeline's batches of ``uids`` by the messages' server ``sizes`` (``unknown`` for
    a UID without one; no sizes: by count alone)."""
    known = sizes or {}
    return list(batches(uids, size, max_bytes, lambda uid: known.get(uid, unknown)))


class FolderSync:
    """One pass over one folder. Blocking; run it in a worker thread or a headless process.

    Batches hold at most ``batch_size`` messages and ``batch_bytes`` of them (by the
    server's RFC822.SIZE). ``executor`` parses (a process pool for throughput; None parses
    in the writer that stores the batch).
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

    def run(self, result: FolderResult | None = None) -> FolderResult:
        """One pass; its counts are added to ``result`` as batches commit (so that the
        attempts of a folder that had to reconnect add up), or to a new one."""
        result = result if result is not None else FolderResult(self.account, self.folder)
        result.skipped = None
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
        renumbered = _renumbered(state, selected) if state is not None else None
        if state is not None and renumbered is None and selected.mailboxid is None:
            renumbered = self._other_messages(state)
        rescan = state is None or renumbered is not None
        if renumbered is not None:
            # Not a warning on stderr: the pass copes, and the summary says it rescanned.
            log.info("%s %s: %s; rescanning", self.account, self.folder, renumbered)
            self.listener.status(f"{self.folder}: {renumbered}; rescanning")
            # The old UIDs mean nothing now, or name other messages: forget their
            # locations and start the new numbering from 0, before any batch commits.
            with self.conn.transaction():
                write_state(self.conn, self.account, self.folder,
                            FolderState(selected.uidvalidity, 0, None, selected.mailboxid),
                            forget_locations=True)
        result.rescanned = result.rescanned or renumbered is not None
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
                           or selected.highestmodseq != state.highestmodseq
                           or selected.mailboxid != state.mailboxid):
            with self.conn.transaction():
                write_state(self.conn, self.account, self.folder,
                            FolderState(selected.uidvalidity, final_last,
                                        selected.highestmodseq, selected.mailboxid))

    def _other_messages(self, state: FolderState) -> str | None:
        """Whether the last stored UID now names another message: a folder renamed into
        this name with the same UIDVALIDITY and a higher UIDNEXT (a bigger one) passes the
        counters' test. The servers without MAILBOXID get this check: one header fetched,
        on passes that have something to fetch anyway."""
        stored = last_stored_message(self.conn, self.account, self.folder, state.uidvalidity,
                                     state.last_uid)
        if stored is None:
            return None
        uid, raw = stored
        header = self.imap.header(uid)
        if header is None or raw.startswith(header):
            return None  # expunged since, or the same bytes
        if len(header) >= HEADER_BYTES or _identity(header) == _identity(raw):
            # Too long to compare here, or the same message served with other bytes (some
            # servers rebuild a message's MIME when they serve it): not worth a rescan.
            return None
        return f"another folder has taken this name (UID {uid} is another message now)"

    def _import(
        self,
        chunks: list[list[int]],
        selected: FolderStatus,
        last: int,
        final_last: int,
        result: FolderResult,
    ) -> None:
        marks = _Watermark(chunks, selected, last, final_last)
        conns = [self.conn, *writer_connections(
            self.connect, min(self.writers, len(chunks)) - 1, f"{self.account} {self.folder}")]
        try:
            for conn in conns:
                relax_commit(conn)
            ledger = _Ledger(self, marks, result, sum(len(chunk) for chunk in chunks))
            # One writer stores in this thread: no batch waits in a queue besides the ones
            # fetched ahead, which bound the memory in flight.
            pool: WriterPool[int] = WriterPool(
                conns, self.policy, source="imap", on_stored=ledger.stored,
                on_state=ledger.on_state, backlog=len(conns), inline=True)
            self._feed(chunks, selected, pool)
            if marks.complete and not marks.final_written:
                # The last batches committed side by side, each before the others: none
                # could vouch for the whole folder. Now that all have, say so.
                with self.conn.transaction():
                    write_state(self.conn, self.account, self.folder, marks.final_state(),
                                advance_only=True)
        finally:
            for extra in conns[1:]:
                extra.close()

    def _feed(self, chunks: list[list[int]], selected: FolderStatus,
              pool: WriterPool[int]) -> None:
        # A pipeline: the fetcher thread reads batch n+2 from the network while the parsing
        # processes work on batch n+1 and the writers store batch n. One fetcher thread, so
        # the IMAP connection is used serially. Depth bounds the memory in flight.
        depth = 3 if self.executor is not None else 1
        pending: deque[tuple[list[FetchedMessage], Parsing]] = deque()
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
                        pairs = [(m.raw, m.internal_date) for m in fetched]
                        pending.append((fetched, start_parse(self.executor, pairs)))
                    if self.should_stop() or pool.failed:
                        break
                    fetched, parsing = pending.popleft()
                    uidvalidity = selected.uidvalidity
                    items = [Incoming(m.raw, Location(self.account, self.folder, uidvalidity,
                                                      m.uid), m.internal_date)
                             for m in fetched]
                    pool.put(items, parsing, index)
            finally:
                for _, waiting in pending:
                    waiting.cancel()
                pool.close()


class _Watermark:
    """Which batches of a pass have committed, and the folder state each commit may write.

    A batch's transaction can vouch for every UID up to the end of the run of committed
    batches that starts at the first one, counting itself (it commits with the mark, or
    neither happens). Batches committing side by side each see the other as uncommitted;
    that only makes the mark lag, and the location rows cover the rest.
    """

    def __init__(self, chunks: Sequence[Sequence[int]], selected: FolderStatus, last: int,
                 final_last: int) -> None:
        self.ends = [chunk[-1] for chunk in chunks]
        self.uidvalidity = selected.uidvalidity
        self.highestmodseq = selected.highestmodseq
        self.mailboxid = selected.mailboxid
        self.start = last
        self.final_last = final_last
        self.committed: set[int] = set()
        self.prefix = 0  # batches 0 .. prefix-1 have all committed
        self.final_written = False

    @property
    def complete(self) -> bool:
        return self.prefix == len(self.ends)

    def final_state(self) -> FolderState:
        return FolderState(self.uidvalidity, self.final_last, self.highestmodseq,
                           self.mailboxid)

    def state_with(self, index: int) -> FolderState:
        """The state to write in batch ``index``'s transaction."""
        end = self.prefix
        while end < len(self.ends) and (end in self.committed or end == index):
            end += 1
        if end == len(self.ends):
            return self.final_state()
        # HIGHESTMODSEQ only with the whole folder: a pass cut short must not look complete.
        return FolderState(self.uidvalidity, self.ends[end - 1] if end else self.start, None,
                           self.mailboxid)

    def commit(self, index: int, state: FolderState) -> None:
        self.committed.add(index)
        while self.prefix in self.committed:
            self.prefix += 1
        if state.highestmodseq == self.highestmodseq and state.last_uid == self.final_last:
            self.final_written = True


class _Ledger:
    """The writer pool's callbacks for one pass: the folder state each batch's transaction
    writes (by the watermark), and after each commit the result counts and the listener."""

    def __init__(self, sync: FolderSync, marks: _Watermark, result: FolderResult,
                 total: int) -> None:
        self.sync = sync
        self.marks = marks
        self.result = result
        self.total = total
        self.done = 0
        self.warned: set[str] = set()
        # The watermark is read inside one writer's transaction while another's commit is
        # recorded: both under this lock.
        self._lock = threading.Lock()
        self._written: dict[int, FolderState] = {}

    def on_state(self, index: int, conn: psycopg.Connection) -> None:
        sync = self.sync
        with self._lock:
            state = self._written[index] = self.marks.state_with(index)
        write_state(conn, sync.account, sync.folder, state, advance_only=True)

    def stored(self, index: int, items: Sequence[Incoming], stored: BatchResult) -> None:
        # The pool calls this one batch at a time: listeners see one call at a time, and
        # the counts in order.
        sync, result = self.sync, self.result
        with self._lock:
            self.marks.commit(index, self._written.pop(index))
        result.fetched += len(items)
        result.imported += stored.imported
        result.already_present += stored.already_present
        sync.listener.committed(sync.account, sync.folder, stored.imported,
                                stored.already_present)
        self.done += len(items)
        ties: dict[int, list[tuple[str, int]]] = {}
        if stored.ties or stored.imported:
            # Handed on, not kept: a pass over 100,000 messages would otherwise hold them
            # all until it ends (the listener has them batch by batch).
            ties = {eml_id: stored.ties.get(eml_id, [])
                    for eml_id, new in zip(stored.eml_ids, stored.new, strict=True) if new}
        if ties:
            sync.listener.imported(ties)
        for warning in stored.warnings:
            if warning not in self.warned:
                self.warned.add(warning)
                sync.listener.warning(warning)
        sync.listener.progress(sync.account, sync.folder, self.done, self.total)


_IDENTITY_FIELDS = ("message-id", "date", "from", "subject")


def _identity(raw: bytes) -> tuple[str, ...]:
    """The header fields that tell messages apart, whitespace and folding aside."""
    header = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return tuple(" ".join(str(header.get(name, "")).split()) for name in _IDENTITY_FIELDS)


def _never() -> bool:
    return False


def _renumbered(state: FolderState, status: FolderStatus) -> str | None:
    """Why the stored UIDs of a folder no longer name its messages, or None if they do."""
    if status.uidvalidity != state.uidvalidity:
        return (f"the server renumbered the folder (UIDVALIDITY {state.uidvalidity} became "
                f"{status.uidvalidity})")
    if state.mailboxid and status.mailboxid and status.mailboxid != state.mailboxid:
        return "another folder has taken this name (its MAILBOXID differs)"
    if 0 < status.uidnext <= state.last_uid:
        # A mailbox never hands out a UID below one it gave before: a folder renamed or
        # swapped into this name that kept its UIDVALIDITY (Cyrus keeps it on RENAME, and
        # gives folders created in the same second the same one).
        return (f"another folder has taken this name (its next UID {status.uidnext} is "
                f"not above the last one stored, {state.last_uid})")
    return None


def _unchanged(state: FolderState, status: FolderStatus) -> bool:
    if _renumbered(state, status) is not None:
        return False
    if status.highestmodseq is not None and status.highestmodseq == state.highestmodseq:
        return True
    return status.uidnext - 1 <= state.last_uid


