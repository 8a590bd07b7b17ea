"""The highest sync ratio this machine allows, from each part's CPU cost measured alone.

    python bench/sync_ceiling.py [N] [--batch-size B]

``sync_throughput.py`` runs every part of a sync at once on the machine's cores: Dovecot,
the sync process, the parse processes and PostgreSQL. Its ratio to the raw fetch is bounded
by the CPU all of them need per message. This script measures each part's CPU per message
alone, in one run, on the same N generated messages (bench/messages.py):

* ``dovecot``: Dovecot's processes (imap, imap-login) during a raw ``UID FETCH 1:*
  BODY.PEEK[]`` of the mailbox (the median of three fetches);
* ``imap client``: this process's CPU for that fetch (TLS and imaplib's reading), which a
  sync pays too;
* ``prepare``: ``prepare()`` of every message in this process (the parse processes' work,
  without sending messages to them and back);
* ``database``: the PostgreSQL backend's CPU storing the prepared messages through one
  ``Importer`` (the sync's batches of B, with their IMAP locations), read from /proc;
* ``store client``: this process's CPU for that storing (psycopg, the writer's Python).

Their sum is a floor: a sync pays at least that per message, with no process hand-offs, no
waiting and no contention. ``ceiling_messages_per_s`` is the machine's cores divided by it,
and ``ratio_ceiling`` that over the same run's raw fetch rate: the ratio no change of the
pipeline alone can pass. Lines are ``name: value``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import cpu_seconds_by_program, cpu_used, fresh_database
from bench.messages import generate
from bench.sync_throughput import PASSWORD, RAW_RUNS, USER, raw_fetch, warm_up
from tests.helpers.dovecot import DovecotServer
from xtmail.sync.db.writer import Importer
from xtmail.sync.mail.prepare import prepare_raw
from xtmail.sync.values import ImportPolicy, Incoming, Location


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    return cpu_seconds_by_program((pid,))[str(pid)][1]


def fetch_costs(server: DovecotServer, n: int) -> tuple[float, float, float]:
    """Raw fetch: messages per second, Dovecot's and this process's CPU seconds per message
    (medians of ``RAW_RUNS`` fetches)."""
    rates, dovecot, client = [], [], []
    for _ in range(RAW_RUNS):
        before = cpu_seconds_by_program((os.getpid(),))
        count, elapsed, cpu = raw_fetch(server)
        time.sleep(0.3)  # the logged-out imap process ends and its master counts it
        used = cpu_used(before, cpu_seconds_by_program((os.getpid(),)))
        assert count == n, count
        rates.append(n / elapsed)
        # Everything under this process but itself: Dovecot's master and workers.
        dovecot.append(sum(s for name, s in used.items() if name != "this process") / n)
        client.append(cpu / n)
    return statistics.median(rates), statistics.median(dovecot), statistics.median(client)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20000)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()
    messages = list(generate(args.n))
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-imap-") as folder:
        server = DovecotServer(folder)
        server.start()
        try:
            server.add_user(USER, PASSWORD)
            server.seed_maildir(USER, "INBOX", iter(messages))
            warm_up(server)
            raw_rate, dovecot, imap_client = fetch_costs(server, args.n)
        finally:
            server.stop()

    size = args.batch_size
    batches = [[Incoming(raw, Location(USER, "INBOX", 1, start + k + 1))
                for k, raw in enumerate(messages[start:start + size])]
               for start in range(0, args.n, size)]
    cpu = time.thread_time()
    prepared = [prepare_raw([(item.raw, item.internal_date) for item in batch])
                for batch in batches]
    prepare_cpu = (time.thread_time() - cpu) / args.n

    with fresh_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        importer = Importer(conn, ImportPolicy())
        backend = conn.info.backend_pid
        server_cpu, cpu = process_cpu_seconds(backend), time.thread_time()
        for batch, ready in zip(batches, prepared, strict=True):
            importer.import_batch(batch, ready, source="imap")
        store_client = (time.thread_time() - cpu) / args.n
        database = (process_cpu_seconds(backend) - server_cpu) / args.n

    parts = {"dovecot": dovecot, "imap client": imap_client, "prepare": prepare_cpu,
             "database": database, "store client": store_client}
    floor = sum(parts.values())
    cores = len(os.sched_getaffinity(0))
    ceiling = cores / floor
    for name, seconds in parts.items():
        print(f"floor_cpu_ms[{name}]: {seconds * 1000:.3f}")
    print(f"floor_cpu_ms: {floor * 1000:.3f}")
    print(f"cores: {cores}")
    print(f"ceiling_messages_per_s: {ceiling:.0f}")
    print(f"raw_fetch_messages_per_s: {raw_rate:.0f}")
    print(f"ratio_ceiling: {ceiling / raw_rate:.3f}")


if __name__ == "__main__":
    main()
