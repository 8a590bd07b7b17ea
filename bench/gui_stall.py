"""Longest Qt event-loop stall while the host's mail sync imports N messages.

    python bench/gui_stall.py [N] [--workers W] [--threads] [--servers-nice N]

Offscreen QApplication on the loop ``make_event_loop`` makes, a 5 ms QTimer recording the
gaps between its ticks, and the path a real host application takes: preferences saved with
"Synchronize email while running application" ticked, then ``MailHost.start()``, which
opens the store and starts the sync of N realistic messages from a throwaway Dovecot into a
fresh database, with an Email tab open on a sales order (refreshed as its mail comes in).
The host runs the sync in a niced child process of its own (``SyncProcess``), which parses
in W worker processes; ``--threads`` makes it run in threads of this process instead
(``MailHost(sync_process=False)``: niced, a 1 ms interpreter switch interval, parsing in W
processes from ``parse_pool()``), the way it ran before.
``--servers-nice N`` runs the bench's PostgreSQL and Dovecot N steps lower (and their
sessions' autogroups), as servers on other machines would not compete with the desktop.

Same-run baseline: the same timer and open Email tab while ``xtmail sync --once`` imports
the same N messages (a second Dovecot user) into a second database from a child process,
at the sync threads' priority (``SYNC_NICENESS``) in a session (scheduling group) of its own,
lowered as ``SyncProcess`` lowers itself: the same sync in a process of its own.
The machine carries the same load, but the baseline's GUI has no host: no Email tab
refreshes as mail arrives, no signals from the sync. Prints
``gui_max_stall_ms`` (the longest gap minus the 5 ms interval; target <= 16),
``gui_p99_gap_ms``, ``gui_gaps_over_16ms``, then the baseline's ``baseline_max_stall_ms``,
``baseline_p99_gap_ms`` and ``baseline_gaps_over_16ms`` as its last lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import common  # noqa: F401  # puts the repo on sys.path
import psycopg
from PyQt6.QtCore import QSettings, QTimer
from PyQt6.QtWidgets import QApplication

from bench.common import fresh_database, postmaster_pid, renice_servers
from bench.messages import generate
from tests.helpers.dovecot import DovecotServer
from xtmail.app.host import MailHost, make_event_loop
from xtmail.sync.imap.credentials import KeyringCredentials
from xtmail.sync.imap.service import SYNC_NICENESS
from xtmail.sync.imap.settings import (
    AccountSettings,
    EmailSettings,
    MailAccount,
    SyncSettings,
    save_email_settings,
)
from xtmail.widgets.email_tab import EmailTab

USER, PASSWORD = "gui", "bench-password"
BASELINE_USER = "gui-baseline"
INTERVAL_MS = 5


class GapMeter:
    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last) * 1000)
        self.last = now


class Done:
    def __init__(self, n: int) -> None:
        self.n = n
        self.imported = 0
        self.future: asyncio.Future[int] | None = None
        self.errors: list[str] = []

    def finished(self, account: str, imported: int) -> None:
        self.imported += imported
        if self.imported >= self.n and self.future is not None and not self.future.done():
            self.future.set_result(self.imported)

    def failed(self, kind: str, message: str) -> None:
        self.errors.append(f"{kind}: {message}")
        if kind != "warning" and self.future is not None and not self.future.done():
            self.future.set_exception(RuntimeError(message))


def stall_lines(prefix: str, gaps: list[float]) -> list[str]:
    ordered = sorted(gaps)
    p99 = ordered[int(len(ordered) * 0.99)]
    return [f"{prefix}max_stall_ms: {max(ordered) - INTERVAL_MS:.1f}",
            f"{prefix}p99_gap_ms: {p99:.1f}",
            f"{prefix}gaps_over_16ms: {sum(1 for g in ordered if g - INTERVAL_MS > 16)}"]


def first_sales_order(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT min(cohead_id) FROM cohead").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--threads", action="store_true",
                        help="the host's sync in threads of this process, not a child")
    parser.add_argument("--servers-nice", type=int, default=0, metavar="N",
                        help="run the bench's PostgreSQL and Dovecot at this niceness, as "
                        "servers on other machines would not compete with the desktop")
    args = parser.parse_args()
    app = QApplication([])
    app.setQuitOnLastWindowClosed(False)
    loop = make_event_loop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-gui-") as folder, \
            fresh_database() as dsn:
        server = DovecotServer(folder)
        server.start()
        try:
            if args.servers_nice:
                renice_servers([server.master_pid, postmaster_pid(dsn)], args.servers_nice)
            server.add_user(USER, PASSWORD)
            server.seed_maildir(USER, "INBOX", generate(args.n))
            account = AccountSettings(host=server.host, user=USER, port=server.imaps_port,
                                      ca_file=str(server.ca_file), timeout=300)
            # What the user saved on the Email page of User Preferences.
            prefs = QSettings(os.path.join(folder, "erp.ini"), QSettings.Format.IniFormat)
            save_email_settings(prefs, EmailSettings(
                accounts=(MailAccount(account),),
                options=SyncSettings(sync_while_running=True, poll_interval=600)))
            credentials = KeyringCredentials()
            credentials.remember(account, PASSWORD)  # as typed once in the password dialog
            host = MailHost(dsn, prefs, credentials=credentials,
                            parse_workers=args.workers, sync_process=not args.threads)
            meter = GapMeter()
            done = Done(args.n)
            timer = QTimer()
            timer.setInterval(INTERVAL_MS)
            timer.timeout.connect(meter.tick)
            order = first_sales_order(dsn)

            async def run() -> float:
                done.future = asyncio.get_running_loop().create_future()
                tab = await open_and_measure(order, timer, meter)
                start = time.perf_counter()
                await host.start()
                host.registerTab(tab)
                service = host.service()
                assert service is not None
                service.syncFinished.connect(done.finished)
                service.errorOccurred.connect(done.failed)
                imported = await done.future
                elapsed = time.perf_counter() - start
                timer.stop()
                await host.aclose()
                tab.close()
                assert imported == args.n, (imported, done.errors)
                return elapsed

            elapsed = loop.run_until_complete(run())
            in_process = list(meter.gaps)
            server.add_user(BASELINE_USER, PASSWORD)
            server.seed_maildir(BASELINE_USER, "INBOX", generate(args.n))
            with fresh_database() as other_dsn:
                if args.servers_nice:
                    renice_servers([postmaster_pid(other_dsn)], args.servers_nice)
                baseline, baseline_elapsed = loop.run_until_complete(
                    out_of_process(server, other_dsn, args.workers, order, timer, meter))
        finally:
            server.stop()
    print(f"synced {args.n} messages in {elapsed:.1f} s ({args.n / elapsed:.0f}/s), "
          f"{len(in_process)} timer ticks, median gap {statistics.median(in_process):.1f} ms")
    print(f"baseline: xtmail sync in a child process, {baseline_elapsed:.1f} s, "
          f"{len(baseline)} timer ticks")
    for line in stall_lines("gui_", in_process) + stall_lines("baseline_", baseline):
        print(line)


async def open_and_measure(order: int, timer: QTimer, meter: GapMeter) -> EmailTab:
    """An Email tab shown on the order, then the timer started with no gaps recorded."""
    tab = EmailTab()
    tab.setDocument("S", order)
    tab.show()
    await asyncio.sleep(0.2)
    meter.gaps.clear()
    meter.last = time.perf_counter()
    timer.start()
    return tab


async def out_of_process(server: DovecotServer, dsn: str, workers: int, order: int,
                         timer: QTimer, meter: GapMeter) -> tuple[list[float], float]:
    """The timer's gaps while ``xtmail sync --once`` imports the baseline user's mail."""
    tab = await open_and_measure(order, timer, meter)
    start = time.perf_counter()
    # Popen and poll() return at once; the loop is qasync's, which offers no subprocess
    # transport.
    child = subprocess.Popen(  # noqa: ASYNC220
        ["nice", "-n", str(SYNC_NICENESS),
         os.path.join(os.path.dirname(sys.executable), "xtmail"), "sync", "--dsn", dsn,
         "--host", server.host, "--port", str(server.imaps_port), "--user", BASELINE_USER,
         "--password-env", "XTMAIL_BENCH_PASSWORD", "--ca-file", str(server.ca_file),
         "--workers", str(workers), "--quiet", "--timeout", "300"],
        env={**os.environ, "XTMAIL_BENCH_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # As SyncProcess places itself: a session, and so a scheduling group, of its own, lowered.
    with contextlib.suppress(OSError):
        Path(f"/proc/{child.pid}/autogroup").write_text(str(SYNC_NICENESS))  # noqa: ASYNC240
    while child.poll() is None:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    timer.stop()
    tab.close()
    if child.returncode != 0:
        error = child.stderr.read().decode() if child.stderr else ""
        raise RuntimeError(f"xtmail sync failed: {error}")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    assert row is not None and row[0] > 0, "the baseline sync imported nothing"
    return list(meter.gaps), elapsed


if __name__ == "__main__":
    main()
