"""How long a sync pass over an unchanged folder takes, for 100,000 and 1,000 messages.

    python bench/noop_sync.py [--sizes 100000 1000] [--full]

Each size gets its own Dovecot user and folder. The folder state is primed as a finished
sync leaves it (UIDVALIDITY, last UID, HIGHESTMODSEQ from the server) — or, with
``--full``, by really synchronizing the folder first (slow for 100,000). Then it times:
a pass on a connected engine (what ``--watch`` and the service do), a pass including
connect and login (what a cron ``--once`` does), and a pass after a flag change (CONDSTORE
says "changed", but UIDNEXT still says "nothing new": still STATUS only). Prints
``noop_sync_<N>_s`` (connected, median of 5) for each size as its last lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database
from tests.helpers.dovecot import DovecotServer, iter_generated_messages
from xtmail.sync.db.folder_state import FolderState, write_state
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.connection import ImapConnection
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

PASSWORD = "bench-password"  # noqa: S105 (a throwaway test server)


def timed(sync: AccountSync) -> float:
    start = time.perf_counter()
    result = sync.run_once()
    elapsed = time.perf_counter() - start
    assert result.error is None, result.error
    assert result.imported == 0, result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000])
    parser.add_argument("--full", action="store_true", help="prime by really syncing")
    args = parser.parse_args()
    figures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-noop-") as folder, \
            fresh_database() as dsn:
        server = DovecotServer(folder)
        server.start()
        try:
            for size in args.sizes:
                user = f"noop{size}"
                server.add_user(user, PASSWORD)
                start = time.perf_counter()
                server.seed_maildir(user, "INBOX", iter_generated_messages(size, prefix=user))
                account = AccountSettings(host=server.host, user=user, port=server.imaps_port,
                                          ca_file=str(server.ca_file))
                credentials = StaticCredentials(Credential(AuthMethod.PASSWORD, PASSWORD))
                # The first SELECT of a fresh 100,000-message Maildir makes Dovecot build its
                # index, which takes longer than the default 30 s network timeout.
                slow = dataclasses.replace(account, timeout=900.0)
                with ImapConnection(slow, credentials.credential(account)) as imap:
                    status = imap.examine("INBOX")
                took = time.perf_counter() - start
                print(f"{size}: seeded and indexed in {took:.1f} s", flush=True)

                def connect() -> psycopg.Connection:
                    return psycopg.connect(dsn, autocommit=True)

                settings = SyncSettings(account=account)
                if args.full:
                    primer = AccountSync(settings, credentials, connect)
                    assert primer.run_once().imported == size
                    primer.close()
                else:
                    with connect() as conn, conn.transaction():
                        write_state(conn, account.key, "INBOX", FolderState(
                            status.uidvalidity, status.uidnext - 1, status.highestmodseq))

                print(f"{size}: state primed", flush=True)
                cold = []
                for _ in range(3):
                    sync = AccountSync(settings, credentials, connect)
                    cold.append(timed(sync))
                    sync.close()
                sync = AccountSync(settings, credentials, connect)
                timed(sync)  # connects
                warm = [timed(sync) for _ in range(5)]
                # A flag change moves HIGHESTMODSEQ but not UIDNEXT.
                with server.login(user, PASSWORD, timeout=900) as imap:
                    imap.select("INBOX")
                    imap.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
                flagged = timed(sync)
                sync.close()
                print(f"{size}: connected pass {statistics.median(warm) * 1000:.1f} ms, "
                      f"with connect and login {statistics.median(cold) * 1000:.1f} ms, "
                      f"after a flag change {flagged * 1000:.1f} ms")
                figures.append(f"noop_sync_{size}_s: {statistics.median(warm):.4f}")
                figures.append(f"noop_sync_{size}_with_login_s: {statistics.median(cold):.4f}")
        finally:
            server.stop()
    for line in figures:
        print(line)


if __name__ == "__main__":
    main()
