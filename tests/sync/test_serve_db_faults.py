"""``xtmail serve`` on a database that freezes: every call is bounded, the service says what is
wrong, reports itself unhealthy, and goes on by itself when the database answers again,
losing and doubling nothing.

The PostgreSQL here is private to this module (the tests freeze it: SIGSTOP to the
postmaster and every backend, as a hung host or storage would leave it; the kernel still
accepts connections and acknowledges packets, so nothing but a client-side bound ends a
call). The service runs as its own process, as in production.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.postgres import TestDatabases, frozen
from xtmail.app.localpg import LocalPostgres
from xtmail.sync.db.watchdog import Watchdog

#: The service's bound on any one database call here (--db-timeout); short, so a freeze
#: costs the test little.
DB_TIMEOUT = 3.0


@pytest.fixture
def dsn(own_server: LocalPostgres) -> Iterator[str]:
    databases = TestDatabases(own_server)
    dsn = databases.create()
    yield dsn
    databases.drop(dsn)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def health(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:  # noqa: S310
            json.loads(answer.read())
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def stored(dsn: str, key: str) -> tuple[int, int, int]:
    """(locations of the account, distinct UIDs among them, messages in the database)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (loc_mailbox, loc_uid)), "
            "(SELECT count(*) FROM xtbatch.eml) FROM xtmail.location WHERE loc_account = %s",
            (key,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_a_frozen_database_is_reported_unhealthy_and_the_service_recovers_when_it_thaws(
    own_server: LocalPostgres, dsn: str, dovecot: DovecotServer, tmp_path: Path
) -> None:
    user = ImapAccount(f"frozen-{secrets.token_hex(4)}", secrets.token_urlsafe(12))
    dovecot.add_user(user.user, user.password)
    dovecot.seed_maildir(user.user, "INBOX", iter_generated_messages(20, prefix=user.user))
    key = f"{user.user}@{dovecot.host}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO xtmail.server_account (sa_host, sa_port, sa_user, sa_secret_source,
                                                  sa_secret_ref, sa_ca_file)
               VALUES (%s, %s, %s, 'command', %s, %s)""",
            (dovecot.host, dovecot.imaps_port, user.user, f"printf '%s\\n' '{user.password}'",
             str(dovecot.ca_file)))
    xtmail = shutil.which("xtmail", path=str(Path(sys.executable).parent))
    assert xtmail
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [xtmail, "serve", "--dsn", dsn, "--listen", "127.0.0.1:0",
             "--db-timeout", str(DB_TIMEOUT), "--rebalance-every", "0.5", "--workers", "0",
             "--writers", "1", "--batch-size", "5", "--timeout", "10",
             "--retry-initial", "0.05", "--failed-initial", "0.5", "--failed-cap", "2",
             "--poll-interval", "5"],
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        def port() -> int | None:
            found = re.search(r"event=listening host=\S+ port=(\d+)", log.read_text())
            return int(found[1]) if found else None

        wait_for(lambda: port() is not None, 30, "the service listening")
        base = f"http://127.0.0.1:{port()}"
        wait_for(lambda: health(base) == 200 and stored(dsn, key)[0] == 20, 30,
                 "the first pass stored and the service healthy")

        with frozen(own_server):
            # Mail arrives while the database is frozen.
            dovecot.seed_maildir(user.user, "INBOX",
                                 iter_generated_messages(7, prefix=f"{user.user}-frozen"))
            took = wait_for(lambda: health(base) == 503, 30, "health to say unhealthy")
            wait_for(lambda: "event=database_not_answering" in log.read_text()
                     and "event=database_unavailable" in log.read_text(), 30,
                     "the service to say the database does not answer")
            assert proc.poll() is None, "the service still runs"
        assert took < 3 * DB_TIMEOUT + 10
        text = log.read_text()
        assert f"did not answer within {DB_TIMEOUT:g} s" in text
        assert "check that it runs and is not frozen or overloaded" in text

        # Thawed: healthy again, and the mail that came meanwhile is stored, once.
        wait_for(lambda: health(base) == 200, 60, "health to recover")
        wait_for(lambda: stored(dsn, key)[0] >= 27, 60, "the new mail stored")
        time.sleep(1.0)  # a few more looks: nothing doubled
        assert stored(dsn, key) == (27, 27, 27)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the service did not stop on SIGTERM: " + log.read_text()[-3000:])
    assert code == 0, log.read_text()[-3000:]


def test_the_watchdog_cuts_a_call_the_frozen_database_never_answers_and_no_busy_one(
    own_server: LocalPostgres, dsn: str
) -> None:
    cut: list[str] = []
    watchdog = Watchdog(1.0, on_cut=lambda label, _: cut.append(label))
    with psycopg.connect(dsn, autocommit=True) as busy_conn, \
            psycopg.connect(dsn, autocommit=True) as frozen_conn:
        try:
            busy = watchdog.watch(busy_conn, "busy")
            # Many short statements, together far longer than the bound: none is cut.
            started = time.monotonic()
            while time.monotonic() - started < 2.5:
                busy.execute("SELECT pg_sleep(0.01)")
            assert cut == [] and not watchdog.was_cut(busy)
            # A statement longer than the server's statement_timeout (80 % of the bound) is
            # stopped by the running server itself, with its own error.
            with pytest.raises(psycopg.errors.QueryCanceled):
                busy.execute("SELECT pg_sleep(5)")
            assert cut == []
            watchdog.watch(frozen_conn, "frozen")
            with frozen(own_server):
                started = time.monotonic()
                with pytest.raises(psycopg.OperationalError):
                    frozen_conn.execute("SELECT 1")
                took = time.monotonic() - started
            assert cut == ["frozen"] and watchdog.was_cut(frozen_conn)
            assert 1.0 <= took < 3.0
        finally:
            watchdog.close()
