"""``xtmail serve`` against real Dovecot, PostgreSQL and SMTP servers: accounts shared by two
instances (one killed mid-sync), the desktop's sync and the server on one account, the ERP's
queued mail sent once, one bad account among good ones, metrics and health."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.postgres import TestDatabases
from tests.helpers.proxy import TcpProxy
from tests.helpers.smtp import SmtpServer
from tests.helpers.xtuple import create_user
from xtmail.app.cli import main
from xtmail.sync.imap.account import AccountSync, Backoff
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.folder_sync import SyncListener
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings
from xtmail.sync.outgoing import SmtpSettings
from xtmail.sync.serve import SecretCredentials, ServeOptions, Server, start_http

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
    count, per_account = 50, 50
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
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'xtmail serve on %'").fetchone() == (2,), 30,
                "both instances connected")
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
                     and all(owners().values()), 30, "the accounts shared half and half")
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
            wait_for(lambda: all(stored(conn, k)[0] == per_account for k in keys), 120,
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


# -- the desktop and the server on one account -------------------------------------------------


class Statuses(SyncListener):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def status(self, text: str) -> None:
        self.seen.append(text)


def desktop_sync(dsn: str, dovecot: DovecotServer, user: ImapAccount,
                 listener: SyncListener | None = None) -> AccountSync:
    """The desktop's engine as the GUI's SyncService makes it: its own lock, on its own
    database connection."""
    settings = SyncSettings(account=AccountSettings(
        host=dovecot.host, user=user.user, port=dovecot.imaps_port,
        ca_file=str(dovecot.ca_file), timeout=10.0))
    return AccountSync(
        settings, StaticCredentials(Credential(AuthMethod.PASSWORD, user.password)),
        lambda: psycopg.connect(dsn, autocommit=True, application_name="xtmail desktop"),
        listener=listener, backoff=Backoff(initial=0.05, cap=0.5), retry_limit=5)


def imported_by(server: Server, key: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "xtmail_serve_messages_imported_total", {"account": key})
    return value or 0.0


def test_the_desktop_skips_an_account_the_server_synchronizes_and_says_who_does(
    db_dsn: str, dovecot: DovecotServer, running: Callable[[Server], Server]
) -> None:
    user = new_user(dovecot, 30)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        key = add_account(conn, dovecot, user.user, source="env", ref="SHARED_PW")
        # No polling within the test: new mail must come by IDLE.
        server = running(Server(connector(db_dsn), options=fast_options(poll_interval=600),
                                environ={"SHARED_PW": user.password},
                                instance="mailhost1 pid 7"))
        wait_for(lambda: stored(conn, key)[0] == 30, 30, "the server's first pass")
        dovecot.seed_maildir(user.user, "INBOX",
                             iter_generated_messages(5, prefix=f"{user.user}-later"))
        statuses = Statuses()
        desktop = desktop_sync(db_dsn, dovecot, user, statuses)
        try:
            result = desktop.run_once()
        finally:
            desktop.close()
        assert result.held_by == "the mail server on host mailhost1 pid 7"
        assert result.error is None and result.imported == 0 and result.folders == []
        assert "Synchronized by the mail server on host mailhost1 pid 7" in statuses.seen
        # The server imports the new mail, woken by IDLE.
        wait_for(lambda: stored(conn, key)[0] == 35, 30, "the new mail, through IDLE")
        assert stored(conn, key) == (35, 35)
        assert imported_by(server, key) == 35


def test_the_server_skips_an_account_the_desktop_synchronizes_until_it_stops(
    db_dsn: str, dovecot: DovecotServer
) -> None:
    user = new_user(dovecot, 20)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        key = add_account(conn, dovecot, user.user, source="env", ref="SHARED_PW")
        desktop = desktop_sync(db_dsn, dovecot, user)
        try:
            assert desktop.run_once().imported == 20
            dovecot.seed_maildir(user.user, "INBOX",
                                 iter_generated_messages(5, prefix=f"{user.user}-later"))
            server = Server(connector(db_dsn), options=fast_options(),
                            environ={"SHARED_PW": user.password})
            summary = server.run_once()
            assert list(summary.held) == [key] and not summary.synced
            assert summary.held[key].startswith("xtmail desktop (database user ")
            assert stored(conn, key) == (20, 20)
        finally:
            desktop.close()  # the desktop stops: its connection, and its lock, go
        summary = Server(connector(db_dsn), options=fast_options(),
                         environ={"SHARED_PW": user.password}).run_once()
        assert summary.synced[key].imported == 5 and not summary.held
        assert stored(conn, key) == (25, 25)


def test_the_desktop_and_the_server_started_at_once_only_one_synchronizes(
    db_dsn: str, dovecot: DovecotServer, running: Callable[[Server], Server]
) -> None:
    total = 200
    user = new_user(dovecot, total)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        key = add_account(conn, dovecot, user.user, source="env", ref="SHARED_PW")
        desktop = desktop_sync(db_dsn, dovecot, user)
        server = Server(connector(db_dsn), options=fast_options(batch_size=10),
                        environ={"SHARED_PW": user.password})
        try:
            running(server)
            result = desktop.run_once()
            wait_for(lambda: stored(conn, key)[0] == total, 30, "every message stored")
            assert stored(conn, key) == (total, total)
            assert conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (total,)
            if result.held_by is None:
                assert result.imported == total and imported_by(server, key) == 0
            else:
                assert result.held_by.startswith("the mail server on host ")
                assert result.imported == 0
                wait_for(lambda: imported_by(server, key) == total, 30, "server's count")
        finally:
            desktop.close()


# -- one bad account among good ones; the secret sources -----------------------------------------


def test_serve_once_syncs_the_good_accounts_and_reports_the_bad_ones(
    db_dsn: str, dovecot: DovecotServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [new_user(dovecot, 10) for _ in range(3)]
    wrong, absent = new_user(dovecot, 10), new_user(dovecot, 10)
    secret_file = tmp_path / "pw"
    secret_file.write_text(good[1].password + "\n")
    monkeypatch.setenv("GOOD_PW", good[0].password)
    monkeypatch.setenv("WRONG_PW", "not-the-password")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        keys = [add_account(conn, dovecot, good[0].user, source="env", ref="GOOD_PW"),
                add_account(conn, dovecot, good[1].user, source="file", ref=str(secret_file)),
                add_account(conn, dovecot, good[2].user, source="command",
                            ref=f"printf '%s\\n' '{good[2].password}'")]
        bad = [add_account(conn, dovecot, wrong.user, source="env", ref="WRONG_PW"),
               add_account(conn, dovecot, absent.user, source="env", ref="UNSET_PW_VAR")]
        disabled = new_user(dovecot, 10)
        add_account(conn, dovecot, disabled.user, source="env", ref="GOOD_PW")
        conn.execute("UPDATE xtmail.server_account SET sa_enabled = false WHERE sa_user = %s",
                     (disabled.user,))
        code = main(["serve", "--dsn", db_dsn, "--once", "--workers", "0",
                     "--retry-initial", "0.05", "--timeout", "10"])
        out = capsys.readouterr().out
        assert code == 1, out
        for key in keys:
            assert stored(conn, key) == (10, 10)
            assert f"{key}: 10 new, 0 already stored" in out
        for key in bad:
            assert stored(conn, key) == (0, 0)
        assert f"{bad[0]}: failed: " in out and "refused the login" in out.lower()
        assert f"{bad[1]}: failed: The environment variable UNSET_PW_VAR" in out
        assert "accounts: 3 synchronized, 0 held elsewhere, 2 failed" in out
        assert stored(conn, f"{disabled.user}@{dovecot.host}") == (0, 0)


def test_ordinary_users_cannot_read_the_server_accounts(
    db_dsn: str, databases: TestDatabases
) -> None:
    with databases.admin() as admin:
        create_user(admin, "serve_clerk")
    clerk = psycopg.conninfo.make_conninfo(db_dsn, user="serve_clerk")
    with psycopg.connect(clerk, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT sa_secret_ref FROM xtmail.server_account")


def test_secret_credentials_read_the_service_environment_a_file_or_a_command(
    tmp_path: Path
) -> None:
    account = AccountSettings(host="h", user="u")
    (tmp_path / "imap-u").write_text("from-file\nignored\n")
    environ = {"PW": "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert SecretCredentials("env", "PW", environ=environ).credential(account).secret == \
        "from-env"
    # A relative file name is one of systemd's credentials (LoadCredential=).
    assert SecretCredentials("file", "imap-u", environ=environ).credential(
        account).secret == "from-file"
    assert SecretCredentials("command", "echo from-command", environ=environ).credential(
        account).secret == "from-command"
    assert "from-env" not in repr(SecretCredentials("env", "PW", environ=environ))


# -- the ERP's queued mail -------------------------------------------------------------------


def test_a_queued_erp_mail_is_sent_once_by_serve_and_recorded(
    db_dsn: str, databases: TestDatabases, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    with databases.admin() as admin:
        create_user(admin, "serve_clerk")
    clerk = psycopg.conninfo.make_conninfo(db_dsn, user="serve_clerk")
    with SmtpServer(tmp_path) as smtp, psycopg.connect(db_dsn, autocommit=True) as conn:
        # An ordinary user queues it, as xTuple's alarms and EDI profiles do.
        with psycopg.connect(clerk, autocommit=True) as queuing:
            row = queuing.execute(SUBMIT, ("Sales <sales@ourco.example>",
                                           "Ada <ada@example.com>", "", "Invoice 1001",
                                           "Please find the invoice.", None, False)
                                  ).fetchone()
        assert row is not None
        command = ["serve", "--dsn", db_dsn, "--once", "--workers", "0", "--smtp-host",
                   smtp.host, "--smtp-port", str(smtp.port), "--smtp-security", "none"]
        assert main(command) == 0
        assert "outbox: 1 sent, 0 not sent" in capsys.readouterr().out
        (received,) = smtp.received
        assert received.rcpt_tos == ("ada@example.com",)
        state = conn.execute("SELECT ob_state, ob_eml_id FROM xtmail.outbox WHERE ob_id = %s",
                             (row[0],)).fetchone()
        assert state is not None and state[0] == "sent" and state[1] is not None
        recorded = conn.execute("SELECT eml_subj FROM xtbatch.eml WHERE eml_id = %s",
                                (state[1],)).fetchone()
        assert recorded == ("Invoice 1001",)
        # Again: nothing is sent twice.
        assert main(command) == 0
        assert len(smtp.received) == 1


def test_the_running_service_sends_the_queue_and_serves_health_and_metrics(
    db_dsn: str, dovecot: DovecotServer, tmp_path: Path,
    running: Callable[[Server], Server]
) -> None:
    user = new_user(dovecot, 12)
    with SmtpServer(tmp_path) as smtp, psycopg.connect(db_dsn, autocommit=True) as conn:
        key = add_account(conn, dovecot, user.user, source="env", ref="PW")
        server = Server(connector(db_dsn), options=fast_options(),
                        smtp=SmtpSettings(smtp.host, smtp.port, security="none", timeout=5),
                        environ={"PW": user.password})
        http = start_http(server, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{http.server_address[1]}"
        try:
            with pytest.raises(urllib.error.HTTPError) as before:
                urllib.request.urlopen(f"{base}/healthz", timeout=5)  # noqa: S310
            assert before.value.code == 503  # not started: no lease yet
            before.value.close()
            running(server)
            conn.execute(SUBMIT, ("Sales <sales@ourco.example>", "ada@example.com", "",
                                  "Hello", "Body", None, False))
            wait_for(lambda: len(smtp.received) == 1 and stored(conn, key)[0] == 12, 30,
                     "the mail sent and the account synchronized")
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:  # noqa: S310
                health = json.loads(answer.read())
            assert health["status"] == "ok" and health["accounts"] == [key]
            def metrics_text() -> str:
                with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:  # noqa: S310
                    return str(answer.read().decode())

            # The counters follow the work (the outbox's after its transaction commits):
            # wait for them rather than race the service.
            wait_for(lambda: "xtmail_serve_outbox_sent_total 1.0" in metrics_text()
                     and f'messages_imported_total{{account="{key}"}} 12.0' in metrics_text(),
                     10, "the metrics to count the sent mail and the imported messages")
            metrics = metrics_text()
            assert f'xtmail_serve_messages_imported_total{{account="{key}"}} 12.0' in metrics
            assert f'xtmail_serve_account_lag_seconds{{account="{key}"}}' in metrics
            assert "xtmail_serve_outbox_sent_total 1.0" in metrics
            assert "xtmail_serve_accounts_owned 1.0" in metrics
            time.sleep(1.5)  # three more looks at the queue: still sent once
            assert len(smtp.received) == 1
        finally:
            http.shutdown()
            http.server_close()


def test_an_instance_whose_lease_connection_broke_stops_its_accounts_and_takes_them_again(
    db_dsn: str, dovecot: DovecotServer, running: Callable[[Server], Server]
) -> None:
    users = [new_user(dovecot, 5) for _ in range(2)]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        keys = [add_account(conn, dovecot, u.user, source="env", ref=f"PW{i}")
                for i, u in enumerate(users)]
        server = running(Server(connector(db_dsn), options=fast_options(poll_interval=600),
                                environ={f"PW{i}": u.password for i, u in enumerate(users)},
                                instance="lease-test pid 1"))
        wait_for(lambda: all(stored(conn, k)[0] == 5 for k in keys), 30, "first passes")

        def lease_pids() -> set[int]:
            rows = conn.execute(
                """SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                    WHERE l.locktype = 'advisory' AND l.classid = %s::bigint::oid
                      AND a.application_name = 'xtmail serve on lease-test pid 1'""",
                (0x78746D61,)).fetchall()
            return {r[0] for r in rows}

        (before,) = lease_pids()
        # The database ends the session (a restart, a failover, an administrator): every
        # lock goes with it.
        conn.execute("SELECT pg_terminate_backend(%s)", (before,))
        wait_for(lambda: len(lease_pids()) == 1 and before not in lease_pids()
                 and all(holders(conn, keys).values()), 30, "the accounts taken again")
        for user in users:
            dovecot.seed_maildir(user.user, "INBOX",
                                 iter_generated_messages(3, prefix=f"{user.user}-later"))
        wait_for(lambda: all(stored(conn, k) == (8, 8) for k in keys), 30,
                 "new mail imported after the takeover")
        assert server.metrics.registry.get_sample_value("xtmail_serve_lease_connected") == 1


def test_accounts_with_the_same_ca_file_share_one_tls_context_until_the_file_changes(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    # A context holds the system's CA certificates: one per account would make every idle
    # account of the service cost most of a megabyte.
    from xtmail.sync.imap.connection import ssl_context_for

    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dovecot.ca_file.read_bytes())
    first = ssl_context_for(AccountSettings(host="a", user="u1", ca_file=str(ca_file)))
    assert ssl_context_for(AccountSettings(host="b", user="u2", ca_file=str(ca_file))) \
        is first
    ca_file.write_bytes(dovecot.ca_file.read_bytes() + b"\n")  # the administrator renewed it
    assert ssl_context_for(AccountSettings(host="a", user="u1", ca_file=str(ca_file))) \
        is not first


def test_an_instance_started_later_gets_its_share_and_the_first_keeps_its_own(
    db_dsn: str, dovecot: DovecotServer, running: Callable[[Server], Server]
) -> None:
    users = [new_user(dovecot, 3) for _ in range(6)]
    environ = {f"PW{i}": u.password for i, u in enumerate(users)}
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        keys = [add_account(conn, dovecot, u.user, source="env", ref=f"PW{i}")
                for i, u in enumerate(users)]

        def owned_by(instance: str) -> int:
            return sum(1 for h in holders(conn, keys).values()
                       if h == f"xtmail serve on {instance}")

        running(Server(connector(db_dsn), options=fast_options(), environ=environ,
                       instance="first pid 1"))
        wait_for(lambda: owned_by("first pid 1") == 6, 30, "the first takes every account")
        running(Server(connector(db_dsn), options=fast_options(), environ=environ,
                       instance="second pid 2"))
        wait_for(lambda: owned_by("first pid 1") == 3 and owned_by("second pid 2") == 3, 30,
                 "three and three")
        time.sleep(2.0)  # four more looks each: the shares hold
        assert (owned_by("first pid 1"), owned_by("second pid 2")) == (3, 3)
        assert all(stored(conn, k) == (3, 3) for k in keys)
