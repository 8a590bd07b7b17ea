"""End-to-end import speed: parse, store and associate N generated messages.

    python bench/import_throughput.py [N] [--workers W] [--writers C]

Writes N realistic messages into a Maildir, imports it with the same code as
``xtmail import`` into a fresh database, and prints as its last lines
``messages_per_s: X`` and ``peak_rss_mb: Y``. Run it for two sizes to see that memory does
not grow with N.

The same run first measures a baseline on the same files: reading each one and parsing it
with Python's own email package (compat32, every part's payload decoded), in this one
process, and nothing else. ``ratio_to_baseline`` is the import's rate over that baseline's:
machines of the same kind differ by 2-3x in absolute speed, a ratio measured in one run
does not.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database, peak_rss_mb
from bench.messages import generate
from xtmail.sync.files import import_paths


def email_package_rate(maildir: Path) -> float:
    """Messages per second read from ``maildir`` and parsed by the standard library alone
    (compat32, each part's payload decoded): the same-run baseline."""
    files = [path for sub in ("new", "cur") for path in sorted((maildir / sub).iterdir())]
    start = time.perf_counter()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in message.walk():
            if not part.is_multipart():
                part.get_payload(decode=True)
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtmail-maildir-") as folder:
        box = mailbox.Maildir(Path(folder) / "mail", create=True)
        total = 0
        for raw in generate(args.n):
            box.add(raw)
            total += len(raw)
        print(f"generated {args.n} messages, {total / 1e6:.1f} MB")
        # Write the generated files out now: their writeback is not the import's work.
        os.sync()
        baseline = email_package_rate(Path(folder) / "mail")
        print(f"baseline_messages_per_s: {baseline:.0f}")
        with fresh_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
            start = time.perf_counter()
            summary = import_paths(
                conn, [Path(folder) / "mail"], workers=args.workers, writers=args.writers,
                connect=lambda: psycopg.connect(dsn, autocommit=True),
            )
            elapsed = time.perf_counter() - start
            ties = conn.execute("SELECT count(*) FROM xtbatch.emlassc").fetchone()
        assert summary.imported == args.n, summary
        print(f"imported {summary.imported}, contacts created {summary.contacts_created}, "
              f"ties {ties[0] if ties else 0}, {elapsed:.1f} s")
    print(f"ratio_to_baseline: {args.n / elapsed / baseline:.3f}")
    print(f"messages_per_s: {args.n / elapsed:.0f}")
    print(f"peak_rss_mb: {peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()
