"""Bulk import of mail files (.eml, Maildir folders, mbox files) through the import engine.

People migrating old mail need it, and the benchmarks use it. Parsing runs in worker
processes, one batch ahead of the database writes, so both cores stay busy.
"""

from __future__ import annotations

import mailbox
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import psycopg

from xtmail.sync.errors import ConfigError
from xtmail.sync.mail.mime import looks_like_mail
from xtmail.sync.pipeline import (
    BATCH_BYTES,
    Parsing,
    WriterPool,
    batches,
    parse_processes,
    start_parse,
    writer_connections,
)
from xtmail.sync.values import BatchResult, ImportPolicy, Incoming, Location

FILE_ACCOUNT = "file"
NOT_MAIL = "not a mail message: no header block (an empty or binary file)"


@dataclass
class ImportSummary:
    imported: int = 0
    already_present: int = 0
    contacts_created: int = 0
    #: (what, why) for every message or file that could not be imported.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: files in the given folders that are not mail (listed, never silently passed over).
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (where, defect notes) for every new message that was damaged and read with repairs.
    repaired: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    #: Ctrl+C stopped the import: the counts cover the batches stored before it.
    interrupted: bool = False
    #: Ties of the new messages by document type code ("T" for contacts, "S" ...).
    ties: Counter[str] = field(default_factory=Counter)
    #: A dry run: everything above is what the import would have done; nothing was kept.
    dry_run: bool = False

    @property
    def seen(self) -> int:
        return self.imported + self.already_present + len(self.failed)


@dataclass(frozen=True, slots=True)
class _Failure:
    what: str
    why: str
    skipped: bool = False


def _mbox_date(message: mailbox.mboxMessage) -> datetime | None:
    # The From_ line carries the delivery time: "From sender Mon Jan  1 00:00:00 2024".
    parts = message.get_from().split(None, 1)
    if len(parts) == 2:
        try:
            return parsedate_to_datetime(parts[1]).replace(tzinfo=UTC)
        except (TypeError, ValueError, IndexError):
            return None
    return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def iter_sources(paths: Iterable[Path]) -> Iterator[Incoming | _Failure]:
    """Every message under ``paths``: .eml files, Maildir folders and mbox files.

    A folder that is not a Maildir is walked for ``*.eml`` files and Maildirs. Anything
    missing or unreadable is yielded as a failure with its reason, never skipped silently,
    and the other paths are read all the same.
    """
    for path in paths:
        path = Path(path)
        try:
            yield from _sources(path)
        except OSError as exc:
            # An unreadable folder, or a file that became unreadable part-way: what it gave
            # before is imported, the rest of it is reported.
            yield _Failure(exc.filename or str(path), exc.strerror or str(exc))


def _sources(path: Path) -> Iterator[Incoming | _Failure]:
    if not path.exists():
        yield _Failure(str(path), "no such file or folder")
    elif path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            yield from _maildir(path)
        else:
            for child in sorted(path.iterdir()):
                if child.is_dir() or child.suffix.lower() == ".eml" or _is_mbox(child):
                    yield from iter_sources([child])
                else:
                    yield _Failure(str(child), "not a mail file", skipped=True)
    elif path.suffix.lower() == ".eml":
        try:
            raw = path.read_bytes()
        except OSError as exc:
            yield _Failure(str(path), exc.strerror or str(exc))
        else:
            if looks_like_mail(raw):
                yield Incoming(
                    raw, Location(FILE_ACCOUNT, str(path.resolve()), 0, 0), _mtime(path)
                )
            else:
                yield _Failure(str(path), NOT_MAIL)
    else:
        yield from _mbox(path)


def _maildir(path: Path) -> Iterator[Incoming | _Failure]:
    # A Maildir is plain files in new/ and cur/; a file's mtime is its arrival time. The
    # folders are read as a stream, not listed and sorted first, so that memory does not
    # grow with the number of messages (a sorted list of every path of a large archive
    # costs tens of megabytes).
    # Order does not matter: rule 3 ties a reply whether it is stored before or after the
    # message it answers.
    base = path.resolve()
    for sub in ("new", "cur"):
        with os.scandir(path / sub) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    with open(entry.path, "rb") as handle:
                        raw = handle.read()
                        arrived = datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, UTC)
                except OSError as exc:
                    yield _Failure(entry.path, exc.strerror or str(exc))
                    continue
                if not looks_like_mail(raw):
                    yield _Failure(entry.path, NOT_MAIL)
                    continue
                key = entry.name.split(":", 1)[0]
                yield Incoming(raw, Location(FILE_ACCOUNT, f"{base}/{key}", 0, 0), arrived)


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False


def _mbox(path: Path) -> Iterator[Incoming | _Failure]:
    try:
        path.open("rb").close()
    except OSError as exc:
        yield _Failure(str(path), exc.strerror or str(exc))
        return
    if not _is_mbox(path):
        yield _Failure(str(path), "not an .eml file, a Maildir folder or an mbox file")
        return
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            message = box.get_message(key)
            raw = box.get_bytes(key)
            if not looks_like_mail(raw):
                yield _Failure(f"{path} message {number}", NOT_MAIL)
                continue
            yield Incoming(
                raw, Location(FILE_ACCOUNT, str(path.resolve()), 0, number), _mbox_date(message)
            )
    finally:
        box.close()


def _batches(
    items: Iterable[Incoming | _Failure], size: int, summary: ImportSummary,
    max_bytes: int = BATCH_BYTES,
) -> Iterator[list[Incoming]]:
    """The pipeline's batches of the messages in ``items``, weighed by their raw bytes; the
    failures go to ``summary`` as they pass."""
    return batches(_messages(items, summary), size, max_bytes, _raw_length)


