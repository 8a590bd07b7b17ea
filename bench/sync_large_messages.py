"""Memory of a sync over large messages: batches are bounded by bytes, not only by count.

    python bench/sync_large_messages.py [N] [--size-mb S] [--batch-mb B]

Seeds N messages of about S MB each (default 300 x 2 MB) into a throwaway Dovecot and syncs
them into a fresh database with two parse processes and two writers. Prints as its last
lines ``messages_per_s`` and ``peak_rss_mb`` (the larger of this process's peak and a parse
process's). ``--batch-mb 0`` turns the byte bound off, to compare with count-only batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database, peak_rss_mb
from tests.helpers.dovecot import DovecotServer
from tests.helpers.mail import make_message
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

USER, PASSWORD = "bench", "bench-password"


def messages(count: int, size: int) -> Iterator[bytes]:
    line = "0123456789" * 7 + "abcdef\r\n"
    body = line * (size // len(line))
    for i in range(count):
        yield make_message(subject=f"Drawing set {i}", body=body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=300)
    parser.add_argument("--size-mb", type=float, default=2.0)
    parser.add_argument("--batch-mb", type=float, default=16.0)
    args = parser.parse_args()
    batch_bytes = int(args.batch_mb * 1024 * 1024) if args.batch_mb > 0 else 1 << 62
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-large-") as folder:
        server = DovecotServer(folder)
        server.start()
        executor = ProcessPoolExecutor(2)
        try:
            server.add_user(USER, PASSWORD)
            server.seed_maildir(USER, "INBOX", messages(args.n, int(args.size_mb * 1e6)))
            list(executor.map(abs, range(2)))  # workers up before timing
            account = AccountSettings(host=server.host, user=USER, port=server.imaps_port,
                                      ca_file=str(server.ca_file))
            with fresh_database() as dsn:
                sync = AccountSync(
                    SyncSettings(account=account),
                    StaticCredentials(Credential(AuthMethod.PASSWORD, PASSWORD)),
                    lambda: psycopg.connect(dsn, autocommit=True), executor=executor,
                    batch_bytes=batch_bytes,
                )
                start = time.perf_counter()
                result = sync.run_once()
                elapsed = time.perf_counter() - start
                sync.close()
                assert result.error is None and result.imported == args.n, result
        finally:
            executor.shutdown()
            server.stop()
    bound = f"at most {args.batch_mb} MB" if args.batch_mb > 0 else "unbounded in bytes"
    print(f"synced {args.n} messages of {args.size_mb} MB in {elapsed:.1f} s, batches {bound}")
    print(f"messages_per_s: {args.n / elapsed:.0f}")
    print(f"peak_rss_mb: {peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()
