"""Latency from an APPEND to the stored row, with the engine waiting in IDLE.

    python bench/idle_latency.py [--rounds 10]

A throwaway Dovecot and database; ``AccountSync.watch()`` runs in a thread as ``xtmail sync
--watch`` does. Each round APPENDs one message over an already logged-in connection and
polls the database for its row. Prints ``idle_latency_median_s`` and ``idle_latency_max_s``
as its last lines (target < 2 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database
from tests.helpers.dovecot import DovecotServer
from tests.helpers.mail import make_message
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

USER, PASSWORD = "idle", "bench-password"


def stored(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtmail.location").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-idle-") as folder, \
            fresh_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        server = DovecotServer(folder)
        server.start()
        stop = threading.Event()
        try:
            server.add_user(USER, PASSWORD)
            server.append(USER, PASSWORD, "INBOX", make_message(subject="first"))
            account = AccountSettings(host=server.host, user=USER, port=server.imaps_port,
                                      ca_file=str(server.ca_file))
            sync = AccountSync(
                SyncSettings(account=account, poll_interval=600),
                StaticCredentials(Credential(AuthMethod.PASSWORD, PASSWORD)),
                lambda: psycopg.connect(dsn, autocommit=True), stop=stop,
            )
            watcher = threading.Thread(target=sync.watch, name="watch")
            watcher.start()
            while stored(conn) < 1:
                time.sleep(0.01)
            with server.login(USER, PASSWORD) as imap:
                for i in range(args.rounds):
                    time.sleep(0.5)  # let the watcher settle in IDLE again
                    before = stored(conn)
                    start = time.perf_counter()
                    imap.append("INBOX", "()", None, make_message(subject=f"round {i}"))
                    while stored(conn) == before:
                        time.sleep(0.002)
                    latencies.append(time.perf_counter() - start)
            stop.set()
            watcher.join(30)
            sync.close()
        finally:
            stop.set()
            server.stop()
    print("latencies (s): " + " ".join(f"{x:.3f}" for x in latencies))
    print(f"idle_latency_median_s: {statistics.median(latencies):.3f}")
    print(f"idle_latency_max_s: {max(latencies):.3f}")


if __name__ == "__main__":
    main()
