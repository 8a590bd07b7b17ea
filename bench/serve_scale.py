"""``xtmail serve`` at scale: many accounts, one and two instances, against the raw fetch.

    python bench/serve_scale.py [--accounts 200] [--messages 500] [--instances 1 2]
                                [--max-active 4] [--workers 2]

Seeds ``--accounts`` Dovecot users with ``--messages`` realistic messages each
(bench/messages.py, a different seed per account), fetches every mailbox once with plain
imaplib (``UID FETCH 1:* BODY.PEEK[]``, one account after the other: the raw fetch rate of
this run, and Dovecot's indexes built before anything is timed). Then, for each count of
instances, a fresh database gets the accounts in ``xtmail.server_account`` while that many
``xtmail serve`` processes already run, and the clock runs until every message is stored.

Prints per run: total messages/s, per-account first-sync latency (from the accounts' insert
to the account's last message stored: median, 90th percentile, max), and the peak memory
of each instance (the resident memory of its process tree, parse processes included,
sampled every 0.2 s; and its main process's own peak, VmHWM). Last lines:
``serve_<n>_messages_per_s`` for each n and ``raw_fetch_messages_per_s``.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database
from bench.messages import generate
from tests.helpers.dovecot import DovecotServer

PASSWORD = "bench-password"  # noqa: S105  (a throwaway test server's)
POLL = 0.2


def raw_fetch(server: DovecotServer, users: list[str]) -> tuple[int, float]:
    count, elapsed = 0, 0.0
    for user in users:
        imap = imaplib.IMAP4_SSL(server.host, server.imaps_port,
                                 ssl_context=server.ssl_context())
        with imap:
            imap.login(user, PASSWORD)
            imap.select("INBOX", readonly=True)
            start = time.perf_counter()
            typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
            elapsed += time.perf_counter() - start
            assert typ == "OK"
            count += sum(1 for part in data if isinstance(part, tuple))
            del data
    return count, elapsed


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    tree, total, todo = _children(), 0, [pid]
    while todo:
        current = todo.pop()
        total += _status_kb(current, "VmRSS")
        todo.extend(tree.get(current, []))
    return total


def xtmail() -> str:
    found = shutil.which("xtmail", path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit("the xtmail console script is not installed (pip install -e .)")
    return found


def run(server: DovecotServer, users: list[str], messages: int, instances: int,
        args: argparse.Namespace, logs: Path) -> dict[str, object]:
    with fresh_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        env = dict(os.environ, BENCH_PW=PASSWORD)
        command = [xtmail(), "serve", "--dsn", dsn, "--rebalance-every", "1",
                   "--max-active", str(args.max_active), "--workers", str(args.workers),
                   "--poll-interval", "600"]
        procs = []
        for i in range(instances):
            with (logs / f"serve-{instances}-{i}.log").open("wb") as err:
                procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                              stderr=err))
        try:
            while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                               "LIKE 'xtmail serve on %'").fetchone() != (instances,):
                time.sleep(0.05)
            with conn.transaction():
                for user in users:
                    conn.execute(
                        """INSERT INTO xtmail.server_account (sa_host, sa_port, sa_user,
                               sa_secret_source, sa_secret_ref, sa_ca_file)
                           VALUES (%s, %s, %s, 'env', 'BENCH_PW', %s)""",
                        (server.host, server.imaps_port, user, str(server.ca_file)))
            start = time.perf_counter()
            done: dict[str, float] = {}
            peaks = [0] * instances
            total = len(users) * messages
            while len(done) < len(users):
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        raise SystemExit(f"instance {i} ended ({proc.returncode}); see "
                                         f"{logs}")
                    peaks[i] = max(peaks[i], tree_rss_kb(proc.pid))
                rows = conn.execute(
                    "SELECT loc_account, count(*) FROM xtmail.location GROUP BY 1").fetchall()
                now = time.perf_counter() - start
                for account, count in rows:
                    if count >= messages and account not in done:
                        done[account] = now
                time.sleep(POLL)
            elapsed = time.perf_counter() - start
            own_peaks = [_status_kb(p.pid, "VmHWM") for p in procs]
            stored = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
            assert stored is not None and stored[0] == total, (stored, total)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=120)
    latencies = sorted(done.values())
    return {
        "instances": instances, "messages": total, "seconds": elapsed,
        "messages_per_s": total / elapsed,
        "first_sync_p50": statistics.median(latencies),
        "first_sync_p90": latencies[int(0.9 * (len(latencies) - 1))],
        "first_sync_max": latencies[-1],
        "peak_tree_rss_mb": [p / 1024 for p in peaks],
        "peak_main_rss_mb": [p / 1024 for p in own_peaks],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-active", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-serve-") as folder:
        server = DovecotServer(folder)
        server.start()
        try:
            users = [f"bench{i:04d}" for i in range(args.accounts)]
            start = time.perf_counter()
            size = 0
            for i, user in enumerate(users):
                server.add_user(user, PASSWORD)
                batch = list(generate(args.messages, seed=1000 + i))
                size += sum(map(len, batch))
                server.seed_maildir(user, "INBOX", batch)
            print(f"seeded {args.accounts} accounts x {args.messages} messages, "
                  f"{size / 1e6:.0f} MB, {time.perf_counter() - start:.1f} s", flush=True)
            raw_count, raw_elapsed = raw_fetch(server, users)
            assert raw_count == args.accounts * args.messages
            raw_fetch(server, users[:1])  # nothing: the first pass built the indexes
            results = [run(server, users, args.messages, n, args, Path(folder))
                       for n in args.instances]
        finally:
            server.stop()
    for r in results:
        print(f"{r['instances']} instance(s): {r['messages']} messages in "
              f"{r['seconds']:.1f} s; first sync per account: median "
              f"{r['first_sync_p50']:.1f} s, p90 {r['first_sync_p90']:.1f} s, max "
              f"{r['first_sync_max']:.1f} s; peak memory per instance (process tree) "
              + ", ".join(f"{m:.0f}" for m in r["peak_tree_rss_mb"])  # type: ignore[attr-defined]
              + " MB (main process "
              + ", ".join(f"{m:.0f}" for m in r["peak_main_rss_mb"])  # type: ignore[attr-defined]
              + " MB)")
    for r in results:
        print(f"serve_{r['instances']}_messages_per_s: {r['messages_per_s']:.0f}")
    print(f"raw_fetch_messages_per_s: {raw_count / raw_elapsed:.0f}")


if __name__ == "__main__":
    main()