def _messages(items: Iterable[Incoming | _Failure], summary: ImportSummary) -> Iterator[Incoming]:
    for item in items:
        if isinstance(item, _Failure):
            if item.skipped:
                summary.skipped.append(item.what)
            else:
                summary.failed.append((item.what, item.why))
        else:
            yield item


def _raw_length(item: Incoming) -> int:
    return len(item.raw)


def import_paths(
    conn: psycopg.Connection,
    paths: Sequence[Path],
    *,
    policy: ImportPolicy | None = None,
    workers: int | None = None,
    batch_size: int = 400,
    progress: Callable[[int], object] | None = None,
    connect: Callable[[], psycopg.Connection] | None = None,
    writers: int = 1,
    batch_bytes: int = BATCH_BYTES,
    dry_run: bool = False,
) -> ImportSummary:
    """Import every message under ``paths``; ``progress`` gets the count of each batch done.

    ``dry_run``: do everything (parse, match contacts, create them, tie) inside one
    transaction on ``conn`` that is rolled back at the end: the summary says what the
    import would do, and the database keeps nothing. One writer; other sessions wait on
    nothing but the advisory locks of contacts the run would create.

    Batches hold at most ``batch_size`` messages and ``batch_bytes`` of them. ``workers``
    processes parse; ``writers`` connections store batches side by side (the database work
    of a batch is single-threaded on the server, so a second writer uses the second core).
    Writers beyond the first are opened with ``connect``; the store's concurrency rules make
    parallel batches as safe as two importers.
    """
    if dry_run:
        with conn.transaction(force_rollback=True):
            summary = import_paths(conn, paths, policy=policy, workers=workers,
                                   batch_size=batch_size, progress=progress,
                                   batch_bytes=batch_bytes)
        summary.dry_run = True
        return summary
    summary = ImportSummary()
    policy = policy or ImportPolicy()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    extra = writer_connections(connect, writers - 1, "import")
    counter = _Counter(summary, progress)
    # A writer thread even for one connection: this thread reads (and without worker
    # processes parses) the next batch while the writer stores one.
    pool: WriterPool[Parsing] = WriterPool([conn, *extra], policy, source="file",
                                        on_stored=counter.stored, backlog=max(workers, 1))
    executor = parse_processes(workers, start="fork") if workers > 1 else None
    try:
        try:
            # Every worker parses a batch while the writers store earlier ones: parsing and
            # the database overlap, and memory stays bounded by a few batches whatever the
            # input size.
            for batch in _batches(iter_sources(paths), batch_size, summary, batch_bytes):
                parsing = start_parse(executor, [(item.raw, item.internal_date)
                                                 for item in batch])
                if executor is None:
                    parsing.result()  # here, so that the writers only write
                # The parse goes with the batch as its tag: the summary reads its notes.
                pool.put(batch, parsing, parsing)
            pool.close()
        except KeyboardInterrupt:
            # Ctrl+C: the batches being stored are finished (and counted), the waiting ones
            # dropped; every batch commits whole, so a second run imports the rest.
            summary.interrupted = True
            with _interrupts_held():
                pool.stop()
                if executor is not None:
                    executor.shutdown(cancel_futures=True)
                pool.abort()
    except BaseException:
        with _interrupts_held():
            pool.abort()
        raise
    finally:
        with _interrupts_held():
            if executor is not None:
                executor.shutdown(cancel_futures=True)
            for extra_conn in extra:
                extra_conn.close()
    return summary


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl+C is ignored while the import winds down (a few batches at most), so that a
    second one cannot leave the worker processes and writer threads half stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Counter:
    """Adds each stored batch to the summary (the writer pool calls it one at a time)."""

    def __init__(self, summary: ImportSummary, progress: Callable[[int], object] | None) -> None:
        self.summary = summary
        self.progress = progress

    def stored(self, parsing: Parsing, items: Sequence[Incoming], result: BatchResult) -> None:
        summary = self.summary
        for item, prepared, new in zip(items, parsing.result(), result.new, strict=False):
            if new and prepared.defects:
                summary.repaired.append((_where(item.location), prepared.defects))
        summary.imported += result.imported
        summary.already_present += result.already_present
        summary.contacts_created += result.contacts_created
        for ties in result.ties.values():
            summary.ties.update(code for code, _ in ties)
        for warning in result.warnings:
            if warning not in summary.warnings:
                summary.warnings.append(warning)
        if self.progress:
            self.progress(len(items))


def _where(location: Location | None) -> str:
    # An mbox file holds many messages: its number names one.
    if location is None:
        return "a message"
    return f"{location.mailbox} message {location.uid}" if location.uid else location.mailbox


def _present(path: Path) -> bool:
    """False only for a path that surely does not exist; one that cannot even be looked at
    (a name too long, a folder without access) is left to the import, which reports why."""
    try:
        return path.exists()
    except OSError:
        return True


def check_paths(paths: Sequence[str]) -> list[Path]:
    """The paths as Path objects. A path that does not exist is left in: the import reports
    it and goes on with the others. A ConfigError when none of them exists: there is nothing
    to import."""
    result = [Path(p) for p in paths]
    if result and not any(_present(path) for path in result):
        names = ", ".join(str(path) for path in result)
        raise ConfigError(f"{names}: no such file or folder",
                          hint="Give .eml files, Maildir folders or mbox files.")
    return result
