"""Longest Qt event-loop stall while SyncService imports N messages in the same process.

    python bench/gui_stall.py [N] [--workers W] [--nice 10]

Offscreen QApplication on a qasync loop, a 5 ms QTimer recording the gaps between its
ticks, and a ``SyncService`` synchronizing N realistic messages from a throwaway Dovecot
into a fresh database. Parsing goes to W worker processes from ``parse_pool()`` (spawned,
niced; 0: parsed in the sync thread, contending with the GUI thread for the interpreter
lock). Prints ``gui_max_stall_ms`` (the
longest gap minus the 5 ms interval; target < 50) and ``gui_p99_gap_ms`` as its last lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import Executor

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import common  # noqa: F401  # puts the repo on sys.path
import qasync
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

from bench.common import fresh_database
from bench.messages import generate
from tests.helpers.dovecot import DovecotServer
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.service import SyncService, parse_pool
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

USER, PASSWORD = "gui", "bench-password"
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
    def __init__(self) -> None:
        self.future: asyncio.Future[int] | None = None
        self.errors: list[str] = []

    def finished(self, account: str, imported: int) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(imported)

    def failed(self, kind: str, message: str) -> None:
        self.errors.append(f"{kind}: {message}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--nice", type=int, default=10, help="niceness of the parse workers")
    args = parser.parse_args()
    app = QApplication([])
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-gui-") as folder, \
            fresh_database() as dsn:
        server = DovecotServer(folder)
        server.start()
        executor: Executor | None = None
        if args.workers:
            executor = parse_pool(args.workers, niceness=args.nice)
            list(executor.map(abs, range(args.workers * 4)))
        try:
            server.add_user(USER, PASSWORD)
            server.seed_maildir(USER, "INBOX", generate(args.n))
            account = AccountSettings(host=server.host, user=USER, port=server.imaps_port,
                                      ca_file=str(server.ca_file), timeout=300)
            service = SyncService(
                SyncSettings(account=account, poll_interval=600),
                StaticCredentials(Credential(AuthMethod.PASSWORD, PASSWORD)), dsn,
                parse_executor=executor,
            )
            meter = GapMeter()
            done = Done()
            service.syncFinished.connect(done.finished)
            service.errorOccurred.connect(done.failed)
            timer = QTimer()
            timer.setInterval(INTERVAL_MS)
            timer.timeout.connect(meter.tick)

            async def run() -> float:
                done.future = asyncio.get_running_loop().create_future()
                await asyncio.sleep(0.2)
                meter.gaps.clear()
                meter.last = time.perf_counter()
                timer.start()
                start = time.perf_counter()
                service.start()
                imported = await done.future
                elapsed = time.perf_counter() - start
                timer.stop()
                await service.aclose()
                assert imported == args.n, (imported, done.errors)
                return elapsed

            elapsed = loop.run_until_complete(run())
        finally:
            if executor is not None:
                executor.shutdown()
            server.stop()
    gaps = sorted(meter.gaps)
    p99 = gaps[int(len(gaps) * 0.99)]
    print(f"synced {args.n} messages in {elapsed:.1f} s ({args.n / elapsed:.0f}/s), "
          f"{len(gaps)} timer ticks, median gap {statistics.median(gaps):.1f} ms")
    print(f"gui_max_stall_ms: {max(gaps) - INTERVAL_MS:.1f}")
    print(f"gui_p99_gap_ms: {p99:.1f}")


if __name__ == "__main__":
    main()
