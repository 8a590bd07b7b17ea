"""``xtmail serve`` against real Dovecot, PostgreSQL and SMTP servers: accounts shared by two
instances (one killed mid-sync), the desktop's sync and the server on one account, the ERP's
queued mail sent once, one bad account among good ones, metrics and health."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.proxy import TcpProxy
from xtmail.sync.serve import (
    ServeOptions,
    Server,
)

SUBMIT = "SELECT xtbatch.submitEmailToBatch(%s, %s, %s, %s, %s, %s, now(), %s)"


def _xtmail() -> str:
    found = shutil.which("xtmail", path=str(Path(sys.executable).parent))
    assert found, "the xtmail console script is not installed in this environment"
    return found


def new_user(dovecot: DovecotServer, messages: int) -> ImapAccount:
    account = ImapAccount(f"serve-{secrets.token_hex(5)}", secrets.token_urlsafe(12))
    dovecot.add_user(account.user, account.password)
    if messages:
        dovecot.seed_maildir(account.user, "INBOX",
                             iter_generated_messages(messages, prefix=account.user))
    return account


def add_account(conn: psycopg.Connection, dovecot: DovecotServer, user: str, *,
                source: str, ref: str, host: str | None = None,
                port: int | None = None) -> str:
    host = host or dovecot.host
    conn.execute(
        """INSERT INTO xtmail.server_account (sa_host, sa_port, sa_user, sa_secret_source,
                                              sa_secret_ref, sa_ca_file)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (host, port or dovecot.imaps_port, user, source, ref, str(dovecot.ca_file)))
    return f"{user}@{host}"


def stored(conn: psycopg.Connection, key: str) -> tuple[int, int]:
    """(location rows of the account, distinct UIDs among them)."""
    row = conn.execute(
        "SELECT count(*), count(DISTINCT (loc_mailbox, loc_uid)) FROM xtmail.location "
        "WHERE loc_account = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def holders(conn: psycopg.Connection, keys: list[str]) -> dict[str, str | None]:
    """Account -> the application_name of the session holding its lock (None: free)."""
    found: dict[str, str | None] = {}
    for key in keys:
        row = conn.execute(
            """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                  AND l.classid = %s::bigint::oid AND l.objid = hashtext(%s)::oid""",
            (0x78746D61, key)).fetchone()
        found[key] = row[0] if row else None
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             step: float = 0.05) -> float:
    """Seconds it took ``predicate`` to hold; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(step)
    return time.monotonic() - start


def fast_options(**changes: object) -> ServeOptions:
    base: dict[str, object] = {
        "max_active": 2, "writers": 1, "batch_size": 10, "timeout": 10.0,
        "rebalance_every": 0.5, "poll_interval": 5.0, "retry_initial": 0.05,
        "retry_cap": 0.5, "failed_initial": 0.5, "failed_cap": 2.0, "outbox_every": 0.5}
    base.update(changes)
    return ServeOptions(**base)  # type: ignore[arg-type]


def connector(dsn: str) -> Callable[[str], psycopg.Connection]:
    def connect(application: str) -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, application_name=application)
    return connect


@pytest.fixture
def running() -> Iterator[Callable[[Server], Server]]:
    """Runs servers in threads; stops and joins them at the end of the test."""
    started: list[tuple[Server, threading.Thread]] = []

    def start(server: Server) -> Server:
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, _ in started:
        server.stop.set()
    for _, thread in started:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a server did not stop"


# -- two instances, one killed ---------------------------------------------------------------


def test_two_instances_share_the_accounts_and_one_killed_mid_sync_is_taken_over(
    db_dsn: str, dovecot: DovecotServer, tmp_path: Path
) -> None:
    count, per_account = 10, 50
    users = [new_user(dovecot, per_account) for _ in range(count)]
    # The secrets are in the services' environment only; the table names the variables.
    env = dict(os.environ)
    for i, user in enumerate(users):
        env[f"XT_SERVE_PW_{i}"] = user.password
    # Through a proxy that can hold the traffic: the kill comes while passes are under way.
    with TcpProxy(dovecot.host, dovecot.imaps_port) as proxy, \
            psycopg.connect(db_dsn, autocommit=True) as conn:
        command = [_xtmail(), "serve", "--dsn", db_dsn, "--rebalance-every", "0.5",
                   "--max-active", "2", "--batch-size", "2", "--workers", "0",
                   "--writers", "1", "--timeout", "10", "--retry-initial", "0.05",
                   "--failed-initial", "0.5", "--log-level", "debug"]
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = []
        for log in logs:
            with log.open("wb") as err:
                procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                              stderr=err))
        try:
            # Both run before there is any account, so that neither takes them all first.
            wait_for(lambda: conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                "'xtmail serve on %'").fetchone() == (2,), 30, "both instances connected")
            keys = []
            with conn.transaction():
                for i, user in enumerate(users):
                    keys.append(add_account(conn, dovecot, user.user, source="env",
                                            ref=f"XT_SERVE_PW_{i}", host=proxy.host,
                                            port=proxy.port))
            a_pid = procs[0].pid

            def owners() -> dict[str, str | None]:
                return holders(conn, keys)

            # Each instance keeps about half of the accounts.
            wait_for(lambda: sum(1 for h in owners().values()
                                 if h and h.endswith(f"pid {a_pid}")) == count // 2
                     and all(owners().values()), 30, "the accounts shared 5 and 5")
            a_keys = [k for k, h in owners().items() if h and h.endswith(f"pid {a_pid}")]

            def a_stored() -> int:
                return sum(stored(conn, k)[0] for k in a_keys)

            wait_for(lambda: a_stored() > 0, 30, "instance A stored something", step=0.01)
            proxy.stall()
            at_kill = a_stored()
            assert 0 < at_kill < len(a_keys) * per_account, "A is mid-sync when killed"
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            killed_at = time.monotonic()
            proxy.resume()
            b_pid = procs[1].pid
            wait_for(lambda: all(h and h.endswith(f"pid {b_pid}") for h in
                                 owners().values()), 15, "B holds every account")
            takeover = time.monotonic() - killed_at
            wait_for(lambda: all(stored(conn, k)[0] == per_account for k in keys), 60,
                     "every message stored")
            for key in keys:
                assert stored(conn, key) == (per_account, per_account), key
            eml = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
            assert eml == (count * per_account,)
            assert takeover < 15
            assert procs[1].poll() is None, "B still runs"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # B stopped cleanly on SIGTERM, with one event per line.
        assert procs[1].returncode == 0, logs[1].read_text()[-3000:]
        lines = logs[1].read_text().splitlines()
        assert any("event=account_taken" in line for line in lines)
        assert any("event=serve_stopped" in line for line in lines)
