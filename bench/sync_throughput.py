"""IMAP sync speed against the raw fetch speed of the same mailbox.

    python bench/sync_throughput.py [N] [--workers W] [--writers C] [--batch-size B] [--durable]
                                    [--statements]

Seeds N realistic messages (bench/messages.py) into a throwaway Dovecot, times a full
``AccountSync`` pass (fetch, parse in W processes, store with C connections, associate)
into a fresh database, then a plain imaplib ``UID FETCH 1:* BODY.PEEK[]`` of the same
mailbox (the floor; three times, the median counts). ``peak_rss_mb`` is the process's
peak during the sync, before that raw fetch (which holds the whole mailbox in memory). It
also prints the CPU seconds each program (PostgreSQL, Dovecot, Python) used during the
sync, from /proc, counting only this process, its children and its own PostgreSQL server,
and the CPU milliseconds per message, and the machine's idle CPU share at the start, in the
middle and at the end of the pass. ``--statements`` adds the database's milliseconds per
statement and trigger function (pg_stat_statements; they include lock waits). ``--durable``
uses a database server that flushes commits to disk, as a production server does. Prints
as its last lines ``sync_messages_per_s``, ``raw_fetch_messages_per_s`` and ``ratio``
(target >= 0.3).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import (
    cpu_seconds_by_program,
    cpu_used,
    fresh_database,
    peak_rss_mb,
    postmaster_pid,
    statement_lines,
)
from bench.messages import generate
from tests.helpers.dovecot import DovecotServer
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

USER, PASSWORD = "bench", "bench-password"
RAW_RUNS = 3


def raw_fetch(server: DovecotServer) -> tuple[int, float, float]:
    """Messages fetched, seconds, and CPU seconds of this process for them."""
    imap = imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=server.ssl_context())
    with imap:  # logs out
        imap.login(USER, PASSWORD)
        imap.select("INBOX", readonly=True)
        start, cpu = time.perf_counter(), time.process_time()
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert typ == "OK"
        count = sum(1 for part in data if isinstance(part, tuple))
        del data
    return count, elapsed, cpu


class IdleSampler:
    """The machine's idle share of its CPUs, every ``step`` seconds, from /proc/stat: where
    a pass leaves cores unused (filling and draining the pipeline)."""

    def __init__(self, step: float = 0.1) -> None:
        self.step = step
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    def _run(self) -> None:
        idle, total = self._read()
        while not self._stop.wait(self.step):
            now_idle, now_total = self._read()
            if now_total > total:
                self.samples.append((now_idle - idle) / (now_total - total))
            idle, total = now_idle, now_total

    def __enter__(self) -> IdleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def lines(self) -> list[str]:
        """Idle share in the first and last half second and in between."""
        edge = max(1, round(0.5 / self.step))
        if len(self.samples) < 3 * edge:
            return []
        parts = {"first_0.5s": self.samples[:edge], "middle": self.samples[edge:-edge],
                 "last_0.5s": self.samples[-edge:]}
        return [f"cpu_idle_share[{name}]: {statistics.mean(values):.2f}"
                for name, values in parts.items()]


def warm_up(server: DovecotServer) -> None:
    imap = imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=server.ssl_context())
    with imap:
        imap.login(USER, PASSWORD)
        imap.select("INBOX", readonly=True)
        imap.uid("SEARCH", "ALL")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20000)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--statements", action="store_true",
                        help="also print the database's time per statement and trigger "
                        "function during the sync (pg_stat_statements)")
    parser.add_argument("--durable", action="store_true",
                        help="a database server that flushes commits to disk (production's "
                        "settings) instead of the fast throwaway one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-imap-") as folder:
        server = DovecotServer(folder)
        server.start()
        try:
            server.add_user(USER, PASSWORD)
            start = time.perf_counter()
            sizes: list[int] = []

            def counted() -> Iterator[bytes]:
                for raw in generate(args.n):
                    sizes.append(len(raw))
                    yield raw

            server.seed_maildir(USER, "INBOX", counted())
            executor = None
            print(f"seeded {args.n} messages, {sum(sizes) / 1e6:.1f} MB, "
                  f"{time.perf_counter() - start:.1f} s")
            # Warm-up: the first SELECT of a fresh Maildir builds Dovecot's index; neither
            # measured run should pay for it.
            warm_up(server)

            account = AccountSettings(host=server.host, user=USER, port=server.imaps_port,
                                      ca_file=str(server.ca_file))
            settings = SyncSettings(account=account, batch_size=args.batch_size)
            executor = ProcessPoolExecutor(args.workers) if args.workers else None
            statements: list[str] = []
            with fresh_database(durable=args.durable, statements=args.statements) as dsn:
                if executor is not None:
                    # Start the workers before timing, as a long-running service has them.
                    list(executor.map(abs, range(args.workers)))
                sync = AccountSync(
                    settings, StaticCredentials(Credential(AuthMethod.PASSWORD, PASSWORD)),
                    lambda: psycopg.connect(dsn, autocommit=True), executor=executor,
                    writers=args.writers,
                )
                # Only this process, its children (parse processes, Dovecot) and the
                # benchmark's own PostgreSQL: other work on the machine stays out.
                roots = (os.getpid(), postmaster_pid(dsn))
                cpu_before = cpu_seconds_by_program(roots)
                start = time.perf_counter()
                with IdleSampler() as idle:
                    result = sync.run_once()
                elapsed = time.perf_counter() - start
                cpu = cpu_used(cpu_before, cpu_seconds_by_program(roots))
                sync.close()
                assert result.error is None, result.error
                assert result.imported == args.n, result
                if args.statements:
                    statements = statement_lines(dsn)
            # Taken before the raw fetch, which holds the whole mailbox in memory at once.
            sync_peak = peak_rss_mb()
            # The floor is measured three times and the median taken: on a shared machine
            # one fetch of a second or so varies by 10 % from run to run.
            raw_runs = [raw_fetch(server) for _ in range(RAW_RUNS)]
            assert all(count == args.n for count, _, _ in raw_runs), raw_runs
            raw_fetch_count = args.n
            raw_elapsed = statistics.median(elapsed for _, elapsed, _ in raw_runs)
            print(f"raw fetch: {args.n} messages in "
                  + ", ".join(f"{elapsed:.2f}" for _, elapsed, _ in raw_runs)
                  + f" s (median {raw_elapsed:.2f} s); client CPU "
                  + ", ".join(f"{cpu:.2f}" for _, _, cpu in raw_runs) + " s")
        finally:
            if executor is not None:
                executor.shutdown()
            server.stop()
    sync_rate = args.n / elapsed
    raw_rate = raw_fetch_count / raw_elapsed
    print(f"sync: {args.n} messages in {elapsed:.1f} s with {args.workers} parsing processes "
          f"and {args.writers} writers")
    # Where the CPU went during the sync (python: this process and the parse processes).
    print("cpu seconds during the sync: "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items()))
    for name, seconds in cpu.items():
        print(f"cpu_ms_per_message[{name}]: {seconds * 1000 / args.n:.3f}")
    print(f"cpu_ms_per_message: {sum(cpu.values()) * 1000 / args.n:.3f}")
    for line in idle.lines():
        print(line)
    for line in statements:
        print(line)
    print(f"peak_rss_mb: {sync_peak:.0f}")
    print(f"sync_messages_per_s: {sync_rate:.0f}")
    print(f"raw_fetch_messages_per_s: {raw_rate:.0f}")
    print(f"ratio: {sync_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()
